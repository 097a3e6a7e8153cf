"""Exercise 2's answer and the seed statistics, against hand-computed small cases."""
from __future__ import annotations

import math
from pathlib import Path

import optuna
import pytest
from optuna.distributions import CategoricalDistribution

from softmax_sweep.stats import mean_ci, paired_p_value
from softmax_sweep.sweeping import answer, answer_plots, answer_text

LOSS = [.8, .5, .3, .2]  # training loss of the model at each epoch's end, every seed
SEEDS = {  # three seeds of 500 images at lr 1.0 without a remedy: the test accuracy peaks at epoch 2
    "a": {"test_acc": [.70, .80, .78, .75], "val_acc": [.71, .82, .79, .74], "train_eval_acc": [.75, .85, .90, .95],
          "test_loss": [.90, .70, .75, .85], "train_eval_loss": LOSS},
    "b": {"test_acc": [.72, .79, .80, .75], "val_acc": [.70, .80, .83, .76], "train_eval_acc": [.74, .86, .91, .96],
          "test_loss": [.90, .72, .74, .86], "train_eval_loss": LOSS},
    "c": {"test_acc": [.71, .80, .79, .75], "val_acc": [.70, .81, .80, .75], "train_eval_acc": [.75, .85, .90, .95],
          "test_loss": [.88, .70, .76, .84], "train_eval_loss": LOSS},
}
# the same seeds with early stopping: stopped after epoch 3, weights of the best validation epoch
STOPPED = {f"{k}-es": {m: v[:3] for m, v in h.items()} for k, h in SEEDS.items()}
# every training image: no gap, a test loss that keeps falling
ALL = {f"{k}-all": {**h, "train_eval_acc": h["test_acc"], "test_loss": [.9, .8, .7, .6]} for k, h in SEEDS.items()}


def study_of(configs: dict[tuple[int, float, int, str], list[str]]) -> optuna.Study:
    study = optuna.create_study(direction="maximize")
    keys = ("data.train_size", "lr", "batch_size", "remedy")
    space = {k: CategoricalDistribution(sorted({c[i] for c in configs})) for i, k in enumerate(keys)}
    for config, run_ids in configs.items():
        study.add_trial(optuna.trial.create_trial(params=dict(zip(keys, config)), distributions=space, value=0.8,
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
    study = study_of({(500, 1.0, 32, "none"): list(SEEDS), (500, 1.0, 32, "early_stopping"): list(STOPPED)})
    configs = answer.load_configs(study, {**SEEDS, **STOPPED})
    (found,) = answer.settings(configs)
    assert (found.train_size, found.lr, found.batch_size, found.seeds, found.epochs) == (500, 1.0, 32, 3, 4)
    # the seeds' mean test accuracy: .71, .79667, .79, .75
    assert found.peak_epoch == 2 and found.peak == pytest.approx(0.796667, abs=1e-6) and found.last == 0.75
    assert found.fall == (pytest.approx(0.046667, abs=1e-6), pytest.approx(0.014342, abs=1e-6))
    # gap at the best validation epoch: .05 (epoch 2), .11 (epoch 3), .05 (epoch 2)
    assert found.gap_best == (pytest.approx(0.07), pytest.approx(0.086054, abs=1e-6))
    assert found.gap_last == (pytest.approx(0.203333, abs=1e-6), pytest.approx(0.014342, abs=1e-6))
    # the mean test loss (.89333, .70667, .75, .85) is lowest at epoch 2; rises .15, .14, .14 from there
    assert (found.loss_low_epoch, found.loss_low, found.loss_last) == (2, pytest.approx(0.706667), pytest.approx(0.85))
    assert found.loss_rise == (pytest.approx(0.143333, abs=1e-6), pytest.approx(0.014342, abs=1e-6))
    assert found.loss_rises and found.train_loss_last == pytest.approx(0.2)
    # early stopping ends with epoch 2's (or 3's) weights: 0.80 against 0.75 for every seed
    assert found.recovered == {"early stopping": (pytest.approx(0.05), 0.0)}
    assert found.falls
    # one run, from its own best epoch: .05, .05, .05; gap growth: .15, .10, .15
    assert found.single_fall == (pytest.approx(0.05), 0.0)
    assert found.gap_growth == (pytest.approx(0.133333, abs=1e-6), pytest.approx(0.071711, abs=1e-6))
    text = answer_text.answer_markdown([found], "Fashion-MNIST")
    assert text.index("**Test accuracy falls again because") < text.index("## The evidence")  # the conclusion first
    assert ("| 500 | 1 | 32 | 2 | 0.7967 | 0.7500 | +4.67 +- 1.43 | +5.00 +- 0.00 | 2 | 0.707 | 0.850 | "
            "+0.14 +- 0.01 | +7.00 +- 8.61 | +20.33 +- 1.43 |") in text
    assert "| 500 | 1 | **+5.00 +- 0.00** |" in text
    assert "With 500 images at lr 1 the test loss ends at 0.85 against 0.20 on the training images" in text
    assert "turns up again after its lowest epoch beyond the noise in 1 of 1 settings (most with 500 images at " \
           "lr 1: from 0.71 at epoch 2 to 0.85, +0.14 +- 0.01)" in text
    assert "falls beyond the noise in 1 of 1 settings (at most 4.67 points)" in text
    assert "early stopping helps in 1 of 1 (+5.00 to +5.00 points)" in text
    for name, plot in (("curves.png", answer_plots.plot_curves_by_size), ("remedies.png", answer_plots.plot_remedies)):
        assert plot(configs, "Fashion-MNIST", tmp_path / name).stat().st_size > 10_000


def test_the_answer_compares_more_data_and_a_larger_batch() -> None:
    """The chapter's setting (every image, batch 256) and 4x the batch at 4x the lr beside the study."""
    fast = {f"{k}-b": {**h, "test_acc": [.70, .78, .76, .74]} for k, h in SEEDS.items()}
    study = study_of({(500, 1.0, 32, "none"): list(SEEDS), (55000, 0.1, 256, "none"): list(ALL),
                      (500, 4.0, 128, "none"): list(fast)})
    found = answer.settings(answer.load_configs(study, {**SEEDS, **ALL, **fast}))
    study_rows, reference, batch = answer_text.roles(found)
    assert [s.train_size for s in study_rows] == [500] and reference.train_size == 55000 and batch.lr == 4.0
    assert reference.gap_last == (0.0, 0.0) and not reference.loss_rises
    text = answer_text.answer_markdown(found, "Fashion-MNIST")
    # lr 4 and lr 1 on 500 images end at the same test loss: no ratio between them
    assert "the test loss ends at 0.85 against 0.20 on the training images: the model has grown confident" in text
    assert "**More data is the first remedy:** with every training image (55000, the chapter's lr 0.1 and batch " \
           "256) the gap ends at 0.00 +- 0.00 points and the test loss does not rise (+0.00 +- 0.00)." in text
    # lr 4 at batch 128 is lr 1 at batch 32's ratio; it ends at .74 against .75
    assert "At batch 128 and lr 4 (the same ratio as lr 1 at batch 32, 4x fewer steps per epoch) test accuracy " \
           "ends at 0.740 against 0.750" in text


def test_no_fall_is_said_so() -> None:
    flat = {k: {**h, "test_acc": [.70, .75, .77, .78 + 0.001 * i]} for i, (k, h) in enumerate(SEEDS.items())}
    (found,) = answer.settings(answer.load_configs(study_of({(500, 1.0, 32, "none"): list(flat)}), flat))
    assert not found.falls and found.peak_epoch == 4
    text = answer_text.answer_markdown([found], "Fashion-MNIST")
    assert "falls beyond the noise in 0 of 1 settings;" in text
    # gap at the best validation epoch .10, .14, .10; at the last .17, .179, .168: growth .07, .039, .068
    assert "the gap between them grows by 5.90 +- 4.31 points after the best epoch" in text


def test_weight_decay_strengths_are_told_apart() -> None:
    """Each strength is its own column, labelled by the weight decay its runs trained with."""
    weaker = {f"{k}-wd": {**h, "test_acc": [*h["test_acc"][:3], .76]} for k, h in SEEDS.items()}
    study = study_of({(500, 1.0, 32, "none"): list(SEEDS), (500, 1.0, 32, "weight_decay_1e-4"): list(weaker)})
    params = {run: {"weight_decay": "0.0001"} for run in weaker}
    (found,) = answer.settings(answer.load_configs(study, {**SEEDS, **weaker}, params))
    assert list(found.recovered) == ["weight decay 0.0001"]
    assert found.recovered["weight decay 0.0001"] == (pytest.approx(0.01), 0.0)
