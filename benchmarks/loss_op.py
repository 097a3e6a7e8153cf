"""The fused loss operator alone (softmax_sweep/fused_xent.cc), on the shapes stacked training and
evaluation give it, on one thread and on two: microseconds per call, best of 30, and a checksum of
its outputs, so that two commits can be compared (the same checksum: the same numbers).

    python benchmarks/loss_op.py
    (another commit: git worktree add /tmp/old COMMIT, then PYTHONPATH=/tmp/old/src python benchmarks/loss_op.py)

Shapes: an evaluation of 120 models on the 10,000 test images (exercise 2's batch-32 groups), a
training step of 16 models at batch 256 ((a) of benchmarks/stacked.py) and of 12 models at batch
32 (a lane of exercise 2), with the gradient. Random logits, normal with sd 2.
"""
from __future__ import annotations

import time

from softmax_sweep import engine

engine.prepare_multirun()  # before MXNet is imported

import mxnet as mx  # noqa: E402
import numpy as np  # noqa: E402
from mxnet import nd, sym  # noqa: E402

from softmax_sweep import fused  # noqa: E402

SHAPES = ((10000, 120, False), (256, 16, True), (32, 12, True))  # rows, models, with the gradient


def main() -> None:
    if not fused.available():
        raise SystemExit("the fused operators could not be built here: nothing to time")
    rng = np.random.RandomState(0)
    print(f"{'rows':>6s} {'models':>6s} {'gradient':>8s} {'1 thread':>10s} {'2 threads':>10s}  checksum")
    for rows, models, grad in SHAPES:
        logits, labels, scale = sym.var("logits"), sym.var("labels"), sym.var("scale")
        out = fused.loss_correct_and_grad(logits, labels, scale, models, 10, True) if grad else \
            fused.loss_and_correct(logits, labels, models, 10, True)
        group = sym.Group(list(out))
        graph = mx.nd.CachedOp(group)
        feed = {"logits": nd.array(rng.normal(0, 2, (rows, models * 10)).astype(np.float32)),
                "labels": nd.array(rng.randint(0, 10, rows).astype(np.float32)),
                "scale": nd.ones((models,)) * 0.01}
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
        print(f"{rows:>6d} {models:>6d} {str(grad):>8s} {best[1]:>8.0f}us {best[2]:>8.0f}us  {checksum:.9g}")


if __name__ == "__main__":
    main()
