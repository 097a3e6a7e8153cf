"""The door between a Hydra job and the Optuna trial it runs as.

    from optuna_pruning import report

    for epoch in range(1, num_epochs + 1):
        ...
        report(val_acc, epoch)   # raises optuna.TrialPruned when the pruner says stop
    return val_acc

`current_trial()` gives the trial itself (Optuna's own API: params, user attributes, report,
should_prune). Both work in the sweeper's process (the basic launcher) and in any other (joblib,
submitit, SLURM, another machine), where the trial is reached through the study's storage; in a
job not launched by this sweeper, current_trial() is None and report() does nothing.
"""
from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any, Optional

from optuna_pruning.internals import trial_id
from optuna_pruning.workers import end_with_parent, worker_name

if TYPE_CHECKING:
    import optuna

# Set for each job by the sweeper (hydra.job.env_set): the trial's id in the study's storage, and
# the study's name.
TRIAL_ENV = "OPTUNA_PRUNING_TRIAL_ID"
STUDY_ENV = "OPTUNA_PRUNING_STUDY"
SWEEPER_ENV = "OPTUNA_PRUNING_SWEEPER"  # the sweep's process, host:pid
# Trials of a sweep in this process, by id: jobs of the basic launcher use them directly.
_LIVE: dict[int, Any] = {}
_FOUND: dict[int, Any] = {}  # the trial a job of another process loaded from the storage
# one storage per URL in a pool worker: an engine per job would keep a connection open per job
# until the database refuses more ("too many clients")
_STORAGES: dict[tuple[str, Any], Any] = {}


def current_trial() -> Optional[optuna.Trial]:
    """The Optuna trial this job runs as, or None outside a sweep of this sweeper."""
    text = os.environ.get(TRIAL_ENV)
    if not text:
        return None
    trial_id = int(text)
    trial = _LIVE.get(trial_id) or _FOUND.get(trial_id)
    if trial is None and (trial := _load(trial_id)) is not None:
        _FOUND.clear()
        _FOUND[trial_id] = trial
        trial.set_user_attr("worker", worker_name())  # so a later start can tell this process died
        end_with_parent(os.environ.get(SWEEPER_ENV))  # a pool worker outlives a SIGKILLed sweep otherwise
    return trial


def report(value: float, step: int) -> None:
    """Report `value` at `step` (e.g. the validation metric after an epoch) to the current trial;
    raise optuna.TrialPruned when its pruner says the trial should stop. Without a trial: nothing."""
    import optuna

    trial = current_trial()
    if trial is None:
        return
    trial.report(value, step)
    if trial.should_prune():
        raise optuna.TrialPruned(f"pruned at step {step} (value {value:.6g})")


def job_overrides(trial: optuna.Trial) -> list[str]:
    """The Hydra overrides that tell a job which trial it runs as."""
    quoted = trial.study.study_name.replace("'", "\\'")
    return [f"++hydra.job.env_set.{TRIAL_ENV}={trial_id(trial)}", f"++hydra.job.env_set.{STUDY_ENV}='{quoted}'",
            f"++hydra.job.env_set.{SWEEPER_ENV}='{worker_name()}'"]


def _load(trial_id: int) -> Optional[optuna.Trial]:
    """The trial, from the storage and pruner this job's config names (hydra.sweeper); None when
    the study is in the sweeper's memory (storage: null), out of this process's reach: the
    sweeper refuses to prune such a sweep, so there is nothing to report to."""
    import optuna
    from hydra.core.hydra_config import HydraConfig

    from optuna_pruning.samplers import make_pruner
    from optuna_pruning.storages import STORAGE_TIMEOUT, make_storage

    sweeper = HydraConfig.get().sweeper
    if not sweeper.get("storage"):
        return None
    key = (sweeper.storage, sweeper.get("storage_timeout", STORAGE_TIMEOUT))
    if key not in _STORAGES:
        _STORAGES[key] = make_storage(key[0], timeout=key[1])
    storage = _STORAGES[key]
    pruner = make_pruner(sweeper.get("optuna_pruner"))
    study = optuna.load_study(study_name=os.environ[STUDY_ENV], storage=storage, pruner=pruner)
    return optuna.Trial(study, trial_id)
