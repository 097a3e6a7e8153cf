"""Dead workers: a trial whose heartbeat went stale is failed, retried, and its MLflow run closed."""
from __future__ import annotations

import copy
import logging
from typing import Optional

import optuna
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient
from optuna.storages import RetryHeartbeatStaleTrialCallback
from optuna.trial import FrozenTrial, TrialState

from softmax_sweep.tracking import dead_local_worker

log = logging.getLogger("softmax_sweep.sweep")


class StaleTrialHandler:
    """Optuna calls this (from any live or later worker) for a RUNNING trial whose heartbeat is
    older than the grace period: its parameters are queued as a new trial, and the MLflow run
    the dead worker left RUNNING ends FAILED."""

    def __init__(self, max_retry: int = 3) -> None:
        self.retry = RetryHeartbeatStaleTrialCallback(max_retry=max_retry)
        self.client: Optional[MlflowClient] = None  # set once the tracking store is open

    def __call__(self, study: optuna.Study, trial: FrozenTrial,
                 why: str = "its worker stopped sending heartbeats (no heartbeat within the grace period)") -> None:
        retry = copy.deepcopy(trial)
        for key in ("worker", "mlflow_run_id"):  # the retry is a new trial: nothing of the dead one's
            retry.user_attrs.pop(key, None)
        self.retry(study, retry)
        log.warning("trial %d: %s; marked FAIL and queued again", trial.number, why)
        run_id = trial.user_attrs.get("mlflow_run_id")
        if not run_id or self.client is None:
            return
        try:
            if self.client.get_run(run_id).info.status == "RUNNING":
                self.client.set_tag(run_id, "optuna.state", "FAIL")
                self.client.set_tag(run_id, "failure_reason", f"{why}; trial retried")
                self.client.set_terminated(run_id, status="FAILED")
        except MlflowException as e:
            log.warning("trial %d: could not close its MLflow run %s: %s", trial.number, run_id, e)


def reap_dead_local_trials(study: optuna.Study, handler: StaleTrialHandler) -> None:
    """Trials left RUNNING by a worker process of this machine that is gone (SIGKILL, a power
    cut; on any storage, heartbeats or not): FAIL, queued again, their MLflow runs closed."""
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        worker = trial.user_attrs.get("worker")
        if not worker or not dead_local_worker(worker):
            continue
        try:
            study._storage.set_trial_user_attr(trial._trial_id, "fail_reason", f"its worker {worker} died")
            study._storage.set_trial_state_values(trial._trial_id, TrialState.FAIL)
        except RuntimeError:
            continue  # another process reaped it first
        handler(study, study._storage.get_trial(trial._trial_id), f"its worker {worker} died")
