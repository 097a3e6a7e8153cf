"""Exercise 1 on real Fashion-MNIST: does a `sweep=tune` study find the model's ceiling in a minute?

    python benchmarks/exercise1.py [--seeds 0 1 2] [--entry script multirun] [--write-docs]

For each sampler seed it runs, each in a fresh process on a new store, the study script
`sweeps/tune.py` and the Hydra sweep `python -m softmax_sweep.train -m sweep=tune`, and prints the
wall time of the whole command and the test accuracy at the best validation epoch of the study's
best trial (the trial chosen by the sweep's optimized_metric, val_loss), then what the best trials
share (their lr / batch_size, the step per example). Targets: test accuracy >= 0.843 and <= 60 s
per study. --write-docs: docs/results/exercise1.md, which the README quotes.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Optional

import optuna
import published
from mlflow.tracking import MlflowClient

from optuna_pruning.storages import make_storage

ROOT = Path(__file__).resolve().parents[1]
COMMANDS = {
    "script": [sys.executable, str(ROOT / "sweeps" / "tune.py")],
    "multirun": [sys.executable, "-m", "softmax_sweep.train", "-m", "sweep=tune"],
}


def project_env(root: Path) -> Optional[dict[str, str]]:
    """The environment that runs the copy of the project at root with its own packages first
    (None for this one)."""
    if root == ROOT:
        return None
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(root / "src"), str(root / "sweeper" / "src")])}


def run(entry: str, seed: int, mlruns: Path, extra: list[str], root: Path = ROOT
        ) -> tuple[float, optuna.trial.FrozenTrial, float, dict]:
    """One study's command; root: another copy of the project to run it from."""
    command = list(COMMANDS[entry])
    if entry == "script":
        command[1] = str(root / "sweeps" / "tune.py")
    start = time.perf_counter()
    seeded = f"hydra.sweeper.sampler.seed={seed}"
    done = subprocess.run([*command, f"mlruns_dir={mlruns}", seeded, *extra], capture_output=True, text=True,
                          env=project_env(root))
    wall = time.perf_counter() - start
    if done.returncode:
        raise SystemExit(f"{entry} seed {seed} failed:\n{done.stderr[-3000:]}")
    study = optuna.load_study(study_name="tune-fashion_mnist",
                              storage=make_storage(f"journal:///{mlruns / 'optuna.journal'}"))
    best = study.best_trial
    run_data = MlflowClient(f"sqlite:///{mlruns / 'mlflow.db'}").get_run(best.user_attrs["mlflow_run_id"]).data
    states: dict[str, int] = {}
    for trial in study.trials:
        states[trial.state.name.lower()] = states.get(trial.state.name.lower(), 0) + 1
    return wall, best, run_data.metrics["test_acc_at_best_epoch"], states


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--entry", nargs="+", choices=COMMANDS, default=list(COMMANDS))
    parser.add_argument("--workers", type=int, help="sweeps/tune.py --workers K (default: the sweep's n_jobs, 2)")
    parser.add_argument("--write-docs", action="store_true", help="publish the figures under docs/results/")
    parser.add_argument("overrides", nargs="*", help="passed to both commands (e.g. hydra.sweeper.n_trials=20)")
    args = parser.parse_args()
    with published.recorded("exercise1", args.write_docs):
        measure(args)


def measure(args: argparse.Namespace) -> None:
    bests, accuracies, walls = [], [], []
    print(f"{'command':9s} {'seed':>4s} {'wall s':>7s} {'best':>8s} {'test_acc':>9s}  best trial's values; trials "
          f"(best: the study's best value, val_loss unless optimized_metric says otherwise)")
    for entry in args.entry:
        for seed in args.seeds:
            with tempfile.TemporaryDirectory() as tmp:
                workers = ["--workers", str(args.workers)] if entry == "script" and args.workers else []
                extra = [*args.overrides, *workers]
                wall, best, test_acc, states = run(entry, seed, Path(tmp), extra)
            shown = ", ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in best.params.items())
            print(f"{entry:9s} {seed:>4d} {wall:>7.1f} {best.value:>8.4f} {test_acc:>9.4f}  {shown}; {states}",
                  flush=True)
            bests.append(best)
            accuracies.append(test_acc)
            walls.append(wall)
    steps = sorted(b.params["lr"] / b.params["batch_size"] for b in bests if {"lr", "batch_size"} <= set(b.params))
    print(f"every study: test accuracy {min(accuracies):.4f}-{max(accuracies):.4f} at the best trial's best epoch, "
          f"wall {min(walls):.0f}-{max(walls):.0f} s (targets: >= 0.843, <= 60 s)")
    if steps:
        print(f"the best trials' step per example, lr / batch_size: {steps[0]:.2g} to {steps[-1]:.2g} "
              f"({len(steps)} studies); their epochs: "
              f"{', '.join(str(b.params['num_epochs']) for b in bests if 'num_epochs' in b.params)}")


if __name__ == "__main__":
    main()
