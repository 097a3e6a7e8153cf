"""Storage calls with a deadline. A PostgreSQL server (or a proxy, a NAT, a VM in front of it) that
stops answering without closing the connection would hang a sweep for ever: libpq has no
client-side statement timeout, a server-side statement_timeout never reaches a server that no
longer reads, and the kernel keeps acknowledging, so TCP keepalives stay quiet. So one thread
watches the connections an engine has checked out and shuts down the socket of one held past the
deadline: the driver sees the connection closed, SQLAlchemy discards it, and the call fails with
StorageTimeout, which names the limit. `hurry()` shortens the deadlines once the process is
ending (the app calls it when Ctrl-C arrives)."""
from __future__ import annotations

import os
import socket
import threading
import time
import weakref
from typing import Any, Optional

from optuna_pruning.errors import SweeperError
from optuna_pruning.urls import mask_password

_POLL = 0.25
_watches: weakref.WeakSet[_Watch] = weakref.WeakSet()
_lock = threading.Lock()
_thread: Optional[threading.Thread] = None
_hurried: list[float] = []  # when hurry() was first called
_HURRIED = 2.0  # seconds a call may take once the process is ending
_PING = 5.0  # seconds the check of an idle connection may take


class StorageTimeout(SweeperError):
    """The storage did not answer within the deadline (exit code 1: a fault during the work)."""

    exit_code = 1


class _Watch:
    def __init__(self, pool: Any, seconds: float, url: str) -> None:
        from sqlalchemy import event  # here: interrupts import this module at every start, for hurry()

        self.seconds, self.url = seconds, mask_password(url)
        self.busy: dict[int, tuple[Any, float, int, float]] = {}  # id(connection) -> (it, since, thread, limit)
        self.cut_in: set[int] = set()  # threads whose connection was shut down
        self.gave_up = False  # once a call was cut, later ones fail at once instead of each waiting
        event.listen(pool, "checkout", self._checkout)
        event.listen(pool, "checkin", self._checkin)

    def errors_of(self, engine: Any) -> None:
        """A call of the engine that was cut fails with StorageTimeout, not the driver's error."""
        from sqlalchemy import event

        event.listen(engine, "handle_error", self._handle_error)

    def _checkout(self, dbapi_connection: Any, record: Any, proxy: Any) -> None:
        if self.gave_up:
            raise self.error()
        key = id(dbapi_connection)
        # the pre-ping, here so that a deadline covers it (pool_pre_ping runs before this event);
        # a server that takes seconds to answer SELECT 1 is not answering
        self.busy[key] = (dbapi_connection, time.monotonic(), threading.get_ident(), min(self.seconds, _PING))
        try:
            cursor = dbapi_connection.cursor()
            try:
                cursor.execute("SELECT 1")
            finally:
                cursor.close()
        except Exception as e:  # noqa: BLE001 - the driver's error for a connection that went away
            from sqlalchemy.exc import DisconnectionError

            self.busy.pop(key, None)
            raise DisconnectionError(str(e)) from e
        self.busy[key] = (dbapi_connection, time.monotonic(), threading.get_ident(), self.seconds)

    def _checkin(self, dbapi_connection: Any, record: Any) -> None:
        self.busy.pop(id(dbapi_connection), None)

    def _handle_error(self, context: Any) -> Optional[BaseException]:
        if threading.get_ident() in self.cut_in:
            self.cut_in.discard(threading.get_ident())
            return self.error()
        return None

    def error(self) -> StorageTimeout:
        within = f"in the {_HURRIED:g} s left to an interrupted sweep" if _hurried else f"within {self.seconds:g} s"
        return StorageTimeout(
            f"the Optuna storage {self.url} did not answer {within} (a hung server or network?): the trials "
            "written so far are kept; run again once it answers (the sweep resumes)")

    def connecting(self, *args: Any) -> None:
        if self.gave_up:
            raise self.error()

    def overdue(self, now: float) -> list[tuple[Any, int]]:
        return [(conn, thread) for conn, since, thread, limit in list(self.busy.values())
                if now >= _deadline(since, limit)]


def _deadline(since: float, limit: float) -> float:
    if not _hurried:
        return since + limit
    return min(since + limit, max(since, _hurried[0]) + _HURRIED)


def _shut(dbapi_connection: Any) -> None:
    try:
        fd = os.dup(dbapi_connection.fileno())
    except Exception:  # noqa: BLE001 - the driver's error for a connection closed already
        return
    with socket.socket(fileno=fd) as sock:
        try:
            sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass


def _run() -> None:
    while True:
        time.sleep(_POLL)
        now = time.monotonic()
        for watch in list(_watches):
            for conn, thread in watch.overdue(now):
                watch.gave_up = True
                watch.cut_in.add(thread)
                watch.busy.pop(id(conn), None)
                _shut(conn)


def watch(engine: Any, seconds: float, url: str) -> _Watch:
    """Bound every checkout of the engine's pool to `seconds`; once one was cut, every later
    connection fails at once (the process is ending: it must not wait again for each write)."""
    from sqlalchemy import event

    global _thread
    watched = _Watch(engine.pool, seconds, url)
    event.listen(engine, "do_connect", watched.connecting)
    _watches.add(watched)
    with _lock:
        if _thread is None:
            _thread = threading.Thread(target=_run, name="storage-deadlines", daemon=True)
            _thread.start()
    return watched


def _forked() -> None:
    """A forked child has no watching thread, and the connections it inherited are its parent's
    (shutting one down would cut the parent's call): the child watches only its own engines."""
    global _thread
    _thread = None
    _watches.clear()


os.register_at_fork(after_in_child=_forked)


def hurry() -> None:
    """The process is ending (Ctrl-C, SIGTERM): from now on a call gets at most a few seconds, so
    that a storage that hangs cannot keep it alive, while its last writes still get their chance."""
    if not _hurried:
        _hurried.append(time.monotonic())
