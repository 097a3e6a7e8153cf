"""Exercise 2's figures: the curves by training-set size, and what each remedy recovers."""
from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from softmax_sweep.sweeping.answer import Config, remedy_order  # noqa: E402


def plot_curves_by_size(configs: Sequence[Config], data_label: str, path: Path) -> Path:
    """Without a remedy, one column per training-set size: accuracy (top) and loss (bottom), test
    solid and training dashed, one colour per lr (and batch); the band spans the seeds, a dot marks
    the test accuracy's peak and the test loss's low."""
    base = [c for c in configs if c.remedy == "none"]
    sizes = sorted({c.train_size for c in base})
    figure, axes = plt.subplots(2, len(sizes), figsize=(5.2 * len(sizes), 7.5), squeeze=False)
    for column, size in enumerate(sizes):
        here = sorted((c for c in base if c.train_size == size), key=lambda c: (c.lr, c.batch_size))
        for row, (metric, train_metric, pick) in enumerate((("test_acc", "train_eval_acc", np.argmax),
                                                            ("test_loss", "train_eval_loss", np.argmin))):
            ax = axes[row][column]
            for colour, c in zip(plt.cm.tab10.colors, here):
                tag = f"lr {c.lr:g}" + (f", batch {c.batch_size}" if c.batch_size != 32 else "")
                _band(ax, c, metric, colour, f"test, {tag}")
                ax.plot(_epochs(c.mean(train_metric)), c.mean(train_metric), "--", color=colour, linewidth=1,
                        label=f"train, {tag}")
                mark = int(pick(c.mean(metric)))
                ax.plot(mark + 1, c.mean(metric)[mark], "o", color=colour, markersize=7)
            if row == 1:  # the first epochs at a large lr would squash every curve to the bottom
                settled = np.concatenate([c.mean(m)[2:] for c in here for m in (metric, train_metric)])
                if settled.size:
                    ax.set_ylim(0, 1.25 * float(np.max(settled)))
            ax.set_xlabel("epoch")
            ax.set_ylabel("accuracy" if row == 0 else "loss (from epoch 3 on in view)")
            ax.grid(alpha=0.3)
            ax.legend(fontsize=7, loc="lower right" if row == 0 else "upper left")
            if row == 0:
                ax.set_title(f"{size} training images, no remedy", fontsize=10)
    figure.suptitle(f"{data_label}, {len(base[0].seeds)} seeds: test (solid, band over seeds) and training "
                    "(dashed); dots: test accuracy's peak, test loss's low", fontsize=10)
    figure.subplots_adjust(left=0.06, right=0.98, bottom=0.07, top=0.91, wspace=0.2, hspace=0.25)
    return _save(figure, path)


def plot_remedies(configs: Sequence[Config], data_label: str, path: Path) -> Path:
    """Mean test accuracy against epoch for each remedy beside no remedy (its seeds' range shaded),
    one panel per (training-set size, lr) that has remedies. Early stopping's runs end where they
    stop; a cross marks the restored model's mean test accuracy at their mean stopping epoch."""
    settings_ = sorted({c.setting for c in configs if c.remedy != "none"})
    if not settings_:
        settings_ = sorted({c.setting for c in configs})
    columns = min(len(settings_), 2)
    rows = math.ceil(len(settings_) / columns)
    figure, axes = plt.subplots(rows, columns, figsize=(6.5 * columns, 4.2 * rows), squeeze=False)
    for ax, setting in zip(axes.flat, settings_):
        here = sorted((c for c in configs if c.setting == setting), key=lambda c: remedy_order(c.remedy))
        for colour, c in zip(plt.cm.tab10.colors, here):
            if c.remedy == "none":
                _band(ax, c, "test_acc", "black", "no remedy", width=2.2, band_label="no remedy: range over seeds")
            elif c.remedy == "early_stopping":
                mean = c.mean("test_acc")  # up to the seed that stopped first; later epochs differ in count
                ax.plot(_epochs(mean), mean, "--", color=colour, linewidth=1.8, zorder=3, label=c.label)
                stop = np.mean([len(s["test_acc"]) for s in c.seeds])
                ax.plot(stop, np.mean(c.final_test()), "X", color=colour, markersize=10, zorder=4,
                        label="early stopping: restored model")
            else:
                mean = c.mean("test_acc")
                ax.plot(_epochs(mean), mean, color=colour, linewidth=1.3, zorder=2, label=c.label)
        size, lr, _ = setting
        ax.set_title(f"{size} training images, lr {lr:g}", fontsize=10)
        ax.set_xlabel("epoch")
        ax.set_ylabel("test accuracy")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="lower right", ncol=2)
    for ax in list(axes.flat)[len(settings_):]:
        ax.set_visible(False)
    figure.suptitle(f"{data_label}, {len(configs[0].seeds)} seeds: mean test accuracy with each remedy",
                    fontsize=10)
    figure.subplots_adjust(left=0.07, right=0.98, bottom=0.07, top=0.92, wspace=0.2, hspace=0.35)
    return _save(figure, path)


def _epochs(values: np.ndarray) -> np.ndarray:
    return np.arange(1, len(values) + 1)


def _band(ax, config: Config, metric: str, colour, label: str, width: float = 1.6, band_label=None) -> None:
    length = min(len(s[metric]) for s in config.seeds)
    runs = np.array([s[metric][:length] for s in config.seeds])
    epochs = _epochs(runs[0])
    ax.fill_between(epochs, runs.min(axis=0), runs.max(axis=0), color=colour, alpha=0.18, linewidth=0,
                    label=band_label)
    ax.plot(epochs, runs.mean(axis=0), color=colour, linewidth=width, label=label)


def _save(figure, path: Path) -> Path:
    figure.savefig(path, dpi=90, pil_kwargs={"compress_level": 1})
    plt.close(figure)
    return path
