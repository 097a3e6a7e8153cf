"""The Sweeper class Hydra instantiates; the work is in optuna_pruning.sweep, imported when a
sweep starts (Hydra imports this module whenever it starts)."""

from typing import Any, Optional

from hydra.plugins.sweeper import Sweeper
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig

from .config import OptunaPruningSweeperConf  # noqa: F401 - registers the configs


class OptunaPruningSweeper(Sweeper):
    def __init__(self, **settings: Any) -> None:
        from optuna_pruning.sweep import OptunaPruningSweeperImpl

        self.sweeper = OptunaPruningSweeperImpl(**settings)

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        self.sweeper.setup(hydra_context=hydra_context, task_function=task_function, config=config)

    def sweep(self, arguments: list[str]) -> Optional[Any]:
        return self.sweeper.sweep(arguments)
