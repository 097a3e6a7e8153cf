"""The Sweeper class Hydra discovers; the work is in _core, imported only when a sweep starts."""

from typing import Any, Optional

from hydra.plugins.sweeper import Sweeper
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig

from .config import OptunaSweeperConf  # noqa: F401 - registers the configs


class OptunaSweeper(Sweeper):
    def __init__(self, **settings: Any) -> None:
        from ._core import OptunaSweeperImpl

        self.sweeper = OptunaSweeperImpl(**settings)

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        self.sweeper.setup(hydra_context=hydra_context, task_function=task_function, config=config)

    def sweep(self, arguments: list[str]) -> Optional[Any]:
        return self.sweeper.sweep(arguments)
