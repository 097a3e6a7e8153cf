"""The sweep report: figures a person would rather look at than read, and trials.csv."""
from __future__ import annotations

import logging
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib
import matplotlib.ticker

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import optuna  # noqa: E402
from optuna.trial import TrialState  # noqa: E402

from optuna_pruning.search_space import SearchSpace  # noqa: E402
from optuna_pruning.studies import best_so_far  # noqa: E402

log = logging.getLogger("softmax_sweep.sweep")
STATE_STYLE = {TrialState.COMPLETE: ("-", 0.9), TrialState.PRUNED: (":", 0.6), TrialState.FAIL: ("--", 0.4)}
# Fixed margins instead of a layout engine, and light PNG compression: a layout pass and the
# default compression took more than half of the report's time, which every sweep waits for.
DEFAULT_MARGINS = {"left": 0.08, "right": 0.97, "bottom": 0.11, "top": 0.91}
MARGINS = {"optimization_history.png": DEFAULT_MARGINS, "val_curves.png": {**DEFAULT_MARGINS, "top": 0.87}}


Curves = Mapping[int, Sequence[tuple[int, float]]]  # trial number -> (epoch, value) as MLflow logged them


def write_report(study: optuna.Study, space: SearchSpace, folder: Path, curves: Curves,
                 gaps: Mapping[int, float], metric: str = "val_acc", title: str = "") -> list[Path]:
    """Write every figure that the study's trials allow, plus trials.csv; return the files.
    curves and gaps (train_eval_acc - val_acc at the best epoch of complete trials) come from the
    trials' MLflow runs."""
    trials = study.get_trials(deepcopy=False)
    written = []
    study.trials_dataframe().to_csv(folder / "trials.csv", index=False)
    written.append(folder / "trials.csv")
    title = f", {title}" if title else ""
    for name, figure in (("val_curves.png", _val_curves(trials, study.direction, curves, metric, title)),
                         ("overfitting_map.png", _overfitting_map(trials, space, gaps, title))):
        if _save(figure, folder / name):
            written.append(folder / name)
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    if _save(_optimization_history(trials, study.direction, metric, title), folder / "optimization_history.png"):
        written.append(folder / "optimization_history.png")
    names = [n for n in space.distributions if any(n in t.params for t in complete)]
    for name, draw in (("parallel_coordinates.png", _parallel_coordinates), ("param_importances.png", _importances)):
        try:
            figure = draw(complete, names, space, study.direction, metric, title)
        except Exception as e:  # noqa: BLE001 - e.g. importances of a parameter that never varied
            log.warning("sweep report: %s skipped: %s", name, e)
            continue
        if _save(figure, folder / name):
            written.append(folder / name)
    return written


# below this many complete trials importances are said to be a rough guide
IMPORTANCE_MIN_TRIALS = 20
BOOTSTRAPS = 20


def _importances(complete, names, space: SearchSpace, direction, metric: str, title: str = ""):
    """Optuna's fANOVA importances of the complete trials, with the range they take over bootstrap
    resamples of those trials (5th to 95th percentile): with 25 trials two studies of one search
    space can rank the parameters differently, and the bars say how far to trust the ranking."""
    if len(complete) < 2 or len(names) < 2:  # one parameter's importance is 1 by definition
        return None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        found = optuna.importance.get_param_importances(_study_of(complete, direction), params=names)
        rng = np.random.default_rng(0)
        resampled = []
        for _ in range(BOOTSTRAPS):
            sample = [complete[i] for i in rng.integers(0, len(complete), len(complete))]
            try:
                got = optuna.importance.get_param_importances(_study_of(sample, direction), params=names)
            except (RuntimeError, ValueError):  # a resample in which a parameter never varies
                continue
            resampled.append([got.get(n, 0.0) for n in found])
    order = list(found)[::-1]  # the most important at the top
    values = [found[n] for n in order]
    figure, ax = plt.subplots(figsize=(9, 1.6 + 0.55 * len(order)))
    figure.subplots_adjust(left=0.16, right=0.97, bottom=0.5 / (1.6 + 0.55 * len(order)) + 0.12, top=0.76)
    ax.barh(order, values, color="tab:blue", alpha=0.8, label="importance (all complete trials)")
    if len(resampled) >= 10:
        spread = np.percentile(np.array(resampled), [5, 95], axis=0)[:, ::-1]
        errors = [np.clip(np.array(values) - spread[0], 0, None), np.clip(spread[1] - np.array(values), 0, None)]
        ax.errorbar(values, order, xerr=errors, fmt="none", ecolor="black", capsize=4,
                    label=f"5th-95th percentile over {len(resampled)} bootstrap resamples")
    for y, value in enumerate(values):
        ax.text(value, y, f"  {value:.2f}", va="center", fontsize=9)
    ax.set_xlim(0, 1.08)
    ax.set_xlabel(f"share of the variance of {metric} (fANOVA)")
    ax.grid(alpha=0.3, axis="x")
    ax.legend(fontsize=8, loc="lower right")
    caveat = " (few trials: a rough guide)" if len(complete) < IMPORTANCE_MIN_TRIALS else ""
    ax.set_title(f"{title.lstrip(', ')}\nhyperparameter importances from {len(complete)} complete trials{caveat}",
                 fontsize=10)
    return figure


def _study_of(trials, direction) -> optuna.Study:
    """An in-memory study of these trials, created without Optuna's "A new study created" line."""
    level = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        study = optuna.create_study(direction=direction)
    finally:
        optuna.logging.set_verbosity(level)
    study.add_trials(trials)
    return study


def _parallel_coordinates(complete, names, space: SearchSpace, direction, metric: str, title: str = ""):
    """One line per complete trial through an axis per parameter (log axes for log ranges,
    labelled in plain numbers) and the objective; the colour scale spans the 5th to 95th percentile
    of the objective, so one diverged trial does not wash out the others."""
    if not complete or not names:
        return None
    values = np.array([t.value for t in complete], dtype=float)
    low, high = np.nanpercentile(values, [5, 95]) if len(values) > 2 else (values.min(), values.max())
    axes_ticks, columns = [], []
    for name in names:
        dist = space.distributions[name]
        raw = [t.params.get(name) for t in complete]
        if isinstance(dist, optuna.distributions.CategoricalDistribution):
            choices = [c for c in dist.choices if c in raw] or list(dist.choices)
            positions = {c: i / max(len(choices) - 1, 1) for i, c in enumerate(choices)}
            columns.append([positions.get(v, np.nan) for v in raw])
            axes_ticks.append(([positions[c] for c in choices], [str(c) for c in choices]))
            continue
        scale = np.log10 if getattr(dist, "log", False) else (lambda x: np.asarray(x, dtype=float))
        lo, hi = scale(dist.low), scale(dist.high)
        span = hi - lo if hi > lo else 1.0  # a range of one value (range(5, 6)): its axis is flat
        columns.append([(scale(v) - lo) / span if v is not None else np.nan for v in raw])
        ticks = np.linspace(lo, hi, 5)
        shown = 10 ** ticks if getattr(dist, "log", False) else ticks
        axes_ticks.append((list(np.linspace(0, 1, 5)), [f"{v:.3g}" for v in shown]))
    objective = (values - values.min()) / (values.max() - values.min()) if values.max() > values.min() \
        else np.full(len(values), 0.5)
    columns.append(list(objective))
    axes_ticks.append((list(np.linspace(0, 1, 5)), [f"{v:.3g}" for v in np.linspace(values.min(), values.max(), 5)]))
    figure, ax = plt.subplots(figsize=(9, 5))
    figure.subplots_adjust(left=0.08, right=0.86, bottom=0.12, top=0.88)
    cmap = plt.get_cmap("viridis_r" if direction == optuna.study.StudyDirection.MINIMIZE else "viridis")
    norm = matplotlib.colors.Normalize(vmin=low, vmax=high if high > low else low + 1e-9, clip=True)
    xs = np.arange(len(columns))
    for i in np.argsort(-values if direction == optuna.study.StudyDirection.MINIMIZE else values):
        ax.plot(xs, [c[i] for c in columns], color=cmap(norm(values[i])), linewidth=1.2, alpha=0.85)
    for x, (positions, labels) in zip(xs, axes_ticks):
        ax.axvline(x, color="black", linewidth=0.8)
        for y, label in zip(positions, labels):
            ax.text(x + 0.03, y, label, fontsize=8, va="center")
    ax.set_xticks(xs, [*names, metric])
    ax.set_yticks([])
    ax.set_xlim(-0.1, len(columns) - 0.6)
    ax.set_ylim(-0.05, 1.05)
    for side in ("top", "right", "left"):
        ax.spines[side].set_visible(False)
    bar = figure.colorbar(matplotlib.cm.ScalarMappable(norm=norm, cmap=cmap), ax=ax, pad=0.02)
    bar.set_label(f"{metric} (5th-95th percentile; beyond: end colours)")
    ax.set_title(f"parallel coordinates of {len(complete)} complete trials{title}", fontsize=10)
    return figure


def _optimization_history(trials, direction, metric: str, title: str = ""):
    """Every finished trial's value by trial number, pruned ones at the value they were stopped at,
    and the best value so far (Optuna's own plot leaves pruned trials out)."""
    complete = [t for t in trials if t.state == TrialState.COMPLETE and t.value is not None]
    pruned = [t for t in trials if t.state == TrialState.PRUNED and t.intermediate_values]
    if not complete and not pruned:
        return None
    figure, ax = plt.subplots(figsize=(9, 5))
    figure.subplots_adjust(**MARGINS["optimization_history.png"])
    if complete:
        ax.plot([t.number for t in complete], [t.value for t in complete], "o", color="tab:blue",
                label="complete trial")
        numbers, steps = zip(*best_so_far(complete, direction))
        ax.step(numbers, steps, where="post", color="tab:red", label="best so far")
    if pruned:
        ax.plot([t.number for t in pruned], [t.intermediate_values[max(t.intermediate_values)] for t in pruned],
                "x", color="tab:grey", label="pruned trial (value when stopped)")
    ax.set_xlabel("trial")
    ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
    ax.set_ylabel(metric)
    ax.set_title(f"optimization history{title}", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend()
    return figure


def _save(figure, path: Path) -> bool:
    if figure is None:
        return False
    figure.savefig(path, dpi=90, pil_kwargs={"compress_level": 1})
    plt.close(figure)
    return True


def _val_curves(trials, direction, curves: Curves, metric: str, title: str = ""):
    """The validation metric against epoch for every trial in one figure, the best one in black.
    A loss axis stops a little above most curves: one diverging trial would flatten the rest."""
    drawn = [t for t in trials if curves.get(t.number)]
    if not drawn:
        return None
    figure, ax = plt.subplots(figsize=(9, 5))
    figure.subplots_adjust(**MARGINS["val_curves.png"])
    for t in drawn:
        style, alpha = STATE_STYLE.get(t.state, ("-", 0.5))
        epochs, values = zip(*curves[t.number])
        (line,) = ax.plot(epochs, values, style, alpha=alpha, linewidth=1)
        if t.state != TrialState.COMPLETE:  # where it stopped (a trial pruned after one epoch has no line)
            ax.plot(epochs[-1:], values[-1:], "x", color=line.get_color(), alpha=alpha)
    complete = [t for t in drawn if t.state == TrialState.COMPLETE and t.value is not None]
    pick = min if direction == optuna.study.StudyDirection.MINIMIZE else max
    best = pick(complete, key=lambda t: t.value, default=None)
    if best is not None:
        epochs, values = zip(*curves[best.number])
        ax.plot(epochs, values, color="black", linewidth=2, label=f"best (trial {best.number})")
        ax.legend()
    label = metric
    if direction == optuna.study.StudyDirection.MINIMIZE:
        finite = np.array([v for t in drawn for _, v in curves[t.number] if np.isfinite(v)])
        top = float(np.quantile(finite, 0.9)) if finite.size else None
        if top is not None and finite.max() > 1.5 * top:
            ax.set_ylim(finite.min() - 0.05 * (top - finite.min()), top * 1.2)
            label = f"{metric} (cut at {top * 1.2:.2f})"
    ax.set_xlabel("epoch")
    ax.set_ylabel(label)
    ax.set_title(f"{title.lstrip(', ')}\nall trials (solid: complete; dotted, ending in x: pruned; dashed, "
                 "ending in x: failed)", fontsize=10)
    ax.grid(alpha=0.3)
    return figure


def _overfitting_map(trials, space: SearchSpace, gaps: Mapping[int, float], title: str = ""):
    """Generalization gap (training minus validation accuracy at the best epoch) against each swept
    parameter; only complete trials: pruned and diverged ones have no meaningful gap."""
    rows = [t for t in trials if t.number in gaps]
    names = [n for n in space.distributions if any(n in t.params for t in rows)]
    if not rows or not names:
        return None
    width = 4 * len(names) + 1  # inches: 4 per parameter and 1 for the colour bar
    figure, axes = plt.subplots(1, len(names), figsize=(width, 4), squeeze=False)
    figure.subplots_adjust(left=1 / width, right=0.97, bottom=0.24, top=0.86, wspace=0.35)
    for ax, name in zip(axes[0], names):
        points = [(t.params[name], gaps[t.number], t.value if t.value is not None else float("nan"))
                  for t in rows if name in t.params]
        xs, ys, values = zip(*points)
        dist = space.distributions[name]
        if isinstance(dist, optuna.distributions.CategoricalDistribution):  # evenly spaced, in their order
            positions = {c: i for i, c in enumerate(c for c in dist.choices if c in xs)}
            scatter = ax.scatter([positions[x] for x in xs], ys, c=values, cmap="viridis")
            ax.set_xticks(list(positions.values()), [str(c) for c in positions], rotation=30, ha="right",
                          fontsize=8)
        else:
            scatter = ax.scatter(xs, ys, c=values, cmap="viridis")
            if getattr(dist, "log", False):
                ax.set_xscale("log")
        ax.axhline(0, color="grey", linewidth=0.8)
        ax.set_xlabel(name)
        ax.set_ylabel("train - val accuracy at the best epoch")
    figure.colorbar(scatter, ax=axes[0].tolist(), label="objective")
    figure.suptitle(f"overfitting map{title}: where training accuracy runs away from validation "
                    "(complete trials)")
    return figure
