"""recsys: a matrix-factorization recommender case study.

The pipeline is ``data -> split -> objective -> optimizer -> evaluate -> tracking``;
:mod:`pipeline.experiment` wires the pieces together and :mod:`pipeline.cli` is the
command line on top.
"""

__version__ = "0.1.0"
