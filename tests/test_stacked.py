"""Stacked training: K models in one MXNet graph, each ending where training it alone ends
(within 1e-5; most float for float, measured at most 6e-7 apart), each leaving the stack on its
own (its epochs, early stopping, divergence, a pruned trial's exception) while the others go on.
Real MXNet on scikit-learn's digits."""
from __future__ import annotations

import numpy as np
import pytest

from softmax_sweep.data import load_dataset
from softmax_sweep.errors import TrainingDiverged
from softmax_sweep.experiment import ModelSettings, train_softmax, train_stacked


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


SHARED = dict(batch_size=32, val_size=300, seed=3)
# each trained in one stack and alone: plain SGD, weight decay, the cosine schedule and both, a
# model that diverges at epoch 1, one with fewer epochs, one stopped early, one pruned after epoch 2
SETTINGS = [
    dict(lr=0.1),
    dict(lr=0.5, weight_decay=1e-3),
    dict(lr=0.3, lr_schedule="cosine"),
    dict(lr=0.8, weight_decay=1e-2, lr_schedule="cosine"),
    dict(lr=1e38),
    dict(lr=0.2, num_epochs=2),
    dict(lr=3.0, patience=1),
    dict(lr=0.4, prune=2),
]


def _settings(s: dict) -> ModelSettings:
    callbacks = [PruneAt(s["prune"])] if "prune" in s else []
    return ModelSettings(s["lr"], s.get("num_epochs", 6), s.get("weight_decay", 0.0), s.get("lr_schedule", "constant"),
                         s.get("patience"), callbacks)


def _assert_as_alone(digits, settings: list[dict], stacked) -> None:
    for s, model in zip(settings, stacked):
        alone = _settings(s)
        try:
            net, result = train_softmax(digits, lr=alone.lr, num_epochs=alone.num_epochs,
                                        weight_decay=alone.weight_decay, lr_schedule=alone.lr_schedule,
                                        patience=alone.patience, callbacks=alone.callbacks, **SHARED)
        except (TrainingDiverged, Pruned) as error:
            assert type(model.error) is type(error) and str(model.error) == str(error), (s, model.error)
            continue
        assert model.error is None, (s, model.error)
        assert len(model.result.history) == len(result.history) and model.result.best_epoch == result.best_epoch
        for ours, theirs in zip(model.result.history, result.history):  # summed in another order: close
            for key in ("train_loss", "train_acc", "val_loss", "val_acc", "test_loss", "test_acc"):
                assert ours[key] == pytest.approx(theirs[key], rel=1e-6), (s, key)
        for ours, theirs in zip(model.net.collect_params().values(), net.collect_params().values()):
            np.testing.assert_allclose(ours.data().asnumpy(), theirs.data().asnumpy(), rtol=0, atol=1e-5,
                                       err_msg=str(s))


def test_stacked_models_end_where_training_each_alone_ends(digits) -> None:
    stacked = train_stacked(digits, [_settings(s) for s in SETTINGS], **SHARED)
    _assert_as_alone(digits, SETTINGS, stacked)
    diverged, short, patient, pruned = stacked[4:]
    assert isinstance(diverged.error, TrainingDiverged) and len(diverged.result.history) == 1
    assert len(short.result.history) == 2
    assert patient.result.stopped_early and len(patient.result.history) < 6
    assert isinstance(pruned.error, Pruned) and pruned.callbacks[0].seen == [1, 2]
    assert all(len(m.result.history) == 6 for m in stacked[:4]), "the others went on to their last epoch"
    assert stacked[0].result.best["val_acc"] > 0.9, "they learned: the comparison is not between idle models"


def test_a_stack_of_constant_rates(digits) -> None:
    """No schedule in the stack: the per-step rates are built once and kept."""
    settings = [dict(lr=0.05), dict(lr=0.2, weight_decay=1e-2), dict(lr=0.6, num_epochs=3)]
    _assert_as_alone(digits, settings, train_stacked(digits, [_settings(s) for s in settings], **SHARED))
