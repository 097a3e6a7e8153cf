"""`python -m softmax_sweep.train [overrides]`: one tracked training run, configured by Hydra.

Kept thin and light: MXNet and MLflow are imported only once the config is known to be good.
"""
from __future__ import annotations

from typing import Optional

import hydra
from omegaconf import DictConfig

from softmax_sweep.cli import defer, describe, run_cli
from softmax_sweep.config import CONF_DIR, to_settings


@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="train")
def hydra_main(cfg: DictConfig) -> Optional[float]:
    try:
        to_settings(cfg)  # bad values fail here, before the slow imports below
        from softmax_sweep.experiment import train

        return train(cfg)[cfg.optimized_metric]
    except Exception as e:
        if describe(e) is None:
            raise
        defer(e)
        return None


def main() -> None:
    run_cli(hydra_main)


if __name__ == "__main__":
    main()
