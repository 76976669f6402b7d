"""The Dask engine: the same sums as on this machine (every operation, every kernel), the same
race (passes and losses), the objective contract on the cluster, clean failures."""

from __future__ import annotations

import numpy as np
import pytest
from click.testing import CliRunner

pytest.importorskip("dask.distributed")  # the optional extra; CI installs it with the test extra

from pipeline import experiment  # noqa: E402
from pipeline.cli import cli  # noqa: E402
from pipeline.config import DataConfig, ModelConfig, RunConfig  # noqa: E402
from pipeline.distributed import BackendError, DaskEngine, DaskSums, connect  # noqa: E402
from pipeline.objectives import BiasedMF, LocalEngine  # noqa: E402
from pipeline.objectives.mf_sums import ITEMS, USERS  # noqa: E402
from pipeline.optim import StoppingRule, minimize  # noqa: E402
from pipeline.testing import ObjectiveContract  # noqa: E402

from tests import test_contract  # noqa: E402

_CLIENT: dict = {}


def shared_client():
    """One two-worker cluster for the module (the contract class cannot take fixtures)."""
    if "client" not in _CLIENT:
        _CLIENT["client"] = connect(workers=2)
    return _CLIENT["client"]


@pytest.fixture(scope="module", autouse=True)
def _stop_the_cluster():
    yield
    c = _CLIENT.pop("client", None)
    if c is not None:
        c.close()
        c.cluster.close()


@pytest.fixture(scope="module")
def client():
    return shared_client()


def rel(a, b):
    return float(np.max(np.abs(np.asarray(a) - np.asarray(b))) / max(np.max(np.abs(b)), 1e-300))


@pytest.mark.parametrize("kernel", ["numba", "numpy"])
@pytest.mark.parametrize("weighting", ["count", "none"])
def test_every_operation_equals_the_local_one(client, small_synthetic, kernel, weighting):
    hyper = dict(rank=3, reg=0.1, reg_bias=0.05, weighting=weighting)
    local = BiasedMF(small_synthetic, **hyper, kernel=kernel)
    dist = BiasedMF(small_synthetic, **hyper, engine=DaskEngine(client, kernel))
    assert isinstance(dist.sums, DaskSums) and len(dist.sums.shards) == 2 and not isinstance(dist.sums, type(local.sums))
    rng = np.random.default_rng(0)
    x, v = rng.normal(0, 0.3, (2, local.n_params))
    (fl, gl), (fd, gd) = local.loss_grad(x), dist.loss_grad(x)
    assert abs(fl - fd) <= 1e-12 * fl and rel(gd, gl) <= 1e-10
    assert abs(local.loss(x) - dist.loss(x)) <= 1e-12 * fl
    assert rel(dist.hessp(x, v), local.hessp(x, v)) <= 1e-10
    assert rel(dist.gnvp(x, v), local.gnvp(x, v)) <= 1e-10
    assert rel(dist.als_sweep(x), local.als_sweep(x)) <= 1e-10
    assert rel(dist.precondition(x)(v), local.precondition(x)(v)) <= 1e-10
    if weighting == "count":  # SGD minimizes the count-weighted objective only
        np.testing.assert_array_equal(dist.sgd_epoch(x, 0.01, np.random.default_rng(1)),
                                      local.sgd_epoch(x, 0.01, np.random.default_rng(1)))  # on the driver: the same code
    for side in (USERS, ITEMS):
        A_d, y_d = dist.sums.normal_equations(side, x)
        A_l, y_l = local.sums.normal_equations(side, x)
        assert rel(A_d, A_l) <= 1e-10 and rel(y_d, y_l) <= 1e-10
    assert dist.sums.bytes_sent > 0 and dist.sums.bytes_received > 0


def test_what_a_model_offers_follows_its_sums(client, small_synthetic):
    dist = BiasedMF(small_synthetic, rank=2, engine=DaskEngine(client))
    assert all(dist.offers(c) for c in ("als_sweep", "precondition", "gnvp", "sgd_epoch", "warm_up"))

    class NoSweeps(DaskSums):
        OFFERS = DaskSums.OFFERS - {"als_sweep"}

    class Engine(DaskEngine):
        def mf_sums(self, layout):
            return NoSweeps(layout, self.client, self.kernel)

    fewer = BiasedMF(small_synthetic, rank=2, engine=Engine(client))
    assert not fewer.offers("als_sweep") and fewer.offers("precondition")
    from pipeline.optim import not_applicable
    assert not_applicable("als", fewer, "mf") == "not applicable: mf has no als_sweep"


def test_same_objective_values_at_every_iteration(client, small_synthetic):
    local = BiasedMF(small_synthetic, rank=3, reg=0.1, reg_bias=0.05)
    dist = BiasedMF(small_synthetic, rank=3, reg=0.1, reg_bias=0.05, engine=DaskEngine(client))
    x0 = local.init(np.random.default_rng(0))
    rule = StoppingRule(gtol=1e-6, max_iter=15)
    a = minimize("newton-cg", local, x0, rule)
    b = minimize("newton-cg", dist, x0, rule)
    assert len(a.history) == len(b.history) and a.final.n_hessp == b.final.n_hessp
    for ra, rb in zip(a.history, b.history):
        assert abs(ra.loss - rb.loss) <= 1e-10 * abs(ra.loss)


def test_compare_on_dask_equals_the_local_race(client, small_synthetic, monkeypatch):
    """newton-pcg (preconditioner on the workers), als (sweeps on the workers) and sgd (epochs on
    the driver) take the same passes to the same losses as on this machine. Both races measure
    against the local f* (computed once here: the reference solve on two workers is
    test_every_operation's sums, repeated thousands of times)."""
    from pipeline.experiment import fitting
    local_reference = {}
    real = fitting.reference_for

    def reference_once(prepared, cfg, *args):
        if "ref" not in local_reference:
            local_reference["ref"] = real(prepared, cfg, *args)
        return local_reference["ref"]
    monkeypatch.setattr(fitting, "reference_for", reference_once)
    cfg = RunConfig(data=DataConfig(dataset="unused", cache=False), model=ModelConfig.of("mf", rank=2),
                    rule=StoppingRule(gtol=1e-6, max_passes=120), optimizers=("newton-pcg", "als", "sgd"),
                    log_models=False)
    here = experiment.compare(cfg, ratings=small_synthetic, engine=LocalEngine())
    there = experiment.compare(cfg, ratings=small_synthetic, engine=DaskEngine(client))
    for name in ("newton-pcg", "als", "sgd"):
        a, b = here.results[name], there.results[name]
        assert a.reason == b.reason and a.final.data_passes == b.final.data_passes
        assert [r.data_passes for r in a.history] == [r.data_passes for r in b.history]
        assert max(abs(ra.loss - rb.loss) / abs(ra.loss) for ra, rb in zip(a.history, b.history)) <= 1e-10
    assert not there.inapplicable and not there.failures
    assert here.prepared.reference is there.prepared.reference


class TestDaskMFContract(test_contract.TestBiasedMFContract):
    """The objective contract on the cluster: the same suite as every local implementation."""

    def make_objective(self, train):
        return BiasedMF(train, rank=2, reg=0.3, reg_bias=0.1, engine=DaskEngine(shared_client()))


def test_a_dead_cluster_fails_the_fit_with_a_clear_error(small_synthetic):
    c = connect(workers=1)
    dist = BiasedMF(small_synthetic, rank=2, engine=DaskEngine(c))
    x = dist.init(np.random.default_rng(0))
    dist.loss_grad(x)
    c.cluster.close()
    c.close()
    with pytest.raises(BackendError, match="the Dask cluster failed during loss_grad"):
        dist.loss_grad(x + 1e-3)


def test_a_model_without_a_dask_implementation_is_one_line(client, small_synthetic):
    cfg = RunConfig(data=DataConfig(dataset="unused"), model=ModelConfig.of("svdpp", rank=2), optimizers=("lbfgs",))
    with pytest.raises(ValueError, match="model svdpp runs on local, not on dask"):
        experiment.compare(cfg, ratings=small_synthetic, engine=DaskEngine(client))


def test_a_scheduler_that_does_not_answer_is_one_line():
    res = CliRunner().invoke(cli, ["compare", "--backend", "dask", "--scheduler", "tcp://127.0.0.1:9", "--no-tracking"])
    assert res.exit_code == 2
    assert "no Dask scheduler answers at tcp://127.0.0.1:9" in res.stderr


assert issubclass(TestDaskMFContract, ObjectiveContract)


def test_a_port_that_is_not_a_dask_scheduler_fails_within_the_handshake_deadline(tmp_path, small_file):
    """Issue 22, class 13: `--scheduler` at a local HTTP server gave no output after 120 s."""
    import subprocess
    import sys
    import threading
    import time
    from http.server import BaseHTTPRequestHandler, HTTPServer

    class Quiet(BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass
    srv = HTTPServer(("127.0.0.1", 0), Quiet)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    try:
        start = time.monotonic()
        res = subprocess.run([sys.executable, "-m", "pipeline", "compare", "--backend", "dask", "--scheduler",
                              f"tcp://127.0.0.1:{srv.server_address[1]}", "--dataset", str(small_file),
                              "--no-tracking", "-q"], capture_output=True, text=True, timeout=60)
        took = time.monotonic() - start
    finally:
        srv.shutdown()
    assert res.returncode == 2, res.stderr
    assert "did not complete a Dask handshake within 8 s" in res.stderr and took < 30, (took, res.stderr)
    assert "Traceback" not in res.stderr


def test_a_model_without_a_dask_implementation_fails_before_a_cluster_starts(small_file, monkeypatch):
    from pipeline import distributed
    started = []
    monkeypatch.setattr(distributed, "connect", lambda *a, **k: started.append(a))
    res = CliRunner().invoke(cli, ["compare", "--backend", "dask", "--model", "svdpp", "--dataset", str(small_file),
                                   "--no-tracking", "-q"])
    assert res.exit_code == 2 and "model svdpp runs on local, not on dask" in res.stderr and not started
