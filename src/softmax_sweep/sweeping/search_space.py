"""Where a sweep's best value sits against the bounds of its interval() ranges."""
from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from optuna.distributions import BaseDistribution

from optuna_pruning.search_space import SearchSpace


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
