"""Opening Optuna studies for sweeps (the Hydra sweeper and any study script alike): storages,
samplers, pruners, counting trials toward n_trials, and trials whose worker died."""
from __future__ import annotations

import contextlib
import copy
import itertools
import json
import logging
import math
import time
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, Optional

import optuna
import sqlalchemy
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from optuna.storages import JournalStorage, RDBStorage, RetryHeartbeatStaleTrialCallback, fail_stale_trials
from optuna.storages.journal import JournalFileBackend
from optuna.trial import FrozenTrial, TrialState

from optuna_pruning import deadlines
from optuna_pruning.errors import SweeperError
from optuna_pruning.internals import storage_of, trial_id
from optuna_pruning.search_space import SearchSpace, describe_distribution
from optuna_pruning.urls import mask_password, openable
from optuna_pruning.workers import dead_local_worker, other_local_worker

log = logging.getLogger("optuna_pruning")
FINISHED = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)
JOURNAL_PREFIX = "journal:///"
STORAGE_TIMEOUT = 60.0  # seconds a call to a database server may take
DROPPED = "outside the search space of a later start: not run"
StaleHandler = Callable[[optuna.Study, FrozenTrial, str], None]


@contextlib.contextmanager
def quietly() -> Iterator[None]:
    """Around the sweeper's own calls into Optuna: its INFO lines (a study created, a trial
    finished: the sweep logs one line per trial itself) and its notices that heartbeats and the
    gRPC proxy are experimental. The host's log level and warning filters are back afterwards."""
    level = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(max(level, optuna.logging.ERROR))
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            yield
    finally:
        optuna.logging.set_verbosity(level)


def make_storage(url: Optional[str], heartbeat_interval: Optional[int] = None, grace_period: Optional[int] = None,
                 on_stale: Optional[StaleHandler] = None, timeout: Optional[float] = STORAGE_TIMEOUT):
    """An Optuna storage from a URL: None (in memory, as in hydra-optuna-sweeper), journal:///file
    (safe for several local processes), sqlite:///, postgresql://, mysql:// (RDB; heartbeats
    possible), or grpc://host:port (Optuna's gRPC storage proxy in front of an RDB). A call to a
    database server that takes longer than `timeout` seconds fails (None: no bound)."""
    if not url:
        if heartbeat_interval:
            raise SweeperError("heartbeats need a database storage, not storage: null")
        return optuna.storages.InMemoryStorage()
    if heartbeat_interval and not url.startswith(("sqlite", "postgresql", "mysql")):
        raise SweeperError(f"heartbeats need a database storage (sqlite://, postgresql://, mysql://), "
                           f"not {mask_password(url)}")
    if url.startswith(JOURNAL_PREFIX):
        path = Path("/" + url[len(JOURNAL_PREFIX):].lstrip("/"))
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            return JournalStorage(JournalFileBackend(str(path)))
        except OSError as e:
            raise SweeperError(f"cannot use the journal file {path} as Optuna storage: {e.strerror or e}") from None
        except ValueError as e:  # bytes that are not a journal's JSON lines (UnicodeDecodeError, JSONDecodeError)
            raise _damaged_journal(str(path), e) from None
    if url.startswith("grpc://"):
        return _grpc_proxy(url)
    if url.startswith("sqlite:///"):
        Path(url[len("sqlite:///"):]).parent.mkdir(parents=True, exist_ok=True)
    url = openable(url)
    kwargs: dict[str, Any] = {}
    if heartbeat_interval:
        with quietly():
            retry = RetryHeartbeatStaleTrialCallback(max_retry=3)
        kwargs.update(heartbeat_interval=heartbeat_interval, grace_period=grace_period or 2 * heartbeat_interval,
                      heartbeat_stale_trial_callback=StaleTrials(on_stale) if on_stale else retry)
    try:
        return _new_rdb_storage(url, kwargs, timeout)
    except ImportError as e:
        raise SweeperError(f"storage {mask_password(url)} needs a database driver: {e}") from None
    except Exception as e:  # SQLAlchemy's errors for bad URLs and unreachable servers
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise SweeperError(f"cannot open Optuna storage {mask_password(url)}: {mask_password(first)}") from None


def _damaged_journal(which: str, error: ValueError) -> SweeperError:
    return SweeperError(f"the Optuna journal {which} is damaged ({type(error).__name__}): move it away to start "
                        "afresh, or choose another storage")


def _grpc_proxy(url: str):
    host, _, port = url[len("grpc://"):].rstrip("/").rpartition(":")
    from optuna.storages import GrpcStorageProxy

    try:
        with quietly():
            proxy = GrpcStorageProxy(host=host or "localhost", port=int(port))
        proxy.get_all_studies()  # a proxy that is not there fails here, not in the first trial
    except Exception as e:  # noqa: BLE001 - grpc's errors, a bad port number
        detail = e.details() if callable(getattr(e, "details", None)) else str(e).strip() or type(e).__name__
        raise SweeperError(f"no Optuna storage proxy answers at {url} ({detail.splitlines()[0][:200]}): start "
                           f"one there (optuna.storages.run_grpc_proxy_server), or check the address") from None
    return proxy


def _new_rdb_storage(url: str, kwargs: dict[str, Any], timeout: Optional[float], attempts: int = 5) -> RDBStorage:
    """RDBStorage, tried again while another process is creating the same new schema: Optuna's
    create-tables-if-missing is not atomic, and the loser of the race sees 'already exists' or a
    duplicate key; once the winner is done, the schema is there to use."""
    engine_kwargs: dict[str, Any] = {"pool_pre_ping": True}
    if url.startswith("sqlite"):
        engine_kwargs = {"connect_args": {"timeout": 60}}
    elif url.startswith("postgresql"):  # a server that does not answer: give up, do not hang
        # deadlines.watch pings instead of the pool
        engine_kwargs = {"connect_args": {"connect_timeout": int(min(10, timeout or 10))}}
    elif url.startswith("mysql"):  # both MySQL drivers have socket timeouts of their own
        bound = {"read_timeout": int(timeout), "write_timeout": int(timeout)} if timeout else {}
        engine_kwargs["connect_args"] = {"connect_timeout": int(min(10, timeout or 10)), **bound}
    for attempt in range(1, attempts + 1):
        try:
            if url.startswith("postgresql"):
                return _watched_rdb_storage(url, engine_kwargs, kwargs, timeout)
            return RDBStorage(url, engine_kwargs=engine_kwargs, **kwargs)
        except Exception as e:  # noqa: BLE001 - SQLAlchemy wraps each driver's error differently
            text = str(e).lower()
            if attempt == attempts or not ("already exists" in text or "duplicate" in text):
                raise
            time.sleep(0.2 * attempt)
    raise AssertionError("unreachable")


def _watched_rdb_storage(url: str, engine_kwargs: dict[str, Any], kwargs: dict[str, Any],
                         timeout: Optional[float]) -> RDBStorage:
    """RDBStorage whose calls are bounded from the first (its constructor creates tables and
    checks the schema): its engine gets a pool that is watched already."""
    if not timeout:
        return RDBStorage(url, engine_kwargs={**engine_kwargs, "pool_pre_ping": True}, **kwargs)
    connector = sqlalchemy.create_engine(url, **engine_kwargs)
    watch = deadlines.watch(connector, timeout, url)
    try:
        storage = RDBStorage(url, engine_kwargs={**engine_kwargs, "pool": connector.pool}, **kwargs)
    except Exception as e:
        if watch.cut_in:
            raise watch.error() from e
        raise
    watch.errors_of(storage.engine)
    return storage


def make_sampler(sampler: Any, space: SearchSpace) -> optuna.samplers.BaseSampler:
    """A sampler from its config node (hydra/sweeper/optuna_sampler, or any `_target_` with its
    constructor's settings); settings left null take Optuna's default; grid gets the search space."""
    if sampler is None:
        return optuna.samplers.TPESampler()
    node = _settings(sampler)
    try:
        factory = instantiate(node, _partial_=True)
    except Exception as e:  # noqa: BLE001 - a bad class name or setting: Hydra's InstantiationException
        raise SweeperError(f"hydra.sweeper.sampler: {_cause_line(e)}") from None
    if getattr(factory, "func", None) is optuna.samplers.GridSampler:
        return factory(search_space=space.grid())
    try:
        return factory()
    except SweeperError:
        raise
    except (TypeError, ValueError, ImportError) as e:
        raise SweeperError(f"hydra.sweeper.sampler ({node.get('_target_')}): {e}") from None


def motpe_removed(**settings: Any) -> optuna.samplers.BaseSampler:
    """hydra/sweeper/optuna_sampler=motpe, as upstream keeps it: Optuna 4 has no MOTPESampler."""
    raise SweeperError("The 'motpe' sampler was removed in Optuna 4.0. Use 'hydra/sweeper/optuna_sampler=tpe' "
                       "instead. TPESampler now handles multi-objective optimization.")


def make_pruner(pruner: Any) -> optuna.pruners.BasePruner:
    if pruner is None:
        return optuna.pruners.NopPruner()
    if isinstance(pruner, optuna.pruners.BasePruner):
        return pruner
    try:
        return instantiate(_settings(pruner))
    except Exception as e:  # noqa: BLE001
        raise SweeperError(f"hydra.sweeper.optuna_pruner: {_cause_line(e)}") from None


def _settings(node: Any) -> dict[str, Any]:
    data = OmegaConf.to_container(node, resolve=True) if isinstance(node, DictConfig) else dict(node)
    data.pop("_partial_", None)
    return {k: v for k, v in data.items() if v is not None}


def _cause_line(error: BaseException) -> str:
    while error.__cause__ is not None:
        error = error.__cause__
    return str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__


def directions_of(direction: Any) -> list[str]:
    """`maximize`, `[maximize, minimize]` or upstream's Direction enum as Optuna's names."""
    items = list(direction) if isinstance(direction, (list, tuple)) or OmegaConf.is_list(direction) else [direction]
    names = [getattr(d, "name", d) for d in items]
    for name in names:
        if name not in ("maximize", "minimize"):
            raise SweeperError(f"hydra.sweeper.direction must be maximize, minimize or a list of them, got {name!r}")
    return names


ENQUEUED_ATTR = "optuna_pruning.enqueued"


def open_study(storage, study_name: Optional[str], directions: Sequence[str], sampler, pruner,
               metric_names: Sequence[str] = (), enqueue: Sequence[Mapping[str, Any]] = (),
               distributions: Optional[Mapping[str, Any]] = None) -> optuna.Study:
    """Create the study or load it (resume), with the metric names optuna-dashboard shows; a new
    study gets the `enqueue` trials queued first (see expand_enqueued)."""
    try:
        with quietly():
            study = optuna.create_study(storage=storage, study_name=study_name, directions=list(directions),
                                        sampler=sampler, pruner=pruner, load_if_exists=True)
    except (UnicodeDecodeError, json.JSONDecodeError) as e:  # a journal file of other bytes
        raise _damaged_journal(f"of study {study_name}", e) from None
    except ValueError as e:  # e.g. resumed with other directions
        raise SweeperError(f"study {study_name}: {e}") from None
    if metric_names and list(study.metric_names or []) != list(metric_names):
        with quietly():
            study.set_metric_names(list(metric_names))
    if enqueue and ENQUEUED_ATTR not in study.user_attrs:
        trials = expand_enqueued(enqueue, distributions or {})
        inside = [params for params in trials if _inside(params, distributions or {})]
        if len(inside) < len(trials):  # e.g. a command line that narrowed a parameter's range
            log.info("enqueue: %d of %d trials lie outside the search space: not queued", len(trials) - len(inside),
                     len(trials))
        for params in inside:  # skip_if_exists: workers opening a new study together queue each once
            study.enqueue_trial(params, skip_if_exists=True)
        study.set_user_attr(ENQUEUED_ATTR, len(inside))
    return study


def expand_enqueued(entries: Sequence[Mapping[str, Any]], distributions: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Each entry's trials: a list value stands for each of its values (the product over keys).
    Every key must be a parameter of the search space."""
    trials = []
    for entry in entries:
        unknown = sorted(set(entry) - set(distributions))
        if unknown:
            raise SweeperError(f"enqueue: {', '.join(unknown)} not a parameter of the search space "
                               f"({', '.join(distributions) or 'none'})")
        values = [v if isinstance(v, (list, tuple)) else [v] for v in entry.values()]
        trials += [dict(zip(entry, combination)) for combination in itertools.product(*values)]
    return trials


def drop_queued_outside(study: optuna.Study, distributions: Mapping[str, Any]) -> None:
    """Queued trials (retries of failed or dead ones) whose parameters this start's search space
    no longer holds (a typo fixed, a range changed) are failed, not run: one line says so."""
    dropped = []
    for trial in study.get_trials(deepcopy=False, states=(TrialState.WAITING,)):
        params = trial.system_attrs.get("fixed_params") or trial.params  # enqueued, or a retry
        if params and (not set(params) <= set(distributions) or not _inside(params, distributions)):
            try:
                storage_of(study).set_trial_user_attr(trial_id(trial), "fail_reason", DROPPED)
                storage_of(study).set_trial_state_values(trial_id(trial), TrialState.FAIL)
            except RuntimeError:
                continue  # another worker took it
            dropped.append(_first_difference(params, distributions))
    if dropped:
        log.warning("study %s: %d queued trial(s) lie outside this search space (%s): not run; a changed "
                    "search space continues the study, hydra.sweeper.study_name=NEW starts a new one",
                    study.study_name, len(dropped), dropped[0])


def _first_difference(params: Mapping[str, Any], distributions: Mapping[str, Any]) -> str:
    if extra := sorted(set(params) - set(distributions)):
        return f"{extra[0]} is no longer a parameter"
    key = next(k for k in params if not _inside({k: params[k]}, distributions))
    return f"{key}={params[key]} is outside {describe_distribution(distributions[key])}"


def _inside(params: Mapping[str, Any], distributions: Mapping[str, Any]) -> bool:
    for key, value in params.items():
        dist = distributions[key]
        if isinstance(dist, optuna.distributions.CategoricalDistribution):
            if value not in dist.choices:
                return False
        elif not (isinstance(value, (int, float)) and dist.low <= value <= dist.high):
            return False
    return True


def count_trials(study: optuna.Study) -> dict[str, int]:
    """Trials by state, leaving out the failures that say nothing of their parameters."""
    counts = {state.name: 0 for state in TrialState}
    for trial in _counted(study.get_trials(deepcopy=False)):
        counts[trial.state.name] += 1
    return counts


def best_so_far(trials: Sequence[FrozenTrial], direction: Any) -> list[tuple[int, float]]:
    """(trial number, best value of the complete trials up to it) for each complete trial, in order."""
    complete = {t.number for t in trials if t.state == TrialState.COMPLETE}
    return [(n, value) for n, value, _ in best_value_steps(trials, direction, settled_only=False) if n in complete]


def best_value_steps(trials: Sequence[FrozenTrial], direction: Any, after: int = -1,
                     settled_only: bool = True) -> list[tuple[int, float, int]]:
    """(trial number, best value of the complete trials up to it, the number of the trial that has
    it) for each finished trial above `after`, from the first complete one on. settled_only: only
    the steps no later finish can change, those below the lowest unfinished trial (with trials in
    flight, trial 3 can finish before trial 2)."""
    pick = max if direction == optuna.study.StudyDirection.MAXIMIZE else min
    horizon = min((t.number for t in trials if t.state not in FINISHED), default=math.inf) if settled_only else math.inf
    best, steps = None, []
    for t in sorted((t for t in trials if t.state in FINISHED), key=lambda t: t.number):
        if t.state == TrialState.COMPLETE and (best is None or pick(best.value, t.value) != best.value):
            best = t
        if best is not None and after < t.number < horizon:
            steps.append((t.number, best.value, best.number))
    return steps


def _not_counted(trials: Sequence[FrozenTrial]) -> set[int]:
    """Numbers of failed trials that say nothing of their parameters: their worker died and the
    parameters were queued again, or they were dropped as outside a later start's search space."""
    retried = {n for t in trials for n in t.system_attrs.get("retry_history", [])}
    return retried | {t.number for t in trials if t.user_attrs.get("fail_reason") == DROPPED}


def _counted(trials: Sequence[FrozenTrial]) -> list[FrozenTrial]:
    skip = _not_counted(trials)
    return [t for t in trials if not (t.state == TrialState.FAIL and t.number in skip)]


def _remaining(study: optuna.Study, n_trials: int) -> int:
    """n_trials minus the trials that count toward it (negative when workers overshot)."""
    return n_trials - sum(t.state != TrialState.WAITING for t in _counted(study.get_trials(deepcopy=False)))


def trials_to_go(study: optuna.Study, n_trials: int) -> int:
    """n_trials is the study's total: finished and running trials count toward it, queued ones
    (enqueued, waiting) are still to go; a trial retried after its worker died is counted once, by
    its retry."""
    return max(_remaining(study, n_trials), 0)


def next_step(study: optuna.Study, n_trials: int, heartbeats: bool, reap: Optional[StaleTrials] = None) -> str:
    """What a worker does next: "run" a trial (new, or queued for a retry), "wait" for running
    trials that may yet turn out to belong to a dead worker, or stop ("done"). With `reap`, the
    trials of local workers that died meanwhile are failed and queued again (a sibling SIGKILLed
    mid-study), and the trials of live local workers are waited for, as they could still die."""
    if heartbeats:
        with quietly():
            fail_stale_trials(study)
    if reap is not None:
        reap_dead_local_trials(study, reap)
    if trials_to_go(study, n_trials) > 0:  # queued trials count as to go: a retry, an enqueued one
        return "run"
    running = study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
    if heartbeats and running:
        return "wait"
    if reap is not None and any(other_local_worker(t.user_attrs.get("worker", "")) for t in running):
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
    """A message when more than max_failure_rate of the finished trials failed: judged once
    min_finished trials have finished, or at the first failure when max_failure_rate is 0."""
    counts = count_trials(study)
    finished = sum(counts[s.name] for s in FINISHED)
    if counts["FAIL"] <= max_failure_rate * finished or (max_failure_rate > 0 and finished < min_finished):
        return None
    return (f"{counts['FAIL']} of {finished} trials failed, more than max_failure_rate={max_failure_rate:g}: "
            f"stopping the sweep")


def trial_line(study: optuna.Study, number: int, n_trials: int) -> str:
    """One progress line for a finished trial: `[done/total] trial N STATE: value or reason {params}`."""
    trials = study.get_trials(deepcopy=False)
    trial = next(t for t in trials if t.number == number)
    done = sum(t.state in FINISHED for t in _counted(trials))
    if trial.state == TrialState.COMPLETE:
        detail = "value " + ", ".join(f"{v:.4f}" for v in trial.values)
    elif trial.state == TrialState.PRUNED:
        detail = f"pruned after step {trial.last_step}"
    else:
        detail = trial.user_attrs.get("fail_reason", "")
    shown = ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in trial.params.items())
    return f"[{done}/{n_trials}] trial {number} {trial.state.name}: {detail} ({shown})"


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
