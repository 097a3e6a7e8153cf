"""Hydra sweep overrides as Optuna distributions, as hydra-optuna-sweeper reads them:
choice(...), range(...), interval(...), tag(log, interval(...)), int(interval(...)) for integers;
a plain `key=value` is passed to every trial as it is, and so is a `~key` delete."""
from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Optional

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import ChoiceSweep, IntervalSweep, Override, RangeSweep, Transformer
from optuna.distributions import BaseDistribution, CategoricalDistribution, FloatDistribution, IntDistribution

from optuna_pruning.errors import SweeperError


@dataclass(frozen=True)
class SearchSpace:
    distributions: dict[str, BaseDistribution]
    fixed: dict[str, str]                      # plain overrides, passed on to every trial as they are
    intervals: frozenset[str] = frozenset()    # names whose distribution came from interval()
    deletions: tuple[str, ...] = field(default=())  # `~key` overrides, passed on as they are

    def overrides(self, params: Mapping[str, Any]) -> list[str]:
        return [*(f"{k}={v}" for k, v in {**params, **self.fixed}.items()), *self.deletions]

    def describe(self) -> dict[str, str]:
        """Each parameter's distribution in the override syntax that gives it (for a run's params)."""
        return {name: describe_distribution(dist) for name, dist in self.distributions.items()}

    def grid_size(self) -> int:
        return math.prod(len(values) for values in self.grid().values())

    def grid(self) -> dict[str, list[Any]]:
        """The search space as GridSampler wants it (choice and range only)."""
        grid = {}
        for name, dist in self.distributions.items():
            if isinstance(dist, CategoricalDistribution):
                grid[name] = list(dist.choices)
            elif isinstance(dist, IntDistribution) and not dist.log:
                grid[name] = list(range(dist.low, dist.high + 1, dist.step))
            elif isinstance(dist, FloatDistribution) and dist.step is not None:
                n = int(round((dist.high - dist.low) / dist.step))
                grid[name] = [dist.low + i * dist.step for i in range(n + 1)]
            else:
                raise SweeperError(f"the grid sampler needs choice() or range() for {name}, not interval()")
        return grid


def describe_distribution(dist: BaseDistribution) -> str:
    if isinstance(dist, CategoricalDistribution):
        return f"choice({', '.join(map(str, dist.choices))})"
    if getattr(dist, "step", None) not in (None, 1) or (isinstance(dist, IntDistribution) and not dist.log):
        return f"range({dist.low}, {dist.high}, {dist.step}) (both ends included)"
    text = f"interval({dist.low:g}, {dist.high:g})"
    text = f"int({text})" if isinstance(dist, IntDistribution) else text
    return f"tag(log, {text})" if dist.log else text


def _value_text(override: Override) -> str:
    return (override.input_line or "").split("=", 1)[-1]


def _distribution(override: Override) -> BaseDistribution:
    name, value = override.get_key_element(), override.value()
    if isinstance(value, ChoiceSweep) or (isinstance(value, RangeSweep) and value.shuffle):
        return CategoricalDistribution(list(override.sweep_iterator(transformer=Transformer.encode)))
    if isinstance(value, RangeSweep):
        values = list(override.sweep_iterator())
        if not values:
            raise SweeperError(f"{name}: {_value_text(override)} is empty")
        if all(isinstance(v, int) for v in (value.start, value.stop, value.step)):
            return IntDistribution(values[0], values[-1], step=int(value.step))
        return FloatDistribution(values[0], values[-1], step=value.step)
    if isinstance(value, IntervalSweep):
        low, high, log = value.start, value.end, "log" in value.tags
        if not low < high or (log and low <= 0):
            raise SweeperError(f"{name}: {_value_text(override)} is not a valid interval")
        if isinstance(low, int) and isinstance(high, int):  # int(interval(...))
            return IntDistribution(low, high, log=log)
        return FloatDistribution(low, high, log=log)
    raise SweeperError(f"{name}: {_value_text(override)} is not supported by the Optuna sweeper")


def parse_search_space(params: Optional[Mapping[str, Any]], arguments: Sequence[str] = ()) -> SearchSpace:
    """`hydra.sweeper.params` plus command-line overrides (which win) as a SearchSpace."""
    texts = [f"{k}={v}" for k, v in (params or {}).items()] + list(arguments)
    distributions: dict[str, BaseDistribution] = {}
    fixed: dict[str, str] = {}
    intervals: set[str] = set()
    deletions: list[str] = []
    try:
        parsed = OverridesParser.create().parse_overrides(texts)
    except Exception as e:  # noqa: BLE001 - Hydra's OverrideParseException and friends
        raise SweeperError(f"cannot read the search space: {str(e).splitlines()[0]}") from None
    for override in parsed:
        if override.is_delete():
            deletions.append(override.input_line)
            continue
        name = override.get_key_element()
        distributions.pop(name, None)
        fixed.pop(name, None)
        intervals.discard(name)
        if override.is_sweep_override():
            distributions[name] = _distribution(override)
            if override.is_interval_sweep():
                intervals.add(name)
        else:
            fixed[name] = override.get_value_element_as_str()
    return SearchSpace(distributions, fixed, frozenset(intervals), tuple(deletions))
