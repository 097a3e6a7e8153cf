"""The Sweeper class Hydra instantiates; the work is in optuna_pruning.sweep, imported when a
sweep starts (Hydra imports this module whenever it starts)."""

import importlib.util
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


if importlib.util.find_spec("hydra_plugins.hydra_optuna_sweeper") is None:

    class UpstreamName(OptunaPruningSweeper):
        """hydra-optuna-sweeper's class name, registered only where that plugin is not installed:
        a config written for it that names its class in `hydra.sweeper._target_` (as
        lightning-hydra-template's hparams_search files do) switches over with its defaults line
        alone. Hydra files a plugin under `__module__.__name__` and imports it by
        `__module__.__qualname__`: the first is upstream's name, the second this plugin's class."""

    UpstreamName.__module__ = "hydra_plugins"
    UpstreamName.__name__ = "hydra_optuna_sweeper.optuna_sweeper.OptunaSweeper"
    UpstreamName.__qualname__ = "optuna_pruning_sweeper.sweeper.OptunaPruningSweeper"
