"""The same bits on any x86-64 CPU with AVX2: short fits of every optimizer, run in subprocesses
under other OpenBLAS kernel sets, compile targets, numpy dispatch settings and thread counts, give
bit-identical iterates and histories (tests/bits_probe.py prints their digests).

Before ``pipeline.reproducible`` and the kernels without fastmath, ``OPENBLAS_CORETYPE=Haswell``
against ``SkylakeX`` and ``NUMBA_CPU_NAME=generic`` against the host each changed newton-cg's,
lbfgs', gd-bb's and als' digests on this machine."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from pipeline import reproducible

PROBE = Path(__file__).with_name("bits_probe.py")


def _cpu_flags() -> set[str]:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("flags"):
            return set(line.split(":", 1)[1].split())
    return set()


def _settings() -> dict[str, dict[str, str]]:
    flags = _cpu_flags()
    out = {"one thread": {"NUMBA_NUM_THREADS": "1"}, "Haswell": {"OPENBLAS_CORETYPE": "Haswell"},
           "Zen": {"OPENBLAS_CORETYPE": "Zen"}, "generic target": {"NUMBA_CPU_NAME": "generic"},
           "haswell target": {"NUMBA_CPU_NAME": "haswell"}}
    if "avx512f" in flags:
        out["SkylakeX"] = {"OPENBLAS_CORETYPE": "SkylakeX"}
    from numpy._core._multiarray_umath import __cpu_dispatch__  # numpy's dispatched targets
    out["numpy baseline only"] = {"NPY_DISABLE_CPU_FEATURES": " ".join(__cpu_dispatch__)}
    return out


def _probe(extra: dict[str, str]) -> dict:
    env = {k: v for k, v in os.environ.items()
           if k not in ("OPENBLAS_CORETYPE", "NUMBA_CPU_NAME", "NUMBA_NUM_THREADS", "NPY_DISABLE_CPU_FEATURES")}
    env.update(extra)
    done = subprocess.run([sys.executable, str(PROBE)], env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.slow
@pytest.mark.skipif(not (reproducible._x86_64() and reproducible._cpu_has("avx2", "fma")),
                    reason="the pinned kernel set is for x86-64 with AVX2")
def test_every_method_gives_the_same_bits_under_every_setting():
    base = _probe({})
    assert base["blas"] == reproducible.BLAS_CORETYPE
    assert len(base) > 12  # every optimizer on the compiled kernels, two on the numpy reference
    for label, extra in _settings().items():
        got = _probe(extra)
        differ = sorted(k for k in base if got.get(k) != base[k])
        assert not differ, f"{label} ({extra}) changed the bits of {differ}"


def test_the_blas_kernel_set_is_pinned_in_this_process():
    """tests/__init__ imports pipeline before numpy, as the CLI does: both OpenBLAS builds run Haswell."""
    if reproducible._x86_64() and reproducible._cpu_has("avx2", "fma"):
        assert reproducible.blas_pinned(), reproducible.blas_kernels()
        assert os.environ["OPENBLAS_CORETYPE"] == reproducible.BLAS_CORETYPE


def test_numba_runs_independent_lanes_as_vectors():
    import numba
    assert numba.config.SLP_VECTORIZE
