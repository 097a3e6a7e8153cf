"""Training: the real Gluon model on real data (scikit-learn's digits)."""
from __future__ import annotations

import mxnet as mx
import numpy as np
import pytest
from mxnet import autograd, gluon

from softmax_sweep.data import DataIter, fixed_batches, load_dataset, split_indices
from softmax_sweep.errors import TrainingDiverged
from softmax_sweep.experiment import train_softmax
from softmax_sweep.model import build_net, build_step, evaluate
from softmax_sweep.sgd import SoftmaxSGD


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits")


def test_loss_decreases_and_digits_reach_93_percent(digits) -> None:
    net, result = train_softmax(digits, lr=0.5, batch_size=32, num_epochs=10, val_size=300)
    losses = [m["train_loss"] for m in result.history]
    assert all(later < earlier for earlier, later in zip(losses, losses[1:])), losses
    assert losses[-1] < 0.5 * losses[0]
    assert result.best["test_acc"] >= 0.93, result.best
    # the returned net holds the best epoch's parameters
    (test_loss,), (test_acc,) = evaluate([net], fixed_batches(digits.X_test, digits.y_test))
    assert test_acc == pytest.approx(result.best["test_acc"])


def _autograd_epochs(data, rows, batch_size, lr, wd, scheduler, epochs):
    """The chapter's way: autograd, loss.backward() and gluon.Trainer's SGD step(batch_size)."""
    mx.random.seed(3)
    net = build_net(10, data.X_train.shape[1])
    step = build_step(net)
    options = {"learning_rate": lr, "wd": wd, **({"lr_scheduler": scheduler} if scheduler else {})}
    trainer = gluon.Trainer(net.collect_params(), "sgd", options, kvstore=None)
    measured = []
    for epoch in range(epochs):
        loss_sum, correct = 0.0, 0.0
        for X, y in DataIter(data.X_train, data.y_train, rows, batch_size, shuffle=True,
                             rng=np.random.RandomState(epoch)):
            with autograd.record():
                batch_loss, batch_correct = step(X, y)
            batch_loss.backward()
            trainer.step(batch_size)
            loss_sum += batch_loss.asscalar()
            correct += batch_correct.asscalar()
        measured.append((loss_sum, correct))
    return net, measured


@pytest.mark.parametrize("batch_size, wd, schedule", [(16, 0.0, False), (50, 0.01, False), (24, 0.001, True)])
def test_fused_sgd_steps_like_autograd_and_gluon_trainer(digits, batch_size, wd, schedule) -> None:
    """SoftmaxSGD against autograd + gluon.Trainer from the same initial weights over the same
    minibatches (the last one smaller: 1197 rows), with weight decay and a cosine schedule."""
    rows = np.arange(1197)
    lr, epochs = 0.5, 3
    steps = epochs * -(-len(rows) // batch_size)
    scheduler = (lambda: mx.lr_scheduler.CosineScheduler(steps, base_lr=lr)) if schedule else (lambda: None)
    reference, expected = _autograd_epochs(digits, rows, batch_size, lr, wd, scheduler(), epochs)
    mx.random.seed(3)
    net = build_net(10, digits.X_train.shape[1])
    updater = SoftmaxSGD.single(net, lr, batch_size, wd, scheduler())
    measured = []
    for epoch in range(epochs):
        order = DataIter(digits.X_train, digits.y_train, rows, batch_size, shuffle=True,
                         rng=np.random.RandomState(epoch)).epoch_order()
        loss, correct = updater.epoch(digits.X_train, digits.y_train, order)
        measured.append((loss.asnumpy()[0], correct.asnumpy()[0]))
    assert updater.num_update == steps
    for ours, theirs in zip(net.collect_params().values(), reference.collect_params().values()):
        np.testing.assert_allclose(ours.data().asnumpy(), theirs.data().asnumpy(), rtol=1e-4, atol=1e-5)
    for (loss, correct), (ref_loss, ref_correct) in zip(measured, expected):
        assert loss == pytest.approx(ref_loss, rel=1e-4)
        assert abs(correct - ref_correct) <= 1
    assert measured[-1][1] > 0.9 * len(rows)  # it learned: the comparison is not between two idle models


def test_same_seed_same_curves_other_seed_other_curves(digits) -> None:
    runs = [train_softmax(digits, lr=0.3, batch_size=64, num_epochs=3, val_size=300, seed=s)[1].history
            for s in (7, 7, 8)]
    keys = ("train_loss", "train_acc", "val_acc", "test_acc")
    assert [[m[k] for k in keys] for m in runs[0]] == [[m[k] for k in keys] for m in runs[1]]
    assert [m["train_loss"] for m in runs[0]] != [m["train_loss"] for m in runs[2]]


def test_non_finite_loss_stops_the_run(digits) -> None:
    seen = []

    class Record:
        def on_epoch_end(self, epoch, metrics):
            seen.append(epoch)

    with pytest.raises(TrainingDiverged, match=r"loss became NaN at epoch 1; lr=1e\+38 too large\?"):
        train_softmax(digits, lr=1e38, batch_size=64, num_epochs=5, val_size=300, callbacks=[Record()])
    assert seen == [1], "the diverged epoch is reported to callbacks, then training stops"


def test_early_stopping_keeps_the_best_epoch(digits) -> None:
    # a subset of 40 examples and a large lr overfit fast, so val_acc stops improving
    net, result = train_softmax(digits, lr=2.0, batch_size=8, num_epochs=60, val_size=300,
                                train_size=40, patience=3)
    assert result.stopped_early
    assert len(result.history) == result.best_epoch + 3
    val_accs = [m["val_acc"] for m in result.history]
    assert result.best["val_acc"] == max(val_accs)
    _, val_idx = split_indices(digits.num_train, 300, seed=0)
    _, (val_acc,) = evaluate([net], fixed_batches(digits.X_train, digits.y_train, val_idx))
    assert val_acc == pytest.approx(max(val_accs))


def test_train_accuracy_is_measured_over_the_epoch(digits) -> None:
    _, result = train_softmax(digits, lr=0.5, batch_size=32, num_epochs=2, val_size=300)
    for m in result.history:
        assert 0 < m["train_acc"] <= 1 and np.isfinite(m["train_loss"])


def test_without_a_validation_set_every_training_image_is_used_and_the_last_epoch_counts(digits) -> None:
    """data.val_size=0, the chapter's setup: no validation metrics, the last epoch is the result."""
    _, result = train_softmax(digits, lr=0.5, batch_size=32, num_epochs=4, val_size=0)
    assert result.best_epoch == 4 and len(result.history) == 4
    assert all("val_acc" not in m and "val_loss" not in m for m in result.history)
    assert result.best["test_acc"] >= 0.9


def test_the_last_partial_batch_steps_like_the_others(digits) -> None:
    """Every step divides by batch_size (the chapter's train_ch3): with one example in the last
    batch, its step is 1/batch_size of a full one, so a huge lr on it cannot blow the run up."""
    n_train = digits.num_train - 300
    batch = n_train - 1  # two batches: n_train - 1 examples, then 1
    _, result = train_softmax(digits, lr=1.0, batch_size=batch, num_epochs=3, val_size=300)
    assert result.history[-1]["test_acc"] > 0.8


def test_every_exception_of_the_project_survives_pickling() -> None:
    """Job results cross processes under joblib or submitit: an exception whose constructor
    differs from its args must still unpickle, with its message and attributes."""
    import pickle
    from pathlib import Path

    from softmax_sweep.errors import SweepFailed, Terminated, UserError
    from softmax_sweep.idx_cache import ContentMismatch
    from softmax_sweep.trial_runs import EpochPruned

    for error in (TrainingDiverged(3, float("nan"), 2.5), EpochPruned(2, 0.5), ContentMismatch(Path("/x"), "bad"),
                  UserError("u"), SweepFailed("s"), Terminated()):
        again = pickle.loads(pickle.dumps(error))
        assert type(again) is type(error) and str(again) == str(error)
    assert pickle.loads(pickle.dumps(EpochPruned(2, 0.5))).epoch == 2
