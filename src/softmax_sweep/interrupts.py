"""Ctrl-C and SIGTERM that cannot get lost.

Python raises KeyboardInterrupt wherever the main thread happens to be, and where that is a
`__del__` (MXNet frees NDArrays in Python, thousands of times per epoch) the exception is
printed and dropped: training would go on. So the handlers also remember the signal, and the
training loop and the sweep loops call check() at safe points to raise it again.
"""
from __future__ import annotations

import contextlib
import signal
import sys
import threading
from collections.abc import Iterator
from typing import Any

from optuna_pruning import deadlines
from softmax_sweep.errors import Terminated

_received: list[int] = []


SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)  # SIGHUP: the terminal was closed


def _exception(signum: int) -> KeyboardInterrupt:
    return KeyboardInterrupt() if signum == signal.SIGINT else Terminated()


def _handler(signum: int, frame) -> None:
    _received.append(signum)
    deadlines.hurry()  # a storage call that hangs must not keep the process from ending
    raise _exception(signum)


def _unraisable(unraisable, previous=sys.unraisablehook) -> None:
    if isinstance(unraisable.exc_value, KeyboardInterrupt):
        return  # raised in a __del__: dropped by Python, raised again by check(); nothing to print
    previous(unraisable)


def install() -> None:
    if threading.current_thread() is threading.main_thread():
        for signum in SIGNALS:
            signal.signal(signum, _handler)
        sys.unraisablehook = _unraisable


def check() -> None:
    """Raise the interrupt again if one arrived (its first raise may have been swallowed)."""
    if _received:
        raise _exception(_received[-1])


def terminated() -> bool:
    """Whether the last interrupt was SIGTERM or SIGHUP, not Ctrl-C."""
    return bool(_received) and _received[-1] != signal.SIGINT


def received() -> bool:
    """Whether Ctrl-C or SIGTERM arrived: the process is on its way out."""
    return bool(_received)


class InterruptCheck:
    """Training callback: an interrupt stops training at the latest after the current epoch."""

    def on_epoch_end(self, epoch: int, metrics: dict[str, float]) -> None:
        check()


def _hold() -> tuple[list[int], dict[int, Any]]:
    """Swap in handlers that only note Ctrl-C and SIGTERM; return what they will note and the
    handlers they replaced (none outside the main thread). Python-level handlers, not a signal
    mask: in a process with other threads (MXNet's engine) the kernel may hand the signal to a
    thread that does not block it, and Python would still raise KeyboardInterrupt in the main
    thread, in the middle of a database commit."""
    received: list[int] = []
    if threading.current_thread() is not threading.main_thread():
        return received, {}
    def note(signum: int, frame) -> None:
        received.append(signum)
        deadlines.hurry()  # a held storage write that hangs must not keep the process from ending

    previous = {signum: signal.signal(signum, note) for signum in SIGNALS}
    return received, previous


def _restore(previous: dict[int, Any]) -> None:
    for signum, handler in previous.items():
        signal.signal(signum, handler)


@contextlib.contextmanager
def held() -> Iterator[None]:
    """Hold Ctrl-C and SIGTERM during the block and leave them pending: the next check() raises
    them. For a block whose result must reach the code that cleans it up (a run being created)."""
    received, previous = _hold()
    try:
        yield
    finally:
        _restore(previous)
        _received.extend(received)


@contextlib.contextmanager
def deferred() -> Iterator[None]:
    """Hold Ctrl-C and SIGTERM until the block is done, then act on them as they would have."""
    received, previous = _hold()
    try:
        yield
    finally:
        _restore(previous)
        if received and previous:
            handler = previous[received[0]]
            if callable(handler):
                handler(received[0], None)
            elif handler == signal.SIG_DFL:
                signal.raise_signal(received[0])
