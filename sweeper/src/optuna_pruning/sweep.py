"""The sweep: ask Optuna for trials, launch each as a Hydra job, tell Optuna the outcome.

With n_jobs K and a launcher that runs jobs concurrently (joblib, submitit, ...), K trials are in
flight: each is launched on its own as soon as a slot frees up, so no worker waits for the
slowest trial of a batch. Hydra's basic launcher runs jobs in this process, one at a time; a
launcher that trains a launch's jobs together (`launches_together = True`) gets n_jobs trials per
launch. Long because the loop, its batches and what an interrupt must close belong together."""
from __future__ import annotations

import contextlib
import logging
import threading
import time
import warnings
from collections.abc import Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from pathlib import Path
from typing import Any, Optional

import optuna
from hydra.core.plugins import Plugins
from hydra.core.utils import JobReturn, JobStatus
from hydra.plugins.launcher import Launcher
from hydra.types import HydraContext, TaskFunction
from hydra.utils import get_method, instantiate
from omegaconf import DictConfig, OmegaConf
from optuna.trial import TrialState

from optuna_pruning import trial as door
from optuna_pruning.callbacks import job_error
from optuna_pruning.errors import SweeperError, TooManyFailures
from optuna_pruning.heartbeats import Heartbeats
from optuna_pruning.internals import storage_of, trial_id
from optuna_pruning.quiet import quietly
from optuna_pruning.reuse import ReusingConfigLoader
from optuna_pruning.samplers import make_pruner, make_sampler
from optuna_pruning.search_space import SearchSpace, parse_search_space
from optuna_pruning.stale import StaleTrials, reap_dead_local_trials
from optuna_pruning.storages import STORAGE_TIMEOUT, make_storage
from optuna_pruning.studies import (
    check_choices_unchanged,
    directions_of,
    drop_queued_outside,
    next_step,
    open_study,
    too_many_failures,
    trial_line,
    trials_to_go,
)
from optuna_pruning.urls import mask_password
from optuna_pruning.workers import worker_name

log = logging.getLogger("optuna_pruning")
# a launcher's errors for a job whose worker process died (SIGKILL, out of memory): joblib's loky
# pool, then every job in flight in that pool fails with it; concurrent.futures' process pool
WORKER_DIED = ("TerminatedWorkerError", "BrokenProcessPool")
ENDING_JOBS_WAIT = 3.0  # seconds an interrupted sweep waits for the results of jobs in flight


class OptunaPruningSweeperImpl:
    def __init__(self, sampler: Any, optuna_pruner: Any, direction: Any,
                 storage: Optional[str], study_name: Optional[str],
                 n_trials: int, n_jobs: int, max_failure_rate: float, params: Optional[DictConfig],
                 custom_search_space: Optional[str] = None, heartbeat_interval: Optional[int] = None,
                 grace_period: Optional[int] = None, metric_names: Optional[Sequence[str]] = None,
                 callbacks: Optional[DictConfig] = None, enqueue: Optional[Sequence[Any]] = None,
                 storage_timeout: Optional[float] = STORAGE_TIMEOUT, timeout: Optional[float] = None) -> None:
        if n_trials < 1 or n_jobs < 1 or not 0 <= max_failure_rate <= 1:
            raise SweeperError("hydra.sweeper: n_trials and n_jobs must be at least 1, max_failure_rate in [0, 1]")
        self.directions = directions_of(direction)
        self.sampler_node, self.pruner_node = sampler, optuna_pruner
        self.storage_url, self.study_name, self.storage_timeout = storage, study_name, storage_timeout
        self.timeout = timeout
        self.n_trials, self.n_jobs, self.max_failure_rate = n_trials, n_jobs, max_failure_rate
        # resolved, as upstream reads them: a range may name other config values (`${data.size}`)
        self.params = OmegaConf.to_container(params, resolve=True) if params else {}
        self.extend_space = get_method(custom_search_space) if custom_search_space else None
        self.heartbeat_interval, self.grace_period = heartbeat_interval, grace_period
        self.metric_names = list(metric_names or [])
        self.callbacks = [instantiate(node) for node in (callbacks or {}).values()]
        self.enqueue = OmegaConf.to_container(enqueue, resolve=True) if OmegaConf.is_config(enqueue) else \
            list(enqueue or [])
        self.job_idx = 0
        self.stale: Optional[StaleTrials] = None

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        self.config = config
        self.config_loader = ReusingConfigLoader(hydra_context.config_loader)
        self.launcher: Launcher = Plugins.instance().instantiate_launcher(
            config=config, hydra_context=HydraContext(self.config_loader, hydra_context.callbacks),
            task_function=task_function)

    def sweep(self, arguments: list[str]) -> None:
        space = parse_search_space(self.params, arguments)
        pruner = make_pruner(self.pruner_node)
        pruning = not isinstance(pruner, optuna.pruners.NopPruner)
        if pruning and len(self.directions) > 1:
            raise SweeperError("Optuna prunes single-objective studies only: use hydra/sweeper/optuna_pruner=none "
                               "with several directions")
        in_process = type(self.launcher).__name__ == "BasicLauncher" or getattr(self.launcher, "in_process", False)
        if pruning and not self.storage_url and not in_process:
            raise SweeperError(f"trials of the {type(self.launcher).__name__} run in other processes, which reach "
                               f"their trial through the study's storage: set hydra.sweeper.storage (journal:///"
                               f"file, sqlite:///file, postgresql://...), or hydra/sweeper/optuna_pruner=none")
        self._check_composes(space)
        stale = self.stale = StaleTrials(self._stale)
        storage = make_storage(self.storage_url, self.heartbeat_interval, self.grace_period, self._stale,
                               self.storage_timeout)
        study = open_study(storage, self.study_name, self.directions, make_sampler(self.sampler_node, space), pruner,
                           self.metric_names, self.enqueue, space.distributions)
        if study.trials:  # resumed: a seeded sampler would draw the trials it drew the first time again
            study.sampler = make_sampler(self.sampler_node, space, seed_offset=len(study.trials))
        n_trials = self.n_trials
        if isinstance(study.sampler, optuna.samplers.GridSampler):
            n_trials = min(n_trials, space.grid_size())
        check_choices_unchanged(study, space.distributions)
        for callback in self.callbacks:
            callback.on_sweep_start(study, self.config, space)
        reap_dead_local_trials(study, stale)
        drop_queued_outside(study, space.distributions)
        # a trial of a local worker process that is still ending (its sweep was SIGKILLed moments
        # ago) is waited for and then retried, not left RUNNING as if the study were complete
        if next_step(study, n_trials, bool(self.heartbeat_interval), stale) == "done":
            log.info("study %s already has its %d trials: nothing to run. More trials: hydra.sweeper.n_trials=%d; "
                     "a new study: hydra.sweeper.study_name=NAME", study.study_name, n_trials, 2 * n_trials)
            self._end(study, None)
            return
        # a launcher that trains the jobs of one launch together gets n_jobs trials per launch
        self.together = getattr(self.launcher, "launches_together", False)
        slots = 1 if in_process and not self.together else self.n_jobs
        log.info("study %s in %s: %d trials to go of %d (%s, %s, %d in flight)", study.study_name,
                 mask_password(self.storage_url or "memory"), trials_to_go(study, n_trials), n_trials,
                 type(study.sampler).__name__, type(study.pruner).__name__, slots)
        try:
            self._loop(study, space, n_trials, slots)
        except BaseException as e:
            self._end(study, e)
            raise
        self._save_results(study)
        self._end(study, None)

    def _check_composes(self, space: SearchSpace) -> None:
        """Compose one job of the space before any trial exists: a key that is not in the config (a
        typo) is one line here, not a trial left behind that every later start would retry."""
        sample = {name: dist.choices[0] if isinstance(dist, optuna.distributions.CategoricalDistribution) else dist.low
                  for name, dist in space.distributions.items()}
        choices = self.config.hydra.runtime.choices
        for name, dist in space.distributions.items():
            if name in choices and isinstance(dist, optuna.distributions.CategoricalDistribution):
                options = self.config_loader.get_group_options(name)
                if unknown := [str(c) for c in dist.choices if str(c) not in options and c is not None]:
                    raise SweeperError(f"hydra.sweeper.params.{name}: no option {', '.join(unknown)} in config "
                                       f"group {name!r} (options: {', '.join(options)})")
        try:
            self.config_loader.prepare(self.config, space.overrides(sample))
        except Exception as e:  # noqa: BLE001 - Hydra's composition errors have no common base
            first = " ".join(str(e).split()).split(" To append to your config")[0]
            raise SweeperError(f"hydra.sweeper.params: {first} (is every key of the search space a key of the "
                               f"config? --cfg job lists them)") from None

    def _end(self, study: optuna.Study, error: Optional[BaseException]) -> None:
        for callback in self.callbacks:
            callback.on_sweep_end(study, error)

    def _stale(self, study: optuna.Study, trial, reason: str) -> None:
        for callback in self.callbacks:
            callback.on_trial_stale(study, trial, reason)

    def _loop(self, study: optuna.Study, space: SearchSpace, n_trials: int, slots: int) -> None:
        heartbeats = Heartbeats(storage_of(study), self.heartbeat_interval)
        running: dict[Future, optuna.Trial] = {}
        asked: dict[int, optuna.Trial] = {}  # by number, from study.ask until told: what an interrupt must close
        pool = ThreadPoolExecutor(slots, thread_name_prefix="optuna-trial") if slots > 1 and not self.together else None
        started = time.monotonic()

        def finish(trial: optuna.Trial, ret: JobReturn) -> None:
            self._finish(study, trial, ret, n_trials, heartbeats)
            asked.pop(trial.number, None)  # after: an interrupt before the tell still fails it

        try:
            while True:
                # dead local workers' trials are reaped while none of this sweep's own is in flight: a job
                # process of a launcher (submitit's) is gone before the sweep has told its trial's result
                step = next_step(study, n_trials, bool(self.heartbeat_interval), None if asked else self.stale)
                if step == "run" and self.timeout is not None and time.monotonic() - started > self.timeout:
                    if not running:
                        log.info("hydra.sweeper.timeout=%g s reached: no more trials started (%d to go; a rerun "
                                 "resumes)", self.timeout, trials_to_go(study, n_trials))
                        return
                    step = "wait"
                if step == "run" and len(running) < slots:
                    batch = []
                    for _ in range(max(1, min(slots, trials_to_go(study, n_trials))) if self.together else 1):
                        trial, overrides = self._ask(study, space)
                        asked[trial.number] = trial  # at once: an interrupt from here on fails it
                        batch.append((trial, overrides))
                        heartbeats.add(trial_id(trial))
                    idx, self.job_idx = self.job_idx, self.job_idx + len(batch)
                    if pool is None:
                        for (trial, _), ret in zip(batch, self._launch(batch, idx)):
                            finish(trial, ret)
                    else:
                        (trial, overrides), = batch
                        self.config_loader.prepare(self.config, overrides)
                        running[pool.submit(lambda *a: self._launch(*a)[0], batch, idx)] = trial
                    continue
                if not running:
                    if step == "done":
                        return
                    # others' trials: finish, go stale or lose their local worker
                    threading.Event().wait(self.heartbeat_interval / 2 if self.heartbeat_interval else 1.0)
                    continue
                done, _ = wait(running, timeout=self.heartbeat_interval, return_when=FIRST_COMPLETED)
                for future in done:
                    finish(running.pop(future), _result(future))
        except BaseException:
            # jobs in flight got the terminal's Ctrl-C too and end within a second or two, or had just
            # finished: what they return counts; those still running after that are failed
            wait(running, timeout=ENDING_JOBS_WAIT)
            for future in [f for f in running if f.done() and not f.cancelled()]:
                ret = _result(future)
                if ret.status == JobStatus.COMPLETED:
                    with contextlib.suppress(BaseException):  # a callback seeing the interrupt again
                        finish(running.pop(future), ret)
            _fail_unfinished(study, list(asked.values()))
            raise
        finally:
            heartbeats.stop()
            if pool is not None:
                pool.shutdown(wait=False, cancel_futures=True)

    def _ask(self, study: optuna.Study, space: SearchSpace) -> tuple[optuna.Trial, list[str]]:
        trial = study.ask(space.distributions)
        try:
            return self._prepare(study, space, trial)
        except BaseException:  # SIGTERM or a bad custom search space while it was set up: not left RUNNING
            _fail_unfinished(study, [trial])
            raise

    def _prepare(self, study: optuna.Study, space: SearchSpace, trial: optuna.Trial) -> tuple[optuna.Trial, list[str]]:
        trial.set_user_attr("worker", worker_name())  # a job in another process sets its own
        for name, value in space.fixed.items():  # as hydra-optuna-sweeper records them, passwords masked
            trial.set_user_attr(name, mask_password(value))
        if self.extend_space is not None:
            self.extend_space(self.config, trial)
            if overlap := sorted(set(trial.params) & set(space.fixed)):  # _ask fails the trial
                raise SweeperError(f"custom_search_space suggests {overlap}, which the sweep also fixes")
        overrides = [*space.overrides(trial.params), *door.job_overrides(trial)]
        door._LIVE[trial_id(trial)] = trial
        return trial, overrides

    def _launch(self, batch: list[tuple[optuna.Trial, list[str]]], idx: int) -> Sequence[JobReturn]:
        try:
            return self.launcher.launch([overrides for _, overrides in batch], initial_job_idx=idx)
        finally:
            for trial, _ in batch:
                door._LIVE.pop(trial_id(trial), None)

    def _finish(self, study: optuna.Study, trial: optuna.Trial, ret: JobReturn, n_trials: int,
                heartbeats: Heartbeats) -> None:
        heartbeats.remove(trial_id(trial))
        with quietly(), warnings.catch_warnings():  # the grid sampler stops the study when its grid is done
            warnings.filterwarnings("ignore", message=r".*Study.stop. is supposed to be invoked")
            self._tell(study, trial, ret)
        log.info(trial_line(study, trial.number, n_trials))
        frozen = storage_of(study).get_trial(trial_id(trial))
        for callback in self.callbacks:
            callback.on_trial_end(study, frozen, ret)
        if message := too_many_failures(study, self.max_failure_rate):
            error = job_error(ret)
            last = f" (the last: {type(error).__name__}: {error})" if error is not None else ""
            raise TooManyFailures(message + last)

    def _tell(self, study: optuna.Study, trial: optuna.Trial, ret: JobReturn) -> None:
        error = job_error(ret)
        if type(error).__name__ in WORKER_DIED:  # the launcher's worker process was killed: not the trial's fault
            reason = f"its worker process died ({type(error).__name__})"
            try:
                trial.set_user_attr("fail_reason", reason)
                study.tell(trial, state=TrialState.FAIL)
            except (RuntimeError, ValueError):
                return
            self.stale(study, storage_of(study).get_trial(trial_id(trial)), reason)
            return
        try:
            if isinstance(error, optuna.TrialPruned):
                study.tell(trial, state=TrialState.PRUNED)
                return
            if error is None:
                values = self._values(ret.return_value)
                if isinstance(values, list):
                    study.tell(trial, values)
                    return
                error = values
            trial.set_user_attr("fail_reason", str(error) or type(error).__name__)
            study.tell(trial, state=TrialState.FAIL)
        except (RuntimeError, ValueError) as e:  # already finished (e.g. failed by a heartbeat check)
            log.warning("trial %d: %s", trial.number, e)

    def _values(self, value: Any) -> list[float] | ValueError:
        """The job's return value as Optuna's values, or the error that fails the trial."""
        try:
            values = [float(value)] if len(self.directions) == 1 else [float(v) for v in value]
        except (TypeError, ValueError):
            kind = "a float" if len(self.directions) == 1 else f"a list of {len(self.directions)} floats"
            return ValueError(f"the task function returned {value!r}, not {kind}")
        if len(values) != len(self.directions):
            return ValueError(f"the task function returned {len(values)} values for {len(self.directions)} "
                              f"directions")
        return values

    def _save_results(self, study: optuna.Study) -> None:
        """optimization_results.yaml in the sweep folder, as hydra-optuna-sweeper writes it."""
        complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        if not complete:
            return
        if len(self.directions) == 1:
            best = study.best_trial
            results = {"name": "optuna", "best_params": best.params, "best_value": best.value}
            log.info("best value %s (trial %d): %s", best.value, best.number, best.params)
        else:
            results = {"name": "optuna", "solutions": [{"params": t.params, "values": t.values}
                                                       for t in study.best_trials]}
            log.info("Pareto front: %d trials", len(results["solutions"]))
        folder = Path(self.config.hydra.sweep.dir)
        folder.mkdir(parents=True, exist_ok=True)
        OmegaConf.save(OmegaConf.create(results), folder / "optimization_results.yaml")


def _result(future: Future) -> JobReturn:
    try:
        return future.result()
    except BaseException as e:  # noqa: BLE001 - the launcher failed on this job alone (KeyboardInterrupt: its Ctrl-C)
        return JobReturn(status=JobStatus.FAILED, _return_value=e)


def _fail_unfinished(study: optuna.Study, trials: Sequence[optuna.Trial]) -> None:
    """Mark FAIL the trials of an interrupted sweep that are still RUNNING (so a rerun resumes)."""
    running = {t.number for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))}
    for trial in trials:
        if trial.number in running:
            trial.set_user_attr("fail_reason", "interrupted")
            study.tell(trial, state=TrialState.FAIL)
