"""Trials per minute of a `-m sweep=tune` study under Hydra's joblib launcher, n_jobs 2 against 1.

    python benchmarks/async_trials.py [--trials 20] [--repeats 3] [data=digits ...]

Each timed run is `python -m softmax_sweep.train -m sweep=tune hydra/launcher=joblib
hydra.sweeper.n_jobs=K hydra.sweeper.n_trials=20 hydra/sweeper/optuna_pruner=none` on fresh
stores. Both settings train the same 20 trials: before each run they are queued in its study
(Optuna's enqueue_trial), namely the trials that sweep=tune's TPE sampler chose in an untimed
reference run: lr, batch size and 5-30 epochs, so trials differ in length and a batch of two
would wait for its slower trial. Throughput counts trials from the first trial's start to the
last trial's end as Optuna recorded them; the wall time of the command is printed too. The
settings alternate, --repeats times each; the medians count. Target: n_jobs 2 >= 1.5x n_jobs 1.
"""
from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Optional

import optuna

from optuna_pruning.studies import make_storage

STUDY = "tune-digits"


def storage(mlruns: Path):
    return make_storage(f"journal:///{mlruns / 'optuna.journal'}")


def run(n_jobs: int, trials: int, mlruns: Path, queued: Optional[list[dict]], extra: list[str]) -> tuple[float, float]:
    """(trials per minute, wall seconds of the command)."""
    if queued:
        study = optuna.create_study(study_name=STUDY, storage=storage(mlruns), direction="maximize")
        for params in queued:
            study.enqueue_trial(params)
    command = [sys.executable, "-m", "softmax_sweep.train", "-m", "sweep=tune", "data=digits", "hydra/launcher=joblib",
               f"hydra.sweeper.n_jobs={n_jobs}", f"hydra.sweeper.n_trials={trials}",
               "hydra/sweeper/optuna_pruner=none", f"mlruns_dir={mlruns}", *extra]
    start = time.perf_counter()
    subprocess.run(command, check=True, capture_output=True)
    wall = time.perf_counter() - start
    done = optuna.load_study(study_name=STUDY, storage=storage(mlruns)).trials
    first = min(t.datetime_start for t in done)
    last = max(t.datetime_complete for t in done)
    return len(done) / (last - first).total_seconds() * 60, wall


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trials", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("overrides", nargs="*", help="passed on to every run (e.g. data=digits)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        reference = Path(tmp) / "reference"
        run(1, args.trials, reference, None, args.overrides)
        queued = [t.params for t in optuna.load_study(study_name=STUDY, storage=storage(reference)).trials]
        epochs = sorted(p["num_epochs"] for p in queued)
        print(f"{len(queued)} trials from a reference run, epochs {epochs[0]}-{epochs[-1]} "
              f"(median {statistics.median(epochs)}), batch sizes {sorted({p['batch_size'] for p in queued})}")
        rates: dict[int, list[float]] = {1: [], 2: []}
        for repeat in range(args.repeats):
            for n_jobs in (1, 2):
                rate, wall = run(n_jobs, args.trials, Path(tmp) / f"run-{repeat}-{n_jobs}", queued, args.overrides)
                rates[n_jobs].append(rate)
                print(f"n_jobs {n_jobs}, run {repeat + 1}: {rate:6.1f} trials/min ({wall:.1f} s wall)", flush=True)
    one, two = statistics.median(rates[1]), statistics.median(rates[2])
    print(f"median: n_jobs 1 {one:.1f} trials/min, n_jobs 2 {two:.1f} trials/min: {two / one:.2f}x (target 1.5x)")


if __name__ == "__main__":
    start = time.perf_counter()
    main()
    print(f"({time.perf_counter() - start:.0f} s in all)")
