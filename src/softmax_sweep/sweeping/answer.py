"""Exercise 2's answer from a controlled study (training-set size x lr x remedy, several seeds):
where test accuracy peaks, how far it falls by the last epoch, the generalization gap, and how
many points each remedy recovers, in numbers (answer.md) and figures."""
from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import optuna  # noqa: E402
from optuna.trial import TrialState  # noqa: E402

from softmax_sweep.stats import mean_ci  # noqa: E402

KEYS = ("data.train_size", "lr", "remedy")
CURVES = ("test_acc", "train_eval_acc", "val_acc")
REMEDY_LABELS = {"none": "no remedy", "weight_decay": "weight decay", "early_stopping": "early stopping",
                 "lr_decay": "lr decay (cosine)"}
FALL_SHOWN = 0.001  # a fall smaller than 0.1 points is no fall
Histories = Mapping[str, Sequence[Mapping[str, Sequence[float]]]]  # seed run id -> metric -> per-epoch values


def is_controlled_study(space_names: Sequence[str]) -> bool:
    return all(k in space_names for k in KEYS)


@dataclass
class Config:
    """One configuration of the grid with its seeds' per-epoch curves."""

    train_size: int
    lr: float
    remedy: str
    seeds: list[dict[str, np.ndarray]]  # per seed: metric -> values by epoch (1-based: index + 1)

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
    """Numbers for one (training-set size, lr) without a remedy."""

    train_size: int
    lr: float
    seeds: int
    epochs: int
    peak_epoch: int
    peak: float
    last: float
    fall: tuple[float, float]  # mean and CI half-width over seeds, accuracy units
    single_fall: tuple[float, float]  # each seed from its own best epoch to its last: what one run shows
    gap_best: tuple[float, float]
    gap_last: tuple[float, float]
    gap_growth: tuple[float, float]  # gap at the last epoch minus gap at the best, paired by seed
    recovered: dict[str, tuple[float, float]]  # remedy -> points of final test accuracy (mean, CI)

    @property
    def falls(self) -> bool:
        return _above_zero(self.fall)

    @property
    def gap_grows(self) -> bool:
        return _above_zero(self.gap_growth)


def _above_zero(value: tuple[float, float]) -> bool:
    mean, half = value
    return mean >= FALL_SHOWN and (math.isnan(half) or mean - half > 0)


def load_configs(study: optuna.Study, histories: Histories) -> list[Config]:
    configs = []
    for trial in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        if not all(k in trial.params for k in KEYS):
            continue
        runs = [histories[r] for r in trial.user_attrs.get("seed_run_ids", [trial.user_attrs.get("mlflow_run_id")])
                if r in histories]
        seeds = [{m: np.asarray(h[m], dtype=float) for m in CURVES} for h in runs if all(h.get(m) for m in CURVES)]
        if seeds:
            configs.append(Config(int(trial.params["data.train_size"]), float(trial.params["lr"]),
                                  str(trial.params["remedy"]), seeds))
    return configs


def settings(configs: Sequence[Config]) -> list[Setting]:
    by_key: dict[tuple[int, float], dict[str, Config]] = defaultdict(dict)
    for c in configs:
        by_key[(c.train_size, c.lr)][c.remedy] = c
    found = []
    for (size, lr), remedies in sorted(by_key.items()):
        base = remedies.get("none")
        if base is None:
            continue
        test = base.mean("test_acc")
        peak_i = int(np.argmax(test))
        falls, single, gaps_best, gaps_last = [], [], [], []
        for s in base.seeds:
            best_i = int(np.argmax(s["val_acc"]))
            falls.append(s["test_acc"][peak_i] - s["test_acc"][-1])
            single.append(float(np.max(s["test_acc"])) - s["test_acc"][-1])
            gaps_best.append(s["train_eval_acc"][best_i] - s["test_acc"][best_i])
            gaps_last.append(s["train_eval_acc"][-1] - s["test_acc"][-1])
        base_final = base.final_test()
        recovered = {}
        for remedy, config in remedies.items():
            if remedy != "none" and len(config.seeds) == len(base.seeds):
                recovered[remedy] = mean_ci([a - b for a, b in zip(config.final_test(), base_final)])
        found.append(Setting(size, lr, len(base.seeds), len(test), peak_i + 1, float(test[peak_i]),
                             float(test[-1]), mean_ci(falls), mean_ci(single), mean_ci(gaps_best),
                             mean_ci(gaps_last), mean_ci([a - b for a, b in zip(gaps_last, gaps_best)]), recovered))
    return found


def _points(value: tuple[float, float]) -> str:
    mean, half = value
    return f"{100 * mean:+.2f}" + ("" if math.isnan(half) else f" +- {100 * half:.2f}")


def answer_markdown(found: Sequence[Setting], data_label: str, batch_size: int) -> str:
    """The report: one table of numbers per setting, one of remedies, and the answer in words."""
    if not found:
        return "# Exercise 2\n\nNo complete configuration without a remedy: nothing to answer yet.\n"
    seeds, epochs = found[0].seeds, found[0].epochs
    lines = [f"# Exercise 2 on {data_label}: why test accuracy falls again, and what fixes it", "",
             f"{epochs} epochs at batch size {batch_size}, {seeds} seeds per configuration; +- is the 95% "
             "confidence interval over seeds. Accuracy differences are in points (1 point = 0.01).",
             "Gap: training accuracy (the model on its training images at the epoch's end) minus test "
             "accuracy. Best epoch: the epoch with the best validation accuracy.", "",
             "Peak and fall are read off the seeds' mean test accuracy; 'one run' is each seed from its "
             "own best epoch to its last, the fall a single run shows.", "",
             "| training images | lr | mean test accuracy peaks at epoch | peak | last epoch | fall, peak to last "
             "| one run: own peak to last | gap at best epoch | gap at last epoch |",
             "|---|---|---|---|---|---|---|---|---|"]
    for s in found:
        lines.append(f"| {s.train_size} | {s.lr:g} | {s.peak_epoch} | {s.peak:.4f} | {s.last:.4f} | "
                     f"{_points(s.fall)} | {_points(s.single_fall)} | {_points(s.gap_best)} | "
                     f"{_points(s.gap_last)} |")
    remedies = sorted({r for s in found for r in s.recovered}, key=list(REMEDY_LABELS).index)
    if remedies:
        lines += ["", "Points of final test accuracy each remedy recovers against no remedy, same seeds "
                      "(the final model: the last epoch's, or the restored best epoch's with early stopping):", "",
                  "| training images | lr | " + " | ".join(REMEDY_LABELS[r] for r in remedies) + " |",
                  "|---|---|" + "---|" * len(remedies)]
        for s in found:
            cells = [_points(s.recovered[r]) if r in s.recovered else "" for r in remedies]
            lines.append(f"| {s.train_size} | {s.lr:g} | " + " | ".join(cells) + " |")
    lines += ["", "## Answer", ""]
    for s in found:
        where = f"With {s.train_size} training images at lr {s.lr:g}"
        if s.falls:
            lines.append(f"- {where}, test accuracy peaks at epoch {s.peak_epoch} ({s.peak:.4f}) and falls "
                         f"{_points(s.fall).lstrip('+')} points by epoch {s.epochs}, while the gap between training "
                         f"and test accuracy grows from {_points(s.gap_best)} to {_points(s.gap_last)} points: "
                         "the model keeps fitting its few training images and generalizes worse.")
        else:
            lines.append(f"- {where}, the data shows no fall: the seeds' mean test accuracy goes from its peak "
                         f"to the last epoch by {_points(s.fall)} points, within the noise over seeds. A single "
                         f"run still ends {_points(s.single_fall).lstrip('+')} points below its own best epoch: "
                         "its accuracy swings from epoch to epoch, and its best epoch is a lucky one.")
            if s.gap_grows:
                lines.append(f"  The model does overfit: the gap between training and test accuracy grows by "
                             f"{_points(s.gap_growth).lstrip('+')} points from the best epoch to the last, but test "
                             "accuracy holds instead of falling.")
        helped = {r: v for r, v in s.recovered.items() if v[0] > 0 and (math.isnan(v[1]) or v[0] - v[1] > 0)}
        if helped:
            best = max(helped, key=lambda r: helped[r][0])
            lines.append(f"  Best remedy here: {REMEDY_LABELS[best]}, {_points(helped[best])} points of final "
                         "test accuracy.")
        elif s.recovered:
            lines.append("  No remedy recovers accuracy here beyond the noise over seeds.")
    return "\n".join(lines) + "\n"


def plot_curves_by_size(configs: Sequence[Config], data_label: str, path: Path) -> Path:
    """Test (solid) and training (dashed) accuracy against epoch without a remedy, one panel per
    training-set size, one colour per lr; the band spans the seeds, a dot marks the test peak."""
    base = [c for c in configs if c.remedy == "none"]
    sizes = sorted({c.train_size for c in base})
    figure, axes = plt.subplots(1, len(sizes), figsize=(6 * len(sizes), 4.5), squeeze=False)
    for ax, size in zip(axes[0], sizes):
        here = sorted((c for c in base if c.train_size == size), key=lambda c: c.lr)
        for colour, c in zip(plt.cm.tab10.colors, here):
            _band(ax, c, "test_acc", colour, f"test, lr {c.lr:g}")
            ax.plot(_epochs(c.mean("train_eval_acc")), c.mean("train_eval_acc"), "--", color=colour, linewidth=1,
                    label=f"train, lr {c.lr:g}")
            peak = int(np.argmax(c.mean("test_acc")))
            ax.plot(peak + 1, c.mean("test_acc")[peak], "o", color=colour, markersize=7)
        ax.set_title(f"{data_label}, {size} training images, {len(base[0].seeds)} seeds")
        ax.set_xlabel("epoch")
        ax.set_ylabel("accuracy")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, loc="lower right")
    figure.subplots_adjust(left=0.06, right=0.98, bottom=0.12, top=0.9, wspace=0.18)
    return _save(figure, path)


def plot_remedies(configs: Sequence[Config], data_label: str, path: Path) -> Path:
    """Mean test accuracy against epoch for each remedy beside no remedy (its seeds' range shaded),
    one panel per setting: a row per training-set size, a column per lr."""
    sizes, lrs = sorted({c.train_size for c in configs}), sorted({c.lr for c in configs})
    figure, axes = plt.subplots(len(sizes), len(lrs), figsize=(6 * len(lrs), 3.8 * len(sizes)), squeeze=False)
    for row, size in zip(axes, sizes):
        for ax, lr in zip(row, lrs):
            here = {c.remedy: c for c in configs if (c.train_size, c.lr) == (size, lr)}
            for colour, remedy in zip(plt.cm.tab10.colors, REMEDY_LABELS):
                if remedy not in here:
                    continue
                if remedy == "none":
                    _band(ax, here[remedy], "test_acc", "black", REMEDY_LABELS[remedy], width=2)
                else:
                    mean = here[remedy].mean("test_acc")
                    ax.plot(_epochs(mean), mean, color=colour, linewidth=1.3, label=REMEDY_LABELS[remedy])
            ax.set_title(f"{data_label}, {size} training images, lr {lr:g}, {len(configs[0].seeds)} seeds",
                         fontsize=10)
            ax.set_xlabel("epoch")
            ax.set_ylabel("test accuracy")
            ax.grid(alpha=0.3)
            ax.legend(fontsize=8, loc="lower right")
    figure.subplots_adjust(left=0.07, right=0.98, bottom=0.08, top=0.94, wspace=0.2, hspace=0.35)
    return _save(figure, path)


def _epochs(values: np.ndarray) -> np.ndarray:
    return np.arange(1, len(values) + 1)


def _band(ax, config: Config, metric: str, colour, label: str, width: float = 1.6) -> None:
    length = min(len(s[metric]) for s in config.seeds)
    runs = np.array([s[metric][:length] for s in config.seeds])
    epochs = _epochs(runs[0])
    ax.fill_between(epochs, runs.min(axis=0), runs.max(axis=0), color=colour, alpha=0.18, linewidth=0)
    ax.plot(epochs, runs.mean(axis=0), color=colour, linewidth=width, label=label)


def _save(figure, path: Path) -> Path:
    figure.savefig(path, dpi=90, pil_kwargs={"compress_level": 1})
    plt.close(figure)
    return path
