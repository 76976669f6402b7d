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
    framing = ("note:", "Usage:", "Try '", "dataset ", "kernels ", "reference optimum", "one pass costs")
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
            proc = subprocess.Popen(RECSYS + ["compare", "--tracking-uri", f"sqlite:///{db}", "--optimizers", "gd",
                                              "--gtol", "0", "--max-passes", "100000000", "--max-seconds", "120"] + base,
                                    cwd=work, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
            wait_running(db)
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
        proc = subprocess.Popen(RECSYS + ["compare", "--tracking-uri", uri, "--optimizers", "gd", "--gtol", "0",
                                          "--max-passes", "100000000", "--max-seconds", "120"] + base,
                                cwd=work, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_running(db)
        proc.kill()
        proc.wait()
        p, _ = run(["runs", "repair", "--tracking-uri", uri], work)
        st = statuses(db)
        ok = p.returncode == 0 and st.get("gd") == st.get("compare-gd") == "FAILED" and "RUNNING" not in st.values()
        return ok, f"{p.stdout.strip()}; runs {st}"

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
