"""Orchestration overhead of a sweep: wall time against the trials' own training time.

    python benchmarks/sweep_overhead.py [--trials 20] [--epochs 5] [--repeats 3]

A 20-trial random-sampler study (lr on a log interval; batch 256 and 5 epochs fixed; no pruning)
on Fashion-MNIST-shaped IDX files it generates (60,000 / 10,000 examples, gzip-compressed).

Training time is the sum over all trials of their epochs (`epoch_seconds` as logged in MLflow:
one pass of SGD plus validation and test evaluation), the baseline of the same run.
Overhead = wall / training - 1; target <= 25%. It is printed per trial in seconds too: the same
seconds weigh more as training gets faster. Each measurement runs in a fresh process:
  study (the target): the body of `sweeps/tune.py --workers 1` (script.main), timed from its call to its
      return in a process that has imported the libraries (as any command has before it starts
      work) and whose MLflow store exists. Covers composing the config, loading the data set
      (once), opening the study and the parent run, every trial, and the sweep report.
  study, new store: the same on a new mlruns folder (MLflow creates its database: ~1.5 s once).
  whole commands: `sweeps/tune.py` and `python -m softmax_sweep.train -m sweep=tune`, timed from
      the outside: interpreter start-up and imports included (printed on their own as well).
The data set's decompressed arrays are cached after the first load (the first measurement pays
for decompressing; its time is printed).
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import published

ROOT = Path(__file__).resolve().parents[1]
IMPORTS = ("import mxnet, mlflow, optuna, matplotlib.pyplot, hydra, softmax_sweep.sweeping.script, "
           "softmax_sweep.sweeping.parent, softmax_sweep.experiment")


def study_runs(mlruns: Path, study: str, which: str):
    """(client, the study's runs matching `which`) from the benchmark's MLflow store."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{mlruns / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("softmax-sweep")
    return client, client.search_runs([experiment.experiment_id], max_results=10000,
                                      filter_string=f"tags.`optuna.study_name` = '{study}' and {which}")


def training_seconds(mlruns: Path, study: str) -> tuple[float, int]:
    client, runs = study_runs(mlruns, study, "tags.`optuna.trial_number` != ''")
    total = sum(m.value for run in runs for m in client.get_metric_history(run.info.run_id, "epoch_seconds"))
    return total, len(runs)


def overrides(folder: Path, mlruns: Path, epochs: int) -> list[str]:
    return ["data=idx", f"data.root={folder}", f"num_epochs={epochs}", "batch_size=256",
            f"mlruns_dir={mlruns}", "lr=tag(log, interval(0.01, 1.0))"]


def study_args(folder: Path, mlruns: Path, trials: int, epochs: int) -> list[str]:
    return ["--n-trials", str(trials), "--sampler", "random", "--pruner", "none", *overrides(folder, mlruns, epochs)]


def measure_study(folder: Path, mlruns: Path, trials: int, epochs: int, warm: bool) -> float:
    """In this (fresh) process: the libraries imported, the store made if warm, then the study timed."""
    exec(IMPORTS)
    from softmax_sweep.experiment import open_tracker
    from softmax_sweep.sweeping import script

    if warm:
        open_tracker(f"sqlite:///{mlruns / 'mlflow.db'}", "softmax-sweep", str(mlruns))
    start = time.perf_counter()
    script.main("tune", "", ["--workers", "1", *study_args(folder, mlruns, trials, epochs)])
    return time.perf_counter() - start


def in_fresh_process(folder: Path, mlruns: Path, trials: int, epochs: int, warm: bool) -> float:
    out = subprocess.run([sys.executable, __file__, "--measure", json.dumps([str(folder), str(mlruns), trials,
                                                                             epochs, warm])],
                         check=True, capture_output=True, text=True, cwd=ROOT)
    return float(out.stdout.strip().splitlines()[-1])


def command_wall(command: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(command, check=True, capture_output=True, cwd=ROOT)
    return time.perf_counter() - start


def parent_seconds(mlruns: Path, study: str) -> float:
    """Start to end of the study's MLflow parent run (opened after the data set is loaded)."""
    _, (parent,) = study_runs(mlruns, study, "tags.`sweep.kind` = 'optuna'")
    return (parent.info.end_time - parent.info.start_time) / 1000


def line(label: str, wall: float, mlruns: Path, epochs: int, study: str = "tune-idx", parent: bool = False) -> float:
    train, n = training_seconds(mlruns, study)
    overhead = 100 * (wall / train - 1)
    inside = ""
    if parent:
        sweep = parent_seconds(mlruns, study)
        inside = f"; parent run {sweep:5.2f} s, overhead {100 * (sweep / train - 1):4.1f}%"
    print(f"  {label:24s} {n} trials x {epochs} epochs: wall {wall:5.2f} s, training {train:5.2f} s, "
          f"overhead {overhead:4.1f}% ({(wall - train) / n:.2f} s per trial){inside}", flush=True)
    return overhead


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trials", type=int, default=20)
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--measure", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure:
        folder, mlruns, trials, epochs, warm = json.loads(args.measure)
        print(measure_study(Path(folder), Path(mlruns), trials, epochs, warm))
        return

    from softmax_sweep.data import load_dataset
    from softmax_sweep.synthetic import write_synthetic_idx

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "fashion-shaped"
        write_synthetic_idx(folder, n_train=60000, n_test=10000)
        start = time.perf_counter()
        load_dataset("idx", str(folder))
        print(f"first load of the data set (decompressing, then cached): {time.perf_counter() - start:.2f} s")
        startup = command_wall([sys.executable, "-c", IMPORTS])
        print(f"interpreter start-up and imports: {startup:.2f} s\n")

        print(f"study (target <= 25%), {args.repeats} runs, each in a fresh process on an existing store:")
        overheads = []
        for repeat in range(args.repeats):
            mlruns = Path(tmp) / f"warm-{repeat}"
            overheads.append(line("study:", in_fresh_process(folder, mlruns, args.trials, args.epochs, True),
                                  mlruns, args.epochs))
        print(f"  median overhead {statistics.median(overheads):.1f}% (target <= 25%)\n")

        print("for comparison:")
        mlruns = Path(tmp) / "new"
        line("study, new store:", in_fresh_process(folder, mlruns, args.trials, args.epochs, False), mlruns,
             args.epochs)
        mlruns = Path(tmp) / "warm-0"
        line("sweeps/tune.py command:", command_wall(
            [sys.executable, "sweeps/tune.py", *study_args(folder, mlruns, args.trials, args.epochs),
             "--study-name", "command"]), mlruns, args.epochs, study="command", parent=True)
        mlruns = Path(tmp) / "multirun"
        line("multirun command:", command_wall(
            [sys.executable, "-m", "softmax_sweep.train", "-m", "sweep=tune", f"hydra.sweeper.n_trials={args.trials}",
             "hydra/sweeper/optuna_sampler=random", "hydra/sweeper/optuna_pruner=none",
             *overrides(folder, mlruns, args.epochs)]),
             mlruns, args.epochs, parent=True)
        print("(the commands include interpreter start-up and imports, the multirun command also a new store; "
              "the parent run lasts from after the data set is loaded to the end of the report, and for the "
              "multirun command includes Hydra's composition of each job's config)")


if __name__ == "__main__":
    published.run(main)
