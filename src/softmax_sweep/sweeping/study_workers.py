"""A study script's --workers K: the same command as K local processes on one study, each
sharing the cores (OpenMP threads, MXNet's synchronous engine); a signal to the script reaches them."""
from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Sequence

from softmax_sweep.cli import user_full_error
from softmax_sweep.errors import Terminated

log = logging.getLogger("softmax_sweep.sweep")


def run_workers(k: int, argv: Sequence[str]) -> list[int]:
    """Run this command as K worker processes and wait for them. Ctrl-C in a terminal reaches
    them all; a signal sent to this process alone is passed on."""
    command = [sys.executable, sys.argv[0], *_without_workers_flag(argv), "--workers", "1"]
    env = dict(os.environ)
    if not user_full_error():  # run_cli set it to see Hydra's errors; a worker's user errors stay one line
        env.pop("HYDRA_FULL_ERROR", None)
    # Workers share the cores: each gets its share of OpenMP threads and MXNet's synchronous
    # engine, whose single thread does the work that engine threads would hand back and forth
    # (measured on 2 cores: 1.68x the throughput of one worker, against 1.49x without).
    env.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // k)))
    env.setdefault("MXNET_ENGINE_TYPE", "NaiveEngine")
    workers = [subprocess.Popen([*command, "--worker", str(i)], env=env) for i in range(k)]
    try:
        while any(w.poll() is None for w in workers):  # collects each as it ends, not in order
            time.sleep(0.5)
        codes = [w.returncode for w in workers]
    except KeyboardInterrupt as e:
        _stop(workers, signal.SIGTERM if isinstance(e, Terminated) else signal.SIGINT)
        raise
    failed = [c for c in codes if c != 0]
    if failed:  # the study decides whether the sweep failed: live workers recover a dead one's trials
        log.warning("%d of %d workers exited with an error (exit codes %s)", len(failed), k,
                    ", ".join(map(str, failed)))
    return failed


def _stop(workers: Sequence[subprocess.Popen], signum: int) -> None:
    deadline = time.monotonic() + 3  # a terminal's Ctrl-C reached them already: let them finish
    for w in workers:
        try:
            w.wait(timeout=max(deadline - time.monotonic(), 0.01))
        except subprocess.TimeoutExpired:
            w.send_signal(signum)
    for w in workers:
        try:
            w.wait(timeout=120)
        except subprocess.TimeoutExpired:
            w.kill()


def _without_workers_flag(argv: Sequence[str]) -> list[str]:
    kept, skip = [], False
    for arg in argv:
        if skip:
            skip = False
        elif arg == "--workers":
            skip = True
        elif not arg.startswith("--workers="):
            kept.append(arg)
    return kept


def start_engine_quietly() -> None:
    """MXNet announces any engine but its default on stderr from C++ ("MXNet start using engine:
    NaiveEngine"), which no log level silences: start it with stderr closed for that moment."""
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
