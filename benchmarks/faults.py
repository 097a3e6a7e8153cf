"""The fault battery: bad input, signals, crashes, races and failing stores, each through the real
commands on real stores, with a table of fault -> outcome.

    python benchmarks/faults.py [--only WORD ...] [--write-docs]

Every probe runs in a fresh folder on scikit-learn's digits. For each it reports the exit codes,
the seconds the slowest command took, and four counts that must all be 0:
  tracebacks  Python tracebacks on stdout or stderr (a user's mistake gets one line);
  running     MLflow runs and Optuna trials left RUNNING once every command has ended;
  secrets     places holding the probe's password: stdout, stderr, any file under the folder
              (SQLite store, journal, Hydra's folders), any MLflow param or tag;
  lost        runs or trials the commands reported that are not in the store;
  orphans     worker processes alive 10 s after the sweep that started them was SIGKILLed;
  dis         trials whose MLflow run says otherwise than Optuna (a FAIL trial with a FINISHED run).
Probes that need PostgreSQL or a private read-only mount say "skipped" where those are absent.
"""
from __future__ import annotations

import argparse
import contextlib
import os
import re
import shlex
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import damaged_stores
import published
import tcp_proxy

ROOT = Path(__file__).resolve().parents[1]
TRAIN = [sys.executable, "-m", "softmax_sweep.train"]
TUNE = [sys.executable, str(ROOT / "sweeps" / "tune.py")]
PG = "postgresql://postgres@127.0.0.1:5432"
SECRET = "Fb7/s EcR@eT'q2"  # each character that ends a password early in a naive URL parser
SECRET_FORMS = (SECRET, urllib.parse.quote(SECRET, safe=""), urllib.parse.quote(SECRET, safe="'"))


@dataclass
class Outcome:
    codes: list[int] = field(default_factory=list)
    seconds: float = 0.0
    output: str = ""
    running: int = 0
    lost: int = 0
    secrets: int = 0
    orphans: int = 0
    disagree: int = 0
    note: str = ""

    def command(self, command: list[str], folder: Path, timeout: float = 600, **popen) -> subprocess.CompletedProcess:
        start = time.monotonic()
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout, env=_env(), cwd=folder,
                              **popen)
        self.seconds = max(self.seconds, time.monotonic() - start)
        self.codes.append(done.returncode)
        self.output += done.stdout + done.stderr
        return done

    def ended(self, proc: subprocess.Popen, since: float) -> None:
        out, err = proc.communicate(timeout=600)
        self.seconds = max(self.seconds, time.monotonic() - since)
        self.codes.append(proc.returncode)
        self.output += out + err


def _env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k not in ("MLFLOW_TRACKING_URI", "HYDRA_FULL_ERROR")}


class _Started(subprocess.Popen):
    """A process whose output goes to files, not pipes: a probe that waits for its state (epochs
    in the store) reads nothing meanwhile, and a full pipe would stop the process mid-epoch."""

    def __init__(self, command: list[str], folder: Path, **popen) -> None:
        self.files = (tempfile.TemporaryFile("w+"), tempfile.TemporaryFile("w+"))
        super().__init__(command, stdout=self.files[0], stderr=self.files[1], text=True, env=_env(), cwd=folder,
                         **popen)

    def communicate(self, input=None, timeout=None) -> tuple[str, str]:  # noqa: A002 - Popen's signature
        self.wait(timeout=timeout)
        texts = []
        for file in self.files:
            file.seek(0)
            texts.append(file.read())
        return texts[0], texts[1]


def _start(command: list[str], folder: Path, **popen) -> subprocess.Popen:
    return _Started(command, folder, **popen)


def _sqlite(db: Path, sql: str) -> list[tuple]:
    if not db.exists():
        return []
    with contextlib.closing(sqlite3.connect(db, timeout=30)) as con:
        try:
            return con.execute(sql).fetchall()
        except sqlite3.DatabaseError:
            return []  # a store whose tables were never created, or a damaged one


def _runs(db: Path) -> list[str]:
    return [status for (status,) in _sqlite(db, "SELECT status FROM runs")]


def _trials(storage: str) -> list[str]:
    import optuna

    from optuna_pruning.storages import make_storage

    if storage.startswith("journal:///") and not Path(storage[len("journal:///"):]).exists():
        return []
    store = make_storage(storage)
    return [t.state.name for s in optuna.get_all_study_names(store)
            for t in optuna.load_study(study_name=s, storage=store).trials]


def _wait_until(check: Callable[[], bool], proc: subprocess.Popen, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()  # a run of 100000 epochs would never end by itself
            raise RuntimeError(f"probe set-up failed: {proc.communicate()[1][-1500:]}")
        time.sleep(0.2)


def _epochs_logged(db: Path, at_least: int = 2) -> Callable[[], bool]:
    return lambda: bool(_sqlite(db, "SELECT count(*) FROM metrics WHERE key = 'val_acc'")
                        and _sqlite(db, "SELECT count(*) FROM metrics WHERE key = 'val_acc'")[0][0] >= at_least)


AGREE = {"COMPLETE": ("FINISHED",), "PRUNED": ("FINISHED",), "FAIL": ("FAILED", "KILLED"), "RUNNING": ("RUNNING",)}


def _disagreements(folder: Path) -> int:
    """Trials whose MLflow run says otherwise (a FAIL trial with a FINISHED run, ...)."""
    import optuna

    from optuna_pruning.storages import make_storage

    journal = folder / "mlruns" / "optuna.journal"
    if not journal.exists():
        return 0
    store = make_storage(f"journal:///{journal}")
    status = dict(_sqlite(folder / "mlruns" / "mlflow.db", "SELECT run_uuid, status FROM runs"))
    trials = [t for name in optuna.get_all_study_names(store)
              for t in optuna.load_study(study_name=name, storage=store).trials]
    return sum(status.get(t.user_attrs.get("mlflow_run_id"), "") not in AGREE.get(t.state.name, ())
               for t in trials if t.user_attrs.get("mlflow_run_id"))


def _store_counts(outcome: Outcome, folder: Path, finished_runs: int = -1, journal: bool = False) -> None:
    runs = _runs(folder / "mlruns" / "mlflow.db")
    trials = _trials(f"journal:///{folder / 'mlruns' / 'optuna.journal'}") if journal else []
    if journal:
        outcome.disagree += _disagreements(folder)
    outcome.running += runs.count("RUNNING") + trials.count("RUNNING")
    if finished_runs >= 0:
        outcome.lost += max(0, finished_runs - runs.count("FINISHED"))


def _descendants(pid: int) -> list[int]:
    """pid's child processes, their children, and so on (Linux's /proc)."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, IndexError, ValueError):
            fields = stat.read_text().rpartition(")")[2].split()
            children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def _alive(pids: list[int]) -> list[int]:
    from optuna_pruning.workers import dead_local_worker

    host = socket.gethostname()
    return [pid for pid in pids if not dead_local_worker(f"{host}:{pid}")]


def _orphans_after(pids: list[int], seconds: float = 10) -> int:
    """How many of pids are still alive `seconds` after their sweep died (killed then, for the next probe)."""
    time.sleep(seconds)
    alive = _alive(pids)
    for pid in alive:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    return len(alive)


def _running_trials(folder: Path, at_least: int) -> Callable[[], bool]:
    journal = f"journal:///{folder / 'mlruns' / 'optuna.journal'}"
    return lambda: _trials(journal).count("RUNNING") >= at_least and _epochs_logged(
        folder / "mlruns" / "mlflow.db", 2 * at_least)()


# ---- the probes -------------------------------------------------------------------------------

BAD_INPUT = {
    "seed=-1": [*TRAIN, "data=digits", "seed=-1"],
    "seed=2**32": [*TRAIN, "data=digits", "seed=4294967296"],
    "data.train_size beyond the data": [*TRAIN, "data=digits", "data.train_size=5000"],
    "-m with --cfg job": [*TRAIN, "-m", "--cfg", "job"],
    "sweeper setting n_trials=0": [*TRAIN, "-m", "sweep=tune", "data=digits", "hydra.sweeper.n_trials=0"],
    "val_loss with direction maximize": [*TRAIN, "-m", "sweep=tune", "data=digits", "hydra.sweeper.direction=maximize"],
    "tune.py --n-trials 0": [*TUNE, "data=digits", "--n-trials", "0"],
    "journal path that cannot be created": [*TUNE, "data=digits", "--storage", "journal:////proc/no/such.journal"],
    "gRPC proxy where nothing listens": [*TUNE, "data=digits", "--storage", "grpc://127.0.0.1:{port}"],
    "tracking server where nothing listens": [*TRAIN, "data=digits", "tracking.uri=http://127.0.0.1:{port}"],
    "PostgreSQL: wrong port": [*TRAIN, "data=digits", f"tracking.uri=postgresql://postgres:{SECRET}@127.0.0.1:{{port}}/x"],
    "PostgreSQL: no such database": [*TRAIN, "data=digits",
                                     f"tracking.uri=postgresql://postgres:{SECRET}@127.0.0.1:5432/no_such_db"],
    "MySQL: wrong password": [*TRAIN, "data=digits", f"tracking.uri=mysql://root:{SECRET}@127.0.0.1:3306/mysql"],
}


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def bad_input(name: str) -> Callable[[Path], Outcome]:
    def probe(folder: Path) -> Outcome:
        outcome = Outcome()
        command = [part.format(port=_closed_port()) for part in BAD_INPUT[name]]
        done = outcome.command([*command, f"mlruns_dir={folder / 'mlruns'}"], folder, timeout=120)
        lines = done.stderr.strip().splitlines()
        outcome.note = lines[-1][:90] if lines else "(no message)"
        if done.returncode != 2 or len(lines) != 1:
            outcome.note = f"NOT ONE LINE: {outcome.note}"
        _store_counts(outcome, folder, journal=True)
        return outcome
    return probe


def concurrent_first_runs(folder: Path) -> Outcome:
    outcome = Outcome()
    procs = [_start([*TRAIN, "data=digits", "num_epochs=2", f"seed={s}", f"mlruns_dir={folder / 'mlruns'}"], folder)
             for s in range(4)]
    since = time.monotonic()
    for proc in procs:
        outcome.ended(proc, since)
    overrides = sorted(p.read_text() for p in (folder / "mlruns" / "hydra").rglob("overrides.yaml"))
    outcome.lost += 4 - len(set(overrides))  # runs sharing a Hydra folder lose their own record
    _store_counts(outcome, folder, finished_runs=4)
    outcome.note = f"{_runs(folder / 'mlruns' / 'mlflow.db').count('FINISHED')} of 4 runs FINISHED"
    return outcome


def concurrent_first_studies(folder: Path) -> Outcome:
    outcome = Outcome()
    procs = [_start([*TUNE, "data=digits", "num_epochs=2", "--n-trials", "3", f"mlruns_dir={folder / 'mlruns'}"],
                    folder) for _ in range(2)]
    since = time.monotonic()
    for proc in procs:
        outcome.ended(proc, since)
    parents = _sqlite(folder / "mlruns" / "mlflow.db",
                      "SELECT count(*) FROM tags t JOIN runs r ON r.run_uuid = t.run_uuid "
                      "WHERE t.key = 'sweep.kind' AND r.lifecycle_stage = 'active'")
    trials = _trials(f"journal:///{folder / 'mlruns' / 'optuna.journal'}")
    outcome.lost += max(0, 3 - trials.count("COMPLETE"))
    _store_counts(outcome, folder, journal=True)
    outcome.note = f"{parents[0][0] if parents else 0} parent run, {trials.count('COMPLETE')} trials COMPLETE"
    return outcome


def concurrent_new_postgres_storage(folder: Path) -> Outcome:
    outcome = Outcome()
    with _postgres_database() as url:
        procs = [_start([*TUNE, "data=digits", "num_epochs=2", "--n-trials", "2", "--storage", url,
                         f"mlruns_dir={folder / 'mlruns'}"], folder) for _ in range(2)]
        since = time.monotonic()
        for proc in procs:
            outcome.ended(proc, since)
        trials = _trials(url)
    outcome.running += trials.count("RUNNING")
    outcome.lost += max(0, 2 - trials.count("COMPLETE"))
    _store_counts(outcome, folder)
    outcome.note = f"{trials.count('COMPLETE')} trials COMPLETE"
    return outcome


def signal_during_run(signum: int) -> Callable[[Path], Outcome]:
    def probe(folder: Path) -> Outcome:
        outcome = Outcome()
        proc = _start([*TRAIN, "data=digits", "num_epochs=100000", f"mlruns_dir={folder / 'mlruns'}"], folder)
        _wait_until(_epochs_logged(folder / "mlruns" / "mlflow.db"), proc)
        proc.send_signal(signum)
        outcome.ended(proc, time.monotonic())
        _store_counts(outcome, folder)
        outcome.note = f"run {', '.join(_runs(folder / 'mlruns' / 'mlflow.db'))}"
        return outcome
    return probe


def sigterm_during_sweep(folder: Path) -> Outcome:
    outcome = Outcome()
    proc = _start([*TRAIN, "-m", "sweep=tune", "data=digits", "num_epochs=range(20, 21)", "hydra.sweeper.n_trials=50",
                   f"mlruns_dir={folder / 'mlruns'}"], folder)
    _wait_until(_epochs_logged(folder / "mlruns" / "mlflow.db", 30), proc)
    proc.send_signal(signal.SIGTERM)
    outcome.ended(proc, time.monotonic())
    _store_counts(outcome, folder, journal=True)
    outcome.note = "runs " + ", ".join(sorted(set(_runs(folder / "mlruns" / "mlflow.db"))))
    return outcome


def sigkill_then_rerun(folder: Path) -> Outcome:
    outcome = Outcome()
    proc = _start([*TUNE, "data=digits", "num_epochs=100000", "--n-trials", "1", f"mlruns_dir={folder / 'mlruns'}"],
                  folder)
    _wait_until(_epochs_logged(folder / "mlruns" / "mlflow.db"), proc)
    proc.kill()
    proc.wait()
    outcome.command([*TUNE, "data=digits", "num_epochs=2", "--n-trials", "1", f"mlruns_dir={folder / 'mlruns'}"],
                    folder)
    _store_counts(outcome, folder, journal=True)
    trials = _trials(f"journal:///{folder / 'mlruns' / 'optuna.journal'}")
    runs = sorted(set(_runs(folder / "mlruns" / "mlflow.db")))
    outcome.note = f"after the rerun: trials {', '.join(trials)}; runs {', '.join(runs)}"
    return outcome


@contextlib.contextmanager
def _mlflow_server(folder: Path, port: int) -> Iterator[subprocess.Popen]:
    server = subprocess.Popen([sys.executable, "-m", "mlflow", "server", "--backend-store-uri",
                               f"sqlite:///{folder / 'server.db'}", "--artifacts-destination",
                               (folder / "served").as_uri(), "--host", "127.0.0.1", "--port", str(port)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2):
                    break
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError("mlflow server did not start") from None
                time.sleep(0.5)
        yield server
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(server.pid, signal.SIGKILL)
        server.wait()


def server_dies(interrupt: bool, sweep: str = "") -> Callable[[Path], Outcome]:
    def probe(folder: Path) -> Outcome:
        outcome = Outcome()
        port = _closed_port()
        url = f"http://alice:{SECRET}@127.0.0.1:{port}"
        command = [*TRAIN, "data=digits", "num_epochs=100000", f"tracking.uri={url}", f"mlruns_dir={folder / 'mlruns'}"]
        if sweep == "multirun":
            command[len(TRAIN):len(TRAIN)] = ["-m", "sweep=tune"]
            command = [c for c in command if not c.startswith("num_epochs=")]
            command += ["num_epochs=range(5000, 5001)", f"hydra.sweep.dir={folder / 'run'}",
                        "hydra.sweep.subdir=."]
        elif sweep == "script":  # a study script runs the sweep: its trials' folders are the sweep's
            command = [*TUNE, *command[len(TRAIN):], f"hydra.sweep.dir={folder / 'run'}", "hydra.sweep.subdir=."]
        else:
            command.append(f"hydra.run.dir={folder / 'run'}")
        with _mlflow_server(folder, port) as server:
            proc = _start(command, folder)
            _wait_until(_epochs_logged(folder / "server.db", 3), proc)
            os.killpg(server.pid, signal.SIGKILL)
            if interrupt:
                time.sleep(1)
                proc.send_signal(signal.SIGINT)
            since = time.monotonic()
            outcome.ended(proc, since)
            exit_seconds = time.monotonic() - since
            last_line = outcome.output.strip().splitlines()[-1]
        kept = [*(folder / "run").rglob("metrics.csv"), *(folder / "mlruns" / "unsent").rglob("metrics.csv")]
        outcome.lost += 0 if kept else 1
        with _mlflow_server(folder, port):  # back up: the next run on it reaps the one left RUNNING
            outcome.command([*TRAIN, "data=digits", "num_epochs=1", f"tracking.uri={url}",
                             f"mlruns_dir={folder / 'mlruns'}"], folder)
        outcome.running += _runs(folder / "server.db").count("RUNNING")
        what = "after Ctrl-C" if interrupt else "after the server died"
        outcome.note = (f"exit {exit_seconds:.1f} s {what}: {last_line[:50]}...; "
                        f"{'epochs kept' if kept else 'EPOCHS LOST'}; left RUNNING, reaped by the next run")
        return outcome
    return probe


def server_hangs(sweep: str = "") -> Callable[[Path], Outcome]:
    """The tracking server stops answering without closing its connections (SIGSTOP): the
    command must give up within tracking.retry_seconds (10 here) + 5 s, in one line."""
    def probe(folder: Path) -> Outcome:
        outcome = Outcome()
        port = _closed_port()
        base = ["data=digits", f"tracking.uri=http://127.0.0.1:{port}", "tracking.retry_seconds=10",
                f"mlruns_dir={folder / 'mlruns'}"]
        command = {"": [*TRAIN, *base, "num_epochs=100000"],
                   "multirun": [*TRAIN, "-m", "sweep=tune", *base, "num_epochs=range(100000, 100001)"],
                   "script": [*TUNE, *base, "num_epochs=100000", "--workers", "2"]}[sweep]
        with _mlflow_server(folder, port) as server:
            proc = _start(command, folder)
            _wait_until(_epochs_logged(folder / "server.db", 3), proc)
            os.killpg(server.pid, signal.SIGSTOP)
            since = time.monotonic()
            try:
                outcome.ended(proc, since)
            finally:
                os.killpg(server.pid, signal.SIGCONT)
            waited = time.monotonic() - since
        last = outcome.output.strip().splitlines()[-1]
        outcome.note = f"gave up {waited:.0f} s after the server stopped: {last[:60]}"
        if waited > 15:
            outcome.note = "NOT BOUNDED: " + outcome.note
        return outcome
    return probe


def read_only_store(folder: Path) -> Outcome:
    outcome = Outcome()
    mlruns = folder / "mlruns"
    outcome.command([*TRAIN, "data=digits", "num_epochs=1", f"mlruns_dir={mlruns}"], folder)
    script = f'mount --bind "{mlruns}" "{mlruns}" && mount -o remount,bind,ro "{mlruns}" "{mlruns}" && exec "$@"'
    for command in ([*TRAIN, "data=digits", f"mlruns_dir={mlruns}", f"hydra.run.dir={folder / 'out'}"],
                    [*TUNE, "data=digits", f"mlruns_dir={mlruns}", f"hydra.run.dir={folder / 'out'}"]):
        done = outcome.command(["unshare", "-m", "sh", "-c", script, "sh", *command], folder)
        outcome.note += done.stderr.strip().splitlines()[-1][:45] + "... "
    _store_counts(outcome, folder, finished_runs=1)
    return outcome


def secrets_everywhere(folder: Path) -> Outcome:
    outcome = Outcome()
    with _postgres_database() as tracking_db, _postgres_database() as storage_db:
        uri = tracking_db.replace("postgres@", f"postgres:{SECRET}@")  # trust auth ignores the password
        storage = storage_db.replace("postgres@", f"postgres:{SECRET}@")
        base = ["data=digits", f"tracking.uri={uri}", f"mlruns_dir={folder / 'mlruns'}",
                f"data.url=https://bob:{SECRET}@127.0.0.1:9/mirror/"]
        for command in ([*TRAIN, *base, "num_epochs=2"], [*TRAIN, *base, "lr=0"],
                        [*TRAIN, "-m", *base, "num_epochs=2", "lr=0.5,1e38"],
                        [*TRAIN, "-m", "sweep=tune", *base, "hydra.sweeper.n_trials=2", "num_epochs=range(2, 3)",
                         f"hydra.sweeper.storage={storage}"],
                        [*TUNE, "--n-trials", "2", "--storage", storage, "--study-name", "script", *base,
                         "num_epochs=2"],
                        [*TUNE, "--n-trials", "2", "--workers", "2", "--study-name", "script2", *base, "num_epochs=2",
                         f"hydra.sweeper.storage={storage}"],
                        [*TRAIN, *base, "--cfg", "job", "--resolve"]):
            outcome.command(command, folder)
        from mlflow.tracking import MlflowClient

        client = MlflowClient(tracking_db)
        runs = client.search_runs([e.experiment_id for e in client.search_experiments()], max_results=1000)
        outcome.secrets += sum(any(form in str(r.data.params) + str(r.data.tags) for form in SECRET_FORMS)
                               for r in runs)
        outcome.running += sum(r.info.status == "RUNNING" for r in runs)
        outcome.running += _trials(storage_db).count("RUNNING")
        outcome.note = f"{len(runs)} runs searched"
    return outcome


@contextlib.contextmanager
def _postgres_database() -> Iterator[str]:
    import psycopg

    name = f"faults_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(f"{PG}/postgres", autocommit=True) as con:
        con.execute(f'CREATE DATABASE "{name}"')
    try:
        yield f"{PG}/{name}"
    finally:
        with psycopg.connect(f"{PG}/postgres", autocommit=True) as con:
            con.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def sigkill_sweep(script: bool) -> Callable[[Path], Outcome]:
    """SIGKILL the process the user started (a -m sweep with the joblib launcher's worker pool, or
    sweeps/tune.py with two worker processes) while two trials train; then run it again."""
    def probe(folder: Path) -> Outcome:
        outcome = Outcome()
        mlruns = f"mlruns_dir={folder / 'mlruns'}"
        long = ([*TUNE, "data=digits", "num_epochs=100000", "--workers", "2", "--n-trials", "2", mlruns] if script
                else [*TRAIN, "-m", "sweep=tune", "data=digits", "num_epochs=range(100000, 100001)",
                      "hydra.sweeper.n_trials=2", mlruns])
        proc = _start(long, folder)
        _wait_until(_running_trials(folder, 2), proc)
        workers = _descendants(proc.pid)
        proc.kill()
        proc.communicate()
        outcome.orphans += _orphans_after(workers)
        rerun = ([*TUNE, "data=digits", "num_epochs=2", "--n-trials", "3", mlruns] if script
                 else [*TRAIN, "-m", "sweep=tune", "data=digits", "num_epochs=range(2, 3)", "hydra.sweeper.n_trials=3",
                       mlruns])
        outcome.command(rerun, folder)
        _store_counts(outcome, folder, journal=True)
        trials = _trials(f"journal:///{folder / 'mlruns' / 'optuna.journal'}")
        outcome.note = (f"{len(workers)} processes under it; after the rerun: trials "
                        f"{', '.join(f'{trials.count(s)} {s}' for s in sorted(set(trials)))}")
        return outcome
    return probe


def sigkill_one_worker(folder: Path) -> Outcome:
    """SIGKILL one of two study workers mid-trial: the other one takes its trial over."""
    import optuna

    from optuna_pruning.storages import make_storage

    outcome = Outcome()
    journal = f"journal:///{folder / 'mlruns' / 'optuna.journal'}"
    proc = _start([*TUNE, "data=digits", "num_epochs=600", "--workers", "2", "--n-trials", "2",
                   "hydra/sweeper/optuna_pruner=none", f"mlruns_dir={folder / 'mlruns'}"], folder)
    since = time.monotonic()
    _wait_until(_running_trials(folder, 2), proc)
    study = optuna.load_study(study_name="tune-digits", storage=make_storage(journal))
    victim = max(study.get_trials(states=(optuna.trial.TrialState.RUNNING,)), key=lambda t: t.number)
    os.kill(int(victim.user_attrs["worker"].rpartition(":")[2]), signal.SIGKILL)
    outcome.ended(proc, since)
    _store_counts(outcome, folder, journal=True)
    trials = _trials(journal)
    outcome.lost += max(0, 2 - trials.count("COMPLETE"))
    outcome.note = f"trial {victim.number}'s worker killed; trials {', '.join(trials)}"
    return outcome


def hangup(script: bool) -> Callable[[Path], Outcome]:
    """SIGHUP (the terminal closed) during a run or a study: as Ctrl-C."""
    def probe(folder: Path) -> Outcome:
        outcome = Outcome()
        command = ([*TUNE, "data=digits", "num_epochs=100000", "--n-trials", "1"] if script
                   else [*TRAIN, "data=digits", "num_epochs=100000"])
        proc = _start([*command, f"mlruns_dir={folder / 'mlruns'}"], folder)
        _wait_until(_epochs_logged(folder / "mlruns" / "mlflow.db"), proc)
        proc.send_signal(signal.SIGHUP)
        outcome.ended(proc, time.monotonic())
        _store_counts(outcome, folder, journal=script)
        outcome.note = f"runs {', '.join(sorted(set(_runs(folder / 'mlruns' / 'mlflow.db'))))}"
        return outcome
    return probe


def typo_in_search_space(folder: Path) -> Outcome:
    """A search-space key or a config-group option that does not exist; then the corrected command."""
    outcome = Outcome()
    mlruns = f"mlruns_dir={folder / 'mlruns'}"
    lines = []
    for command in ([*TRAIN, "-m", "sweep=tune", "data=digits", "hydra.sweeper.n_trials=2",
                     "+hydra.sweeper.params.nonexistent='interval(0,1)'", mlruns],
                    [*TUNE, "data=digits", "--n-trials", "2", "+hydra.sweeper.params.nonexistent='interval(0,1)'",
                     mlruns],
                    [*TRAIN, "-m", "sweep=overfit", "data=digits", "remedy=choice(none,weight_decy)", mlruns]):
        done = outcome.command(command, folder, timeout=300)
        lines.append(len(done.stderr.strip().splitlines()))
    outcome.command([*TRAIN, "-m", "sweep=tune", "data=digits", "hydra.sweeper.n_trials=2", "num_epochs=range(2, 3)",
                     mlruns], folder)
    _store_counts(outcome, folder, journal=True)
    trials = _trials(f"journal:///{folder / 'mlruns' / 'optuna.journal'}")
    outcome.note = f"stderr lines {lines}; then the fixed command: trials {', '.join(trials)}"
    return outcome


def store_fault(name: str) -> Callable[[Path], Outcome]:
    """A store or folder the program finds damaged or unusable: one line naming what to fix."""
    def probe(folder: Path) -> Outcome:
        outcome = Outcome()
        overrides = damaged_stores.DAMAGED[name](folder)
        flags = [o for o in overrides if o.startswith("-")]  # Hydra's flags first
        done = outcome.command([*TRAIN, *flags, "data=digits", "num_epochs=1",
                                *(o for o in overrides if o not in flags)], folder, timeout=300)
        lines = done.stderr.strip().splitlines()
        outcome.note = lines[-1][:90] if lines else "(no message)"
        if done.returncode not in (1, 2) or len(lines) != 1:
            outcome.note = f"NOT ONE LINE: {outcome.note}"
        _store_counts(outcome, folder)
        return outcome
    return probe


def disk_fills(script: bool) -> Callable[[Path], Outcome]:
    """A long run (or study) on an existing store with 300 KiB free: it ends when the disk fills,
    in one line; the epochs it showed are in the store or in the run's metrics.csv."""
    def probe(folder: Path) -> Outcome:
        outcome = Outcome()
        disk = folder / "disk"
        disk.mkdir()
        # a study script runs a multirun: its trials' folders are under hydra.sweep.dir
        base = ["data=digits", f"mlruns_dir={disk / 'mlruns'}",
                f"hydra.sweep.dir={folder / 'out'}" if script else f"hydra.run.dir={folder / 'out'}"]
        first = [*TUNE, "--n-trials", "1", *base, "num_epochs=1"] if script else [*TRAIN, *base, "num_epochs=1"]
        long = [*TUNE, "--n-trials", "2", *base, "num_epochs=100000"] if script else [*TRAIN, *base,
                                                                                      "num_epochs=100000"]
        script_text = (f'mount -t tmpfs -o size=3m tmpfs {shlex.quote(str(disk))} && {shlex.join(first)} '
                       f'>/dev/null 2>&1; free=$(df --output=avail -k {shlex.quote(str(disk))} | tail -1); '
                       f'dd if=/dev/zero of={shlex.quote(str(disk / "filler"))} bs=1k count=$((free - 300)) '
                       f'2>/dev/null; {shlex.join(long)}')
        done = outcome.command(["unshare", "-m", "bash", "-c", script_text], folder)
        shown = max((int(m) for m in re.findall(r"epoch (\d+)/100000", done.stdout + done.stderr)), default=0)
        kept = [p for p in (folder / "out").rglob("metrics.csv")]
        lines = [ln for ln in done.stderr.strip().splitlines() if "epoch " not in ln]
        outcome.note = f"{shown} epochs shown, metrics.csv kept: {bool(kept)}; {lines[-1][:60] if lines else ''}"
        if shown and not kept:  # epochs the user saw are in neither place
            outcome.lost += 1
        return outcome
    return probe


def database_dropped(which: str) -> Callable[[Path], Outcome]:
    """The PostgreSQL database of the Optuna storage (a study) or of the MLflow store (a run) is
    dropped while it works: one line, exit 1."""
    def probe(folder: Path) -> Outcome:
        import psycopg

        outcome = Outcome()
        with _postgres_database() as url:
            if which == "storage":
                command = [*TUNE, "data=digits", "num_epochs=100000", "--n-trials", "1", "--storage", url,
                           f"mlruns_dir={folder / 'mlruns'}"]
                ready = _epochs_logged(folder / "mlruns" / "mlflow.db")
            else:
                command = [*TRAIN, "data=digits", "num_epochs=100000", f"tracking.uri={url}",
                           f"mlruns_dir={folder / 'mlruns'}"]
                ready = lambda: bool(_trials_or_metrics(url))  # noqa: E731
            proc = _start(command, folder)
            _wait_until(ready, proc)
            with psycopg.connect(f"{PG}/postgres", autocommit=True) as con:
                con.execute(f'DROP DATABASE "{url.rsplit("/", 1)[1]}" WITH (FORCE)')
            outcome.ended(proc, time.monotonic())
        lines = [ln for ln in outcome.output.strip().splitlines() if "epoch " not in ln]
        outcome.note = lines[-1][:90] if lines else ""
        if proc.returncode != 1 or not lines[-1].startswith("error: "):
            outcome.note = "NOT ONE LINE: " + outcome.note
        if which == "storage":
            _store_counts(outcome, folder)
        return outcome
    return probe


def _pg_trial_states(url: str) -> list[str]:
    import psycopg

    with psycopg.connect(url) as con:
        return [row[0] for row in con.execute("SELECT state FROM trials")]


def storage_hangs(sweep: str, interrupt: bool) -> Callable[[Path], Outcome]:
    """The PostgreSQL server of the Optuna storage stops answering without closing its
    connections (a SIGSTOPped proxy in front of it): the sweep gives up within twice
    hydra.sweeper.storage_timeout (10 here: the workers' calls, then the coordinator's) + 5 s, or
    ends within 15 s of a Ctrl-C; then the proxy answers again and a rerun resumes the study
    (nothing RUNNING)."""
    def probe(folder: Path) -> Outcome:
        outcome = Outcome()
        mlruns = f"mlruns_dir={folder / 'mlruns'}"
        with _postgres_database() as url, tcp_proxy.started(folder, 5432) as (port, proxy):
            hung = url.replace(":5432/", f":{port}/")
            base = ["data=digits", "hydra.sweeper.storage_timeout=10", mlruns]
            command = ([*TUNE, *base, "num_epochs=100000", "--workers", "2", "--storage", hung] if sweep == "script"
                       else [*TRAIN, "-m", "sweep=tune", *base, "num_epochs=range(100000, 100001)",
                             f"hydra.sweeper.storage={hung}"])
            proc = _start(command, folder, start_new_session=True)
            _wait_until(_epochs_logged(folder / "mlruns" / "mlflow.db", 3), proc)
            workers = _descendants(proc.pid)
            proxy.send_signal(signal.SIGSTOP)
            if interrupt:
                time.sleep(1)
                os.killpg(proc.pid, signal.SIGINT)  # as Ctrl-C in a terminal: the whole process group
            since = time.monotonic()
            outcome.ended(proc, since)
            waited = time.monotonic() - since
            outcome.orphans += _orphans_after(workers)
            last = outcome.output.strip().splitlines()[-1]
            proxy.send_signal(signal.SIGCONT)
            rerun = ([*TUNE, *base, "num_epochs=2", "--n-trials", "3", "--storage", url] if sweep == "script"
                     else [*TRAIN, "-m", "sweep=tune", *base, "num_epochs=range(2, 3)", "hydra.sweeper.n_trials=3",
                           f"hydra.sweeper.storage={url}"])
            outcome.command(rerun, folder)
            trials = _pg_trial_states(url)
        runs = _runs(folder / "mlruns" / "mlflow.db")
        outcome.running += runs.count("RUNNING") + trials.count("RUNNING")
        states = ", ".join(f"{trials.count(s)} {s}" for s in sorted(set(trials)))
        outcome.note = (f"{'Ctrl-C ended it' if interrupt else 'gave up'} {waited:.0f} s after the storage stopped: "
                        f"{last[:50]}; rerun: trials {states}")
        if waited > (15 if interrupt else 25):
            outcome.note = "NOT BOUNDED: " + outcome.note
        return outcome
    return probe


def _trials_or_metrics(url: str) -> int:
    import psycopg

    try:
        with psycopg.connect(url) as con:
            return con.execute("SELECT count(*) FROM metrics WHERE key = 'val_acc'").fetchone()[0] >= 2
    except Exception:  # noqa: BLE001 - tables not there yet
        return 0


def _postgres_missing() -> str | None:
    try:
        import psycopg

        with psycopg.connect(f"{PG}/postgres", connect_timeout=3):
            return None
    except Exception as e:  # noqa: BLE001
        return f"no PostgreSQL ({type(e).__name__})"


def _mount_missing() -> str | None:
    probe = subprocess.run(["unshare", "-m", "sh", "-c", "mount --bind / / && mount -o remount,bind,ro / /"],
                           capture_output=True)
    return None if probe.returncode == 0 else "no private read-only mount"


PROBES: dict[str, tuple[Callable[[Path], Outcome], Callable[[], str | None]]] = {
    **{f"bad input: {name}": (bad_input(name), lambda: None)
       for name in BAD_INPUT},
    "4 runs started together on an empty mlruns/": (concurrent_first_runs, lambda: None),
    "2 studies started together on an empty mlruns/": (concurrent_first_studies, lambda: None),
    "2 studies started together on a new PostgreSQL storage": (concurrent_new_postgres_storage, _postgres_missing),
    "Ctrl-C during a run": (signal_during_run(signal.SIGINT), lambda: None),
    "SIGTERM during a run": (signal_during_run(signal.SIGTERM), lambda: None),
    "SIGTERM during a -m sweep": (sigterm_during_sweep, lambda: None),
    "SIGKILL of a study, then a rerun": (sigkill_then_rerun, lambda: None),
    "tracking server dies mid-run": (server_dies(interrupt=False), lambda: None),
    "tracking server dies, then Ctrl-C": (server_dies(interrupt=True), lambda: None),
    "tracking server dies during a -m sweep": (server_dies(interrupt=False, sweep="multirun"), lambda: None),
    "tracking server dies during sweeps/tune.py": (server_dies(interrupt=False, sweep="script"), lambda: None),
    "tracking server hangs (SIGSTOP) during a run": (server_hangs(), lambda: None),
    "tracking server hangs during a -m sweep": (server_hangs("multirun"), lambda: None),
    "tracking server hangs during sweeps/tune.py --workers 2": (server_hangs("script"), lambda: None),
    "read-only mlruns/ (run and study)": (read_only_store, _mount_missing),
    "password in tracking.uri and storage": (secrets_everywhere, _postgres_missing),
    **{f"store: {name}": (store_fault(name), lambda: None) for name in damaged_stores.DAMAGED},
    "disk fills during a run": (disk_fills(script=False), _mount_missing),
    "disk fills during a study": (disk_fills(script=True), _mount_missing),
    "Optuna storage database dropped mid-study (PostgreSQL)": (database_dropped("storage"), _postgres_missing),
    "MLflow store database dropped mid-run (PostgreSQL)": (database_dropped("tracking"), _postgres_missing),
    "Optuna storage hangs (PostgreSQL behind a SIGSTOPped proxy), -m sweep=tune":
        (storage_hangs("multirun", interrupt=False), _postgres_missing),
    "Optuna storage hangs, sweeps/tune.py --workers 2": (storage_hangs("script", interrupt=False), _postgres_missing),
    "Optuna storage hangs, then Ctrl-C of -m sweep=tune":
        (storage_hangs("multirun", interrupt=True), _postgres_missing),
    "Optuna storage hangs, then Ctrl-C of sweeps/tune.py --workers 2":
        (storage_hangs("script", interrupt=True), _postgres_missing),
    "SIGKILL of -m sweep=tune (joblib pool), then a rerun": (sigkill_sweep(script=False), lambda: None),
    "SIGKILL of sweeps/tune.py --workers 2, then a rerun": (sigkill_sweep(script=True), lambda: None),
    "SIGKILL of one of two study workers": (sigkill_one_worker, lambda: None),
    "SIGHUP during a run": (hangup(script=False), lambda: None),
    "SIGHUP during a study": (hangup(script=True), lambda: None),
    "typos in a search space, then the fixed command": (typo_in_search_space, lambda: None),
}


def _secrets_in(folder: Path, output: str) -> int:
    found = int(any(form in output for form in SECRET_FORMS))
    for path in folder.rglob("*"):
        if path.is_file() and any(form.encode() in path.read_bytes() for form in SECRET_FORMS):
            found += 1
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", nargs="+", metavar="WORD", help="run the probes whose name holds one of these")
    args = parser.parse_args()
    totals = dict.fromkeys(("tracebacks", "running", "secrets", "lost", "orphans", "disagree"), 0)
    print(f"{'fault':58s} {'exit':>9s} {'s':>5s} {'tb':>2s} {'run':>3s} {'sec':>3s} {'lost':>4s} {'orph':>4s} "
          f"{'dis':>3s}  outcome", flush=True)
    for name, (probe, missing) in PROBES.items():
        if args.only and not any(word in name for word in args.only):
            continue
        if reason := missing():
            print(f"{name:58s} skipped: {reason}", flush=True)
            continue
        with tempfile.TemporaryDirectory() as tmp:
            try:
                outcome = probe(Path(tmp))
            except Exception as e:  # noqa: BLE001 - a probe that could not set up its fault: say so, go on
                outcome = Outcome(note=f"PROBE FAILED: {str(e)[-150:]}")
                outcome.lost += 1
            outcome.secrets += _secrets_in(Path(tmp), outcome.output)
        tracebacks = outcome.output.count("Traceback (most recent call last)")
        counts = (tracebacks, outcome.running, outcome.secrets, outcome.lost, outcome.orphans, outcome.disagree)
        for key, value in zip(totals, counts):
            totals[key] += value
        codes = ",".join(map(str, outcome.codes))
        print(f"{name:58s} {codes:>9s} {outcome.seconds:5.1f} {tracebacks:2d} {outcome.running:3d} "
              f"{outcome.secrets:3d} {outcome.lost:4d} {outcome.orphans:4d} {outcome.disagree:3d}  {outcome.note}",
              flush=True)
    print(f"totals: {totals['tracebacks']} tracebacks, {totals['running']} runs or trials left RUNNING, "
          f"{totals['secrets']} secrets found, {totals['lost']} lost runs, {totals['orphans']} orphaned processes "
          f"alive 10 s after their sweep was killed, {totals['disagree']} trials on which Optuna and MLflow disagree")


if __name__ == "__main__":
    published.run(main)
