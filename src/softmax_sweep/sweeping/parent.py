"""The MLflow parent run of a sweep: one per study, reopened when the study is resumed."""
from __future__ import annotations

import json
import logging
import math
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import optuna
from mlflow.exceptions import MlflowException
from optuna.trial import TrialState

from softmax_sweep.config import TrainConfig
from softmax_sweep.errors import UserError
from softmax_sweep.sweeping.recovery import StaleTrialHandler
from softmax_sweep.sweeping.report import Curves, write_report
from softmax_sweep.sweeping.search_space import SearchSpace, bound_warnings
from softmax_sweep.sweeping.study import count_trials, make_pruner, make_sampler, make_storage, open_study
from softmax_sweep.tracking import RunLogger, Tracker, mask_password

log = logging.getLogger("softmax_sweep.sweep")
PARENT_ATTR = "mlflow_parent_run_id"


@dataclass
class OpenSweep:
    study: optuna.Study
    storage: Any
    parent: RunLogger
    n_trials: int  # at most the grid's size with the grid sampler


def open_sweep(settings: TrainConfig, space: SearchSpace, storage_url: str, study_name: str, direction: str,
               sampler: Any, pruner: Any, n_trials: int, heartbeat_interval: Optional[int] = None,
               grace_period: Optional[int] = None) -> OpenSweep:
    """Create or resume the study and open its MLflow parent run, as the Hydra sweeper and the
    study scripts both do; a trial whose worker died gets its MLflow run closed in the same store."""
    from softmax_sweep.experiment import tracker_for

    if settings.data.val_size == 0:
        raise UserError("a sweep picks hyperparameters by validation accuracy: data.val_size must be at least 1")
    on_stale = StaleTrialHandler()
    storage = make_storage(storage_url, heartbeat_interval, grace_period, on_stale)
    study = open_study(storage, study_name, direction, make_sampler(sampler, space), make_pruner(pruner))
    if isinstance(study.sampler, optuna.samplers.GridSampler):
        n_trials = min(n_trials, space.grid_size())
    tracker = tracker_for(settings)
    on_stale.client = tracker.client
    return OpenSweep(study, storage, open_parent_run(tracker, study, storage_url), n_trials)


def open_parent_run(tracker: Tracker, study: optuna.Study, storage_url: str) -> RunLogger:
    """The study's parent run in this tracking store: the one recorded in the study's user
    attributes (set RUNNING again), or a new one."""
    run_id = study.user_attrs.get(PARENT_ATTR)
    if run_id:
        try:
            run = tracker.client.get_run(run_id)
            if run.info.experiment_id == tracker.experiment_id and run.info.lifecycle_stage == "active":
                tracker.client.update_run(run_id, status="RUNNING")
                return RunLogger(tracker.client, run_id)
        except MlflowException:
            pass  # recorded in another tracking store, or deleted: start a new one here
    parent = tracker.start_run(run_name=f"study-{study.study_name}", tags={
        "optuna.study_name": study.study_name,
        "optuna.storage": mask_password(storage_url),
        "sweep.kind": "optuna",
    })
    study.set_user_attr(PARENT_ATTR, parent.run_id)
    return parent


def finish_sweep(parent: RunLogger, study: optuna.Study, space: SearchSpace, rerun_hint: str,
                 status: str = "FINISHED", reason: Optional[str] = None, metric: str = "val_acc") -> list[str]:
    """Log best params and value, the sweep report and trials.csv to the parent run, end it, and
    return the lines to print for the user.

    rerun_hint: the command that ran the sweep, with `{study}` where a new study name goes (a
    widened range is worth a fresh study: this one has its n_trials already)."""
    counts = count_trials(study)
    lines = [f"study {study.study_name}: {counts['COMPLETE']} complete, {counts['PRUNED']} pruned, "
             f"{counts['FAIL']} failed trials"]
    best = _best_trial(study)
    if best is not None:
        finished = counts["COMPLETE"] + counts["PRUNED"] + counts["FAIL"]
        parent.log_metrics({"best_value": best.value, "best_trial_number": best.number}, step=finished)
        parent.set_tags({**{f"best.{k}": v for k, v in best.params.items()},
                         "best.mlflow_run_id": best.user_attrs.get("mlflow_run_id", "")})
        shown = ", ".join(f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}" for k, v in best.params.items())
        lines.append(f"best value {best.value:.4f} (trial {best.number}, MLflow run "
                     f"{best.user_attrs.get('mlflow_run_id', '?')}): {shown}")
        lines += seed_comparison(study, best)
        for message, override in bound_warnings(space, best.params):
            command = rerun_hint.format(study=f"{study.study_name}-wider")
            lines.append(f"{message}; widen the range: {command} {override}")
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        write_report(study, space, folder, *_from_mlflow(parent, study, metric), metric=metric)
        if best is not None:
            (folder / "best.json").write_text(json.dumps(
                {"value": best.value, "trial_number": best.number, "params": best.params}, indent=2))
        parent.log_artifacts(folder)
    parent.end(status, reason)
    return lines


def end_stopped_sweep(parent: RunLogger, study: optuna.Study, space: SearchSpace, rerun_hint: str,
                      error: BaseException, metric: str) -> None:
    """finish_sweep for a sweep that stopped on `error`: KILLED on Ctrl-C/SIGTERM, else FAILED."""
    interrupted = isinstance(error, KeyboardInterrupt)
    finish_sweep(parent, study, space, rerun_hint, "KILLED" if interrupted else "FAILED",
                 "interrupted" if interrupted else str(error), metric=metric)


def _from_mlflow(parent: RunLogger, study: optuna.Study, metric: str) -> tuple[Curves, dict[int, float]]:
    """Each trial's validation curve and last-epoch train - val accuracy gap, from its run."""
    curves, gaps = {}, {}
    for trial in study.get_trials(deepcopy=False):
        run_id = trial.user_attrs.get("mlflow_run_id")
        if not run_id:
            continue
        try:
            history = parent.client.get_metric_history(run_id, metric)
            last = parent.client.get_run(run_id).data.metrics
        except MlflowException:
            continue  # a run in another tracking store
        curves[trial.number] = sorted((m.step, m.value) for m in history)
        gap = last.get("train_acc", math.nan) - last.get("val_acc", math.nan)
        if math.isfinite(gap):
            gaps[trial.number] = gap
    return curves, gaps


def seed_comparison(study: optuna.Study, best: optuna.trial.FrozenTrial) -> list[str]:
    """With seeds: the best configuration's mean and confidence interval, and whether it is really
    better than the runner-up (a paired t-test over the same seeds)."""
    from softmax_sweep.stats import mean_ci, paired_p_value

    if "seed_values" not in best.user_attrs:
        return []
    values = best.user_attrs["seed_values"]
    mean, half = mean_ci(values)
    line = f"best trial {best.number}: {mean:.4f} +- {half:.4f} (95% CI over {len(values)} seeds)"
    rivals = [t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
              if t.number != best.number and len(t.user_attrs.get("seed_values", ())) == len(values)]
    if not rivals:
        return [line]
    runner_up = max(rivals, key=lambda t: t.value) if study.direction.name == "MAXIMIZE" else \
        min(rivals, key=lambda t: t.value)
    other = runner_up.user_attrs["seed_values"]
    other_mean, other_half = mean_ci(other)
    p = paired_p_value(values, other)
    verdict = "significantly better" if p < 0.05 else "not significantly better"
    return [f"{line}; runner-up trial {runner_up.number}: {other_mean:.4f} +- {other_half:.4f}; "
            f"paired t-test over seeds p = {p:.3g}: the best is {verdict} (at 0.05)"]


def _best_trial(study: optuna.Study) -> Optional[optuna.trial.FrozenTrial]:
    try:
        return study.best_trial
    except ValueError:
        return None  # no complete trial yet
