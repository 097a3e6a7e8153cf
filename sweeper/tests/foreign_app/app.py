"""A small Hydra app that is not softmax-sweep: the sphere function of hydra-optuna-sweeper's
example, with optional per-step reports (for pruning), failures, sleeps and a second objective.
It reaches the optuna_pruning sweeper only through its public API."""
import time
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from optuna_pruning import current_trial, report


@hydra.main(version_base="1.3", config_path="conf", config_name="config")
def sphere(cfg: DictConfig):
    started = time.time()
    folder = Path(HydraConfig.get().runtime.output_dir)
    if cfg.must_not_have is not None and cfg.must_not_have in cfg:
        raise RuntimeError(f"{cfg.must_not_have} was not deleted")
    if cfg.fail_above is not None and cfg.x > cfg.fail_above:
        raise RuntimeError(f"x={cfg.x} is above {cfg.fail_above}")
    value = cfg.x ** 2 + cfg.y ** 2
    for step in range(1, cfg.steps + 1):  # a value that improves with each step, as a loss does
        time.sleep(cfg.sleep * (1 + abs(cfg.x)))
        report(value + 10.0 / step, step)
    trial = current_trial()
    (folder / "trial.txt").write_text(f"{trial.number if trial else -1} {started} {time.time()}")
    if cfg.objectives == 2:
        return value, (cfg.x - 2) ** 2 + (cfg.y - 1) ** 2
    return value


def extend(cfg: DictConfig, trial) -> None:
    """custom_search_space: z depends on x, as in hydra-optuna-sweeper's example."""
    x = trial.params["x"]
    trial.suggest_float("z", x - cfg.max_z_difference_from_x, x + cfg.max_z_difference_from_x)
    trial.suggest_float("+w", 0.0, 1.0)


if __name__ == "__main__":
    sphere()
