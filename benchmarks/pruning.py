"""What per-epoch pruning saves, and what it throws away, on real Fashion-MNIST: `sweep=tune`
studies with pruners against the same study without one (same sampler and seed).

    python benchmarks/pruning.py [--trials 30] [--pruners median_warmup median_early] [-- OVERRIDE ...]

A pruner is a name of conf/hydra/sweeper/optuna_pruner/ or of the plugin's pruners, optionally
with settings: `median:n_warmup_steps=5,n_startup_trials=5`. Then, untimed, every pruned trial is
trained to its end with the same values and seed, to count how many would have beaten that study's
best trial or the median of its complete trials had they run on (false prunes). Targets: a pruned
study trains at most 60% of the epochs, its best trial's test accuracy (at its best validation
epoch) is within 0.3 points of the unpruned study's, and no pruned trial would have become the best.
"""
from __future__ import annotations

import argparse
import logging
import statistics
import tempfile
import time
from pathlib import Path

import optuna
import published
from mlflow.tracking import MlflowClient
from optuna.trial import TrialState

from optuna_pruning.storages import make_storage
from softmax_sweep.config import CONF_DIR, to_settings
from softmax_sweep.data import load_dataset
from softmax_sweep.experiment import train_softmax
from softmax_sweep.sweeping import script


def run(mlruns: Path, pruner: str, trials: int, overrides: list[str]) -> dict:
    name, _, settings = pruner.partition(":")
    pruner_overrides = [f"hydra.sweeper.optuna_pruner.{s}" for s in settings.split(",") if s]
    start = time.perf_counter()
    script.main("tune", "", ["--n-trials", str(trials), "--workers", "1", "--pruner", name, f"mlruns_dir={mlruns}",
                             "hydra/job_logging=disabled", "hydra/hydra_logging=disabled",  # its lines: not results
                             *overrides, *pruner_overrides])
    seconds = time.perf_counter() - start
    study = optuna.load_study(study_name="tune-fashion_mnist",
                              storage=make_storage(f"journal:///{mlruns / 'optuna.journal'}"))
    client = MlflowClient(f"sqlite:///{mlruns / 'mlflow.db'}")
    metric = study.metric_names[0]
    epochs = sum(len(client.get_metric_history(t.user_attrs["mlflow_run_id"], metric)) for t in study.trials)
    best = study.best_trial
    test = client.get_run(best.user_attrs["mlflow_run_id"]).data.metrics["test_acc_at_best_epoch"]
    return {"trials": study.get_trials(), "epochs": epochs, "best": best.value, "test": test, "seconds": seconds,
            "maximize": study.direction == optuna.study.StudyDirection.MAXIMIZE, "metric": metric}


def finish_pruned(trials: list[optuna.trial.FrozenTrial], metric: str, overrides: list[str]) -> list[tuple[int, float]]:
    """(trial number, best value had it run to its end) of every pruned trial."""
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        settings = to_settings(compose(config_name="train", overrides=["sweep=tune", *overrides]))
    data = load_dataset(settings.data.name, settings.data.root, settings.data.url)
    finished = []
    for trial in trials:
        if trial.state != TrialState.PRUNED:
            continue
        p = trial.params
        _, result = train_softmax(data, lr=p["lr"], batch_size=p["batch_size"], num_epochs=p["num_epochs"],
                                  val_size=settings.data.val_size, seed=settings.seed, monitor=metric)
        finished.append((trial.number, result.best[metric]))
    return finished


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trials", type=int, default=30)
    parser.add_argument("--pruners", nargs="+", default=["median_warmup", "median_early"], metavar="PRUNER",
                        help="sweep=tune's own (median_warmup) and the one judging from the first epoch on")
    parser.add_argument("--baseline", nargs=3, type=float, metavar=("EPOCHS", "BEST", "TEST"),
                        help="the unpruned study's figures from an earlier run, instead of running it again")
    parser.add_argument("overrides", nargs="*", help="Hydra overrides for every study (after --)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    with tempfile.TemporaryDirectory() as tmp:
        if args.baseline:
            full = dict(zip(("epochs", "best", "test"), args.baseline), seconds=float("nan"), metric="(given)")
        else:
            full = run(Path(tmp) / "none", "none", args.trials, args.overrides)
        metric = full["metric"]
        print(f"without pruning: {full['epochs']:.0f} epochs, best {metric} {full['best']:.4f}, test_acc there "
              f"{full['test']:.4f}, {full['seconds']:.0f} s", flush=True)
        for i, pruner in enumerate(args.pruners):
            pruned = run(Path(tmp) / f"pruned{i}", pruner, args.trials, args.overrides)
            trials, metric = pruned["trials"], pruned["metric"]
            better = (lambda a, b: a > b) if pruned["maximize"] else (lambda a, b: a < b)
            complete = [t.value for t in trials if t.state == TrialState.COMPLETE]
            median = statistics.median(complete)
            finished = finish_pruned(trials, metric, args.overrides)
            above_best = [(n, round(v, 4)) for n, v in finished if better(v, pruned["best"])]
            above_median = [n for n, v in finished if better(v, median)]
            print(f"{pruner}: {pruned['epochs']} epochs ({100 * pruned['epochs'] / full['epochs']:.0f}%, target "
                  f"<= 60%), best {metric} {pruned['best']:.4f}, test_acc there {pruned['test']:.4f} "
                  f"({100 * (pruned['test'] - full['test']):+.2f} points, target within 0.3), "
                  f"{len(finished)} of {args.trials} trials pruned, {pruned['seconds']:.0f} s; run to their end, "
                  f"{len(above_best)} pruned trials would have become the best (target 0)"
                  + (f" {above_best}" if above_best else "")
                  + f", {len(above_median)} would have beaten the median of the complete trials ({median:.4f}): "
                  f"false-prune rate {len(above_median) / max(len(finished), 1):.0%}", flush=True)


if __name__ == "__main__":
    published.run(main)
