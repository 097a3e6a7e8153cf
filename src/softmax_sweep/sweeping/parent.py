"""The end of a sweep in its MLflow parent run (opened by hydra_sweep.SweepTracking): the sweep
report, best params and value; and the checks a sweep of this app needs before any trial."""
from __future__ import annotations

import json
import logging
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, Optional

import optuna

from optuna_pruning.search_space import SearchSpace
from optuna_pruning.studies import count_trials
from optuna_pruning.tracking import best_so_far_metrics
from softmax_sweep.config import OPTIMIZABLE_METRICS, TrainConfig
from softmax_sweep.errors import UserError
from softmax_sweep.runlog import RunLogger
from softmax_sweep.sweeping import answer, sweep_files
from softmax_sweep.sweeping.search_space import bound_warnings

log = logging.getLogger("softmax_sweep.sweep")


def check_sweep(settings: TrainConfig, directions) -> None:
    """What a sweep of this app needs of its settings, checked before any trial."""
    if settings.data.val_size == 0:
        raise UserError("a sweep picks hyperparameters by validation accuracy: data.val_size must be at least 1")
    wanted = OPTIMIZABLE_METRICS[settings.optimized_metric]
    if list(directions) != [wanted]:  # maximizing a loss would report the worst trial as the best
        raise UserError(f"optimized_metric={settings.optimized_metric} is to {wanted[:-1]}e, but the sweep's "
                        f"direction is {' '.join(directions)}: set hydra.sweeper.direction={wanted}")


def fixed_params(cfg: Any) -> dict[str, Any]:
    """The training settings every trial of a sweep shares, as a run's params (passwords masked)."""
    from softmax_sweep.experiment import flatten, resolved_config

    return flatten(resolved_config(cfg))


def finish_sweep(parent: RunLogger, study: optuna.Study, space: SearchSpace, rerun_hint: str,
                 status: str = "FINISHED", reason: Optional[str] = None, metric: str = "val_acc",
                 log_best: Callable[[], None] = lambda: None) -> list[str]:
    """Log best params and value, the sweep report and trials.csv to the parent run, end it, and
    return the lines to print for the user.

    log_best: logs the parent's best value of every step left (MlflowSweepTracking.log_best_so_far).

    rerun_hint: the command that ran the sweep, with `{study}` where a new study name goes (a
    widened range is worth a fresh study: this one has its n_trials already)."""
    try:
        counts = count_trials(study)
        lines = [f"study {study.study_name}: {counts['COMPLETE']} complete, {counts['PRUNED']} pruned, "
                 f"{counts['FAIL']} failed trials"]
        best = _best_trial(study)
        if best is not None:
            log_best()  # its last step: best.value at the last finished trial
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
    parent.log_batch(best_so_far_metrics(study))
    with tempfile.TemporaryDirectory() as tmp:
        sweep_files.write_report_files(parent, study, space, Path(tmp), metric)
        parent.log_artifacts(Path(tmp))


def end_stopped_sweep(parent: RunLogger, study: optuna.Study, space: SearchSpace, rerun_hint: str,
                      error: BaseException, metric: str, log_best: Callable[[], None] = lambda: None) -> None:
    """finish_sweep for a sweep that stopped on `error`: KILLED on Ctrl-C/SIGTERM, else FAILED."""
    interrupted = isinstance(error, KeyboardInterrupt)
    if not parent.server_answers():  # no report: every call to the tracking server would fail
        parent.end("KILLED" if interrupted else "FAILED", str(error))
        return
    finish_sweep(parent, study, space, rerun_hint, "KILLED" if interrupted else "FAILED",
                 "interrupted" if interrupted else str(error), metric=metric, log_best=log_best)


def _best_trial(study: optuna.Study) -> Optional[optuna.trial.FrozenTrial]:
    try:
        return study.best_trial
    except ValueError:
        return None  # no complete trial yet
