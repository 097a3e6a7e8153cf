"""The sweep loop: ask Optuna for trials, launch them as Hydra jobs, tell Optuna the outcome."""
from __future__ import annotations

import logging
import os
import shlex
import threading
import time
from collections.abc import Sequence
from typing import Any, Optional

import optuna
from hydra.core.plugins import Plugins
from hydra.core.utils import JobReturn, JobStatus
from hydra.plugins.launcher import Launcher
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, OmegaConf
from optuna.trial import TrialState

from softmax_sweep import interrupts
from softmax_sweep.config import int_keys, to_settings
from softmax_sweep.data import load_dataset
from softmax_sweep.errors import StoreUnreachable, SweepFailed, UserError
from softmax_sweep.heap import freeze_setup
from softmax_sweep.jobs import PARENT_ENV, TRIAL_ENV
from softmax_sweep.sweeping.parent import end_stopped_sweep, finish_sweep, log_best_so_far, open_sweep
from softmax_sweep.sweeping.search_space import parse_search_space
from softmax_sweep.sweeping.study import next_step, too_many_failures, trial_line, trials_to_go
from softmax_sweep.sweeping.trials import LIVE_TRIALS, SEEDS_ENV, SWEEP_ENV_STORAGE, SWEEP_ENV_STUDY
from softmax_sweep.tracking import mask_password

from ._reuse import ReusingConfigLoader

log = logging.getLogger("softmax_sweep.sweep")
DEFAULT_STUDY = "softmax-sweep"


class OptunaSweeperImpl:
    def __init__(self, sampler: Any, pruner: Any, direction: str, storage: Optional[str],
                 study_name: Optional[str], n_trials: int, n_jobs: int, seeds: int, max_failure_rate: float,
                 heartbeat_interval: Optional[int], grace_period: Optional[int],
                 params: Optional[DictConfig]) -> None:
        if n_trials < 1 or n_jobs < 1 or seeds < 1 or not 0 <= max_failure_rate <= 1:
            raise UserError("hydra.sweeper: n_trials, n_jobs and seeds must be at least 1, max_failure_rate in [0, 1]")
        if direction not in ("maximize", "minimize"):
            raise UserError(f"hydra.sweeper.direction must be maximize or minimize, got {direction!r}")
        self.sampler_node, self.pruner_node = sampler, pruner
        self.direction, self.storage_url = direction, storage
        self.study_name = study_name or DEFAULT_STUDY
        self.n_trials, self.n_jobs, self.seeds, self.max_failure_rate = n_trials, n_jobs, seeds, max_failure_rate
        self.heartbeat_interval, self.grace_period = heartbeat_interval, grace_period
        self.params = OmegaConf.to_container(params) if params else {}
        self.job_idx = 0

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        self.config = config
        self.config_loader = ReusingConfigLoader(hydra_context.config_loader)
        self.launcher: Launcher = Plugins.instance().instantiate_launcher(
            config=config, hydra_context=HydraContext(self.config_loader, hydra_context.callbacks),
            task_function=task_function)

    def sweep(self, arguments: list[str]) -> None:
        freeze_setup()
        app_cfg = OmegaConf.masked_copy(self.config, [k for k in self.config if k != "hydra"])
        settings = to_settings(app_cfg)
        # a data set that cannot be loaded fails the sweep now, not every trial; in-process jobs reuse it
        load_dataset(settings.data.name, settings.data.root, settings.data.url)
        space = parse_search_space(self.params, arguments, int_keys())
        if not self.storage_url:
            raise UserError("hydra.sweeper.storage is empty: give an Optuna storage URL")
        opened = open_sweep(settings, space, self.storage_url, self.study_name, self.direction, self.sampler_node,
                            self.pruner_node, self.n_trials, self.heartbeat_interval, self.grace_period)
        self.storage, study, parent, n_trials = opened.storage, opened.study, opened.parent, opened.n_trials
        os.environ.update({PARENT_ENV: parent.run_id, SWEEP_ENV_STORAGE: self.storage_url,
                           SWEEP_ENV_STUDY: self.study_name})
        log.info("study %s in %s: %d trials to go of %d (%s, %s); MLflow parent run %s", self.study_name,
                 mask_password(self.storage_url), trials_to_go(study, n_trials), n_trials,
                 type(study.sampler).__name__, type(study.pruner).__name__, parent.run_id)
        overrides = [*self.config.hydra.overrides.hydra, *self.config.hydra.overrides.task]
        kept = [mask_password(o) for o in overrides
                if not o.startswith(("hydra.sweeper.study_name=", "hydra.mode=", "hydra.runtime"))]
        hint = " ".join(["python -m softmax_sweep.train -m", *(shlex.quote(o) for o in kept),
                         "hydra.sweeper.study_name={study}"])
        self._parent = parent
        try:
            self._loop(study, space, n_trials)
        except (KeyboardInterrupt, Exception) as e:
            end_stopped_sweep(parent, study, space, hint, e, settings.optimized_metric)
            raise
        for line in finish_sweep(parent, study, space, hint, metric=settings.optimized_metric):
            log.info(line)

    def _loop(self, study: optuna.Study, space, n_trials: int) -> None:
        heartbeats = bool(self.heartbeat_interval)
        while (step := next_step(study, n_trials, heartbeats)) != "done":
            interrupts.check()
            if step == "wait":  # running trials elsewhere: finish them, or fail them when their worker died
                time.sleep(self.heartbeat_interval / 2)
                continue
            waiting = len(study.get_trials(deepcopy=False, states=(TrialState.WAITING,)))
            batch = min(self.n_jobs, max(trials_to_go(study, n_trials), waiting))
            trials = [study.ask(space.distributions) for _ in range(batch)]
            overrides = [space.overrides(t.params) + [f"++hydra.job.env_set.{TRIAL_ENV}={t._trial_id}",
                                                      f"++hydra.job.env_set.{SEEDS_ENV}={self.seeds}"]
                         for t in trials]
            LIVE_TRIALS.update({t._trial_id: t for t in trials})
            beating = _Heartbeats(self.storage, [t._trial_id for t in trials], self.heartbeat_interval)
            try:
                returns = self.launcher.launch(overrides, initial_job_idx=self.job_idx)
            except BaseException:
                _fail_unfinished(study, trials)
                raise
            finally:
                beating.stop()
                for t in trials:
                    LIVE_TRIALS.pop(t._trial_id, None)
            self.job_idx += len(returns)
            for trial, ret in zip(trials, returns):
                self._tell(study, trial, ret, n_trials)
            for ret in returns:  # a store that stopped answering: every later trial would fail too
                if ret.status == JobStatus.FAILED and isinstance(ret._return_value, StoreUnreachable):
                    raise ret._return_value
            if message := too_many_failures(study, self.max_failure_rate):
                raise SweepFailed(message)

    def _tell(self, study: optuna.Study, trial: optuna.Trial, ret: JobReturn, n_trials: int) -> None:
        error = ret._return_value if ret.status == JobStatus.FAILED else None
        try:
            if error is None and ret.return_value is not None:
                study.tell(trial, float(ret.return_value))
            elif isinstance(error, optuna.TrialPruned):
                study.tell(trial, state=TrialState.PRUNED)
            else:
                reason = str(error) if error is not None else "the job returned no value"
                trial.set_user_attr("fail_reason", reason)
                study.tell(trial, state=TrialState.FAIL)
        except (RuntimeError, ValueError) as e:  # already finished (e.g. failed by a heartbeat check)
            log.warning("trial %d: %s", trial.number, e)
        log.info(trial_line(study, trial.number, n_trials))
        log_best_so_far(self._parent, study, trial.number)


class _Heartbeats:
    """While a batch of trials runs as Hydra jobs, record their heartbeats (study.optimize does
    this itself; the ask-and-tell loop of a sweeper must)."""

    def __init__(self, storage, trial_ids: Sequence[int], interval: Optional[int]) -> None:
        self.storage, self.trial_ids, self.interval = storage, list(trial_ids), interval
        self.stopped = threading.Event()
        self.thread = None
        if interval and hasattr(storage, "record_heartbeat"):
            self._beat()
            self.thread = threading.Thread(target=self._run, name="optuna-heartbeat", daemon=True)
            self.thread.start()

    def _beat(self) -> None:
        for trial_id in self.trial_ids:
            self.storage.record_heartbeat(trial_id)

    def _run(self) -> None:
        while not self.stopped.wait(self.interval):
            self._beat()

    def stop(self) -> None:
        self.stopped.set()
        if self.thread is not None:
            self.thread.join()


def _fail_unfinished(study: optuna.Study, trials: Sequence[optuna.Trial]) -> None:
    """Mark FAIL the trials of an interrupted batch that are still RUNNING (so a rerun resumes)."""
    running = {t.number for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))}
    for trial in trials:
        if trial.number in running:
            trial.set_user_attr("fail_reason", "interrupted")
            study.tell(trial, state=TrialState.FAIL)
