"""Stacked training: K models in one MXNet graph, each ending where training it alone ends
(within 1e-5), each leaving the stack on its own (its epochs, early stopping, divergence, a
pruned trial's exception) while the others go on. Real MXNet on scikit-learn's digits."""
from __future__ import annotations

import mxnet as mx
import numpy as np
import pytest

from softmax_sweep.data import DataIter, fixed_batches, load_dataset, split_indices
from softmax_sweep.errors import TrainingDiverged
from softmax_sweep.model import build_net
from softmax_sweep.sgd import Member
from softmax_sweep.training import Model, fit, fit_stacked


class Pruned(Exception):
    pass


class PruneAt:
    """A callback that stops its model after `epoch`, as a pruner's TrialPruned does."""

    def __init__(self, epoch: int) -> None:
        self.epoch, self.seen = epoch, []

    def on_epoch_end(self, epoch: int, metrics: dict[str, float]) -> None:
        self.seen.append(epoch)
        if epoch == self.epoch:
            raise Pruned(f"pruned at epoch {epoch}")


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits")


def _iters(data, seed: int = 0, batch_size: int = 32):
    train_idx, val_idx = split_indices(data.num_train, 300, seed)
    train_iter = DataIter(data.X_train, data.y_train, train_idx, batch_size, shuffle=True,
                          rng=np.random.RandomState(seed))
    return (train_iter, fixed_batches(data.X_train, data.y_train, val_idx),
            fixed_batches(data.X_test, data.y_test))


def _net(data, seed: int):
    mx.random.seed(seed)
    return build_net(10, data.X_train.shape[1])


def _cosine(epochs: int, lr: float, steps_per_epoch: int):
    return mx.lr_scheduler.CosineScheduler(epochs * steps_per_epoch + 1, base_lr=lr)


# lr, wd, cosine, epochs, patience, prune at: each trained in one stack and alone
SETTINGS = [
    dict(lr=0.1),
    dict(lr=0.5, wd=1e-3),
    dict(lr=0.3, cosine=True),
    dict(lr=0.8, wd=1e-2, cosine=True),
    dict(lr=1e38),                        # diverges at epoch 1 and leaves
    dict(lr=0.2, epochs=2),               # fewer epochs: leaves after 2
    dict(lr=3.0, patience=1),             # early stopping
    dict(lr=0.4, prune=2),                # its callback raises after epoch 2, as a pruned trial
]


def _model(data, i: int, s: dict, steps_per_epoch: int, epochs: int = 6) -> Model:
    n = s.get("epochs", epochs)
    scheduler = _cosine(n, s["lr"], steps_per_epoch) if s.get("cosine") else None
    callbacks = [PruneAt(s["prune"])] if "prune" in s else []
    return Model(Member(_net(data, 100 + i), s["lr"], s.get("wd", 0.0), scheduler), n, s.get("patience"), callbacks)


def test_stacked_models_end_where_training_each_alone_ends(digits) -> None:
    train_iter, val_iter, test_iter = _iters(digits)
    steps = len(train_iter)
    stacked = [_model(digits, i, s, steps) for i, s in enumerate(SETTINGS)]
    fit_stacked(stacked, train_iter, val_iter, test_iter)

    for i, (s, model) in enumerate(zip(SETTINGS, stacked)):
        alone_model = _model(digits, i, s, steps)
        alone_iter, val_iter, test_iter = _iters(digits)
        try:
            result = fit(alone_model.net, alone_iter, val_iter, test_iter, s["lr"], alone_model.num_epochs,
                         wd=s.get("wd", 0.0), lr_scheduler=alone_model.member.lr_scheduler,
                         patience=s.get("patience"), callbacks=alone_model.callbacks)
            error = None
        except (TrainingDiverged, Pruned) as e:
            result, error = None, e
        if error is not None:
            assert type(model.error) is type(error) and str(model.error) == str(error), (s, model.error)
            continue
        assert model.error is None, (s, model.error)
        assert len(model.result.history) == len(result.history) and model.result.best_epoch == result.best_epoch
        for ours, theirs in zip(model.result.history, result.history):
            for key in ("train_loss", "train_acc", "val_loss", "val_acc", "test_acc"):
                assert ours[key] == pytest.approx(theirs[key], rel=1e-4, abs=1e-5), (s, key)
        for ours, theirs in zip(model.net.collect_params().values(), alone_model.net.collect_params().values()):
            np.testing.assert_allclose(ours.data().asnumpy(), theirs.data().asnumpy(), rtol=0, atol=1e-5)

    by_kind = {k: m for k, m in zip(("diverged", "short", "patient", "pruned"), stacked[4:])}
    assert isinstance(by_kind["diverged"].error, TrainingDiverged) and len(by_kind["diverged"].result.history) == 1
    assert len(by_kind["short"].result.history) == 2
    assert by_kind["patient"].result.stopped_early and len(by_kind["patient"].result.history) < 6
    assert isinstance(by_kind["pruned"].error, Pruned) and by_kind["pruned"].callbacks[0].seen == [1, 2]
    assert all(len(m.result.history) == 6 for m in stacked[:4]), "the others went on to their last epoch"
    assert stacked[0].result.best["val_acc"] > 0.9, "they learned: the comparison is not between idle models"
