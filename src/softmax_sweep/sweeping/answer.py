"""Exercise 2's answer from a controlled study (training-set size x lr x remedy, several seeds,
beside the chapter's own setting and a larger batch): why test accuracy falls again, what shows it
(the test loss before the accuracy), and what each remedy at each strength recovers, in numbers
(answer.md, the conclusion first: answer_text.py) and figures (answer_plots.py). This module
reads the study: each configuration's curves over seeds, and the numbers the answer rests on."""
from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import optuna
from optuna.trial import TrialState

from softmax_sweep.stats import mean_ci

KEYS = ("data.train_size", "lr", "remedy")
CURVES = ("test_acc", "test_loss", "train_eval_acc", "train_eval_loss", "val_acc")
REMEDIES = ("none", "weight_decay_1e-4", "weight_decay", "weight_decay_1e-2", "early_stopping", "lr_decay")
REMEDY_LABELS = {"none": "no remedy", "weight_decay": "weight decay", "early_stopping": "early stopping",
                 "lr_decay": "lr decay (cosine)"}
FALL_SHOWN = 0.001  # a fall smaller than 0.1 points is no fall
Histories = Mapping[str, Mapping[str, Sequence[float]]]  # seed run id -> metric -> per-epoch values
Interval = tuple[float, float]  # mean and 95% CI half-width over seeds


def is_controlled_study(space_names: Sequence[str]) -> bool:
    return all(k in space_names for k in KEYS)


def remedy_label(remedy: str, weight_decay: float = 0.0) -> str:
    if remedy.startswith("weight_decay") and weight_decay:
        return f"weight decay {weight_decay:g}"
    return REMEDY_LABELS.get(remedy, remedy.replace("_", " "))


@dataclass
class Config:
    """One configuration with its seeds' per-epoch curves."""

    train_size: int
    lr: float
    remedy: str
    seeds: list[dict[str, np.ndarray]]  # per seed: metric -> values by epoch (1-based: index + 1)
    batch_size: int = 32
    weight_decay: float = 0.0

    @property
    def setting(self) -> tuple[int, float, int]:
        return self.train_size, self.lr, self.batch_size

    @property
    def label(self) -> str:
        return remedy_label(self.remedy, self.weight_decay)

    def mean(self, metric: str) -> np.ndarray:
        length = min(len(s[metric]) for s in self.seeds)
        return np.mean([s[metric][:length] for s in self.seeds], axis=0)

    def final_test(self) -> list[float]:
        """Test accuracy of the model each run ends with: the best validation epoch's weights
        with early stopping (restored), else the last epoch's."""
        if self.remedy == "early_stopping":
            return [float(s["test_acc"][int(np.argmax(s["val_acc"]))]) for s in self.seeds]
        return [float(s["test_acc"][-1]) for s in self.seeds]


@dataclass
class Setting:
    """Numbers for one (training-set size, lr, batch size) without a remedy."""

    train_size: int
    lr: float
    batch_size: int
    seeds: int
    epochs: int
    peak_epoch: int
    peak: float
    last: float
    fall: Interval  # mean test accuracy's peak epoch to the last, paired by seed, accuracy units
    single_fall: Interval  # each seed from its own best epoch to its last: what one run shows
    gap_best: Interval
    gap_last: Interval
    gap_growth: Interval  # gap at the last epoch minus gap at the best, paired by seed
    loss_low_epoch: int  # where the seeds' mean test loss is lowest
    loss_low: float
    loss_last: float
    loss_rise: Interval  # test loss at the last epoch minus at the mean's lowest epoch, paired by seed
    train_loss_last: float
    train_acc_last: float
    swing: float  # mean over seeds of the sd of test accuracy's epoch-to-epoch change, second half
    recovered: dict[str, Interval] = field(default_factory=dict)  # remedy label -> points of final test acc

    @property
    def falls(self) -> bool:
        return _above_zero(self.fall)

    @property
    def gap_grows(self) -> bool:
        return _above_zero(self.gap_growth)

    @property
    def loss_rises(self) -> bool:
        return _above_zero(self.loss_rise)

    @property
    def name(self) -> str:
        return f"{self.train_size} images at lr {self.lr:g}" + (f", batch {self.batch_size}"
                                                                  if self.batch_size != 32 else "")


def _above_zero(value: Interval) -> bool:
    mean, half = value
    return mean >= FALL_SHOWN and (math.isnan(half) or mean - half > 0)


def significant(value: Interval) -> int:
    """+1 above zero, -1 below, 0 within the noise over seeds."""
    mean, half = value
    if math.isnan(half) or abs(mean) <= half:
        return 0
    return 1 if mean > 0 else -1


def seed_run_ids(trial: optuna.trial.FrozenTrial) -> list:
    """The MLflow runs of a trial's seeds (a trial of one seed: its own run)."""
    return trial.user_attrs.get("seed_run_ids", [trial.user_attrs.get("mlflow_run_id")])


def load_configs(study: optuna.Study, histories: Histories,
                 run_params: Mapping[str, Mapping[str, str]] = {}) -> list[Config]:
    """The study's complete configurations; run_params (seed run id -> its MLflow params) give the
    batch size and weight decay each trained with, where the trial's params do not."""
    configs = []
    for trial in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        if not all(k in trial.params for k in KEYS):
            continue
        ids = seed_run_ids(trial)
        runs = [histories[r] for r in ids if r in histories]
        seeds = [{m: np.asarray(h[m], dtype=float) for m in CURVES} for h in runs if all(h.get(m) for m in CURVES)]
        params = next((run_params[r] for r in ids if r in run_params), {})
        if seeds:
            configs.append(Config(int(trial.params["data.train_size"]), float(trial.params["lr"]),
                                  str(trial.params["remedy"]), seeds,
                                  int(trial.params.get("batch_size", params.get("batch_size", 32))),
                                  float(params.get("weight_decay", 0.0))))
    return configs


def settings(configs: Sequence[Config]) -> list[Setting]:
    by_setting: dict[tuple[int, float, int], dict[str, Config]] = defaultdict(dict)
    for c in configs:
        by_setting[c.setting][c.remedy] = c
    found = []
    for (size, lr, batch), remedies in sorted(by_setting.items()):
        base = remedies.get("none")
        if base is None:
            continue
        test, window = base.mean("test_acc"), loss_window(len(base.mean("test_loss")))
        loss = _trailing_mean(base.mean("test_loss"), window)
        peak_i, low_i = int(np.argmax(test)), int(np.argmin(loss))
        falls, single, gaps_best, gaps_last, rises, swings = [], [], [], [], [], []
        for s in base.seeds:
            best_i = int(np.argmax(s["val_acc"]))
            falls.append(s["test_acc"][peak_i] - s["test_acc"][-1])
            single.append(float(np.max(s["test_acc"])) - s["test_acc"][-1])
            gaps_best.append(s["train_eval_acc"][best_i] - s["test_acc"][best_i])
            gaps_last.append(s["train_eval_acc"][-1] - s["test_acc"][-1])
            seed_loss = _trailing_mean(s["test_loss"], window)
            rises.append(seed_loss[-1] - seed_loss[low_i])
            half = s["test_acc"][len(s["test_acc"]) // 2:]
            swings.append(float(np.std(np.diff(half))) if len(half) >= 2 else math.nan)
        base_final = base.final_test()
        recovered = {c.label: mean_ci([a - b for a, b in zip(c.final_test(), base_final)])
                     for remedy, c in sorted(remedies.items(), key=lambda kv: remedy_order(kv[0]))
                     if remedy != "none" and len(c.seeds) == len(base.seeds)}
        found.append(Setting(
            size, lr, batch, len(base.seeds), len(test), peak_i + 1, float(test[peak_i]), float(test[-1]),
            mean_ci(falls), mean_ci(single), mean_ci(gaps_best), mean_ci(gaps_last),
            mean_ci([a - b for a, b in zip(gaps_last, gaps_best)]), low_i + 1, float(loss[low_i]), float(loss[-1]),
            mean_ci(rises), float(base.mean("train_eval_loss")[-1]), float(base.mean("train_eval_acc")[-1]),
            float(np.nanmean(swings)), recovered))
    return found


def loss_window(epochs: int) -> int:
    """Epochs the test loss is averaged over (a tenth of the run, at most 5): at a large lr it swings
    from epoch to epoch, which would hide where it turns."""
    return min(5, max(1, epochs // 10))


def _trailing_mean(values: np.ndarray, window: int) -> np.ndarray:
    """The mean of each epoch's value and the window - 1 before it (fewer at the start)."""
    sums = np.cumsum(np.concatenate([[0.0], values]))
    starts = np.maximum(np.arange(1, len(values) + 1) - window, 0)
    return (sums[1:] - sums[starts]) / (np.arange(1, len(values) + 1) - starts)


def remedy_order(remedy: str) -> int:
    return REMEDIES.index(remedy) if remedy in REMEDIES else len(REMEDIES)
