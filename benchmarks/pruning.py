"""What per-epoch pruning saves: a 30-trial `sweep=tune` study on digits with the median pruner
against the same study without it (same sampler and seed).

    python benchmarks/pruning.py [--trials 30]

Targets: the pruned study trains at most 60% of the epochs, and its best val_acc is within
0.5 points of the unpruned study's.
"""
from __future__ import annotations

import argparse
import logging
import tempfile
import time
from pathlib import Path

import optuna
from mlflow.tracking import MlflowClient

from softmax_sweep.sweeping.script import build_parser, run_study
from softmax_sweep.sweeping.study import make_storage


def run(mlruns: Path, pruner: str, trials: int) -> tuple[int, float, int, float]:
    """(epochs trained, best value, pruned trials, seconds)."""
    args = build_parser("tune", "").parse_intermixed_args(
        ["--n-trials", str(trials), "--pruner", pruner, "data=digits", f"mlruns_dir={mlruns}"])
    start = time.perf_counter()
    run_study("tune", args)
    seconds = time.perf_counter() - start
    study = optuna.load_study(study_name="tune-digits",
                              storage=make_storage(f"journal:///{mlruns / 'optuna.journal'}"))
    client = MlflowClient(f"sqlite:///{mlruns / 'mlflow.db'}")
    epochs = sum(len(client.get_metric_history(t.user_attrs["mlflow_run_id"], "val_acc")) for t in study.trials)
    pruned = sum(t.state == optuna.trial.TrialState.PRUNED for t in study.trials)
    return epochs, study.best_value, pruned, seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trials", type=int, default=30)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    with tempfile.TemporaryDirectory() as tmp:
        full = run(Path(tmp) / "none", "none", args.trials)
        pruned = run(Path(tmp) / "median", "median", args.trials)
    print(f"without pruning: {full[0]} epochs, best val_acc {full[1]:.4f}, {full[3]:.1f} s")
    print(f"median pruner:   {pruned[0]} epochs, best val_acc {pruned[1]:.4f}, {pruned[2]} of {args.trials} "
          f"trials pruned, {pruned[3]:.1f} s")
    print(f"epochs trained: {100 * pruned[0] / full[0]:.0f}% (target <= 60%); best val_acc difference: "
          f"{100 * (pruned[1] - full[1]):+.2f} points (target within 0.5)")


if __name__ == "__main__":
    main()
