"""The chapter's softmax regression model in Gluon, and its evaluation (one model or a stack)."""
from __future__ import annotations

import functools
from collections.abc import Iterable, Sequence

import mxnet as mx
import numpy as np
from mxnet import gluon, init, nd, sym
from mxnet.gluon import loss as gloss
from mxnet.gluon import nn

from softmax_sweep import fused
from softmax_sweep.engine import budget, threads, using
from softmax_sweep.fused import loss_and_correct, loss_and_correct_by_part
from softmax_sweep.graphs import Graphs


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


def stacked_params(denses: Sequence[nn.Dense]) -> tuple[nd.NDArray, nd.NDArray]:
    """The Dense layers' weights one under another, and their biases (one layer: its own arrays)."""
    if len(denses) == 1:
        return denses[0].weight.data(), denses[0].bias.data()
    return nd.concat(*(d.weight.data() for d in denses), dim=0), nd.concat(*(d.bias.data() for d in denses), dim=0)


MAX_CHUNK = 32  # models in one product: wider is no faster, and exact_chunks' check grows with it


def exact_chunks(rows: int, models: int, num_outputs: int, num_inputs: int, weight_grad: bool = True,
                 together: int = 0, alone: int = 0) -> tuple[int, ...]:
    """How many consecutive stacked models each matrix product takes (a partition of `models`), on
    `together` threads, so that each model's part is what the same product of that model alone
    gives on `alone` threads, float for float, for `rows` examples (0: the threads this thread
    uses now); () when not even one model's product on `together` threads is its product on `alone`.

    oneDNN picks its kernel by shape and thread count: the forward product of some stack sizes sums
    in another order than one model's (on an AVX-512 Xeon 16 or more models on 16-199 rows; on an
    AMD EPYC 4, 5 or 7 models, exact only where 10 x models leaves 0 or 10-14 over a multiple of
    16), a rounding apart that SGD at a large lr grows into a different model. Found per shape on
    random numbers (the kernel depends on shapes, not on values)."""
    return _exact_chunks(rows, models, num_outputs, num_inputs, weight_grad, together or threads(),
                         alone or threads())


@functools.lru_cache(maxsize=256)
def _exact_chunks(rows: int, models: int, num_outputs: int, num_inputs: int, weight_grad: bool, together: int,
                  alone: int) -> tuple[int, ...]:
    """exact_chunks for thread counts known. A training step's few rows are cheap to check: the
    fewest products are sought (7 models on an EPYC: 6 + 1, not seven of one, 1.6x faster a pass
    at batch 32). An evaluation's 10,000 rows cost about 16 ms a model to check: there the stack
    is cut in equal chunks, halving from MAX_CHUNK, and a last partial one
    (on an AMD EPYC and on an AVX-512 Xeon, 12 or more models on 16-128 rows are exact together on
    two threads, not on one; one model's products came out the same on one thread and on two)."""
    shape = (rows, num_outputs, num_inputs, weight_grad, together, alone)
    if weight_grad:
        return _fewest_products(models, shape) or ()
    if models == 1 and together == alone:
        return (1,)
    chunk = min(models, MAX_CHUNK)
    while not (_matches(chunk, *shape) and (models % chunk == 0 or _matches(models % chunk, *shape))):
        if chunk == 1:
            return ()
        chunk = (chunk + 1) // 2
    return (chunk,) * (models // chunk) + ((models % chunk,) if models % chunk else ())


def _fewest_products(models: int, shape: tuple) -> tuple[int, ...] | None:
    """A partition of `models` into the fewest exact chunks, of them the most even; None if none."""
    together, alone = shape[-2:]

    def exact(size: int) -> bool:
        return size == 1 and together == alone or _matches(size, *shape)

    if models <= MAX_CHUNK and exact(models):
        return (models,)
    best: dict[int, tuple[int, ...] | None] = {0: ()}
    for count in range(1, models + 1):
        options = [(size, *best[count - size]) for size in range(min(count, MAX_CHUNK), 0, -1)
                   if best[count - size] is not None and exact(size)]
        best[count] = min(options, key=lambda chunks: (len(chunks), max(chunks)), default=None)
    return best[models]


@functools.lru_cache(maxsize=1024)
def _matches(count: int, rows: int, num_outputs: int, num_inputs: int, weight_grad: bool, together: int,
             alone: int) -> bool:
    """Whether `count` stacked models' products on `together` threads are each model's own on
    `alone`, on random numbers (kept per chunk size: a stack that loses a model asks again only
    for its last chunk)."""
    rng = np.random.RandomState(0)
    X = nd.array(np.resize(rng.rand(min(rows, 512), num_inputs).astype(np.float32), (rows, num_inputs)))
    W = nd.array(rng.normal(0, 0.05, (count * num_outputs, num_inputs)).astype(np.float32))
    GT = nd.array(rng.normal(0, 0.01, (count * num_outputs, rows)).astype(np.float32)) if weight_grad else None
    XT = nd.transpose(X) if weight_grad else None

    def products(first: int, size: int, thread_count: int) -> list[np.ndarray]:
        part = slice(first * num_outputs, (first + size) * num_outputs)
        with using(thread_count):
            found = [nd.FullyConnected(X, W[part], no_bias=True, num_hidden=size * num_outputs).asnumpy()]
            if GT is not None:
                found.append(nd.FullyConnected(XT, GT[part], no_bias=True, num_hidden=size * num_outputs).asnumpy())
        return found

    together_found = products(0, count, together)
    return all(np.array_equal(t[:, i * num_outputs:(i + 1) * num_outputs], m)
               for i in range(count) for t, m in zip(together_found, products(i, 1, alone)))


def _chunks(chunks: tuple[int, ...], num_outputs: int) -> list[tuple[int, int]]:
    """(first row, last row + 1) of each chunk of models in a stacked weight."""
    ends = np.cumsum((0, *chunks)) * num_outputs
    return [(int(a), int(b)) for a, b in zip(ends[:-1], ends[1:])]


def _chunk_logits(X, weight, bias, num_outputs: int, chunks: tuple[int, ...]) -> list:
    """Symbols: X (rows, inputs) times the weights of each chunk of stacked models, plus their
    biases: (rows, chunk models * num_outputs) each."""
    return [sym.FullyConnected(X, sym.slice_axis(weight, axis=0, begin=a, end=b),
                               sym.slice_axis(bias, axis=0, begin=a, end=b), num_hidden=b - a)
            if len(chunks) > 1 else sym.FullyConnected(X, weight, bias, num_hidden=b - a)
            for a, b in _chunks(chunks, num_outputs)]


def stacked_logits(X, weight, bias, num_outputs: int, chunks: tuple[int, ...]):
    """Symbol: X (rows, inputs) times each stacked model's weight, plus its bias: (rows, models * num_outputs)."""
    parts = _chunk_logits(X, weight, bias, num_outputs, chunks)
    return parts[0] if len(parts) == 1 else sym.concat(*parts, dim=1)


def weight_grad_columns(XT, grad, num_outputs: int, chunks: tuple[int, ...]):
    """Symbol: the weight gradient transposed, X^T grad (inputs, models * num_outputs), from
    XT = X^T, each model's columns as its own product gives them. In that layout oneDNN's product of
    a stack is column for column the product of each model (grad^T X, the gradient itself, is
    not, on AVX-512)."""
    gradT = sym.transpose(grad)
    parts = [sym.FullyConnected(XT, sym.slice_axis(gradT, axis=0, begin=a, end=b) if len(chunks) > 1 else gradT,
                                no_bias=True, num_hidden=b - a)
             for a, b in _chunks(chunks, num_outputs)]
    return parts[0] if len(parts) == 1 else sym.concat(*parts, dim=1)


def _loss_and_correct(num_outputs: int, chunks: tuple[int, ...], use_fused: bool, parts: int
                      ) -> tuple[mx.nd.CachedOp, list[str]]:
    """Inputs X, y, weight (models * num_outputs, inputs), bias (and with parts, part: rows by
    models); outputs per model the summed softmax cross-entropy of its logits and its number of
    correct predictions (with parts: per part 1..parts and model). One cached op per batch: the
    loop never waits for a batch to finish. Each chunk's logits go to the loss on their own: joined,
    120 models' logits of the 10,000 test images were a 48 MB copy (that evaluation on one core:
    173-180 ms joined, 140 ms apart)."""
    X, y, part, weight, bias = (sym.var(n) for n in ("X", "y", "part", "weight", "bias"))
    found = []
    for (a, b), logits in zip(_chunks(chunks, num_outputs), _chunk_logits(X, weight, bias, num_outputs, chunks)):
        first, size = a // num_outputs, (b - a) // num_outputs
        found.append(loss_and_correct_by_part(logits, y, sym.slice_axis(part, axis=1, begin=first, end=first + size),
                                              size, num_outputs, parts, use_fused) if parts else
                     loss_and_correct(logits, y, size, num_outputs, use_fused))
    out = sym.Group([each[0] if len(each) == 1 else sym.concat(*each, dim=-1) for each in zip(*found)])
    # no static_alloc: a graph per stack size would keep its own logits (48 MB for 120 models), a
    # few large operators gain nothing from it
    return mx.nd.CachedOp(out), out.list_inputs()


_EVALUATIONS = Graphs(_loss_and_correct, most=32)


def evaluate(nets: Sequence[gluon.Block], data_iter: Iterable) -> tuple[np.ndarray, np.ndarray]:
    """Per net: (mean loss, accuracy) on data_iter, the nets evaluated together."""
    loss_sum, correct, n = _evaluate(nets, ((X, y, None) for X, y in data_iter), 0)
    return loss_sum / n, correct / n


def evaluate_parts(nets: Sequence[gluon.Block], batches: Iterable, parts_of: Sequence[np.ndarray],
                   parts: int) -> tuple[np.ndarray, np.ndarray]:
    """Per part p = 1..parts and net (arrays (parts, nets)): (mean loss, accuracy) over the rows of
    `batches` (in order) where the net's parts_of vector holds p. Nets whose rows differ (another
    seed's split) are evaluated together on the same batches: the rows are read once, not gathered."""
    columns = np.stack(parts_of, axis=1).astype(np.float32)
    counts = np.stack([(columns == p).sum(axis=0) for p in range(1, parts + 1)]).astype(np.float32)

    def with_parts():
        start = 0
        for X, y in batches:
            yield X, y, nd.array(columns[start:start + X.shape[0]])
            start += X.shape[0]

    loss_sum, correct, _ = _evaluate(nets, with_parts(), parts)
    return loss_sum / counts, correct / counts


def _evaluate(nets: Sequence[gluon.Block], batches: Iterable, parts: int) -> tuple[np.ndarray, np.ndarray, int]:
    """Summed loss and correct predictions per net (and part), and the rows seen."""
    denses = [dense_of(net) for net in nets]
    weight, bias = stacked_params(denses)
    num_outputs, num_inputs = denses[0].weight.shape
    shape = (parts, len(denses)) if parts else (len(denses),)
    loss_sum, correct, n = nd.zeros(shape), nd.zeros(shape), 0
    use_fused = fused.available()
    for X, y, part in batches:
        count, chunks = _evaluation_plan(X.shape[0], len(denses), num_outputs, num_inputs)
        feed = {"X": X, "y": y, "part": part, "weight": weight, "bias": bias}
        with using(count), _EVALUATIONS.taken(num_outputs, chunks, use_fused, parts) as (graph, inputs):
            batch_loss, batch_correct = graph(*(feed[name] for name in inputs))
            loss_sum += batch_loss
            correct += batch_correct
        n += X.shape[0]
    return loss_sum.asnumpy(), correct.asnumpy(), n


def _evaluation_plan(rows: int, models: int, num_outputs: int, num_inputs: int) -> tuple[int, tuple[int, ...]]:
    """Threads and exact chunks of an evaluation's products: every core this thread has (large
    products, unlike a training step's: about twice as fast on two cores), unless a model's
    product there differs from its product alone on one core. One core is the reference
    because a stack's products match it where they match no count of more (on an AMD EPYC, 120
    models on 10,000 rows: in chunks of 16 on one or two threads against one, of 1 on two against
    two), and groups side by side each evaluate on one (every core when a thread may use it)."""
    for count in dict.fromkeys((budget(), 1)):
        if chunks := exact_chunks(rows, models, num_outputs, num_inputs, weight_grad=False, together=count,
                                  alone=1):
            return count, chunks
    raise AssertionError("a model's product differs from itself on the same threads")
