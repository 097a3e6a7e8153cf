"""A multirun's process runs MXNet's operators on NaiveEngine, evaluations on every core and
training steps on a thread for each 128 of batch x models (softmax_sweep.engine): the numbers are
those of one core, float for float."""
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
found = [evaluate(nets[:1], [(X, y)]), evaluate(nets, [(X[:5000], y[:5000]), (X[5000:], y[5000:])])]
print(engine.cores(), sorted(k for k in os.environ if k.startswith("MXNET_")),
      len(os.listdir("/proc/self/task")))
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
    # the engine's settings are MXNet's alone: processes this one starts (workers) choose their own
    (every, every_threads), (one, one_threads) = (runs[k][0].rsplit(" ", 1) for k in ("every core", "one core"))
    assert (every, one) == (f"{cores} []", "1 []")
    assert int(every_threads) > int(one_threads), "every core: OpenMP started threads of its own"
    assert runs["every core"][1] == runs["one core"][1]
    assert len(eval(runs["one core"][1])) == 2 + 32  # loss and accuracy of 1 and of 16 models


STACK_AND_ALONE = """
import os, sys
from pathlib import Path
import numpy as np
from softmax_sweep.data import load_dataset
from softmax_sweep.experiment import train_softmax
from softmax_sweep.model import exact_chunks
from softmax_sweep.sgd import step_plan
from softmax_sweep.stacking import ModelSettings, train_stacked
from softmax_sweep.synthetic import write_synthetic_idx
write_synthetic_idx(Path(sys.argv[1]), n_train=700, n_test=100)
data = load_dataset("idx", root=sys.argv[1])
lrs = np.geomspace(0.01, 1, 12)
shared = dict(batch_size=32, val_size=100, seed=0)
stack = train_stacked(data, [ModelSettings(lr, 3) for lr in lrs], batch_size=32, val_size=100)
alone = [train_softmax(data, lr=lr, num_epochs=3, **shared)[0] for lr in lrs]
print(sum(all(np.array_equal(a.data().asnumpy(), b.data().asnumpy())
              for a, b in zip(net.collect_params().values(), model.net.collect_params().values()))
          for net, model in zip(alone, stack)), step_plan(32, 0, (12,), 10, 784)[0], step_plan(32, 0, (1,), 10, 784)[0],
      len(exact_chunks(32, 12, 10, 784, together=len(os.sched_getaffinity(0)), alone=1)))
"""


@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="one core: no second thread to be left with")
def test_a_stack_is_exact_in_a_process_left_with_every_core(tmp_path) -> None:
    """A launcher's worker or a benchmark's child inherits NaiveEngine with every core allowed, and
    OpenMP then starts every thread at all cores. The stack's steps (12 models on 32 rows of 784
    inputs) run on more threads than each model alone (on one), and the stack's chunks are checked
    against each model's products on its own threads (12 models on 32 rows are exact together on
    two threads, not on one, on some CPUs), so the 12 stacked models end as each alone. MXNet's
    graphs train here (SOFTMAX_SWEEP_FUSED=0): the fused operator takes no steps' thread plan."""
    from softmax_sweep import engine

    env = {k: v for k, v in clean_env().items() if not k.startswith(("OMP_", "MXNET_"))}
    env.update(MXNET_ENGINE_TYPE="NaiveEngine", MXNET_OMP_MAX_THREADS=str(len(os.sched_getaffinity(0))),
               SOFTMAX_SWEEP_FUSED="0")
    done = subprocess.run([sys.executable, "-c", STACK_AND_ALONE, str(tmp_path / "idx")], env=env,
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    equal, stack_threads, alone_threads, exact_on_every_core = done.stdout.split()
    cores = len(os.sched_getaffinity(0))
    # where no chunk of the stack is exact on every core (an AMD EPYC), the steps fall back to one thread
    every_core = min(cores, 32 * 12 * 10 * 784 // engine.THREAD_WORK)
    assert (int(stack_threads), alone_threads) == (every_core if int(exact_on_every_core) else 1, "1")
    assert equal == "12", "stacked models whose weights equal their weights alone"


def test_training_steps_take_a_thread_for_each_share_of_work_up_to_the_cores(monkeypatch) -> None:
    from softmax_sweep import engine

    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    cores = len(os.sched_getaffinity(0))
    share = engine.THREAD_WORK
    assert [engine.training_threads(w) for w in (1, share - 1, share, 2 * share - 1)] == [1, 1, 1, 1]
    assert engine.training_threads(2 * share) == min(2, cores)  # on 2 cores: batch 256 alone, 16 at batch 16
    assert engine.training_threads(cores * share) == cores
    assert engine.training_threads(100 * cores * share) == cores, "never more threads than cores"
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # a joblib worker's share, or the user's choice
    assert engine.training_threads(100 * cores * share) == 1


TEAMS = """
import os, sys, threading
from softmax_sweep import engine
engine.prepare_multirun()
from mxnet import nd

X, W = nd.ones((2000, 784)), nd.ones((100, 784))
waiting = sys.argv[1] == "waiting"
started, done = threading.Semaphore(0), threading.Event()


def job():
    if waiting:
        engine.waiting_thread()
    nd.FullyConnected(X, W, no_bias=True, num_hidden=100).wait_to_read()
    started.release()
    done.wait()


jobs = [threading.Thread(target=job) for _ in range(4)]
before = len(os.listdir("/proc/self/task"))
for thread in jobs:
    thread.start()
for _ in jobs:
    started.acquire()
print(len(os.listdir("/proc/self/task")) - before - len(jobs))
done.set()
"""


@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="one core: no OpenMP team to keep")
def test_a_waiting_thread_keeps_no_openmp_team() -> None:
    """A stacked launch's job threads wait while their group trains: had each kept the OpenMP team
    of its own operators, libgomp would slow every training operator (engine.waiting_thread)."""
    env = {k: v for k, v in clean_env().items() if not k.startswith(("OMP_", "MXNET_"))}
    teams = {}
    for mode in ("running", "waiting"):
        done = subprocess.run([sys.executable, "-c", TEAMS, mode], env=env, capture_output=True, text=True)
        assert done.returncode == 0, done.stderr[-2000:]
        teams[mode] = int(done.stdout.split()[-1])
    assert teams["running"] >= 4, "four threads that ran a parallel operator should keep a team thread each"
    assert teams["waiting"] == 0


LAUNCHER = """
import os
from softmax_sweep import engine
engine.prepare_multirun()
from mxnet import nd

before = len(os.listdir("/proc/self/task"))
nd.FullyConnected(nd.ones((2000, 784)), nd.ones((100, 784)), no_bias=True, num_hidden=100).wait_to_read()
print(len(os.listdir("/proc/self/task")) - before)
"""


@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="one core: no OpenMP team to keep")
def test_the_launchers_thread_keeps_no_openmp_team() -> None:
    """A multirun's own thread (the launcher's, which loads the data set) runs its operators on one
    thread: a team of its would live as long as the process, and a stack trained in a thread of
    its own beside it took 13 s instead of 4 (engine.start_quietly)."""
    env = {k: v for k, v in clean_env().items() if not k.startswith(("OMP_", "MXNET_"))}
    done = subprocess.run([sys.executable, "-c", LAUNCHER], env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    assert int(done.stdout.split()[-1]) == 0
