"""What a grid multirun tells the jobs it launches, through their environment: its MLflow parent
run, and the keys a grid varies (a job's run name shows only those). Jobs read it; sweeps write it."""
from __future__ import annotations

from collections.abc import Iterable

# Set by the MLflow callback of a grid multirun (an Optuna sweep records its parent in the study)
PARENT_ENV = "SOFTMAX_SWEEP_PARENT_RUN_ID"
# The keys a basic-sweeper multirun varies, set by its MLflow callback
VARIED_ENV = "SOFTMAX_SWEEP_VARIED"


def override_values(overrides: Iterable[str]) -> dict[str, str]:
    """`key: value` of Hydra command-line overrides (`+key=v`, `++key=v` and `~key=v` alike)."""
    return dict(o.lstrip("+~").split("=", 1) for o in overrides if "=" in o)
