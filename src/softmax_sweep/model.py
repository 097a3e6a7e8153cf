"""The chapter's softmax regression model in Gluon, and its evaluation (one model or a stack)."""
from __future__ import annotations

import functools
from collections.abc import Iterable, Sequence

import mxnet as mx
import numpy as np
from mxnet import gluon, init, nd, sym
from mxnet.gluon import loss as gloss
from mxnet.gluon import nn


def build_net(num_outputs: int = 10, num_inputs: int = 0) -> nn.HybridSequential:
    """Dense(num_outputs) on flattened inputs, weights Normal(0, 0.01); outputs are logits.
    num_inputs 0: Gluon infers it at the first forward pass (the updater needs it known)."""
    net = nn.HybridSequential()
    net.add(nn.Dense(num_outputs, in_units=num_inputs))
    net.initialize(init.Normal(sigma=0.01))
    return net


class LossAndCorrect(gluon.HybridBlock):
    """The chapter's form under autograd: a minibatch's summed loss and its count of correct
    predictions from one hybridized graph (the reference tests/test_training.py and
    benchmarks/epoch_speed.py hold the fused SGD graph against)."""

    def __init__(self, net: gluon.HybridBlock, loss: gluon.loss.Loss, **kwargs) -> None:
        super().__init__(**kwargs)
        self.net = net
        self.loss = loss

    def hybrid_forward(self, F, X, y):
        y_hat = self.net(X)
        return F.sum(self.loss(y_hat, y)), F.sum(F.argmax(y_hat, axis=1) == y)


def build_step(net: gluon.HybridBlock) -> LossAndCorrect:
    # The loss takes logits: SoftmaxCrossEntropyLoss applies log-softmax itself.
    step = LossAndCorrect(net, gloss.SoftmaxCrossEntropyLoss())
    step.hybridize(static_alloc=True)
    return step


def dense_of(net: gluon.Block) -> nn.Dense:
    return net[0] if isinstance(net, (nn.Sequential, nn.HybridSequential)) else net


@functools.lru_cache(maxsize=32)
def _loss_and_correct(models: int, num_outputs: int) -> tuple[mx.nd.CachedOp, list[str]]:
    """Inputs X, y, weight (models * num_outputs, inputs), bias; outputs per model the summed
    softmax cross-entropy of its logits and its number of correct predictions. One cached op per
    batch: the loop never waits for a batch to finish."""
    X, y, weight, bias = (sym.var(n) for n in ("X", "y", "weight", "bias"))
    logits = sym.reshape(sym.FullyConnected(X, weight, bias, num_hidden=models * num_outputs),
                         shape=(0, models, num_outputs))
    labels = sym.broadcast_axis(sym.expand_dims(y, axis=1), axis=1, size=models)
    loss = -sym.sum(sym.pick(sym.log_softmax(logits, axis=-1), labels, axis=-1), axis=0)
    correct = sym.sum(sym.argmax(logits, axis=-1) == labels, axis=0)
    out = sym.Group([loss, correct])
    return mx.nd.CachedOp(out, flags=[("static_alloc", "true")]), out.list_inputs()


def evaluate(nets: Sequence[gluon.Block], data_iter: Iterable) -> tuple[np.ndarray, np.ndarray]:
    """Per net: (mean loss, accuracy) on data_iter, the nets evaluated together."""
    denses = [dense_of(net) for net in nets]
    weight = nd.concat(*(d.weight.data() for d in denses), dim=0) if len(denses) > 1 else denses[0].weight.data()
    bias = nd.concat(*(d.bias.data() for d in denses), dim=0) if len(denses) > 1 else denses[0].bias.data()
    graph, inputs = _loss_and_correct(len(denses), denses[0].weight.shape[0])
    loss_sum, correct, n = nd.zeros(len(denses)), nd.zeros(len(denses)), 0
    for X, y in data_iter:
        feed = {"X": X, "y": y, "weight": weight, "bias": bias}
        batch_loss, batch_correct = graph(*(feed[name] for name in inputs))
        loss_sum += batch_loss
        correct += batch_correct
        n += X.shape[0]
    return loss_sum.asnumpy() / n, correct.asnumpy() / n
