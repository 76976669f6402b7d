"""The compiled fast path equals the numpy reference (to 1e-10 relative) on every entry point."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from pipeline.data import SyntheticSpec, generate
from pipeline.objectives import BiasedMF
from pipeline.objectives import mf_kernels as K
from tests.conftest import tiny_ratings


def rel(a, b):
    return float(np.linalg.norm(np.asarray(a) - np.asarray(b)) / max(np.linalg.norm(b), 1e-300))


@pytest.fixture(scope="module")
def data():
    return generate(SyntheticSpec(n_users=120, n_items=90, n_ratings=3000, min_per_user=5, seed=11))


@pytest.mark.parametrize("rank, weighting, reg, reg_bias", [(1, "count", 0.1, 0.1), (7, "none", 0.3, 0.0),
                                                           (16, "count", 0.0, 0.05)])
def test_fast_path_equals_reference(data, rank, weighting, reg, reg_bias):
    fast = BiasedMF(data, rank=rank, reg=reg, reg_bias=reg_bias, weighting=weighting, kernel="numba")
    ref = BiasedMF(data, rank=rank, reg=reg, reg_bias=reg_bias, weighting=weighting, kernel="numpy")
    rng = np.random.default_rng(rank)
    for _ in range(3):
        x = rng.normal(0, 0.3, fast.n_params)
        v = rng.normal(size=fast.n_params)
        (ff, gf), (fr, gr) = fast.loss_grad(x), ref.loss_grad(x)
        assert abs(ff - fr) <= 1e-10 * abs(fr)
        assert rel(gf, gr) <= 1e-10
        assert fast.loss(x) == pytest.approx(fr, rel=1e-10)
        assert rel(fast.hessp(x, v), ref.hessp(x, v)) <= 1e-10
        assert rel(fast.gnvp(x, v), ref.gnvp(x, v)) <= 1e-10


def test_fast_hessp_recomputes_residuals_at_a_new_point(data):
    fast = BiasedMF(data, rank=4, kernel="numba")
    ref = BiasedMF(data, rank=4, kernel="numpy")
    rng = np.random.default_rng(0)
    x, y, v = rng.normal(0, 0.3, (3, fast.n_params))
    fast.loss_grad(x)
    assert rel(fast.hessp(y, v), ref.hessp(y, v)) <= 1e-10  # hessp at y without a loss_grad at y first
    y[0] += 1.0  # the caller mutates its array: the cached copy must not be fooled
    assert rel(fast.hessp(y, v), ref.hessp(y, v)) <= 1e-10


def test_default_kernel_is_the_compiled_one(tiny):
    assert BiasedMF(tiny, rank=2).kernel == "numba"
    with pytest.raises(ValueError, match="kernel"):
        BiasedMF(tiny, rank=2, kernel="cuda")


@settings(max_examples=20, deadline=None)
@given(seed=st.integers(0, 10_000), rank=st.integers(1, 5))
def test_fast_path_on_random_tiny_problems(seed, rank):
    r = tiny_ratings(n_users=7, n_items=6, seed=seed)
    fast = BiasedMF(r, rank=rank, kernel="numba")
    ref = BiasedMF(r, rank=rank, kernel="numpy")
    rng = np.random.default_rng(seed)
    x, v = rng.normal(0, 0.5, (2, fast.n_params))
    assert rel(fast.loss_grad(x)[1], ref.loss_grad(x)[1]) <= 1e-10
    assert rel(fast.hessp(x, v), ref.hessp(x, v)) <= 1e-10


# -- the cache-blocked schedule (large data) on small data, by shrinking the block size ---------------
@pytest.mark.parametrize("block_bytes", [1500, 6000])
def test_blocked_schedule_equals_reference(data, monkeypatch, block_bytes):
    from pipeline.objectives import mf_kernels as K
    monkeypatch.setattr(K, "BLOCK_BYTES", block_bytes)  # a few items per tile, a few users per group
    fast = BiasedMF(data, rank=5, reg=0.2, reg_bias=0.1, kernel="numba")
    ref = BiasedMF(data, rank=5, reg=0.2, reg_bias=0.1, kernel="numpy")
    block_runs, run_ptr, run_user, user_bounds, items = fast.sums.sched
    assert len(run_user) > data.n_users  # users really are split into several runs
    rng = np.random.default_rng(3)
    x, y, v = rng.normal(0, 0.3, (3, fast.n_params))
    (ff, gf), (fr, gr) = fast.loss_grad(x), ref.loss_grad(x)
    assert abs(ff - fr) <= 1e-10 * abs(fr) and rel(gf, gr) <= 1e-10
    assert rel(fast.hessp(x, v), ref.hessp(x, v)) <= 1e-10
    assert rel(fast.gnvp(y, v), ref.gnvp(y, v)) <= 1e-10  # residuals recomputed in the blocked order


def test_schedule_is_a_permutation_into_runs_of_one_user(data):
    from pipeline.objectives import mf_kernels as K
    f = BiasedMF(data, rank=5, kernel="numpy")
    labels = np.argsort(np.argsort(-f.item_counts, kind="stable"))[f.items]
    block_bytes = 2000
    perm, (block_runs, run_ptr, run_user, user_bounds, items) = K.schedule(
        f.users, labels, f.layout.indptr, f.n_items, 5, block_bytes=block_bytes, n_blocks=2)
    assert np.array_equal(np.sort(perm), np.arange(f.n_ratings))
    assert np.array_equal(items, labels[perm])
    per_tile = block_bytes // (24 * 6)
    for q in range(len(run_user)):
        assert (f.users[perm[run_ptr[q]:run_ptr[q + 1]]] == run_user[q]).all()
    pairs = np.unique(f.users * f.n_items + labels // per_tile)
    assert data.n_users < len(run_user) <= len(pairs)  # blocked, and at most one run per (user, tile)
    for t in range(2):  # a block's runs hold exactly its users' ratings
        runs = slice(block_runs[t], block_runs[t + 1])
        assert set(run_user[runs]) <= set(range(user_bounds[t], user_bounds[t + 1]))
        assert run_ptr[block_runs[t + 1]] - run_ptr[block_runs[t]] == f.layout.indptr[user_bounds[t + 1]] - f.layout.indptr[user_bounds[t]]


@pytest.mark.parametrize("rank, weighting", [(1, "count"), (6, "none")])
def test_compiled_als_sweep_equals_reference(data, rank, weighting):
    fast = BiasedMF(data, rank=rank, reg=0.1, reg_bias=0.05, weighting=weighting, kernel="numba")
    ref = BiasedMF(data, rank=rank, reg=0.1, reg_bias=0.05, weighting=weighting, kernel="numpy")
    x = fast.init(np.random.default_rng(rank))
    for _ in range(3):
        x_fast, x_ref = fast.als_sweep(x), ref.als_sweep(x)
        assert rel(x_fast, x_ref) <= 1e-10
        assert fast.loss(x_fast) <= fast.loss(x) + 1e-15  # an exact block minimization never goes up
        x = x_ref


def test_compiled_sgd_epoch_equals_reference(data):
    fast = BiasedMF(data, rank=4, reg=0.05, reg_bias=0.02, kernel="numba")
    ref = BiasedMF(data, rank=4, reg=0.05, reg_bias=0.02, kernel="numpy")
    x = fast.init(np.random.default_rng(0))
    x_fast = fast.sgd_epoch(x, 0.01, np.random.default_rng(5))
    x_ref = ref.sgd_epoch(x, 0.01, np.random.default_rng(5))  # same seed: the same order of ratings
    assert rel(x_fast, x_ref) <= 1e-10 and not np.array_equal(x_fast, x)


def test_compiled_als_raises_on_a_singular_system_as_the_reference_does():
    r = tiny_ratings(n_users=5, n_items=4, seed=0)
    for kernel in ("numba", "numpy"):
        f = BiasedMF(r, rank=6, reg=0.0, reg_bias=0.0, weighting="none", kernel=kernel)  # k+1 > ratings per row
        with pytest.raises(np.linalg.LinAlgError):
            f.als_sweep(f.init(np.random.default_rng(0)))


# -- the same bits whatever the thread count ----------------------------------------------------------
def test_block_count_depends_on_the_data_only():
    from pipeline.objectives import mf_kernels as K
    assert K.block_count(100_000, 1682) == 4     # MovieLens 100K
    assert K.block_count(1_000_000, 3700) == 8   # capped at MAX_BLOCKS
    assert K.block_count(50, 40) == 1            # tiny: one block
    assert all(K.block_count(n, 100) & (K.block_count(n, 100) - 1) == 0 for n in range(1, 20_000, 997))


@pytest.mark.parametrize("block_bytes", [None, 6000])
def test_kernels_give_identical_bits_on_1_and_2_threads(monkeypatch, block_bytes):
    """The decomposition is the data's, not the machine's: one thread and two give the same bits."""
    import numba
    from pipeline.objectives import mf_kernels as K
    if block_bytes:
        monkeypatch.setattr(K, "BLOCK_BYTES", block_bytes)
    big = generate(SyntheticSpec(n_users=300, n_items=60, n_ratings=6000, min_per_user=5, seed=2))
    f = BiasedMF(big, rank=6, reg=0.1, reg_bias=0.05, kernel="numba")
    assert len(f.sums.sched[0]) - 1 > 1  # several blocks, or the test proves nothing
    rng = np.random.default_rng(0)
    x, v = rng.normal(0, 0.3, (2, f.n_params))
    before = numba.get_num_threads()
    outs = []
    try:
        for threads in (1, min(2, numba.config.NUMBA_NUM_THREADS)):
            numba.set_num_threads(threads)
            f.sums.x_seen = None  # recompute the residuals under this thread count
            fx, g = f.loss_grad(x)
            outs.append((fx, g.copy(), f.hessp(x, v).copy(), f.gnvp(x, v).copy(), f.als_sweep(x)))
    finally:
        numba.set_num_threads(before)
    (f1, g1, h1, n1, a1), (f2, g2, h2, n2, a2) = outs
    assert f1 == f2
    for a, b in ((g1, g2), (h1, h2), (n1, n2), (a1, a2)):
        assert np.array_equal(a, b)


# -- threads where they pay ------------------------------------------------------------------------
def _pass_taking(seconds_by_threads: dict[int, float]):
    import time
    import numba

    calls = []

    def one_pass():
        n = numba.get_num_threads()
        calls.append(n)
        time.sleep(seconds_by_threads.get(n, seconds_by_threads["many"]))
    return one_pass, calls


@pytest.mark.skipif(__import__("numba").config.NUMBA_NUM_THREADS < 2, reason="needs a pool of 2+ threads")
def test_choose_threads_keeps_the_faster_and_leaves_it_set():
    import numba
    most = numba.config.NUMBA_NUM_THREADS
    try:
        one_pass, calls = _pass_taking({1: 0.004, "many": 0.002})
        assert K.choose_threads(one_pass) == most and numba.get_num_threads() == most
        assert set(calls) == {1, most}
        one_pass, _ = _pass_taking({1: 0.002, "many": 0.004})  # a busy machine: threads cost more
        assert K.choose_threads(one_pass) == 1 and numba.get_num_threads() == 1
        one_pass, _ = _pass_taking({1: 0.002, "many": 0.0019})  # saves under 10 %: not worth a region
        assert K.choose_threads(one_pass) == 1
        one_pass, calls = _pass_taking({1: 0.2, "many": K.LONG_PASS + 0.01})  # long passes pay: not measured
        assert K.choose_threads(one_pass) == most and calls == [most]
    finally:
        numba.set_num_threads(most)


# -- a damaged on-disk cache (issue 22, class 5) ------------------------------------------------------
class _FakeKernel:
    """What ``with_sound_cache`` reads of a numba dispatcher: its cache folder and its module."""
    def __init__(self, folder):
        self._cache = type("Cache", (), {"_cache_path": str(folder)})()
        self.py_func = type("F", (), {"__module__": "pipeline.objectives.mf_kernels"})()


@pytest.mark.parametrize("raised", [__import__("pickle").UnpicklingError("bad"), EOFError(),
                                    ValueError("unsupported pickle protocol: 201"), KeyError("x"),
                                    ImportError("no module"), AttributeError("x"), IndexError()])
def test_whatever_a_damaged_entry_raises_the_entries_go_and_the_kernels_compile_again(tmp_path, raised):
    """A garbled pickle can raise almost anything (CI met ``ValueError: unsupported pickle protocol``
    from random bytes where the code listed two types): any failure with entries present deletes
    this module's entries, not another's, and runs again once."""
    for name in ("mf_kernels.loss_grad-12.py311.nbi", "mf_kernels.loss_grad-12.py311.1.nbc",
                 "mf_sums.total-3.py311.nbi"):
        (tmp_path / name).write_bytes(b"entry")
    calls = []

    def run_kernels():
        calls.append(sorted(p.name for p in tmp_path.iterdir()))
        if len(calls) == 1:
            raise raised
    K.with_sound_cache(_FakeKernel(tmp_path), run_kernels)
    assert len(calls) == 2 and calls[1] == ["mf_sums.total-3.py311.nbi"]


def test_a_failure_without_cache_entries_is_raised_not_retried(tmp_path):
    calls = []

    def run_kernels():
        calls.append(1)
        raise ValueError("a kernel that does not compile")
    with pytest.raises(ValueError, match="does not compile"):
        K.with_sound_cache(_FakeKernel(tmp_path), run_kernels)
    assert calls == [1]


def test_an_error_that_is_not_the_caches_is_raised_by_the_second_attempt(tmp_path):
    (tmp_path / "mf_kernels.loss_grad-1.py311.nbi").write_bytes(b"entry")
    calls = []

    def run_kernels():
        calls.append(1)
        raise TypeError(f"attempt {len(calls)}")
    with pytest.raises(TypeError, match="attempt 2"):
        K.with_sound_cache(_FakeKernel(tmp_path), run_kernels)
    assert not list(tmp_path.iterdir())


def _damaged(damage: str, entry: bytes) -> bytes:
    """Fixed damages (never ``os.urandom``: which exception random bytes raise is a draw)."""
    return {"empty": b"", "protocol": b"\x80\xc9" + entry[2:]}[damage]  # "unsupported pickle protocol: 201"


@pytest.mark.slow
@pytest.mark.parametrize("damage", ["protocol", "empty"])  # each case compiles twice (80 s); the types: above
def test_a_damaged_kernel_cache_is_rebuilt_not_a_traceback(tmp_path, damage):
    """A truncated or garbled .nbi gave a 67-line UnpicklingError on every fit, an empty one click's
    bare "Aborted!", until deleted by hand. In a private NUMBA_CACHE_DIR: fill it, damage an entry,
    fit again: it recompiles and the fit ends normally."""
    import os
    import subprocess
    import sys
    env = {**os.environ, "NUMBA_CACHE_DIR": str(tmp_path / "nc")}
    cmd = [sys.executable, "-m", "pipeline", "train", "--optimizer", "gd", "--max-passes", "5", "--rank", "3",
           "--no-tracking", "-q", "--data-dir", str(tmp_path / "d")]
    first = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert first.returncode == 0, first.stderr[-1500:]
    [index] = list((tmp_path / "nc").rglob("mf_kernels.loss_grad-*.nbi"))
    index.write_bytes(_damaged(damage, index.read_bytes()))
    again = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0 and "Traceback" not in again.stderr, again.stderr[-1500:]
    assert first.stdout.splitlines()[-1] == again.stdout.splitlines()[-1]
