"""The MLflow parent run of a sweep: one per study, reopened when the study is resumed."""
from __future__ import annotations

import json
import logging
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import optuna
from mlflow.exceptions import MlflowException

from optuna_pruning.samplers import make_pruner, make_sampler
from optuna_pruning.search_space import SearchSpace
from optuna_pruning.stale import StaleTrials, reap_dead_local_trials
from optuna_pruning.storages import STORAGE_TIMEOUT, make_storage
from optuna_pruning.studies import best_value_steps, count_trials, drop_queued_outside, open_study
from optuna_pruning.tracking import PARENT_ATTR
from optuna_pruning.urls import mask_password
from optuna_pruning.workers import worker_name
from softmax_sweep import views
from softmax_sweep.config import OPTIMIZABLE_METRICS, TrainConfig
from softmax_sweep.errors import UserError
from softmax_sweep.runlog import RunLogger
from softmax_sweep.sweeping import answer, sweep_files
from softmax_sweep.sweeping.recovery import close_stale_run
from softmax_sweep.sweeping.search_space import bound_warnings
from softmax_sweep.tracking import Tracker

log = logging.getLogger("softmax_sweep.sweep")


@dataclass
class OpenSweep:
    study: optuna.Study
    storage: Any
    parent: RunLogger
    n_trials: int  # at most the grid's size with the grid sampler
    stale: StaleTrials  # fails and re-queues the trials of dead workers, closing their MLflow runs


def check_sweep(settings: TrainConfig, directions) -> None:
    """What a sweep of this app needs of its settings, checked before any trial."""
    if settings.data.val_size == 0:
        raise UserError("a sweep picks hyperparameters by validation accuracy: data.val_size must be at least 1")
    wanted = OPTIMIZABLE_METRICS[settings.optimized_metric]
    if list(directions) != [wanted]:  # maximizing a loss would report the worst trial as the best
        raise UserError(f"optimized_metric={settings.optimized_metric} is to {wanted[:-1]}e, but the sweep's "
                        f"direction is {' '.join(directions)}: set hydra.sweeper.direction={wanted}")


def open_sweep(settings: TrainConfig, space: SearchSpace, storage_url: str, study_name: str, direction: str,
               sampler: Any, pruner: Any, n_trials: int, heartbeat_interval: Optional[int] = None,
               grace_period: Optional[int] = None, enqueue: Sequence[Any] = (),
               storage_timeout: Optional[float] = STORAGE_TIMEOUT) -> OpenSweep:
    """Create or resume the study and open its MLflow parent run, as a study script does; a
    trial whose worker died gets its MLflow run closed in the same store."""
    from softmax_sweep.experiment import tracker_for

    check_sweep(settings, [direction])
    tracker = tracker_for(settings)
    stale = StaleTrials(lambda study, trial, why: close_stale_run(tracker.client, trial, why))
    storage = make_storage(storage_url, heartbeat_interval, grace_period, stale.on_stale, storage_timeout)
    study = open_study(storage, study_name, [direction], make_sampler(sampler, space), make_pruner(pruner),
                       [settings.optimized_metric], enqueue, space.distributions)
    if isinstance(study.sampler, optuna.samplers.GridSampler):
        n_trials = min(n_trials, space.grid_size())
    reap_dead_local_trials(study, stale)
    drop_queued_outside(study, space.distributions)
    parent = open_parent_run(tracker, study, storage_url, space, settings.seeds, settings.optimized_metric,
                             fixed_params(settings))
    return OpenSweep(study, storage, parent, n_trials, stale)


def fixed_params(cfg: Any) -> dict[str, Any]:
    """The training settings every trial of a sweep shares, as a run's params (passwords masked)."""
    from softmax_sweep.experiment import flatten, resolved_config

    return flatten(resolved_config(cfg))


def open_parent_run(tracker: Tracker, study: optuna.Study, storage_url: str, space: SearchSpace, seeds: int = 1,
                    metric: str = "val_acc", fixed: Optional[dict[str, Any]] = None) -> RunLogger:
    """The study's parent run in this tracking store: the one recorded in the study's user
    attributes (set RUNNING again), or a new one that records the search space and the fixed
    settings as its params. Saves the study's view of the runs table (parent.view_url)."""
    varied = list(space.distributions)
    state = views.study_view_state(study.study_name, metric, varied, seeds)
    view_url = tracker.save_view(views.study_view_key(study.study_name), state)
    parent = _reopen_parent(tracker, study) or _new_parent(tracker, study, storage_url, space, seeds, metric, fixed)
    parent.view_url = view_url
    return parent


def _reopen_parent(tracker: Tracker, study: optuna.Study) -> Optional[RunLogger]:
    run_id = study.user_attrs.get(PARENT_ATTR)
    if run_id:
        try:
            run = tracker.client.get_run(run_id)
            if run.info.experiment_id == tracker.experiment_id and run.info.lifecycle_stage == "active":
                if run.info.status != "RUNNING":  # resumed: this process owns it now (workers share it)
                    tracker.client.update_run(run_id, status="RUNNING")
                    tracker.client.set_tag(run_id, "worker", worker_name())
                return tracker.logger(run_id)
        except MlflowException:
            pass  # recorded in another tracking store, or deleted: start a new one here
    return None


def _new_parent(tracker: Tracker, study: optuna.Study, storage_url: str, space: SearchSpace, seeds: int,
                metric: str, fixed: Optional[dict[str, Any]]) -> RunLogger:
    tags = {"optuna.study_name": study.study_name, "optuna.storage": mask_password(storage_url), "sweep.kind": "optuna"}
    parent = tracker.start_run(run_name=f"study-{study.study_name}", tags=tags)
    sweep = {"sweep.sampler": type(study.sampler).__name__, "sweep.pruner": type(study.pruner).__name__,
             "sweep.direction": study.direction.name.lower(), "sweep.metric": metric, "seeds": seeds,
             **{f"search.{name}": text for name, text in space.describe().items()}}
    parent.log_params({**{k: v for k, v in (fixed or {}).items() if k not in space.distributions}, **sweep})
    # Sweeps started together on a new study each create a parent: all keep the earliest one.
    query = " and ".join([*(f"tags.`{k}` = '{v.replace(chr(39), '')}'" for k, v in tags.items()),
                          "attributes.status = 'RUNNING'"])
    found = tracker.client.search_runs([tracker.experiment_id], filter_string=query)
    first = min(found, key=lambda r: (r.info.start_time, r.info.run_id), default=None)
    if first is not None and first.info.run_id != parent.run_id:
        tracker.client.delete_run(parent.run_id)
        parent = tracker.logger(first.info.run_id)
    study.set_user_attr(PARENT_ATTR, parent.run_id)
    return parent


class BestSoFar:
    """The parent's `best_value` at step = trial number, so the parent run's chart is the study's
    optimization history. A step is logged once no trial finishing later can change it; steps the
    parent already has (a resumed study, another worker) are not logged again."""

    def __init__(self, parent: RunLogger) -> None:
        self.parent = parent
        history = parent.client.get_metric_history(parent.run_id, "best_value")
        self.logged = max((m.step for m in history), default=-1)

    def update(self, study: optuna.Study, final: bool = False) -> None:
        """final: log every step left, also those a trial still RUNNING elsewhere holds back."""
        steps = best_value_steps(study.get_trials(deepcopy=False), study.direction, self.logged, not final)
        for number, value, trial in steps:  # also as best_<metric> (best_val_loss): the runs table's column
            named = {f"best_{name}": value for name in (study.metric_names or [])[:1]}
            self.parent.log_metrics({"best_value": value, "best_trial_number": trial, **named}, step=number)
            self.logged = number


def finish_sweep(parent: RunLogger, study: optuna.Study, space: SearchSpace, rerun_hint: str,
                 status: str = "FINISHED", reason: Optional[str] = None, metric: str = "val_acc") -> list[str]:
    """Log best params and value, the sweep report and trials.csv to the parent run, end it, and
    return the lines to print for the user.

    rerun_hint: the command that ran the sweep, with `{study}` where a new study name goes (a
    widened range is worth a fresh study: this one has its n_trials already)."""
    try:
        counts = count_trials(study)
        lines = [f"study {study.study_name}: {counts['COMPLETE']} complete, {counts['PRUNED']} pruned, "
                 f"{counts['FAIL']} failed trials"]
        best = _best_trial(study)
        if best is not None:
            parent.flush()  # BestSoFar reads the steps logged so far from the store
            BestSoFar(parent).update(study, final=True)  # its last step: best.value at the last finished trial
            parent.set_tags({**{f"best.{k}": v for k, v in best.params.items()},
                             "best.mlflow_run_id": best.user_attrs.get("mlflow_run_id", "")})
            shown = ", ".join(f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}" for k, v in best.params.items())
            lines.append(f"best value {best.value:.4f} (trial {best.number}, MLflow run "
                         f"{best.user_attrs.get('mlflow_run_id', '?')}): {shown}")
            lines += sweep_files.seed_comparison(study, best)
            for message, override in bound_warnings(space, best.params):
                command = rerun_hint.format(study=f"{study.study_name}-wider")
                lines.append(f"{message}; widen the range: {command} {override}")
        with tempfile.TemporaryDirectory() as tmp:
            folder = Path(tmp)
            sweep_files.write_report_files(parent, study, space, folder, metric)
            if answer.is_controlled_study(list(space.distributions)):
                text = sweep_files.write_answer(parent, study, folder)
                lines.append("exercise 2's answer (answer.md in the parent run's artifacts):\n\n" + text)
            sweep_files.write_configurations(study, folder / "configurations.csv")
            if best is not None:
                (folder / "best.json").write_text(json.dumps(
                    {"value": best.value, "trial_number": best.number, "params": best.params}, indent=2))
            parent.log_artifacts(folder)
        if parent.view_url:
            lines.append(f"runs table (MLflow UI): {parent.view_url}")
    except KeyboardInterrupt:  # Ctrl-C while the report is written: the parent must not stay RUNNING
        parent.end("KILLED", "interrupted while writing the sweep report")
        raise
    except BaseException as e:
        parent.end("FAILED", f"the sweep report failed: {e}")
        raise
    parent.end(status, reason)
    return lines


def log_grid_report(parent: RunLogger, study: optuna.Study, space: SearchSpace, metric: str) -> None:
    """The sweep report of a grid of jobs (Hydra's basic sweeper), recorded as an in-memory study
    whose trials are the jobs: the same figures and trials.csv, and best_value by job number."""
    BestSoFar(parent).update(study, final=True)
    with tempfile.TemporaryDirectory() as tmp:
        sweep_files.write_report_files(parent, study, space, Path(tmp), metric)
        parent.log_artifacts(Path(tmp))


def end_stopped_sweep(parent: RunLogger, study: optuna.Study, space: SearchSpace, rerun_hint: str,
                      error: BaseException, metric: str) -> None:
    """finish_sweep for a sweep that stopped on `error`: KILLED on Ctrl-C/SIGTERM, else FAILED."""
    interrupted = isinstance(error, KeyboardInterrupt)
    if not parent.server_answers():  # no report: every call to the tracking server would fail
        parent.end("KILLED" if interrupted else "FAILED", str(error))
        return
    finish_sweep(parent, study, space, rerun_hint, "KILLED" if interrupted else "FAILED",
                 "interrupted" if interrupted else str(error), metric=metric)


def _best_trial(study: optuna.Study) -> Optional[optuna.trial.FrozenTrial]:
    try:
        return study.best_trial
    except ValueError:
        return None  # no complete trial yet
