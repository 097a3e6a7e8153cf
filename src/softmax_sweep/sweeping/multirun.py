"""A Hydra callback giving every multirun of the basic sweeper one MLflow parent run and, at the
end, a short table of its jobs. (The project's Optuna sweeper opens its own parent per study.)"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Optional

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

OPTUNA_SWEEPER = "hydra_plugins.softmax_sweep_optuna.optuna_sweeper.OptunaSweeper"


class MlflowMultirunCallback(Callback):
    def __init__(self) -> None:
        self.parent = None

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        if config.hydra.sweeper.get("_target_") == OPTUNA_SWEEPER:
            return
        from softmax_sweep import cli
        from softmax_sweep.config import to_settings
        from softmax_sweep.experiment import tracker_for
        from softmax_sweep.jobs import PARENT_ENV
        from softmax_sweep.tracking import mask_password

        app_cfg = OmegaConf.masked_copy(config, [k for k in config if k != "hydra"])
        sweep_dir = config.hydra.sweep.dir
        self.parent = tracker_for(to_settings(app_cfg)).start_run(
            run_name=f"multirun-{Path(sweep_dir).name}",
            tags={"sweep.kind": "hydra-basic", "hydra.sweep_dir": sweep_dir,
                  "hydra.overrides": mask_password(" ".join(config.hydra.overrides.task))})
        os.environ[PARENT_ENV] = self.parent.run_id
        cli.on_abort(self._abort)

    def _abort(self, error: BaseException) -> None:
        if self.parent is not None:
            status = "KILLED" if isinstance(error, KeyboardInterrupt) else "FAILED"
            self.parent.end(status, str(error) or type(error).__name__)
            self.parent = None

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        if self.parent is None:
            return
        from softmax_sweep import cli
        from softmax_sweep.jobs import PARENT_ENV

        cli.forget_abort(self._abort)
        rows = _job_rows(self.parent, config.get("optimized_metric", "val_acc"))
        print(_table(rows, config.get("optimized_metric", "val_acc")))
        failed = sum(r[2] != "FINISHED" for r in rows)
        self.parent.log_metrics({"jobs": len(rows), "jobs_failed": failed})
        self.parent.end("FINISHED")
        os.environ.pop(PARENT_ENV, None)
        self.parent = None


def _job_rows(parent, metric: str) -> list[tuple[str, str, str, Optional[float], str]]:
    client = parent.client
    run = client.get_run(parent.run_id)
    children = client.search_runs([run.info.experiment_id],
                                  filter_string=f"tags.mlflow.parentRunId = '{parent.run_id}'",
                                  max_results=10000)
    rows = []
    for child in children:
        tags = child.data.tags
        value = child.data.metrics.get(f"best_{metric}") if metric == "val_acc" else None
        rows.append((tags.get("hydra.job_num", "?"), tags.get("hydra.overrides", ""), child.info.status,
                     value, tags.get("failure_reason", "")))
    return sorted(rows, key=lambda r: int(r[0]) if r[0].isdigit() else 0)


def _table(rows, metric: str) -> str:
    head = ("job", "overrides", "status", f"best {metric}", "reason")
    cells = [head] + [(j, o, s, "" if v is None else f"{v:.4f}", r[:60]) for j, o, s, v, r in rows]
    widths = [max(len(str(row[i])) for row in cells) for i in range(len(head))]
    return "\n".join("  ".join(str(c).ljust(w) for c, w in zip(row, widths)).rstrip() for row in cells)
