"""`python -m softmax_sweep.train [overrides]`: one tracked training run, configured by Hydra.

Kept thin: it composes, trains (softmax_sweep.jobs) and returns the optimized metric.
"""
from __future__ import annotations

import sys
from typing import Optional

import hydra
from omegaconf import DictConfig

from softmax_sweep import engine
from softmax_sweep.cli import prepare_overrides, run_cli
from softmax_sweep.config import CONF_DIR
from softmax_sweep.jobs import run_job
from softmax_sweep.passwords import hide_passwords, mask_resolved_secrets


@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="train")
def hydra_main(cfg: DictConfig) -> Optional[float]:
    return run_job(cfg)


def main() -> None:
    def command() -> Optional[float]:
        sys.argv = [sys.argv[0], *hide_passwords(prepare_overrides(sys.argv[1:]))]
        if any(arg in ("-m", "--multirun") for arg in sys.argv[1:]):
            engine.prepare_multirun()
        if any(arg in ("--cfg", "-c") or arg.startswith("--cfg=") for arg in sys.argv[1:]):
            mask_resolved_secrets()  # the config is printed, not used
        return hydra_main()

    run_cli(command)


if __name__ == "__main__":
    main()
