"""Commands that fit: train, compare, study, sweep, check-grad."""

from __future__ import annotations

import dataclasses
import sys
from dataclasses import replace

import click

from pipeline.cli import cli
from pipeline.cli.config import engine_session, run_config
from pipeline.cli.errors import input_errors
from pipeline.cli.options import (REGISTER, data_options_no_dataset, fit_options, model_options, run_options,
                                  split_options, tracking_options)
from pipeline.cli.output import DownloadProgress, Progress, tracker_for
from pipeline.cli.types import Finite, InputError, OptimizerList, ValueList, finite_float
from pipeline.config import DEFAULT_OPTIMIZERS, StudyConfig
from pipeline.optim import REGISTRY, StoppingRule


def _run_comparison(optimizers, kw) -> None:
    from pipeline import experiment, report
    cfg = run_config(kw, optimizers)
    tracker = tracker_for(kw)

    def started(prep):
        d = prep.ratings.describe()
        cold = prep.split.cold_counts()
        click.echo(f"dataset {prep.ratings.name}: {d['n_ratings']:,} ratings, {d['n_users']:,} users, "
                   f"{d['n_items']:,} items; split {len(prep.split.train):,}/{len(prep.split.validation):,}/"
                   f"{len(prep.split.test):,} (test rows with a cold user {cold['test_cold_user_rows']}, "
                   f"cold item {cold['test_cold_item_rows']}); {prep.objective.n_params:,} parameters", err=True)

    from pipeline.distributed import BackendError, NoCluster
    try:
        with engine_session(kw, note=lambda msg: click.echo(msg, err=True)) as engine:
            result = experiment.compare(cfg, tracker, None if kw.get("quiet") else Progress(), on_start=started,
                                        download_progress=DownloadProgress(), engine=engine,
                                        note=lambda msg: click.echo(msg, err=True))
    except (ValueError, NoCluster) as exc:
        raise InputError(str(exc)) from None
    except BackendError as exc:  # the cluster failed mid-fit (the open runs were marked FAILED), or never answered
        raise click.ClickException(str(exc)) from None
    click.echo("")
    if result.folds:
        click.echo(f"mean over {len(result.folds)} repeats (folds x seeds; test_rmse_std: spread of test RMSE)")
    click.echo(report.format_table(result.table))
    if result.folds:
        click.echo("test_rmse_std  " + "  ".join(f"{r.optimizer} {r.test_rmse_std:.4f}"
                                                 for r in result.table.itertuples()))
    click.echo("")
    for line in report.findings(result.table):
        click.echo(f"- {line}")
    if tracker.records:
        click.echo("")
        click.echo(f"MLflow experiment: {result.links['experiment']}")
        click.echo(f"compare the runs:  {result.links['compare']}")
        if "race" in result.links:
            click.echo(f"the race, (f - f*)/|f*| over data passes: {result.links['race']}")
        best = result.best()  # model selection: validation RMSE
        if best in result.model_uris:
            click.echo(f"best model ({best}): recsys recommend --model-uri {result.model_uris[best]} --user ID")
            if kw.get("register"):
                version = tracker.register(result.model_uris[best], kw["register"])
                click.echo(f"registered as {kw['register']} version {version}: models:/{kw['register']}/{version}")
        click.echo(f"(start the UI with `make ui` or `recsys ui`; store: {tracker.tracking_uri})")
    not_run = {**result.failures, **result.inapplicable}
    if not_run and len(not_run) == len(cfg.optimizers):
        raise click.ClickException("no method ran: " + "; ".join(f"{k}: {v}" for k, v in not_run.items()))


@cli.command()
@click.option("--optimizer", type=click.Choice(list(REGISTRY)), default="newton-cg", show_default=True,
              help="The optimizer to fit with.")
@run_options
@fit_options
@REGISTER
@input_errors
def train(optimizer, **kw):
    """Fit one model with one optimizer (logged as a comparison of one, beside the baselines)."""
    _run_comparison((optimizer,), kw)


@cli.command()
@click.option("--optimizers", type=OptimizerList(), default=",".join(DEFAULT_OPTIMIZERS), show_default=True,
              help=f"Comma-separated optimizers, from: {', '.join(REGISTRY)}.")
@run_options
@fit_options
@REGISTER
@input_errors
def compare(optimizers, **kw):
    """Compare optimizers on one objective from one starting point under one stopping rule."""
    _run_comparison(optimizers, kw)


@cli.command()
@click.option("--datasets", type=ValueList(str, "dataset"), default=",".join(StudyConfig().datasets), show_default=True,
              help="Comma-separated datasets of the suite (names or paths, as --dataset takes).")
@click.option("--optimizers", type=OptimizerList(), default=",".join(REGISTRY), show_default=True,
              help="The methods compared on every problem.")
@click.option("--ranks", type=ValueList(int, "integer"), default=",".join(map(str, StudyConfig().grid["rank"])),
              show_default=True, help="The suite's ranks (a model without a rank: leave out).")
@click.option("--regs", type=ValueList(finite_float, "finite number"),
              default=",".join(map(str, StudyConfig().grid["reg"])), show_default=True, help="The suite's factor penalties.")
@click.option("--seeds", "seed_list", type=ValueList(int, "integer"), default=",".join(map(str, StudyConfig().seeds)),
              show_default=True, help="Starting points per (dataset, rank, reg).")
@click.option("--gtol", type=Finite(min=0), default=StudyConfig().rule.gtol, show_default=True,
              help="Stop a method at ||g||/||g0|| <= GTOL [default: as tight as the reference, so the targets, "
                   "not the gradient test, end the race]")
@click.option("--max-passes", type=click.IntRange(min=1), default=StudyConfig().rule.max_passes, show_default=True,
              help="Budget per method and problem, in data passes.")
@click.option("--max-seconds", type=Finite(min=0, min_open=True), default=StudyConfig().rule.max_seconds,
              show_default=True, help="Wall-time safety net per method and problem (set so that the passes budget, "
                                      "which is the same on any machine, ends every run of the default suite here).")
@click.option("--reference-passes", type=click.IntRange(min=1), default=StudyConfig().reference_passes,
              show_default=True, help="Budget of each phase of the reference solve (L-BFGS, then Newton-CG) per "
                                      "problem, in passes.")
@click.option("--quiet", "-q", is_flag=True, help="No per-iteration progress.")
@data_options_no_dataset
@split_options
@model_options
@tracking_options
@input_errors
def study(datasets, optimizers, ranks, regs, seed_list, gtol, max_passes, max_seconds, reference_passes, quiet, **kw):
    """Run the methods over a suite of problems (datasets x ranks x regs x seeds) and draw Dolan-More
    performance profiles in data passes and in seconds for each target (logged at the parent run)."""
    from pipeline import experiment
    cfg = run_config({**kw, "dataset": datasets[0]}, optimizers)
    own = {f.name for f in dataclasses.fields(cfg.model.hyper)}
    grid = {k: v for k, v in (("rank", ranks), ("reg", regs)) if k in own}
    suite = StudyConfig(datasets=tuple(datasets), grid=grid, seeds=tuple(seed_list), reference_passes=reference_passes,
                        rule=StoppingRule(gtol=gtol, max_passes=max_passes, max_seconds=max_seconds))
    tracker = tracker_for(kw)
    try:
        out = experiment.study(cfg, suite, tracker, None if quiet else Progress(10.0),
                               note=lambda msg: click.echo(msg, err=True))
    except ValueError as exc:
        raise InputError(str(exc)) from None
    click.echo("")
    for line in out.headline:
        click.echo(f"- {line}")
    if tracker.records:
        click.echo("")
        click.echo(f"MLflow experiment: {out.links['experiment']}")
        click.echo("profiles: performance_profile_passes.png, performance_profile_seconds.png and study.csv "
                   f"at run {out.parent_run_id}")



@cli.command()
@click.option("--optimizer", type=click.Choice(list(REGISTRY)), default="als", show_default=True,
              help="The optimizer every trial fits with.")
@click.option("--search", type=click.Choice(["tpe", "grid"]), default="tpe", show_default=True,
              help="tpe: Optuna's TPE over log-uniform ranges (--ranks LOW,HIGH ...), seeded, unpromising trials "
                   "pruned on their validation curve, the study kept so a rerun resumes it; grid: every "
                   "combination of the values given.")
@click.option("--ranks", type=ValueList(int, "integer"), default=None,
              help="Ranks: a range LOW,HIGH for tpe [default 5,100]; values for grid [default 10,20,50].")
@click.option("--regs", type=ValueList(finite_float, "finite number"), default=None,
              help="Factor penalties: a range for tpe, for every weighting [default 0.003,3 with count, 0.3,300 "
                   "with none: an unweighted penalty is charged per row, not per rating]; values for grid "
                   "[default 0.03,0.05,0.1].")
@click.option("--reg-biases", type=ValueList(finite_float, "finite number"), default=None,
              help="Bias penalties: a range for tpe, for every weighting [default 0.0003,3 with count, 0.03,300 "
                   "with none]; values for grid [default 0.05].")
@click.option("--weightings", type=ValueList(str, "weighting"), default=None,
              help="Penalty weightings to choose from [default: count,none for tpe, count for grid].")
@click.option("--val-fraction", type=Finite(min=0, max=1, min_open=True, max_open=True), default=0.1,
              show_default=True, help="With --train/--test files: the share of the training file held out, seeded "
                                      "by --split-seed, to select on.")
@click.option("--trials", type=click.IntRange(min=1), default=None,
              help="tpe: trials in the study [default 30]; grid: this many grid points drawn at random (seeded by "
                   "--seed) [default: the whole grid].")
@click.option("--study-storage", default=None,
              help="tpe: where the Optuna study is kept [default: sqlite:///DATA_DIR/optuna.db].")
@run_options
@fit_options
@input_errors
def sweep(optimizer, search, ranks, regs, reg_biases, weightings, val_fraction, trials, study_storage, **kw):
    """Tune rank and penalties by validation RMSE only; refit the winner on train + validation and
    report its test RMSE once. Each trial is a nested MLflow run; the winner is tagged; a winner at
    the edge of what was searched is said. Trials stop 10 iterations after their best validation
    RMSE unless --patience says otherwise."""
    from pipeline import experiment
    from pipeline.search import DEFAULT_PATIENCE, StudyError, default_storage, make_search, study_name
    cfg = run_config(kw, (optimizer,))
    if kw.get("patience") is None:  # a trial is over once its validation RMSE has stopped improving
        cfg = replace(cfg, rule=replace(cfg.rule, patience=DEFAULT_PATIENCE))
    tracker = tracker_for(kw)
    given = {"rank": ranks, "reg": regs, "reg_bias": reg_biases, "weighting": weightings}
    own = {f.name for f in dataclasses.fields(cfg.model.hyper)}
    try:
        proposer = make_search(search, given, own, trials, cfg.seed, lambda p: cfg.model.with_values(**p),
                               study_storage or default_storage(cfg.data.data_dir), study_name(cfg, optimizer))
    except ValueError as exc:
        raise InputError(str(exc)) from None

    def on_trial(j, n, params, val):
        shown = f"val_rmse {val:.4f}" if val is not None else "pruned"
        click.echo(f"trial {j + 1}/{n}: " + ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                                                   for k, v in params.items()) + f"  {shown}", err=True)
    try:
        out = experiment.sweep(cfg, proposer, optimizer, tracker, None if kw.get("quiet") else Progress(10.0),
                               on_trial=on_trial, val_fraction=val_fraction,
                               on_note=lambda text: click.echo(f"note: {text}", err=True))
    except ValueError as exc:
        raise InputError(str(exc)) from None
    except StudyError as exc:
        raise click.ClickException(str(exc)) from None
    shown = out.trials.drop(columns=["run_id"]).sort_values("val_rmse")
    click.echo(shown.to_string(index=False, float_format=lambda v: f"{v:.4g}"))
    click.echo("")
    click.echo("winner (by validation RMSE): " + ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                                                          for k, v in out.best.items()))
    click.echo(f"refit on train + validation: test RMSE {out.test_metrics['test_rmse']:.4f}, "
               f"test MAE {out.test_metrics['test_mae']:.4f} ({out.test_metrics['fit_seconds']:.1f} s)")
    for edge in out.edges:
        click.echo(f"note: the winner's {edge}", err=True)
    if tracker.records:
        click.echo(f"MLflow experiment: {out.links['experiment']}")
        click.echo(f"compare the trials: {out.links['compare']}")



@cli.command()
@run_options
@input_errors
def curvature(**kw):
    """The Hessian's extreme eigenvalues at the start x0 and at the reference optimum, on the
    complement of the model's symmetry (k(k-1)/2 directions for MF): lambda_min, lambda_max, the
    condition number, the kind of point, and what the measurement cost in passes and seconds; and
    the preconditioned Hessian's (M^-1 H, newton-pcg's) at the optimum where the model offers it."""
    from pipeline.experiment.spectra import measure_points
    try:
        points, _ = measure_points(run_config(kw, ()), note=lambda msg: click.echo(msg, err=True))
    except ValueError as exc:
        raise InputError(str(exc)) from None
    click.echo(f"{'point':<18} {'lambda_min':>11} {'lambda_max':>10} {'condition':>10} {'|g|/|g0|':>9} "
               f"{'deflated':>8} {'residual':>8} {'passes':>7} {'seconds':>7}  kind")
    for m in points:
        c = m.curvature
        cond = f"{c.condition:.3g}" if c.condition != float("inf") else "-"
        click.echo(f"{m.label:<18} {c.lambda_min:>11.3e} {c.lambda_max:>10.3e} {cond:>10} {m.rel_grad_norm:>9.1e} "
                   f"{c.symmetry_dim + c.inactive:>8} {c.residual:>8.1e} {c.passes:>7} {m.seconds:>7.1f}  {m.kind}")


@cli.command("check-grad")
@click.option("--directions", type=click.IntRange(min=1), default=3, show_default=True,
              help="Random directions per check point.")
@run_options
@input_errors
def check_grad(directions, **kw):
    """Check the gradient and Hessian-vector product against central finite differences.

    Prints the largest relative error over random directions, at the starting point and at a
    random point: g.v against (f(x+hv)-f(x-hv))/2h, Hv against (g(x+hv)-g(x-hv))/2h, and the
    symmetry u.Hv = v.Hu.
    """
    from pipeline import experiment
    try:
        errors = experiment.check_grad(run_config(kw, ()), n_directions=directions)
    except ValueError as exc:
        raise InputError(str(exc)) from None
    for k, v in errors.items():
        click.echo(f"{k:<34} {v:.2e}")
    worst = max(errors.values())
    click.echo(f"{'worst':<34} {worst:.2e}  ({'ok' if worst < 1e-5 else 'LARGE: check the derivatives'})")
    if worst >= 1e-5:
        sys.exit(1)
