"""Stores and folders spoiled as the machine around the program spoils them, for the fault probes
(faults.py) and the tests (tests/test_store_faults.py) alike. Each maker spoils a place under
`folder` and returns the command-line arguments of a run that meets it (Hydra's flags first)."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

TRAIN = [sys.executable, "-m", "softmax_sweep.train"]


def first_run(folder: Path) -> Path:
    """A store with one finished run in folder/mlruns."""
    mlruns = folder / "mlruns"
    env = {k: v for k, v in os.environ.items() if k not in ("MLFLOW_TRACKING_URI", "HYDRA_FULL_ERROR")}
    done = subprocess.run([*TRAIN, "data=digits", "num_epochs=1", f"mlruns_dir={mlruns}"], capture_output=True,
                          text=True, env=env, cwd=folder, timeout=300)
    if done.returncode != 0:
        raise RuntimeError(f"the first run failed: {done.stderr[-1500:]}")
    return mlruns


def random_db(folder: Path) -> list[str]:
    (folder / "mlruns").mkdir()
    (folder / "mlruns" / "mlflow.db").write_bytes(bytes(range(256)) * 400)
    return [f"mlruns_dir={folder / 'mlruns'}"]


def truncated_db(folder: Path) -> list[str]:
    db = first_run(folder) / "mlflow.db"
    os.truncate(db, db.stat().st_size // 3)
    return [f"mlruns_dir={folder / 'mlruns'}"]


def random_journal(folder: Path) -> list[str]:
    (folder / "mlruns").mkdir()
    (folder / "mlruns" / "optuna.journal").write_bytes(bytes(range(128, 256)) * 40)  # never UTF-8
    return ["-m", "sweep=tune", f"mlruns_dir={folder / 'mlruns'}"]


def mlruns_a_file(folder: Path) -> list[str]:
    (folder / "afile").write_text("")
    return [f"mlruns_dir={folder / 'afile'}"]


def symlink_loop(folder: Path) -> list[str]:
    (folder / "a").symlink_to(folder / "b")
    (folder / "b").symlink_to(folder / "a")
    return [f"mlruns_dir={folder / 'a'}"]


def run_dir_a_file(folder: Path) -> list[str]:
    (folder / "afile").write_text("")
    return [f"mlruns_dir={folder / 'mlruns'}", f"hydra.run.dir={folder / 'afile'}"]


def deleted_experiment(folder: Path) -> list[str]:
    from mlflow.tracking import MlflowClient

    mlruns = first_run(folder)
    client = MlflowClient(f"sqlite:///{mlruns / 'mlflow.db'}")
    client.delete_experiment(client.get_experiment_by_name("softmax-sweep").experiment_id)
    return [f"mlruns_dir={mlruns}"]


def artifacts_a_file(folder: Path) -> list[str]:
    mlruns = first_run(folder)
    shutil.rmtree(mlruns / "artifacts")
    (mlruns / "artifacts").write_text("")
    return [f"mlruns_dir={mlruns}"]


DAMAGED: dict[str, Callable[[Path], list[str]]] = {
    "mlflow.db of random bytes": random_db,
    "mlflow.db truncated to a third": truncated_db,
    "Optuna journal of random bytes": random_journal,
    "mlruns_dir a regular file": mlruns_a_file,
    "mlruns_dir a symlink loop": symlink_loop,
    "hydra.run.dir a regular file": run_dir_a_file,
    "experiment deleted in the MLflow UI": deleted_experiment,
    "mlruns/artifacts a file": artifacts_a_file,
}
