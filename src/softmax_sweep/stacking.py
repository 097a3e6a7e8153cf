"""Models trained together: train_stacked trains models that share minibatches (same data set,
training rows, batch size and seed) in one graph; under the stacked launcher (its public Stack in
hydra_plugins.softmax_sweep_stacked.stack) train_softmax hands its model there, and the jobs of
one launch train together, each with its own model, MLflow run, curves and return value."""
from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Optional

import mxnet as mx
import numpy as np

from softmax_sweep.data import DataIter, Dataset, fixed_batches, split_indices
from softmax_sweep.model import build_net
from softmax_sweep.sgd import Member
from softmax_sweep.training import Callback, Model, fit_stacked

log = logging.getLogger("softmax_sweep")


@dataclass
class ModelSettings:
    """What may differ between the models of one stack."""
    lr: float
    num_epochs: int
    weight_decay: float = 0.0
    lr_schedule: str = "constant"
    patience: Optional[int] = None
    callbacks: Sequence[Callback] = ()


def train_stacked(dataset: Dataset, models: Sequence[ModelSettings], *, batch_size: int, val_size: int,
                  seed: int = 0, train_size: Optional[int] = None, monitor: str = "val_acc",
                  eval_train: bool = False) -> list[Model]:
    """Train models that share the data, split, batch size and seed (so their minibatches) in one
    graph; each ends as train_softmax would end it alone (its model.error: why it left early)."""
    train_idx, val_idx = split_indices(dataset.num_train, val_size, seed, train_size)
    train_iter = DataIter(dataset.X_train, dataset.y_train, train_idx, batch_size, shuffle=True,
                          rng=np.random.RandomState(seed))
    val_iter = dataset.val_batches(val_idx) if len(val_idx) else None
    stack = []
    for m in models:
        mx.random.seed(seed)  # every model starts from the weights it would start from alone
        net = build_net(dataset.num_classes, dataset.X_train.shape[1])
        # updates count from 1 and the schedule reaches 0 at its max_update: one more than the run has,
        # so the last update still trains (a run of a single update would otherwise train at lr 0)
        scheduler = mx.lr_scheduler.CosineScheduler(m.num_epochs * len(train_iter) + 1, base_lr=m.lr) \
            if m.lr_schedule == "cosine" else None
        stack.append(Model(Member(net, m.lr, m.weight_decay, scheduler), m.num_epochs, m.patience, m.callbacks))
    train_eval_iter = fixed_batches(dataset.X_train, dataset.y_train, train_idx) if eval_train else None
    fit_stacked(stack, train_iter, val_iter, dataset.test_batches(), monitor=monitor, train_eval_iter=train_eval_iter)
    return stack


def train_together(requests: list) -> None:
    """A Stack's train function for train_softmax's requests that share minibatches; a line on
    each group when it is done (the jobs of a launch report only when all groups are)."""
    dataset, shared = requests[0].payload[0], requests[0].payload[2]
    start = time.perf_counter()
    models = train_stacked(dataset, [r.payload[1] for r in requests], **shared)
    for request, model in zip(requests, models):
        request.result = model
    images = len(split_indices(dataset.num_train, shared["val_size"], shared["seed"], shared["train_size"])[0])
    log.info("trained %s (%d training images, batch %d, seed %d): %d epochs in %.1f s",
             f"{len(models)} runs together" if len(models) > 1 else "1 run", images, shared["batch_size"],
             shared["seed"], max(len(m.result.history) for m in models), time.perf_counter() - start)


def group_key(dataset: Dataset, shared: dict[str, Any]) -> tuple:
    return (id(dataset), *sorted(shared.items()))
