"""Tracking: runs really written to a temporary SQLite MLflow store."""
from __future__ import annotations

import csv
import io
import time
import weakref
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient
from omegaconf import OmegaConf

from softmax_sweep import data as data_module
from softmax_sweep.download import RemoteFile
from softmax_sweep.errors import TrainingDiverged
from softmax_sweep.experiment import train
from softmax_sweep.idx import content_sha256
from softmax_sweep.synthetic import IDX_FILES

from conftest import compose_config, run_statuses

SIX = ("train_loss", "train_acc", "val_loss", "val_acc", "test_loss", "test_acc")


def _client(cfg) -> MlflowClient:
    return MlflowClient(f"sqlite:///{Path(cfg.mlruns_dir) / 'mlflow.db'}")


def test_run_records_params_curves_summary_and_artifacts(cfg) -> None:
    summary = train(cfg)
    client = _client(cfg)
    experiment = client.get_experiment_by_name("softmax-sweep")
    assert experiment.tags["mlflow.experimentKind"] == "custom_model_development"
    assert experiment.artifact_location.startswith(Path(cfg.mlruns_dir).resolve().as_uri())
    run = client.get_run(summary["run_id"])
    assert run.info.status == "FINISHED"
    params = run.data.params
    assert params["lr"] == "0.5" and params["batch_size"] == "32" and params["num_epochs"] == "3"
    assert params["data.name"] == "digits" and params["data.val_size"] == "300"
    assert params["early_stopping_patience"] == "None" and params["optimized_metric"] == "val_acc"
    for name in SIX:
        steps = [m.step for m in client.get_metric_history(run.info.run_id, name)]
        assert steps == [1, 2, 3], name
    val_accs = [m.value for m in client.get_metric_history(run.info.run_id, "val_acc")]
    assert run.data.metrics["best_val_acc"] == max(val_accs) == summary["val_acc"]
    best = int(run.data.metrics["best_epoch"])
    test_accs = [m.value for m in client.get_metric_history(run.info.run_id, "test_acc")]
    assert run.data.metrics["test_acc_at_best_epoch"] == test_accs[best - 1]
    gap = run.data.metrics["train_acc"] - run.data.metrics["val_acc"]
    assert run.data.metrics["generalization_gap"] == pytest.approx(gap)
    assert run.data.tags["data.name"] == "digits" and len(run.data.tags["data.digest"]) == 16
    assert len(run.data.tags["mlflow.source.git.commit"]) == 40
    assert run.inputs.dataset_inputs[0].dataset.digest == run.data.tags["data.digest"]
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert artifacts == {"config.yaml", "curves.png", "metrics.csv", "softmax-best.params"}
    folder = Path(client.download_artifacts(run.info.run_id, ""))
    assert (folder / "curves.png").read_bytes()[:4] == b"\x89PNG"
    rows = list(csv.DictReader(io.StringIO((folder / "metrics.csv").read_text())))
    assert [int(r["epoch"]) for r in rows] == [1, 2, 3]
    assert float(rows[best - 1]["val_acc"]) == pytest.approx(max(val_accs))
    assert OmegaConf.load(folder / "config.yaml").lr == 0.5
    assert (folder / "softmax-best.params").stat().st_size > 64 * 10 * 4


def test_diverged_run_is_failed_with_reason_and_epochs_kept(cfg) -> None:
    cfg.lr = 1e38
    with pytest.raises(TrainingDiverged):
        train(cfg)
    client = _client(cfg)
    (run,) = client.search_runs([client.get_experiment_by_name("softmax-sweep").experiment_id])
    assert run.info.status == "FAILED"
    assert run.data.tags["failure_reason"] == "loss became NaN at epoch 1; lr=1e+38 too large?"
    assert [m.step for m in client.get_metric_history(run.info.run_id, "train_acc")] == [1]
    assert {a.path for a in client.list_artifacts(run.info.run_id)} == {"config.yaml", "curves.png", "metrics.csv"}


def test_interrupted_run_is_killed(cfg) -> None:
    class CtrlC:
        def on_epoch_end(self, epoch, metrics):
            if epoch == 2:
                raise KeyboardInterrupt

    cfg.num_epochs = 5
    with pytest.raises(KeyboardInterrupt):
        train(cfg, callbacks=[CtrlC()])
    assert run_statuses(Path(cfg.mlruns_dir) / "mlflow.db") == ["KILLED"]


def test_early_stopping_through_the_config(cfg) -> None:
    cfg.num_epochs, cfg.early_stopping_patience, cfg.lr = 60, 2, 2.0
    cfg.data.train_size = 40
    summary = train(cfg)
    assert summary["epochs_trained"] == summary["best_epoch"] + 2 < 60
    run = _client(cfg).get_run(summary["run_id"])
    assert run.data.tags["stopped_early"] == "True"


def test_tracking_uri_from_environment(cfg, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    db = tmp_path / "elsewhere" / "env.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{db}")
    train(cfg)
    assert run_statuses(db) == ["FINISHED"]
    assert run_statuses(Path(cfg.mlruns_dir) / "mlflow.db") == []


def test_mask_password() -> None:
    from optuna_pruning.urls import mask_password, openable

    assert mask_password("postgresql://bob:s3cret@db:5432/optuna") == "postgresql://bob:***@db:5432/optuna"
    assert mask_password("http://127.0.0.1:5000") == "http://127.0.0.1:5000"
    assert mask_password("sqlite:////tmp/x.db") == "sqlite:////tmp/x.db"
    assert mask_password("postgresql://bob@db/optuna") == "postgresql://bob@db/optuna"
    for password in ("Sl/ash", "a space", "raw@at@", "it's", "50%"):
        url = f"http://alice:{password}@127.0.0.1:5000/x"
        assert mask_password(url) == "http://alice:***@127.0.0.1:5000/x"
        assert password not in mask_password(f"failed: {password} was refused")  # remembered by value
    assert openable("postgresql://u:a/b c@d@h/db") == "postgresql://u:a%2Fb%20c%40d@h/db"


def test_fashion_mnist_download_through_loopback_and_train(idx_server, places_in_tmp: Path,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """The whole path a new user without a copy takes: download, verify, cache, train, track. The
    official digests are swapped for those of the generated files; nothing else is changed."""
    server, md5s = idx_server
    tmp_path = places_in_tmp
    what, _, _ = data_module.DOWNLOADS["fashion_mnist"]
    files = [RemoteFile(name, content_sha256(server.folder / name), (md5s[name],)) for name in IDX_FILES]
    monkeypatch.setitem(data_module.DOWNLOADS, "fashion_mnist", (what, [server.url], files))
    cache = tmp_path / "mxnet" / "datasets" / "fashion-mnist"
    cfg = compose_config(["data=fashion_mnist", f"data.url={server.url}",
                          "data.val_size=100", "num_epochs=4", "lr=0.5", "batch_size=32",
                          f"mlruns_dir={tmp_path / 'mlruns'}"])
    summary = train(cfg)
    assert sorted(f.name for f in cache.iterdir()) == sorted(IDX_FILES)
    assert summary["test_acc_at_best_epoch"] > 0.9  # the generated classes are easy
    run = MlflowClient(f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}").get_run(summary["run_id"])
    assert run.data.tags["data.name"] == "fashion_mnist"
    assert (run.data.tags["data.place"], run.data.tags["data.source"]) == ("download", server.url)
    assert run.inputs.dataset_inputs[0].dataset.source == server.url


def test_data_set_inserted_by_another_worker_meanwhile(tmp_path: Path) -> None:
    """Two workers' first trials log the same data set at once: MLflow looks it up, finds
    nothing, and inserts; the second insert breaks the unique key. Reproduced on a real store by
    letting another connection insert the row between MLflow's lookup and its insert."""
    import sqlite3
    import uuid

    from sqlalchemy import event
    from sqlalchemy.engine import Engine

    from softmax_sweep.tracking import Tracker

    db = tmp_path / "mlflow.db"
    tracker = Tracker(f"sqlite:///{db}", "race", str(tmp_path))
    run = tracker.start_run("trial-0")
    raced = []

    def other_worker_first(conn, cursor, statement, parameters, context, executemany) -> None:
        if statement.startswith("INSERT INTO datasets") and not raced:
            raced.append(statement)
            with sqlite3.connect(db) as other:
                other.execute("INSERT INTO datasets (dataset_uuid, experiment_id, name, digest, "
                              "dataset_source_type, dataset_source) VALUES (?, ?, ?, ?, ?, ?)",
                              (uuid.uuid4().hex, int(tracker.experiment_id), "digits", "abc123", "local", "x"))

    event.listen(Engine, "before_cursor_execute", other_worker_first)
    try:
        run.log_dataset("digits", "abc123", "x")
    finally:
        event.remove(Engine, "before_cursor_execute", other_worker_first)
    assert raced, "the race was not provoked"
    inputs = MlflowClient(f"sqlite:///{db}").get_run(run.run_id).inputs.dataset_inputs
    assert [(i.dataset.name, i.dataset.digest) for i in inputs] == [("digits", "abc123")]
    with sqlite3.connect(db) as con:
        assert con.execute("SELECT count(*) FROM datasets WHERE digest = 'abc123'").fetchone() == (1,)
    run.end("FINISHED")


def test_ctrl_c_while_a_run_is_being_created_ends_it_killed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The signal arrives inside MLflow's create_run (as when another process holds SQLite's
    write lock): the run exists by the time the interrupt is raised, and must end KILLED."""
    import os
    import signal

    from softmax_sweep import interrupts
    from softmax_sweep.tracking import Tracker

    tracker = Tracker(f"sqlite:///{tmp_path / 'mlflow.db'}", "exp", str(tmp_path))
    real_create = tracker.client.create_run

    def create_then_interrupted(*args, **kwargs):
        run = real_create(*args, **kwargs)
        os.kill(os.getpid(), signal.SIGINT)  # delivered while the run's creation is still under way
        return run

    monkeypatch.setattr(tracker.client, "create_run", create_then_interrupted)
    previous = signal.getsignal(signal.SIGINT)
    interrupts.install()
    try:
        with pytest.raises(KeyboardInterrupt):
            with tracker.run("interrupted"):
                raise AssertionError("the body must not run")
    finally:
        signal.signal(signal.SIGINT, previous)
        interrupts._received.clear()
    assert run_statuses(tmp_path / "mlflow.db") == ["KILLED"]


def test_runs_logging_together_write_less_often_each(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A run alone writes its queued metrics once a second, however slow its writes; among 20 open
    runs of one process (a stack of trials), each waits until their writes together take about 5%
    of the time (20 x 10 ms / 0.05 = 4 s here), at most 10 s, also when the runs end their epochs
    in turn (each finding the others just written)."""
    from softmax_sweep.experiment import open_tracker
    from softmax_sweep.runlog import RunLogger

    tracker = open_tracker(f"sqlite:///{tmp_path / 'mlflow.db'}", "budget", str(tmp_path))
    monkeypatch.setattr(RunLogger, "_open", weakref.WeakSet())  # runs other tests of this process left open
    alone = tracker.start_run("alone")

    def written(run: RunLogger) -> list[int]:
        return sorted(m.step for m in tracker.client.get_metric_history(run.run_id, "val_acc"))

    alone.on_epoch_end(1, {"val_acc": 0.5})
    alone.flush()
    assert RunLogger._write_seconds > 0, "a real write's duration is measured"

    def after(run: RunLogger, seconds: float, epoch: int) -> list[int]:
        """The steps written when an epoch ends `seconds` after the run's last write."""
        run._flushed_at = time.monotonic() - seconds
        run.on_epoch_end(epoch, {"val_acc": epoch / 10})
        return written(run)

    # what the rule reads, fixed for the test: first a slow server, where a run alone still writes every second
    monkeypatch.setattr(RunLogger, "_write_seconds", 0.5)
    assert after(alone, 1.5, 2) == [1, 2], "alone: due after a second"

    runs = [alone, *(tracker.start_run(f"run {i}") for i in range(1, 20))]
    monkeypatch.setattr(RunLogger, "_write_seconds", 0.01)
    for run in runs:  # an epoch of the stack, each run in turn, 2 s after every run's last write
        run._flushed_at = time.monotonic() - 2
        run.on_epoch_end(3, {"val_acc": 0.6})
    assert [written(run) for run in runs] == [[1, 2]] + [[]] * 19, "among 20 open runs: not yet after 2 s"
    assert after(runs[2], 2, 4) == [], "not yet after 2 s"
    assert after(runs[2], 4.5, 5) == [3, 4, 5], "due after 4 s"
    monkeypatch.setattr(RunLogger, "_write_seconds", 1.0)  # 20 x 1 s / 0.05 = 400 s: capped at 10 s
    assert after(runs[3], 9, 4) == [], "not yet after 9 s"
    assert after(runs[3], 10.5, 5) == [3, 4, 5], "due after 10 s however slow the writes"
    for run in runs:
        run.end("FINISHED")
    assert not any(run in RunLogger._open for run in runs)
    assert [len(written(run)) for run in runs] == [3, 1, 3, 3] + [1] * 16, "nothing lost at the end"


def test_a_sqlite_store_is_written_ahead_and_synced_at_checkpoints(tmp_path: Path) -> None:
    """MLflow's connections to a new SQLite store: write-ahead log, and a disk sync at checkpoints,
    not at each commit (a commit still outlives the process: test_cli's SIGKILL test)."""
    from sqlalchemy import text

    from softmax_sweep.tracking import Tracker

    tracker = Tracker(f"sqlite:///{tmp_path / 'mlflow.db'}", "sync", str(tmp_path))
    run = tracker.start_run("r")
    run.end("FINISHED")
    with tracker.client._tracking_client.store.engine.connect() as con:  # the engine MLflow writes with
        assert con.execute(text("PRAGMA journal_mode")).scalar() == "wal"
        assert con.execute(text("PRAGMA synchronous")).scalar() == 1  # NORMAL (FULL is 2)


def test_each_runs_curves_are_its_own_on_the_one_reused_figure(tmp_path) -> None:
    """Every run's curves.png is drawn on one figure: what an earlier run drew (its lines, limits,
    legend, title) never shows in the next, so each picture is the one a new figure gives."""
    from PIL import Image

    from softmax_sweep import plots

    def history(epochs: int, scale: float, splits=("train", "val", "test")) -> list[dict[str, float]]:
        return [{f"{s}_{k}": scale * (1 + e + i) if k == "loss" else 0.5 + 0.04 * e / scale - 0.01 * i
                 for i, s in enumerate(splits) for k in ("acc", "loss")} for e in range(epochs)]

    runs = [(history(10, 1.0), 4, "lr=0.1"), (history(60, 3.0), 0, ""), (history(3, 0.5, ("train", "test")), 2, "x")]
    pictures = []
    for i, (h, best, title) in enumerate(runs * 2):
        pictures.append(plots.plot_curves(h, tmp_path / f"{i}.png", best, title).read_bytes())
    fresh = []
    for i, (h, best, title) in enumerate(runs):
        plots._figure.cache_clear()  # a new figure for each
        fresh.append(plots.plot_curves(h, tmp_path / f"fresh{i}.png", best, title).read_bytes())
    assert pictures == fresh * 2
    assert len(set(fresh)) == 3
    # the same colour for a split whatever else the run measured: test stays green without val
    third = Image.open(io.BytesIO(fresh[2])).convert("RGB")
    assert (44, 160, 44) in {color for _, color in third.getcolors(1 << 20)}
    assert (255, 127, 14) not in {color for _, color in third.getcolors(1 << 20)}
