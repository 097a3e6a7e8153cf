"""Minibatch SGD for the softmax regression net, eight steps per call of one MXNet graph.

It computes what `autograd.record()` + `loss.backward()` + `gluon.Trainer(..., "sgd").step(batch_size)`
compute for Dense(k) under SoftmaxCrossEntropyLoss on logits (tests/test_training.py checks it
against exactly that), but a training pass at batch 16 takes 0.28 s instead of 1.5 s
(benchmarks/epoch_speed.py; 0.9x at batch 256, where the arithmetic dominates): the work per step
is ~250k multiply-adds, and the time went to the ~0.5 ms that Python, autograd and the Trainer add
to every step. The gradient is written out: for softmax cross-entropy on logits it is
softmax(logits) - one_hot(y) per example.
"""
from __future__ import annotations

import functools
from typing import Optional

import mxnet as mx
from mxnet import gluon, nd, sym

STEPS_PER_CALL = 8  # 32 steps per graph measured no faster at batch 16


@functools.lru_cache(maxsize=64)
def _steps_graph(sizes: tuple[int, ...], num_outputs: int, decay: bool) -> tuple[mx.nd.CachedOp, list[str]]:
    """One graph for SGD steps on batches of `sizes` rows taken in turn from `order`:
    inputs X, y, order, lrs (per step: lr / batch_size), [decays (per step: lr * wd)], weight, bias;
    outputs the new weight and bias, the summed loss and the number of correct predictions.

    MXNet's sgd_update: weight <- (1 - lr * wd) * weight - lr * rescale_grad * grad."""
    X, y, order, lrs, decays, weight, bias = (sym.var(n) for n in
                                              ("X", "y", "order", "lrs", "decays", "weight", "bias"))
    losses, corrects, start = [], [], 0
    for k, size in enumerate(sizes):
        rows = sym.slice_axis(order, axis=0, begin=start, end=start + size)
        start += size
        Xb, yb = sym.take(X, rows), sym.take(y, rows)
        logits = sym.FullyConnected(Xb, weight, bias, num_hidden=num_outputs)
        losses.append(sym.softmax_cross_entropy(logits, yb))
        corrects.append(sym.sum(sym.argmax(logits, axis=1) == yb))
        lr = sym.slice_axis(lrs, axis=0, begin=k, end=k + 1)
        grad = sym.broadcast_mul(sym.softmax(logits, axis=-1) - sym.one_hot(yb, num_outputs), lr)
        if decay:
            keep = 1 - sym.slice_axis(decays, axis=0, begin=k, end=k + 1)
            weight, bias = sym.broadcast_mul(weight, keep), sym.broadcast_mul(bias, keep)
        weight = weight - sym.dot(grad, Xb, transpose_a=True)
        bias = bias - sym.sum(grad, axis=0)
    out = sym.Group([weight, bias, sym.add_n(*losses), sym.add_n(*corrects)])
    return mx.nd.CachedOp(out, flags=[("static_alloc", "true"), ("static_shape", "true")]), out.list_inputs()


class SoftmaxSGD:
    """The updater of `net` (a Dense layer, alone in a Sequential or bare): plain SGD at lr with
    weight decay wd, every step's summed gradient divided by batch_size (also on the epoch's last,
    smaller batch, as the chapter's train_ch3 does), lr per update from an MXNet lr_scheduler."""

    def __init__(self, net: gluon.Block, lr: float, batch_size: int, wd: float = 0.0,
                 lr_scheduler: Optional[mx.lr_scheduler.LRScheduler] = None) -> None:
        dense = net[0] if isinstance(net, (gluon.nn.Sequential, gluon.nn.HybridSequential)) else net
        self.weight, self.bias = dense.weight, dense.bias
        self.num_outputs = self.weight.shape[0]
        self.lr, self.batch_size, self.wd, self.lr_scheduler = lr, batch_size, wd, lr_scheduler
        self.num_update = 0
        self._constant: dict[int, tuple[nd.NDArray, nd.NDArray]] = {}

    @property
    def learning_rate(self) -> float:
        return self.lr_scheduler(self.num_update) if self.lr_scheduler else self.lr

    def _rates(self, steps: int) -> tuple[nd.NDArray, nd.NDArray]:
        """Per step: lr / batch_size and lr * wd (the step numbers count from 1, as MXNet's optimizer's do)."""
        if self.lr_scheduler is None:
            if steps not in self._constant:
                self._constant[steps] = (nd.full((steps,), self.lr / self.batch_size),
                                         nd.full((steps,), self.lr * self.wd))
            return self._constant[steps]
        lrs = [self.lr_scheduler(self.num_update + k + 1) for k in range(steps)]
        return nd.array([lr / self.batch_size for lr in lrs]), nd.array([lr * self.wd for lr in lrs])

    def epoch(self, X: nd.NDArray, y: nd.NDArray, order: nd.NDArray) -> tuple[nd.NDArray, nd.NDArray]:
        """One pass over rows `order` of (X, y) in minibatches; returns the summed loss and the number
        of correct predictions, each measured on a batch before its step (as NDArrays: no sync)."""
        n, bs = order.shape[0], self.batch_size
        chunk = bs * STEPS_PER_CALL
        full_calls = n // chunk
        rest = n - full_calls * chunk
        rest_sizes = (bs,) * (rest // bs) + ((rest % bs,) if rest % bs else ())
        weight, bias = self.weight.data(), self.bias.data()
        loss, correct = nd.zeros((1,)), nd.zeros((1,))
        calls = [((bs,) * STEPS_PER_CALL, order[c * chunk:(c + 1) * chunk]) for c in range(full_calls)]
        if rest_sizes:
            calls.append((rest_sizes, order[full_calls * chunk:]))
        for sizes, rows in calls:
            graph, inputs = _steps_graph(sizes, self.num_outputs, self.wd != 0)
            lrs, decays = self._rates(len(sizes))
            feed = {"X": X, "y": y, "order": rows, "lrs": lrs, "decays": decays, "weight": weight, "bias": bias}
            weight, bias, batch_loss, batch_correct = graph(*(feed[name] for name in inputs))
            loss += batch_loss
            correct += batch_correct
            self.num_update += len(sizes)
        self.weight.set_data(weight)
        self.bias.set_data(bias)
        return loss, correct
