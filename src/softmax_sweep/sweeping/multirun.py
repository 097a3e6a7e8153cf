"""A Hydra callback giving every multirun of the basic sweeper one MLflow parent run and, at the
end, a short table of its jobs. (An Optuna sweep tracked by
sweeping.hydra_sweep opens its own parent per study.)"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Optional

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

# An Optuna sweep with this callback has its own parent run per study
SWEEP_TRACKING = "softmax_sweep.sweeping.hydra_sweep.SweepTracking"


class MlflowMultirunCallback(Callback):
    def __init__(self) -> None:
        self.parent = self.tracker = None

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        callbacks = config.hydra.sweeper.get("callbacks") or {}
        if any(node.get("_target_") == SWEEP_TRACKING for node in callbacks.values()):
            return
        from optuna_pruning.urls import mask_password
        from softmax_sweep import cli
        from softmax_sweep.config import to_settings
        from softmax_sweep.experiment import tracker_for
        from softmax_sweep.job_env import PARENT_ENV, VARIED_ENV, override_values

        app_cfg = OmegaConf.masked_copy(config, [k for k in config if k != "hydra"])
        sweep_dir = config.hydra.sweep.dir
        self.tracker = tracker_for(to_settings(app_cfg))
        self.parent = self.tracker.start_run(
            run_name=f"multirun-{Path(sweep_dir).name}",
            tags={"sweep.kind": "hydra-basic", "hydra.sweep_dir": sweep_dir,
                  "hydra.overrides": mask_password(" ".join(config.hydra.overrides.task))})
        os.environ[PARENT_ENV] = self.parent.run_id
        os.environ[VARIED_ENV] = " ".join(k for k, v in override_values(config.hydra.overrides.task).items()
                                          if _sweeps_values(v))
        cli.on_abort(self._abort)

    def on_job_start(self, config: DictConfig, **kwargs: Any) -> None:
        """A job of this process's grid (the basic launcher): one line, numbered by the job."""
        if self.parent is not None:
            import logging

            from hydra.core.hydra_config import HydraConfig

            from optuna_pruning.urls import mask_password

            job = HydraConfig.get().job
            logging.getLogger("softmax_sweep").info("job %d: %s", job.num,
                                                    mask_password(" ".join(HydraConfig.get().overrides.task)))

    def _abort(self, error: BaseException) -> None:
        if self.parent is not None:
            status = "KILLED" if isinstance(error, KeyboardInterrupt) else "FAILED"
            self.parent.end(status, str(error) or type(error).__name__)
            self.parent = None

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        if self.parent is None:
            return
        from softmax_sweep import cli
        from softmax_sweep.job_env import PARENT_ENV, VARIED_ENV

        cli.forget_abort(self._abort)
        metric = config.get("optimized_metric", "val_acc")
        children = _children(self.parent)
        rows = _job_rows(children, metric)
        print(_table(rows, metric))
        failed = sum(r[2] != "FINISHED" for r in rows)
        self.parent.log_metrics({"jobs": len(rows), "jobs_failed": failed})
        try:
            from softmax_sweep.sweeping.parent import log_grid_report

            log_grid_report(self.parent, *_as_study(children, metric), metric)
        except Exception as e:  # noqa: BLE001 - the jobs are recorded; a figure must not fail the multirun
            print(f"warning: the multirun report failed: {e}")
        from softmax_sweep.views import RUNS_VIEWS

        print(f"runs table (MLflow UI): {self.tracker.runs_url(RUNS_VIEWS[metric])}")
        self.parent.end("FINISHED")
        os.environ.pop(PARENT_ENV, None)
        os.environ.pop(VARIED_ENV, None)
        self.parent = None
        if failed:  # the command's exit code says so (1), after the table
            from softmax_sweep.errors import SweepFailed

            cli.defer(SweepFailed(f"{failed} of {len(rows)} jobs failed (their reasons are in the table above)"))


def _sweeps_values(value: str) -> bool:
    """Whether an override's value is a sweep (`0.1,0.5`, `range(...)`, `choice(...)`, `glob(...)`)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    try:
        return OverridesParser.create().parse_override(f"k={value}").is_sweep_override()
    except Exception:  # noqa: BLE001 - not ours to judge here: Hydra reports a bad override itself
        return False


def _children(parent) -> list:
    client = parent.client
    run = client.get_run(parent.run_id)
    children = client.search_runs([run.info.experiment_id],
                                  filter_string=f"tags.mlflow.parentRunId = '{parent.run_id}'",
                                  max_results=10000)
    return sorted(children, key=lambda c: int(c.data.tags.get("hydra.job_num", "0") or 0))


def _value(text: str) -> Any:
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def _as_study(children, metric: str):
    """The grid's jobs as trials of an in-memory Optuna study (params: the overrides that differ
    between jobs; value: the job's best validation metric), and its search space."""
    import optuna

    from optuna_pruning.search_space import SearchSpace
    from softmax_sweep.config import OPTIMIZABLE_METRICS
    from softmax_sweep.job_env import override_values

    given = [override_values(c.data.tags.get("hydra.overrides", "").split()) for c in children]
    varied = sorted({k for g in given for k in g if len({h.get(k) for h in given}) > 1})
    choices = {k: sorted({_value(g[k]) for g in given if k in g}, key=str) for k in varied}
    distributions = {k: optuna.distributions.CategoricalDistribution(v) for k, v in choices.items()}
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # no "new study created in memory" line
    study = optuna.create_study(direction=OPTIMIZABLE_METRICS[metric])
    for number, (child, values) in enumerate(zip(children, given)):
        params = {k: _value(values[k]) for k in varied if k in values}
        value = child.data.metrics.get(f"best_{metric}")
        state = (optuna.trial.TrialState.COMPLETE if child.info.status == "FINISHED" and value is not None
                 else optuna.trial.TrialState.FAIL)
        study.add_trial(optuna.trial.create_trial(
            params=params, distributions={k: distributions[k] for k in params}, state=state,
            value=value if state == optuna.trial.TrialState.COMPLETE else None,
            user_attrs={"mlflow_run_id": child.info.run_id, "hydra.job_num": number}))
    return study, SearchSpace(distributions, {}, frozenset())


def _job_rows(children, metric: str) -> list[tuple[str, str, str, Optional[float], str]]:
    rows = []
    for child in children:
        tags = child.data.tags
        value = child.data.metrics.get(f"best_{metric}")
        rows.append((tags.get("hydra.job_num", "?"), tags.get("hydra.overrides", ""), child.info.status,
                     value, tags.get("failure_reason", "")))
    return sorted(rows, key=lambda r: int(r[0]) if r[0].isdigit() else 0)


def _table(rows, metric: str) -> str:
    head = ("job", "overrides", "status", f"best {metric}", "reason")
    cells = [head] + [(j, o, s, "" if v is None else f"{v:.4f}", r[:60]) for j, o, s, v, r in rows]
    widths = [max(len(str(row[i])) for row in cells) for i in range(len(head))]
    return "\n".join("  ".join(str(c).ljust(w) for c, w in zip(row, widths)).rstrip() for row in cells)
