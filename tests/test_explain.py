"""The answer to "when does Newton-CG beat gradient descent, and why": a test per branch of each
sentence, the rates against known answers, and every number cited found in the tables."""

from __future__ import annotations

import math
import re

import numpy as np
import pandas as pd
import pytest

from pipeline import explain, report
from pipeline.optim.base import IterationRecord, OptimizeResult
from pipeline.schema import BEST_VAL
from tests.test_report import NUMBER, row, table

CURVATURE = {"lambda_min_start": -5.691e-4, "lambda_max_start": 9.232e-3, "eigenvalues_negative_share_start": 0.134,
             "eigenvalues_below_1pct_share_start": 0.718,
             "lambda_min_optimum": 2.477e-7, "lambda_max_optimum": 9.254e-3, "condition_optimum": 3.736e4,
             "eigenvalues_negative_share_optimum": 0.0, "eigenvalues_below_1pct_share_optimum": 0.484,
             "lambda_min_preconditioned": 3.563e-3, "lambda_max_preconditioned": 2.0, "condition_preconditioned": 561.3,
             "eigenvalues_negative_share_preconditioned": 0.0, "eigenvalues_below_1pct_share_preconditioned": 0.0}


def history(passes, grads, vals=None):
    vals = vals if vals is not None else [math.nan] * len(passes)
    return [IterationRecord(j, 1.0, g, g, 0.0, 0, 0, 0, v, int(p)) for j, (p, g, v) in enumerate(zip(passes, grads, vals))]


def result(name, passes, grads, vals=None):
    return OptimizeResult(name, np.empty(0), "converged", "", history(passes, grads, vals))


def linear(name, per_tenfold_passes, passes_per_iter, iters, vals=None):
    passes = [j * passes_per_iter for j in range(iters + 1)]
    return result(name, passes, [10 ** (-p / per_tenfold_passes) for p in passes], vals)


# -- rates -----------------------------------------------------------------------------------------
def test_a_known_linear_rate_is_measured_exactly():
    rate = explain.tail_rate(linear("gd", 500, 2, 100))
    assert rate.passes == pytest.approx(500) and rate.iterations == pytest.approx(250)


def test_no_rate_where_the_tail_is_short_or_the_gradient_does_not_shrink():
    assert explain.tail_rate(linear("gd", 500, 2, 6)) is None  # 4 records in the last half
    assert explain.tail_rate(result("gd", list(range(20)), [1e-3] * 20)) is None
    assert explain.tail_rate(result("gd", list(range(20)), [10 ** (j / 10) for j in range(20)])) is None
    assert explain.tail_rate(OptimizeResult("gd", np.empty(0), "converged", "", [])) is None


def test_the_gradient_descent_bound_in_iterations_per_tenfold():
    assert explain.gd_iterations_per_tenfold(3.0) == pytest.approx(math.log(10) / math.log(2))  # rate 1/2
    big = explain.gd_iterations_per_tenfold(1e4)
    assert big == pytest.approx(math.log(10) * (1e4 + 1) / 2, rel=1e-3)  # ln10 (kappa+1)/2 for large kappa
    assert explain.gd_iterations_per_tenfold(1.0) == 1.0


# -- "when" ----------------------------------------------------------------------------------------
def race_table(newton=None, gd=None, newton_note=""):
    rows = []
    if newton is not None:
        rows.append(row("newton-cg", note=newton_note, data_passes=3894, rel_gap=8.5e-5, **newton))
    if gd is not None:
        rows.append(row("gd", "max_passes", data_passes=4000, **gd))
    return table(*rows)


def to(key, passes):
    return {f"passes_to_{key}": passes, f"seconds_to_{key}": 0.5}


def test_a_method_missing_answers_nothing():
    for t, who in ((race_table(newton={}), "gd"), (race_table(gd={}), "newton-cg"), (table(row("als")), "newton-cg and gd")):
        assert explain._when(t) == [f"{who} did not run here, so this comparison cannot say when newton-cg beats gd."]


def test_each_target_branch_and_newton_cheaper_everywhere():
    t = race_table(newton={**to("1e-3", 324), **to("val", 88)}, gd={**to("val", 354)})
    lines = explain._when(t)
    assert lines[0] == "newton-cg beats gd in data passes at every target of (f - f*)/|f*| either reached (1e-3)."
    assert "To (f - f*)/|f*| <= 1e-3: newton-cg in 324 passes; gd not within its 4000." in lines
    assert "Neither newton-cg nor gd reached (f - f*)/|f*| <= 1e-6." in lines
    assert "To the validation plateau: newton-cg in 88 passes, gd in 354: fewer for newton-cg." in lines


def test_gd_cheaper_everywhere_and_alone_and_a_tie():
    t = race_table(newton={**to("1e-3", 900), **to("val", 50)}, gd={**to("1e-3", 300), **to("1e-6", 2000), **to("val", 50)})
    lines = explain._when(t)
    assert lines[0] == "gd beats newton-cg in data passes at every target of (f - f*)/|f*| either reached (1e-3, 1e-6)."
    assert "To (f - f*)/|f*| <= 1e-6: gd in 2000 passes; newton-cg not within its 3894." in lines
    assert "To the validation plateau: newton-cg in 50 passes, gd in 50: the same." in lines


def test_a_crossover_and_a_mixed_pattern():
    cross = race_table(newton={**to("1e-3", 400), **to("1e-6", 800), **to("1e-9", 900)},
                       gd={**to("1e-3", 300), **to("1e-6", 3000)})
    assert explain._when(cross)[0] == ("gd is cheaper to the loose targets and newton-cg from 1e-6 on: the tighter the "
                                       "target, the more newton-cg's costly steps pay.")
    mixed = race_table(newton={**to("1e-3", 100), **to("1e-6", 3000)}, gd={**to("1e-3", 300), **to("1e-6", 2000)})
    assert explain._when(mixed)[0] == "Neither is cheaper at every target: 1e-3 newton-cg, 1e-6 gd."


def test_no_gap_target_reached_and_newton_above_f_star():
    lines = explain._when(race_table(newton={}, gd={}, newton_note="converged above f*: a local minimum, lambda_min 1.9e-07"))
    assert lines[0].startswith("Neither newton-cg nor gd reached any target of (f - f*)/|f*|")
    assert lines[-1] == ("newton-cg converged at another stationary point, (f - f*)/|f*| = 8.5e-05 above f*: the "
                         "targets below that were out of its reach from this start, not out of its budget.")
    assert not any("another stationary point" in x for x in explain._when(race_table(newton={}, gd={})))


# -- "why" -----------------------------------------------------------------------------------------
def full(gd_res=None, newton_res=None, pcg_res=None, curvature=CURVATURE, negative=None):
    t = table(row("gd", "max_passes", data_passes=4000, iterations=2000, val_rmse=0.8342, **{BEST_VAL: 0.8246}),
              row("newton-cg", data_passes=3894, iterations=47, n_hessp=3835, val_rmse=0.8346, **{BEST_VAL: 0.8289}),
              row("newton-pcg", data_passes=465, iterations=21, n_hessp=391, val_rmse=0.8346, **{BEST_VAL: 0.8344}))
    results = {"gd": gd_res or linear("gd", 5000, 2, 2000, [0.9] + [0.8246] * 2000),
               "newton-cg": newton_res or linear("newton-cg", 1000, 83, 47),
               "newton-pcg": pcg_res or linear("newton-pcg", 100, 22, 21)}
    return t, curvature, results, negative or {"newton-cg": 16, "newton-pcg": 7}


def test_the_tables_hold_every_figure_the_sentences_cite():
    t, c, res, neg = full()
    points, costs = explain.why_table(t, c, res, neg)
    assert list(points["point"]) == ["H at x0", "H at f*", "M^-1 H at f*"]
    assert points.iloc[1]["kappa"] == "3.74e+04" and points.iloc[1]["sqrt(kappa)"] == "193"
    assert points.iloc[0]["kappa"] == "-" and points.iloc[0]["negative"] == "13.4 %"
    assert costs.set_index("method").loc["newton-cg", "products per iteration"] == "81.6"
    cells = {n for frame in (points, costs) for v in frame.astype(str).to_numpy().ravel() for n in NUMBER.findall(v)}
    cells |= {n for r in report._cells(t)[1] for c_ in r for n in NUMBER.findall(c_)}
    for line in explain.answer(t, c, res, neg):
        text = re.sub(r"\(kappa - 1\)/\(kappa \+ 1\)|\b1e-[3469]\b|\(f - f\*\)/\|f\*\||lambda_max/100|2/lambda_max|H d = -g|\b1 %", "", line)
        text = re.sub(r"(?<![\d.])[A-Za-z][\w^-]*\d[\w-]*", "", text)  # names with digits (M^-1, x0)
        cited = set(NUMBER.findall(text))
        assert cited <= cells, (line, cited - cells)


def test_gd_faster_than_its_bound_and_no_faster():
    t, c, res, _ = full()
    fast = explain._why_gd(*explain.why_table(t, c, res), c)[0]
    bound = explain._g(explain.gd_iterations_per_tenfold(3.736e4))
    assert f": {bound} iterations per tenfold near f*" in fast and "faster than that bound" in fast
    slow_c = {**c, "condition_optimum": 10.0}
    slow = explain._why_gd(*explain.why_table(t, slow_c, res), slow_c)[0]
    assert slow.endswith("over its last half: no faster than that bound.")


def test_gd_without_a_rate_and_without_a_measured_optimum():
    t, c, res, _ = full(gd_res=result("gd", list(range(0, 40, 2)), [1e-2] * 20))
    assert explain._why_gd(*explain.why_table(t, c, res), c)[0].endswith(
        "gd's gradient norm did not shrink steadily over its last half, so no rate is observed.")
    no_opt = {k: v for k, v in c.items() if not k.endswith("optimum")}
    assert explain._why_gd(*explain.why_table(t, no_opt, res), no_opt) == [
        "The Hessian at f* was not measured positive definite here, so no rate is predicted from it."]


def test_newton_products_against_sqrt_kappa_and_the_preconditioner():
    t, c, res, _ = full()
    cg, pcg = explain._why_newton(*explain.why_table(t, c, res))
    assert "newton-cg spent 81.6 Hessian-vector products per step (3894 passes in 47 steps; fewer than sqrt(kappa)" in cg
    assert "newton-cg shrank |g| tenfold every" in cg
    assert pcg == ("Preconditioned by the Hessian's block diagonal M, CG meets M^-1 H instead: kappa 561 (sqrt 23.7, "
                   "against 3.74e+04 for H), and newton-pcg spent 18.6 products per step (465 passes in 21 steps), "
                   "fewer than newton-cg's 81.6.")
    small = {**c, "condition_optimum": 100.0}
    assert "no fewer than sqrt(kappa)" in explain._why_newton(*explain.why_table(t, small, res))[0]
    no_pre = {k: v for k, v in c.items() if not k.endswith("preconditioned")}
    assert explain._why_newton(*explain.why_table(t, no_pre, res))[-1] == (
        "The preconditioned Hessian M^-1 H was not measured here, so newton-pcg's cost is not explained by it.")


def test_the_start_negative_with_and_without_meetings_and_positive():
    t, c, res, _ = full()
    met = explain._start(*explain.why_table(t, c, res, {"newton-cg": 16, "gd": 0}))[0]
    assert met.startswith("At the start x0 13.4 % of the Hessian's eigenvalues are negative (lambda_min -5.69e-04)")
    assert "(newton-cg 16 times)" in met and "gd" not in met
    assert "times" not in explain._start(*explain.why_table(t, c, res))[0]
    positive = {**c, "lambda_min_start": 1e-4}
    assert explain._start(*explain.why_table(t, positive, res))[0].startswith(
        "At the start x0 the Hessian is positive definite off the symmetry (lambda_min 1.00e-04)")
    assert explain._start(*explain.why_table(t, {}, res)) == []


def test_what_accuracy_buys_rose_and_did_not():
    t, c, res, _ = full()
    _, costs = explain.why_table(t, c, res)
    rose = explain._accuracy(t, costs)[0]
    assert rose.startswith("Best validation RMSE: gd 0.8246 at pass 2,") or "gd 0.8246 at pass 2" in rose
    assert "Optimizing on raised it: gd to 0.8342" in rose
    flat = table(row("gd", val_rmse=0.8246, **{BEST_VAL: 0.8246}, iterations=2000, data_passes=4000))
    _, costs = explain.why_table(flat, c, {"gd": res["gd"]})
    assert explain._accuracy(flat, costs)[0].endswith("No method's validation RMSE rose after its best: here optimizing "
                                                      "on cost nothing in RMSE.")
    assert explain._accuracy(flat, pd.DataFrame()) == []
