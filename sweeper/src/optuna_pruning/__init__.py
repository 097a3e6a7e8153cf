"""An Optuna sweeper for any Hydra app, with per-epoch pruning (`hydra/sweeper=optuna_pruning`).

The public API of a task function: `current_trial()` and `report(value, step)`; of an app that
follows sweeps: `SweepCallback`. The Hydra plugin itself lives in hydra_plugins.optuna_pruning_sweeper.
"""
from optuna_pruning.callbacks import SweepCallback, job_error
from optuna_pruning.errors import SweeperError, TooManyFailures
from optuna_pruning.trial import current_trial, report

__all__ = ["SweepCallback", "SweeperError", "TooManyFailures", "current_trial", "job_error", "report"]
