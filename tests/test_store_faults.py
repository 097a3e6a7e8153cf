"""Stores that fail under a run: a tracking server that dies mid-run, a read-only mlruns/.
Real subprocesses, a real `mlflow server`, a real read-only mount."""
from __future__ import annotations

import csv
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from softmax_sweep.config import PROJECT_ROOT

sys.path.insert(0, str(PROJECT_ROOT / "benchmarks"))
import damaged_stores  # noqa: E402 - benchmarks/damaged_stores.py: the fault probes' makers

from conftest import clean_env, mlflow_server, run_statuses, stop_process_group

TRAIN = [sys.executable, "-m", "softmax_sweep.train"]


def _start_long_run(url: str, out: Path) -> subprocess.Popen:
    """stdout goes to a file: a digits epoch takes milliseconds, and a pipe read only at the end
    would fill with their lines and block the run."""
    out.mkdir(parents=True, exist_ok=True)
    with open(out / "stdout.log", "w") as log:  # the child keeps its own copy of the file
        return subprocess.Popen([*TRAIN, "data=digits", "num_epochs=100000", f"tracking.uri={url}",
                                 "tracking.retry_seconds=6", f"hydra.run.dir={out}", f"mlruns_dir={out / 'mlruns'}"],
                                stdout=log, stderr=subprocess.PIPE, text=True, env=clean_env())


def _wait_for_epochs(client: MlflowClient, proc: subprocess.Popen, at_least: int = 3) -> str:
    deadline = time.time() + 120
    while time.time() < deadline:
        assert proc.poll() is None, proc.communicate()
        runs = client.search_runs(["1"], filter_string=f"tags.worker LIKE '%:{proc.pid}'")
        if runs and len(client.get_metric_history(runs[0].info.run_id, "val_acc")) >= at_least:
            return runs[0].info.run_id
        time.sleep(0.3)
    raise AssertionError("the run never logged its epochs")


def test_a_tracking_server_that_dies_mid_run(tmp_path: Path) -> None:
    """The server is killed under two runs: the first gives up after tracking.retry_seconds with one
    line and keeps its epochs in the Hydra run folder; the second is interrupted with Ctrl-C while
    MLflow retries, and exits within seconds. The next run on the restarted server ends both KILLED."""
    backend = f"sqlite:///{tmp_path / 'server.db'}"
    outcomes = []
    for how in ("wait", "ctrl-c"):
        out = tmp_path / how
        with mlflow_server(backend, tmp_path) as (url, server):
            proc = _start_long_run(url, out)
            run_id = _wait_for_epochs(MlflowClient(url), proc)
            killed_at = time.monotonic()  # the run may notice while the server is still shutting down
            stop_process_group(server)
            if how == "ctrl-c":
                time.sleep(1)  # MLflow is retrying its next write now
                proc.send_signal(signal.SIGINT)
                killed_at = time.monotonic()
            _, err = proc.communicate(timeout=120)
            out_text = (out / "stdout.log").read_text()
            outcomes.append((url, run_id, proc.returncode, time.monotonic() - killed_at, out_text + err))
    (first_url, first, code, seconds, err), (_, second, code2, seconds2, err2) = outcomes
    assert code == 2 and "Traceback" not in err, err
    assert err.strip().splitlines()[-1] == (f"error: tracking server {first_url} is unreachable (gave up within "
                                            "tracking.retry_seconds=6)")
    # MLflow's own retries took about 4 minutes per request. A write cut off as the server went
    # down (not retried: a POST) gives up at once, once the health check finds no server
    assert seconds < 6 + 5
    with open(tmp_path / "wait" / "metrics.csv") as f:
        assert len(list(csv.DictReader(f))) >= 3  # the epochs so far, kept where they can be
    assert code2 == 130 and "Traceback" not in err2, err2
    assert seconds2 < 8, err2
    assert f"run {second} could not be ended on the unreachable tracking server" in err2
    with mlflow_server(backend, tmp_path) as (url, _):
        done = subprocess.run([*TRAIN, "data=digits", "num_epochs=1", f"tracking.uri={url}",
                               f"mlruns_dir={tmp_path / 'mlruns'}"], capture_output=True, text=True, env=clean_env())
        assert done.returncode == 0, done.stderr
        client = MlflowClient(url)
        assert client.get_run(first).info.status == "KILLED"
        assert client.get_run(second).info.status == "KILLED"
        assert "died" in client.get_run(second).data.tags["failure_reason"]


def _read_only_mount_error() -> str | None:
    if not shutil.which("unshare"):
        return "unshare (util-linux) is not installed"
    probe = subprocess.run(["unshare", "-m", "sh", "-c", "mount --bind / / && mount -o remount,bind,ro / /"],
                           capture_output=True, text=True)
    return None if probe.returncode == 0 else f"no private read-only bind mount here: {probe.stderr.strip()}"


@pytest.mark.skipif(_read_only_mount_error() is not None, reason=f"needs a read-only mount: {_read_only_mount_error()}")
@pytest.mark.parametrize("what", ["folder", "database"])
def test_a_read_only_store_is_one_line(tmp_path: Path, what: str) -> None:
    """mlruns/ (or only its mlflow.db) on a read-only mount: one line, exit 2, nothing changed."""
    mlruns = tmp_path / "mlruns"
    first = subprocess.run([*TRAIN, "data=digits", "num_epochs=1", f"mlruns_dir={mlruns}"],
                           capture_output=True, text=True, env=clean_env())
    assert first.returncode == 0, first.stderr
    target = mlruns if what == "folder" else mlruns / "mlflow.db"
    command = [*TRAIN, "data=digits", "num_epochs=1", f"mlruns_dir={mlruns}", f"hydra.run.dir={tmp_path / 'out'}"]
    script = f'mount --bind "{target}" "{target}" && mount -o remount,bind,ro "{target}" "{target}" && exec "$@"'
    done = subprocess.run(["unshare", "-m", "sh", "-c", script, "sh", *command], capture_output=True, text=True,
                          env=clean_env())
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    db = mlruns / "mlflow.db"  # on a read-only folder the database is read-only too
    assert lines == [f"error: tracking URI sqlite:///{db}: {db} is read-only (make it "
                     "writable, or choose another mlruns_dir or tracking.uri)"], done.stderr
    assert run_statuses(mlruns / "mlflow.db") == ["FINISHED"]


DAMAGED = {
    "mlflow.db of random bytes": (damaged_stores.random_db, "the store is damaged (file is not a database)"),
    "a journal of random bytes": (damaged_stores.random_journal, "is damaged (UnicodeDecodeError): move it away"),
    "mlruns_dir a file": (damaged_stores.mlruns_a_file, "Not a directory (check mlruns_dir, hydra.run.dir"),
    "experiment deleted": (damaged_stores.deleted_experiment, "the MLflow experiment 'softmax-sweep' was deleted"),
    "artifacts a file": (damaged_stores.artifacts_a_file, "cannot write this run's artifacts"),
}


@pytest.mark.parametrize("case", DAMAGED, ids=list(DAMAGED))
def test_a_damaged_or_unusable_store_is_one_line(tmp_path: Path, case: str) -> None:
    """What the machine spoiled is named in one line (exit 2), before any training; no run RUNNING."""
    setup, expected = DAMAGED[case]
    overrides = setup(tmp_path)
    flags = [o for o in overrides if o.startswith("-")]
    done = subprocess.run([*TRAIN, *flags, "data=digits", "num_epochs=1", *(o for o in overrides if o not in flags)],
                          capture_output=True, text=True, timeout=300, env=clean_env())
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 2 and len(lines) == 1 and expected in lines[0], done.stderr[-2000:]
    assert "Traceback" not in done.stdout + done.stderr
    if case in ("experiment deleted", "artifacts a file"):
        statuses = run_statuses(tmp_path / "mlruns" / "mlflow.db")
        assert "RUNNING" not in statuses and len(statuses) >= 1


def test_a_stopped_tracking_server_is_given_up_within_retry_seconds(tmp_path: Path) -> None:
    """SIGSTOP: the server accepts connections and never answers. Every request has a read timeout,
    so the run ends with one line within tracking.retry_seconds (6 here) + 5 s of the stop."""
    backend = f"sqlite:///{tmp_path / 'server.db'}"
    with mlflow_server(backend, tmp_path) as (url, server):
        proc = _start_long_run(url, tmp_path / "out")
        _wait_for_epochs(MlflowClient(url), proc)
        os.killpg(server.pid, signal.SIGSTOP)
        stopped = time.monotonic()
        try:
            _, err = proc.communicate(timeout=120)
        finally:
            os.killpg(server.pid, signal.SIGCONT)
        waited = time.monotonic() - stopped
    assert proc.returncode == 2 and err.strip().splitlines()[-1].startswith("error: tracking server"), err[-2000:]
    assert "Traceback" not in err
    assert waited < 6 + 5, waited
