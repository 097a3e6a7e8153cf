# No `from __future__ import annotations` here: Hydra loads plugin modules outside sys.modules,
# where dataclasses cannot resolve string annotations.
"""Config schema of the sweeper, registered in Hydra's ConfigStore when Hydra scans its plugins:
`hydra/sweeper=optuna_pruning`, `hydra/sweeper/optuna_sampler=tpe|random|grid|cmaes|nsgaii|gp|qmc`,
`hydra/sweeper/optuna_pruner=median|percentile|hyperband|successive_halving|none`, and
`hydra/sweeper=optuna` where hydra-optuna-sweeper is not installed.

Where hydra-optuna-sweeper is installed, its names (`hydra/sweeper=optuna`,
`hydra/sweeper/sampler=...`) stay its own, so this plugin changes none of its sweeps. Upstream's
settings under hydra.sweeper keep their names and meaning: the chosen sampler lands in
`hydra.sweeper.sampler`, as upstream's does. A sampler setting left null takes Optuna's default."""

import importlib.util

from hydra.core.config_store import ConfigStore

from hydra_plugins.optuna_pruning_sweeper._schema import (  # noqa: F401 - upstream's names, for its tests
    PROVIDER,
    CmaEsSamplerConfig,
    GPSamplerConfig,
    GridSamplerConfig,
    HyperbandPrunerConfig,
    MedianPrunerConfig,
    MOTPESamplerConfig,
    NopPrunerConfig,
    NSGAIISamplerConfig,
    OptunaPruningSweeperConf,
    PercentilePrunerConfig,
    QMCSamplerConfig,
    RandomSamplerConfig,
    SamplerConfig,
    SuccessiveHalvingPrunerConfig,
    TPESamplerConfig,
)

_store = ConfigStore.instance()


def _stored() -> bool:
    """Whether the store holds our configs already: a joblib worker restores Hydra's
    ConfigStore for each job, ours in it, then scans the plugins again."""
    try:
        return "optuna_pruning.yaml" in _store.list("hydra/sweeper")
    except OSError:
        return False


if not _stored():
    _store.store(group="hydra/sweeper", name="optuna_pruning", node=OptunaPruningSweeperConf, provider=PROVIDER)
    if importlib.util.find_spec("hydra_plugins.hydra_optuna_sweeper") is None:
        # upstream's name too, where upstream is not installed: its configs (`override
        # /hydra/sweeper: optuna`, as lightning-hydra-template's) run unchanged
        _store.store(group="hydra/sweeper", name="optuna", node=OptunaPruningSweeperConf, provider=PROVIDER)
    for _name, _node in (("tpe", TPESamplerConfig), ("random", RandomSamplerConfig), ("grid", GridSamplerConfig),
                         ("cmaes", CmaEsSamplerConfig), ("nsgaii", NSGAIISamplerConfig), ("gp", GPSamplerConfig),
                         ("qmc", QMCSamplerConfig), ("motpe", MOTPESamplerConfig)):
        _store.store(group="hydra/sweeper/optuna_sampler", name=_name, node=_node, provider=PROVIDER,
                     package="hydra.sweeper.sampler")
    for _name, _node in (("median", MedianPrunerConfig), ("percentile", PercentilePrunerConfig),
                         ("hyperband", HyperbandPrunerConfig), ("successive_halving", SuccessiveHalvingPrunerConfig),
                         ("none", NopPrunerConfig)):
        _store.store(group="hydra/sweeper/optuna_pruner", name=_name, node=_node, provider=PROVIDER)
