"""A multirun's process runs MXNet's operators on NaiveEngine, evaluations on every core and
training steps on one (softmax_sweep.engine): the numbers are those of one core, float for float."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest

from conftest import clean_env

EVALUATE = """
import os
from softmax_sweep import engine
engine.prepare_multirun()
import numpy as np
from mxnet import nd
from softmax_sweep.model import build_net, evaluate
rng = np.random.RandomState(0)
X = nd.array(rng.rand(6000, 784).astype(np.float32))
y = nd.array(rng.randint(0, 10, 6000).astype(np.float32))
nets = [build_net(10, 784) for _ in range(16)]
threads = len(os.listdir("/proc/self/task"))
found = [evaluate(nets[:1], [(X, y)]), evaluate(nets, [(X[:5000], y[:5000]), (X[5000:], y[5000:])])]
print(os.environ["MXNET_ENGINE_TYPE"], os.environ["MXNET_OMP_MAX_THREADS"],
      len(os.listdir("/proc/self/task")) - threads)
print([float(v).hex() for result in found for values in result for v in values])
"""


@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="one core: no second thread to compare with")
def test_evaluation_on_every_core_gives_the_numbers_of_one() -> None:
    env = {k: v for k, v in clean_env().items() if not k.startswith(("OMP_", "MXNET_"))}
    cores = len(os.sched_getaffinity(0))
    runs = {}
    for label, extra in (("every core", {}), ("one core", {"OMP_NUM_THREADS": "1"})):
        done = subprocess.run([sys.executable, "-c", EVALUATE], env={**env, **extra}, capture_output=True, text=True)
        assert done.returncode == 0, done.stderr[-2000:]
        assert "NaiveEngine" not in done.stderr, "MXNet's engine banner reached stderr"
        runs[label] = done.stdout.splitlines()
    engine_line, threads_started = runs["every core"][0].rsplit(" ", 1)
    assert engine_line == f"NaiveEngine {cores}" and int(threads_started) >= 1, runs["every core"][0]
    assert runs["one core"][0] == "NaiveEngine 1 0", "one core: no OpenMP thread started"
    assert runs["every core"][1] == runs["one core"][1]
    assert len(eval(runs["one core"][1])) == 2 + 32  # loss and accuracy of 1 and of 16 models
