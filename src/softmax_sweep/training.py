"""The training loop: epochs of minibatch SGD, evaluation, early stopping. No I/O here."""
from __future__ import annotations

import math
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from math import nan
from typing import Optional, Protocol

from mxnet import gluon, nd

from softmax_sweep.data import DataIter
from softmax_sweep.errors import TrainingDiverged
from softmax_sweep.model import LossAndCorrect
from softmax_sweep.sgd import SoftmaxSGD

METRICS = ("train_loss", "train_acc", "val_loss", "val_acc", "test_loss", "test_acc")
# the model at the epoch's end on the training set (train_acc is the running average over the epoch)
TRAIN_EVAL_METRICS = ("train_eval_loss", "train_eval_acc")
# training minus validation accuracy after each epoch (train_eval_acc where measured): one line
# that grows while the model overfits
GAP = "generalization_gap"


class Callback(Protocol):
    def on_epoch_end(self, epoch: int, metrics: dict[str, float]) -> None:
        """Called after every epoch (1-based) with its metrics; may raise to stop training."""


@dataclass
class FitResult:
    history: list[dict[str, float]] = field(default_factory=list)
    best_epoch: int = 0
    stopped_early: bool = False
    best_params: dict[str, nd.NDArray] = field(default_factory=dict)

    @property
    def best(self) -> dict[str, float]:
        return self.history[self.best_epoch - 1]



def train_epoch(updater: SoftmaxSGD, train_iter: DataIter) -> tuple[float, float]:
    """One pass over train_iter; returns (mean loss, accuracy) over the epoch's minibatches."""
    order = train_iter.epoch_order()
    loss_sum, correct = updater.epoch(train_iter.X, train_iter.y, order)
    n = order.shape[0]
    return loss_sum.asscalar() / n, correct.asscalar() / n


def evaluate(step: LossAndCorrect, data_iter: Iterable) -> tuple[float, float]:
    """(mean loss, accuracy) of the model on data_iter."""
    loss_sum, correct, n = nd.zeros(1), nd.zeros(1), 0
    for X, y in data_iter:
        batch_loss, batch_correct = step(X, y)
        loss_sum += batch_loss
        correct += batch_correct
        n += X.shape[0]
    return loss_sum.asscalar() / n, correct.asscalar() / n


def _improved(value: float, best: Optional[float], maximize: bool) -> bool:
    return best is None or (value > best if maximize else value < best)


def fit(net: gluon.Block, step: LossAndCorrect, train_iter: DataIter, val_iter: Optional[Iterable],
        test_iter: Iterable, updater: SoftmaxSGD, num_epochs: int, *,
        patience: Optional[int] = None, monitor: str = "val_acc",
        callbacks: Sequence[Callback] = (), train_eval_iter: Optional[Iterable] = None) -> FitResult:
    """Train for num_epochs (fewer with early stopping on `monitor`, validation only).

    The best epoch's parameters are kept in FitResult.best_params and loaded back into net.
    Without val_iter (no validation set, the chapter's setup) the last epoch counts as the best.
    With train_eval_iter, the model at each epoch's end is also measured on it (train_eval_*).
    Raises TrainingDiverged after the epoch whose training loss is not finite.
    """
    maximize = monitor.endswith("acc")
    result, best_value, since_best = FitResult(), None, 0
    for epoch in range(1, num_epochs + 1):
        start = time.perf_counter()
        train_loss, train_acc = train_epoch(updater, train_iter)
        test_loss, test_acc = evaluate(step, test_iter)
        metrics = dict(zip(METRICS, (train_loss, train_acc, nan, nan, test_loss, test_acc)))
        if val_iter is None:
            del metrics["val_loss"], metrics["val_acc"]
        else:
            metrics["val_loss"], metrics["val_acc"] = evaluate(step, val_iter)
        if train_eval_iter is not None:
            metrics["train_eval_loss"], metrics["train_eval_acc"] = evaluate(step, train_eval_iter)
        if "val_acc" in metrics:
            metrics[GAP] = metrics.get("train_eval_acc", train_acc) - metrics["val_acc"]
        metrics["epoch_seconds"] = time.perf_counter() - start
        result.history.append(metrics)
        # a finite training loss can hide a model whose validation loss overflowed already
        bad_loss = next((metrics[k] for k in ("train_loss", "val_loss", "test_loss")
                         if k in metrics and not math.isfinite(metrics[k])), None)
        diverged = bad_loss is not None
        value = metrics.get(monitor, nan)
        if not diverged and (val_iter is None or _improved(value, best_value, maximize)):
            best_value, since_best, result.best_epoch = value, 0, epoch
            result.best_params = {name: p.data().copy() for name, p in net.collect_params().items()}
        else:
            since_best += 1
        for callback in callbacks:
            callback.on_epoch_end(epoch, metrics)
        if diverged:
            raise TrainingDiverged(epoch, bad_loss, updater.learning_rate)
        if patience is not None and since_best >= patience:
            result.stopped_early = True
            break
    for name, p in net.collect_params().items():
        p.set_data(result.best_params[name])
    return result
