"""The training pass alone, per lane step on one core: fused_epoch.cc's sgd_epoch against MXNet's
graph of a step (SOFTMAX_SWEEP_FUSED=0), on random data of Fashion-MNIST's shape, best of 4
passes each, and the arithmetic of a step at this CPU's peak for a large product. A checksum of
the weights after the passes lets two commits be compared (the same checksum: the same numbers).

    python benchmarks/epoch_op.py
    (another commit: git worktree add /tmp/old COMMIT, then PYTHONPATH=/tmp/old/src python benchmarks/epoch_op.py)

Shapes: 12 models at batch 32 in 10 lanes (exercise 2's 500- and 2000-image groups), 3 models
at batch 16 and 7 at batch 32 (exercise 1's groups), one model at batch 16 and at batch 256, and
one model at batch 256 on rows drawn from 55,000 (exercise 2's full-data lanes: the rows come from
memory, not the cache).
"""
from __future__ import annotations

import os
import time
from unittest import mock

from softmax_sweep import engine

engine.prepare_multirun()  # before MXNet is imported

import numpy as np  # noqa: E402
from mxnet import nd  # noqa: E402
from stacked import peak_gflops  # noqa: E402

from softmax_sweep import fused  # noqa: E402
from softmax_sweep.model import build_net  # noqa: E402
from softmax_sweep.sgd import Member, SoftmaxSGD  # noqa: E402

SHAPES = ((12, 32, 10, 2048), (3, 16, 1, 2048), (7, 32, 1, 2048), (1, 16, 1, 2048), (1, 256, 1, 2048),
          (1, 256, 1, 55000))  # models a lane, batch size, lanes, rows drawn from
PRODUCT_MACS = 2 * 10 * 784  # a row's forward product and its share of the weight gradient, a model


def lane_step_us(X, y, models: int, batch_size: int, lanes: int, drawn: int) -> tuple[float, float]:
    """Best microseconds per lane step over 4 passes of 2048 rows per lane, and a weights checksum."""
    rng = np.random.RandomState(0)
    updater = SoftmaxSGD.in_lanes([[Member(build_net(10, 784), 0.1, wd=1e-4 * (i % 2)) for i in range(models)]
                                   for _ in range(lanes)], batch_size)
    orders = [nd.array(rng.permutation(drawn)[:2048], dtype="int64") for _ in range(lanes)]
    best = float("inf")
    with engine.sharing(lambda: engine.cores()):  # one core, as a group beside others
        for _ in range(4):
            start = time.perf_counter()
            updater.epoch(X, y, *orders)[0].wait_to_read()
            best = min(best, time.perf_counter() - start)
    checksum = sum(float(np.abs(m.dense.weight.data().asnumpy().astype(np.float64)).sum()) for m in updater.members)
    return best / -(-2048 // batch_size) / lanes * 1e6, checksum


def main() -> None:
    if not fused.available():
        raise SystemExit("the fused operators could not be built here: nothing to time")
    rng = np.random.RandomState(0)
    X = nd.array(rng.rand(60000, 784).astype(np.float32))
    y = nd.array(rng.randint(0, 10, 60000).astype(np.float32))
    peak = peak_gflops()[0] / 2 * 1e9  # multiply-adds a second on one core
    print(f"one core; a large product: {peak / 1e9:.0f} G multiply-adds a second")
    print(f"{'models':>6s} {'batch':>5s} {'lanes':>5s} {'rows':>6s} {'MXNet graph':>12s} {'sgd_epoch':>10s} "
          f"{'at peak':>8s}  checksum")
    for models, batch_size, lanes, drawn in SHAPES:
        found = {}
        for name in ("0", "1"):
            with mock.patch.dict(os.environ, {"SOFTMAX_SWEEP_FUSED": name}):
                found[name] = lane_step_us(X, y, models, batch_size, lanes, drawn)
        floor = models * batch_size * PRODUCT_MACS / peak * 1e6
        print(f"{models:>6d} {batch_size:>5d} {lanes:>5d} {drawn:>6d} {found['0'][0]:>10.0f}us {found['1'][0]:>8.0f}us "
              f"{floor:>6.0f}us  {found['1'][1]:.9g}", flush=True)


if __name__ == "__main__":
    main()
