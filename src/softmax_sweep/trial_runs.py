"""One Optuna trial as one MLflow child run, reporting val_acc every epoch so it can be pruned."""
from __future__ import annotations

import contextlib
import functools
import math
from collections.abc import Callable, Iterator, Mapping
from typing import Any, Optional

import optuna
from omegaconf import DictConfig

from hydra_plugins.softmax_sweep_stacked.stack import current as current_stack
from optuna_pruning.workers import worker_name
from softmax_sweep import interrupts
from softmax_sweep.errors import UserError
from softmax_sweep.runlog import RunLogger


class EpochPruned(optuna.TrialPruned):
    """Pruned after an epoch; the MLflow run ends FINISHED with the epochs it ran."""

    mlflow_status = "FINISHED"

    def __init__(self, epoch: int, value: float) -> None:
        super().__init__(f"pruned at epoch {epoch} (val metric {value:.4f})")
        self.epoch, self.value = epoch, value

    def __reduce__(self):  # pickled with its constructor's arguments: job results cross processes
        return type(self), (self.epoch, self.value)


class EndedBySweep(UserError):
    """The sweep finished this trial while its job still trained (the sweep was interrupted, or
    killed and its worker stopped): the job's run ends KILLED, as the sweep's own run does."""
    mlflow_status = "KILLED"


class PruningReporter:
    """Training callback: report the monitored metric to the trial each epoch; prune if told."""

    def __init__(self, trial: optuna.Trial, monitor: str) -> None:
        self.trial = trial
        self.monitor = monitor

    def on_epoch_end(self, epoch: int, metrics: dict[str, float]) -> None:
        # Also without a pruner: optuna-dashboard draws the values (0.6 ms a report on the journal
        # storage, against 150 ms or more for an epoch).
        value = metrics[self.monitor]
        if not math.isfinite(value):
            return  # (a non-finite loss: the loop raises TrainingDiverged right after)
        # Ctrl-C waits for the storage write: raised inside the journal file's lock it left the lock
        # half released (FileNotFoundError on its rename file, seen under load)
        with interrupts.deferred():
            try:
                self.trial.report(value, epoch)
            except RuntimeError as e:  # a job of a pool whose sweep was interrupted and failed the trial
                if "has already finished" not in str(e):
                    raise
                raise EndedBySweep("the sweep ended this trial before its job did (interrupted or stopped)") from None
            prune = self.trial.should_prune()
        if prune:
            raise EpochPruned(epoch, value)


def trial_run_name(number: int, params: Mapping[str, Any], state: str = "") -> str:
    """`#7 lr=0.3 bs=64 ep=20`, `#8 (pruned) lr=...`: what tells a study's trials apart, short
    enough for the runs table (a study's view shows its own runs; the study is the run's tag)."""
    from softmax_sweep.experiment import run_label

    marker = f" ({state.lower()})" if state else ""
    return f"#{number}{marker} {run_label(params)}".rstrip()


def trial_state(error: Optional[BaseException]) -> str:
    if error is None:
        return "COMPLETE"
    return "PRUNED" if isinstance(error, optuna.TrialPruned) else "FAIL"


def run_trial(cfg: DictConfig | Mapping[str, Any], trial: optuna.Trial, study_name: str,
              parent_run_id: Optional[str], seeds: int = 1) -> float:
    """Train cfg as `trial`; the MLflow child run is tagged with the trial and its final state.

    With seeds > 1 the configuration is trained with seeds seed, seed + 1, ...: the trial's run
    holds one nested run per seed and the mean and 95% confidence interval of the seeds' results,
    and the trial's value is the seeds' mean. Pruning watches the first seed's epochs."""
    from softmax_sweep.experiment import train

    reporter = PruningReporter(trial, cfg["optimized_metric"])

    def on_start(run: RunLogger) -> None:
        trial.set_user_attr("mlflow_run_id", run.run_id)  # so a dead worker's run can be closed
        trial.set_user_attr("worker", worker_name())  # so a later start can tell the worker died

    name = trial_run_name(trial.number, trial.params)

    def on_end(run: RunLogger, error: Optional[BaseException]) -> None:
        state = trial_state(error)
        run.set_tags({"optuna.state": state})
        if state == "PRUNED":  # MLflow has no such status: the name shows it in the runs table
            run.set_tags({"mlflow.runName": trial_run_name(trial.number, trial.params, state)})
        if error is not None and not isinstance(error, optuna.TrialPruned):
            with contextlib.suppress(RuntimeError):  # the sweep, interrupted too, may have failed it first
                trial.set_user_attr("fail_reason", str(error) or type(error).__name__)

    tags = {"optuna.study_name": study_name, "optuna.trial_number": str(trial.number), "worker": worker_name()}
    if parent_run_id:
        tags["mlflow.parentRunId"] = parent_run_id
    if seeds == 1:
        summary = train(cfg, callbacks=[reporter], run_name=name, tags=tags, params=trial.params,
                        on_run_start=on_start, on_run_end=on_end, in_sweep=True)
        return summary[reporter.monitor]
    return _run_seeds(cfg, trial, reporter, seeds, tags, on_start, on_end, name)


def _run_seeds(cfg, trial: optuna.Trial, reporter: PruningReporter, seeds: int, tags: dict[str, str],
               on_start, on_end, name: str) -> float:
    from omegaconf import OmegaConf

    from softmax_sweep.config import to_settings
    from softmax_sweep.curves import log_curves
    from softmax_sweep.experiment import tracker_for, train
    from softmax_sweep.stats import mean_ci

    settings = to_settings(cfg)
    first = settings.seed
    with tracker_for(settings).run(name, {**tags, "seeds": str(seeds)}, on_end=on_end) as group:
        on_start(group)
        group.log_params({**trial.params, "seeds": seeds, "seed": first})
        results: dict[str, list[float]] = {reporter.monitor: [], "test_acc_at_best_epoch": []}
        run_ids, histories = [], []

        def train_seed(seed: int) -> dict[str, Any]:
            seed_cfg = OmegaConf.create(OmegaConf.to_container(cfg) if isinstance(cfg, DictConfig) else dict(cfg))
            seed_cfg.seed = seed
            return train(seed_cfg, callbacks=[reporter] if seed == first else [], run_name=f"{name} seed={seed}",
                         tags={**tags, "mlflow.parentRunId": group.run_id, "seed": str(seed)}, in_sweep=True,
                         plots=False)

        for summary in _seed_summaries(train_seed, range(first, first + seeds), trial):
            run_ids.append(summary["run_id"])
            histories.append(summary["history"])
            trial.set_user_attr("seed_run_ids", run_ids)
            for key, values in results.items():
                values.append(summary[key])
        trial.set_user_attr("seed_values", results[reporter.monitor])
        group.set_tags({"seed_values": " ".join(f"{v:.4f}" for v in results[reporter.monitor])})
        metrics = {"seeds": seeds}
        for key, values in results.items():
            metric = f"best_{key}" if key.startswith("val_") else key
            mean, half = mean_ci(values)
            metrics.update({metric: mean, f"{metric}_ci95": half})
        group.log_metrics(metrics)
        mean_curves = []
        for epoch in range(1, max(map(len, histories)) + 1):  # the seeds' mean curves (early stopping: fewer)
            at = [h[epoch - 1] for h in histories if len(h) >= epoch]
            mean_curves.append({k: sum(m[k] for m in at) / len(at) for k in at[0] if k != "epoch_seconds"})
            group.log_metrics(mean_curves[-1], step=epoch)
        log_curves(group, mean_curves, f"{name}: mean of {seeds} seeds")
    return sum(results[reporter.monitor]) / seeds


def _seed_summaries(train_seed: Callable[[int], dict[str, Any]], seeds: range, trial: optuna.Trial
                    ) -> Iterator[dict[str, Any]]:
    """Each seed's run summary, in seed order. In a stacked launch, where the trial cannot be
    pruned (a pruned first seed ends the trial before the others start), the seeds train at once:
    each with its own minibatches, beside the other trials' models; the first failed seed fails the
    trial once all have ended. Otherwise one after another."""
    stack = current_stack()
    if stack is None or not isinstance(trial.study.pruner, optuna.pruners.NopPruner):
        yield from map(train_seed, seeds)
        return
    for summary, error in stack.fork([functools.partial(train_seed, seed) for seed in seeds]):
        if error is not None:
            raise error
        yield summary
