"""The training loop: epochs of minibatch SGD, evaluation, early stopping, for one model or for
K models stacked in one training pass (softmax_sweep.sgd). No I/O here."""
from __future__ import annotations

import math
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from math import nan
from typing import Optional, Protocol

import numpy as np
from mxnet import gluon, nd

from softmax_sweep.data import DataIter, fixed_batches
from softmax_sweep.errors import TrainingDiverged
from softmax_sweep.model import evaluate, evaluate_parts
from softmax_sweep.sgd import Member, SoftmaxSGD

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


@dataclass
class Model:
    """One model of a fit: its net and SGD settings, how long it trains, who hears of its epochs;
    after the fit its result, and the error that took it out of the stack early (it diverged, a
    callback raised: a pruned trial), if any."""
    member: Member
    num_epochs: int
    patience: Optional[int] = None
    callbacks: Sequence[Callback] = ()
    result: FitResult = field(default_factory=FitResult)
    error: Optional[BaseException] = None
    _best: Optional[float] = None
    _since_best: int = 0

    @property
    def net(self) -> gluon.Block:
        return self.member.net


def _improved(value: float, best: Optional[float], maximize: bool) -> bool:
    return best is None or (value > best if maximize else value < best)


@dataclass
class Lane:
    """Models that take the same minibatches (train_iter's) and are validated on the same rows:
    val_iter's and train_eval_iter's, or where parts is given (a vector over train_iter.X's rows:
    1 a training row, 2 a validation row) those of the whole training array (the lanes' rows are
    then read once, for all lanes, without a copy)."""
    models: list[Model]
    train_iter: DataIter
    val_iter: Optional[Iterable] = None
    train_eval_iter: Optional[Iterable] = None
    parts: Optional[np.ndarray] = None


def fit_stacked(lanes: Sequence[Lane], test_iter: Iterable, *, monitor: str = "val_acc") -> None:
    """Train the models of all lanes together (one pass an epoch), each as it would train alone; a lane's
    models share its minibatches, lanes differ in their rows (their seeds' shuffles and splits) but
    not in how many. A model leaves the stack after its num_epochs, when early stopping ends it,
    when it diverges (model.error: TrainingDiverged) or when one of its callbacks raises
    (model.error); the others go on. An interrupt (KeyboardInterrupt) stops them all. Each model's
    net ends with its best epoch's parameters; its epoch_seconds is its share of the stack's epoch."""
    maximize = monitor.endswith("acc")
    all_models = [m for lane in lanes for m in lane.models]
    updater = SoftmaxSGD.in_lanes([[m.member for m in lane.models] for lane in lanes], lanes[0].train_iter.batch_size)
    active = [replace(lane, models=list(lane.models)) for lane in lanes]
    validated = lanes[0].val_iter is not None or lanes[0].parts is not None
    whole = fixed_batches(lanes[0].train_iter.X, lanes[0].train_iter.y) if lanes[0].parts is not None else None
    epoch = 0
    while active:
        epoch += 1
        start = time.perf_counter()
        orders = [lane.train_iter.epoch_order() for lane in active]
        loss_sums, corrects = updater.epoch(active[0].train_iter.X, active[0].train_iter.y, *orders)
        n = orders[0].shape[0]
        models = [m for lane in active for m in lane.models]
        columns = {"train_loss": loss_sums.asnumpy() / n, "train_acc": corrects.asnumpy() / n}
        columns["test_loss"], columns["test_acc"] = evaluate([m.net for m in models], test_iter)
        if active[0].parts is not None:
            (columns["train_eval_loss"], columns["val_loss"]), (columns["train_eval_acc"], columns["val_acc"]) = \
                evaluate_parts([m.net for m in models], whole, [lane.parts for lane in active for _ in lane.models], 2)
        for split in ("val", "train_eval"):
            if getattr(active[0], f"{split}_iter") is not None:  # each lane on its own rows
                found = [evaluate([m.net for m in lane.models], getattr(lane, f"{split}_iter")) for lane in active]
                columns[f"{split}_loss"], columns[f"{split}_acc"] = (np.concatenate(part) for part in zip(*found))
        share = (time.perf_counter() - start) / len(models)
        rates = updater.learning_rates()
        for i, model in enumerate(models):
            if not _epoch_end(model, epoch, {k: float(v[i]) for k, v in columns.items()}, share, rates[i],
                              validated, monitor, maximize):
                next(lane for lane in active if model in lane.models).models.remove(model)
                updater.remove(model.member)
        active = [lane for lane in active if lane.models]
    for model in all_models:
        if model.result.best_params:
            for name, p in model.net.collect_params().items():
                p.set_data(model.result.best_params[name])


def _epoch_end(model: Model, epoch: int, values: dict[str, float], seconds: float, lr: float,
               validated: bool, monitor: str, maximize: bool) -> bool:
    """Record one model's epoch and tell its callbacks; False when it leaves the stack."""
    metrics = {k: values.get(k, nan) for k in METRICS if validated or not k.startswith("val_")}
    metrics.update({k: values[k] for k in TRAIN_EVAL_METRICS if k in values})
    if "val_acc" in metrics:
        metrics[GAP] = metrics.get("train_eval_acc", metrics["train_acc"]) - metrics["val_acc"]
    metrics["epoch_seconds"] = seconds
    result = model.result
    result.history.append(metrics)
    # a finite training loss can hide a model whose validation loss overflowed already
    bad_loss = next((metrics[k] for k in ("train_loss", "val_loss", "test_loss")
                     if k in metrics and not math.isfinite(metrics[k])), None)
    value = metrics.get(monitor, nan)
    if bad_loss is None and (not validated or _improved(value, model._best, maximize)):
        model._best, model._since_best, result.best_epoch = value, 0, epoch
        result.best_params = {name: p.data().copy() for name, p in model.net.collect_params().items()}
    else:
        model._since_best += 1
    try:
        for callback in model.callbacks:
            callback.on_epoch_end(epoch, metrics)
    except Exception as e:  # noqa: BLE001 - this model's own end (a pruned trial, its store failing)
        model.error = e
        return False
    if bad_loss is not None:
        model.error = TrainingDiverged(epoch, bad_loss, lr)
        return False
    if model.patience is not None and model._since_best >= model.patience:
        result.stopped_early = True
        return False
    return epoch < model.num_epochs
