"""Dead workers: a trial whose heartbeat went stale is failed, retried, and its MLflow run closed."""
from __future__ import annotations

import logging
from typing import Optional

import optuna
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient
from optuna.storages import RetryHeartbeatStaleTrialCallback
from optuna.trial import FrozenTrial

log = logging.getLogger("softmax_sweep.sweep")


class StaleTrialHandler:
    """Optuna calls this (from any live or later worker) for a RUNNING trial whose heartbeat is
    older than the grace period: its parameters are queued as a new trial, and the MLflow run
    the dead worker left RUNNING ends FAILED."""

    def __init__(self, max_retry: int = 3) -> None:
        self.retry = RetryHeartbeatStaleTrialCallback(max_retry=max_retry)
        self.client: Optional[MlflowClient] = None  # set once the tracking store is open

    def __call__(self, study: optuna.Study, trial: FrozenTrial) -> None:
        self.retry(study, trial)
        log.warning("trial %d: its worker stopped sending heartbeats; marked FAIL and queued again",
                    trial.number)
        run_id = trial.user_attrs.get("mlflow_run_id")
        if not run_id or self.client is None:
            return
        try:
            if self.client.get_run(run_id).info.status == "RUNNING":
                self.client.set_tag(run_id, "optuna.state", "FAIL")
                self.client.set_tag(run_id, "failure_reason",
                                    "the worker died: no heartbeat within the grace period; trial retried")
                self.client.set_terminated(run_id, status="FAILED")
        except MlflowException as e:
            log.warning("trial %d: could not close its MLflow run %s: %s", trial.number, run_id, e)
