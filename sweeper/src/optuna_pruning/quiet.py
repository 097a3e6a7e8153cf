"""Optuna's own chatter around the sweeper's calls only: the host's settings are left alone."""
from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator

import optuna


@contextlib.contextmanager
def quietly() -> Iterator[None]:
    """Around the sweeper's own calls into Optuna: its INFO lines (a study created, a trial
    finished: the sweep logs one line per trial itself) and its notices that heartbeats and the
    gRPC proxy are experimental. The host's log level and warning filters are back afterwards."""
    level = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(max(level, optuna.logging.ERROR))
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            yield
    finally:
        optuna.logging.set_verbosity(level)
