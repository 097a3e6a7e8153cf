# No `from __future__ import annotations` here: the dataclasses' annotations must be real types.
"""The sweeper's config schema, which config.py registers in Hydra's ConfigStore. It lives in a
module whose name starts with "_" because Hydra's plugin scan executes every other module of a
plugin package again, and a joblib worker scans for every job it runs (Singleton.set_state):
building these dataclasses took 30 ms of the scan's 55."""

from dataclasses import dataclass, field
from typing import Any, Optional

from omegaconf import MISSING

PROVIDER = "optuna_pruning_sweeper"


@dataclass
class SamplerConfig:
    _target_: str = MISSING
    seed: Optional[int] = None


@dataclass
class TPESamplerConfig(SamplerConfig):
    _target_: str = "optuna.samplers.TPESampler"
    consider_prior: Optional[bool] = None
    prior_weight: Optional[float] = None
    consider_magic_clip: Optional[bool] = None
    consider_endpoints: Optional[bool] = None
    n_startup_trials: int = 10
    n_ei_candidates: int = 24
    multivariate: bool = False
    group: Optional[bool] = None
    constant_liar: Optional[bool] = None  # worth true with several trials in flight
    constraints_func: Optional[Any] = None
    warn_independent_sampling: Optional[bool] = None


@dataclass
class RandomSamplerConfig(SamplerConfig):
    _target_: str = "optuna.samplers.RandomSampler"


@dataclass
class GridSamplerConfig(SamplerConfig):
    """Takes choice() and range() params; the search space is filled in by the sweeper."""

    _target_: str = "optuna.samplers.GridSampler"


@dataclass
class CmaEsSamplerConfig(SamplerConfig):
    _target_: str = "optuna.samplers.CmaEsSampler"
    x0: Optional[dict[str, Any]] = None
    sigma0: Optional[float] = None
    n_startup_trials: Optional[int] = None
    independent_sampler: Optional[Any] = None
    warn_independent_sampling: Optional[bool] = None
    consider_pruned_trials: Optional[bool] = None
    restart_strategy: Optional[Any] = None
    popsize: Optional[int] = None
    inc_popsize: Optional[int] = None
    use_separable_cma: Optional[bool] = None
    with_margin: Optional[bool] = None
    lr_adapt: Optional[bool] = None
    source_trials: Optional[Any] = None


@dataclass
class NSGAIISamplerConfig(SamplerConfig):
    _target_: str = "optuna.samplers.NSGAIISampler"
    population_size: int = 50
    mutation_prob: Optional[float] = None
    crossover_prob: float = 0.9
    swapping_prob: float = 0.5
    constraints_func: Optional[Any] = None


@dataclass
class GPSamplerConfig(SamplerConfig):
    """Optuna's GPSampler needs PyTorch (pip install torch)."""

    _target_: str = "optuna.samplers.GPSampler"
    independent_sampler: Optional[Any] = None
    n_startup_trials: int = 10
    deterministic_objective: bool = False
    constraints_func: Optional[Any] = None
    warn_independent_sampling: Optional[bool] = None


@dataclass
class QMCSamplerConfig(SamplerConfig):
    _target_: str = "optuna.samplers.QMCSampler"
    qmc_type: str = "sobol"
    scramble: bool = False
    independent_sampler: Optional[Any] = None
    warn_asynchronous_seeding: Optional[bool] = None
    warn_independent_sampling: Optional[bool] = None


@dataclass
class MOTPESamplerConfig:
    """Optuna 4 removed MOTPESampler: choosing it says to use tpe. Upstream's settings are kept, so
    that a config setting them (`seed`) composes and the user gets that message, not a key error."""

    _target_: str = "optuna_pruning.samplers.motpe_removed"
    seed: Optional[int] = None
    consider_prior: Optional[bool] = None
    prior_weight: Optional[float] = None
    consider_magic_clip: Optional[bool] = None
    consider_endpoints: Optional[bool] = None
    n_startup_trials: Optional[int] = None
    n_ehvi_candidates: Optional[int] = None


@dataclass
class MedianPrunerConfig:
    _target_: str = "optuna.pruners.MedianPruner"
    n_startup_trials: int = 5
    n_warmup_steps: int = 0
    interval_steps: int = 1
    n_min_trials: int = 1


@dataclass
class PercentilePrunerConfig(MedianPrunerConfig):
    _target_: str = "optuna.pruners.PercentilePruner"
    percentile: float = 25.0


@dataclass
class HyperbandPrunerConfig:
    _target_: str = "optuna.pruners.HyperbandPruner"
    min_resource: int = 1
    max_resource: Any = "auto"
    reduction_factor: int = 3
    bootstrap_count: int = 0


@dataclass
class SuccessiveHalvingPrunerConfig:
    """Asynchronous successive halving over steps: at steps min_resource * reduction_factor**k a
    trial goes on only if it is in the top 1/reduction_factor of the trials that got there."""

    _target_: str = "optuna.pruners.SuccessiveHalvingPruner"
    min_resource: Any = "auto"
    reduction_factor: int = 4
    min_early_stopping_rate: int = 0
    bootstrap_count: int = 0


@dataclass
class NopPrunerConfig:
    _target_: str = "optuna.pruners.NopPruner"


@dataclass
class OptunaPruningSweeperConf:
    _target_: str = "hydra_plugins.optuna_pruning_sweeper.sweeper.OptunaPruningSweeper"
    _recursive_: bool = False  # the sweeper builds sampler, pruner and callbacks itself
    defaults: list[Any] = field(default_factory=lambda: [{"optuna_sampler": "tpe"}, {"optuna_pruner": "none"}])
    # the sampler chosen in hydra/sweeper/optuna_sampler, with its settings, where upstream's
    # sampler group puts it (hydra.sweeper.sampler.seed=1 works as there)
    sampler: Any = MISSING
    # the pruner chosen in hydra/sweeper/optuna_pruner, with its settings
    optuna_pruner: Any = MISSING
    # maximize | minimize, or a list of them for a multi-objective study (no pruning then)
    direction: Any = "minimize"
    # null: in memory, as upstream. journal:///path (a file: fast, safe for several local
    # processes), sqlite:///file.db, postgresql://..., mysql://... (heartbeats), grpc://host:port
    storage: Optional[Any] = None
    # seconds a call to a database storage may take before it fails (a server that hangs)
    storage_timeout: Optional[float] = 60.0
    study_name: Optional[str] = None
    # the study's total: a rerun on the same storage and study tops it up to this
    n_trials: int = 20
    # trials in flight at once under a launcher that runs jobs concurrently (joblib, submitit)
    n_jobs: int = 2
    # stop when more than this fraction of finished trials failed (0: at the first failure;
    # otherwise judged from 5 finished trials on)
    max_failure_rate: float = 0.0
    # key: choice(...) | range(...) | interval(...) | tag(log, interval(...)) | int(interval(...)) | value
    params: Optional[dict[str, str]] = None
    # dotted path of fn(cfg, trial) that suggests more parameters (conditional search spaces)
    custom_search_space: Optional[str] = None
    # seconds between trial heartbeats (RDB storages); a silent trial is failed and retried
    heartbeat_interval: Optional[int] = None
    grace_period: Optional[int] = None
    # the objectives' names, shown by optuna-dashboard instead of "Objective 0"
    metric_names: Optional[list[str]] = None
    # name: {_target_: ...} of optuna_pruning.SweepCallback subclasses (e.g. a tracking parent run)
    callbacks: dict[str, Any] = field(default_factory=dict)
    # trials to run first, once per study (Optuna's enqueue_trial): a list of {param: value}; a
    # list of values stands for each of them (`{lr: [0.1, 1.0], remedy: none}` is two trials)
    enqueue: list[Any] = field(default_factory=list)
    # seconds after which no new trial starts (those in flight finish), as study.optimize's timeout
    timeout: Optional[float] = None
