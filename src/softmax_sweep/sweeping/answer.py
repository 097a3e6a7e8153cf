"""Exercise 2's answer from a controlled study (training-set size x lr x remedy, several seeds,
beside the chapter's own setting and a larger batch): why test accuracy falls again, what shows it
(the test loss before the accuracy), and what each remedy at each strength recovers, in numbers
(answer.md, the conclusion first) and figures."""
from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import optuna  # noqa: E402
from optuna.trial import TrialState  # noqa: E402

from softmax_sweep.stats import mean_ci  # noqa: E402

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


def _significant(value: Interval) -> int:
    """+1 above zero, -1 below, 0 within the noise over seeds."""
    mean, half = value
    if math.isnan(half) or abs(mean) <= half:
        return 0
    return 1 if mean > 0 else -1


def load_configs(study: optuna.Study, histories: Histories,
                 run_params: Mapping[str, Mapping[str, str]] = {}) -> list[Config]:
    """The study's complete configurations; run_params (seed run id -> its MLflow params) give the
    batch size and weight decay each trained with, where the trial's params do not."""
    configs = []
    for trial in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        if not all(k in trial.params for k in KEYS):
            continue
        ids = trial.user_attrs.get("seed_run_ids", [trial.user_attrs.get("mlflow_run_id")])
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
                     for remedy, c in sorted(remedies.items(), key=lambda kv: _order(kv[0]))
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


def _order(remedy: str) -> int:
    return REMEDIES.index(remedy) if remedy in REMEDIES else len(REMEDIES)


def _points(value: Interval, sign: bool = True) -> str:
    mean, half = value
    text = f"{100 * mean:+.2f}" if sign else f"{100 * abs(mean):.2f}"
    return text + ("" if math.isnan(half) else f" +- {100 * half:.2f}")


def _roles(found: Sequence[Setting]) -> tuple[list[Setting], Setting | None, Setting | None]:
    """(the study's small-data settings at batch 32, the reference with every training image,
    the larger-batch row)."""
    reference = max(found, key=lambda s: s.train_size) if len({s.train_size for s in found}) > 1 else None
    batch = next((s for s in found if s is not reference and s.batch_size != 32), None)
    study = [s for s in found if s is not reference and s is not batch]
    return study, reference, batch


def conclusion(found: Sequence[Setting]) -> list[str]:
    """The answer in a few sentences a student can repeat, each resting on the tables below it."""
    study, reference, batch = _roles(found)
    if not study:
        return []
    lines = []
    widest = max(study, key=lambda s: s.gap_growth[0])
    lines.append(
        f"**Test accuracy falls again because the model overfits its few training images.** With {widest.name}, "
        f"training accuracy reaches {widest.train_acc_last:.3f} by epoch {widest.epochs} while test accuracy ends at "
        f"{widest.last:.3f}: the gap between them grows by {_points(widest.gap_growth, False)} points after the "
        "best epoch.")
    lines.append(_loss_sentence(study))
    falling = [s for s in study if s.falls]
    single = max(study, key=lambda s: s.single_fall[0])
    lines.append(
        f"The seeds' mean test accuracy falls beyond the noise in {len(falling)} of {len(study)} settings"
        + (f" (at most {100 * max(s.fall[0] for s in falling):.2f} points)" if falling else "")
        + f"; a single run looks worse (with {single.name} it ends {_points(single.single_fall, False)} points "
        "below its own best epoch) because its accuracy swings from epoch to epoch and its best epoch is a lucky "
        "one. Judge a fall over several seeds.")
    lines.append(_remedy_sentence(study))
    if reference is not None:
        lines.append(
            f"**More data is the first remedy:** with every training image ({reference.train_size}, the chapter's "
            f"lr {reference.lr:g} and batch {reference.batch_size}) the gap ends at "
            f"{_points(reference.gap_last, False)} points and the test loss "
            f"{'rises' if reference.loss_rises else 'does not rise'} ({_signed(reference.loss_rise)}).")
    if batch is not None:
        same = next((s for s in study if s.train_size == batch.train_size
                     and math.isclose(s.lr / 32, batch.lr / batch.batch_size)), None)
        if same is not None:
            lines.append(
                f"**Batch size:** the noise of an SGD step grows with lr / batch_size. At batch {batch.batch_size} "
                f"and lr {batch.lr:g} (the same ratio as lr {same.lr:g} at batch 32, {batch.batch_size // 32}x fewer "
                f"steps per epoch) test accuracy ends at {batch.last:.3f} against {same.last:.3f}, swinging "
                f"{100 * batch.swing:.2f} points from epoch to epoch against {100 * same.swing:.2f}, and the gap "
                f"ends at {_points(batch.gap_last, False)} against {_points(same.gap_last, False)} points.")
    return lines


def _loss_sentence(study: Sequence[Setting]) -> str:
    """Where the test loss runs away from the training loss while accuracy hardly moves, and
    whether it turns up again within the run."""
    top = max(study, key=lambda s: s.loss_last - s.train_loss_last)
    calm = min((s for s in study if s.train_size == top.train_size and s is not top),
               key=lambda s: s.loss_last, default=None)
    text = (f"**Watch the test loss, not only the accuracy.** With {top.name} the test loss ends at "
            f"{top.loss_last:.2f} against {top.train_loss_last:.2f} on the training images")
    if calm is not None and calm.loss_last < top.loss_last:
        text += (f", and at {top.loss_last / calm.loss_last:.1f}x its value at lr {calm.lr:g} ({calm.loss_last:.2f}) "
                 f"while their test accuracies differ by {100 * abs(top.last - calm.last):.1f} points")
    text += (": the model has grown confident, also on the test images it gets wrong, which accuracy does not "
             "show. That is overfitting before it costs accuracy.")
    rising = [s for s in study if s.loss_rises]
    if rising:
        most = max(rising, key=lambda s: s.loss_rise[0])
        return text + (f" The test loss turns up again after its lowest epoch beyond the noise in {len(rising)} of "
                       f"{len(study)} settings (most with {most.name}: from {most.loss_low:.2f} at epoch "
                       f"{most.loss_low_epoch} to {most.loss_last:.2f}, {_signed(most.loss_rise)}).")
    return text + f" Within {study[0].epochs} epochs it turns up again beyond the noise in none of the settings."


def _signed(value: Interval) -> str:
    return f"{value[0]:+.2f}" + ("" if math.isnan(value[1]) else f" +- {value[1]:.2f}")


def _remedy_sentence(study: Sequence[Setting]) -> str:
    """Each remedy at each strength: in how many settings it helps or hurts beyond the noise."""
    labels = [label for s in study for label in s.recovered]
    labels = list(dict.fromkeys(labels))
    if not labels:
        return "No remedy was tried."
    parts = []
    for label in labels:
        values = [s.recovered[label] for s in study if label in s.recovered]
        helps = sum(_significant(v) > 0 for v in values)
        hurts = sum(_significant(v) < 0 for v in values)
        means = [100 * v[0] for v in values]
        verdict = (f"helps in {helps}" if helps else "helps in none") + (f", hurts in {hurts}" if hurts else "")
        parts.append(f"{label} {verdict} of {len(values)} ({min(means):+.2f} to {max(means):+.2f} points)")
    best = max(labels, key=lambda lb: sum(s.recovered[lb][0] for s in study if lb in s.recovered))
    return (f"**What fixes it, measured on the final model:** {'; '.join(parts)}. On average the best here is "
            f"{best}. A remedy's strength matters: too much weight decay underfits, too little does nothing.")


def answer_markdown(found: Sequence[Setting], data_label: str, num_epochs: int | None = None) -> str:
    """The answer first, then the evidence: one table per setting, one of remedies."""
    if not found:
        return "# Exercise 2\n\nNo complete configuration without a remedy: nothing to answer yet.\n"
    seeds, epochs = found[0].seeds, num_epochs or found[0].epochs
    lines = [f"# Exercise 2 on {data_label}: why test accuracy falls again, and what fixes it", "",
             *(f"{sentence}\n" for sentence in conclusion(found)),
             "## The evidence", "",
             f"{epochs} epochs, {seeds} seeds per configuration; +- is the 95% confidence interval over seeds. "
             "Accuracy differences are in points (1 point = 0.01). Gap: training accuracy (the model on its "
             "training images at the epoch's end) minus test accuracy; best epoch: the epoch with the best "
             "validation accuracy. Peak and lowest loss are read off the seeds' mean curves, the test loss averaged "
             f"over {loss_window(epochs)} epochs (each epoch and those before it); 'one run' is each seed from its own "
             "best epoch to its last, the fall a single run shows.", "",
             "| training images | lr | batch | test acc peaks at epoch | peak | last | fall, peak to last | one run: "
             "own peak to last | test loss lowest at epoch | lowest | last | rise | gap at best epoch | "
             "gap at last epoch |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for s in found:
        lines.append(f"| {s.train_size} | {s.lr:g} | {s.batch_size} | {s.peak_epoch} | {s.peak:.4f} | {s.last:.4f} | "
                     f"{_points(s.fall)} | {_points(s.single_fall)} | {s.loss_low_epoch} | {s.loss_low:.3f} | "
                     f"{s.loss_last:.3f} | {_signed(s.loss_rise)} | {_points(s.gap_best)} | {_points(s.gap_last)} |")
    labels = list(dict.fromkeys(label for s in found for label in s.recovered))
    if labels:
        lines += ["", "Points of final test accuracy each remedy recovers against no remedy, same seeds (the final "
                      "model: the last epoch's, or the restored best epoch's with early stopping); **bold**: beyond "
                      "the noise over seeds:", "",
                  "| training images | lr | " + " | ".join(labels) + " |", "|---|---|" + "---|" * len(labels)]
        for s in found:
            if s.recovered:
                cells = [_cell(s.recovered[lb]) if lb in s.recovered else "" for lb in labels]
                lines.append(f"| {s.train_size} | {s.lr:g} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _cell(value: Interval) -> str:
    return f"**{_points(value)}**" if _significant(value) else _points(value)


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
        here = sorted((c for c in configs if c.setting == setting), key=lambda c: _order(c.remedy))
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
