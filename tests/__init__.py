import pipeline  # noqa: F401  (first, before numpy: it fixes the BLAS kernel set, pipeline.reproducible)
