"""This app's follower of `hydra -m` sweeps run by the optuna_pruning sweeper (a callback listed in
conf/hydra/sweeper/tracked.yaml): one MLflow parent run per study, the best value after every
trial, the sweep report at the end; a sweep stops when the tracking server stops answering."""
from __future__ import annotations

import logging
import shlex
from typing import Any, Optional

import optuna
from omegaconf import DictConfig, OmegaConf

from optuna_pruning import SweepCallback, job_error
from optuna_pruning.urls import mask_password
from softmax_sweep import interrupts
from softmax_sweep.config import to_settings
from softmax_sweep.data import load_dataset
from softmax_sweep.errors import StoreUnreachable
from softmax_sweep.heap import freeze_setup
from softmax_sweep.sweeping.parent import (
    BestSoFar,
    check_sweep,
    end_stopped_sweep,
    finish_sweep,
    fixed_params,
    open_parent_run,
)
from softmax_sweep.sweeping.recovery import close_stale_run

log = logging.getLogger("softmax_sweep.sweep")


class SweepTracking(SweepCallback):
    def __init__(self) -> None:
        self.parent = self.best = None
        self.client = None

    def on_sweep_start(self, study: optuna.Study, config: DictConfig, search_space: Any) -> None:
        from softmax_sweep.experiment import tracker_for

        freeze_setup()
        app_cfg = OmegaConf.masked_copy(config, [k for k in config if k != "hydra"])
        settings = to_settings(app_cfg)
        check_sweep(settings, [d.name.lower() for d in study.directions])
        # a data set that cannot be loaded fails the sweep now, not every trial; in-process jobs reuse it
        load_dataset(settings.data.name, settings.data.root, settings.data.url)
        tracker = self.tracker = tracker_for(settings)
        self.client, self.space, self.metric = tracker.client, search_space, settings.optimized_metric
        self.parent = open_parent_run(tracker, study, config.hydra.sweeper.storage or "memory", search_space,
                                      settings.seeds, self.metric, fixed_params(app_cfg))
        self.best = BestSoFar(self.parent)
        overrides = [*config.hydra.overrides.hydra, *config.hydra.overrides.task]
        kept = [mask_password(o) for o in overrides
                if not o.startswith(("hydra.sweeper.study_name=", "hydra.mode=", "hydra.runtime"))]
        self.hint = " ".join(["python -m softmax_sweep.train -m", *(shlex.quote(o) for o in kept),
                              "hydra.sweeper.study_name={study}"])
        log.info("MLflow parent run %s of study %s", self.parent.run_id, study.study_name)

    def on_trial_stale(self, study: optuna.Study, trial: Any, reason: str) -> None:
        if self.client is not None:
            close_stale_run(self.client, trial, reason)

    def on_trial_end(self, study: optuna.Study, trial: Any, job_return: Any) -> None:
        self.best.update(study)
        error = job_error(job_return)
        if isinstance(error, StoreUnreachable):  # every later trial would fail the same way
            raise error
        interrupts.check()

    def on_sweep_end(self, study: optuna.Study, error: Optional[BaseException]) -> None:
        if self.parent is None:
            return
        if error is not None:
            if isinstance(error, KeyboardInterrupt) and not self.parent.unreachable:
                self._reconcile_interrupted(study)
            end_stopped_sweep(self.parent, study, self.space, self.hint, error, self.metric)
            return
        for line in finish_sweep(self.parent, study, self.space, self.hint, metric=self.metric):
            log.info(line)

    def _reconcile_interrupted(self, study: optuna.Study) -> None:
        """Trials this sweep failed on Ctrl-C whose run says otherwise, so that MLflow and Optuna
        agree: a job that had not yet opened its run (the launcher was starting it) gets a KILLED
        run; a job whose run had just finished, but whose result never reached the sweep, has
        that run marked KILLED."""
        from optuna_pruning.workers import worker_name
        from softmax_sweep.trial_runs import trial_run_name

        me = worker_name()
        for trial in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.FAIL,)):
            if trial.user_attrs.get("fail_reason") != "interrupted":
                continue
            if run_id := trial.user_attrs.get("mlflow_run_id"):
                try:
                    if self.client.get_run(run_id).info.status == "FINISHED":
                        self.client.set_tag(run_id, "optuna.state", "FAIL")
                        self.client.set_tag(run_id, "failure_reason", "interrupted before its result reached Optuna")
                        self.client.set_terminated(run_id, status="KILLED")
                except Exception as e:  # noqa: BLE001 - on the way out: the interrupt is what to report
                    log.warning("trial %d: its MLflow run could not be marked KILLED: %s", trial.number, e)
                continue
            if trial.user_attrs.get("worker") != me:  # a job elsewhere that never opened its run
                continue
            tags = {"optuna.study_name": study.study_name, "optuna.trial_number": str(trial.number),
                    "optuna.state": "FAIL", "mlflow.parentRunId": self.parent.run_id}
            try:
                run = self.tracker.start_run(trial_run_name(trial.number, trial.params), tags)
                run.log_params(trial.params)
                run.end("KILLED", "interrupted before its job started training")
            except Exception as e:  # noqa: BLE001 - on the way out: the interrupt is what to report
                log.warning("trial %d: no MLflow run could be recorded for it: %s", trial.number, e)
