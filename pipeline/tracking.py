"""MLflow tracking: the only module that imports mlflow.

Layout of a comparison: one experiment per dataset; a parent run per comparison; a nested
child run per optimizer (and per baseline). Params are logged once per run; metric names are
flat and split-prefixed (``train_loss``, ``grad_norm``, ``val_rmse``, ``test_rmse``,
``fit_seconds``, ``n_hessp`` ...). Per-iteration curves are buffered and sent with
``log_batch`` (one metric per call costs ~12 ms on SQLite), flushed every few seconds so the UI
shows a fit while it runs. A run that raises is marked FAILED; Ctrl-C marks it KILLED. The
tracker never prints: the CLI decides what the user sees.
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
import socket
import tempfile
import time
import urllib.parse
import warnings
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import mlflow
import pandas as pd
from mlflow.entities import Metric
from mlflow.tracking import MlflowClient

from pipeline import schema
from pipeline.optim.base import IterationRecord

UI_HOST, UI_PORT = "127.0.0.1", 5000


# A tracking server that does not answer: one line within about 10 s, not minutes of silent retries
# (MLflow's defaults: 7 retries with exponential backoff, 120 s per request). Users may still set them.
os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "1")
os.environ.setdefault("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "1")
os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "4")
# MLflow draws a progress bar (when tqdm is installed) for every artifact it reads back, as logging a
# model does to validate its input example: noise on stderr around our one-line messages.
os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")


@contextmanager
def _uninterrupted():
    """Hold SIGINT, SIGTERM and SIGHUP while a write to the store runs, and deliver them after it.

    A signal that lands inside an SQLite transaction leaves it open, holding the database lock, and
    the cleanup that marks the runs KILLED then waits on that lock (about 60 s, then errors). Here
    the write completes (or fails) first; the held signal is then handled as it would have been."""
    import signal as _signal
    import threading
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    held: list[int] = []
    sigs = (_signal.SIGINT, _signal.SIGTERM, _signal.SIGHUP)
    previous = {sig: _signal.signal(sig, lambda signum, _frame: held.append(signum)) for sig in sigs}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            _signal.signal(sig, handler)
        if held:
            handler = previous[held[0]]
            if callable(handler):
                handler(held[0], None)
            elif handler == _signal.SIG_DFL and held[0] == _signal.SIGINT:
                raise KeyboardInterrupt
            elif handler == _signal.SIG_DFL:
                _signal.raise_signal(held[0])


class StoreError(Exception):
    """The MLflow store or server cannot be used: one line saying what is wrong and what to do."""


def store_problem(exc: BaseException) -> str | None:
    """One line for an error that comes from the MLflow store or server, else None."""
    import sqlalchemy.exc
    from mlflow.exceptions import MlflowException
    if isinstance(exc, StoreError):
        return str(exc)
    if isinstance(exc, (MlflowException, sqlalchemy.exc.SQLAlchemyError)):
        text = str(exc)
        server = re.search(r"API request to (https?://[^/\s]+)", text)
        if server:
            why = ("connection refused" if "refused" in text else "timed out" if "timed out" in text.lower()
                   else "no answer")
            return f"no MLflow tracking server answers at {server.group(1)} ({why}): start it, or check --tracking-uri"
        # SQLAlchemy's (or MLflow's wrapping) first line can be a note on autoflush; the database
        # driver's error, somewhere down the chain, says what happened
        first = (text.strip().splitlines() or [type(exc).__name__])[0]
        link: BaseException | None = exc
        while link is not None:
            if isinstance(link, sqlalchemy.exc.DBAPIError) and link.orig is not None:
                first = str(link.orig)
                break
            link = link.__cause__ or link.__context__
        if re.search(r"disk is full|disk I/O error|No space left|File too large", text):
            return (f"the MLflow store failed: {first[:200]} (is its disk full? free space, run again, "
                    f"then `recsys runs repair` marks any run left open)")
        return f"the MLflow store failed: {first[:200]}"
    return None


def _sqlite_path(uri: str) -> Path | None:
    return Path(uri[len("sqlite:///"):]) if uri.startswith("sqlite:///") else None


def open_store(uri: str, create: bool = True) -> None:
    """Make sure an SQLite store can be used before anything is written to it.

    A new store is built aside and renamed into place under a lock, so an interrupted or
    concurrent first use never leaves a half-built store; a half-built or damaged one gets a
    one-line :class:`StoreError` naming the fix; with ``create=False`` (commands that only read) a
    missing store is an error, never a new empty one. Other URIs are left to MLflow."""
    path = _sqlite_path(uri)
    if path is None:
        return
    if not path.exists():
        if not create:
            raise StoreError(f"no MLflow store at {path} (a mistyped --tracking-uri or MLFLOW_TRACKING_URI?)")
        try:
            with _quiet_mlflow():
                _create_sqlite_store(path)
        except OSError as exc:
            raise StoreError(f"cannot create the MLflow store {path} ({exc.strerror or exc}): "
                             f"choose a folder you can write with --tracking-uri") from None
    try:
        with _quiet_mlflow():  # its own log lines (table creation, a caught SQL error's traceback) are ours to word
            MlflowClient(tracking_uri=uri).search_experiments(max_results=1)
    except Exception as exc:  # noqa: BLE001 - any failure here means the store is unusable
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
        raise StoreError(f"the MLflow store {path} cannot be used ({first}); if an earlier first use was "
                         f"interrupted, move it aside (mv {path} {path}.broken) and run again") from None


@contextmanager
def _quiet_mlflow():
    loggers = [logging.getLogger(name) for name in ("mlflow", "alembic")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)


def _create_sqlite_store(path: Path) -> None:
    import fcntl
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.parent / f".{path.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # a second first use waits here, then finds the store built
        if path.exists():
            return
        tmp = path.parent / f".{path.name}.{os.getpid()}.building"
        tmp.unlink(missing_ok=True)
        try:
            MlflowClient(tracking_uri=f"sqlite:///{tmp}").search_experiments(max_results=1)  # creates the tables
            os.replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)


def _process_start(pid: int) -> str:
    """The start time of ``pid`` in clock ticks since boot (Linux ``/proc``), or "" where unknown."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return ""


def process_tags() -> dict[str, str]:
    """What identifies the process that owns a run: host, pid and the pid's start time."""
    return {"recsys.host": socket.gethostname(), "recsys.pid": str(os.getpid()),
            "recsys.process_start": _process_start(os.getpid())}


def _process_alive(pid: int, start: str) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process holds the pid now
        return False
    return not start or _process_start(pid) in ("", start)


def _finite(metrics: dict) -> dict:
    return {k: float(v) for k, v in metrics.items()
            if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)}


class MlflowTracker:
    """Logs comparisons to ``tracking_uri`` (an SQLite store for local use).

    ``artifact_root``: where a new experiment keeps its artifacts (an absolute folder, so
    files never scatter into whatever directory the command ran from).
    """

    records = True  # runs, metrics and files are kept (see pipeline.null_tracker for the other kind)

    def __init__(self, tracking_uri: str, artifact_root: str | os.PathLike | None = None,
                 flush_seconds: float = 3.0, create: bool = True):
        self.tracking_uri = tracking_uri
        # MLflow logs the traceback of every SQL error it then re-raises; store_problem words the
        # error once, so its log line would only bury that one line under 40 lines of traceback.
        logging.getLogger("mlflow.store.db.utils").setLevel(logging.CRITICAL)
        open_store(tracking_uri, create)
        self.client = MlflowClient(tracking_uri=tracking_uri)
        self.artifact_root = Path(artifact_root).resolve() if artifact_root else None
        self.flush_seconds = flush_seconds
        self._buffer: dict[str, list[Metric]] = {}
        self._last_flush = time.monotonic()
        self.experiment_id: str | None = None

    # -- experiments and runs --------------------------------------------------------------
    def use_experiment(self, name: str) -> str:
        exp = self.client.get_experiment_by_name(name)
        if exp is None:
            location = None
            if self.artifact_root is not None:
                location = (self.artifact_root / path_component(name)).as_uri()
            self.experiment_id = self.client.create_experiment(name, artifact_location=location)
        else:
            if exp.lifecycle_stage == "deleted":
                self.client.restore_experiment(exp.experiment_id)
            self.experiment_id = exp.experiment_id
        return self.experiment_id

    @contextmanager
    def run(self, name: str, params: dict | None = None, parent_id: str | None = None,
            tags: dict | None = None) -> Iterator[str]:
        """A run (nested under ``parent_id`` if given); FINISHED, FAILED or KILLED on exit."""
        if self.experiment_id is None:
            raise RuntimeError("call use_experiment() first")
        all_tags = {"mlflow.runName": name, **process_tags(), **(tags or {})}
        if parent_id:
            all_tags["mlflow.parentRunId"] = parent_id
        with _uninterrupted():
            run = self.client.create_run(self.experiment_id, tags=all_tags, run_name=name)
        run_id = run.info.run_id
        status = "FAILED"
        try:
            if params:
                self.log_params(run_id, params)
            yield run_id
            status = "FINISHED"
        except KeyboardInterrupt:
            status = "KILLED"
            raise
        finally:
            # The status is set only after the last points are written: a run whose final write
            # failed (full disk, broken store) is FAILED, never FINISHED with its curve missing.
            try:
                self.flush(run_id)
            except Exception:
                status = "FAILED" if status == "FINISHED" else status
                raise
            finally:
                with _uninterrupted():
                    self.client.set_terminated(run_id, status)

    def repair(self) -> list[str]:
        """Mark FAILED the RUNNING runs of this host whose process is gone (SIGKILL, power loss):
        their ``recsys.pid`` is not alive, or is alive with another start time (a reused pid).
        Runs of other hosts are left alone: their processes cannot be checked from here."""
        repaired = []
        host = socket.gethostname()
        experiments = [e.experiment_id for e in self.client.search_experiments()]
        if not experiments:
            return repaired
        for run in self.client.search_runs(experiments, "attributes.status = 'RUNNING'", max_results=10_000):
            tags = run.data.tags
            if tags.get("recsys.host") != host or "recsys.pid" not in tags:
                continue
            if not _process_alive(int(tags["recsys.pid"]), tags.get("recsys.process_start", "")):
                self.client.set_tag(run.info.run_id, "recsys.repaired", "its process is gone")
                self.client.set_terminated(run.info.run_id, "FAILED")
                repaired.append(run.info.run_id)
        return repaired

    # -- params, metrics, curves ------------------------------------------------------------------
    def log_params(self, run_id: str, params: dict) -> None:
        from mlflow.entities import Param
        items = [Param(str(k), str(v)[:6000]) for k, v in params.items()]
        for start in range(0, len(items), 100):
            with _uninterrupted():
                self.client.log_batch(run_id, params=items[start:start + 100])

    def log_metrics(self, run_id: str, metrics: dict, step: int = 0) -> None:
        now = int(time.time() * 1000)
        items = [Metric(k, v, now, step) for k, v in _finite(metrics).items()]
        for start in range(0, len(items), 1000):
            with _uninterrupted():
                self.client.log_batch(run_id, metrics=items[start:start + 1000])

    def set_tags(self, run_id: str, tags: dict) -> None:
        for k, v in tags.items():
            with _uninterrupted():
                self.client.set_tag(run_id, k, str(v))

    def curve_listener(self, run_id: str, f_star: float | None = None):
        """A :class:`pipeline.optim.Monitor` listener that buffers the curves of ``run_id``
        (``pipeline.schema.CURVES``; ``rel_gap = (f - f*)/|f*|`` and its log10 when the reference
        optimum is given), each point at step = the data passes so far."""
        def listen(_name: str, record: IterationRecord) -> None:
            now = int(time.time() * 1000)
            values = schema.curve_point(record, f_star)
            buf = self._buffer.setdefault(run_id, [])
            buf.extend(Metric(k, v, now, int(record.data_passes)) for k, v in _finite(values).items())
            if time.monotonic() - self._last_flush >= self.flush_seconds:
                self.flush(run_id)
        return listen

    def flush(self, run_id: str) -> None:
        """Write the buffered points of ``run_id``; a point leaves the buffer only once its batch
        is written, so a failed or interrupted write loses nothing that a later flush can send."""
        items = self._buffer.get(run_id, [])
        while items:
            with _uninterrupted():  # a signal mid-transaction would keep the lock the cleanup needs
                self.client.log_batch(run_id, metrics=items[:1000])
                del items[:1000]
        self._buffer.pop(run_id, None)
        self._last_flush = time.monotonic()

    # -- models ---------------------------------------------------------------------------------------
    def log_model(self, run_id: str, recommender, name: str, step: int = 0) -> str:
        """Log a fit as a LoggedModel of ``run_id``; tags the run with its URI and returns it."""
        uri = _log_model(self, run_id, recommender, name, step)
        self.set_tags(run_id, {"model_uri": uri})
        return uri

    def register(self, model_uri: str, name: str) -> str:
        """Put ``model_uri`` in the Model Registry under ``name``; returns the new version."""
        mlflow.set_tracking_uri(self.tracking_uri)
        with _quiet_mlflow(), _uninterrupted():
            return str(mlflow.register_model(model_uri, name).version)

    # -- inputs and artifacts ---------------------------------------------------------------------
    def log_dataset(self, run_id: str, frame: pd.DataFrame, name: str, source: str, context: str) -> None:
        """Record the dataset as a run input (name, digest, schema, source)."""
        from mlflow.entities import DatasetInput, InputTag
        with warnings.catch_warnings():  # schema hints about integer columns: ids are never missing here
            warnings.simplefilter("ignore")
            dataset = mlflow.data.from_pandas(frame, source=source or name, name=name)
            entity = dataset._to_mlflow_entity()
        self.client.log_inputs(run_id, datasets=[DatasetInput(
            entity, tags=[InputTag("mlflow.data.context", context)])])

    def log_artifact(self, run_id: str, path: str | os.PathLike, artifact_path: str | None = None) -> None:
        self.client.log_artifact(run_id, str(path), artifact_path)

    # -- links for people --------------------------------------------------------------------------
    def links(self, run_ids: list[str], ui_url: str | None = None, race_ids: list[str] | None = None
              ) -> dict[str, str]:
        """The experiment page and the compare page for ``run_ids`` in the MLflow UI; with
        ``race_ids`` (the methods' runs) also ``race``: the metric page overlaying their
        ``rel_gap`` curves over step = data passes, on a log axis (the race on its fair axis)."""
        base = (ui_url or f"http://{UI_HOST}:{UI_PORT}").rstrip("/")
        exp = self.experiment_id
        q = lambda value: urllib.parse.quote(json.dumps(value, separators=(",", ":")))  # noqa: E731
        out = {
            "experiment": f"{base}/#/experiments/{exp}?workflowType=machine_learning",
            "compare": f"{base}/#/compare-runs?runs={q(run_ids)}&experiments={q([exp])}&workflowType=machine_learning",
        }
        if race_ids:
            out["race"] = (f"{base}/#/metric?runs={q(race_ids)}&metric={q(schema.GAP)}&experiments={q([exp])}"
                           f"&plot_metric_keys={q([schema.GAP])}&plot_layout={q({})}&x_axis=step&y_axis_scale=log"
                           "&line_smoothness=1&show_point=false")
        return out

    def experiment_links(self, ui_url: str | None = None) -> dict[str, dict[str, str]]:
        """Per experiment (the Default one aside): its page, and the compare page of its newest
        comparison's child runs where it has one."""
        out = {}
        for exp in self.client.search_experiments():
            if exp.name == "Default":
                continue
            self.experiment_id = exp.experiment_id
            runs = self.client.search_runs([exp.experiment_id], "tags.kind = 'comparison'",
                                           order_by=["attributes.start_time DESC"], max_results=1)
            children = self.client.search_runs([exp.experiment_id], f"tags.mlflow.parentRunId = '{runs[0].info.run_id}'"
                                               ) if runs else []
            links = self.links([c.info.run_id for c in children], ui_url,
                               [c.info.run_id for c in children if c.data.tags.get("kind") == "optimizer"])
            out[exp.name] = links if runs else {"experiment": links["experiment"]}
        return out

    def latest_comparison(self, experiment: str | None = None) -> str:
        """The run id of the newest finished comparison (in ``experiment``, or in any experiment):
        one still running, killed or failed has an incomplete race."""
        exps = ([self.client.get_experiment_by_name(experiment)] if experiment
                else [e for e in self.client.search_experiments()])
        exps = [e for e in exps if e is not None]
        if not exps:
            raise LookupError(f"no experiment {experiment!r} in {self.tracking_uri}")
        runs = self.client.search_runs([e.experiment_id for e in exps],
                                       "tags.kind = 'comparison' and attributes.status = 'FINISHED'",
                                       order_by=["attributes.start_time DESC"], max_results=1)
        if not runs:
            raise LookupError(f"no finished comparison run in {self.tracking_uri}: run `recsys compare` first")
        return runs[0].info.run_id

    def load_comparison(self, parent_id: str) -> dict:
        """A logged comparison: parent params, and per child run its params, final metrics, tags
        and curves (``{metric: [(step, value), ...]}``). Repeats (seeds, folds) are flattened to
        the first repeat's children."""
        parent = self.client.get_run(parent_id)
        self.experiment_id = parent.info.experiment_id
        children = self.client.search_runs([parent.info.experiment_id], f"tags.mlflow.parentRunId = '{parent_id}'",
                                           order_by=["attributes.start_time ASC"])
        repeats = [c for c in children if c.data.tags.get("kind") == "repeat"]
        if repeats:
            children = self.client.search_runs([parent.info.experiment_id],
                                               f"tags.mlflow.parentRunId = '{repeats[0].info.run_id}'",
                                               order_by=["attributes.start_time ASC"])
        out = {"parent": {"run_id": parent_id, "params": parent.data.params, "metrics": parent.data.metrics,
                          "tags": parent.data.tags, "status": parent.info.status,
                          "experiment": self.client.get_experiment(parent.info.experiment_id).name},
               "children": []}
        for c in children:
            curves = {}
            if c.data.tags.get("kind") == "optimizer":
                for key in schema.CURVE_NAMES:
                    hist = self.client.get_metric_history(c.info.run_id, key)
                    curves[key] = sorted((h.step, h.value) for h in hist)
            out["children"].append({"name": c.info.run_name, "run_id": c.info.run_id, "params": c.data.params,
                                    "metrics": c.data.metrics, "tags": c.data.tags, "curves": curves})
        out["spectrum"] = self._table_artifact(parent_id, "spectrum.csv")
        return out

    def _table_artifact(self, run_id: str, name: str) -> pd.DataFrame | None:
        """A CSV artifact at ``run_id``'s root as a DataFrame; None where the run has none."""
        if name not in {a.path for a in self.client.list_artifacts(run_id)}:
            return None
        with tempfile.TemporaryDirectory() as tmp:
            return pd.read_csv(self.client.download_artifacts(run_id, name, tmp))

    def run_info(self, run_id: str):
        """The stored run (for tests and reports)."""
        return self.client.get_run(run_id)


class RecommenderModel(mlflow.pyfunc.PythonModel):
    """The MLflow pyfunc face of :class:`pipeline.recommender.Recommender` (any model).

    Input: a DataFrame with columns ``user`` and ``item`` (raw ids). Output: predicted ratings,
    clipped to the scale; unknown users or items get the documented fallback, never an error.
    """

    def load_context(self, context):
        from pipeline.recommender import Recommender
        self.recommender = Recommender.load(context.artifacts["recommender"])

    def _predict(self, context, model_input, params=None):
        frame = pd.DataFrame(model_input)
        return self.recommender.predict(frame["user"].to_numpy(), frame["item"].to_numpy())


# Attached after the class is made: MLflow inspects ``predict`` at class creation and prints a
# type-hint suggestion (forcing its own warning filter); our signature is given explicitly.
RecommenderModel.predict = RecommenderModel._predict


def _model_requirements() -> list[str]:
    """What a logged model needs installed: published packages only (the model carries this
    project's code itself, ``code_paths``), pinned to what fitted it."""
    import numpy
    import scipy
    return [f"mlflow=={mlflow.__version__}", f"numpy=={numpy.__version__}", f"pandas=={pd.__version__}",
            f"scipy=={scipy.__version__}"]


def _log_model(tracker: "MlflowTracker", run_id: str, recommender, name: str, step: int = 0) -> str:
    """``recommender`` as an MLflow LoggedModel of ``run_id`` (the experiment's Models tab, the
    run's metrics at ``step`` linked to it): a pyfunc model with signature and input example,
    self-contained (this package travels as ``code_paths``). Returns ``models:/<model_id>``."""
    import tempfile
    import pipeline
    from mlflow.models import Model, ModelSignature, infer_signature
    from mlflow.types.schema import AnyType, ColSpec, Schema
    # The fluent API that logs a model reads the store and the experiment from globals.
    mlflow.set_tracking_uri(tracker.tracking_uri)
    with _quiet_mlflow():
        mlflow.set_experiment(experiment_id=tracker.client.get_run(run_id).info.experiment_id)
    with tempfile.TemporaryDirectory() as tmp:
        npz = recommender.save(Path(tmp) / "recommender.npz")
        example = pd.DataFrame({"user": recommender.user_ids[:3].tolist() + [recommender.user_ids[0]],
                                "item": recommender.item_ids[:3].tolist() + [recommender.item_ids[-1]]})
        # Ids of any type: MLflow would otherwise refuse a string, float or missing id on an
        # integer-id model with a schema error; the model itself gives such ids the fallback.
        with _quiet_mlflow(), warnings.catch_warnings(), _uninterrupted():
            warnings.simplefilter("ignore")  # its notes on schemas, pickling and examples are for us, not users
            outputs = infer_signature(example, recommender.predict(example["user"], example["item"])).outputs
            signature = ModelSignature(Schema([ColSpec(AnyType(), "user"), ColSpec(AnyType(), "item")]), outputs)
            info = Model.log(artifact_path=None, name=name, flavor=mlflow.pyfunc, run_id=run_id, step=step,
                             python_model=RecommenderModel(), artifacts={"recommender": str(npz)},
                             code_paths=[str(Path(pipeline.__file__).parent)], signature=signature,
                             input_example=example, pip_requirements=_model_requirements(),
                             tags={"fit": name})
    return info.model_uri


def load_recommender(model_uri: str):
    """The :class:`Recommender` inside a logged pyfunc model (for top-n lists)."""
    return mlflow.pyfunc.load_model(model_uri).unwrap_python_model().recommender


def path_component(name: str) -> str:
    """``name`` (an experiment's, which comes from data or from a shared store) as one safe path
    component: letters, digits, ``-``, ``_`` and inner dots kept, every other character ``_``, no
    leading dot (so never ``.`` or ``..``), at most 100 characters."""
    safe = "".join(ch if ch.isalnum() and ch.isascii() or ch in "-_." else "_" for ch in name)[:100]
    return ("_" + safe.lstrip(".")) if safe.startswith(".") else safe or "_"


def ui_command(tracking_uri: str, host: str = UI_HOST, port: int = UI_PORT) -> list[str]:
    """The ``mlflow ui`` command line for ``tracking_uri``."""
    import sys
    return [sys.executable, "-m", "mlflow", "ui", "--backend-store-uri", tracking_uri,
            "--host", host, "--port", str(port)]
