"""``python -m pipeline`` is the same as the ``recsys`` command."""

from pipeline.cli import main

if __name__ == "__main__":  # pragma: no cover - exercised through the console script
    main()
