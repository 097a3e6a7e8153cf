"""What one Hydra job does: a plain run, a job of a multirun, or a trial of an Optuna sweep."""
from __future__ import annotations

import logging
import os
import sys
from collections.abc import Sequence
from dataclasses import fields
from pathlib import Path
from typing import Optional

from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

from optuna_pruning import current_trial
from optuna_pruning.tracking import PARENT_ATTR
from optuna_pruning.urls import mask_password
from softmax_sweep import engine, interrupts
from softmax_sweep.cli import defer, describe
from softmax_sweep.config import TrainConfig, to_settings
from softmax_sweep.errors import UserError
from softmax_sweep.job_env import PARENT_ENV, VARIED_ENV, override_values
from softmax_sweep.passwords import mask_logs, scrub_files

log = logging.getLogger("softmax_sweep")


def _multirun() -> bool:
    return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN


def _scrub_saved_configs() -> None:
    """Hydra has saved the job's configs: mask any URL password a config file put there."""
    if not HydraConfig.initialized():
        return
    hydra_cfg = HydraConfig.get()
    folder = Path(hydra_cfg.runtime.output_dir) / (hydra_cfg.output_subdir or ".hydra")
    files = [folder / name for name in ("config.yaml", "hydra.yaml", "overrides.yaml")]
    if _multirun():
        files.append(Path(hydra_cfg.sweep.dir) / "multirun.yaml")
    scrub_files(files)


def _job_name(overrides: Sequence[str]) -> str:
    """A grid job's run name: what the multirun varied (`lr=0.5 bs=64`), not what all its jobs share."""
    from softmax_sweep.experiment import run_label

    values = override_values(overrides)
    varied = os.environ.get(VARIED_ENV, "").split()
    return run_label({k: v for k, v in values.items() if k in varied} if varied else
                     {k: v for k, v in values.items() if not k.startswith(("hydra.", "tracking.", "mlruns_dir"))})


def run_job(cfg: DictConfig) -> Optional[float]:
    """Train once and return cfg.optimized_metric (None when the job failed).

    A user error or a diverged run never becomes a traceback: a plain run reports it after Hydra
    returns (exit 2 or 1); a multirun job logs one line and lets the other jobs run. A trial of
    the optuna_pruning sweeper raises instead, so the sweeper records FAIL or PRUNED."""
    trial, training = None, False
    interrupts.install()  # a job in a launcher's worker process: Ctrl-C and SIGTERM as in a run
    logging.raiseExceptions = False  # and a log file on a full disk as in a run (cli.run_cli)
    try:
        trial = current_trial()  # in another process than the sweeper: from the study's storage
        _scrub_saved_configs()
        mask_logs()
        if deleted := [f.name for f in fields(TrainConfig) if f.name not in cfg]:
            raise UserError(f"{deleted[0]} was deleted from the config (~{deleted[0]}): every run needs it; "
                            f"set it with {deleted[0]}=VALUE")
        settings = to_settings(cfg)  # bad values fail here, before MXNet and MLflow are imported
        if os.environ.get("MXNET_ENGINE_TYPE") and "mxnet" not in sys.modules:
            engine.start_quietly()  # a launcher's worker process
        engine.waiting_thread()  # a job of the stacked launcher, in a thread of its own
        if trial is not None:
            from softmax_sweep.curves import draw_in_background
            from softmax_sweep.trial_runs import run_trial

            draw_in_background()  # while the next trial of this process trains

            parent = trial.study.user_attrs.get(PARENT_ATTR)  # the sweep's MLflow parent run, if it has one
            return run_trial(cfg, trial, trial.study.study_name, parent, settings.seeds)
        if settings.seeds > 1:  # a trial trains its seeds (trial_runs); a run would record them untrained
            raise UserError(f"seeds={settings.seeds} is for sweeps, where each trial trains seeds seed, seed+1, ...: "
                            "a run trains one seed (seed=N), or run -m sweep=NAME with seeds")
        from softmax_sweep.experiment import train

        parent = os.environ.get(PARENT_ENV)
        tags = {"mlflow.parentRunId": parent} if parent and _multirun() else {}
        name = None
        if _multirun():
            tags["hydra.overrides"] = mask_password(" ".join(HydraConfig.get().overrides.task))
            tags["hydra.job_num"] = str(HydraConfig.get().job.num)
            name = _job_name(HydraConfig.get().overrides.task)
        training = True  # from here on, a failure is recorded in the run itself
        return train(cfg, tags=tags, run_name=name).get(cfg.optimized_metric)  # None without a validation set
    except Exception as e:
        message = describe(e)
        if message is None or trial is not None:
            raise
        if _multirun():
            log.error("job %s failed: %s", HydraConfig.get().job.num, message)
            if not training:
                _record_failed_job(cfg, message)
        else:
            defer(e)
        return None


def _record_failed_job(cfg: DictConfig, reason: str) -> None:
    """A multirun job whose settings were refused still gets its run: FAILED, with the reason,
    under the multirun's parent (so the table and the MLflow UI show every job)."""
    from softmax_sweep.experiment import open_tracker
    from softmax_sweep.stores import resolve_tracking_uri

    parent = os.environ.get(PARENT_ENV)
    try:
        tracking = cfg.tracking
        tracker = open_tracker(resolve_tracking_uri(tracking.uri, cfg.mlruns_dir), tracking.experiment,
                               cfg.mlruns_dir, float(tracking.retry_seconds))
        overrides = HydraConfig.get().overrides.task
        tags = {"hydra.overrides": mask_password(" ".join(overrides)), "hydra.job_num": str(HydraConfig.get().job.num),
                **({"mlflow.parentRunId": parent} if parent else {})}
        tracker.start_run(_job_name(overrides), tags).end("FAILED", reason)
    except Exception as e:  # noqa: BLE001 - the job's own error is the one to report
        log.warning("job %s: its failure could not be recorded in MLflow: %s", HydraConfig.get().job.num, e)
