"""MLflow tracking of a sweep for any app that turns it on:

    hydra:
      sweeper:
        callbacks:
          mlflow:
            _target_: optuna_pruning.tracking.MlflowSweepTracking
            tracking_uri: sqlite:///mlflow.db     # null: MLflow's own default (MLFLOW_TRACKING_URI)
            experiment_name: my-sweeps

One parent run per study (`study-<name>`, reopened when the study resumes) and, after each trial,
one child run with its parameters, its value(s), the values it reported by step and its state;
the parent's `best_value` at step = trial number. An app that tracks its own runs in MLflow can
nest them instead: current_trial() gives the trial, and this callback's parent run id is in the
study's user attribute `mlflow_parent_run_id`."""
from __future__ import annotations

import time
from typing import Any, Optional

from optuna_pruning.callbacks import SweepCallback

PARENT_ATTR = "mlflow_parent_run_id"


class MlflowSweepTracking(SweepCallback):
    def __init__(self, tracking_uri: Optional[str] = None, experiment_name: str = "optuna-sweeps") -> None:
        self.tracking_uri, self.experiment_name = tracking_uri, experiment_name
        self.client = self.parent_id = None

    def on_sweep_start(self, study: Any, config: Any, search_space: Any) -> None:
        from mlflow.tracking import MlflowClient

        self.client = MlflowClient(self.tracking_uri)
        found = self.client.get_experiment_by_name(self.experiment_name)
        self.experiment_id = found.experiment_id if found else self.client.create_experiment(self.experiment_name)
        run_id = study.user_attrs.get(PARENT_ATTR)
        if run_id and self.client.get_run(run_id).info.lifecycle_stage == "active":
            self.client.update_run(run_id, status="RUNNING")
        else:
            run_id = self.client.create_run(self.experiment_id, run_name=f"study-{study.study_name}",
                                            tags={"optuna.study_name": study.study_name}).info.run_id
            study.set_user_attr(PARENT_ATTR, run_id)
        self.parent_id = run_id
        self.logged = max((m.step for m in self.client.get_metric_history(run_id, "best_value")), default=-1)

    def __call__(self, study: Any, trial: Any) -> None:
        """An Optuna callback too (`study.optimize(f, callbacks=[tracking])`, as optuna-integration's
        MLflowCallback): the parent run opens with the first trial; on_sweep_end(study, None) ends it."""
        if self.client is None:
            self.on_sweep_start(study, None, None)
        self.on_trial_end(study, trial, None)

    def on_trial_end(self, study: Any, trial: Any, job_return: Any) -> None:
        from mlflow.entities import Metric, Param, RunTag

        state = trial.state.name
        tags = {"mlflow.parentRunId": self.parent_id, "optuna.study_name": study.study_name,
                "optuna.trial_number": str(trial.number), "optuna.state": state}
        if "fail_reason" in trial.user_attrs:
            tags["failure_reason"] = str(trial.user_attrs["fail_reason"])[:5000]
        marker = f" ({state.lower()})" if state != "COMPLETE" else ""
        run = self.client.create_run(self.experiment_id, start_time=_ms(trial.datetime_start),
                                     run_name=f"#{trial.number}{marker} {study.study_name}", tags=tags)
        end = _ms(trial.datetime_complete) or _ms(trial.datetime_start)
        metrics = [Metric("reported", v, end, step) for step, v in sorted(trial.intermediate_values.items())]
        names = study.metric_names or [f"value_{i}" if len(trial.values or []) > 1 else "value"
                                       for i in range(len(trial.values or []))]
        metrics += [Metric(name, v, end, 0) for name, v in zip(names, trial.values or [])]
        self.client.log_batch(run.info.run_id, metrics=metrics,
                              params=[Param(k, str(v)) for k, v in trial.params.items()],
                              tags=[RunTag(k, v) for k, v in tags.items()])
        self.client.set_terminated(run.info.run_id, "FAILED" if state == "FAIL" else "FINISHED", end_time=end)
        if len(study.directions) == 1:
            self._log_best_so_far(study, final=False)

    def _log_best_so_far(self, study: Any, final: bool) -> None:
        """best_value at step = trial number, each once no trial finishing later can change it."""
        from mlflow.entities import Metric

        from optuna_pruning.studies import best_value_steps

        now = int(time.time() * 1000)
        steps = best_value_steps(study.get_trials(deepcopy=False), study.direction, self.logged, not final)
        metrics = [Metric("best_value", value, now, number) for number, value, _ in steps]
        if metrics:
            self.client.log_batch(self.parent_id, metrics=metrics)
            self.logged = metrics[-1].step

    def on_sweep_end(self, study: Any, error: Optional[BaseException]) -> None:
        if self.client is None:
            return
        if len(study.directions) == 1:
            self._log_best_so_far(study, final=True)
        status = "FINISHED" if error is None else "KILLED" if isinstance(error, KeyboardInterrupt) else "FAILED"
        self.client.set_terminated(self.parent_id, status)


def _ms(when) -> Optional[int]:
    return int(when.timestamp() * 1000) if when is not None else None
