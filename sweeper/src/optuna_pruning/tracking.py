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
the parent's `best_value` at step = trial number. An app that tracks its own runs in MLflow
extends this class: `child_runs = False` (its trials open their runs, nested under the parent
whose id is in the study's user attribute `mlflow_parent_run_id`), and `connect` / `create_parent`
to use its own client and run creation."""
from __future__ import annotations

import time
from typing import Any, Optional

from optuna_pruning.callbacks import SweepCallback

PARENT_ATTR = "mlflow_parent_run_id"


class MlflowSweepTracking(SweepCallback):
    child_runs = True  # one run per trial, written after it ends

    def __init__(self, tracking_uri: Optional[str] = None, experiment_name: str = "optuna-sweeps") -> None:
        self.tracking_uri, self.experiment_name = tracking_uri, experiment_name
        self.client = self.parent_id = None
        self.reopened_status: Optional[str] = None  # the parent's status before this sweep (None: a new one)
        self.created_parent = False  # this sweep created the parent run it uses

    def connect(self, config: Any) -> tuple[Any, str]:
        """(MlflowClient, experiment id) of the store the sweep is tracked in."""
        from mlflow.tracking import MlflowClient

        client = MlflowClient(self.tracking_uri)
        found = client.get_experiment_by_name(self.experiment_name)
        return client, found.experiment_id if found else client.create_experiment(self.experiment_name)

    def parent_tags(self, study: Any) -> dict[str, str]:
        return {"optuna.study_name": study.study_name}

    def create_parent(self, study: Any, tags: dict[str, str]) -> str:
        """A new RUNNING parent run; its id."""
        return self.client.create_run(self.experiment_id, run_name=f"study-{study.study_name}", tags=tags).info.run_id

    def on_sweep_start(self, study: Any, config: Any, search_space: Any) -> None:
        self.client, self.experiment_id = self.connect(config)
        self.parent_id = self._reopen_parent(study) or self._new_parent(study)
        self.logged = max((m.step for m in self.client.get_metric_history(self.parent_id, "best_value")), default=-1)

    def _reopen_parent(self, study: Any) -> Optional[str]:
        from mlflow.exceptions import MlflowException

        from optuna_pruning.workers import worker_name

        run_id = study.user_attrs.get(PARENT_ATTR)
        if not run_id:
            return None
        try:
            run = self.client.get_run(run_id)
        except MlflowException:
            return None  # recorded in another tracking store, or deleted: a new one here
        if run.info.experiment_id != self.experiment_id or run.info.lifecycle_stage != "active":
            return None
        self.reopened_status = run.info.status
        if run.info.status != "RUNNING":  # resumed: this process owns it now (other workers share it)
            self.client.update_run(run_id, status="RUNNING")
            self.client.set_tag(run_id, "worker", worker_name())
        return run_id

    def _new_parent(self, study: Any) -> str:
        tags = self.parent_tags(study)
        run_id = self.create_parent(study, tags)
        # Sweeps started together on a new study each create a parent: all keep the earliest one.
        query = " and ".join([*(f"tags.`{k}` = '{v.replace(chr(39), '')}'" for k, v in tags.items()),
                              "attributes.status = 'RUNNING'"])
        found = self.client.search_runs([self.experiment_id], filter_string=query)
        first = min(found, key=lambda r: (r.info.start_time, r.info.run_id), default=None)
        if first is not None and first.info.run_id != run_id:
            self.client.delete_run(run_id)
            run_id, self.reopened_status = first.info.run_id, "RUNNING"
        else:
            self.created_parent = True
        study.set_user_attr(PARENT_ATTR, run_id)
        return run_id

    def __call__(self, study: Any, trial: Any) -> None:
        """An Optuna callback too (`study.optimize(f, callbacks=[tracking])`, as optuna-integration's
        MLflowCallback): the parent run opens with the first trial; on_sweep_end(study, None) ends it."""
        if self.client is None:
            self.on_sweep_start(study, None, None)
        self.on_trial_end(study, trial, None)

    def on_trial_end(self, study: Any, trial: Any, job_return: Any) -> None:
        if self.child_runs:
            self._log_trial(study, trial)
        if len(study.directions) == 1:
            self.log_best_so_far(study, final=False)

    def _log_trial(self, study: Any, trial: Any) -> None:
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

    def log_best_so_far(self, study: Any, final: bool) -> None:
        """The parent's `best_value` (and `best_trial_number`, `best_<first metric name>`) at step =
        trial number, so its chart is the study's optimization history. A step is logged once no
        trial finishing later can change it (final: every step left, also those a trial still
        RUNNING elsewhere holds back); steps the parent has (a resumed study, another worker) are
        not logged again."""
        if metrics := best_so_far_metrics(study, self.logged, final):
            self.write_metrics(metrics)
            self.logged = metrics[-1].step

    def write_metrics(self, metrics: list[Any]) -> None:
        """Write MLflow Metric objects to the parent run."""
        for start in range(0, len(metrics), 900):  # MLflow takes at most 1000 metrics per call
            self.client.log_batch(self.parent_id, metrics=metrics[start:start + 900])

    def on_sweep_end(self, study: Any, error: Optional[BaseException]) -> None:
        if self.client is None:
            return
        if len(study.directions) == 1:
            self.log_best_so_far(study, final=True)
        status = "FINISHED" if error is None else "KILLED" if isinstance(error, KeyboardInterrupt) else "FAILED"
        self.client.set_terminated(self.parent_id, status)


def best_so_far_metrics(study: Any, after: int = -1, final: bool = True) -> list[Any]:
    """MLflow metrics of MlflowSweepTracking.log_best_so_far for the steps above `after`."""
    from mlflow.entities import Metric

    from optuna_pruning.studies import best_value_steps

    now = int(time.time() * 1000)
    named = (study.metric_names or [])[:1]
    metrics = []
    for number, value, best in best_value_steps(study.get_trials(deepcopy=False), study.direction, after, not final):
        metrics += [*(Metric(f"best_{name}", value, now, number) for name in named),
                    Metric("best_trial_number", best, now, number), Metric("best_value", value, now, number)]
    return metrics


def _ms(when) -> Optional[int]:
    return int(when.timestamp() * 1000) if when is not None else None
