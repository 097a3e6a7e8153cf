"""Figures: the chapter's accuracy and loss curves against epoch."""
from __future__ import annotations

import functools
import threading
from collections.abc import Sequence
from pathlib import Path

from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

SPLIT_STYLES = {"train": ("-", "C0"), "val": ("--", "C1"), "test": (":", "C2")}
_drawing = threading.Lock()  # the one figure: a stack's runs end in their own threads


@functools.cache
def _figure() -> tuple[Figure, tuple[Axes, Axes]]:
    """One figure for every run's curves, drawn again with each run's lines: a figure made
    anew cost more than its drawing (a 16-run grid's runs end one after another: about 56 -> 38 ms each)."""
    fig = Figure(figsize=(10, 4.4))
    FigureCanvasAgg(fig)
    acc_ax, loss_ax = fig.subplots(1, 2)
    fig.subplots_adjust(left=0.07, right=0.98, bottom=0.22, top=0.88, wspace=0.22)
    for ax, label in ((acc_ax, "accuracy"), (loss_ax, "loss")):
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # epochs are whole numbers
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
    return fig, (acc_ax, loss_ax)


def _draw(fig: Figure, axes: tuple[Axes, Axes], history: Sequence[dict[str, float]], best_epoch: int,
          title: str) -> None:
    """Accuracy and loss of train/val/test against epoch, each on one set of axes; a grey line
    marks the best epoch."""
    epochs = range(1, len(history) + 1)
    marker = "." if len(history) <= 40 else None
    for ax, kind in zip(axes, ("acc", "loss")):
        for line in list(ax.lines):
            line.remove()
        for split, (style, color) in SPLIT_STYLES.items():
            if f"{split}_{kind}" in history[0]:
                ax.plot(epochs, [m[f"{split}_{kind}"] for m in history], style, color=color, marker=marker,
                        label=split)
        if best_epoch:
            ax.axvline(best_epoch, color="grey", linewidth=0.8, label=f"best epoch ({best_epoch})")
        ax.relim()
        ax.autoscale_view()
    for legend in list(fig.legends):
        legend.remove()
    # one legend for both panels, below them: inside a panel it covered the curves
    fig.legend(*axes[0].get_legend_handles_labels(), loc="lower center", ncol=4, frameon=False)
    fig.suptitle(title)


def plot_curves(history: Sequence[dict[str, float]], path: Path, best_epoch: int = 0, title: str = "") -> Path:
    with _drawing:
        fig, axes = _figure()
        _draw(fig, axes, history, best_epoch, title)
        # light PNG compression: every trial of a sweep draws one, and the default level took a
        # third of the time
        fig.savefig(path, dpi=90, pil_kwargs={"compress_level": 1})
    return path
