"""Stacked training: K models in one MXNet graph, each ending where training it alone ends,
float for float (weights, validation and test metrics), each leaving the stack on its
own (its epochs, early stopping, divergence, a pruned trial's exception) while the others go on.
Real MXNet on scikit-learn's digits."""
from __future__ import annotations

import functools
import re
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from mlflow.tracking import MlflowClient

from softmax_sweep import fused
from softmax_sweep.data import load_dataset
from softmax_sweep.errors import TrainingDiverged
from softmax_sweep.experiment import train_softmax
from softmax_sweep.stacking import ModelSettings, train_stacked

from conftest import clean_env, run_statuses, wait_for_count


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
STACK = dict(batch_size=32, val_size=300)  # SHARED without the seed: each ModelSettings holds its own
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
                         s.get("patience"), callbacks, s.get("seed", SHARED["seed"]))


def _assert_as_alone(digits, settings: list[dict], stacked, **shared) -> None:
    for s, model in zip(settings, stacked):
        alone = _settings(s)
        try:
            net, result = train_softmax(digits, lr=alone.lr, num_epochs=alone.num_epochs,
                                        weight_decay=alone.weight_decay, lr_schedule=alone.lr_schedule,
                                        patience=alone.patience, callbacks=alone.callbacks,
                                        **dict(SHARED, seed=alone.seed, **shared))
        except (TrainingDiverged, Pruned) as error:
            assert type(model.error) is type(error) and str(model.error) == str(error), (s, model.error)
            continue
        assert model.error is None, (s, model.error)
        assert len(model.result.history) == len(result.history) and model.result.best_epoch == result.best_epoch
        for ours, theirs in zip(model.result.history, result.history):
            assert ours.keys() == theirs.keys()
            for key in ("val_loss", "val_acc", "test_loss", "test_acc", "train_eval_loss", "train_eval_acc"):
                assert ours.get(key) == theirs.get(key), (s, key)
            for key in ("train_loss", "train_acc"):  # one model's step sums its loss with other ops: close
                assert ours[key] == pytest.approx(theirs[key], rel=1e-6), (s, key)
        for ours, theirs in zip(model.net.collect_params().values(), net.collect_params().values()):
            np.testing.assert_array_equal(ours.data().asnumpy(), theirs.data().asnumpy(), err_msg=str(s))


@pytest.mark.parametrize("loss_ops", ["fused", "mxnet"])
def test_stacked_models_end_where_training_each_alone_ends(digits, loss_ops: str,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """In both forms of the loss (softmax_sweep.fused's operator, MXNet's operators)."""
    monkeypatch.setenv("SOFTMAX_SWEEP_FUSED", "1" if loss_ops == "fused" else "0")
    if loss_ops == "fused" and not fused.available():
        pytest.skip("the fused loss operator could not be built here (no C++ compiler?): see the warning")
    stacked = train_stacked(digits, [_settings(s) for s in SETTINGS], **STACK)
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
    _assert_as_alone(digits, settings, train_stacked(digits, [_settings(s) for s in settings], **STACK))


def test_sixteen_models_at_large_rates_end_float_for_float_as_alone(digits) -> None:
    """16 stacked models at batch 64: where oneDNN's product of a whole stack (AVX-512) sums in
    another order than one model's, and lr up to 1 would grow that rounding into other models."""
    settings = [dict(lr=float(lr), num_epochs=10) for lr in np.geomspace(0.01, 1.0, 16)]
    shared = dict(SHARED, batch_size=64)
    stacked = train_stacked(digits, [_settings(s) for s in settings], **dict(STACK, batch_size=64))
    for s, model in zip(settings, stacked):
        net, result = train_softmax(digits, lr=s["lr"], num_epochs=10, **shared)
        assert [m["val_loss"] for m in model.result.history] == [m["val_loss"] for m in result.history], s
        for ours, theirs in zip(model.net.collect_params().values(), net.collect_params().values()):
            np.testing.assert_array_equal(ours.data().asnumpy(), theirs.data().asnumpy(), err_msg=str(s))
    assert max(m.result.best["val_acc"] for m in stacked) > 0.9, "they learned"


def test_a_stack_cut_in_unequal_chunks_ends_as_each_model_alone(tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """Seven models on 784 inputs at batch 32, on one core: where oneDNN sums some stack sizes in
    another order than one model (an AMD EPYC: 7 and 4 models, not 6, 3 or 1), the stack is cut in
    the fewest products whose every model is its product alone (there 6 + 1, not seven products
    of one), and each model ends with the weights it ends with alone. MXNet's graphs train here
    (SOFTMAX_SWEEP_FUSED=0): only they take chunks; the fused operator would pass without them."""
    from softmax_sweep.model import _matches, exact_chunks
    from softmax_sweep.synthetic import write_synthetic_idx

    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    monkeypatch.setenv("SOFTMAX_SWEEP_FUSED", "0")
    write_synthetic_idx(tmp_path / "idx", n_train=700, n_test=100)
    data = load_dataset("idx", root=str(tmp_path / "idx"))
    chunks = exact_chunks(32, 7, 10, 784, together=1, alone=1)
    assert sum(chunks) == 7 and all(size == 1 or _matches(size, 32, 10, 784, True, 1, 1) for size in chunks)
    if not _matches(7, 32, 10, 784, True, 1, 1) and _matches(6, 32, 10, 784, True, 1, 1):
        assert chunks == (6, 1)
    settings = [dict(lr=float(lr), num_epochs=3) for lr in np.geomspace(0.03, 1.0, 7)]
    stacked = train_stacked(data, [_settings(s) for s in settings], batch_size=32, val_size=100)
    for s, model in zip(settings, stacked):
        net, _ = train_softmax(data, lr=s["lr"], num_epochs=3, batch_size=32, val_size=100, seed=SHARED["seed"])
        for ours, theirs in zip(model.net.collect_params().values(), net.collect_params().values()):
            np.testing.assert_array_equal(ours.data().asnumpy(), theirs.data().asnumpy(), err_msg=str(s))


@pytest.mark.parametrize("cores", ["1", "3"])
def test_models_of_other_seeds_take_their_own_minibatches_in_the_same_stack(
        digits, cores: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Four seeds in one stack, each its own split and shuffle (a lane): every model ends as alone,
    also where a lane empties early (its one model diverges, or has fewer epochs) and the others
    go on; validation and the training-set evaluation on each seed's own rows. On one core the
    lanes take one graph; on three, a thread each for three shares of them (alone: three threads)."""
    monkeypatch.setenv("OMP_NUM_THREADS", cores)
    settings = [dict(lr=0.1, seed=3), dict(lr=0.5, weight_decay=1e-3, seed=3),
                dict(lr=0.3, lr_schedule="cosine", seed=4), dict(lr=0.8, seed=4, prune=3),
                dict(lr=1e38, seed=5), dict(lr=0.2, num_epochs=2, seed=6),
                dict(lr=0.4, seed=6, patience=1)]
    stacked = train_stacked(digits, [_settings(s) for s in settings], **STACK, eval_train=True)
    _assert_as_alone(digits, settings, stacked, eval_train=True)
    assert [len(m.result.history) for m in stacked][:5] == [6, 6, 6, 3, 1]
    first = stacked[0].result.history[0]
    assert {m.result.history[0]["val_acc"] for m in (stacked[0], stacked[2], stacked[5])} != {first["val_acc"]}, \
        "the seeds' models were validated on other rows"


@pytest.mark.parametrize("loss_ops", ["fused", "mxnet"])
def test_evaluating_every_lane_on_the_whole_training_array_gives_each_seeds_own_rows(
        digits, loss_ops: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Where every training row is evaluated (eval_train on a whole training set), lanes read the
    array once for all seeds; each seed's numbers are those of its own rows gathered."""
    from softmax_sweep.data import fixed_batches, split_indices
    from softmax_sweep.model import build_net, evaluate, evaluate_parts

    monkeypatch.setenv("SOFTMAX_SWEEP_FUSED", "1" if loss_ops == "fused" else "0")
    nets, parts, expected = [], [], []
    for seed in (0, 1, 2):
        train_idx, val_idx = split_indices(digits.num_train, 300, seed)
        parts.append(np.zeros(digits.num_train, np.float32))
        parts[-1][train_idx], parts[-1][val_idx] = 1, 2
        nets.append(build_net(10, digits.X_train.shape[1]))
        expected.append([evaluate([nets[-1]], fixed_batches(digits.X_train, digits.y_train, idx))
                         for idx in (train_idx, val_idx)])
    loss, acc = evaluate_parts(nets, fixed_batches(digits.X_train, digits.y_train, batch_size=500), parts, 2)
    for i, ((train_loss, train_acc), (val_loss, val_acc)) in enumerate(expected):
        assert (acc[0, i], acc[1, i]) == (train_acc[0], val_acc[0])
        assert loss[:, i] == pytest.approx([train_loss[0], val_loss[0]], rel=1e-6)
    assert len({float(a) for a in acc[1]}) > 1, "the seeds' validation rows differ"


def test_a_long_group_says_how_far_it_is(digits, caplog: pytest.LogCaptureFixture) -> None:
    """Every model of a group hears of each epoch; the group's line comes once per epoch, at most
    every `seconds` (10 in a launch), also after its first models have left."""
    import logging

    from softmax_sweep.stacking import _Progress

    progress = _Progress("3 runs together (...)", 4, seconds=0)
    settings = [ModelSettings(0.1, 4, callbacks=[progress]), ModelSettings(0.1, 2, callbacks=[progress]),
                ModelSettings(1e38, 4, callbacks=[progress], seed=1)]
    with caplog.at_level(logging.INFO, logger="softmax_sweep"):
        train_stacked(digits, settings, **STACK)
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("training 3 runs")]
    assert [line.split(" (")[1] for line in lines] == \
        ["...): epoch 1 of 4", "...): epoch 2 of 4", "...): epoch 3 of 4", "...): epoch 4 of 4"], lines


# --- a grid multirun: the stacked launcher (the default) against hydra/launcher=basic ------------

def _grid(mlruns: Path, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "softmax_sweep.train", "-m", "lr=0.05,1e38,0.3,1", "seed=0,1",
                           "batch_size=128,256", "data=digits", "num_epochs=4", "eval_train=true",
                           "early_stopping_patience=1",
                           f"mlruns_dir={mlruns}", *extra],
                          capture_output=True, text=True, timeout=600, env=clean_env())


def _store(mlruns: Path) -> dict:
    """Every run of the store as what it records: name, status, params, tags that are not ids,
    times or places, metric histories (epoch_seconds aside) and artifact names."""
    client = MlflowClient(f"sqlite:///{mlruns / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("softmax-sweep")
    skip = ("mlflow.parentRunId", "worker", "hydra.output_dir", "hydra.sweep_dir", "mlflow.note.content",
            "mlflow.runName", "mlflow.source", "mlflow.user", "mlflow.log-model.history")
    found = {}
    for run in client.search_runs([experiment.experiment_id]):
        metrics = {key: [(m.step, m.value) for m in sorted(client.get_metric_history(run.info.run_id, key),
                                                         key=lambda m: m.step)]
                   for key in run.data.metrics if key != "epoch_seconds"}
        here = {str(mlruns): "MLRUNS", " hydra/launcher=basic": ""}  # the places and the switch that differ
        name = "multirun" if run.info.run_name.startswith("multirun-") else run.info.run_name
        found[name] = {
            "status": run.info.status, "params": {k: v for k, v in run.data.params.items() if k != "mlruns_dir"},
            "tags": {k: functools.reduce(lambda text, pair: text.replace(*pair), here.items(), v)
                     for k, v in run.data.tags.items() if not k.startswith(skip)},
            "metrics": metrics, "artifacts": sorted(a.path for a in client.list_artifacts(run.info.run_id))}
    return found


def _job_configs(mlruns: Path) -> dict:
    """Per job (its overrides): its .hydra/config.yaml and overrides.yaml, its places masked."""
    client = MlflowClient(f"sqlite:///{mlruns / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("softmax-sweep")
    found = {}
    for run in client.search_runs([experiment.experiment_id], "tags.`hydra.output_dir` != ''"):
        folder = Path(run.data.tags["hydra.output_dir"]) / ".hydra"
        texts = [(folder / name).read_text().replace(str(mlruns), "MLRUNS")
                 for name in ("config.yaml", "overrides.yaml")]
        found[texts[1]] = texts[0]
    assert len(found) == 16, sorted(found)
    return found


def test_a_stacked_grid_records_what_one_at_a_time_records(tmp_path: Path) -> None:
    """Four learning rates times two seeds times two batch sizes: a stack per batch size, the two
    side by side (one per core), each seed's models on its own minibatches."""
    stacked, alone = _grid(tmp_path / "stacked"), _grid(tmp_path / "alone", "hydra/launcher=basic")
    for done in (stacked, alone):
        assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr[-2000:]
        assert done.stderr.strip().splitlines()[-1] == \
            "error: 4 of 16 jobs failed (their reasons are in the table above)"
    assert "trained together where they can share minibatches" in stacked.stdout + stacked.stderr
    progress = re.findall(r"trained (.*): (\d+) epochs in [\d.]+ s", stacked.stdout + stacked.stderr)
    assert sorted(progress) == [
        (f"8 runs together (1047 training images, batch {bs}, 2 seeds, each its own minibatches)", "4")
        for bs in (128, 256)], progress
    ours, theirs = _store(tmp_path / "stacked"), _store(tmp_path / "alone")
    assert sorted(ours) == sorted(theirs) and len(ours) == 17, "sixteen jobs and the grid's parent run"
    for name in ours:
        a, b = ours[name], theirs[name]
        assert {k: a[k] for k in ("status", "params", "tags", "artifacts")} == \
            {k: b[k] for k in ("status", "params", "tags", "artifacts")}, name
        assert a["metrics"].keys() == b["metrics"].keys(), name
        for key, history in a["metrics"].items():
            assert [s for s, _ in history] == [s for s, _ in b["metrics"][key]], (name, key)
            assert [v for _, v in history] == pytest.approx([v for _, v in b["metrics"][key]], rel=1e-5, abs=1e-6,
                                                            nan_ok=True), (name, key)
    # each job trained with the config Hydra composes for it (the stacked launcher composes a
    # grid's jobs once and sets each one's values on a copy; hydra/launcher=basic composes each)
    assert _job_configs(tmp_path / "stacked") == _job_configs(tmp_path / "alone")
    statuses = sorted(r["status"] for r in ours.values())
    assert statuses == ["FAILED"] * 4 + ["FINISHED"] * 13
    assert any(len(r["metrics"].get("val_acc", [])) < 4 for r in ours.values()), "early stopping ended one early"


def test_ctrl_c_of_a_stacked_grid_leaves_nothing_running(tmp_path: Path) -> None:
    """Two groups (batch sizes) training side by side, two jobs each: Ctrl-C ends every run."""
    mlruns = tmp_path / "mlruns"
    proc = subprocess.Popen([sys.executable, "-m", "softmax_sweep.train", "-m", "lr=0.05,0.3", "batch_size=64,256",
                             "data=digits", "num_epochs=100000", f"mlruns_dir={mlruns}"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=clean_env())
    wait_for_count(mlruns / "mlflow.db", proc, "SELECT count(*) FROM metrics WHERE key = 'val_acc'", 12,
                   "epochs of the four jobs")
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130 and "Traceback" not in err, err[-3000:]
    assert sorted(run_statuses(mlruns / "mlflow.db")) == ["KILLED"] * 5, "the four jobs and the parent"


def test_an_optuna_sweep_stacks_its_trials_and_prunes_them_one_by_one(tmp_path: Path) -> None:
    """Four trials per launch on the stacked launcher, a pruner from the first epoch on: pruned
    trials leave their stack, PRUNED in Optuna and in MLflow; Optuna and MLflow agree."""
    from test_sweeps import _study, assert_consistent

    mlruns = tmp_path / "mlruns"
    done = subprocess.run([sys.executable, "-m", "softmax_sweep.train", "-m", "sweep=tune", "data=digits",
                           "hydra/launcher=stacked", "hydra.sweeper.n_jobs=4", "hydra.sweeper.n_trials=12",
                           "hydra/sweeper/optuna_pruner=median_early", "batch_size=choice(64)",
                           "num_epochs=range(4, 7)", "lr=tag(log, interval(0.001, 1.0))", f"mlruns_dir={mlruns}"],
                          capture_output=True, text=True, timeout=600, env=clean_env())
    assert done.returncode == 0 and "Traceback" not in done.stderr, done.stderr[-2000:]
    assert "Launching 4 jobs locally, trained together" in done.stdout + done.stderr
    study = _study(mlruns, "tune-digits")
    states = [t.state.name for t in study.trials]
    assert len(states) == 12 and "PRUNED" in states and states.count("COMPLETE") >= 4, states
    assert_consistent(mlruns, study)


def test_a_sigkilled_stacked_sweep_is_reaped_and_retried_by_the_next_start(tmp_path: Path) -> None:
    """SIGKILL of a stacked Optuna sweep while its three trials train together leaves what a
    one-at-a-time sweep leaves: the trials RUNNING until the next start on the store, which marks
    them FAIL, queues them again and ends their MLflow runs; nothing stays RUNNING."""
    from test_sweeps import _runs, _study, assert_consistent

    mlruns = tmp_path / "mlruns"
    command = [sys.executable, "-m", "softmax_sweep.train", "-m", "sweep=tune", "data=digits",
               "hydra/launcher=stacked", "hydra.sweeper.n_jobs=3", "hydra.sweeper.n_trials=3",
               "hydra/sweeper/optuna_pruner=none", "batch_size=choice(64)", "~hydra.sweeper.params.num_epochs",
               "lr=tag(log, interval(0.01, 1.0))",
               f"mlruns_dir={mlruns}"]
    proc = subprocess.Popen([*command, "num_epochs=100000"], stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True, env=clean_env())
    wait_for_count(mlruns / "mlflow.db", proc, "SELECT count(*) FROM metrics WHERE key = 'val_acc'", 6,
                   "epochs of the three trials")
    proc.kill()
    proc.wait(timeout=60)
    killed = _study(mlruns, "tune-digits").trials
    assert [t.state.name for t in killed] == ["RUNNING"] * 3
    assert run_statuses(mlruns / "mlflow.db").count("RUNNING") == 4, "three trials and the parent"

    again = subprocess.run([*command, "num_epochs=2"], capture_output=True, text=True, timeout=600,
                           env=clean_env())
    assert again.returncode == 0 and "Traceback" not in again.stderr, again.stderr[-2000:]
    assert "marked FAIL and queued again" in again.stdout + again.stderr
    study = _study(mlruns, "tune-digits")
    assert [t.state.name for t in study.trials[:3]] == ["FAIL"] * 3
    retried = [t for t in study.trials if "failed_trial" in t.system_attrs]
    assert sorted(t.system_attrs["failed_trial"] for t in retried) == [0, 1, 2]
    assert all(t.state.name == "COMPLETE" for t in retried)
    assert "RUNNING" not in run_statuses(mlruns / "mlflow.db")
    client, _ = _runs(mlruns)
    assert {client.get_run(t.user_attrs["mlflow_run_id"]).info.status for t in killed} <= {"KILLED", "FAILED"}
    assert_consistent(mlruns, study)
