"""How MXNet runs operators in this process: its engine, and how many threads an operator uses.

MXNet's own default is half the cores (it assumes two hyperthreads per core: one thread on a
2-core machine). An evaluation is a few large products (10,000 images at a time), about twice as
fast on two cores. A training pass in the fused operator shares its models out among the cores
(a model alone takes one); in MXNet's graphs (without the operator) a step's products are as large
as its batch times its stack, and a thread pays for each 128 Fashion-MNIST rows x models there
(training_threads: on 2 cores, both from 256 on). A multirun's process (where the stacked
launcher trains stacks) takes MXNet's NaiveEngine, which runs an operator in the thread that calls
it, so the count can change between evaluation (every core where a model's products there are its
products on one core) and training (using), and threads can train side by side, each on its share
of the cores (sharing, budget): the stacked launcher's groups of jobs, a stack's lanes in MXNet's
graphs (softmax_sweep.sgd). The numbers are the same float for float (tests/test_engine.py;
model.exact_chunks checks the products of a stack against each model's alone: in training on the
count it trains with, in evaluation on one core). OMP_NUM_THREADS, when set (by the user, or by
joblib, which gives each worker process its share of the cores), is the count of training passes
and evaluations alike.
"""
from __future__ import annotations

import contextlib
import ctypes
import os
import sys
import threading
from collections.abc import Callable, Iterator


def cores() -> int:
    """The cores this process may use: OMP_NUM_THREADS if set, else those it may run on."""
    return int(os.environ.get("OMP_NUM_THREADS") or len(os.sched_getaffinity(0)))


def prepare_multirun() -> None:
    """Before MXNet is imported, in a multirun's process: NaiveEngine, with every core allowed.
    The variables leave the environment once MXNet has read them: the processes this one starts
    (a launcher's workers, which share the cores) choose for themselves."""
    if "mxnet" in sys.modules or "MXNET_ENGINE_TYPE" in os.environ:
        return  # (MXNET_OMP_MAX_THREADS under a threaded engine: each of its threads would take every core)
    ours = {"MXNET_ENGINE_TYPE": "NaiveEngine", "MXNET_OMP_MAX_THREADS": str(cores())}
    ours = {k: v for k, v in ours.items() if k not in os.environ}
    os.environ.update(ours)
    try:
        start_quietly()
    finally:
        for key in ours:
            del os.environ[key]


def start_quietly() -> None:
    """Start MXNet's engine. It announces any engine but its default on stderr from C++ ("MXNet
    start using engine: NaiveEngine"), which no log level silences: stderr is closed for that moment.
    This thread's operators take one thread from here on (training and evaluation set their own
    count): an operator on two would give it an OpenMP team for as long as the process lives, and
    with it every parallel operator of another thread sleeps at its barriers (libgomp, with more of
    its threads alive than cores). A stack trained in a thread of its own took 13 s instead of 4
    (4 models at batch 128, 30 epochs, two threads)."""
    saved, devnull = os.dup(2), os.open(os.devnull, os.O_WRONLY)
    sys.stderr.flush()
    os.dup2(devnull, 2)
    try:
        import mxnet

        set_threads(1)
        (mxnet.nd.ones(2) + 1).wait_to_read()  # an operator that reads MXNet's thread settings
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


# multiply-adds of one product of a training step in MXNet's graphs that pay for a thread: on 2
# cores, two threads were faster than one from 256 rows x 10 outputs x 784 inputs on; more cores,
# more threads, each with at least as much of the product
THREAD_WORK = 128 * 10 * 784


def training_threads(work: int) -> int:
    """The threads for training steps whose products take `work` multiply-adds each: one per
    THREAD_WORK, up to every core (OMP_NUM_THREADS, when set)."""
    if os.environ.get("OMP_NUM_THREADS"):
        return _steps()
    return max(1, min(cores(), work // THREAD_WORK))


def budget() -> int:
    """The cores this thread's operators may take: cores(), shared out while it trains beside
    other threads (sharing)."""
    beside = getattr(_set, "beside", None)
    return max(1, cores() // max(1, beside())) if beside else cores()


@contextlib.contextmanager
def sharing(beside: Callable[[], int]) -> Iterator[None]:
    """Inside the block this thread's operators take their share of the cores with beside() threads
    training at once (itself included), read again at each use: a thread left alone takes them all.
    A model's numbers stay those it gets alone: its products are checked for both thread counts
    (model.exact_chunks). (libgomp has every parallel operator sleep at its barriers
    while more threads that ran OpenMP operators live than there are cores: a training pass at batch
    256 on two threads from a second thread, the first keeping its team, takes 3x as long. Exercise 2
    still gains: 137 s against 171 s with a fixed share, benchmarks/stacked.py (b).)"""
    before = getattr(_set, "beside", None)
    _set.beside = beside
    try:
        yield
    finally:
        _set.beside = before


@contextlib.contextmanager
def using(count: int) -> Iterator[None]:
    """Operators called from this thread inside the block use `count` threads; after it, the
    count before. (Under MXNet's default threaded engine operators run in its own threads: no
    effect.)"""
    before = threads() or _steps()
    set_threads(count)
    try:
        yield
    finally:
        set_threads(before)


def waiting_thread() -> None:
    """This thread waits while others train (a stacked launch's job, until its group has trained):
    its own operators take one thread, so that it keeps no OpenMP team. libgomp has every parallel
    operator sleep at its barriers while more threads of its teams live than there are cores, and
    a thread's team lives as long as the thread: with the 16 jobs of a grid each holding one, a
    training pass of their stack at batch 256 took 3.7x as long (benchmarks/stacked.py (a), as
    commands)."""
    if "mxnet" in sys.modules and threading.current_thread() is not threading.main_thread():
        set_threads(1)


def _steps() -> int:
    return int(os.environ.get("OMP_NUM_THREADS") or 1)


_set = threading.local()


def set_threads(count: int) -> None:
    import mxnet

    mxnet.base._LIB.MXSetNumOMPThreads(ctypes.c_int(count))
    _set.count = count


def threads() -> int:
    """The count this thread last set (0: none set, the process's default). oneDNN picks its
    kernels by thread count too, so model.exact_chunks checks each count it meets."""
    return getattr(_set, "count", 0)
