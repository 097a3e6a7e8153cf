"""Exercise 2's answer and the seed statistics, against hand-computed small cases."""
from __future__ import annotations

import math
from pathlib import Path

import optuna
import pytest
from optuna.distributions import CategoricalDistribution

from softmax_sweep.stats import mean_ci, paired_p_value
from softmax_sweep.sweeping import answer

SEEDS = {  # three seeds of 500 images at lr 1.0 without a remedy: the test accuracy peaks at epoch 2
    "a": {"test_acc": [.70, .80, .78, .75], "val_acc": [.71, .82, .79, .74], "train_eval_acc": [.75, .85, .90, .95]},
    "b": {"test_acc": [.72, .79, .80, .75], "val_acc": [.70, .80, .83, .76], "train_eval_acc": [.74, .86, .91, .96]},
    "c": {"test_acc": [.71, .80, .79, .75], "val_acc": [.70, .81, .80, .75], "train_eval_acc": [.75, .85, .90, .95]},
}
# the same seeds with early stopping: stopped after epoch 3, weights of the best validation epoch
STOPPED = {f"{k}-es": {m: v[:3] for m, v in h.items()} for k, h in SEEDS.items()}


def study_of(configs: dict[str, list[str]]) -> optuna.Study:
    study = optuna.create_study(direction="maximize")
    space = {"data.train_size": CategoricalDistribution([500]), "lr": CategoricalDistribution([1.0]),
             "remedy": CategoricalDistribution(list(configs))}
    for remedy, run_ids in configs.items():
        study.add_trial(optuna.trial.create_trial(
            params={"data.train_size": 500, "lr": 1.0, "remedy": remedy}, distributions=space, value=0.8,
            user_attrs={"seed_run_ids": run_ids}))
    return study


def test_mean_ci_and_paired_test_by_hand() -> None:
    mean, half = mean_ci([0.05, 0.04, 0.05])
    # sd 0.005774, sem 0.003333, t(0.975, 2) = 4.3027
    assert (mean, half) == (pytest.approx(0.046667, abs=1e-6), pytest.approx(0.014342, abs=1e-6))
    assert math.isnan(mean_ci([0.3])[1])
    # differences 0.01, 0.02, 0.03: mean 0.02, sd 0.01, t = 0.02 / (0.01 / sqrt 3) = 3.464, 2 d.f.
    assert paired_p_value([0.81, 0.82, 0.83], [0.80, 0.80, 0.80]) == pytest.approx(0.0742, abs=1e-4)
    assert paired_p_value([0.8, 0.8], [0.8, 0.8]) == 1.0


def test_answer_numbers_by_hand(tmp_path: Path) -> None:
    study = study_of({"none": list(SEEDS), "early_stopping": list(STOPPED)})
    configs = answer.load_configs(study, {**SEEDS, **STOPPED})
    (found,) = answer.settings(configs)
    assert (found.train_size, found.lr, found.seeds, found.epochs) == (500, 1.0, 3, 4)
    # the seeds' mean test accuracy: .71, .79667, .79, .75
    assert found.peak_epoch == 2 and found.peak == pytest.approx(0.796667, abs=1e-6) and found.last == 0.75
    assert found.fall == (pytest.approx(0.046667, abs=1e-6), pytest.approx(0.014342, abs=1e-6))
    # gap at the best validation epoch: .05 (epoch 2), .11 (epoch 3), .05 (epoch 2)
    assert found.gap_best == (pytest.approx(0.07), pytest.approx(0.086054, abs=1e-6))
    assert found.gap_last == (pytest.approx(0.203333, abs=1e-6), pytest.approx(0.014342, abs=1e-6))
    # early stopping ends with epoch 2's (or 3's) weights: 0.80 against 0.75 for every seed
    assert found.recovered == {"early_stopping": (pytest.approx(0.05), 0.0)}
    assert found.falls
    text = answer.answer_markdown([found], "Fashion-MNIST", 32)
    # one run, from its own best epoch: .05, .05, .05; gap growth: .15, .10, .15
    assert found.single_fall == (pytest.approx(0.05), 0.0)
    assert found.gap_growth == (pytest.approx(0.133333, abs=1e-6), pytest.approx(0.071711, abs=1e-6))
    assert "| 500 | 1 | 2 | 0.7967 | 0.7500 | +4.67 +- 1.43 | +5.00 +- 0.00 | +7.00 +- 8.61 | +20.33 +- 1.43 |" in text
    assert "| 500 | 1 | +5.00 +- 0.00 |" in text
    assert "peaks at epoch 2 (0.7967) and falls 4.67 +- 1.43 points by epoch 4" in text
    assert "Best remedy here: early stopping, +5.00 +- 0.00 points" in text
    for name, plot in (("curves.png", answer.plot_curves_by_size), ("remedies.png", answer.plot_remedies)):
        assert plot(configs, "Fashion-MNIST", tmp_path / name).stat().st_size > 10_000


def test_no_fall_is_said_so() -> None:
    flat = {k: {**h, "test_acc": [.70, .75, .77, .78 + 0.001 * i]} for i, (k, h) in enumerate(SEEDS.items())}
    (found,) = answer.settings(answer.load_configs(study_of({"none": list(flat)}), flat))
    assert not found.falls and found.peak_epoch == 4
    text = answer.answer_markdown([found], "Fashion-MNIST", 32)
    assert "the data shows no fall" in text and "The model does overfit: the gap" in text
