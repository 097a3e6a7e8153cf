"""Scale-out: several workers on one study, on PostgreSQL and an MLflow tracking server, with
dead-worker recovery. PostgreSQL tests skip, saying why, where no server answers on 127.0.0.1:5432."""
from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import optuna
import pytest
from mlflow.tracking import MlflowClient
from optuna.trial import TrialState

from optuna_pruning.storages import make_storage
from softmax_sweep.config import PROJECT_ROOT

sys.path.insert(0, str(PROJECT_ROOT / "benchmarks"))
import tcp_proxy  # noqa: E402 - benchmarks/tcp_proxy.py: a TCP relay to SIGSTOP

from conftest import clean_env, free_port, mlflow_server, run_statuses, wait_for_count

TUNE = [sys.executable, str(PROJECT_ROOT / "sweeps" / "tune.py")]
PG = "postgresql://postgres@127.0.0.1:5432"
SECRET = "s3cret-pw"


def _postgres_error() -> str | None:
    try:
        import psycopg
    except ImportError as e:
        return f"the PostgreSQL driver is not installed ({e}); pip install -e '.[test]'"
    try:
        with psycopg.connect(f"{PG}/postgres", connect_timeout=3):
            return None
    except psycopg.Error as e:
        return f"no PostgreSQL server on 127.0.0.1:5432 ({str(e).strip().splitlines()[0]})"


@pytest.fixture(scope="module")
def postgres() -> Iterator:
    """A factory of fresh databases on the local PostgreSQL, dropped afterwards."""
    reason = _postgres_error()
    if reason:
        pytest.skip(f"scale-out tests need a real PostgreSQL: {reason}")
    import psycopg

    created = []

    def new_database() -> str:
        name = f"softmax_sweep_test_{uuid.uuid4().hex[:10]}"
        with psycopg.connect(f"{PG}/postgres", autocommit=True) as con:
            con.execute(f'CREATE DATABASE "{name}"')
        created.append(name)
        return name

    yield new_database
    with psycopg.connect(f"{PG}/postgres", autocommit=True) as con:
        for name in created:
            con.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="module")
def tracking_server(postgres, tmp_path_factory) -> Iterator[str]:
    """`mlflow server` on a loopback port, its backend store on PostgreSQL, artifacts proxied."""
    with mlflow_server(f"{PG}/{postgres()}", tmp_path_factory.mktemp("mlflow-server")) as (url, _):
        yield url


def _study(storage: str, name: str = "tune-digits") -> optuna.Study:
    return optuna.load_study(study_name=name, storage=make_storage(storage))


def _sweep_runs(client: MlflowClient, experiment: str, study: optuna.Study):
    exp = client.get_experiment_by_name(experiment)
    runs = client.search_runs([exp.experiment_id], max_results=1000)
    parents = [r for r in runs if r.data.tags.get("sweep.kind") == "optuna"]
    children = [r for r in runs if "optuna.trial_number" in r.data.tags]
    return runs, parents, children


def _assert_one_child_per_finished_trial(study, parents, children) -> None:
    assert len(parents) == 1 and parents[0].info.run_id == study.user_attrs["mlflow_parent_run_id"]
    assert {r.data.tags["mlflow.parentRunId"] for r in children} == {parents[0].info.run_id}
    finished = [t for t in study.trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)]
    assert sorted(int(r.data.tags["optuna.trial_number"]) for r in children) == sorted(t.number for t in finished)


def test_two_workers_on_postgres_and_a_tracking_server(postgres, tracking_server, tmp_path: Path) -> None:
    storage = f"postgresql://postgres:{SECRET}@127.0.0.1:5432/{postgres()}"  # trust auth ignores it
    tracking = tracking_server.replace("http://", f"http://alice:{SECRET}@")
    done = subprocess.run(
        [*TUNE, "--workers", "2", "--n-trials", "10", "--pruner", "none", "--storage", storage,
         "data=digits", "num_epochs=30", f"tracking.uri={tracking}", "tracking.experiment=two-workers",
         f"mlruns_dir={tmp_path / 'mlruns'}"],
        capture_output=True, text=True, timeout=600, env=clean_env())
    assert done.returncode == 0, done.stderr[-3000:]
    output = done.stdout + done.stderr
    assert SECRET not in output, "a password was printed"
    study = _study(storage.replace(f":{SECRET}", ""))
    numbers = [t.number for t in study.trials]
    assert numbers == list(range(len(numbers))) and 10 <= len(numbers) <= 11, "none lost, none duplicated"
    assert all(t.state == TrialState.COMPLETE for t in study.trials)
    client = MlflowClient(tracking_server)
    runs, parents, children = _sweep_runs(client, "two-workers", study)
    _assert_one_child_per_finished_trial(study, parents, children)
    workers = {r.data.tags["worker"] for r in children}
    assert len(workers) == 2, f"both workers ran trials: {workers}"
    assert "RUNNING" not in {r.info.status for r in runs}
    parent = parents[0]
    assert parent.data.tags["optuna.storage"] == storage.replace(SECRET, "***")
    for run in runs:
        assert SECRET not in str(run.data.params) + str(run.data.tags), "a password was logged"
    artifacts = {a.path for a in client.list_artifacts(parent.info.run_id)}
    assert {"trials.csv", "val_curves.png", "best.json"} <= artifacts, "artifacts go through the server"


def _running_trial(storage: str, client: MlflowClient, coordinator: subprocess.Popen, timeout: float = 180):
    """Wait for a running trial whose MLflow run has logged epochs; return (trial number, worker pid).
    The client must be made after the sweep built its store: MlflowClient opens a SQLite store at
    once and builds a missing schema in place, racing the sweep's own build."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        assert coordinator.poll() is None, coordinator.communicate()
        try:
            study = _study(storage)
        except KeyError:
            study = None
        if study is not None:
            for trial in study.get_trials(states=(TrialState.RUNNING,)):
                run_id = trial.user_attrs.get("mlflow_run_id")
                if run_id and len(client.get_metric_history(run_id, "val_acc")) >= 2:
                    return trial.number, int(client.get_run(run_id).data.tags["worker"].rsplit(":", 1)[1])
        time.sleep(0.3)
    raise AssertionError("no trial got going")


def test_sigkill_of_a_worker_is_recovered(postgres, tmp_path: Path) -> None:
    storage = f"{PG}/{postgres()}"
    mlruns = tmp_path / "mlruns"
    coordinator = subprocess.Popen(
        [*TUNE, "--workers", "2", "--n-trials", "3", "--pruner", "none", "--heartbeat-interval", "1",
         "--storage", storage, "data=digits", "num_epochs=300", "batch_size=64", f"mlruns_dir={mlruns}"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=clean_env())
    while not (mlruns / "mlflow.db").exists() and coordinator.poll() is None:
        time.sleep(0.2)
    client = MlflowClient(f"sqlite:///{mlruns / 'mlflow.db'}")
    killed_trial, pid = _running_trial(storage, client, coordinator)
    os.kill(pid, signal.SIGKILL)
    output, _ = coordinator.communicate(timeout=600)
    assert coordinator.returncode == 0, output[-3000:]
    # whoever notices first: a heartbeat check, or the sweeper whose launcher lost the process. A lost
    # process breaks the whole pool, so the other worker's trial can die with it (and be named first)
    died = sorted({int(n) for n, _ in re.findall(r"trial (\d+): its worker (stopped sending heartbeats|process died)",
                                                  output)})
    assert died, output

    study = _study(storage)
    runs, parents, children = _sweep_runs(client, "softmax-sweep", study)
    for number in died:
        dead = study.trials[number]
        assert dead.state == TrialState.FAIL
        (retry,) = [t for t in study.trials if t.system_attrs.get("failed_trial") == number]
        assert retry.state == TrialState.COMPLETE and retry.params == dead.params
        if "mlflow_run_id" in dead.user_attrs:  # the other worker's trial may have died before its run began
            dead_run = client.get_run(dead.user_attrs["mlflow_run_id"])
            assert dead_run.info.status == "FAILED" and dead_run.data.tags["optuna.state"] == "FAIL"
            assert re.search("no heartbeat|died", dead_run.data.tags["failure_reason"])
    # a digits trial takes seconds: the worker may have begun its next trial between the look and the
    # kill; the trial it died in is the one whose run names the killed process
    (on_killed,) = [n for n in died if "mlflow_run_id" in study.trials[n].user_attrs
                    and client.get_run(study.trials[n].user_attrs["mlflow_run_id"]).data.tags["worker"]
                    .endswith(f":{pid}")]
    assert on_killed >= killed_trial, output
    assert sum(t.state == TrialState.COMPLETE for t in study.trials) >= 3, "the study still reaches --n-trials"
    assert not [t for t in study.trials if t.state in (TrialState.RUNNING, TrialState.WAITING)]
    _assert_one_child_per_finished_trial(study, parents, children)
    assert "RUNNING" not in {r.info.status for r in runs}


def test_local_workers_share_the_default_journal_storage(tmp_path: Path) -> None:
    """No PostgreSQL: two local workers on the default storage (a journal file) and the default
    SQLite MLflow store lose no trial and never see 'database is locked'."""
    mlruns = tmp_path / "mlruns"
    done = subprocess.run([*TUNE, "--workers", "2", "--n-trials", "12", "--pruner", "none", "data=digits",
                           "num_epochs=15", f"mlruns_dir={mlruns}"],
                          capture_output=True, text=True, timeout=600, env=clean_env())
    assert done.returncode == 0, done.stderr[-3000:]
    assert "database is locked" not in done.stdout + done.stderr
    study = _study(f"journal:///{mlruns / 'optuna.journal'}")
    numbers = [t.number for t in study.trials]
    assert numbers == list(range(len(numbers))) and 12 <= len(numbers) <= 13
    assert all(t.state == TrialState.COMPLETE for t in study.trials)
    client = MlflowClient(f"sqlite:///{mlruns / 'mlflow.db'}")
    runs, parents, children = _sweep_runs(client, "softmax-sweep", study)
    _assert_one_child_per_finished_trial(study, parents, children)
    assert len({r.data.tags["worker"] for r in children}) == 2
    assert "RUNNING" not in {r.info.status for r in runs}


def test_workers_through_the_grpc_storage_proxy(postgres, tmp_path: Path) -> None:
    """The recipe for many workers: one proxy holds the database connections, workers talk gRPC."""
    port = free_port()
    proxy = subprocess.Popen([sys.executable, "-m", "softmax_sweep.sweeping.proxy", "--storage",
                              f"postgresql://postgres:{SECRET}@127.0.0.1:5432/{postgres()}", "--port", str(port)],
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=clean_env())
    try:
        deadline = time.time() + 60
        while True:
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", port)) == 0:
                    break
            assert proxy.poll() is None and time.time() < deadline, "the proxy did not start"
            time.sleep(0.3)
        mlruns = tmp_path / "mlruns"
        done = subprocess.run([*TUNE, "--workers", "2", "--n-trials", "6", "--pruner", "none",
                               "--storage", f"grpc://127.0.0.1:{port}", "data=digits", "num_epochs=10",
                               f"mlruns_dir={mlruns}"], capture_output=True, text=True, timeout=600, env=clean_env())
        assert done.returncode == 0, done.stderr[-3000:]
        study = _study(f"grpc://127.0.0.1:{port}")
        assert 6 <= len(study.trials) <= 7 and all(t.state == TrialState.COMPLETE for t in study.trials)
    finally:
        proxy.terminate()
        output, _ = proxy.communicate(timeout=30)
    assert "serving Optuna storage postgresql://postgres:***@127.0.0.1:5432/" in output
    assert SECRET not in output


def test_a_study_on_mysql(tmp_path: Path) -> None:
    """mysql:// URLs work as storages too (MariaDB on 127.0.0.1:3306 on these machines)."""
    try:
        import pymysql

        pymysql.connect(host="127.0.0.1", port=3306, user="root", connect_timeout=3).close()
    except Exception as e:  # noqa: BLE001 - any reason there is no server to use
        pytest.skip(f"no MySQL/MariaDB server for root on 127.0.0.1:3306 ({e})")
    name = f"softmax_sweep_test_{uuid.uuid4().hex[:10]}"
    with pymysql.connect(host="127.0.0.1", user="root", autocommit=True) as con:
        con.cursor().execute(f"CREATE DATABASE {name}")
    try:
        storage = f"mysql://root@127.0.0.1:3306/{name}"
        done = subprocess.run([*TUNE, "--n-trials", "3", "--workers", "1", "--pruner", "none", "--storage", storage,
                               "data=digits", "num_epochs=3", f"mlruns_dir={tmp_path / 'mlruns'}"],
                              capture_output=True, text=True, timeout=600, env=clean_env())
        assert done.returncode == 0, done.stderr[-3000:]
        study = _study(storage)
        assert [t.state for t in study.trials] == [TrialState.COMPLETE] * 3
    finally:
        with pymysql.connect(host="127.0.0.1", user="root", autocommit=True) as con:
            con.cursor().execute(f"DROP DATABASE IF EXISTS {name}")


def test_concurrent_first_users_of_a_new_postgresql_storage(postgres) -> None:
    """Four processes opening the same new, empty database as Optuna storage at once: Optuna's
    table creation races (before: DuplicateTable or a duplicate key, 6 of 20 openings in a probe)."""
    code = "import sys; from optuna_pruning.storages import make_storage; make_storage(sys.argv[1])"
    for _ in range(3):
        url = f"{PG}/{postgres()}"
        procs = [subprocess.Popen([sys.executable, "-c", code, url], stderr=subprocess.PIPE, text=True)
                 for _ in range(4)]
        failures = [p.stderr.read()[-500:] for p in procs if p.wait(timeout=120) != 0]
        assert failures == []
        assert optuna.get_all_study_summaries(make_storage(url)) == []


def _database_text(name: str) -> str:
    """Every row of every table of a database, as text."""
    import psycopg

    with psycopg.connect(f"{PG}/{name}") as con:
        tables = [r[0] for r in con.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")]
        return "\n".join(str(row[0]) for t in tables for row in con.execute(f'SELECT t::text FROM "{t}" t'))


def test_a_password_on_the_command_line_is_never_written(postgres, tmp_path: Path) -> None:
    """tracking.uri and the Optuna storage with a password (PostgreSQL trusts local connections and
    ignores it): after a run, a failing run, a basic multirun with a failing job, an Optuna sweep,
    a study script with two workers and `--cfg job --resolve`, the password is in no output, no file
    under mlruns/, no MLflow or Optuna row. It holds each character that ends a password early in a
    naive parser: `/`, a space, `@` and a quote; data.url carries it too."""
    password = "Zq9/s EcR@eT'z"
    tracking, storage = postgres(), postgres()
    uri = f"postgresql://postgres:{password}@127.0.0.1:5432/{tracking}"
    optuna_url = f"postgresql://postgres:{password}@127.0.0.1:5432/{storage}"
    mlruns = tmp_path / "mlruns"
    base = ["data=digits", f"tracking.uri={uri}", f"mlruns_dir={mlruns}",
            f"data.url=https://bob:{password}@127.0.0.1:9/mirror/"]
    train = [sys.executable, "-m", "softmax_sweep.train"]
    commands = [
        [*train, *base, "num_epochs=2"],
        [*train, *base, "lr=0"],
        [*train, "-m", *base, "num_epochs=2", "lr=0.5,1e38"],
        [*train, "-m", "sweep=tune", *base, "hydra.sweeper.n_trials=2", "num_epochs=range(2, 3)",
         f"hydra.sweeper.storage={optuna_url}"],
        [*TUNE, "--n-trials", "2", "--storage", optuna_url, "--study-name", "script", *base, "num_epochs=2"],
        [*TUNE, "--n-trials", "2", "--workers", "2", "--study-name", "script2", *base, "num_epochs=2",
         f"hydra.sweeper.storage={optuna_url}"],
        [*train, *base, "--cfg", "job", "--resolve"],
    ]
    output = ""
    for command in commands:
        done = subprocess.run(command, capture_output=True, text=True, timeout=600, env=clean_env())
        output += done.stdout + done.stderr
        assert done.returncode in (0, 1, 2), done.stderr[-2000:]  # 1: a multirun job failed (lr=1e38)
    assert "***@127.0.0.1" in output, "the URLs are shown, masked"
    assert password not in output
    files = [p for p in mlruns.rglob("*") if p.is_file()]
    assert len(files) > 20 and not [p for p in files if password.encode() in p.read_bytes()]
    for database in (tracking, storage):
        text = _database_text(database)
        assert "127.0.0.1" in text or database == storage
        assert password not in text, database


def _descendants(pid: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rpartition(")")[2].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found += [child]
            todo.append(child)
    return found


def _journal_states(journal: Path) -> list[str]:
    storage = make_storage(f"journal:///{journal}")
    return [t.state.name for name in optuna.get_all_study_names(storage)
            for t in optuna.load_study(study_name=name, storage=storage).trials]


def test_a_sigkilled_sweep_leaves_no_worker_training_and_the_rerun_no_trial_running(tmp_path: Path) -> None:
    """SIGKILL of the command the user started (sweeps/tune.py: -m sweep=tune with the joblib
    launcher's pool) while two trials train: its workers stop within 10 s, and the next start
    fails and retries what they left RUNNING, so nothing stays RUNNING in Optuna or MLflow."""
    from optuna_pruning.workers import dead_local_worker

    mlruns = tmp_path / "mlruns"
    journal = mlruns / "optuna.journal"
    long = [*TUNE, "data=digits", "num_epochs=100000", "--workers", "2", "--n-trials", "2"]
    rerun = [*TUNE, "data=digits", "num_epochs=2", "--n-trials", "3"]
    proc = subprocess.Popen([*long, f"mlruns_dir={mlruns}"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            env=clean_env())
    deadline = time.monotonic() + 180
    while not (journal.exists() and _journal_states(journal).count("RUNNING") == 2):
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()[1][-2000:]
        time.sleep(0.5)
    time.sleep(2)  # the trials are training
    workers = _descendants(proc.pid)
    assert len(workers) >= 2
    proc.kill()
    proc.communicate()
    time.sleep(10)
    alive = [pid for pid in workers if not dead_local_worker(f"{socket.gethostname()}:{pid}")]
    for pid in alive:
        os.kill(pid, signal.SIGKILL)
    assert alive == [], "workers outlived their sweep by 10 s"
    done = subprocess.run([*rerun, f"mlruns_dir={mlruns}"], capture_output=True, text=True, timeout=600,
                          env=clean_env())
    assert done.returncode == 0, done.stderr[-2000:]
    assert "RUNNING" not in _journal_states(journal)
    import sqlite3

    with sqlite3.connect(mlruns / "mlflow.db") as con:
        assert [s for (s,) in con.execute("SELECT status FROM runs")].count("RUNNING") == 0


def test_a_postgresql_storage_that_hangs_fails_within_its_timeout(postgres, tmp_path: Path) -> None:
    """Before: a storage call on a server that stopped answering hung for ever (a study 400 s until
    killed). Now it fails after storage_timeout, and the calls after it fail at once."""
    from optuna_pruning.deadlines import StorageTimeout

    name = postgres()
    with tcp_proxy.started(tmp_path, 5432) as (port, proxy):
        storage = make_storage(f"postgresql://postgres@127.0.0.1:{port}/{name}", timeout=2)
        optuna.create_study(study_name="hang", storage=storage).optimize(lambda t: t.suggest_float("x", 0, 1), 2)
        proxy.send_signal(signal.SIGSTOP)
        started = time.monotonic()
        with pytest.raises(StorageTimeout, match="did not answer within 2 s"):
            optuna.get_all_study_names(storage)
        first = time.monotonic() - started
        started = time.monotonic()
        with pytest.raises(StorageTimeout):
            optuna.load_study(study_name="hang", storage=storage)
        assert 2 <= first < 5 and time.monotonic() - started < 1
    assert len(_study(f"{PG}/{name}", "hang").trials) == 2, "what was written before the hang is kept"


def test_ctrl_c_ends_a_study_whose_postgresql_storage_hangs(postgres, tmp_path: Path) -> None:
    """Before: Ctrl-C was ignored for 60 s ('query not terminated after cancellation'), then the
    study hung on. Now the storage write in flight gets 2 more seconds: exit 130 in seconds, one
    line, the MLflow runs ended (the trial's own state cannot reach a hung storage)."""
    name = postgres()
    mlruns = tmp_path / "mlruns"
    with tcp_proxy.started(tmp_path, 5432) as (port, proxy):
        study = subprocess.Popen(
            [*TUNE, "--n-trials", "1", "--workers", "1", "--storage", f"postgresql://postgres@127.0.0.1:{port}/{name}",
             "data=digits", "num_epochs=100000", f"mlruns_dir={mlruns}"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=clean_env())
        wait_for_count(mlruns / "mlflow.db", study, "SELECT COUNT(*) FROM metrics WHERE key = 'val_acc'", 3,
                       "three epochs logged")
        proxy.send_signal(signal.SIGSTOP)
        time.sleep(1)  # the next epoch's report to the storage is in flight and hangs
        started = time.monotonic()
        study.send_signal(signal.SIGINT)
        out, err = study.communicate(timeout=60)
        took = time.monotonic() - started
    assert study.returncode == 130, err[-3000:]
    assert took < 15, f"Ctrl-C took {took:.1f} s"
    assert "Traceback" not in out + err
    assert "interrupted: run data kept" in err
    assert "RUNNING" not in run_statuses(mlruns / "mlflow.db")


def test_a_multirun_on_postgresql_keeps_few_connections(postgres, tmp_path: Path) -> None:
    """Before: each job of the joblib pool opened its own engine on the storage and kept its
    connection, so a -m sweep held about one connection per trial and failed with 'too many
    clients' after ~90 trials. Now a pool worker keeps one storage per URL."""
    import psycopg

    name = postgres()
    sweep = subprocess.Popen(
        [sys.executable, "-m", "softmax_sweep.train", "-m", "sweep=tune", "data=digits", "num_epochs=range(2, 3)",
         "hydra.sweeper.n_trials=24", f"hydra.sweeper.storage={PG}/{name}", f"mlruns_dir={tmp_path / 'mlruns'}"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=clean_env())
    most = 0
    with psycopg.connect(f"{PG}/postgres", autocommit=True) as con:
        while sweep.poll() is None:
            count = con.execute("SELECT count(*) FROM pg_stat_activity WHERE datname = %s", (name,)).fetchone()[0]
            most = max(most, count)
            time.sleep(0.2)
    output = sweep.stdout.read()
    assert sweep.returncode == 0, output[-3000:]
    assert len(_study(f"{PG}/{name}").trials) == 24
    assert 2 <= most <= 8, f"{most} connections at once"


def test_a_rerun_right_after_a_sigkill_waits_for_the_dying_workers_and_retries(tmp_path: Path) -> None:
    """The rerun started the moment its sweep was SIGKILLed, while the pool's workers were still
    ending their jobs: it used to find the study's trials all started and exit 0, leaving them
    RUNNING. It now waits for those workers to go, fails their trials and runs them again."""
    mlruns = tmp_path / "mlruns"
    journal = mlruns / "optuna.journal"
    args = ["data=digits", "--workers", "2", "--n-trials", "2", f"mlruns_dir={mlruns}"]
    proc = subprocess.Popen([*TUNE, *args, "num_epochs=100000"], stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, env=clean_env())
    deadline = time.monotonic() + 180
    while not (journal.exists() and _journal_states(journal).count("RUNNING") == 2):
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()[1][-2000:]
        time.sleep(0.5)
    time.sleep(2)
    proc.kill()
    proc.communicate()
    done = subprocess.run([*TUNE, *args, "num_epochs=2"], capture_output=True, text=True, timeout=600,
                          env=clean_env())
    assert done.returncode == 0 and "Traceback" not in done.stderr, done.stderr[-2000:]
    states = _journal_states(journal)
    assert "RUNNING" not in states and states.count("FAIL") == 2 and states.count("COMPLETE") == 2, states
