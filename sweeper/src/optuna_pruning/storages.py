"""Optuna storages from URLs: in memory, a journal file, SQLite, PostgreSQL and MySQL (their calls
bounded), or Optuna's gRPC proxy; one line for each way one cannot be opened."""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Optional

import optuna
import sqlalchemy
from optuna.storages import JournalStorage, RDBStorage, RetryHeartbeatStaleTrialCallback
from optuna.storages.journal import JournalFileBackend

from optuna_pruning import deadlines
from optuna_pruning.errors import SweeperError
from optuna_pruning.quiet import quietly
from optuna_pruning.stale import StaleHandler, StaleTrials
from optuna_pruning.urls import mask_password, openable

JOURNAL_PREFIX = "journal:///"
STORAGE_TIMEOUT = 60.0  # seconds a call to a database server may take


def make_storage(url: Optional[str], heartbeat_interval: Optional[int] = None, grace_period: Optional[int] = None,
                 on_stale: Optional[StaleHandler] = None, timeout: Optional[float] = STORAGE_TIMEOUT):
    """An Optuna storage from a URL: None (in memory, as in hydra-optuna-sweeper), journal:///file
    (safe for several local processes), sqlite:///, postgresql://, mysql:// (RDB; heartbeats
    possible), or grpc://host:port (Optuna's gRPC storage proxy in front of an RDB). A call to a
    database server that takes longer than `timeout` seconds fails (None: no bound)."""
    if not url:
        if heartbeat_interval:
            raise SweeperError("heartbeats need a database storage, not storage: null")
        return optuna.storages.InMemoryStorage()
    if heartbeat_interval and not url.startswith(("sqlite", "postgresql", "mysql")):
        raise SweeperError(f"heartbeats need a database storage (sqlite://, postgresql://, mysql://), "
                           f"not {mask_password(url)}")
    if url.startswith(JOURNAL_PREFIX):
        path = Path("/" + url[len(JOURNAL_PREFIX):].lstrip("/"))
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            return JournalStorage(JournalFileBackend(str(path)))
        except OSError as e:
            raise SweeperError(f"cannot use the journal file {path} as Optuna storage: {e.strerror or e}") from None
        except ValueError as e:  # bytes that are not a journal's JSON lines (UnicodeDecodeError, JSONDecodeError)
            raise damaged_journal(str(path), e) from None
    if url.startswith("grpc://"):
        return _grpc_proxy(url)
    if url.startswith("sqlite:///"):
        Path(url[len("sqlite:///"):]).parent.mkdir(parents=True, exist_ok=True)
    url = openable(url)
    kwargs: dict[str, Any] = {}
    if heartbeat_interval:
        with quietly():
            retry = RetryHeartbeatStaleTrialCallback(max_retry=3)
        kwargs.update(heartbeat_interval=heartbeat_interval, grace_period=grace_period or 2 * heartbeat_interval,
                      heartbeat_stale_trial_callback=StaleTrials(on_stale) if on_stale else retry)
    try:
        return _new_rdb_storage(url, kwargs, timeout)
    except ImportError as e:
        raise SweeperError(f"storage {mask_password(url)} needs a database driver: {e}") from None
    except Exception as e:  # SQLAlchemy's errors for bad URLs and unreachable servers
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise SweeperError(f"cannot open Optuna storage {mask_password(url)}: {mask_password(first)}") from None


def damaged_journal(which: str, error: ValueError) -> SweeperError:
    return SweeperError(f"the Optuna journal {which} is damaged ({type(error).__name__}): move it away to start "
                        "afresh, or choose another storage")


def _grpc_proxy(url: str):
    host, _, port = url[len("grpc://"):].rstrip("/").rpartition(":")
    from optuna.storages import GrpcStorageProxy

    try:
        with quietly():
            proxy = GrpcStorageProxy(host=host or "localhost", port=int(port))
        proxy.get_all_studies()  # a proxy that is not there fails here, not in the first trial
    except Exception as e:  # noqa: BLE001 - grpc's errors, a bad port number
        detail = e.details() if callable(getattr(e, "details", None)) else str(e).strip() or type(e).__name__
        raise SweeperError(f"no Optuna storage proxy answers at {url} ({detail.splitlines()[0][:200]}): start "
                           f"one there (optuna.storages.run_grpc_proxy_server), or check the address") from None
    return proxy


def _new_rdb_storage(url: str, kwargs: dict[str, Any], timeout: Optional[float], attempts: int = 5) -> RDBStorage:
    """RDBStorage, tried again while another process is creating the same new schema: Optuna's
    create-tables-if-missing is not atomic, and the loser of the race sees 'already exists' or a
    duplicate key; once the winner is done, the schema is there to use."""
    engine_kwargs: dict[str, Any] = {"pool_pre_ping": True}
    if url.startswith("sqlite"):
        engine_kwargs = {"connect_args": {"timeout": 60}}
    elif url.startswith("postgresql"):  # a server that does not answer: give up, do not hang
        # deadlines.watch pings instead of the pool
        engine_kwargs = {"connect_args": {"connect_timeout": int(min(10, timeout or 10))}}
    elif url.startswith("mysql"):  # both MySQL drivers have socket timeouts of their own
        bound = {"read_timeout": int(timeout), "write_timeout": int(timeout)} if timeout else {}
        engine_kwargs["connect_args"] = {"connect_timeout": int(min(10, timeout or 10)), **bound}
    for attempt in range(1, attempts + 1):
        try:
            with quietly():  # heartbeat_interval is an experimental argument
                return _rdb_storage(url, engine_kwargs, kwargs, timeout)
        except Exception as e:  # noqa: BLE001 - SQLAlchemy wraps each driver's error differently
            text = str(e).lower()
            if attempt == attempts or not ("already exists" in text or "duplicate" in text):
                raise
            time.sleep(0.2 * attempt)
    raise AssertionError("unreachable")


def _rdb_storage(url: str, engine_kwargs: dict[str, Any], kwargs: dict[str, Any], timeout: Optional[float]
                 ) -> RDBStorage:
    if url.startswith("postgresql"):
        return _watched_rdb_storage(url, engine_kwargs, kwargs, timeout)
    return RDBStorage(url, engine_kwargs=engine_kwargs, **kwargs)


def _watched_rdb_storage(url: str, engine_kwargs: dict[str, Any], kwargs: dict[str, Any],
                         timeout: Optional[float]) -> RDBStorage:
    """RDBStorage whose calls are bounded from the first (its constructor creates tables and
    checks the schema): its engine gets a pool that is watched already."""
    if not timeout:
        return RDBStorage(url, engine_kwargs={**engine_kwargs, "pool_pre_ping": True}, **kwargs)
    connector = sqlalchemy.create_engine(url, **engine_kwargs)
    watch = deadlines.watch(connector, timeout, url)
    try:
        storage = RDBStorage(url, engine_kwargs={**engine_kwargs, "pool": connector.pool}, **kwargs)
    except Exception as e:
        if watch.cut_in:
            raise watch.error() from e
        raise
    watch.errors_of(storage.engine)
    return storage
