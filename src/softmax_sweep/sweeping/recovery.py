"""Dead workers: the MLflow run of a trial whose worker died ends FAILED (the sweeper has failed
the trial and queued its parameters again)."""
from __future__ import annotations

import logging

from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient
from optuna.trial import FrozenTrial

log = logging.getLogger("softmax_sweep.sweep")


def close_stale_run(client: MlflowClient, trial: FrozenTrial, why: str) -> None:
    run_id = trial.user_attrs.get("mlflow_run_id")
    if not run_id:
        return
    try:
        status = client.get_run(run_id).info.status
        if status in ("RUNNING", "FINISHED"):  # FINISHED: trained, but Optuna was never told (its storage hung)
            told = "" if status == "RUNNING" else " after its run finished; its result never reached Optuna"
            client.set_tag(run_id, "optuna.state", "FAIL")
            client.set_tag(run_id, "failure_reason", f"{why}{told}; trial retried")
            client.set_terminated(run_id, status="FAILED")
        elif status == "KILLED":  # the next start on the store ended the dead process's run first
            client.set_tag(run_id, "optuna.state", "FAIL")
    except MlflowException as e:
        log.warning("trial %d: could not close its MLflow run %s: %s", trial.number, run_id, e)
