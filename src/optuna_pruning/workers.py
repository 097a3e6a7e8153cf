"""Which process runs a trial: its user attribute `worker` is host:pid, so that a later start on
the same machine can tell a trial whose process died (and fail and retry it)."""
from __future__ import annotations

import os
import socket


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
    return False
