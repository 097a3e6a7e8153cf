"""Trials whose worker died: failed and queued again, whoever finds them (a heartbeat check, a
later start on this machine, the sweeper whose launcher lost a worker)."""
from __future__ import annotations

import copy
import logging
from collections.abc import Callable
from typing import Optional

import optuna
from optuna.storages import RetryHeartbeatStaleTrialCallback
from optuna.trial import FrozenTrial, TrialState

from optuna_pruning.internals import storage_of, trial_id
from optuna_pruning.quiet import quietly
from optuna_pruning.workers import dead_local_worker

log = logging.getLogger("optuna_pruning")
StaleHandler = Callable[[optuna.Study, FrozenTrial, str], None]


class StaleTrials:
    """Optuna calls this (from any live or later worker) for a RUNNING trial whose heartbeat is
    older than the grace period: its parameters are queued as a new trial, then on_stale is told."""

    def __init__(self, on_stale: Optional[StaleHandler] = None, max_retry: int = 3) -> None:
        with quietly():
            self.retry = RetryHeartbeatStaleTrialCallback(max_retry=max_retry)
        self.on_stale = on_stale

    def __call__(self, study: optuna.Study, trial: FrozenTrial,
                 why: str = "its worker stopped sending heartbeats (no heartbeat within the grace period)") -> None:
        retry = copy.deepcopy(trial)
        retry.user_attrs.pop("worker", None)  # the retry runs elsewhere
        self.retry(study, retry)
        log.warning("trial %d: %s; marked FAIL and queued again", trial.number, why)
        if self.on_stale is not None:
            self.on_stale(study, trial, why)


def reap_dead_local_trials(study: optuna.Study, handler: StaleTrials) -> None:
    """Trials left RUNNING by a worker process of this machine that is gone (SIGKILL, a power
    cut; on any storage, heartbeats or not): FAIL, queued again, handler told."""
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        worker = trial.user_attrs.get("worker")
        if not worker or not dead_local_worker(worker):
            continue
        try:
            storage_of(study).set_trial_user_attr(trial_id(trial), "fail_reason", f"its worker {worker} died")
            storage_of(study).set_trial_state_values(trial_id(trial), TrialState.FAIL)
        except RuntimeError:
            continue  # another process reaped it first
        handler(study, storage_of(study).get_trial(trial_id(trial)), f"its worker {worker} died")
