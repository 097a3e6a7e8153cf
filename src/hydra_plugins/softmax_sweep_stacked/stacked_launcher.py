"""`hydra/launcher=stacked`: softmax-sweep's launcher for a multirun's jobs in this process that
trains the jobs which can share minibatches in one training pass (softmax_sweep.stacking), each still its
own job: its folder, config, MLflow run and return value. Groups that cannot share train side by
side, up to groups_at_once (0: one per core) at a time."""

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from hydra.core.config_store import ConfigStore
from hydra.core.hydra_config import HydraConfig
from hydra.core.utils import JobReturn, configure_log, filter_overrides, run_job, setup_globals
from hydra.plugins.launcher import Launcher
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, open_dict

log = logging.getLogger(__name__)


@dataclass
class StackedLauncherConf:
    _target_: str = "hydra_plugins.softmax_sweep_stacked.stacked_launcher.StackedLauncher"
    groups_at_once: int = 0


ConfigStore.instance().store(group="hydra/launcher", name="stacked", node=StackedLauncherConf,
                             provider="softmax_sweep")


class _HydraConfigTurns:
    """Hydra keeps one HydraConfig per process and the jobs of a launch run in turns: each turn of a
    job (and of its forks) starts from the HydraConfig its last turn left. (Setting it from the job's
    config instead copies the whole config: 9 s of exercise 2's 572 turns.) A job's first turn
    finds none: Hydra's run_job sets it."""

    def __init__(self) -> None:
        self.cfg: Optional[DictConfig] = None

    def enter(self) -> None:
        if self.cfg is not None:
            HydraConfig.instance().cfg = self.cfg

    def leave(self) -> None:
        self.cfg = HydraConfig.instance().cfg


class StackedLauncher(Launcher):
    in_process = True  # the optuna_pruning sweeper reaches a job's trial in this process,
    launches_together = True  # and hands it n_jobs trials per launch to train together

    def __init__(self, groups_at_once: int = 0) -> None:
        self.groups_at_once = groups_at_once or len(os.sched_getaffinity(0))
        self.config: Optional[DictConfig] = None
        self.hydra_context: Optional[HydraContext] = None
        self.task_function: Optional[TaskFunction] = None

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        from optuna_pruning.reuse import ReusingConfigLoader

        # jobs that differ in values only share one composition (optuna_pruning's sweeper hands its
        # launcher such a loader already). Set on the context the sweeper shares, so that a grid's
        # BasicSweeper, which composes every job once more to validate the batch, reuses it too
        # (a 16-value grid was 32 compositions of ~0.1 s: 2.3x one run's time with them, 1.9x without)
        if not isinstance(hydra_context.config_loader, ReusingConfigLoader):
            hydra_context.config_loader = ReusingConfigLoader(hydra_context.config_loader)
        self.config, self.hydra_context, self.task_function = config, hydra_context, task_function

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        from hydra_plugins.softmax_sweep_stacked.stack import Job, Stack

        setup_globals()
        configure_log(self.config.hydra.hydra_logging, self.config.hydra.verbose)
        Path(str(self.config.hydra.sweep.dir)).mkdir(parents=True, exist_ok=True)
        if len(job_overrides) > 1:
            log.info("Launching %d jobs locally, trained together where they can share minibatches",
                     len(job_overrides))
        jobs = []
        for idx, overrides in enumerate(job_overrides, start=initial_job_idx):
            log.info("\t#%d : %s", idx, " ".join(filter_overrides(overrides)))
            config = self.hydra_context.config_loader.load_sweep_config(self.config, list(overrides))
            with open_dict(config):
                config.hydra.job.id = idx
                config.hydra.job.num = idx
            turns = _HydraConfigTurns()
            jobs.append(Job(body=lambda config=config: run_job(
                hydra_context=self.hydra_context, task_function=self.task_function, config=config,
                job_dir_key="hydra.sweep.dir", job_subdir_key="hydra.sweep.subdir"),
                before_each_step=turns.enter, after_each_step=turns.leave))
        try:
            return Stack(self.groups_at_once).run(jobs)
        finally:
            configure_log(self.config.hydra.hydra_logging, self.config.hydra.verbose)
