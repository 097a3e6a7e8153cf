"""Trials per minute with 1 and with 2 local workers on one 20-trial digits study.

    python benchmarks/workers.py [--trials 20] [--epochs 0] [--repeats 3]

Each run is `sweeps/tune.py --workers K --n-trials 20 --pruner none data=digits` (sweep=tune's
search space; --epochs N fixes num_epochs=N instead) on fresh default stores (a journal file for
Optuna, SQLite for MLflow). Throughput counts trials from the first trial's start to the last
trial's end as Optuna recorded them (process start-up excluded); the wall time of the whole
command is printed too. Each setting runs --repeats times; the median counts. Target: 2 workers
>= 1.6x the trials per minute of 1 on this 2-core machine.
"""
from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import optuna

from softmax_sweep.sweeping.study import make_storage

ROOT = Path(__file__).resolve().parents[1]


def run(workers: int, trials: int, epochs: int, mlruns: Path) -> tuple[float, float]:
    """(trials per minute, wall seconds of the command)."""
    start = time.perf_counter()
    epochs_override = [f"num_epochs={epochs}"] if epochs else []
    subprocess.run([sys.executable, str(ROOT / "sweeps" / "tune.py"), "--workers", str(workers), "--n-trials",
                    str(trials), "--pruner", "none", "data=digits", *epochs_override, f"mlruns_dir={mlruns}"],
                   check=True, capture_output=True)
    wall = time.perf_counter() - start
    study = optuna.load_study(study_name="tune-digits", storage=make_storage(f"journal:///{mlruns / 'optuna.journal'}"))
    first = min(t.datetime_start for t in study.trials)
    last = max(t.datetime_complete for t in study.trials)
    return len(study.trials) / (last - first).total_seconds() * 60, wall


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trials", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=0,
                        help="fixed epochs per trial (a digits epoch takes milliseconds); 0: sweep=tune's range")
    args = parser.parse_args()
    results = {1: [], 2: []}
    with tempfile.TemporaryDirectory() as tmp:
        for repeat in range(args.repeats):
            for k in (1, 2):
                results[k].append(run(k, args.trials, args.epochs, Path(tmp) / f"{k}-{repeat}"))
    rate = {k: statistics.median(r[0] for r in runs) for k, runs in results.items()}
    wall = {k: statistics.median(r[1] for r in runs) for k, runs in results.items()}
    for k in (1, 2):
        shown = " ".join(f"{r[0]:.0f}" for r in results[k])
        label = f"{k} worker{'s' if k > 1 else ' '}"
        print(f"{label}: {rate[k]:6.1f} trials/min (runs: {shown}); command wall {wall[k]:.1f} s")
    print(f"speed-up: {rate[2] / rate[1]:.2f}x (target >= 1.6x); whole commands: {wall[1] / wall[2]:.2f}x")


if __name__ == "__main__":
    main()
