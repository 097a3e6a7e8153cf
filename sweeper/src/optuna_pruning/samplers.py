"""Samplers and pruners from their config nodes (hydra/sweeper/optuna_sampler, optuna_pruner)."""
from __future__ import annotations

from typing import Any

import optuna
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from optuna_pruning.errors import SweeperError
from optuna_pruning.search_space import SearchSpace


def make_sampler(sampler: Any, space: SearchSpace, seed_offset: int = 0) -> optuna.samplers.BaseSampler:
    """A sampler from its config node (hydra/sweeper/optuna_sampler, or any `_target_` with its
    constructor's settings); settings left null take Optuna's default; grid gets the search space.
    seed_offset is added to a seed the node sets."""
    if sampler is None:
        return optuna.samplers.TPESampler()
    _check_node("sampler", "optuna_sampler", sampler)
    node = _settings(sampler)
    if seed_offset and node.get("seed") is not None:
        node["seed"] += seed_offset
    try:
        factory = instantiate(node, _partial_=True)
    except Exception as e:  # noqa: BLE001 - a bad class name or setting: Hydra's InstantiationException
        raise SweeperError(f"hydra.sweeper.sampler: {_cause_line(e)}") from None
    if getattr(factory, "func", None) is optuna.samplers.GridSampler:
        return factory(search_space=space.grid())
    try:
        return factory()
    except SweeperError:
        raise
    except (TypeError, ValueError, ImportError) as e:
        raise SweeperError(f"hydra.sweeper.sampler ({node.get('_target_')}): {e}") from None


def motpe_removed(**settings: Any) -> optuna.samplers.BaseSampler:
    """hydra/sweeper/optuna_sampler=motpe, as upstream keeps it: Optuna 4 has no MOTPESampler."""
    raise SweeperError("The 'motpe' sampler was removed in Optuna 4.0. Use 'hydra/sweeper/optuna_sampler=tpe' "
                       "instead. TPESampler now handles multi-objective optimization.")


def make_pruner(pruner: Any) -> optuna.pruners.BasePruner:
    if pruner is None:
        return optuna.pruners.NopPruner()
    if isinstance(pruner, optuna.pruners.BasePruner):
        return pruner
    _check_node("optuna_pruner", "optuna_pruner", pruner)
    try:
        return instantiate(_settings(pruner))
    except Exception as e:  # noqa: BLE001
        raise SweeperError(f"hydra.sweeper.optuna_pruner: {_cause_line(e)}") from None


def _check_node(key: str, group: str, node: Any) -> None:
    """A name where a node belongs (`hydra.sweeper.optuna_pruner=none`, a dot for the group's slash)."""
    if isinstance(node, str):
        raise SweeperError(f"hydra.sweeper.{key} is {node!r}, a name: choose one with "
                           f"hydra/sweeper/{group}={node} (a config group: slashes)")


def _settings(node: Any) -> dict[str, Any]:
    data = OmegaConf.to_container(node, resolve=True) if isinstance(node, DictConfig) else dict(node)
    data.pop("_partial_", None)
    return {k: v for k, v in data.items() if v is not None}


def _cause_line(error: BaseException) -> str:
    while error.__cause__ is not None:
        error = error.__cause__
    return str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
