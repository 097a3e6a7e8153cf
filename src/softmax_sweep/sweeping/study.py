"""Opening Optuna studies: storages, samplers, pruners, and counting trials toward n_trials."""
from __future__ import annotations

import logging
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Optional

import optuna
from hydra.utils import instantiate
from omegaconf import DictConfig
from optuna.storages import JournalStorage, RDBStorage, RetryHeartbeatStaleTrialCallback, fail_stale_trials
from optuna.storages.journal import JournalFileBackend
from optuna.trial import FrozenTrial, TrialState

from softmax_sweep.errors import UserError
from softmax_sweep.sweeping.search_space import SearchSpace
from softmax_sweep.tracking import driver_extra, mask_password, with_installed_driver

log = logging.getLogger("softmax_sweep.sweep")
# heartbeat retries and the report's plots are marked experimental in Optuna; the notice is noise here
warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
FINISHED = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)
JOURNAL_PREFIX = "journal:///"


def make_storage(url: str, heartbeat_interval: Optional[int] = None, grace_period: Optional[int] = None,
                 on_stale: Optional[Callable[[optuna.Study, FrozenTrial], None]] = None):
    """An Optuna storage from a URL: journal:///path/to/file (a journal file, safe for several
    local processes), sqlite:///, postgresql://, mysql:// (RDB; heartbeats possible), or
    grpc://host:port (Optuna's gRPC storage proxy in front of an RDB, for many workers)."""
    if heartbeat_interval and not url.startswith(("sqlite", "postgresql", "mysql")):
        raise UserError(f"heartbeats need a database storage (sqlite://, postgresql://, mysql://), "
                        f"not {mask_password(url)}")
    if url.startswith(JOURNAL_PREFIX):
        path = Path(url[len(JOURNAL_PREFIX) - 1:])
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            return JournalStorage(JournalFileBackend(str(path)))
        except OSError as e:
            raise UserError(f"cannot use the journal file {path} as Optuna storage: {e.strerror or e}") from None
    if url.startswith("grpc://"):
        host, _, port = url[len("grpc://"):].rstrip("/").rpartition(":")
        from optuna.storages import GrpcStorageProxy

        try:
            proxy = GrpcStorageProxy(host=host or "localhost", port=int(port))
            proxy.get_all_studies()  # a proxy that is not there fails here, not in the first trial
        except Exception as e:  # noqa: BLE001 - grpc's errors, a bad port number
            detail = e.details() if callable(getattr(e, "details", None)) else str(e).strip() or type(e).__name__
            raise UserError(f"no Optuna storage proxy answers at {url} ({detail.splitlines()[0][:200]}): start "
                            f"softmax-sweep-storage-proxy there, or check the address") from None
        return proxy
    if url.startswith("sqlite:///"):
        Path(url[len("sqlite:///"):]).parent.mkdir(parents=True, exist_ok=True)
    url = with_installed_driver(url)
    kwargs: dict[str, Any] = {}
    if heartbeat_interval:
        kwargs.update(heartbeat_interval=heartbeat_interval, grace_period=grace_period or 2 * heartbeat_interval,
                      heartbeat_stale_trial_callback=on_stale or RetryHeartbeatStaleTrialCallback(max_retry=3))
    try:
        return _new_rdb_storage(url, kwargs)
    except ImportError as e:
        raise UserError(f"storage {mask_password(url)} needs a driver: {e} "
                        f"(pip install 'softmax-sweep[{driver_extra(url)}]')") from None
    except Exception as e:  # SQLAlchemy's errors for bad URLs and unreachable servers
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise UserError(f"cannot open Optuna storage {mask_password(url)}: {mask_password(first)}") from None


def _new_rdb_storage(url: str, kwargs: dict[str, Any], attempts: int = 5) -> RDBStorage:
    """RDBStorage, tried again while another process is creating the same new schema: Optuna's
    create-tables-if-missing is not atomic, and the loser of the race sees 'already exists' or a
    duplicate key; once the winner is done, the schema is there to use."""
    for attempt in range(1, attempts + 1):
        try:
            return RDBStorage(url, engine_kwargs=_engine_kwargs(url), **kwargs)
        except Exception as e:  # noqa: BLE001 - SQLAlchemy wraps each driver's error differently
            text = str(e).lower()
            if attempt == attempts or not ("already exists" in text or "duplicate" in text):
                raise
            time.sleep(0.2 * attempt)
    raise AssertionError("unreachable")


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


def open_study(storage, study_name: str, direction: str, sampler, pruner, metric: str = "") -> optuna.Study:
    # our own one-line progress reports each trial; Optuna would add a traceback per failed trial
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    study = optuna.create_study(storage=storage, study_name=study_name, direction=direction,
                                sampler=sampler, pruner=pruner, load_if_exists=True)
    if metric and study.metric_names != [metric]:  # optuna-dashboard shows it instead of "Objective 0"
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            study.set_metric_names([metric])
    return study


def count_trials(study: optuna.Study) -> dict[str, int]:
    counts = {state.name: 0 for state in TrialState}
    for trial in study.get_trials(deepcopy=False):
        counts[trial.state.name] += 1
    return counts


def _retried(trials: Sequence[FrozenTrial]) -> set[int]:
    """Numbers of trials whose worker died and whose parameters were queued again."""
    return {n for t in trials for n in t.system_attrs.get("retry_history", [])}


def _remaining(study: optuna.Study, n_trials: int) -> int:
    """n_trials minus the trials that count toward it (negative when workers overshot)."""
    trials = study.get_trials(deepcopy=False)
    retried = _retried(trials)
    return n_trials - sum(not (t.state == TrialState.FAIL and t.number in retried) for t in trials)


def trials_to_go(study: optuna.Study, n_trials: int) -> int:
    """n_trials is the study's total: finished, running and queued trials count toward it; a
    trial retried after its worker died is counted once, by its retry."""
    return max(_remaining(study, n_trials), 0)


def next_step(study: optuna.Study, n_trials: int, heartbeats: bool) -> str:
    """What a worker does next: "run" a trial (new, or queued for a retry), "wait" for running
    trials that may yet turn out to belong to a dead worker, or stop ("done")."""
    if heartbeats:
        fail_stale_trials(study)
    trials = study.get_trials(deepcopy=False)
    if trials_to_go(study, n_trials) > 0 or any(t.state == TrialState.WAITING for t in trials):
        return "run"
    if heartbeats and any(t.state == TrialState.RUNNING for t in trials):
        return "wait"
    return "done"


def overshoot(study: optuna.Study, n_trials: int) -> Optional[str]:
    """A note when concurrent workers started more trials than n_trials (at most workers - 1)."""
    extra = -_remaining(study, n_trials)
    if extra <= 0:
        return None
    return (f"the study has {n_trials + extra} trials for n_trials={n_trials}: {extra} started while another "
            f"worker was finishing the last one (at most one fewer than the workers)")


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
