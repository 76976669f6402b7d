"""The same bits on every machine: the numerical environment, fixed before numpy and numba load.

Thread-count independence (the kernels' fixed blocks) is not enough for a result to reproduce on
another CPU. Three more things chose bits by the machine, and this module fixes each:

* **OpenBLAS picks its kernels by CPU type.** scipy's Newton-CG and L-BFGS-B, and numpy's ``dot``
  and ``norm`` in our optimizers, go through them; ``Haswell``'s and ``SkylakeX``'s ``ddot`` add in
  other orders, and a Newton-CG run near the degenerate minimum then took 4,038 passes on one and
  converged at 3,500 on the other. On x86-64 CPUs with AVX2 and FMA (every Intel since Haswell,
  every AMD since Zen) the kernel set is fixed to ``Haswell`` (``OPENBLAS_CORETYPE``, read when
  OpenBLAS loads, so this must run before numpy is imported: ``pipeline/__init__`` imports this
  module first). A CPU without AVX2 keeps OpenBLAS's own choice, and its last bits may differ.
* **The compiled kernels' compile target.** They are compiled without ``fastmath``, so LLVM may
  neither re-associate a sum nor fuse a multiply and an add, whatever the target
  (``pipeline/objectives/mf_kernels.py``); their sums are in the order the code writes.
  ``NUMBA_SLP_VECTORIZE=1`` lets LLVM run independent partial sums as vector lanes, which changes
  no bit and gives back most of the speed re-association bought.
* **BLAS threads.** The race runs BLAS on one thread (``pipeline.optim.registry``).

Not bits but seconds: the kernels' OpenMP threads spin less (``GOMP_SPINCOUNT``, below) and
``mf_kernels.choose_threads`` measures whether two threads pay before a comparison starts.

numpy's own SIMD dispatch (``NPY_DISABLE_CPU_FEATURES``) changes none of the operations the race
uses on float64: elementwise arithmetic is exact in every lane width and numpy's sums are
pairwise in a fixed order (tested, ``tests/test_reproducible.py``).

:func:`blas_kernels` says which kernel set each loaded OpenBLAS runs, for the run's params.
"""

from __future__ import annotations

import functools
import os
import platform
import sys

BLAS_CORETYPE = "Haswell"


def _cpu_has(*flags: str) -> bool:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    have = set(line.split(":", 1)[1].split())
                    return all(flag in have for flag in flags)
    except OSError:
        pass
    return False


def _x86_64() -> bool:
    return platform.machine().lower() in ("x86_64", "amd64")


def pin() -> None:
    """Fix the BLAS kernel set and numba's vectorizer settings, where still possible (see above)."""
    if _x86_64() and _cpu_has("avx2", "fma"):
        if "numpy" not in sys.modules:
            os.environ["OPENBLAS_CORETYPE"] = BLAS_CORETYPE
        elif os.environ.get("OPENBLAS_CORETYPE") != BLAS_CORETYPE and not blas_pinned():
            import warnings
            warnings.warn(f"numpy was imported before pipeline, so OpenBLAS runs {blas_kernels()} kernels, not "
                          f"{BLAS_CORETYPE}: results may differ from other machines' in their last bits "
                          f"(import pipeline first, or set OPENBLAS_CORETYPE={BLAS_CORETYPE})", stacklevel=3)
    os.environ["NUMBA_SLP_VECTORIZE"] = "1"
    # The kernels' threads (numba's OpenMP layer, GNU libgomp) wait for the next parallel region by
    # spinning 300,000 times by default: on a busy machine the spinning thread took the core its
    # partner needed (5.8x slower). 3,000 spins keep a quiet machine within 5 % of the default
    # and cost at most 1.15x on a busy one (docs/performance.md). A user's own setting wins.
    # OpenBLAS on one thread for the whole process, not only inside the race: our BLAS work is
    # level-1 vectors and small products, and OpenBLAS's threads, left spinning after a product
    # (scoring a fit's recommendations, say), took the cores the kernels' threads needed: after
    # the first fits of a comparison two kernel threads measured 1.4 ms a pass against 0.7.
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    if "OMP_WAIT_POLICY" not in os.environ:
        os.environ.setdefault("GOMP_SPINCOUNT", "3000")
    if "numba" in sys.modules:  # loaded before us: set its config before anything is compiled
        sys.modules["numba"].config.SLP_VECTORIZE = 1


@functools.lru_cache(maxsize=1)
def blas_kernels() -> str:
    """The kernel set of every OpenBLAS loaded in this process (numpy's, scipy's), e.g. ``Haswell``
    (fixed when OpenBLAS loads, so looked up once)."""
    from threadpoolctl import threadpool_info
    import numpy  # noqa: F401  (load numpy's BLAS)
    import scipy.linalg  # noqa: F401  (and scipy's)
    sets = sorted({str(i.get("architecture")) for i in threadpool_info() if i.get("internal_api") == "openblas"})
    return ",".join(sets) or "none"


def blas_pinned() -> bool:
    """True when every loaded OpenBLAS runs the project's kernel set (False: numpy was imported
    before ``pipeline``, or the CPU lacks AVX2; results may then differ in their last bits)."""
    return blas_kernels().lower() == BLAS_CORETYPE.lower()
