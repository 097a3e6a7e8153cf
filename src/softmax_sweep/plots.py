"""Figures: the chapter's accuracy and loss curves against epoch."""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

SPLIT_STYLES = {"train": "-", "val": "--", "test": ":"}


def plot_curves(history: Sequence[dict[str, float]], path: Path, best_epoch: int = 0, title: str = "") -> Path:
    """Accuracy and loss of train/val/test against epoch; a grey line marks the best epoch."""
    epochs = range(1, len(history) + 1)
    fig, (acc_ax, loss_ax) = plt.subplots(1, 2, figsize=(10, 4.4), layout="constrained")
    for ax, kind in ((acc_ax, "acc"), (loss_ax, "loss")):
        for split, style in SPLIT_STYLES.items():
            if f"{split}_{kind}" not in history[0]:
                continue
            ax.plot(epochs, [m[f"{split}_{kind}"] for m in history], style, marker=".", label=split)
        if best_epoch:
            ax.axvline(best_epoch, color="grey", linewidth=0.8, label=f"best epoch ({best_epoch})")
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # epochs are whole numbers
        ax.set_ylabel("accuracy" if kind == "acc" else "loss")
        ax.grid(alpha=0.3)
    # one legend for both panels, below them: inside a panel it covered the curves
    fig.legend(*acc_ax.get_legend_handles_labels(), loc="outside lower center", ncol=4, frameon=False)
    if title:
        fig.suptitle(title)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
