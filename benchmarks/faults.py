"""Fault cases end to end: each runs the real `recsys` command in a fresh folder and checks that it
ends as a demanding user expects (one line, the right exit code, a consistent store, nothing lost).

    python benchmarks/faults.py          # prints one line per case and "held N of M"

The unit tests hold each case too; this script shows them together as a user meets them.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

RECSYS = [sys.executable, "-m", "pipeline"]


def run(args, cwd, env=None, timeout=120, prefix=(), preexec_fn=None):
    t0 = time.monotonic()
    p = subprocess.run(list(prefix) + RECSYS + args, cwd=cwd, capture_output=True, text=True, timeout=timeout,
                       env={**os.environ, **(env or {})}, preexec_fn=preexec_fn)
    return p, time.monotonic() - t0


def read_only(folder: Path) -> list[str]:
    """A command prefix that runs with ``folder`` read-only (a read-only bind mount in a private
    mount namespace for root, whom file modes do not stop; the folder's mode for anyone else)."""
    if os.geteuid() != 0:
        folder.chmod(0o555)
        return []
    return ["unshare", "--mount", "--propagation", "private", "sh", "-c",
            'mount --bind "$0" "$0" && mount -o remount,bind,ro "$0" && exec "$@"', str(folder)]


def one_line(p, code, text):
    """Exit ``code`` and one error line holding ``text``. Click's own "Usage: ... Try ... --help"
    framing around a bad option is not counted: the error itself is the one line."""
    framing = ("note:", "Usage:", "Try '", "dataset ", "kernels ", "reference optimum", "curvature at ", "one operation costs",
               "  downloading:")
    lines = [line for line in p.stderr.splitlines() if line.strip() and not line.startswith(framing)]
    ok = p.returncode == code and len(lines) == 1 and text in lines[0] and "Traceback" not in p.stderr
    return ok, f"exit {p.returncode}: {lines[-1] if lines else '(nothing on stderr)'}"


def statuses(db: Path) -> dict[str, str]:
    with sqlite3.connect(db) as con:
        return dict(con.execute("select name, status from runs"))


def wait_running(db: Path, seconds: float = 90) -> None:
    """Until the store at ``db`` has a RUNNING run named gd (the fit has started)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        time.sleep(0.5)
        try:
            if statuses(db).get("gd") == "RUNNING":
                return
        except sqlite3.Error:  # the store is still being created
            pass


def main() -> int:
    work = Path(tempfile.mkdtemp(prefix="recsys-faults-"))
    data = work / "small" / "u.data"
    subprocess.run(RECSYS + ["data", "synth", "--out", str(data), "--users", "60", "--items", "50", "--ratings", "1200",
                             "--seed", "2"], check=True, capture_output=True)
    base = ["--dataset", str(data), "--data-dir", str(work / "d"), "-q", "--no-models"]
    cases = []

    def long_fit(uri: str, db: Path) -> subprocess.Popen:
        """A comparison of gd that runs until stopped (120 s at most), once its fit is RUNNING."""
        proc = subprocess.Popen(RECSYS + ["compare", "--tracking-uri", uri, "--optimizers", "gd", "--gtol", "0",
                                          "--max-passes", "100000000", "--max-seconds", "120"] + base,
                                cwd=work, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_running(db)
        return proc

    def case(name):
        def register(fn):
            cases.append((name, fn))
            return fn
        return register

    @case("nan in a numeric option")
    def _():
        return one_line(run(["compare", "--reg", "nan"] + base, work)[0], 2, "not a finite number")

    @case("inf in a sweep grid")
    def _():
        return one_line(run(["sweep", "--regs", "0.1,inf"] + base, work)[0], 2, "finite number")

    @case("unknown key in a config file")
    def _():
        cfg = work / "bad.toml"
        cfg.write_text("[defaults]\nrnak = 3\n")
        return one_line(run(["--config", str(cfg), "compare"] + base, work)[0], 2, "did you mean 'rank'")

    @case("--validation without --train")
    def _():
        return one_line(run(["compare", "--validation", str(data), "--no-tracking"] + base, work)[0], 2,
                        "--validation is part of a predefined split")

    @case("a zip with two ratings files")
    def _():
        z = work / "two.zip"
        with zipfile.ZipFile(z, "w") as zf:
            zf.writestr("a/u.data", data.read_text())
            zf.writestr("b/u.data", data.read_text())
        return one_line(run(["data", "describe", str(z)], work)[0], 2, "holds 2 ratings files")

    @case("a 5 MB field")
    def _():
        f = work / "huge.csv"
        f.write_text("userId,movieId,rating\n1,2,4\n1," + "9" * 5_000_000 + ",4\n")
        return one_line(run(["data", "describe", str(f)], work)[0], 2, "longer than 64 KB")

    @case("ids 007, 7 and 0007 are three users")
    def _():
        f = work / "ids" / "u.data"
        f.parent.mkdir()
        f.write_text("007\t1\t4\t1\n7\t1\t3\t2\n0007\t2\t5\t3\n")
        p, _ = run(["data", "describe", str(f)], work)
        return p.returncode == 0 and "3 users" in p.stdout, p.stdout.splitlines()[0] if p.stdout else p.stderr

    @case("recommend --users with a binary file")
    def _():
        b = work / "users.bin"
        b.write_bytes(bytes(range(256)))
        return one_line(run(["recommend", "--model-uri", "runs:/x/model", "--users", str(b)], work)[0], 2,
                        "not a text file")

    @case("an output folder that cannot be written")
    def _():
        blocker = work / "a-file"
        blocker.write_text("")
        return one_line(run(["data", "synth", "--out", str(blocker / "x" / "u.data"), "--users", "10", "--items", "5",
                             "--ratings", "20"], work)[0], 1, "Not a directory")

    @case("recommend with a mistyped store creates nothing")
    def _():
        typo = work / "typo.db"
        ok, what = one_line(run(["recommend", "--model-uri", "runs:/x/model", "--user", "1", "--tracking-uri",
                                 f"sqlite:///{typo}"], work)[0], 1, "no MLflow store")
        return ok and not typo.exists(), what

    @case("a tracking server that does not answer, within 10 s")
    def _():
        p, seconds = run(["compare", "--tracking-uri", "http://127.0.0.1:9"] + base, work)
        ok, what = one_line(p, 1, "no MLflow tracking server answers")
        return ok and seconds < 10, f"{what} ({seconds:.1f} s)"

    @case("a half-built store")
    def _():
        db = work / "half.db"
        with sqlite3.connect(db) as con:
            con.execute("CREATE TABLE experiments (experiment_id INTEGER PRIMARY KEY, name VARCHAR(256))")
        return one_line(run(["compare", "--tracking-uri", f"sqlite:///{db}"] + base, work)[0], 1, "move it aside")

    @case("two first uses of a new store at once")
    def _():
        uri = f"sqlite:///{work / 'race.db'}"
        procs = [subprocess.Popen(RECSYS + ["compare", "--tracking-uri", uri, "--optimizers", "gd", "--max-passes", "20"]
                                  + base, cwd=work, stdout=subprocess.DEVNULL,
                                  stderr=subprocess.PIPE, text=True) for _ in range(2)]
        errs = [p.communicate(timeout=300)[1] for p in procs]
        ok = all(p.returncode == 0 for p in procs)
        return ok, f"exit codes {[p.returncode for p in procs]}" + ("" if ok else f"; {errs[0].strip()[-200:]}")

    @case("a full disk (file size limit) mid-fit: one line, no run left open")
    def _():
        import resource
        db = work / "full.db"
        subprocess.run(RECSYS + ["runs", "repair", "--tracking-uri", f"sqlite:///{db}"], capture_output=True)
        room = db.stat().st_size + 40_000

        def little_room():
            signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
            resource.setrlimit(resource.RLIMIT_FSIZE, (room, room))
        p, _ = run(["compare", "--tracking-uri", f"sqlite:///{db}", "--max-passes", "3000"] + base, work,
                   preexec_fn=little_room)
        ok, what = one_line(p, 1, "is its disk full?")
        st = statuses(db)
        return ok and "RUNNING" not in st.values(), f"{what}; runs {st}"

    @case("a read-only store")
    def _():
        folder = work / "ro-store"
        folder.mkdir()
        subprocess.run(RECSYS + ["runs", "repair", "--tracking-uri", f"sqlite:///{folder / 'mlflow.db'}"],
                       capture_output=True)
        return one_line(run(["compare", "--tracking-uri", f"sqlite:///{folder / 'mlflow.db'}", "--max-passes", "50"]
                            + base, work, prefix=read_only(folder))[0], 1, "attempt to write a readonly database")

    @case("a read-only artifact folder: one line, runs FAILED")
    def _():
        db, artifacts = work / "ro-art.db", work / "ro-art"
        artifacts.mkdir()
        subprocess.run([sys.executable, "-c", "import sys; from mlflow.tracking import MlflowClient; "
                        "MlflowClient(sys.argv[1]).create_experiment('small', artifact_location=sys.argv[2])",
                        f"sqlite:///{db}", (artifacts / "small").as_uri()], capture_output=True, check=True)
        p, _ = run(["compare", "--tracking-uri", f"sqlite:///{db}", "--max-passes", "50"] + base, work,
                   prefix=read_only(artifacts))
        ok, what = one_line(p, 1, "Read-only file system" if os.geteuid() == 0 else "Permission denied")
        st = statuses(db)
        return ok and "FAILED" in st.values() and "RUNNING" not in st.values(), f"{what}; runs {st}"

    @case("ALS on a zero penalty fails alone")
    def _():
        p, _ = run(["compare", "--optimizers", "lbfgs,als,gd", "--rank", "8", "--reg", "0", "--reg-bias", "0",
                    "--max-passes", "200", "--no-tracking"] + base, work)
        ok = p.returncode == 0 and "als failed: LinAlgError" in p.stdout and "\ngd " in p.stdout
        return ok, f"exit {p.returncode}"

    for sig in (signal.SIGTERM, signal.SIGHUP):
        @case(f"{sig.name} during a fit")
        def _(sig=sig):
            db = work / f"{sig.name}.db"
            proc = long_fit(f"sqlite:///{db}", db)
            time.sleep(4)  # a flush or two of curve points
            proc.send_signal(sig)
            proc.communicate(timeout=60)
            st = statuses(db)
            with sqlite3.connect(db) as con:
                points = con.execute("select count(*) from metrics where key = 'train_loss'").fetchone()[0]
            ok = proc.returncode == 128 + sig and st.get("gd") == "KILLED" and st.get("compare-gd") == "KILLED"
            return ok and points > 1, f"exit {proc.returncode}, runs {st}, {points} curve points"

    @case("SIGKILL, then any logging command repairs the runs")
    def _():
        db = work / "kill.db"
        uri = f"sqlite:///{db}"
        proc = long_fit(uri, db)
        proc.kill()
        proc.wait()
        p, _ = run(["runs", "repair", "--tracking-uri", uri], work)
        st = statuses(db)
        ok = p.returncode == 0 and st.get("gd") == st.get("compare-gd") == "FAILED" and "RUNNING" not in st.values()
        return ok, f"{p.stdout.strip()}; runs {st}"

    # -- round 2 (issue 22): studies, caches, bounds, names, servers -------------------------------------
    other = work / "small" / "other.data"
    subprocess.run(RECSYS + ["data", "synth", "--out", str(other), "--users", "50", "--items", "40", "--ratings",
                             "900", "--seed", "5"], check=True, capture_output=True)
    sweep = ["sweep", "--optimizer", "als", "--max-passes", "20", "--no-tracking", "-q", "--data-dir", str(work / "sw")]

    @case("1a a sweep on another file in the same folder starts its own study")
    def _():
        run(sweep + ["--dataset", str(data), "--trials", "2"], work)
        p, _ = run(sweep + ["--dataset", str(other), "--trials", "2"], work)
        fitted = sum(line.startswith("trial ") for line in p.stderr.splitlines())
        return p.returncode == 0 and "resuming" not in p.stderr and fitted == 2, f"exit {p.returncode}, {fitted} fitted"

    @case("1b/1e a resumed sweep numbers on and finishes (winner from either run)")
    def _():
        p, _ = run(sweep + ["--dataset", str(data), "--trials", "3"], work)
        ok = p.returncode == 0 and "2 of 3 trials done before" in p.stderr and "trial 3/3" in p.stderr
        return ok and "winner" in p.stdout, f"exit {p.returncode}: {p.stderr.strip().splitlines()[-1][:90]}"

    @case("1f two sweeps on one study at once fit it once and agree")
    def _():
        args = sweep[:-1] + [str(work / "sw2"), "--dataset", str(data), "--trials", "4"]
        procs = [subprocess.Popen(RECSYS + args, cwd=work, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                 for _ in range(2)]
        outs = [p.communicate(timeout=300) for p in procs]
        fitted = sum(line.startswith("trial ") for _, err in outs for line in err.splitlines())
        winners = {next((line for line in out.splitlines() if line.startswith("winner")), "") for out, _ in outs}
        ok = all(p.returncode == 0 for p in procs) and fitted == 4 and len(winners) == 1
        return ok, f"{fitted} trials fitted between them, {len(winners)} winner(s); exit {[p.returncode for p in procs]}"

    @case("6 a corrupt study database is blamed on the study")
    def _():
        db = work / "bad-optuna.db"
        db.write_bytes(b"SQLite format 3\x00" + b"\x13" * 3000)
        return one_line(run(sweep + ["--dataset", str(data), "--trials", "1", "--study-storage", f"sqlite:///{db}"],
                            work)[0], 1, "the study storage")

    @case("2 a tampered reference optimum is recomputed")
    def _():
        args = ["compare", "--optimizers", "lbfgs", "--max-passes", "50", "--no-tracking"] + base + [
            "--data-dir", str(work / "ref")]
        first, _ = run(args, work)
        import json
        [ref] = (work / "ref" / "cache" / "reference").glob("*.json")
        fields = json.loads(ref.read_text())
        honest = fields["f_star"]
        ref.write_text(json.dumps({**fields, "f_star": "0.1"}))
        p, _ = run(args, work)
        ok = p.returncode == 0 and f"f* = {honest:.12g}" in p.stderr
        return ok, f"exit {p.returncode}, f* {'recomputed' if ok else 'trusted'}"

    @case("3 a gzip whose first line is 1 MB is refused at once")
    def _():
        import gzip
        g = work / "long.csv.gz"
        g.write_bytes(gzip.compress(b"userId,movieId,rating\n1," + b"9" * 1_000_000 + b",4\n"))
        p, seconds = run(["data", "describe", str(g)], work)
        ok, what = one_line(p, 2, "longer than 64 KB")
        return ok and seconds < 30, f"{what} ({seconds:.1f} s)"

    @case("4 an uncompressed Parquet file is read")
    def _():
        import pandas as pd
        f = work / "plain.parquet"
        pd.DataFrame({"user": range(1, 301), "item": [i % 17 for i in range(300)], "rating": [1.0 + i % 5 for i in range(300)]}).to_parquet(
            f, compression=None)
        p, _ = run(["data", "describe", str(f)], work)
        return p.returncode == 0 and "300 ratings" in p.stdout, f"exit {p.returncode}"

    @case("7 report on a comparison still running is refused")
    def _():
        db = work / "live.db"
        uri = f"sqlite:///{db}"
        proc = long_fit(uri, db)
        with sqlite3.connect(db) as con:
            [live] = con.execute("select run_uuid from runs where name = 'compare-gd'").fetchone()
        p, _ = run(["report", "--run-id", live, "--tracking-uri", uri], work)
        proc.send_signal(signal.SIGTERM)
        proc.wait(60)
        return one_line(p, 2, "is RUNNING: wait until it finishes")

    @case("8 recsys ui on a port in use exits non-zero")
    def _():
        import socket
        with socket.socket() as taken:
            taken.bind(("127.0.0.1", 0))
            taken.listen()
            p, _ = run(["ui", "--port", str(taken.getsockname()[1]), "--tracking-uri", f"sqlite:///{work / 'kill.db'}"],
                       work)
        return one_line(p, 1, "is in use")

    @case("9 --rank 200000 under a 4 GB address-space limit")
    def _():
        import resource

        def four_gb():
            resource.setrlimit(resource.RLIMIT_AS, (4 << 30, 4 << 30))
        return one_line(run(["train", "--rank", "200000", "--optimizer", "lbfgs", "--no-tracking"] + base, work,
                            preexec_fn=four_gb)[0], 2, "GiB this process may use")

    @case("9 a zip member that unpacks past what parsing may use")
    def _():
        import resource
        z = work / "bomb.zip"
        with zipfile.ZipFile(z, "w", zipfile.ZIP_DEFLATED) as zf:
            zf.writestr("bomb/u.data", data.read_text() + "\0" * (600 << 20))

        def two_gb():
            resource.setrlimit(resource.RLIMIT_AS, (2 << 30, 2 << 30))
        ok, what = one_line(run(["data", "describe", str(z)], work, preexec_fn=two_gb)[0], 2, "parsing it needs about")
        return ok and z.stat().st_size < 5 << 20, what

    @case("9/10 an endless download body stops at the archive's limit")
    def _():
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
        import threading

        class Endless(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.0"

            def log_message(self, *a):
                pass

            def do_GET(self):
                self.send_response(200)
                self.end_headers()
                try:
                    while True:
                        self.wfile.write(b"\0" * 65536)
                except OSError:
                    pass
        srv = ThreadingHTTPServer(("127.0.0.1", 0), Endless)
        srv.daemon_threads = True
        threading.Thread(target=srv.serve_forever, daemon=True).start()
        try:
            p, seconds = run(["data", "fetch", "ml-latest-small", "--data-dir", str(work / "dl")], work,
                             env={"RECSYS_MOVIELENS_URL": f"http://127.0.0.1:{srv.server_address[1]}"})
        finally:
            srv.shutdown()
        ok, what = one_line(p, 2, "more than this archive can be")
        return ok and not list((work / "dl").glob("*.part")), f"{what} ({seconds:.1f} s)"

    @case("11 a dataset reached through .. does not name an experiment ..")
    def _():
        sub = work / "small" / "sub"
        sub.mkdir(exist_ok=True)
        (work / "small" / "sub" / "pyproject.toml").write_text('[project]\nname = "recsys"\n')
        p, _ = run(["compare", "--dataset", "../u.data", "--optimizers", "gd", "--max-passes", "5", "-q", "--no-models",
                    "--data-dir", str(work / "d")], sub)
        escaped = [x.name for x in (work / "small").iterdir() if x.name not in ("sub", "u.data", "other.data")]
        return p.returncode == 0 and not escaped, f"exit {p.returncode}, outside the project: {escaped or 'nothing'}"

    @case("12 another file's parse-cache entry under this file's key is parsed again")
    def _():
        import hashlib
        import shutil
        cache_dir = work / "pc"
        run(["data", "describe", str(other), "--data-dir", str(cache_dir)], work)
        entries = list((cache_dir / "cache").glob("*.npz"))
        if not entries:
            return False, "no cache entry was written"
        digest = hashlib.sha256(data.read_bytes()).hexdigest()[:32]
        shutil.copy(entries[0], cache_dir / "cache" / f"{digest}-{entries[0].stem.split('-')[1]}.npz")
        p, _ = run(["data", "describe", str(data), "--data-dir", str(cache_dir)], work)
        return p.returncode == 0 and "1,200 ratings" in p.stdout, (p.stdout or p.stderr).splitlines()[0][:90]

    @case("13 --scheduler at an HTTP server fails within its deadline")
    def _():
        from http.server import BaseHTTPRequestHandler, HTTPServer
        import threading

        class Quiet(BaseHTTPRequestHandler):
            def log_message(self, *a):
                pass
        srv = HTTPServer(("127.0.0.1", 0), Quiet)
        threading.Thread(target=srv.serve_forever, daemon=True).start()
        try:
            p, seconds = run(["compare", "--backend", "dask", "--scheduler", f"tcp://127.0.0.1:{srv.server_address[1]}",
                              "--no-tracking"] + base, work, timeout=90)
        finally:
            srv.shutdown()
        ok, what = one_line(p, 2, "did not complete a Dask handshake")
        return ok and seconds < 30, f"{what} ({seconds:.1f} s)"

    @case("14 a logged model with NaN factors is one line on recommend")
    def _():
        import numpy as np
        uri = f"sqlite:///{work / 'models.db'}"
        p, _ = run(["train", "--optimizer", "lbfgs", "--max-passes", "30", "--tracking-uri", uri, "-q",
                    "--dataset", str(data), "--data-dir", str(work / "d")], work)
        model = next((line.split()[-1] for line in (p.stdout + p.stderr).split() if line.startswith("models:/")), None)
        npz = next(iter(sorted((work / "mlartifacts").rglob("recommender.npz"))), None)
        if model is None or npz is None:
            return False, f"no logged model (exit {p.returncode})"
        with np.load(npz, allow_pickle=False) as z:
            fields = {k: z[k] for k in z.files}
        fields["scorer_P"] = np.full_like(fields["scorer_P"], np.nan)
        with open(npz, "wb") as fh:
            np.savez_compressed(fh, **fields)
        return one_line(run(["recommend", "--model-uri", model, "--user", "1", "--tracking-uri", uri], work)[0], 2,
                        "not all finite numbers")

    @case("15 one rating: the relative gaps come with a warning")
    def _():
        f = work / "one" / "u.data"
        f.parent.mkdir()
        f.write_text("1\t1\t4\t1\n2\t2\t4\t2\n")
        p, _ = run(["compare", "--dataset", str(f), "--fractions", "1,0,0", "--optimizers", "lbfgs", "--max-passes",
                    "30", "--no-tracking", "--data-dir", str(work / "d")], work)
        return p.returncode == 0 and "warning: f* = " in p.stderr, f"exit {p.returncode}"

    held = 0
    for name, fn in cases:
        try:
            ok, what = fn()
        except Exception as exc:  # noqa: BLE001 - a case that breaks the harness is a case not held
            ok, what = False, f"{type(exc).__name__}: {exc}"
        held += bool(ok)
        print(f"{'held  ' if ok else 'FAILED'}  {name}: {what}", flush=True)
    print(f"held {held} of {len(cases)}")
    return 0 if held == len(cases) else 1


if __name__ == "__main__":
    sys.exit(main())
