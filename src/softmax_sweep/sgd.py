"""Minibatch SGD for softmax regression nets, one model or K models stacked, each model with its own
learning rate, weight decay and schedule.

It computes what `autograd.record()` + `loss.backward()` + `gluon.Trainer(..., "sgd").step(batch_size)`
compute for Dense(k) under SoftmaxCrossEntropyLoss on logits (tests/test_training.py checks it
against exactly that), with the gradient written out: for softmax cross-entropy on logits it is
softmax(logits) - one_hot(y) per example. The work of a step is ~250k multiply-adds a model at
batch 32; the time went to what Python, autograd, the Trainer and MXNet's operators add to every step.

Where the project's C++ operators can be built (softmax_sweep.fused) a whole pass is one call of
sgd_epoch (fused_epoch.cc): every step of every model, each model's numbers from the same code
whether it trains alone or stacked, on any thread count. The models of a lane share minibatches;
lanes are models of other seeds, each with its own rows (its split and shuffle).

Elsewhere (no compiler, or SOFTMAX_SWEEP_FUSED=0) a graph of MXNet's operators takes eight steps
per call. K models that take the same minibatches are one Dense(K * k) there: the two matrix
products of a step are taken in a layout, and in chunks of models, in which oneDNN computes every
model's part as it computes that model alone (model.exact_chunks), so each model still ends as it
ends alone, float for float (tests/test_stacked.py, up to lr 1). Lanes are shared out among the
cores there, a graph per core run from a thread of its own (MXNet's NaiveEngine runs an operator in
the thread that calls it).
"""
from __future__ import annotations

import contextlib
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Optional

import mxnet as mx
from mxnet import gluon, nd, sym

from softmax_sweep import engine, fused
from softmax_sweep.fused import loss_correct_and_grad
from softmax_sweep.graphs import Graphs
from softmax_sweep.model import dense_of, exact_chunks, stacked_logits, stacked_params, weight_grad_columns

STEPS_PER_CALL = 8  # 32 steps per graph measured no faster at batch 16


def _steps_graph(sizes: tuple[int, ...], chunks: tuple[tuple[int, ...], ...], lanes: tuple[int, ...],
                 num_outputs: int, decay: bool) -> tuple[mx.nd.CachedOp, list[str]]:
    """One graph for SGD steps of stacked models on batches of `sizes` rows taken in turn from
    each lane's row of `order`. A lane is `lanes[l]` models that share minibatches; lanes differ in
    their rows (each its own shuffle). Inputs X, y, order (lanes, rows), lrs and decays (per step
    and model: lr / batch_size, lr * wd), weight (models * num_outputs, inputs), bias; outputs the
    new weight and bias, and per model the summed loss and the number of correct predictions.
    chunks: per step, each lane's exact_chunks.

    MXNet's sgd_update: weight <- (1 - lr * wd) * weight - lr * rescale_grad * grad."""
    X, y, order, lrs, decays, weight, bias = (sym.var(n) for n in
                                              ("X", "y", "order", "lrs", "decays", "weight", "bias"))
    firsts = [sum(lanes[:lane]) for lane in range(len(lanes) + 1)]
    weights = [_part(weight, firsts[lane] * num_outputs, firsts[lane + 1] * num_outputs, len(lanes))
               for lane in range(len(lanes))]
    biases = [_part(bias, firsts[lane] * num_outputs, firsts[lane + 1] * num_outputs, len(lanes))
              for lane in range(len(lanes))]
    losses, corrects, start = [], [], 0
    for k, size in enumerate(sizes):
        step_lrs = sym.reshape(sym.slice_axis(lrs, axis=0, begin=k, end=k + 1), shape=(-1,))
        step_keeps = 1 - sym.reshape(sym.slice_axis(decays, axis=0, begin=k, end=k + 1), shape=(-1,))
        step_losses, step_corrects = [], []
        for lane, models in enumerate(lanes):
            rows = sym.reshape(sym.slice(order, begin=(lane, start), end=(lane + 1, start + size)), shape=(-1,))
            Xb, yb = sym.take(X, rows), sym.take(y, rows)
            lr = _part(step_lrs, firsts[lane], firsts[lane + 1], len(lanes))
            logits = stacked_logits(Xb, weights[lane], biases[lane], num_outputs, chunks[k][lane])
            loss, correct, grad, bias_grad = loss_correct_and_grad(logits, yb, lr, models, num_outputs)
            step_losses.append(loss)
            step_corrects.append(correct)
            w, b = weights[lane], biases[lane]
            if decay:  # each model's factor on its num_outputs rows
                keep = sym.repeat(_part(step_keeps, firsts[lane], firsts[lane + 1], len(lanes)), repeats=num_outputs)
                w, b = sym.broadcast_mul(w, sym.expand_dims(keep, axis=1)), sym.broadcast_mul(b, keep)
            weight_grad = weight_grad_columns(sym.transpose(Xb), grad, num_outputs, chunks[k][lane])
            weights[lane] = w - sym.transpose(weight_grad)
            biases[lane] = b - bias_grad
        start += size
        losses.append(_joined(step_losses))
        corrects.append(_joined(step_corrects))
    out = sym.Group([_joined(weights), _joined(biases), sym.add_n(*losses), sym.add_n(*corrects)])
    return mx.nd.CachedOp(out, flags=[("static_alloc", "true"), ("static_shape", "true")]), out.list_inputs()


_STEPS = Graphs(_steps_graph)


def _part(whole, begin: int, end: int, lanes: int):
    """Rows begin:end of a symbol, or the whole of it where it is one lane's."""
    return whole if lanes == 1 else sym.slice_axis(whole, axis=0, begin=begin, end=end)


def _joined(parts: list):
    return parts[0] if len(parts) == 1 else sym.concat(*parts, dim=0)


def step_plan(batch_size: int, last_size: int, lanes: tuple[int, ...], num_outputs: int, num_inputs: int,
              most: int = 0) -> tuple[int, dict[tuple[int, int], tuple[int, ...]]]:
    """The threads of an epoch's steps (as many as a lane's products pay for, up to `most` if given,
    unless a model's products there differ from its products alone, on the threads it takes alone
    on every core) and each (step size, lane's models)'s exact chunks."""
    alone = engine.training_threads(batch_size * num_outputs * num_inputs)
    together = engine.training_threads(batch_size * max(lanes) * num_outputs * num_inputs)
    for threads in dict.fromkeys((min(together, most or together), alone)):
        chunk_of = {(size, models): exact_chunks(size, models, num_outputs, num_inputs, together=threads, alone=alone)
                    for size in {batch_size, last_size} - {0} for models in set(lanes)}
        if all(chunk_of.values()):
            return threads, chunk_of
    raise AssertionError("a model's products differ from themselves on the same threads")


def _shares(models: list[int], parts: int) -> list[slice]:
    """Lanes of `models` models each in at most `parts` runs of consecutive lanes, each run about as
    many models."""
    parts = max(1, min(parts, len(models)))
    total, cuts, seen = sum(models), [], 0
    for i, count in enumerate(models[:-1]):
        seen += count
        left = len(models) - i - 1  # lanes after this one
        if len(cuts) < parts - 1 and (seen * parts >= total * (len(cuts) + 1) or left == parts - len(cuts) - 1):
            cuts.append(i + 1)
    return [slice(a, b) for a, b in zip([0, *cuts], [*cuts, len(models)])]


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
    """The updater of K models trained together (K = 1: one model): plain SGD, each model at its
    lr with its weight decay, every step's summed gradient divided by batch_size (also on the
    epoch's last, smaller batch, as the chapter's train_ch3 does), lr per update from each model's
    MXNet lr_scheduler. The models are in lanes: the models of a lane take the same minibatches,
    each lane its own rows (another seed's shuffle; as many rows per epoch as the others). A model
    can leave the stack (remove) between epochs; a lane leaves with its last model."""

    def __init__(self, members: Sequence[Member], batch_size: int) -> None:
        self.lanes = [list(members)]
        self.num_outputs = self.lanes[0][0].dense.weight.shape[0]
        self.batch_size = batch_size
        self.num_update = 0
        self._constant: dict[tuple[int, tuple[int, ...]], tuple[nd.NDArray, nd.NDArray]] = {}

    @classmethod
    def single(cls, net: gluon.Block, lr: float, batch_size: int, wd: float = 0.0,
               lr_scheduler: Optional[mx.lr_scheduler.LRScheduler] = None) -> SoftmaxSGD:
        return cls([Member(net, lr, wd, lr_scheduler)], batch_size)

    @classmethod
    def in_lanes(cls, lanes: Sequence[Sequence[Member]], batch_size: int) -> SoftmaxSGD:
        updater = cls(lanes[0], batch_size)
        updater.lanes = [list(lane) for lane in lanes]
        return updater

    @property
    def members(self) -> list[Member]:
        return [m for lane in self.lanes for m in lane]

    @property
    def learning_rate(self) -> float:
        """The first model's lr at the current update."""
        return self.members[0].rate(self.num_update)

    def learning_rates(self) -> list[float]:
        return [m.rate(self.num_update) for m in self.members]

    def remove(self, member: Member) -> None:
        for lane in self.lanes:
            if member in lane:
                lane.remove(member)
        self.lanes = [lane for lane in self.lanes if lane]
        # each graph keeps its memory (static_alloc; 100 MB for 10 lanes of 12 models at batch 32),
        # and the stack it was built for is gone: rebuilding is a few ms
        _STEPS.clear()

    def _rates(self, members: list[Member], update: int, steps: int) -> tuple[nd.NDArray, nd.NDArray]:
        """Per step and model: lr / batch_size and lr * wd, for the steps after `update` (the step
        numbers count from 1, as MXNet's optimizer's do)."""
        if not any(m.lr_scheduler for m in members):
            key = (steps, tuple(id(m) for m in members))
            if key not in self._constant:
                self._constant[key] = (nd.array([[m.lr / self.batch_size for m in members]] * steps),
                                       nd.array([[m.lr * m.wd for m in members]] * steps))
            return self._constant[key]
        lrs = [[m.rate(update + k + 1) for m in members] for k in range(steps)]
        return (nd.array([[lr / self.batch_size for lr in row] for row in lrs]),
                nd.array([[lr * m.wd for lr, m in zip(row, members)] for row in lrs]))

    def epoch(self, X: nd.NDArray, y: nd.NDArray, *orders: nd.NDArray) -> tuple[nd.NDArray, nd.NDArray]:
        """One pass over rows `orders[l]` of (X, y) for lane l, in minibatches; returns per model the
        summed loss and the number of correct predictions, each measured on a batch before its step
        (as NDArrays: no sync)."""
        assert len(orders) == len(self.lanes) and len({o.shape[0] for o in orders}) == 1, "an order per lane, alike"
        cores = engine.budget()
        if fused.available():  # here: its first call loads the operators, once
            loss, correct = self._fused_pass(X, y, orders, cores)
        else:
            loss, correct = self._graph_pass(X, y, orders, cores)
        self.num_update += -(-orders[0].shape[0] // self.batch_size)
        return loss, correct

    def _graph_pass(self, X: nd.NDArray, y: nd.NDArray, orders: Sequence[nd.NDArray], cores: int
                    ) -> tuple[nd.NDArray, nd.NDArray]:
        """epoch's pass in graphs of MXNet's operators, lanes shared out among the cores, a thread each."""
        shares = _shares([len(lane) for lane in self.lanes], cores)
        if len(shares) == 1:
            loss, correct = self._pass(self.lanes, X, y, orders, cores)
        else:
            most = max(1, cores // len(shares))
            # threads that end with the pass: a thread that has run OpenMP operators counts as busy to
            # libgomp while it lives, and with more such threads than cores every later parallel
            # operator sleeps at its barriers (a pass at batch 256 on two cores: 3x slower)
            with ThreadPoolExecutor(len(shares), thread_name_prefix="lanes") as pool:
                found = list(pool.map(
                    lambda share: self._pass(self.lanes[share], X, y, orders[share], most), shares))
            loss, correct = (nd.concat(*part, dim=0) for part in zip(*found))
        return loss, correct

    def _fused_pass(self, X: nd.NDArray, y: nd.NDArray, orders: Sequence[nd.NDArray], cores: int
                    ) -> tuple[nd.NDArray, nd.NDArray]:
        """epoch's pass in one call of fused_epoch.cc's operator, its models shared out among `cores` threads."""
        members = self.members
        weight, bias = stacked_params([m.dense for m in members])
        order = nd.stack(*orders) if len(orders) > 1 else orders[0].reshape((1, -1))
        lrs, decays = self._rates(members, self.num_update, -(-order.shape[1] // self.batch_size))
        with engine.using(min(cores, len(members))):
            weight, bias, loss, correct = fused.sgd_epoch(X, y, order, lrs, decays, weight, bias,
                                                          tuple(len(lane) for lane in self.lanes), self.batch_size)
        _unstacked(members, weight, bias)
        return loss, correct

    def _pass(self, lanes: list[list[Member]], X: nd.NDArray, y: nd.NDArray, orders: Sequence[nd.NDArray],
              most: int) -> tuple[nd.NDArray, nd.NDArray]:
        """epoch's pass for some of its lanes, in one graph per call, on at most `most` threads."""
        n, bs = orders[0].shape[0], self.batch_size
        members = [m for lane in lanes for m in lane]
        sizes_of_lanes = tuple(len(lane) for lane in lanes)
        chunk = bs * STEPS_PER_CALL
        full_calls = n // chunk
        rest = n - full_calls * chunk
        rest_sizes = (bs,) * (rest // bs) + ((rest % bs,) if rest % bs else ())
        weight, bias = stacked_params([m.dense for m in members])
        loss, correct = nd.zeros((len(members),)), nd.zeros((len(members),))
        order = nd.stack(*orders) if len(orders) > 1 else orders[0].reshape((1, -1))
        calls = [((bs,) * STEPS_PER_CALL, order[:, c * chunk:(c + 1) * chunk]) for c in range(full_calls)]
        if rest_sizes:
            calls.append((rest_sizes, order[:, full_calls * chunk:]))
        decay = any(m.wd for m in members)
        threads, chunk_of = step_plan(bs, rest % bs, sizes_of_lanes, self.num_outputs, weight.shape[1], most)
        update, graphs = self.num_update, {}
        # the graphs stay this thread's until the weights are copied out of their memory
        with engine.using(threads), contextlib.ExitStack() as held:
            for sizes, rows in calls:
                chunks = tuple(tuple(chunk_of[size, models] for models in sizes_of_lanes) for size in sizes)
                key = (sizes, chunks, sizes_of_lanes, self.num_outputs, decay)
                if key not in graphs:
                    graphs[key] = held.enter_context(_STEPS.taken(*key))
                graph, inputs = graphs[key]
                lrs, decays = self._rates(members, update, len(sizes))
                feed = {"X": X, "y": y, "order": rows, "lrs": lrs, "decays": decays, "weight": weight, "bias": bias}
                weight, bias, batch_loss, batch_correct = graph(*(feed[name] for name in inputs))
                loss += batch_loss
                correct += batch_correct
                update += len(sizes)
            _unstacked(members, weight, bias)
        return loss, correct


def _unstacked(members: list[Member], weight: nd.NDArray, bias: nd.NDArray) -> None:
    """Each member's part of stacked weights and biases copied into its own arrays, in one operator
    each (a set_data per model and parameter held Python's lock 3.5 s in exercise 2)."""
    for stacked, own in ((weight, [m.dense.weight.data() for m in members]),
                         (bias, [m.dense.bias.data() for m in members])):
        if len(own) == 1:
            if stacked is not own[0]:  # a pass without a step leaves the model's own arrays
                stacked.copyto(own[0])
        else:
            nd.split(stacked, num_outputs=len(own), axis=0, out=own)
