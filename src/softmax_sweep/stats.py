"""Statistics over seeds: a mean with its confidence interval, and a paired comparison."""
from __future__ import annotations

import math
from collections.abc import Sequence

from scipy import stats


def mean_ci(values: Sequence[float], level: float = 0.95) -> tuple[float, float]:
    """(mean, half-width of the Student-t confidence interval); the half-width is nan for one value."""
    n = len(values)
    mean = sum(values) / n
    if n < 2:
        return mean, math.nan
    sem = stats.sem(values)
    return mean, float(sem * stats.t.ppf((1 + level) / 2, n - 1)) if sem > 0 else 0.0


def paired_p_value(a: Sequence[float], b: Sequence[float]) -> float:
    """Two-sided paired t-test of a against b (the same seeds); nan where it is undefined."""
    if len(a) != len(b) or len(a) < 2:
        return math.nan
    if all(x == y for x, y in zip(a, b)):
        return 1.0
    return float(stats.ttest_rel(a, b).pvalue)
