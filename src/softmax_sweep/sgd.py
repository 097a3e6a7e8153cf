"""Minibatch SGD for softmax regression nets, eight steps per call of one MXNet graph, for one
model or for K models stacked in the same graph.

It computes what `autograd.record()` + `loss.backward()` + `gluon.Trainer(..., "sgd").step(batch_size)`
compute for Dense(k) under SoftmaxCrossEntropyLoss on logits (tests/test_training.py checks it
against exactly that), but a training pass at batch 16 takes about a quarter of the time
(benchmarks/epoch_speed.py prints both; about the same at batch 256, where the arithmetic
dominates): the work per step is ~250k multiply-adds, and the time went to what Python, autograd
and the Trainer add to every step. The gradient is written out: for softmax cross-entropy on logits it is
softmax(logits) - one_hot(y) per example.

K models that take the same minibatches (same data, training rows, batch size and shuffle) are
one Dense(K * k) in the graph: one pass over each batch's rows serves them all, each with its own
learning rate, weight decay and schedule. Each model's weights are what training it alone gives,
float for float (tests/test_stacked.py, up to lr 1): the two matrix products of a step are taken
in a layout, and in chunks of models, in which oneDNN computes every model's part as it computes
that model alone (model.exact_chunk), so no rounding difference is there for SGD to grow.
"""
from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Optional

import mxnet as mx
from mxnet import gluon, nd, sym

from softmax_sweep import engine, fused
from softmax_sweep.fused import loss_correct_and_grad
from softmax_sweep.model import dense_of, exact_chunk, stacked_logits, stacked_weight_grad

STEPS_PER_CALL = 8  # 32 steps per graph measured no faster at batch 16


@functools.lru_cache(maxsize=128)
def _steps_graph(sizes: tuple[int, ...], chunks: tuple[int, ...], models: int, num_outputs: int, decay: bool,
                 use_fused: bool) -> tuple[mx.nd.CachedOp, list[str]]:
    """One graph for SGD steps of `models` stacked models on batches of `sizes` rows taken in turn
    from `order`: inputs X, y, order, lrs and decays (per step and model: lr / batch_size, lr * wd),
    weight (models * num_outputs, inputs), bias; outputs the new weight and bias, and per model the
    summed loss and the number of correct predictions. chunks: each step's exact_chunk; use_fused:
    the loss and its gradient from softmax_sweep.fused's operator.

    MXNet's sgd_update: weight <- (1 - lr * wd) * weight - lr * rescale_grad * grad."""
    X, y, order, lrs, decays, weight, bias = (sym.var(n) for n in
                                              ("X", "y", "order", "lrs", "decays", "weight", "bias"))
    losses, corrects, start = [], [], 0
    for k, size in enumerate(sizes):
        rows = sym.slice_axis(order, axis=0, begin=start, end=start + size)
        start += size
        Xb, yb = sym.take(X, rows), sym.take(y, rows)
        lr = sym.reshape(sym.slice_axis(lrs, axis=0, begin=k, end=k + 1), shape=(-1,))
        keep = 1 - sym.reshape(sym.slice_axis(decays, axis=0, begin=k, end=k + 1), shape=(-1,))
        chunk = chunks[k]
        logits = stacked_logits(Xb, weight, bias, models, num_outputs, chunk)
        loss, correct, grad, bias_grad = loss_correct_and_grad(logits, yb, lr, models, num_outputs, use_fused)
        losses.append(loss)
        corrects.append(correct)
        if decay:
            keep = sym.repeat(keep, repeats=num_outputs)  # each model's factor on its num_outputs rows
            weight, bias = sym.broadcast_mul(weight, sym.expand_dims(keep, axis=1)), sym.broadcast_mul(bias, keep)
        weight = weight - stacked_weight_grad(Xb, grad, models, num_outputs, chunk)
        bias = bias - bias_grad
    out = sym.Group([weight, bias, sym.add_n(*losses), sym.add_n(*corrects)])
    return mx.nd.CachedOp(out, flags=[("static_alloc", "true"), ("static_shape", "true")]), out.list_inputs()


def step_plan(batch_size: int, last_size: int, models: int, num_outputs: int, num_inputs: int
              ) -> tuple[int, dict[int, int]]:
    """The threads of an epoch's steps (as many as a stack of their size pays for, unless a
    model's products there differ from its products alone) and each step size's exact chunk."""
    alone = engine.training_threads(batch_size * num_outputs * num_inputs)
    for threads in dict.fromkeys((engine.training_threads(batch_size * models * num_outputs * num_inputs), alone)):
        chunk_of = {size: exact_chunk(size, models, num_outputs, num_inputs, together=threads, alone=alone)
                    for size in {batch_size, last_size} - {0}}
        if all(chunk_of.values()):
            return threads, chunk_of
    raise AssertionError("a model's products differ from themselves on the same threads")


@dataclass
class Member:
    """One model of a stack: its net (a Dense layer, alone in a Sequential or bare) and its SGD settings."""
    net: gluon.Block
    lr: float
    wd: float = 0.0
    lr_scheduler: Optional[mx.lr_scheduler.LRScheduler] = None

    @property
    def dense(self) -> gluon.nn.Dense:
        return dense_of(self.net)

    def rate(self, update: int) -> float:
        return self.lr_scheduler(update) if self.lr_scheduler else self.lr


class SoftmaxSGD:
    """The updater of K models trained together on the same minibatches (K = 1: one model): plain
    SGD, each model at its lr with its weight decay, every step's summed gradient divided by
    batch_size (also on the epoch's last, smaller batch, as the chapter's train_ch3 does), lr per
    update from each model's MXNet lr_scheduler. A model can leave the stack (remove) between epochs."""

    def __init__(self, members: Sequence[Member], batch_size: int) -> None:
        self.members = list(members)
        self.num_outputs = self.members[0].dense.weight.shape[0]
        self.batch_size = batch_size
        self.num_update = 0
        self._constant: dict[tuple[int, tuple[int, ...]], tuple[nd.NDArray, nd.NDArray]] = {}

    @classmethod
    def single(cls, net: gluon.Block, lr: float, batch_size: int, wd: float = 0.0,
               lr_scheduler: Optional[mx.lr_scheduler.LRScheduler] = None) -> SoftmaxSGD:
        return cls([Member(net, lr, wd, lr_scheduler)], batch_size)

    @property
    def learning_rate(self) -> float:
        """The first model's lr at the current update."""
        return self.members[0].rate(self.num_update)

    def learning_rates(self) -> list[float]:
        return [m.rate(self.num_update) for m in self.members]

    def remove(self, member: Member) -> None:
        self.members.remove(member)

    def _rates(self, steps: int) -> tuple[nd.NDArray, nd.NDArray]:
        """Per step and model: lr / batch_size and lr * wd (the step numbers count from 1, as MXNet's
        optimizer's do)."""
        if not any(m.lr_scheduler for m in self.members):
            key = (steps, tuple(id(m) for m in self.members))
            if key not in self._constant:
                self._constant[key] = (nd.array([[m.lr / self.batch_size for m in self.members]] * steps),
                                       nd.array([[m.lr * m.wd for m in self.members]] * steps))
            return self._constant[key]
        lrs = [[m.rate(self.num_update + k + 1) for m in self.members] for k in range(steps)]
        return (nd.array([[lr / self.batch_size for lr in row] for row in lrs]),
                nd.array([[lr * m.wd for lr, m in zip(row, self.members)] for row in lrs]))

    def epoch(self, X: nd.NDArray, y: nd.NDArray, order: nd.NDArray) -> tuple[nd.NDArray, nd.NDArray]:
        """One pass over rows `order` of (X, y) in minibatches; returns per model the summed loss and
        the number of correct predictions, each measured on a batch before its step (as NDArrays: no sync)."""
        n, bs, models = order.shape[0], self.batch_size, len(self.members)
        chunk = bs * STEPS_PER_CALL
        full_calls = n // chunk
        rest = n - full_calls * chunk
        rest_sizes = (bs,) * (rest // bs) + ((rest % bs,) if rest % bs else ())
        denses = [m.dense for m in self.members]
        weight = nd.concat(*(d.weight.data() for d in denses), dim=0) if models > 1 else denses[0].weight.data()
        bias = nd.concat(*(d.bias.data() for d in denses), dim=0) if models > 1 else denses[0].bias.data()
        loss, correct = nd.zeros((models,)), nd.zeros((models,))
        calls = [((bs,) * STEPS_PER_CALL, order[c * chunk:(c + 1) * chunk]) for c in range(full_calls)]
        if rest_sizes:
            calls.append((rest_sizes, order[full_calls * chunk:]))
        decay = any(m.wd for m in self.members)
        threads, chunk_of = step_plan(bs, rest % bs, models, self.num_outputs, weight.shape[1])
        use_fused = fused.available()
        with engine.using(threads):
            for sizes, rows in calls:
                chunks = tuple(chunk_of[size] for size in sizes)
                graph, inputs = _steps_graph(sizes, chunks, models, self.num_outputs, decay, use_fused)
                lrs, decays = self._rates(len(sizes))
                feed = {"X": X, "y": y, "order": rows, "lrs": lrs, "decays": decays, "weight": weight, "bias": bias}
                weight, bias, batch_loss, batch_correct = graph(*(feed[name] for name in inputs))
                loss += batch_loss
                correct += batch_correct
                self.num_update += len(sizes)
        k = self.num_outputs
        for i, dense in enumerate(denses):
            dense.weight.set_data(weight[i * k:(i + 1) * k] if models > 1 else weight)
            dense.bias.set_data(bias[i * k:(i + 1) * k] if models > 1 else bias)
        return loss, correct
