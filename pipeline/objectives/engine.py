"""Where a model's sums run, chosen once per run and handed to ``ModelSpec.build``.

An engine is the factory of a model's sums implementations (as implicit's ``als`` factory picks
its CPU or GPU class): :class:`LocalEngine` computes them on this machine with the kernel it is
given (``numba``, ``numpy``, or ``auto``); ``pipeline.distributed.DaskEngine`` on the workers of
a Dask cluster, each worker running a :class:`LocalEngine` over its shard. A model asks its engine
once, when it is built, and never again; a model's spec lists the engines that implement it
(``ModelSpec.backends``). Results do not depend on the engine beyond the last bits (tests hold
every implementation to 1e-10 of the numpy reference), so engine and kernel are run settings
logged beside the hyperparameters, not hyperparameters.
"""

from __future__ import annotations

from pipeline.objectives.mf_sums import KERNELS, LOCAL, resolve_kernel


class LocalEngine:
    """The sums on this machine, by ``kernel`` (``auto``: numba where installed)."""

    backend = "local"

    def __init__(self, kernel: str = "auto"):
        self.kernel = resolve_kernel(kernel)

    def mf_sums(self, layout):
        """Biased MF's sums over ``layout`` (``pipeline.objectives.mf_sums``)."""
        return LOCAL[self.kernel](layout)

    def params(self) -> dict:
        """What a run logs about where its sums ran."""
        return {"backend": self.backend, "kernel": self.kernel}


__all__ = ["KERNELS", "LocalEngine"]
