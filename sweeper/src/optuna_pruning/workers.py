"""Which process runs a trial: its user attribute `worker` is host:pid, so that a later start on
the same machine can tell a trial whose process died (and fail and retry it)."""
from __future__ import annotations

import logging
import os
import signal
import socket
import threading
import time
from typing import Optional

log = logging.getLogger("optuna_pruning")


def worker_name() -> str:
    """This process as trials record it: host:pid."""
    return f"{socket.gethostname()}:{os.getpid()}"


def dead_local_worker(worker: str) -> bool:
    """True when `worker` (host:pid) was a process of this machine that no longer exists."""
    host, _, pid = worker.rpartition(":")
    if host != socket.gethostname() or not pid.isdigit():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False  # alive, another user's
    return _zombie(int(pid))


def other_local_worker(worker: str) -> bool:
    """True when `worker` (host:pid) is a process of this machine other than this one."""
    host, _, pid = worker.rpartition(":")
    return host == socket.gethostname() and pid != str(os.getpid())


def _zombie(pid: int) -> bool:
    """A process that has died but whose parent has not collected it yet (Linux's /proc)."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rpartition(")")[2].split()[0] in ("Z", "X")
    except (OSError, IndexError):
        return False


_watched: list[int] = []


def end_with_parent(sweeper: Optional[str] = None, grace_seconds: float = 5.0, poll_seconds: float = 1.0) -> None:
    """End this process (a job of a launcher's worker pool, a study's worker) soon after the
    sweep that started it dies: a SIGKILLed sweep leaves no worker training on for nobody.

    sweeper: the sweep's process as host:pid; on this machine it is watched itself (a pool worker
    that got its job after the sweep died has been handed to init already, and its parent would
    look alive), elsewhere this process's parent is. This process gets SIGTERM (its handler may
    mark its trial and run), and is ended outright grace_seconds later if it is still there (a
    pool worker whose job caught the signal goes on waiting for the next job). Once per process."""
    if _watched:
        return
    parent = os.getppid()
    _watched.append(parent)
    local = sweeper is not None and sweeper.rpartition(":")[0] == socket.gethostname()

    def gone() -> bool:
        return dead_local_worker(sweeper) if local else os.getppid() != parent

    def watch() -> None:
        while not gone():
            time.sleep(poll_seconds)
        log.warning("the sweep that started this process (%s) is gone: stopping", sweeper if local else parent)
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(grace_seconds)
        os._exit(143)

    threading.Thread(target=watch, name="end-with-parent", daemon=True).start()
