"""Trials per minute with 1 and with 2 trials at a time on one 20-trial digits study.

    python benchmarks/workers.py [--trials 20] [--repeats 5] [--own-trials]
    python benchmarks/workers.py --entry joblib [--repeats 3]

Each timed run is `sweeps/tune.py --workers K --n-trials 20 --pruner none data=digits` (--entry
script: K local worker processes) or `python -m softmax_sweep.train -m sweep=tune data=digits
hydra/launcher=joblib hydra.sweeper.n_jobs=K hydra/sweeper/optuna_pruner=none` (--entry joblib: the
optuna_pruning sweeper keeping K trials in flight under Hydra's joblib launcher), on fresh
default stores (a journal file for Optuna, SQLite for MLflow). The trials differ in length (5 to
30 epochs, batch sizes 16 to 256): a sweeper that launched batches of K would wait for the
slowest trial of each. The runs compare like with like:
before each, the same 20 trials are queued in its study (Optuna's enqueue_trial), namely the
trials that sweep=tune's TPE sampler chose in an untimed reference run; the workers take them
from the queue. (Left to sample on their own, the workers of a 2-worker run draw other
parameters than a single worker, since each worker's sampler gets its own seed, and a run that
happens to draw more epochs or smaller batches looks slower: --own-trials measures that way.)

Throughput counts trials from the first trial's start to the last trial's end as Optuna
recorded them, process start-up excluded: the launcher's worker processes start with the first
launch, inside its trials, so every run begins with WARM_UP queued warm-up trials (one per
worker) and counts from the end of the last of them (a trial that started before counts with
the share of its time after). The wall time of the whole command, start-ups and warm-ups
included, is printed too.
Each setting runs --repeats times, alternating; the median counts. Targets on this 2-core
machine: 2 workers >= 1.6x the trials per minute of 1; n_jobs 2 >= 1.5x n_jobs 1 under joblib.
"""
from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Optional

import optuna
import published

from optuna_pruning.storages import make_storage

ROOT = Path(__file__).resolve().parents[1]
STUDY = "tune-digits"
WARM_UP = [{"lr": 0.1, "batch_size": 256, "num_epochs": 5}] * 2


def storage(mlruns: Path):
    return make_storage(f"journal:///{mlruns / 'optuna.journal'}")


def command(entry: str, k: int, trials: int, mlruns: Path) -> list[str]:
    if entry == "joblib":
        return [sys.executable, "-m", "softmax_sweep.train", "-m", "sweep=tune", "data=digits", "hydra/launcher=joblib",
                f"hydra.sweeper.n_jobs={k}", f"hydra.sweeper.n_trials={trials}", "hydra/sweeper/optuna_pruner=none",
                f"mlruns_dir={mlruns}"]
    return [sys.executable, str(ROOT / "sweeps" / "tune.py"), "--workers", str(k), "--n-trials", str(trials),
            "--pruner", "none", "data=digits", f"mlruns_dir={mlruns}"]


def run(entry: str, workers: int, trials: int, mlruns: Path, queued: Optional[list[dict]],
        warm_up: Sequence[dict] = WARM_UP) -> tuple[float, float]:
    """(trials per minute after the warm-up trials, wall seconds of the command)."""
    study = optuna.create_study(study_name=STUDY, storage=storage(mlruns), direction="minimize")  # val_loss
    for params in [*warm_up, *(queued or [])]:
        study.enqueue_trial(params)
    start = time.perf_counter()
    subprocess.run(command(entry, workers, trials + len(warm_up), mlruns), check=True, capture_output=True)
    wall = time.perf_counter() - start
    trials = optuna.load_study(study_name=STUDY, storage=storage(mlruns)).trials
    # from the moment every worker has finished its warm-up; a trial that started before counts
    # with the share of its time that falls after
    first = max((t.datetime_complete for t in trials[:len(warm_up)]), default=trials[0].datetime_start)
    last = max(t.datetime_complete for t in trials)
    counted = sum(min(1.0, (t.datetime_complete - first) / (t.datetime_complete - t.datetime_start))
                  for t in trials[len(warm_up):])
    return counted / (last - first).total_seconds() * 60, wall


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trials", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--entry", choices=("script", "joblib"), default="script")
    parser.add_argument("--own-trials", action="store_true",
                        help="no queue: every run's workers sample their own trials")
    args = parser.parse_args()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    results: dict[int, list[tuple[float, float]]] = {1: [], 2: []}
    with tempfile.TemporaryDirectory() as tmp:
        queued = None
        if not args.own_trials:
            reference = Path(tmp) / "reference"
            run(args.entry, 1, args.trials, reference, None, warm_up=())
            queued = [t.params for t in optuna.load_study(study_name=STUDY, storage=storage(reference)).trials]
            print(f"queued in every run: {len(WARM_UP)} warm-up trials (not counted), then the {len(queued)} trials "
                  f"of a reference run of sweep=tune (TPE, seed 0)")
        for repeat in range(args.repeats):
            for k in (1, 2):
                results[k].append(run(args.entry, k, args.trials, Path(tmp) / f"{k}-{repeat}", queued))
                print(f"{k} at a time, run {repeat + 1}: {results[k][-1][0]:.1f} trials/min", flush=True)
    rate = {k: statistics.median(r[0] for r in runs) for k, runs in results.items()}
    wall = {k: statistics.median(r[1] for r in runs) for k, runs in results.items()}
    for k in (1, 2):
        shown = " ".join(f"{r[0]:.0f}" for r in results[k])
        label = f"{k} worker{'s' if k > 1 else ' '}" if args.entry == "script" else f"n_jobs {k}"
        print(f"{label}: {rate[k]:6.1f} trials/min (runs: {shown}); command wall {wall[k]:.1f} s")
    target = 1.6 if args.entry == "script" else 1.5
    print(f"speed-up: {rate[2] / rate[1]:.2f}x (target >= {target}x); whole commands: {wall[1] / wall[2]:.2f}x")


if __name__ == "__main__":
    published.run(main)
