"""The fused loss operator alone (softmax_sweep/fused_xent.cc), on the shapes stacked evaluations
give it, on one thread and on two: microseconds per call, best of 30, and a checksum of its
outputs, so that two commits can be compared (the same checksum: the same numbers).

    python benchmarks/loss_op.py
    (another commit: git worktree add /tmp/old COMMIT, then PYTHONPATH=/tmp/old/src python benchmarks/loss_op.py)

Shapes: 120 models on the 10,000 test images (exercise 2's batch-32 groups), 16 models on the
5,000 validation images ((a) of benchmarks/stacked.py) and 12 models on 500 (a lane of exercise 2
on its training rows). Random logits, normal with sd 2.
"""
from __future__ import annotations

import time

from softmax_sweep import engine

engine.prepare_multirun()  # before MXNet is imported

import mxnet as mx  # noqa: E402
import numpy as np  # noqa: E402
from mxnet import nd, sym  # noqa: E402

from softmax_sweep import fused  # noqa: E402

SHAPES = ((10000, 120), (5000, 16), (500, 12))  # rows, models


def main() -> None:
    if not fused.available():
        raise SystemExit("the fused operators could not be built here: nothing to time")
    rng = np.random.RandomState(0)
    print(f"{'rows':>6s} {'models':>6s} {'1 thread':>10s} {'2 threads':>10s}  checksum")
    for rows, models in SHAPES:
        group = sym.Group(list(fused.loss_and_correct(sym.var("logits"), sym.var("labels"), models, 10, True)))
        graph = mx.nd.CachedOp(group)
        feed = {"logits": nd.array(rng.normal(0, 2, (rows, models * 10)).astype(np.float32)),
                "labels": nd.array(rng.randint(0, 10, rows).astype(np.float32))}
        inputs = [feed[name] for name in group.list_inputs()]
        best = {}
        for threads in (1, 2):
            with engine.using(threads):
                times = []
                for _ in range(30):
                    start = time.perf_counter()
                    found = graph(*inputs)
                    found[0].wait_to_read()
                    times.append(time.perf_counter() - start)
            best[threads] = min(times) * 1e6
        checksum = sum(float(np.abs(a.asnumpy().astype(np.float64)).sum()) for a in found)
        print(f"{rows:>6d} {models:>6d} {best[1]:>8.0f}us {best[2]:>8.0f}us  {checksum:.9g}")


if __name__ == "__main__":
    main()
