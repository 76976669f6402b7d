"""recsys: a matrix-factorization recommender case study.

The pipeline is ``data -> split -> objective -> optimizer -> evaluate -> tracking``;
:mod:`pipeline.experiment` wires the pieces together and :mod:`pipeline.cli` is the
command line on top.
"""

from pipeline import reproducible as _reproducible

_reproducible.pin()  # before numpy and numba load: the same bits on every machine

__version__ = "0.1.0"
