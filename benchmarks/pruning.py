"""What per-epoch pruning saves, and what it throws away, on real Fashion-MNIST: a `sweep=tune`
study with the sweep's pruner against the same study without one (same sampler and seed).

    python benchmarks/pruning.py [--trials 30] [--pruner median]

Then, untimed, every pruned trial is trained to its end with the same values and seed, to count
how many would have beaten the pruned study's best trial or the median of its complete trials had
they run on (false prunes). Targets: the pruned study trains at most 60% of the epochs, its best
trial's test accuracy (at its best validation epoch) is within 0.3 points of the unpruned study's,
and no pruned trial would have become the best.
"""
from __future__ import annotations

import argparse
import logging
import statistics
import tempfile
import time
from pathlib import Path

import optuna
from mlflow.tracking import MlflowClient
from optuna.trial import TrialState

from optuna_pruning.studies import make_storage
from softmax_sweep.data import load_dataset
from softmax_sweep.experiment import train_softmax
from softmax_sweep.sweeping.script import build_parser, run_study


def run(mlruns: Path, pruner: str, trials: int) -> dict:
    args = build_parser("tune", "").parse_intermixed_args(
        ["--n-trials", str(trials), "--pruner", pruner, f"mlruns_dir={mlruns}"])
    start = time.perf_counter()
    run_study("tune", args)
    seconds = time.perf_counter() - start
    study = optuna.load_study(study_name="tune-fashion_mnist",
                              storage=make_storage(f"journal:///{mlruns / 'optuna.journal'}"))
    client = MlflowClient(f"sqlite:///{mlruns / 'mlflow.db'}")
    epochs = sum(len(client.get_metric_history(t.user_attrs["mlflow_run_id"], "val_acc")) for t in study.trials)
    best = study.best_trial
    test = client.get_run(best.user_attrs["mlflow_run_id"]).data.metrics["test_acc_at_best_epoch"]
    return {"study": study, "epochs": epochs, "best": best.value, "test": test, "seconds": seconds}


def finish_pruned(trials: list[optuna.trial.FrozenTrial]) -> list[tuple[int, float]]:
    """(trial number, best val_acc had it run to its end) of every pruned trial."""
    data = load_dataset("fashion_mnist")
    finished = []
    for trial in trials:
        if trial.state != TrialState.PRUNED:
            continue
        p = trial.params
        _, result = train_softmax(data, lr=p["lr"], batch_size=p["batch_size"], num_epochs=p["num_epochs"],
                                  val_size=5000, seed=0)
        finished.append((trial.number, result.best["val_acc"]))
    return finished


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trials", type=int, default=30)
    parser.add_argument("--pruner", default="median", choices=("median", "hyperband"))
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    with tempfile.TemporaryDirectory() as tmp:
        full = run(Path(tmp) / "none", "none", args.trials)
        pruned = run(Path(tmp) / "pruned", args.pruner, args.trials)
        trials = pruned["study"].get_trials()  # read while the study's storage is there
    complete = [t.value for t in trials if t.state == TrialState.COMPLETE]
    median = statistics.median(complete)
    print(f"without pruning: {full['epochs']} epochs, best val_acc {full['best']:.4f}, test_acc there "
          f"{full['test']:.4f}, {full['seconds']:.0f} s")
    print(f"{args.pruner} pruner: {pruned['epochs']} epochs, best val_acc {pruned['best']:.4f}, test_acc there "
          f"{pruned['test']:.4f}, {len(trials) - len(complete)} of {args.trials} trials pruned, "
          f"{pruned['seconds']:.0f} s")
    print(f"epochs trained: {100 * pruned['epochs'] / full['epochs']:.0f}% (target <= 60%); best test_acc "
          f"difference: {100 * (pruned['test'] - full['test']):+.2f} points (target within 0.3)", flush=True)
    finished = finish_pruned(trials)
    above_best = [(n, v) for n, v in finished if v > pruned["best"]]
    above_median = [(n, v) for n, v in finished if v > median]
    print(f"pruned trials run to their end: {len(above_best)} would have become the best (target 0)"
          + (f" {above_best}" if above_best else "")
          + f", {len(above_median)} would have beaten the median of the complete trials ({median:.4f})"
          + f": false-prune rate {len(above_median) / max(len(finished), 1):.0%}")


if __name__ == "__main__":
    main()
