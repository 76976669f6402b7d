"""The wiring: reproducibility under a seed, faults that stop one method but not the comparison."""

from __future__ import annotations

import numpy as np

from pipeline import experiment
from pipeline.config import DataConfig, ModelConfig, RunConfig
from pipeline.optim import StoppingRule


def cfg(**kw):
    base = dict(data=DataConfig(dataset="unused", seed=0), model=ModelConfig.of("mf", rank=3),
                rule=StoppingRule(gtol=1e-6, max_iter=60), optimizers=("gd", "newton-cg", "als"))
    return RunConfig(**{**base, **kw})


def test_the_same_seed_gives_identical_metrics(small_synthetic):
    a = experiment.compare(cfg(), ratings=small_synthetic)
    b = experiment.compare(cfg(), ratings=small_synthetic)
    cols = [c for c in a.table.columns if not c.startswith("seconds") and c != "message"]
    assert a.table[cols].equals(b.table[cols])
    for name in ("gd", "newton-cg", "als"):
        np.testing.assert_array_equal(a.results[name].x, b.results[name].x)
    c = experiment.compare(cfg(seed=1), ratings=small_synthetic)
    assert not np.array_equal(a.results["gd"].x, c.results["gd"].x)


def test_a_diverging_method_stops_with_a_reason_and_the_others_go_on(small_synthetic):
    out = experiment.compare(cfg(optimizers=("gd", "lbfgs"), optimizer_options={"gd": {"step": 1e5}}), ratings=small_synthetic)
    reasons = dict(zip(out.table["optimizer"], out.table["reason"]))
    assert reasons["gd"] == "diverged"
    assert reasons["lbfgs"] in ("converged", "max_iter")
    assert np.isfinite(out.metrics["lbfgs"]["test_rmse"])


def test_a_study_grids_over_the_models_own_hyperparameters(small_synthetic, tmp_path):
    """logreg has a reg and no rank: its suite is datasets x regs x seeds (the suite used to set a
    rank on every model, and failed for it); a grid axis the model lacks is one ValueError."""
    import pytest
    from pipeline.config import StudyConfig
    from pipeline.data import write_udata
    path = write_udata(small_synthetic, tmp_path / "u.data")
    base = RunConfig(data=DataConfig(dataset=str(path), data_dir=str(tmp_path), cache=False),
                     model=ModelConfig.of("logreg"), optimizers=("lbfgs", "gd"))
    suite = StudyConfig(datasets=(str(path),), grid={"reg": (0.5, 2.0)}, seeds=(0,), reference_passes=200,
                        rule=StoppingRule(gtol=1e-8, max_passes=100))
    out = experiment.study(base, suite)
    assert sorted(out.runs["reg"].unique()) == [0.5, 2.0] and set(out.runs["optimizer"]) == {"lbfgs", "gd"}
    assert out.runs["problem"].str.contains("-reg0.5-seed0").any()
    with pytest.raises(ValueError, match="has no hyperparameter 'rank'"):
        experiment.study(base, StudyConfig(datasets=(str(path),), grid={"rank": (2,)}, seeds=(0,)))
