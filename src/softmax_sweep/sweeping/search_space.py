"""Hydra sweep overrides (choice, range, interval, tag(log, ...)) as Optuna distributions."""
from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Optional

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import ChoiceSweep, IntervalSweep, Override, RangeSweep, Transformer
from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
)

from softmax_sweep.errors import UserError


@dataclass(frozen=True)
class SearchSpace:
    distributions: dict[str, BaseDistribution]
    fixed: dict[str, str]            # plain overrides, passed on to every trial as they are
    intervals: frozenset[str]        # names whose distribution came from interval(): bounds to watch

    def overrides(self, params: Mapping[str, Any]) -> list[str]:
        return [f"{k}={v}" for k, v in {**params, **self.fixed}.items()]

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
                raise UserError(f"the grid sampler needs choice() or range() for {name}, not interval()")
        return grid


def _value_text(override: Override) -> str:
    return (override.input_line or "").split("=", 1)[-1]


def _distribution(override: Override, int_keys: frozenset[str]) -> BaseDistribution:
    name, value = override.get_key_element(), override.value()
    if isinstance(value, ChoiceSweep) or (isinstance(value, RangeSweep) and value.shuffle):
        return CategoricalDistribution(list(override.sweep_iterator(transformer=Transformer.encode)))
    if isinstance(value, RangeSweep):
        values = list(override.sweep_iterator())
        if not values:
            raise UserError(f"{name}: {_value_text(override)} is empty")
        if all(isinstance(v, int) for v in (value.start, value.stop, value.step)):
            return IntDistribution(values[0], values[-1], step=int(value.step))
        return FloatDistribution(values[0], values[-1], step=value.step)
    if isinstance(value, IntervalSweep):
        low, high, log = value.start, value.end, "log" in value.tags
        if not low < high or (log and low <= 0):
            raise UserError(f"{name}: {_value_text(override)} is not a valid interval")
        if name in int_keys:
            return IntDistribution(math.ceil(low), math.floor(high), log=log)
        return FloatDistribution(low, high, log=log)
    raise UserError(f"{name}: {_value_text(override)} is not supported by the Optuna sweeper")


def parse_search_space(params: Optional[Mapping[str, str]], arguments: Sequence[str] = (),
                       int_keys: frozenset[str] = frozenset()) -> SearchSpace:
    """`hydra.sweeper.params` plus command-line overrides (which win) as a SearchSpace.

    int_keys: config keys typed int, so that interval() over them samples integers.
    """
    texts = [f"{k}={v}" for k, v in (params or {}).items()] + list(arguments)
    distributions: dict[str, BaseDistribution] = {}
    fixed: dict[str, str] = {}
    intervals: set[str] = set()
    for override in OverridesParser.create().parse_overrides(texts):
        name = override.get_key_element()
        distributions.pop(name, None)
        fixed.pop(name, None)
        intervals.discard(name)
        if override.is_sweep_override():
            distributions[name] = _distribution(override, int_keys)
            if override.is_interval_sweep():
                intervals.add(name)
        else:
            fixed[name] = override.get_value_element_as_str()
    return SearchSpace(distributions, fixed, frozenset(intervals))


def bound_warnings(space: SearchSpace, best_params: Mapping[str, Any], margin: float = 0.05) -> list[tuple[str, str]]:
    """(message, widened override) for each interval() whose best value sits within `margin`
    of a bound (measured in log space for log intervals)."""
    found = []
    for name in sorted(space.intervals):
        dist, value = space.distributions[name], best_params.get(name)
        if value is None:
            continue
        scale = math.log if dist.log else (lambda x: x)
        low, high, at = scale(dist.low), scale(dist.high), scale(value)
        width = high - low
        if at - low <= margin * width:
            side, new_low, new_high = "lower", _widen(dist, down=True), dist.high
        elif high - at <= margin * width:
            side, new_low, new_high = "upper", dist.low, _widen(dist, down=False)
        else:
            continue
        inner = f"interval({new_low:g}, {new_high:g})"
        spec = f"tag(log, {inner})" if dist.log else inner
        found.append((f"best {name}={value:g} sits at the {side} bound of interval({dist.low:g}, {dist.high:g})",
                      f"'{name}={spec}'"))
    return found


def _widen(dist: BaseDistribution, down: bool) -> float:
    if dist.log:
        return dist.low / 10 if down else dist.high * 10
    width = dist.high - dist.low
    return max(dist.low - width, 0) if down and dist.low >= 0 else (dist.low - width if down else dist.high + width)
