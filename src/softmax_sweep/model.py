"""The chapter's softmax regression model in Gluon."""
from __future__ import annotations

from mxnet import gluon, init
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
    """One hybridized graph giving a minibatch's summed loss and its count of correct predictions.

    Summing inside the graph keeps the per-batch work to one cached op, so the training loop
    never has to wait for a batch to finish (no per-batch sync).
    """

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
