"""The case study's question, answered from measured figures: when does Newton-CG beat gradient
descent, and why (no tracking, no printing).

The "when" compares the two methods' data passes to each target of the race. The "why" puts each
method's observed cost beside what the Hessian's measured spectrum predicts for it:

- gradient descent with the best fixed step ``2/(lambda_min + lambda_max)`` contracts the error of
  a quadratic by ``(kappa - 1)/(kappa + 1)`` per iteration in its slowest direction (``kappa =
  lambda_max / lambda_min``): about ``ln(10) (kappa + 1)/2`` iterations per tenfold;
- CG reduces the error of a Newton system ``H d = -g`` by ``2 ((sqrt(kappa) - 1)/(sqrt(kappa) +
  1))^m`` in ``m`` products, so its products per Newton step grow like ``sqrt(kappa)``;
  preconditioned by ``M`` it meets ``M^-1 H`` and its condition number instead;
- where ``lambda_min < 0`` (the start) the quadratic model is unbounded below and CG stops at the
  first direction of negative curvature it meets.

Every sentence cites only numbers of :func:`why_table` (formatted as there) or of the comparison
table, and each branch (a method missing, a target reached by one, by both, by neither, a spectrum
not measured) has its own wording and its own test (tests/test_explain.py).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

from pipeline import race
from pipeline.optim.base import OptimizeResult
from pipeline.report import NOT_RUN
from pipeline.report import _missing as _nan  # one test of "no figure" (None or NaN) for both modules
from pipeline.schema import BEST_VAL, GAP, TARGET_KEYS

NEWTON, PRECONDITIONED, GRADIENT, BB = "newton-cg", "newton-pcg", "gd", "gd-bb"
TAIL_SHARE = 0.5   # the tail: the last half of a method's passes
TAIL_POINTS = 5    # fewer records than this in the tail: no rate
MIN_DROP = 0.1     # decades: a tail whose fitted |g| falls less than this has no rate (it stalled)

# The formulas the "why" rests on: (plain text for Markdown and the terminal, MathML for HTML).
FORMULAS = {
    "kappa": ("kappa = lambda_max / lambda_min",
              "<mi>&#x3BA;</mi><mo>=</mo><mfrac><msub><mi>&#x3BB;</mi><mi>max</mi></msub>"
              "<msub><mi>&#x3BB;</mi><mi>min</mi></msub></mfrac>"),
    "gd": ("|e_(t+1)| <= (kappa - 1)/(kappa + 1) |e_t|   (gradient descent, step 2/(lambda_min + lambda_max))",
           "<mo>&#x2016;</mo><msub><mi>e</mi><mrow><mi>t</mi><mo>+</mo><mn>1</mn></mrow></msub><mo>&#x2016;</mo>"
           "<mo>&#x2264;</mo><mfrac><mrow><mi>&#x3BA;</mi><mo>&#x2212;</mo><mn>1</mn></mrow>"
           "<mrow><mi>&#x3BA;</mi><mo>+</mo><mn>1</mn></mrow></mfrac><mo>&#x2016;</mo><msub><mi>e</mi><mi>t</mi>"
           "</msub><mo>&#x2016;</mo>"),
    "cg": ("|e_m|_H <= 2 ((sqrt(kappa) - 1)/(sqrt(kappa) + 1))^m |e_0|_H   (CG on H d = -g, m products)",
           "<msub><mrow><mo>&#x2016;</mo><msub><mi>e</mi><mi>m</mi></msub><mo>&#x2016;</mo></mrow><mi>H</mi></msub>"
           "<mo>&#x2264;</mo><mn>2</mn><msup><mrow><mo>(</mo><mfrac><mrow><msqrt><mi>&#x3BA;</mi></msqrt><mo>&#x2212;"
           "</mo><mn>1</mn></mrow><mrow><msqrt><mi>&#x3BA;</mi></msqrt><mo>+</mo><mn>1</mn></mrow></mfrac><mo>)</mo>"
           "</mrow><mi>m</mi></msup><msub><mrow><mo>&#x2016;</mo><msub><mi>e</mi><mn>0</mn></msub><mo>&#x2016;</mo>"
           "</mrow><mi>H</mi></msub>"),
}


@dataclass(frozen=True)
class Rate:
    """A method's observed linear rate in its tail: ``|g|`` shrank tenfold every ``passes`` data
    passes (``iterations`` iterations), by least squares of ``log10 |g|`` over the tail."""

    passes: float
    iterations: float


def tail_rate(res: OptimizeResult) -> Rate | None:
    """The tenfold cost of ``|g|/|g0|`` over the last :data:`TAIL_SHARE` of the method's passes;
    None where the tail is too short or ``|g|`` did not shrink there by :data:`MIN_DROP` decades."""
    hist = res.history
    if not hist:
        return None
    end = hist[-1].data_passes
    tail = [r for r in hist if r.data_passes >= (1 - TAIL_SHARE) * end and r.rel_grad_norm > 0
            and math.isfinite(r.rel_grad_norm)]
    if len(tail) < TAIL_POINTS:
        return None
    logs = np.log10([r.rel_grad_norm for r in tail])
    per_pass = np.polyfit([r.data_passes for r in tail], logs, 1)[0]
    per_iter = np.polyfit(np.arange(len(tail), dtype=float), logs, 1)[0]  # the j-th record is iteration j
    drop = -per_pass * (tail[-1].data_passes - tail[0].data_passes)  # decades the fitted line falls over the tail
    if not (per_pass < 0 and per_iter < 0 and drop >= MIN_DROP):
        return None
    return Rate(-1.0 / per_pass, -1.0 / per_iter)


def gd_iterations_per_tenfold(kappa: float) -> float:
    """``ln(10) / -ln((kappa - 1)/(kappa + 1))``: the bound's iterations per tenfold."""
    return math.log(10) / -math.log((kappa - 1) / (kappa + 1)) if kappa > 1 else 1.0


def _g(v: float) -> str:
    return f"{v:.3g}"


def _e(v: float) -> str:
    return f"{v:.2e}"


def why_table(table: pd.DataFrame, curvature: dict, results: dict[str, OptimizeResult],
              negative: dict[str, float] | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Two tables of formatted figures: the spectrum at each measured point (``point``,
    ``lambda_min``, ``lambda_max``, ``kappa``, ``sqrt(kappa)``, the shares ``negative`` and ``below
    1 % of lambda_max``, and gradient descent's bound in iterations per tenfold) from the parent's
    curvature metrics, and each method's costs (``method``, ``passes``, ``iterations``,
    ``passes per iteration``, ``products per iteration``, ``tail passes per tenfold of |g|``,
    ``tail iterations per tenfold``, ``best val RMSE at pass``, ``negative curvature met``: the
    inner solver's products with ``v.Hv < 0``, from ``negative``)."""
    points = []
    for label, name in (("start", "H at x0"), ("optimum", "H at f*"), ("preconditioned", "M^-1 H at f*")):
        if f"lambda_min_{label}" not in curvature:
            continue
        lo, hi = curvature[f"lambda_min_{label}"], curvature[f"lambda_max_{label}"]
        kappa = curvature.get(f"condition_{label}")
        points.append({"point": name, "label": label, "lambda_min": _e(lo), "lambda_max": _e(hi),
                       "kappa": _g(kappa) if kappa else "-", "sqrt(kappa)": _g(math.sqrt(kappa)) if kappa else "-",
                       "negative": _share(curvature.get(f"eigenvalues_negative_share_{label}")),
                       "below 1 % of lambda_max": _share(curvature.get(f"eigenvalues_below_1pct_share_{label}")),
                       "gd iterations per tenfold (bound)": _g(gd_iterations_per_tenfold(kappa)) if kappa else "-"})
    methods = []
    rows = {r["optimizer"]: r for r in table.to_dict("records")}
    for name, res in results.items():
        r = rows.get(name, {})
        iters, passes = r.get("iterations"), r.get("data_passes")
        if not iters or _nan(iters) or _nan(passes):
            continue
        rate = tail_rate(res)
        products = r.get("n_hessp")
        val = [(v.val_rmse, v.data_passes) for v in res.history if math.isfinite(v.val_rmse)]
        methods.append({"method": name, "passes": f"{passes:.0f}", "iterations": f"{iters:.0f}",
                        "passes per iteration": f"{passes / iters:.1f}",
                        "products per iteration": f"{products / iters:.1f}" if products and not _nan(products) else "-",
                        "tail passes per tenfold of |g|": f"{rate.passes:.0f}" if rate else "-",
                        "tail iterations per tenfold": f"{rate.iterations:.0f}" if rate else "-",
                        "best val RMSE at pass": f"{min(val)[1]:.0f}" if val else "-",
                        "negative curvature met": _count((negative or {}).get(name))})
    return pd.DataFrame(points), pd.DataFrame(methods)


def _count(v) -> str:
    return "-" if _nan(v) or not v else f"{v:.0f}"


def _share(v) -> str:
    return "-" if _nan(v) else f"{100 * v:.1f} %"


def answer(table: pd.DataFrame, curvature: dict, results: dict[str, OptimizeResult],
           negative: dict[str, float] | None = None) -> list[str]:
    """The report's answer to "when does Newton-CG beat gradient descent, and why", as sentences
    (see the module docstring)."""
    spectrum, costs = why_table(table, curvature, results, negative)
    return (_when(table) + _why_gd(spectrum, costs, curvature) + _why_newton(spectrum, costs)
            + _start(spectrum, costs) + _accuracy(table, costs))


def _row(table: pd.DataFrame, name: str) -> dict | None:
    hit = table[(table["optimizer"] == name) & ~table["reason"].isin(NOT_RUN)]
    return hit.iloc[0].to_dict() if len(hit) else None


def _what(key: str) -> str:
    return "the validation plateau" if key == "val" else f"(f - f*)/|f*| <= {key}"


def _when(table: pd.DataFrame) -> list[str]:
    """Per target: which of newton-cg and gd got there in fewer data passes, or which alone, then
    the pattern (one cheaper everywhere, a crossover, mixed)."""
    newton, gd = _row(table, NEWTON), _row(table, GRADIENT)
    if newton is None or gd is None:
        missing = " and ".join(n for n, r in ((NEWTON, newton), (GRADIENT, gd)) if r is None)
        return [f"{missing} did not run here, so this comparison cannot say when {NEWTON} beats {GRADIENT}."]
    lines, winner = [], {}
    for key in TARGET_KEYS:
        a, b = newton.get(f"passes_to_{key}"), gd.get(f"passes_to_{key}")
        what = _what(key)
        if _nan(a) and _nan(b):
            lines.append(f"Neither {NEWTON} nor {GRADIENT} reached {what}.")
        elif _nan(b):
            winner[key] = NEWTON
            lines.append(f"To {what}: {NEWTON} in {a:.0f} passes; {GRADIENT} not within its {gd['data_passes']:.0f}.")
        elif _nan(a):
            winner[key] = GRADIENT
            lines.append(f"To {what}: {GRADIENT} in {b:.0f} passes; {NEWTON} not within its {newton['data_passes']:.0f}.")
        else:
            winner[key] = NEWTON if a < b else GRADIENT if b < a else "tie"
            lines.append(f"To {what}: {NEWTON} in {a:.0f} passes, {GRADIENT} in {b:.0f}"
                         + (": the same." if a == b else f": fewer for {winner[key]}."))
    gap_keys = [k for k in TARGET_KEYS if k != "val" and k in winner]
    if not gap_keys:
        head = f"Neither {NEWTON} nor {GRADIENT} reached any target of (f - f*)/|f*|: this run cannot say when one beats the other."
    elif all(winner[k] == NEWTON for k in gap_keys):
        head = f"{NEWTON} beats {GRADIENT} in data passes at every target of (f - f*)/|f*| either reached ({', '.join(gap_keys)})."
    elif all(winner[k] == GRADIENT for k in gap_keys):
        head = f"{GRADIENT} beats {NEWTON} in data passes at every target of (f - f*)/|f*| either reached ({', '.join(gap_keys)})."
    else:
        first_newton = next((k for k in gap_keys if winner[k] == NEWTON), None)
        crossover = first_newton and all(winner[k] == NEWTON for k in gap_keys[gap_keys.index(first_newton):])
        head = (f"{GRADIENT} is cheaper to the loose targets and {NEWTON} from {first_newton} on: the tighter the target, "
                f"the more {NEWTON}'s costly steps pay." if crossover
                else f"Neither is cheaper at every target: " + ", ".join(f"{k} {winner[k]}" for k in gap_keys) + ".")
    if race.ABOVE_F_STAR in str(newton.get("note") or ""):
        lines.append(f"{NEWTON} converged at another stationary point, (f - f*)/|f*| = {newton[GAP]:.1e} above f*: "
                     "the targets below that were out of its reach from this start, not out of its budget.")
    return [head] + lines


def _first(frame: pd.DataFrame, column: str, value: str) -> dict | None:
    """The first row of a why-table whose ``column`` is ``value`` (None where there is none)."""
    hit = frame[frame[column] == value] if len(frame) else frame
    return hit.iloc[0].to_dict() if len(hit) else None


def _point(spectrum: pd.DataFrame, label: str) -> dict | None:
    return _first(spectrum, "label", label)


def _cost(costs: pd.DataFrame, name: str) -> dict | None:
    return _first(costs, "method", name)


def _why_gd(spectrum: pd.DataFrame, costs: pd.DataFrame, curvature: dict) -> list[str]:
    """The optimum's spread of eigenvalues and what it predicts for gradient descent, beside gd's tail."""
    opt = _point(spectrum, "optimum")
    if opt is None or opt["kappa"] == "-":
        return ["The Hessian at f* was not measured positive definite here, so no rate is predicted from it."]
    bound = float(opt["gd iterations per tenfold (bound)"])
    text = (f"At f* the Hessian's eigenvalues run from lambda_min {opt['lambda_min']} to lambda_max {opt['lambda_max']} "
            f"(kappa {opt['kappa']}"
            + (f"; {opt['below 1 % of lambda_max']} of them below lambda_max/100" if opt["below 1 % of lambda_max"] != "-" else "")
            + f"). Gradient descent's step is bounded by 2/lambda_max, so along the lowest eigenvectors the error shrinks "
            f"by at most (kappa - 1)/(kappa + 1) per iteration: {opt['gd iterations per tenfold (bound)']} iterations per "
            "tenfold near f*.")
    gd = _cost(costs, GRADIENT)
    if gd is None:
        return [text]
    if gd["tail iterations per tenfold"] == "-":
        return [text + f" {GRADIENT}'s gradient norm did not shrink steadily over its last half, so no rate is observed."]
    observed = float(gd["tail iterations per tenfold"])
    relation = ("faster than that bound, which holds once the error lies along the slowest directions"
                if observed < bound else "no faster than that bound")
    return [text + f" {GRADIENT}'s |g| shrank tenfold every {gd['tail iterations per tenfold']} iterations "
            f"({gd['tail passes per tenfold of |g|']} passes) over its last half: {relation}."]


def _why_newton(spectrum: pd.DataFrame, costs: pd.DataFrame) -> list[str]:
    """CG's products per Newton step beside sqrt(kappa), unpreconditioned and preconditioned."""
    lines = []
    opt, pre = _point(spectrum, "optimum"), _point(spectrum, "preconditioned")
    newton, pcg = _cost(costs, NEWTON), _cost(costs, PRECONDITIONED)
    if newton and newton["products per iteration"] != "-" and opt and opt["sqrt(kappa)"] != "-":
        below = float(newton["products per iteration"]) < float(opt["sqrt(kappa)"])
        gd = _cost(costs, GRADIENT)
        lines.append(f"Each {NEWTON} step solves H d = -g by CG, whose products to a given accuracy grow like "
                     f"sqrt(kappa) ({opt['sqrt(kappa)']} at f*): {NEWTON} spent {newton['products per iteration']} "
                     f"Hessian-vector products per step ({newton['passes']} passes in {newton['iterations']} steps; "
                     + ("fewer than sqrt(kappa): each inner solve stops at a residual tolerance relative to |g|, an inexact "
                        "Newton step" if below else "no fewer than sqrt(kappa)")
                     + ")" + (f", where {GRADIENT} spends {gd['passes per iteration']} passes per step" if gd else "")
                     + f". {NEWTON} shrank |g| tenfold every {newton['tail iterations per tenfold']} steps "
                     f"({newton['tail passes per tenfold of |g|']} passes) over its last half."
                     if newton["tail iterations per tenfold"] != "-" else ".")
    if pcg and pcg["products per iteration"] != "-" and pre and pre["sqrt(kappa)"] != "-":
        text = (f"Preconditioned by the Hessian's block diagonal M, CG meets M^-1 H instead: kappa {pre['kappa']} "
                f"(sqrt {pre['sqrt(kappa)']}"
                + (f", against {opt['kappa']} for H" if opt and opt["kappa"] != "-" else "")
                + f"), and {PRECONDITIONED} spent {pcg['products per iteration']} products per step "
                f"({pcg['passes']} passes in {pcg['iterations']} steps)")
        if newton and newton["products per iteration"] != "-":
            fewer = float(newton["products per iteration"]) > float(pcg["products per iteration"])
            text += f", {'fewer' if fewer else 'no fewer'} than {NEWTON}'s {newton['products per iteration']}"
        lines.append(text + ".")
    elif pcg:
        lines.append(f"The preconditioned Hessian M^-1 H was not measured here, so {PRECONDITIONED}'s cost is not explained by it.")
    return lines


def _start(spectrum: pd.DataFrame, costs: pd.DataFrame) -> list[str]:
    """The start's curvature: negative eigenvalues (and which methods' inner solvers met negative
    curvature, from ``costs``) or none."""
    start = _point(spectrum, "start")
    if start is None:
        return []
    if float(start["lambda_min"]) < 0:
        met = [(c["method"], c["negative curvature met"]) for c in (costs.to_dict("records") if len(costs) else [])
               if c.get("negative curvature met", "-") != "-"]
        share = f"{start['negative']} of the Hessian's eigenvalues are" if start["negative"] != "-" else "the Hessian has eigenvalues"
        return [f"At the start x0 {share} negative (lambda_min {start['lambda_min']}): "
                "Newton's quadratic model is unbounded below there, and CG stops at the first direction of negative "
                "curvature it meets" + (" (" + ", ".join(f"{k} {v} times" for k, v in met) + ")" if met else "")
                + ", so the first Newton steps are not Newton steps."]
    return [f"At the start x0 the Hessian is positive definite off the symmetry (lambda_min {start['lambda_min']}): "
            "Newton's model is convex from the first step."]


def _accuracy(table: pd.DataFrame, costs: pd.DataFrame) -> list[str]:
    """What optimization accuracy buys in validation RMSE: where each method's best validation RMSE
    came, and whether going on raised it."""
    rows = {r["optimizer"]: r for r in table.to_dict("records")}
    pieces, rose = [], []
    for cost in (costs.to_dict("records") if len(costs) else []):
        name, row = cost["method"], rows.get(cost["method"])
        if cost["best val RMSE at pass"] == "-" or row is None or _nan(row.get(BEST_VAL)) or _nan(row.get("val_rmse")):
            continue
        pieces.append(f"{name} {row[BEST_VAL]:.4f} at pass {cost['best val RMSE at pass']}")
        if round(row["val_rmse"], 4) > round(row[BEST_VAL], 4):  # as the table shows them
            rose.append(f"{name} to {row['val_rmse']:.4f} at (f - f*)/|f*| = {row[GAP]:.1e}" if not _nan(row.get(GAP))
                        else f"{name} to {row['val_rmse']:.4f}")
    if not pieces:
        return []
    text = "Best validation RMSE: " + ", ".join(pieces) + "."
    if rose:
        text += (" Optimizing on raised it: " + ", ".join(rose) + ". Past that point a lower objective fits the training "
                 "ratings more closely and predicts the validation ratings worse: early stopping on validation RMSE "
                 "(--patience) keeps the better model.")
    else:
        text += " No method's validation RMSE rose after its best: here optimizing on cost nothing in RMSE."
    return [text]
