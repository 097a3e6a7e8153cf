"""Models trained together: train_stacked trains models that share minibatches in one graph; a
Stack lets the jobs of one launch do so. Each job runs in a thread of its own up to the point
where it would train; there it hands its model's settings to the Stack and waits. The launcher
then trains the requests that can share minibatches (same data set, training rows, batch size
and seed) together and lets the jobs go on, one at a time, each with its own model: its MLflow
run, curves and return value are what training it alone gives."""
from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Optional

import mxnet as mx
import numpy as np

from softmax_sweep.data import DataIter, Dataset, fixed_batches, split_indices
from softmax_sweep.model import build_net
from softmax_sweep.sgd import Member
from softmax_sweep.training import Callback, Model, fit_stacked

_local = threading.local()


@dataclass
class Request:
    dataset: Any
    settings: Any  # experiment.ModelSettings
    shared: dict[str, Any]  # train_stacked's keyword arguments: what the models of a stack share
    model: Any = None
    error: Optional[BaseException] = None


@dataclass
class Job:
    body: Callable[[], Any]
    before_each_step: Callable[[], None] = lambda: None  # e.g. set the job's HydraConfig again
    state: str = "new"  # new, running, parked (a request waits), done
    request: Optional[Request] = None
    result: Any = None
    error: Optional[BaseException] = None  # what the body raised (Hydra's run_job keeps a job's Exception itself)
    thread: Optional[threading.Thread] = field(default=None, repr=False)


class Stack:
    def __init__(self) -> None:
        self._changed = threading.Condition()

    def run(self, jobs: Sequence[Job]) -> list[Any]:
        """Run the jobs' bodies; returns what each returned. Every job goes on alone until it asks
        to train or ends; the requests then train together; the jobs go on; and so on."""
        try:
            for job in jobs:
                self._step(job)
            while parked := [job for job in jobs if job.state == "parked"]:
                self._train([job.request for job in parked])
                for job in parked:
                    self._step(job)
        except BaseException as error:  # Ctrl-C, SIGTERM: every job ends its run as interrupted
            for job in jobs:
                while job.state in ("running", "parked"):
                    if job.state == "parked":
                        job.request.error = error
                    self._step(job)
            raise
        if failed := next((job.error for job in jobs if job.error is not None), None):
            raise failed
        return [job.result for job in jobs]

    def _train(self, requests: Sequence[Request]) -> None:
        groups: dict[tuple, list[Request]] = {}
        for request in requests:
            key = (id(request.dataset), *sorted(request.shared.items()))
            groups.setdefault(key, []).append(request)
        for group in groups.values():
            models = train_stacked(group[0].dataset, [r.settings for r in group], **group[0].shared)
            for request, model in zip(group, models):
                request.model = model

    def _step(self, job: Job) -> None:
        """Let the job run until it parks at its next request or ends."""
        job.before_each_step()
        with self._changed:
            if job.thread is None:
                job.thread = threading.Thread(target=self._body, args=(job,), name="stacked-job", daemon=True)
                job.state = "running"
                job.thread.start()
            else:
                job.state = "running"
                self._changed.notify_all()
            while job.state == "running":
                self._changed.wait()

    def _body(self, job: Job) -> None:
        _local.job, _local.stack = job, self
        try:
            job.result = job.body()
        except BaseException as e:  # noqa: BLE001 - handed to the launcher's thread, raised there
            job.error = e
        finally:
            with self._changed:
                job.state = "done"
                self._changed.notify_all()

    def request(self, request: Request) -> Any:
        """In a job's thread: wait for the request's model (what train_stacked gave it)."""
        job = _local.job
        with self._changed:
            job.request, job.state = request, "parked"
            self._changed.notify_all()
            while job.state == "parked":
                self._changed.wait()
        if request.error is not None:
            raise request.error
        return request.model


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


def current() -> Optional[Stack]:
    """The Stack this thread's job belongs to, None outside a stacked launch."""
    return getattr(_local, "stack", None)
