"""Figures: the chapter's accuracy and loss curves against epoch."""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

SPLIT_STYLES = {"train": "-", "val": "--", "test": ":"}


def curves_figure(history: Sequence[dict[str, float]], best_epoch: int = 0, title: str = "") -> Figure:
    """Accuracy and loss of train/val/test against epoch, each on one set of axes; a grey line
    marks the best epoch. Fixed margins and no pyplot: every trial of a sweep draws one."""
    epochs = range(1, len(history) + 1)
    fig = Figure(figsize=(10, 4.4))
    FigureCanvasAgg(fig)
    acc_ax, loss_ax = fig.subplots(1, 2)
    fig.subplots_adjust(left=0.07, right=0.98, bottom=0.22, top=0.88, wspace=0.22)
    marker = "." if len(history) <= 40 else None
    for ax, kind in ((acc_ax, "acc"), (loss_ax, "loss")):
        for split, style in SPLIT_STYLES.items():
            if f"{split}_{kind}" not in history[0]:
                continue
            ax.plot(epochs, [m[f"{split}_{kind}"] for m in history], style, marker=marker, label=split)
        if best_epoch:
            ax.axvline(best_epoch, color="grey", linewidth=0.8, label=f"best epoch ({best_epoch})")
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # epochs are whole numbers
        ax.set_ylabel("accuracy" if kind == "acc" else "loss")
        ax.grid(alpha=0.3)
    # one legend for both panels, below them: inside a panel it covered the curves
    fig.legend(*acc_ax.get_legend_handles_labels(), loc="lower center", ncol=4, frameon=False)
    if title:
        fig.suptitle(title)
    return fig


def plot_curves(history: Sequence[dict[str, float]], path: Path, best_epoch: int = 0, title: str = "") -> Path:
    # light PNG compression: every trial of a sweep draws one, and the default level took a third
    # of the time
    curves_figure(history, best_epoch, title).savefig(path, dpi=90, pil_kwargs={"compress_level": 1})
    return path
