"""A tracking server as runs share it: once it has failed to answer, every later call fails at
once; MLflow's HTTP retries bounded to the seconds the user allows."""
from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass, field

from softmax_sweep.errors import StoreUnreachable, UserError
from softmax_sweep.stores import probe


@dataclass
class Server:
    """A tracking server as a Tracker and its RunLoggers share it: once it has failed to answer,
    every later call fails at once instead of retrying again."""

    uri: str  # masked
    retry_seconds: float
    unreachable: bool = False
    url: str = field(default="", repr=False)  # with its password, to ask it again

    def answers(self) -> bool:
        """Whether it answers a health check within 3 s now; if not, every later call fails at once."""
        if not self.unreachable:
            try:
                probe(self.url, timeout=3)
            except UserError:
                self.unreachable = True
        return not self.unreachable

    def error(self) -> StoreUnreachable:
        return StoreUnreachable(f"tracking server {self.uri} is unreachable (gave up within "
                                f"tracking.retry_seconds={self.retry_seconds:g})")


def bound_http_retries(seconds: float) -> None:
    """Make MLflow give up on a tracking server within about `seconds`, whether it refuses
    connections (a restart: retried with backoff) or accepts and never answers (a stopped or hung
    process: each attempt waits for its read timeout); MLflow's defaults take ~4 minutes, each
    request waiting up to 120 s. urllib3 sleeps 0, 2f, 4f s before its retries (f, the backoff
    factor, is an integer to MLflow): about a third of the budget goes to them and half to the
    attempts' timeouts, the rest is kept for the health check and the last attempt to end the run
    on the way out."""
    retries = 2 if seconds < 30 else 3
    sleeps = 2 ** retries - 2  # in units of f
    factor = max(1, round(seconds / 3 / sleeps))  # a refusing server is retried for about a third
    timeout = max(2, round(seconds / 2 / (retries + 1)))  # a silent one costs about half in timeouts
    os.environ.update({"MLFLOW_HTTP_REQUEST_MAX_RETRIES": str(retries),
                       "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": str(factor),
                       "MLFLOW_HTTP_REQUEST_BACKOFF_JITTER": "0", "MLFLOW_HTTP_REQUEST_TIMEOUT": str(timeout)})


@contextlib.contextmanager
def one_attempt() -> Iterator[None]:
    """MLflow's HTTP requests in the block try once, for a few seconds (on the way out after Ctrl-C)."""
    saved = {k: os.environ.get(k) for k in ("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "MLFLOW_HTTP_REQUEST_TIMEOUT")}
    os.environ.update({"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0", "MLFLOW_HTTP_REQUEST_TIMEOUT": "3"})
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
