"""The command line, through real subprocesses: success, every bad input, signals."""
from __future__ import annotations

import contextlib
import signal
import socket
import sqlite3
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from softmax_sweep.idx import write_idx

from conftest import REAL_FASHION, clean_env, make_idx_folder, needs_real_fashion, run_statuses, wait_for_count

TRAIN = [sys.executable, "-m", "softmax_sweep.train"]


def run_train(tmp_path: Path, *overrides: str) -> subprocess.CompletedProcess:
    return subprocess.run([*TRAIN, *overrides, f"mlruns_dir={tmp_path / 'mlruns'}"],
                          capture_output=True, text=True, timeout=300, env=clean_env())


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_a_run_from_the_command_line(tmp_path: Path) -> None:
    done = run_train(tmp_path, "data=digits", "num_epochs=2", "lr=0.5")
    assert done.returncode == 0, done.stderr
    assert "epoch 2/2" in done.stdout + done.stderr
    assert run_statuses(tmp_path / "mlruns" / "mlflow.db") == ["FINISHED"]
    hydra_runs = list((tmp_path / "mlruns" / "hydra" / "runs").glob("*/*/.hydra/config.yaml"))
    assert len(hydra_runs) == 1, "Hydra's run folder goes under mlruns/"


@needs_real_fashion
def test_the_default_command_trains_on_the_real_fashion_mnist_copy(tmp_path: Path) -> None:
    """What a new user types first, on a machine with Debian's package and nothing downloaded."""
    env = {**clean_env(), "MXNET_HOME": str(tmp_path / "mxnet")}
    done = subprocess.run([*TRAIN, f"mlruns_dir={tmp_path / 'mlruns'}", "num_epochs=2"],
                          capture_output=True, text=True, timeout=300, env=env)
    assert done.returncode == 0, done.stderr
    output = done.stdout + done.stderr
    assert f"Fashion-MNIST from {REAL_FASHION} (debian)" in output
    test_acc = float(output.rsplit("test_acc there ", 1)[1].split()[0])
    assert 0.78 < test_acc < 0.86, test_acc  # the chapter's model after 2 epochs
    assert not (tmp_path / "mxnet").exists()


def _bad_idx_folder(tmp_path: Path) -> str:
    folder = tmp_path / "badidx"
    make_idx_folder(folder, n_train=20, n_test=10)
    write_idx(folder / "train-labels-idx1-ubyte.gz", np.zeros((20, 2), np.uint8))  # 2-d labels: wrong magic
    return str(folder)


def _unreadable_idx_folder(tmp_path: Path) -> str:
    folder = tmp_path / "cutidx"
    make_idx_folder(folder, n_train=20, n_test=10)
    target = folder / "t10k-images-idx3-ubyte.gz"
    target.write_bytes(target.read_bytes()[:50])
    return str(folder)


BAD_INPUTS = {
    "lr zero": (["lr=0"], "lr must be a positive number"),
    "lr negative": (["lr=-0.1"], "lr must be a positive number"),
    "lr not a number": (["lr=fast"], "lr: Value 'fast' of type 'str' could not be converted to Float"),
    "batch size": (["batch_size=0"], "batch_size must be at least 1"),
    "epochs": (["num_epochs=0"], "num_epochs must be at least 1"),
    "val_size": (["data=digits", "data.val_size=1347"], "data.val_size=1347 must be smaller than the training set"),
    "unknown data set": (["data=cifar"], "Could not find 'data/cifar'; available options in 'data': digits"),
    "unknown key": (["learning_rate=0.1"], "unknown config key 'learning_rate'"),
    "unknown appended key": (["+learning_rate=0.1"], "unknown config key 'learning_rate'"),
    "malformed data file": (["data=idx", "data.root={bad_idx}"], "is not an IDX file of 1-d unsigned bytes"),
    "unreadable data file": (["data=idx", "data.root={cut_idx}"], "cannot read data file"),
    "unreachable tracking": (["data=digits", "tracking.uri=http://127.0.0.1:{port}"], "is unreachable"),
    "unreachable tracking database": (["data=digits", "tracking.uri=postgresql://u:pw@127.0.0.1:{port}/db"],
                                      "tracking URI postgresql://u:***@127.0.0.1:"),
    "test metric optimized": (["optimized_metric=test_acc"], "test metrics are only reported"),
    "seed negative": (["data=digits", "seed=-1"], "seed must be between 0 and 2**32 - 1, got -1"),
    "seed too large": (["data=digits", "seed=4294967296"], "seed must be between 0 and 2**32 - 1"),
    "seeds in a plain run": (["data=digits", "seeds=3"], "seeds=3 is for sweeps, where each trial trains seeds"),
    "train_size beyond the data": (["data=digits", "data.train_size=5000"],
                                   "data.train_size=5000 is more than the 1047 training examples"),
    "IDX set with no images": (["data=idx", "data.root={empty_idx}"], "train-images-idx3-ubyte.gz holds no images"),
    "folder instead of a file": (["data=idx", "data.root={dir_idx}"],
                                 "lacks t10k-images-idx3-ubyte[.gz] (or it is not a file)"),
    "-m with --cfg": (["-m", "--cfg", "job"], "Only one of --run, --multirun, --cfg"),
    "a key deleted": (["data=digits", "~lr"], "lr was deleted from the config (~lr): every run needs it"),
    "a key given twice": (["data=digits", "lr=0.1", "lr=0.5"], "lr is given twice (lr=0.1 and lr=0.5): give it once"),
    "a typo in a search space": (["-m", "sweep=tune", "data=digits",
                                  "+hydra.sweeper.params.nonexistent='interval(0,1)'"],
                                 "hydra.sweeper.params: Could not override 'nonexistent'"),
    "an option a group lacks": (["-m", "sweep=overfit", "data=digits", "remedy=choice(none,weight_decy)"],
                                "hydra.sweeper.params.remedy: no option weight_decy in config group 'remedy'"),
    "a group set with a dot": (["-m", "sweep=tune", "data=digits", "hydra.sweeper.optuna_pruner=none"],
                               "choose one with hydra/sweeper/optuna_pruner=none (a config group: slashes)"),
    "motpe": (["-m", "sweep=tune", "data=digits", "hydra/sweeper/optuna_sampler=motpe"],
              "The 'motpe' sampler was removed in Optuna 4.0. Use 'hydra/sweeper/optuna_sampler=tpe' instead."),
    "sweeper setting": (["-m", "sweep=tune", "data=digits", "hydra.sweeper.n_trials=0"],
                        "hydra.sweeper: n_trials and n_jobs must be at least 1"),
    "loss maximized": (["-m", "sweep=tune", "data=digits", "hydra.sweeper.direction=maximize"],
                       "set hydra.sweeper.direction=minimize"),
}


def _empty_idx_folder(tmp_path: Path) -> str:
    folder = tmp_path / "emptyidx"
    make_idx_folder(folder, n_train=0, n_test=10)
    return str(folder)


def _dir_instead_of_file(tmp_path: Path) -> str:
    folder = tmp_path / "diridx"
    make_idx_folder(folder, n_train=20, n_test=10)
    (folder / "t10k-images-idx3-ubyte.gz").unlink()
    (folder / "t10k-images-idx3-ubyte.gz").mkdir()
    return str(folder)


@pytest.mark.parametrize("case", BAD_INPUTS, ids=list(BAD_INPUTS))
def test_bad_input_is_one_line_exit_2_and_leaves_no_run_running(tmp_path: Path, case: str) -> None:
    overrides, expected = BAD_INPUTS[case]
    values = {"bad_idx": _bad_idx_folder(tmp_path) if "bad_idx" in str(overrides) else "",
              "cut_idx": _unreadable_idx_folder(tmp_path) if "cut_idx" in str(overrides) else "",
              "empty_idx": _empty_idx_folder(tmp_path) if "empty_idx" in str(overrides) else "",
              "dir_idx": _dir_instead_of_file(tmp_path) if "dir_idx" in str(overrides) else "",
              "port": _closed_port()}
    done = run_train(tmp_path, *(o.format(**values) for o in overrides))
    assert done.returncode == 2, (done.stdout, done.stderr)
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), done.stderr
    assert expected in lines[0]
    assert "Traceback" not in done.stdout + done.stderr
    assert "RUNNING" not in run_statuses(tmp_path / "mlruns" / "mlflow.db")


def test_a_home_folder_value_is_expanded(tmp_path: Path) -> None:
    """`data.root=~/x`: Hydra's grammar has no `~` at the start of a value and the shell does not
    expand it after `key=`; the command means the home folder."""
    from softmax_sweep.cli import prepare_overrides

    home = Path.home()
    assert prepare_overrides(["data.root=~/data/fashion", "~lr", "-m"]) == [f"data.root={home}/data/fashion", "~lr",
                                                                           "-m"]
    done = run_train(tmp_path, "data=idx", "data.root=~/no-such-folder-here")
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert str(home / "no-such-folder-here") in done.stderr


def test_a_single_update_with_the_cosine_schedule_trains(tmp_path: Path) -> None:
    """One minibatch in one epoch (batch larger than the training set): the schedule's only update
    must not be at lr 0 (the run would finish untrained at chance accuracy)."""
    done = run_train(tmp_path, "data=digits", "num_epochs=1", "batch_size=2000", "lr=5", "lr_schedule=cosine")
    assert done.returncode == 0, done.stderr
    accuracy = float((done.stdout + done.stderr).split("val_acc ")[1].split()[0])
    assert accuracy > 0.5  # one step at lr 2.5: 0.81; at lr 0 the initial weights give ~0.09


def test_diverging_run_fails_with_its_reason(tmp_path: Path) -> None:
    done = run_train(tmp_path, "data=digits", "lr=1e38")
    assert done.returncode == 1
    assert done.stderr.strip() == "error: loss became NaN at epoch 1; lr=1e+38 too large?"
    assert run_statuses(tmp_path / "mlruns" / "mlflow.db") == ["FAILED"]


@pytest.mark.parametrize("signum, code", [(signal.SIGINT, 130), (signal.SIGTERM, 143), (signal.SIGHUP, 143)])
def test_signal_ends_the_run_killed(tmp_path: Path, signum: int, code: int) -> None:
    proc = subprocess.Popen([*TRAIN, f"mlruns_dir={tmp_path / 'mlruns'}", "data=digits", "num_epochs=100000"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=clean_env())
    db = tmp_path / "mlruns" / "mlflow.db"
    wait_for_count(db, proc, "SELECT count(*) FROM metrics WHERE key = 'val_acc'", 2, "two epochs logged")
    proc.send_signal(signum)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == code, err
    assert "Traceback" not in err
    assert run_statuses(db) == ["KILLED"]


def test_chapter_switch_and_its_refusals(tmp_path: Path) -> None:
    done = run_train(tmp_path, "data=digits", "num_epochs=2", "data.val_size=0")
    assert done.returncode == 0, done.stderr
    assert "no validation set: epoch 2" in done.stdout + done.stderr
    refused = run_train(tmp_path, "data=digits", "data.val_size=0", "early_stopping_patience=2")
    assert refused.returncode == 2
    assert refused.stderr.strip().splitlines()[-1].endswith("it needs data.val_size > 0")


def test_concurrent_first_runs_on_an_empty_store(tmp_path: Path) -> None:
    """Four runs started together on an empty mlruns/: MLflow's schema set-up used to race (11 of 12
    runs crashed, half-built mlflow.db left), and runs started in the same second shared one Hydra
    run folder."""
    mlruns = tmp_path / "mlruns"
    procs = [subprocess.Popen([*TRAIN, "data=digits", "num_epochs=2", f"seed={s}", f"mlruns_dir={mlruns}"],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=clean_env())
             for s in range(4)]
    outcomes = [(p.wait(timeout=300), p.stderr.read()) for p in procs]
    assert [code for code, _ in outcomes] == [0] * 4, [err[-1500:] for _, err in outcomes]
    assert run_statuses(mlruns / "mlflow.db") == ["FINISHED"] * 4
    folders = list((mlruns / "hydra" / "runs").glob("*/*/.hydra/overrides.yaml"))
    assert sorted(next(line for line in f.read_text().splitlines() if "seed=" in line) for f in folders) == [
        f"- seed={s}" for s in range(4)]
    assert not list(mlruns.glob(".mlflow.db.*.building"))


def test_a_run_killed_with_sigkill_is_marked_killed_by_the_next_start(tmp_path: Path) -> None:
    db = tmp_path / "mlruns" / "mlflow.db"
    proc = subprocess.Popen([*TRAIN, f"mlruns_dir={tmp_path / 'mlruns'}", "data=digits", "num_epochs=100000"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=clean_env())
    wait_for_count(db, proc, "SELECT count(*) FROM metrics WHERE key = 'val_acc'", 2, "two epochs logged")
    proc.kill()
    proc.wait(timeout=60)
    assert run_statuses(db) == ["RUNNING"]
    # the store syncs the disk at checkpoints only (WAL, synchronous=NORMAL): what was committed outlives the process
    with contextlib.closing(sqlite3.connect(db)) as con:
        assert con.execute("SELECT count(*) FROM metrics WHERE key = 'val_acc'").fetchone()[0] >= 2
    done = run_train(tmp_path, "data=digits", "num_epochs=1")
    assert done.returncode == 0, done.stderr
    assert "which died: marked KILLED" in done.stdout + done.stderr
    assert sorted(run_statuses(db)) == ["FINISHED", "KILLED"]

