"""Models trained together: train_stacked trains models of the same data set, training set size
and batch size in one training pass (those of one seed share each minibatch); under the stacked launcher
(its public Stack in hydra_plugins.softmax_sweep_stacked.stack) train_softmax hands its model
there, and the jobs of one launch train together, each with its own model, MLflow run, curves
and return value."""
from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any, Optional

import mxnet as mx
import numpy as np

from hydra_plugins.softmax_sweep_stacked.stack import groups_training
from softmax_sweep import engine
from softmax_sweep.data import DataIter, Dataset, fixed_batches, split_indices, train_count
from softmax_sweep.model import build_net
from softmax_sweep.sgd import Member
from softmax_sweep.training import Callback, Lane, Model, fit_stacked

log = logging.getLogger("softmax_sweep")
_SEEDING = threading.Lock()  # MXNet's random state is the process's: groups training side by side take turns


@dataclass
class ModelSettings:
    """What may differ between the models of one stack (models of different seeds take their own
    minibatches: their seed's split and shuffle)."""
    lr: float
    num_epochs: int
    weight_decay: float = 0.0
    lr_schedule: str = "constant"
    patience: Optional[int] = None
    callbacks: Sequence[Callback] = ()
    seed: int = 0


def train_stacked(dataset: Dataset, models: Sequence[ModelSettings], *, batch_size: int, val_size: int,
                  train_size: Optional[int] = None, monitor: str = "val_acc", eval_train: bool = False) -> list[Model]:
    """Train models that share the data set, training set size and batch size in one training pass:
    those of one seed (its split and shuffle) share each minibatch; each model ends as train_softmax
    would end it alone (its model.error: why it left early)."""
    stack: dict[int, Model] = {}
    lanes = []
    for seed in dict.fromkeys(m.seed for m in models):
        train_idx, val_idx = split_indices(dataset.num_train, val_size, seed, train_size)
        lane = Lane([], DataIter(dataset.X_train, dataset.y_train, train_idx, batch_size, shuffle=True,
                                 rng=np.random.RandomState(seed)))
        if eval_train and len(val_idx) and len(train_idx) + len(val_idx) == dataset.num_train:
            lane.parts = np.zeros(dataset.num_train, np.float32)  # every row is evaluated: read them in place
            lane.parts[train_idx], lane.parts[val_idx] = 1, 2
        else:
            lane.val_iter = dataset.val_batches(val_idx) if len(val_idx) else None
            lane.train_eval_iter = fixed_batches(dataset.X_train, dataset.y_train, train_idx) if eval_train else None
        for i, m in enumerate(models):
            if m.seed != seed:
                continue
            with _SEEDING:  # every model starts from the weights it would start from alone
                mx.random.seed(seed)
                net = build_net(dataset.num_classes, dataset.X_train.shape[1])
            # updates count from 1 and the schedule reaches 0 at its max_update: one more than the run has,
            # so the last update still trains (a run of a single update would otherwise train at lr 0)
            scheduler = mx.lr_scheduler.CosineScheduler(m.num_epochs * len(lane.train_iter) + 1, base_lr=m.lr) \
                if m.lr_schedule == "cosine" else None
            stack[i] = Model(Member(net, m.lr, m.weight_decay, scheduler), m.num_epochs, m.patience, m.callbacks)
            lane.models.append(stack[i])
        lanes.append(lane)
    fit_stacked(lanes, dataset.test_batches(), monitor=monitor)
    return [stack[i] for i in range(len(models))]


class _Progress:
    """A callback of every model of a group: a line every `seconds` on the group's epochs."""

    def __init__(self, what: str, num_epochs: int, seconds: float = 10.0) -> None:
        self.what, self.num_epochs, self.seconds = what, num_epochs, seconds
        self.start = self.shown = time.perf_counter()
        self.epoch = 0

    def on_epoch_end(self, epoch: int, metrics: dict[str, float]) -> None:
        now = time.perf_counter()
        if epoch > self.epoch and now - self.shown >= self.seconds:
            log.info("training %s: epoch %d of %d (%.0f s)", self.what, epoch, self.num_epochs, now - self.start)
            self.shown = now
        self.epoch = max(self.epoch, epoch)


def train_together(requests: list) -> None:
    """A Stack's train function for train_softmax's requests that can train together: a line on
    each group every 10 s and when it is done (the jobs of a launch report only when all groups are)."""
    dataset, shared = requests[0].payload[0], requests[0].payload[2]
    settings = [r.payload[1] for r in requests]
    seeds = sorted({s.seed for s in settings})
    images = train_count(dataset.num_train, shared["val_size"], shared["train_size"])
    what = (f"{len(settings)} runs together" if len(settings) > 1 else "1 run") + \
        f" ({images} training images, batch {shared['batch_size']}, " + \
        (f"seed {seeds[0]})" if len(seeds) == 1 else f"{len(seeds)} seeds, each its own minibatches)")
    progress = _Progress(what, max(s.num_epochs for s in settings))
    with engine.sharing(groups_training):  # the cores are shared with the groups training beside it
        models = train_stacked(dataset, [replace(s, callbacks=[*s.callbacks, progress]) for s in settings], **shared)
    for request, model in zip(requests, models):
        request.result = model
    log.info("trained %s: %d epochs in %.1f s", what, max(len(m.result.history) for m in models),
             time.perf_counter() - progress.start)


def group_key(dataset: Dataset, shared: dict[str, Any]) -> tuple:
    return (id(dataset), *sorted(shared.items()))
