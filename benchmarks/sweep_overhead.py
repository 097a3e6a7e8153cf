"""Orchestration overhead of a sweep: wall time against the trials' own training time.

    python benchmarks/sweep_overhead.py [--trials 20] [--epochs 5]

A 20-trial random-sampler study (lr on a log interval; batch 256 and 5 epochs fixed; no pruning)
on Fashion-MNIST-shaped IDX files it generates (60,000 / 10,000 examples).

Training time is the sum over all trials of their epochs (`epoch_seconds` as logged in MLflow:
one pass of SGD plus validation and test evaluation). Overhead = wall / training - 1; target
<= 25%. Three walls are reported:
  study, warm store: `run_study` in this process (the body of `sweeps/tune.py`) on an MLflow
      store that already exists, as for every sweep after the first. Covers loading the data
      set (once), opening the study and the parent run, every trial, and the sweep report.
  study, new store: the same on fresh stores (MLflow's first database creation included).
  multirun command: `python -m softmax_sweep.train -m sweep=tune ...` as a child process,
      interpreter start-up and imports included.
"""
from __future__ import annotations

import argparse
import logging
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from mlflow.tracking import MlflowClient

from softmax_sweep.data import _load_dataset
from softmax_sweep.experiment import open_tracker
from softmax_sweep.sweeping.script import build_parser, run_study
from softmax_sweep.synthetic import write_synthetic_idx

ROOT = Path(__file__).resolve().parents[1]


def training_seconds(mlruns: Path) -> tuple[float, int]:
    client = MlflowClient(f"sqlite:///{mlruns / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("softmax-sweep")
    runs = client.search_runs([experiment.experiment_id], filter_string="tags.`optuna.trial_number` != ''",
                              max_results=10000)
    total = sum(m.value for run in runs for m in client.get_metric_history(run.info.run_id, "epoch_seconds"))
    return total, len(runs)


def overrides(folder: Path, mlruns: Path, epochs: int) -> list[str]:
    return ["data=idx", f"data.root={folder}", f"num_epochs={epochs}", "batch_size=256",
            f"mlruns_dir={mlruns}", "lr=tag(log, interval(0.01, 1.0))"]


def in_process(folder: Path, mlruns: Path, trials: int, epochs: int, warm: bool) -> float:
    _load_dataset.cache_clear()  # each measured sweep loads the data set once itself
    if warm:
        open_tracker(f"sqlite:///{mlruns / 'mlflow.db'}", "softmax-sweep", str(mlruns))
    args = build_parser("tune", "").parse_intermixed_args(
        ["--n-trials", str(trials), "--sampler", "random", "--pruner", "none",
         "--study-name", f"bench-{mlruns.name}", *overrides(folder, mlruns, epochs)])
    start = time.perf_counter()
    run_study("tune", args)
    return time.perf_counter() - start


def multirun_command(folder: Path, mlruns: Path, trials: int, epochs: int) -> float:
    command = [sys.executable, "-m", "softmax_sweep.train", "-m", "sweep=tune",
               f"hydra.sweeper.n_trials={trials}", "hydra/sweeper/sampler=random",
               "hydra/sweeper/pruner=none", *overrides(folder, mlruns, epochs)]
    start = time.perf_counter()
    subprocess.run(command, check=True, capture_output=True, cwd=ROOT)
    return time.perf_counter() - start


def report(label: str, wall: float, mlruns: Path, epochs: int) -> None:
    train, n = training_seconds(mlruns)
    print(f"{label:26s} {n} trials x {epochs} epochs: wall {wall:5.1f} s, training {train:4.1f} s, "
          f"overhead {100 * (wall / train - 1):3.0f}% (target <= 25%)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trials", type=int, default=20)
    parser.add_argument("--epochs", type=int, default=5)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "fashion-shaped"
        write_synthetic_idx(folder, n_train=60000, n_test=10000)
        # The multirun command runs first: its child process loads the data set itself.
        mlruns = Path(tmp) / "multirun"
        report("multirun command:", multirun_command(folder, mlruns, args.trials, args.epochs), mlruns, args.epochs)
        mlruns = Path(tmp) / "warm"
        report("study, warm store:", in_process(folder, mlruns, args.trials, args.epochs, warm=True), mlruns,
               args.epochs)
        mlruns = Path(tmp) / "new"
        report("study, new store:", in_process(folder, mlruns, args.trials, args.epochs, warm=False), mlruns,
               args.epochs)


if __name__ == "__main__":
    main()
