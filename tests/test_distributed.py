"""The Dask backend: same objective values as the local one at every iteration, clean failures."""

from __future__ import annotations

import numpy as np
import pytest
from click.testing import CliRunner

pytest.importorskip("dask.distributed")  # the optional extra; CI installs it with the test extra

from pipeline import experiment  # noqa: E402
from pipeline.cli import cli  # noqa: E402
from pipeline.config import DataConfig, ModelConfig, RunConfig  # noqa: E402
from pipeline.distributed import BackendError, DaskMF, connect  # noqa: E402
from pipeline.objectives import BiasedMF  # noqa: E402
from pipeline.optim import StoppingRule, minimize  # noqa: E402


@pytest.fixture(scope="module")
def client():
    c = connect(workers=2)
    yield c
    c.close()
    c.cluster.close()


def test_loss_grad_and_hessp_equal_the_local_objective(client, small_synthetic):
    local = BiasedMF(small_synthetic, rank=3, reg=0.1, reg_bias=0.05)
    dist = DaskMF(small_synthetic, client, rank=3, reg=0.1, reg_bias=0.05)
    assert len(dist.shards) == 2
    rng = np.random.default_rng(0)
    x, v = rng.normal(0, 0.3, (2, local.n_params))
    (fl, gl), (fd, gd) = local.loss_grad(x), dist.loss_grad(x)
    assert abs(fl - fd) <= 1e-12 * fl
    np.testing.assert_allclose(gd, gl, rtol=1e-10, atol=1e-15)
    np.testing.assert_allclose(dist.hessp(x, v), local.hessp(x, v), rtol=1e-10, atol=1e-15)
    np.testing.assert_allclose(dist.gnvp(x, v), local.gnvp(x, v), rtol=1e-10, atol=1e-15)
    assert dist.bytes_sent > 0 and dist.bytes_received > 0


def test_same_objective_values_at_every_iteration(client, small_synthetic):
    local = BiasedMF(small_synthetic, rank=3, reg=0.1, reg_bias=0.05)
    dist = DaskMF(small_synthetic, client, rank=3, reg=0.1, reg_bias=0.05)
    x0 = local.init(np.random.default_rng(0))
    rule = StoppingRule(gtol=1e-6, max_iter=15)
    a = minimize("newton-cg", local, x0, rule)
    b = minimize("newton-cg", dist, x0, rule)
    assert len(a.history) == len(b.history) and a.final.n_hessp == b.final.n_hessp
    for ra, rb in zip(a.history, b.history):
        assert abs(ra.loss - rb.loss) <= 1e-10 * abs(ra.loss)


def test_compare_on_the_dask_backend_lists_als_as_not_applicable(client, small_synthetic):
    cfg = RunConfig(data=DataConfig(dataset="unused"), model=ModelConfig.of("mf", rank=2),
                    rule=StoppingRule(gtol=1e-5, max_iter=20), optimizers=("lbfgs", "als"))
    out = experiment.compare(cfg, ratings=small_synthetic, client=client)
    reasons = dict(zip(out.table["optimizer"], out.table["reason"]))
    assert reasons["lbfgs"] in ("converged", "max_iter") and reasons["als"] == "not applicable"
    assert "als" not in out.results and out.inapplicable["als"] == "not applicable: mf has no als_sweep"


def test_a_dead_cluster_fails_the_fit_with_a_clear_error(small_synthetic):
    c = connect(workers=1)
    dist = DaskMF(small_synthetic, c, rank=2)
    x = dist.init(np.random.default_rng(0))
    dist.loss_grad(x)
    c.cluster.close()
    c.close()
    with pytest.raises(BackendError, match="the Dask cluster failed during loss_grad"):
        dist.loss_grad(x + 1e-3)


def test_a_scheduler_that_does_not_answer_is_one_line():
    res = CliRunner().invoke(cli, ["compare", "--backend", "dask", "--scheduler", "tcp://127.0.0.1:9", "--no-tracking"])
    assert res.exit_code == 2
    assert "no Dask scheduler answers at tcp://127.0.0.1:9" in res.stderr
