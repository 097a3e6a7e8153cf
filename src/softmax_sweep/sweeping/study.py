"""Opening Optuna studies: storages, samplers, pruners, and counting trials toward n_trials."""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Mapping, Optional

import optuna
from hydra.utils import instantiate
from omegaconf import DictConfig
from optuna.storages import JournalStorage, RDBStorage, RetryFailedTrialCallback
from optuna.storages.journal import JournalFileBackend
from optuna.trial import TrialState

from softmax_sweep.errors import UserError
from softmax_sweep.sweeping.search_space import SearchSpace
from softmax_sweep.tracking import mask_password

log = logging.getLogger("softmax_sweep.sweep")
FINISHED = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)
JOURNAL_PREFIX = "journal:///"


def make_storage(url: str, heartbeat_interval: Optional[int] = None, grace_period: Optional[int] = None):
    """An Optuna storage from a URL: sqlite://, postgresql://, mysql:// (RDB) or
    journal:///path/to/file (a journal file, safe for several local processes)."""
    if url.startswith(JOURNAL_PREFIX):
        path = Path(url[len(JOURNAL_PREFIX) - 1:])
        path.parent.mkdir(parents=True, exist_ok=True)
        return JournalStorage(JournalFileBackend(str(path)))
    if url.startswith("sqlite:///"):
        Path(url[len("sqlite:///"):]).parent.mkdir(parents=True, exist_ok=True)
    kwargs: dict[str, Any] = {}
    if heartbeat_interval:
        kwargs.update(heartbeat_interval=heartbeat_interval, grace_period=grace_period or 2 * heartbeat_interval,
                      failed_trial_callback=RetryFailedTrialCallback(max_retry=3))
    try:
        return RDBStorage(url, engine_kwargs=_engine_kwargs(url), **kwargs)
    except ImportError as e:
        raise UserError(f"storage {mask_password(url)} needs a driver: {e} (pip install 'softmax-sweep[postgres]')") from None
    except Exception as e:  # SQLAlchemy's errors for bad URLs and unreachable servers
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise UserError(f"cannot open Optuna storage {mask_password(url)}: {mask_password(first)}") from None


def _engine_kwargs(url: str) -> dict[str, Any]:
    if url.startswith("sqlite"):
        return {"connect_args": {"timeout": 60}}
    return {"pool_pre_ping": True}


def make_sampler(sampler: Any, space: SearchSpace) -> optuna.samplers.BaseSampler:
    """A sampler from its config (hydra/sweeper/sampler), as a node or as the partial that
    Hydra's instantiation of the sweeper already made of it; grid gets the search space."""
    factory = instantiate(sampler) if isinstance(sampler, (Mapping, DictConfig)) else sampler
    if getattr(factory, "func", None) is optuna.samplers.GridSampler:
        return factory(search_space=space.grid())
    return factory()


def make_pruner(pruner: Any) -> optuna.pruners.BasePruner:
    return instantiate(pruner) if isinstance(pruner, (Mapping, DictConfig)) else pruner


def open_study(storage, study_name: str, direction: str, sampler, pruner) -> optuna.Study:
    # our own one-line progress reports each trial; Optuna would add a traceback per failed trial
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    return optuna.create_study(storage=storage, study_name=study_name, direction=direction,
                               sampler=sampler, pruner=pruner, load_if_exists=True)


def count_trials(study: optuna.Study) -> dict[str, int]:
    counts = {state.name: 0 for state in TrialState}
    for trial in study.get_trials(deepcopy=False):
        counts[trial.state.name] += 1
    return counts


def trials_to_go(study: optuna.Study, n_trials: int) -> int:
    """n_trials is the study's total: trials already finished or running count toward it."""
    counts = count_trials(study)
    done = sum(counts[s.name] for s in FINISHED) + counts["RUNNING"]
    return max(n_trials - done, 0)


def too_many_failures(study: optuna.Study, max_failure_rate: float, min_finished: int = 5) -> Optional[str]:
    """A message when more than max_failure_rate of the finished trials failed, judged once
    min_finished trials have finished."""
    counts = count_trials(study)
    finished = sum(counts[s.name] for s in FINISHED)
    if finished < min_finished or counts["FAIL"] <= max_failure_rate * finished:
        return None
    return (f"{counts['FAIL']} of {finished} trials failed, more than max_failure_rate={max_failure_rate:g}: "
            f"stopping the sweep (see the failure_reason tags of the child runs in MLflow)")


def trial_line(study: optuna.Study, number: int, n_trials: int) -> str:
    """One progress line for a finished trial: `[done/total] trial N STATE: value or reason {params}`."""
    trials = study.get_trials(deepcopy=False)
    trial = next(t for t in trials if t.number == number)
    done = sum(t.state in FINISHED for t in trials)
    if trial.state == TrialState.COMPLETE:
        detail = f"value {trial.value:.4f}"
    elif trial.state == TrialState.PRUNED:
        detail = f"pruned after epoch {trial.last_step}"
    else:
        detail = trial.user_attrs.get("fail_reason", "")
    shown = ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in trial.params.items())
    return f"[{done}/{n_trials}] trial {number} {trial.state.name}: {detail} ({shown})"
