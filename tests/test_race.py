"""The rules of the race: reference optimum, time to target, stationary points, pass costs,
performance profiles, compilation outside the clock, the same bits on any thread count, and
report sentences that are true whatever the outcome."""

from __future__ import annotations

import math
import os
import re
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from pipeline import race, report
from pipeline.objectives import BiasedMF
from pipeline.optim import IterationRecord, OptimizeResult, StoppingRule, minimize
from tests.conftest import tiny_ratings


def history(losses, passes, vals=None):
    vals = vals or [math.nan] * len(losses)
    return [IterationRecord(k, f, 1.0, 1.0, 0.01 * p, p, p, 0, v, p)
            for k, (f, p, v) in enumerate(zip(losses, passes, vals))]


def result(losses, passes, reason="max_passes", vals=None):
    return OptimizeResult("m", np.zeros(1), reason, reason, history(losses, passes, vals))


def test_time_to_target_is_the_first_iterate_within_each_target():
    f_star = 2.0
    res = result([3.0, 2.01, 2.0 + 3e-6, 2.0 + 1e-6, 2.0 + 1e-12], [0, 10, 25, 40, 90],
                 vals=[1.0, 0.9, 0.8999, 0.85, 0.86])
    t = race.time_to_target(res, f_star)
    assert t["passes_to_1e-3"] == 25 and t["seconds_to_1e-3"] == pytest.approx(0.25)
    assert t["passes_to_1e-6"] == 40  # (f - f*)/|f*| = 5e-7
    assert t["passes_to_1e-9"] == 90
    assert t["passes_to_val"] == 40   # best 0.85; 0.8999 is not within 1e-4 of it
    missed = race.time_to_target(result([3.0, 2.5], [0, 5]), f_star)
    assert math.isnan(missed["passes_to_1e-3"]) and math.isnan(missed["passes_to_val"])


def test_end_note_says_where_a_run_ended():
    assert race.end_note(result([3.0, 2.0 + 1e-10], [0, 5], "converged"), 2.0) == ""
    assert race.end_note(result([3.0, 2.001], [0, 5], "converged"), 2.0) == "converged above f*"
    assert race.end_note(result([3.0, 2.001], [0, 5], "max_passes"), 2.0) == ""  # still on its way
    assert race.end_note(result([3.0, 1.99], [0, 5], "converged"), 2.0) == "below f*"
    assert race.end_note(result([3.0, 2.001], [0, 5], "max_seconds"), 2.0) == "stopped on seconds: machine-dependent"
    assert race.end_note(result([3.0, 1.99], [0, 5], "max_seconds"), 2.0) == "below f*; stopped on seconds: machine-dependent"
    assert race.end_note(result([3.0, 2.001], [0, 5], "converged"), None) == ""


def test_reference_optimum_is_tight_and_cached(tmp_path, monkeypatch):
    f = BiasedMF(tiny_ratings(n_users=6, n_items=5), rank=2, reg=0.3, reg_bias=0.1)
    x0 = f.init(np.random.default_rng(0))
    cache = tmp_path / "ref.json"
    ref = race.reference_optimum(f, x0, cache)
    assert ref.f_star == min(ref.values.values()) and ref.rel_grad_norm <= 1e-7  # float64 ends the polish near 1e-9
    assert set(ref.values) <= set(race.REFERENCE_SOLVERS)
    best_seen = min(minimize(n, f, x0, StoppingRule(gtol=1e-8)).final.loss for n in ("gd-bb", "trust-ncg"))
    assert ref.f_star <= best_seen + 1e-12  # on this convex-looking tiny problem nothing does better

    def no_solving(*args, **kwargs):
        raise AssertionError("the cached f* must be read, not recomputed")
    monkeypatch.setattr(race, "minimize", no_solving)
    assert race.reference_optimum(f, x0, cache) == ref
    cache.write_text("{broken")  # a bad entry is recomputed, never trusted
    monkeypatch.undo()
    assert race.reference_optimum(f, x0, cache).f_star == ref.f_star


@pytest.mark.parametrize("edit", [
    lambda d: {**d, "f_star": float("nan")}, lambda d: {**d, "f_star": 0.0}, lambda d: {**d, "f_star": -5.0},
    lambda d: {**d, "f_star": 1e308}, lambda d: {**d, "f_star": "0.25"}, lambda d: {**d, "f_star": d["f_star"] - 0.01},
    lambda d: {**d, "values": {k: "x" for k in d["values"]}}, lambda d: {**d, "passes": -1},
    lambda d: {**d, "f_star": 1e6, "values": {k: 1e6 for k in d["values"]}},  # consistent, but above f(x0)
    lambda d: {**d, "values": {}}, lambda d: {**d, "solver": "gd"},
])
def test_a_cached_reference_that_does_not_hold_together_is_recomputed(tmp_path, edit):
    """Issue 22, class 2: NaN, 0, -5, 1e308, a string, one digit changed while the values disagree ...
    each was used as f* before; now each is recomputed, and the file rewritten."""
    import json
    f = BiasedMF(tiny_ratings(n_users=6, n_items=5), rank=2, reg=0.3, reg_bias=0.1)
    x0 = f.init(np.random.default_rng(0))
    cache = tmp_path / "ref.json"
    ref = race.reference_optimum(f, x0, cache)
    cache.write_text(json.dumps(edit(json.loads(cache.read_text()))))
    again = race.reference_optimum(f, x0, cache)
    assert again.f_star == ref.f_star and again.values == ref.values
    assert json.loads(cache.read_text())["f_star"] == ref.f_star


def test_problem_key_follows_every_part():
    a = np.arange(5)
    assert race.problem_key(a, {"rank": 3}) == race.problem_key(a.copy(), {"rank": 3})
    assert race.problem_key(a, {"rank": 3}) != race.problem_key(a, {"rank": 4})
    assert race.problem_key(a, {"rank": 3}) != race.problem_key(a + 1, {"rank": 3})


def test_performance_profile_known_answer():
    # problem 0: a costs 10, b 20; problem 1: a 30, b 15; problem 2: a not reached, b 5
    costs = pd.DataFrame({"a": [10.0, 30.0, np.nan], "b": [20.0, 15.0, 5.0]})
    rho = race.profile(costs, np.array([1.0, 2.0, 100.0]))
    assert rho["a"].tolist() == pytest.approx([1 / 3, 2 / 3, 2 / 3])
    assert rho["b"].tolist() == pytest.approx([2 / 3, 1.0, 1.0])
    nobody = race.profile(pd.DataFrame({"a": [np.nan], "b": [np.nan]}), np.array([1.0, 10.0]))
    assert (nobody.to_numpy() == 0).all()


def test_pass_costs_are_measured_for_what_the_objective_offers():
    f = BiasedMF(tiny_ratings(n_users=8, n_items=6), rank=2, weighting="none")
    costs = race.pass_costs(f, f.init(np.random.default_rng(0)), rounds=3)
    assert costs["seconds_loss_grad"] > 0
    assert set(race.cost_names(costs)) == {"loss", "hessp", "gnvp", "als_sweep"}  # SGD refuses plain L2
    assert all(v > 0 for v in costs.values())
    for name in race.cost_names(costs):
        assert costs[f"cost_{name}_lo"] <= costs[f"cost_{name}"] <= costs[f"cost_{name}_hi"]
    assert race.describe_costs(costs).startswith(f"hessp {costs['cost_hessp']:.2f} [")


class _Spy(BiasedMF):
    """Records every point and direction the cost measurement asks about."""

    def __init__(self, *a, **kw):
        super().__init__(*a, **kw)
        self.calls: list[tuple[str, bytes, bytes]] = []

    def loss_grad(self, x):
        self.calls.append(("loss_grad", x.tobytes(), b""))
        return super().loss_grad(x)

    def loss(self, x):
        self.calls.append(("loss", x.tobytes(), b""))
        return super().loss(x)

    def hessp(self, x, v):
        self.calls.append(("hessp", x.tobytes(), v.tobytes()))
        return super().hessp(x, v)

    def als_sweep(self, x):
        self.calls.append(("als_sweep", x.tobytes(), b""))
        return super().als_sweep(x)


def test_pass_costs_never_time_a_call_a_per_point_cache_could_answer():
    """A model may cache per point (the protocol allows it): a measurement that repeats a point
    measured a cached lookup ("loss 0.06"). Every timed call is at a new point, or, for a
    Hessian-vector product, at the point of the loss+gradient just before it with a new direction."""
    f = _Spy(tiny_ratings(n_users=8, n_items=6), rank=2)
    race.pass_costs(f, f.init(np.random.default_rng(0)), rounds=4, points=2)
    # the untimed first call of each of the 5 operations after a loss_grad at x0 (gnvp and
    # sgd_epoch are not spied on): 5 + 3 records
    warm = 8
    timed = f.calls[warm:]
    points = [x for op, x, _ in timed if op != "hessp"]
    assert len(points) == len(set(points))
    for j, (op, x, v) in enumerate(timed):
        if op == "hessp":
            assert x == next(xx for oo, xx, _ in reversed(timed[:j]) if oo == "loss_grad")
    directions = [v for op, _, v in timed if op == "hessp"]
    assert len(directions) == len(set(directions))


class _SlowLoss(BiasedMF):
    def loss(self, x):
        import time
        time.sleep(0.005)
        return super().loss(x)


def test_an_implausible_cost_is_not_reported_as_a_measurement():
    f = _SlowLoss(tiny_ratings(n_users=8, n_items=6), rank=2)
    costs = race.pass_costs(f, f.init(np.random.default_rng(0)), rounds=3, points=1)
    assert "cost_loss" not in costs and costs["implausible_loss"] == 1.0
    assert "loss" not in race.describe_costs(costs)
    assert "cost_hessp" in costs


# -- compilation outside the clock -------------------------------------------------------------------
def test_after_warm_up_a_fit_compiles_nothing(small_synthetic):
    from pipeline.objectives import mf_kernels as K
    f = BiasedMF(small_synthetic, rank=3, reg=0.1, reg_bias=0.1)
    f.warm_up()
    kernels = {name: obj for name, obj in vars(K).items() if hasattr(obj, "signatures")}
    before = {name: len(k.signatures) for name, k in kernels.items()}
    assert all(before[n] >= 1 for n in ("loss_grad", "hessp", "finish_items", "residuals", "ridge_rows", "sgd_epoch"))
    x0 = f.init(np.random.default_rng(0))
    for name in ("gd", "newton-cg", "newton-cg-gn", "als", "sgd"):
        minimize(name, f, x0, StoppingRule(max_iter=3))
    assert {name: len(k.signatures) for name, k in kernels.items()} == before


# -- sentences true for every outcome ------------------------------------------------------------------
def test_findings_rank_by_cost_to_target_even_when_the_converged_method_is_slowest():
    rows = [report.table_row("slow-but-converged", {"data_passes": 900, "fit_seconds": 9.0, "rel_gap": 1e-10,
                                                    "passes_to_1e-3": 500, "seconds_to_1e-3": 5.0,
                                                    "passes_to_1e-6": 800, "seconds_to_1e-6": 8.0,
                                                    "passes_to_val": 300, "seconds_to_val": 3.0,
                                                    "val_rmse": 0.9, "test_rmse": 0.9}, "converged",
                              message="converged: ||g||/||g0|| = 1e-06 <= 1e-05"),
            report.table_row("fast-budget", {"data_passes": 200, "fit_seconds": 1.0, "rel_gap": 1e-4,
                                             "passes_to_1e-3": 20, "seconds_to_1e-3": 0.1,
                                             "passes_to_val": 10, "seconds_to_val": 0.05,
                                             "val_rmse": 0.9, "test_rmse": 0.9}, "max_passes",
                              message="budget spent: 200 data passes (of 200)"),
            report.table_row("broken", {}, "failed", message="LinAlgError: singular")]
    lines = report.findings(report.comparison_table(rows))
    text = "\n".join(lines)
    assert lines[0].startswith("To (f - f*)/|f*| <= 1e-3: by data passes fast-budget (20 passes), slow-but-converged")
    assert "To (f - f*)/|f*| <= 1e-6: by data passes slow-but-converged (800 passes)" in text
    assert "Not reached: fast-budget." in text
    assert "No method reached (f - f*)/|f*| <= 1e-9 within its budget." in text
    assert "broken failed: LinAlgError: singular." in text and "other methods ran" not in text
    assert "fastest" not in text.lower()  # no claim from final wall time


# -- the same answer on any machine ---------------------------------------------------------------------
@pytest.fixture
def synth_file(tmp_path):
    out = tmp_path / "u.data"
    subprocess.run([sys.executable, "-m", "pipeline", "data", "synth", "--out", str(out), "--users", "150",
                    "--items", "60", "--ratings", "4000", "--seed", "1"], check=True, capture_output=True)
    return out


def test_same_command_same_numbers_on_1_and_2_threads(synth_file, tmp_path):
    """Counts, losses, gaps and RMSEs are bit-identical whatever NUMBA_NUM_THREADS is (seconds aside)."""
    tables = []
    for threads in ("1", "2"):
        out = subprocess.run([sys.executable, "-m", "pipeline", "compare", "--dataset", str(synth_file),
                              "--optimizers", "gd-bb,newton-cg,lbfgs,als", "--rank", "4", "--max-passes", "600",
                              "--no-tracking", "--quiet", "--no-cache", "--data-dir", str(tmp_path / "d")],
                             capture_output=True, text=True, env={**os.environ, "NUMBA_NUM_THREADS": threads})
        assert out.returncode == 0, out.stderr
        lines = [line for line in out.stdout.splitlines() if line.split()[:1] and line.split()[0] in
                 ("gd-bb", "newton-cg", "lbfgs", "als")]
        # drop the seconds column and the "(1.23s)" after each passes-to-target figure
        strip = lambda parts: " ".join(w for j, w in enumerate(parts) if j != 3 and not re.fullmatch(r"\(\d+\.\d+s\)", w))
        tables.append([strip(line.split()) for line in lines])
        losses = [line for line in out.stderr.splitlines() if line.startswith("reference optimum")]
        tables[-1] += [line.rsplit(" in ", 1)[0] for line in losses]
    assert len(tables[0]) == 5 and tables[0] == tables[1]


def test_markdown_table_keeps_its_columns_with_pipes_in_the_headers():
    table = report.comparison_table([report.table_row("a", {"rel_gap": 1e-3, "data_passes": 3, "fit_seconds": 1.0},
                                                      "converged", note="another stationary point")])
    lines = report.markdown_table(table).strip().splitlines()
    cells = [len(re.findall(r"(?<!\\)\|", line)) for line in lines]
    assert len(set(cells)) == 1 and cells[0] == len(report.SHOWN) + 1


# -- relative figures that mean nothing (issue 22, class 15) ---------------------------------------
def test_a_reference_warns_when_relative_figures_mean_nothing():
    from pipeline.race import Reference
    ref = lambda f: Reference(f, 1e-9, "lbfgs", 10, 0.1, {"lbfgs": f})  # noqa: E731
    assert ref(0.25).warnings(1.0) == []
    [zero] = ref(3e-14).warnings(1.0)
    assert zero.startswith("f* = 3e-14 is about zero next to f(x0) = 1") and "not meaningful" in zero
    [near] = ref(1.0).warnings(1.0 + 1e-5)
    assert near.startswith("the start is already within 1.0e-05 of f*") and "0 passes" in near
    assert ref(0.0).warnings(0.0) != []  # a problem the start already solves exactly


@pytest.mark.parametrize("case", ["one rating", "huge ratings"])
def test_degenerate_data_gets_a_warning_in_the_comparison(case):
    """One rating (f* about 0: relative gaps of 1e13) and ratings of 1e150 (every target "reached
    in 0 passes") printed their figures without a word."""
    from pipeline import experiment
    from pipeline.config import DataConfig, ModelConfig, RunConfig
    from pipeline.data import from_raw
    if case == "one rating":
        data = from_raw(np.array([1, 2]), np.array([1, 2]), np.array([4.0, 4.0]), rating_scale=(1, 5))
    else:
        rng = np.random.default_rng(0)
        users, items = np.repeat(np.arange(12), 4), np.tile(np.arange(4), 12)
        data = from_raw(users, items, 1e150 * (1 + 1e-17 * rng.normal(size=48)), rating_scale=(0, 2e150))
    cfg = RunConfig(data=DataConfig(dataset="unused", fractions=(1.0, 0.0, 0.0), cache=False),
                    model=ModelConfig.of("mf", rank=1), rule=StoppingRule(max_passes=30), optimizers=("lbfgs",),
                    log_models=False)
    notes = []
    experiment.compare(cfg, ratings=data, note=notes.append)
    assert [n for n in notes if n.startswith("warning: ") and "not meaningful" in n], notes


def test_the_reference_point_is_cached_and_checked_against_its_loss(tmp_path):
    """The curvature at the optimum needs the point: it is cached beside f* and used only where
    its loss, recomputed, is f*; a point that is not is computed again."""
    f = BiasedMF(tiny_ratings(n_users=6, n_items=5), rank=2, reg=0.3, reg_bias=0.1)
    x0 = f.init(np.random.default_rng(0))
    cache = tmp_path / "ref.json"
    ref, x = race.reference_and_point(f, x0, cache)
    assert cache.with_suffix(".npy").is_file() and f.loss(x) == ref.f_star
    again, y = race.reference_and_point(f, x0, cache)
    np.testing.assert_array_equal(x, y)
    np.save(cache.with_suffix(".npy"), x + 0.01)  # another point under the same f*
    third, z = race.reference_and_point(f, x0, cache)
    assert abs(f.loss(z) - third.f_star) <= 1e-12 * abs(third.f_star)
    np.testing.assert_allclose(z, x, atol=1e-6)
