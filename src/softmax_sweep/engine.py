"""How MXNet runs operators in this process: its engine, and how many threads an operator uses.

MXNet's own default is half the cores (it assumes two hyperthreads per core: one thread on a
2-core machine). One model's small operators run best on one thread; a stack of models spends
its time in matrix products and evaluations large enough to use every core. A multirun process
(where the stacked launcher trains stacks) takes MXNet's NaiveEngine, which runs an operator in
the thread that calls it, so each fit can set its own thread count (threads_for); the results
are the same float for float (tests/test_engine.py), the time is not (benchmarks/stacked.py).
A value the user set in the environment wins; so does joblib's, which gives each of its worker
processes its share of the cores in OMP_NUM_THREADS."""
from __future__ import annotations

import contextlib
import ctypes
import os
import sys
from collections.abc import Iterator


def cores() -> int:
    """The cores this process may use: OMP_NUM_THREADS if set, else those it may run on."""
    return int(os.environ.get("OMP_NUM_THREADS") or len(os.sched_getaffinity(0)))


def prepare_multirun() -> None:
    """Before MXNet is imported, in a multirun's process: NaiveEngine, with every core allowed."""
    if "mxnet" in sys.modules or "MXNET_ENGINE_TYPE" in os.environ:
        return  # (MXNET_OMP_MAX_THREADS under a threaded engine: each of its threads would take every core)
    os.environ["MXNET_ENGINE_TYPE"] = "NaiveEngine"
    os.environ.setdefault("MXNET_OMP_MAX_THREADS", str(cores()))
    start_quietly()
    set_threads(_outside())


def start_quietly() -> None:
    """Start MXNet's engine. It announces any engine but its default on stderr from C++ ("MXNet
    start using engine: NaiveEngine"), which no log level silences: stderr is closed for that moment."""
    saved, devnull = os.dup(2), os.open(os.devnull, os.O_WRONLY)
    sys.stderr.flush()
    os.dup2(devnull, 2)
    try:
        import mxnet

        mxnet.nd.zeros(1).wait_to_read()
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


@contextlib.contextmanager
def every_core() -> Iterator[None]:
    """Operators called from this thread inside the block use every core; one outside it. (Under
    MXNet's default threaded engine operators run in threads of its own: no effect.)"""
    set_threads(cores())
    try:
        yield
    finally:
        set_threads(_outside())


def _outside() -> int:
    return int(os.environ.get("OMP_NUM_THREADS") or 1)


def set_threads(count: int) -> None:
    import mxnet

    mxnet.base._LIB.MXSetNumOMPThreads(ctypes.c_int(count))
