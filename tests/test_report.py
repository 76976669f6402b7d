"""Generated sentences are code: a test per branch of report.findings and its helpers, and a
property test over generated tables (every number a sentence cites is in the table, rankings follow
the table, no failed or inapplicable method is ranked)."""

from __future__ import annotations

import math
import re

import pandas as pd
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline import report
from pipeline.schema import BEST_VAL, TARGET_KEYS


def row(name, reason="converged", note="", message="", **m):
    base = {"data_passes": 100, "fit_seconds": 1.0, "rel_gap": 1e-5, "rel_grad_norm": 1e-6, "iterations": 10,
            "val_rmse": 0.9, BEST_VAL: 0.89, "test_rmse": 0.91}
    base.update(m)
    return report.table_row(name, base, reason, note, message)


def table(*rows):
    return report.comparison_table(list(rows))


def test_plateau_sentence_cites_each_best_validation_rmse_not_the_final_one():
    t = table(row("gd", passes_to_val=50, seconds_to_val=0.5, val_rmse=0.8342, **{BEST_VAL: 0.8246}),
              row("lbfgs", passes_to_val=40, seconds_to_val=0.4, val_rmse=0.8375, **{BEST_VAL: 0.8285}))
    text = " ".join(report.findings(t))
    assert "The plateaus differ: best validation RMSE gd 0.8246, lbfgs 0.8285." in text
    assert "0.8342" not in text.split("plateaus")[1].split(".")[0]


def test_equal_plateaus_are_said_once():
    t = table(row("a", passes_to_val=5, seconds_to_val=0.1), row("b", passes_to_val=6, seconds_to_val=0.1))
    assert "Every plateau is at validation RMSE 0.8900." in " ".join(report.findings(t))


def test_no_method_reaching_a_target_and_the_missed_list():
    t = table(row("a", **{"passes_to_1e-3": 7, "seconds_to_1e-3": 0.2}), row("b"))
    lines = report.findings(t)
    assert lines[0] == "To (f - f*)/|f*| <= 1e-3: by data passes a (7 passes); by seconds a (0.20 s). Not reached: b."
    assert "No method reached (f - f*)/|f*| <= 1e-9 within its budget." in lines


def test_every_ending_has_its_sentence():
    endings = {"converged": "converged, ||g||/||g0|| = 1.0e-06",
               "max_passes": "its budget of data passes spent, ||g||/||g0|| = 1.0e-06",
               "max_seconds": "its time budget spent (machine-dependent), ||g||/||g0|| = 1.0e-06",
               "max_iter": "its iteration cap reached, ||g||/||g0|| = 1.0e-06",
               "early_stopped": "early stop: validation RMSE stopped improving",
               "diverged": "diverged: the objective or its gradient is not finite"}
    for reason, words in endings.items():
        lines = report.findings(table(row("m", reason)))
        assert f"m stopped after 100 data passes in 10 iterations (1.00 s): {words}." in lines, (reason, lines)
    lines = report.findings(table(row("m", "method", message="the method stopped on its own: line search failed")))
    assert 'm stopped after 100 data passes in 10 iterations (1.00 s): the method stopped on its own, ' \
           '||g||/||g0|| = 1.0e-06 ("line search failed").' in lines


def test_above_and_below_f_star_are_said_without_naming_the_kind_of_point():
    t = table(row("a", note="converged above f*", rel_gap=8.5e-5), row("b", note="converged above f*", rel_gap=9.8e-5),
              row("c", note="below f*", rel_gap=-1e-8))
    text = " ".join(report.findings(t))
    assert ("a ((f - f*)/|f*| = 8.5e-05), b ((f - f*)/|f*| = 9.8e-05) each met the gradient tolerance above f*"
            in text)
    assert "local minimum or a saddle, only the curvature there can tell" in text
    assert "another stationary point" not in text
    assert "c ((f - f*)/|f*| = -1.0e-08) ended below f*" in text
    one = " ".join(report.findings(table(row("a", note="converged above f*"))))
    assert " each met" not in one and " met the gradient tolerance above f*" in one


def test_failed_and_inapplicable_methods_are_said_and_never_ranked():
    t = table(row("ok", **{"passes_to_1e-3": 5, "seconds_to_1e-3": 0.1}),
              report.table_row("broken", {}, "failed", message="LinAlgError: singular"),
              report.table_row("als", {}, report.NOT_APPLICABLE, message="not applicable: svdpp has no als_sweep"))
    lines = report.findings(t)
    assert "broken failed: LinAlgError: singular." in lines
    assert "als was not run: not applicable: svdpp has no als_sweep." in lines
    ranked = [line for line in lines if line.startswith("To ") or "spans" in line]
    assert all("als" not in line and "broken" not in line for line in ranked)
    assert "Validation RMSE 0.9000, test RMSE 0.9100." in lines  # one method ran: no "spans"


def test_nothing_ran_gives_no_ranking_at_all():
    lines = report.findings(table(report.table_row("als", {}, report.NOT_APPLICABLE, message="not applicable: x"),
                                  report.table_row("global-mean", {"val_rmse": 1.0, "test_rmse": 1.1})))
    assert lines == ["als was not run: not applicable: x."]


def test_spans_and_baselines():
    t = table(row("a", val_rmse=0.83, test_rmse=0.84), row("b", val_rmse=0.85, test_rmse=0.86),
              report.table_row("global-mean", {"val_rmse": 1.05, "test_rmse": 1.06}))
    assert ("Final validation RMSE spans 0.8300 to 0.8500 across the methods that ran; test RMSE 0.8400 to "
            "0.8600. Baselines' test RMSE: global-mean 1.0600.") in report.findings(t)


def test_equal_final_rmse_is_not_a_span():
    t = table(row("a", val_rmse=0.83, test_rmse=0.84), row("b", val_rmse=0.83, test_rmse=0.86))
    assert ("Final validation RMSE is 0.8300 for every method that ran; test RMSE 0.8400 to 0.8600."
            in report.findings(t))


def test_negative_curvature_sentence_names_only_the_methods_that_met_it():
    assert report.negative_curvature_sentence({}) is None
    assert report.negative_curvature_sentence({"newton-cg": 0}) is None
    s = report.negative_curvature_sentence({"newton-cg": 3})
    assert "newton-cg 3" in s and "Newton-CG stops CG" in s and "trust-ncg" not in s
    s = report.negative_curvature_sentence({"trust-ncg": 2, "gd": 1})
    assert "trust-ncg follows it" in s and "Newton-CG" not in s


def test_bits_sentence_claims_machine_independence_only_for_the_pinned_kernels():
    assert "same bits on any x86-64 CPU with AVX2" in report.bits_sentence("Haswell")
    other = report.bits_sentence("SkylakeX")
    assert "same bits" not in other and "SkylakeX kernels, not the pinned Haswell" in other
    assert "unrecorded" in report.bits_sentence(None)


# -- the property: sentences cite their table ------------------------------------------------------
NUMBER = re.compile(r"-?\d+(?:\.\d+)?(?:e[-+]?\d+)?")
REASONS = ["converged", "max_passes", "max_seconds", "method", "early_stopped", "diverged", "failed",
           report.NOT_APPLICABLE]
finite = st.floats(1e-12, 1e3, allow_nan=False)
maybe = lambda s: st.one_of(st.none(), s)  # noqa: E731


@st.composite
def method_row(draw, name):
    reason = draw(st.sampled_from(REASONS))
    if reason in ("failed", report.NOT_APPLICABLE):
        return report.table_row(name, {}, reason, message=f"{reason}: {name} could not")
    m = {"data_passes": draw(st.integers(0, 5000)), "fit_seconds": draw(finite), "iterations": draw(st.integers(0, 999)),
         "rel_gap": draw(st.floats(-1e-3, 1.0)), "rel_grad_norm": draw(finite),
         "val_rmse": draw(st.floats(0.5, 2.0)), "test_rmse": draw(st.floats(0.5, 2.0))}
    m[BEST_VAL] = m["val_rmse"] - draw(st.floats(0.0, 0.1))
    for key in TARGET_KEYS:
        passes = draw(maybe(st.integers(0, 5000)))
        if passes is not None:
            m[f"passes_to_{key}"], m[f"seconds_to_{key}"] = passes, draw(finite)
    note = draw(st.sampled_from(["", "converged above f*", "below f*"]))
    return report.table_row(name, m, reason, note, message=draw(st.sampled_from(["", "line search failed 60 times"])))


@st.composite
def tables(draw):
    names = draw(st.lists(st.sampled_from(["gd", "gd-bb", "newton-cg", "newton-pcg", "lbfgs", "als", "sgd"]),
                          min_size=1, max_size=7, unique=True))
    rows = [draw(method_row(n)) for n in names]
    if draw(st.booleans()):
        rows.insert(0, report.table_row("global-mean", {"val_rmse": draw(st.floats(0.9, 1.2)),
                                                        "test_rmse": draw(st.floats(0.9, 1.2))}))
    return report.comparison_table(rows)


def _numbers(text: str) -> set[str]:
    text = re.sub(r'"[^"]*"', "", text)  # a method's own message, quoted: its words, not a figure of ours
    text = re.sub(r"\b1e-[3469]\b|\|\|g0\|\||\(f - f\*\)/\|f\*\|", "", text)  # targets and formulas, not figures
    text = re.sub(r"(?<![\d.])[A-Za-z][\w-]*\d[\w-]*", "", text)  # names that contain digits
    return set(NUMBER.findall(text))


@settings(max_examples=300, deadline=None)
@given(tables())
def test_every_cited_number_is_in_the_table_and_rankings_follow_it(t):
    headers, cells = report._cells(t)
    in_table = {n for r in cells for c in r for n in NUMBER.findall(c)}
    ran = set(t.loc[~t["reason"].isin(report.NOT_RUN), "optimizer"])
    not_run = set(t.loc[t["reason"].isin(["failed", report.NOT_APPLICABLE]), "optimizer"])
    for line in report.findings(t):
        cited = _numbers(line)
        assert cited <= in_table, (line, cited - in_table)
        if line.startswith("To "):
            for part in re.findall(r"by (?:data passes|seconds) ([^;.]*(?:\.\d+[^;.]*)*)", line):
                pairs = re.findall(r"([\w-]+) \(([\d.]+)(?: passes| s)\)", part)
                assert pairs and all(name in ran for name, _ in pairs), line
                values = [float(v) for _, v in pairs]
                assert values == sorted(values), line
        if line.startswith("To ") or "spans" in line or "plateau" in line:
            assert not any(re.search(rf"(?<![\w-]){re.escape(n)}(?![\w-])", line) for n in not_run), line


def test_the_kind_of_each_end_point_is_said_where_it_was_measured():
    """Each branch: every kind measured, some, none (the last is the sentence above)."""
    both = table(row("a", note="converged above f*: a local minimum, lambda_min 1.9e-07", rel_gap=8.5e-5),
                 row("b", note="converged above f*: a saddle point, lambda_min -3.3e-08", rel_gap=9.8e-5))
    text = " ".join(report.findings(both))
    assert ("a ((f - f*)/|f*| = 8.5e-05; a local minimum, lambda_min 1.9e-07), b ((f - f*)/|f*| = 9.8e-05; a saddle "
            "point, lambda_min -3.3e-08) each met the gradient tolerance above f*, at stationary points other than "
            "the reference's, of the kind the Hessian's smallest eigenvalue there says") in text
    assert "only the curvature there can tell" not in text
    some = " ".join(report.findings(table(row("a", note="converged above f*: a local minimum, lambda_min 1.9e-07"),
                                          row("b", note="converged above f*"))))
    assert "where no kind is given, whether a local minimum or a saddle, only the curvature there can tell" in some
    one = " ".join(report.findings(table(row("a", note="converged above f*: a saddle point, lambda_min -3.3e-08"))))
    assert " met the gradient tolerance above f*, at a stationary point other than the reference's" in one
    assert " each " not in one
