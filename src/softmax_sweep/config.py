"""Typed schema of the Hydra config; importing this module registers it with the ConfigStore."""
from __future__ import annotations

import functools
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, DictConfig, OmegaConf

from softmax_sweep import passwords  # noqa: F401 - registers the ${secret:N} resolver
from softmax_sweep.errors import UserError

PROJECT_ROOT = Path(__file__).resolve().parents[2]
CONF_DIR = PROJECT_ROOT / "conf"

DATASETS = ("fashion_mnist", "mnist", "idx", "digits")
OPTIMIZABLE_METRICS = {"val_acc": "maximize", "val_loss": "minimize"}
LR_SCHEDULES = ("constant", "cosine")


@dataclass
class DataConfig:
    name: str = MISSING
    # a folder holding the IDX files, tried before the other places (never written to); unused by digits
    root: Optional[str] = None
    # base URL to download from instead of the official address (mirrors, tests)
    url: Optional[str] = None
    # validation examples carved from the training set (seeded, disjoint); 0 = none: train on all
    # of it and report the last epoch, as the chapter does
    val_size: int = 5000
    # keep only this many training examples (after the validation split); null = all
    train_size: Optional[int] = None
    # sweep=overfit's training-set sizes: two small ones, where this model overfits, and every
    # training image left after the validation split (the chapter's setting)
    overfit_sizes: list[int] = field(default_factory=lambda: [500, 2000, 55000])

    def check(self) -> None:
        if self.name not in DATASETS:
            raise UserError(f"unknown data set {self.name!r}; choose one of {', '.join(DATASETS)}")
        if self.val_size < 0:
            raise UserError(f"data.val_size must be at least 0, got {self.val_size}")
        if self.train_size is not None and self.train_size < 1:
            raise UserError(f"data.train_size must be at least 1 or null, got {self.train_size}")
        if self.name == "idx" and not self.root:
            raise UserError("data=idx needs data.root=FOLDER holding the four IDX files")


@dataclass
class TrackingConfig:
    # null: MLFLOW_TRACKING_URI when set, else sqlite:///<mlruns_dir>/mlflow.db
    uri: Optional[str] = None
    experiment: str = "softmax-sweep"
    # a tracking server that stops answering: give up after about this many seconds of retries
    retry_seconds: float = 15.0


@dataclass
class TrainConfig:
    lr: float = 0.1
    batch_size: int = 256
    num_epochs: int = 10
    weight_decay: float = 0.0
    seed: int = 0
    # in a sweep: each trial trains seeds seed, seed + 1, ...; its value is their mean
    seeds: int = 1
    early_stopping_patience: Optional[int] = None
    # constant, or cosine: lr decays to 0 over num_epochs (a remedy for a late fall in accuracy)
    lr_schedule: str = "constant"
    # also measure the model on its training examples after each epoch (train_eval_acc)
    eval_train: bool = False
    optimized_metric: str = "val_acc"
    # where run data goes: MLflow DB and artifacts, Optuna storage, Hydra folders
    mlruns_dir: str = "${project_root:}/mlruns"
    data: DataConfig = field(default_factory=DataConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)

    def check(self) -> None:
        """Value checks the types alone cannot express; raise UserError with one line."""
        self.data.check()
        if not math.isfinite(self.lr) or self.lr <= 0:
            raise UserError(f"lr must be a positive number, got {self.lr}")
        if self.batch_size < 1:
            raise UserError(f"batch_size must be at least 1, got {self.batch_size}")
        if self.num_epochs < 1:
            raise UserError(f"num_epochs must be at least 1, got {self.num_epochs}")
        if not math.isfinite(self.weight_decay) or self.weight_decay < 0:
            raise UserError(f"weight_decay must be >= 0, got {self.weight_decay}")
        if not 0 <= self.seed < 2**32:
            raise UserError(f"seed must be between 0 and 2**32 - 1, got {self.seed}")
        if self.seeds < 1:
            raise UserError(f"seeds must be at least 1, got {self.seeds}")
        if self.early_stopping_patience is not None and self.data.val_size == 0:
            raise UserError("early stopping watches validation accuracy: it needs data.val_size > 0")
        if self.early_stopping_patience is not None and self.early_stopping_patience < 1:
            raise UserError(
                f"early_stopping_patience must be at least 1 or null, got {self.early_stopping_patience}"
            )
        if self.lr_schedule not in LR_SCHEDULES:
            raise UserError(f"lr_schedule must be one of {', '.join(LR_SCHEDULES)}, got {self.lr_schedule!r}")
        if not math.isfinite(self.tracking.retry_seconds) or self.tracking.retry_seconds < 0:
            raise UserError(f"tracking.retry_seconds must be >= 0, got {self.tracking.retry_seconds}")
        if self.optimized_metric not in OPTIMIZABLE_METRICS:
            raise UserError(
                f"optimized_metric must be one of {', '.join(OPTIMIZABLE_METRICS)} "
                f"(test metrics are only reported), got {self.optimized_metric!r}"
            )


@functools.lru_cache(maxsize=1)
def _schema() -> DictConfig:
    """TrainConfig as an OmegaConf node, built once (merging into it leaves it unchanged)."""
    return OmegaConf.structured(TrainConfig)


def to_settings(cfg: DictConfig | dict[str, Any]) -> TrainConfig:
    """Resolve a composed config into a validated TrainConfig (the dataclass checks run here)."""
    # A plain copy: Hydra's `+key=value` can add keys to the typed node, a fresh merge cannot.
    plain = OmegaConf.to_container(cfg, resolve=True) if isinstance(cfg, DictConfig) else cfg
    typed = OmegaConf.merge(_schema(), plain)
    settings: TrainConfig = OmegaConf.to_object(typed)  # type: ignore[assignment]
    settings.check()
    return settings


def default_tracking_uri(mlruns_dir: str | Path) -> str:
    return f"sqlite:///{Path(mlruns_dir).resolve() / 'mlflow.db'}"


def _register() -> None:
    OmegaConf.register_new_resolver("project_root", lambda: str(PROJECT_ROOT), replace=True)
    OmegaConf.register_new_resolver("pid", os.getpid, replace=True)
    # a sweep file's `direction: ${direction_of:${optimized_metric}}` follows the metric
    OmegaConf.register_new_resolver("direction_of", lambda metric: OPTIMIZABLE_METRICS.get(metric, "maximize"),
                                    replace=True)
    cs = ConfigStore.instance()
    cs.store(name="train_schema", node=TrainConfig)


_register()
