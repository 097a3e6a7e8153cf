"""This app's MLflow tracking of sweeps run by the optuna_pruning sweeper (a callback listed in
conf/hydra/sweeper/tracked.yaml), extending the library's MlflowSweepTracking: the parent run holds
the fixed settings and the search space as params, each trial's job opens its own run (with its
curves, trial_runs.py), the sweep report ends it; a sweep stops when the tracking server stops
answering."""
from __future__ import annotations

import logging
import shlex
from typing import Any, Optional

import optuna
from omegaconf import DictConfig, OmegaConf

from optuna_pruning import job_error
from optuna_pruning.tracking import MlflowSweepTracking
from optuna_pruning.urls import mask_password
from softmax_sweep import interrupts, views
from softmax_sweep.config import to_settings
from softmax_sweep.data import load_dataset
from softmax_sweep.errors import StoreUnreachable, disk_full
from softmax_sweep.heap import freeze_setup
from softmax_sweep.sweeping.parent import check_sweep, end_stopped_sweep, finish_sweep, fixed_params
from softmax_sweep.sweeping.recovery import close_stale_run

log = logging.getLogger("softmax_sweep.sweep")


class SweepTracking(MlflowSweepTracking):
    child_runs = False  # a trial's job opens its own run, nested under the parent

    def __init__(self) -> None:
        super().__init__()
        self.parent = None
        self.trials_ended = 0

    def connect(self, config: DictConfig) -> tuple[Any, str]:
        return self.tracker.client, self.tracker.experiment_id

    def parent_tags(self, study: optuna.Study) -> dict[str, str]:
        return {**super().parent_tags(study), "optuna.storage": mask_password(self.storage_url), "sweep.kind": "optuna"}

    def create_parent(self, study: optuna.Study, tags: dict[str, str]) -> str:
        return self.tracker.start_run(run_name=f"study-{study.study_name}", tags=tags).run_id

    def write_metrics(self, metrics: list[Any]) -> None:
        self.parent.log_batch(metrics)

    def on_sweep_start(self, study: optuna.Study, config: DictConfig, search_space: Any) -> None:
        from softmax_sweep.experiment import tracker_for

        freeze_setup()
        app_cfg = OmegaConf.masked_copy(config, [k for k in config if k != "hydra"])
        settings = to_settings(app_cfg)
        check_sweep(settings, [d.name.lower() for d in study.directions])
        # a data set that cannot be loaded fails the sweep now, not every trial; in-process jobs reuse it
        load_dataset(settings.data.name, settings.data.root, settings.data.url)
        self.tracker = tracker_for(settings)
        self.storage_url = config.hydra.sweeper.storage or "memory"
        self.space, self.metric = search_space, settings.optimized_metric
        state = views.study_view_state(study.study_name, self.metric, list(search_space.distributions), settings.seeds)
        view_url = self.tracker.save_view(views.study_view_key(study.study_name), state)
        super().on_sweep_start(study, config, search_space)
        self.parent = self.tracker.logger(self.parent_id)
        self.parent.view_url = view_url
        if self.created_parent:
            sweep = {"sweep.sampler": type(study.sampler).__name__, "sweep.pruner": type(study.pruner).__name__,
                     "sweep.direction": study.direction.name.lower(), "sweep.metric": self.metric,
                     "seeds": settings.seeds, **{f"search.{k}": v for k, v in search_space.describe().items()}}
            fixed = {k: v for k, v in fixed_params(app_cfg).items() if k not in search_space.distributions}
            self.parent.log_params({**fixed, **sweep})
            self.parent.flush()
        overrides = [*config.hydra.overrides.hydra, *config.hydra.overrides.task]
        kept = [mask_password(o) for o in overrides
                if not o.startswith(("hydra.sweeper.study_name=", "hydra.mode=", "hydra.runtime"))]
        self.hint = " ".join(["python -m softmax_sweep.train -m", *(shlex.quote(o) for o in kept),
                              "hydra.sweeper.study_name={study}"])
        log.info("MLflow parent run %s of study %s", self.parent_id, study.study_name)

    def on_trial_stale(self, study: optuna.Study, trial: Any, reason: str) -> None:
        if self.client is not None:
            close_stale_run(self.client, trial, reason)

    def on_trial_end(self, study: optuna.Study, trial: Any, job_return: Any) -> None:
        self.trials_ended += 1
        super().on_trial_end(study, trial, job_return)
        error = job_error(job_return)
        if isinstance(error, StoreUnreachable) or disk_full(error):
            raise error  # every later trial would fail the same way
        interrupts.check()

    def on_sweep_end(self, study: optuna.Study, error: Optional[BaseException]) -> None:
        from softmax_sweep.curves import finish_drawing

        finish_drawing()  # the curves of trials trained in this process
        if self.parent is None:
            return
        if error is not None:
            if isinstance(error, KeyboardInterrupt) and not self.parent.unreachable:
                self._reconcile_interrupted(study)
            end_stopped_sweep(self.parent, study, self.space, self.hint, error, self.metric,
                              lambda: self.log_best_so_far(study, final=True))
            return
        if self.reopened_status == "FINISHED" and not self.trials_ended:  # a complete study run again
            self.parent.end("FINISHED")
            return
        for line in finish_sweep(self.parent, study, self.space, self.hint, metric=self.metric,
                                 log_best=lambda: self.log_best_so_far(study, final=True)):
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
                    "optuna.state": "FAIL", "mlflow.parentRunId": self.parent_id}
            try:
                run = self.tracker.start_run(trial_run_name(trial.number, trial.params), tags)
                run.log_params(trial.params)
                run.end("KILLED", "interrupted before its job started training")
            except Exception as e:  # noqa: BLE001 - on the way out: the interrupt is what to report
                log.warning("trial %d: no MLflow run could be recorded for it: %s", trial.number, e)
