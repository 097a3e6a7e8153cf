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
from optuna.importance import PedAnovaImportanceEvaluator  # noqa: E402
from optuna.trial import TrialState  # noqa: E402

from optuna_pruning.search_space import SearchSpace  # noqa: E402
from optuna_pruning.studies import best_so_far  # noqa: E402

log = logging.getLogger("softmax_sweep.sweep")
STATE_STYLE = {TrialState.COMPLETE: ("-", 0.9), TrialState.PRUNED: (":", 0.6), TrialState.FAIL: ("--", 0.4)}
# Fixed margins instead of a layout engine, and light PNG compression: a layout pass and the
# default compression took more than half of the report's time, which every sweep waits for.
DEFAULT_MARGINS = {"left": 0.08, "right": 0.97, "bottom": 0.11, "top": 0.91}
MARGINS = {"param_importances.png": {**DEFAULT_MARGINS, "left": 0.16},
           "parallel_coordinates.png": {**DEFAULT_MARGINS, "left": 0.09, "right": 0.88, "bottom": 0.2}}
MARGINS.update({"optimization_history.png": DEFAULT_MARGINS, "val_curves.png": {**DEFAULT_MARGINS, "top": 0.87}})


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
    if len(complete) >= 1:
        for name, plot in (("parallel_coordinates.png", optuna.visualization.matplotlib.plot_parallel_coordinate),
                           ("param_importances.png", _importances)):
            if name == "param_importances.png" and (len(complete) < 2 or len(space.distributions) < 1):
                continue
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    ax = plot(study, evaluator=PedAnovaImportanceEvaluator()) if plot is _importances else plot(study)
                ax = ax.flat[0] if hasattr(ax, "flat") else ax
                figure = ax.figure
                figure.set_size_inches(9, 5)
                figure.subplots_adjust(**MARGINS[name])
                if name == "parallel_coordinates.png":
                    for lines in ax.collections:  # Optuna's Blues draws the lowest value white on grey
                        lines.set_cmap("viridis")
                else:
                    caveat = " (few trials: a rough guide)" if len(complete) < IMPORTANCE_MIN_TRIALS else ""
                    ax.set_title(f"hyperparameter importances from {len(complete)} complete trials{caveat}")
            except Exception as e:  # noqa: BLE001 - e.g. importances of a parameter that never varied
                log.warning("sweep report: %s skipped: %s", name, e)
                continue
            if _save(figure, folder / name):
                written.append(folder / name)
    return written


_importances = optuna.visualization.matplotlib.plot_param_importances
# below this many complete trials importances are said to be a rough guide
IMPORTANCE_MIN_TRIALS = 20


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
    figure.subplots_adjust(left=1 / width, right=0.97, bottom=0.13, top=0.86, wspace=0.35)
    for ax, name in zip(axes[0], names):
        points = [(t.params[name], gaps[t.number], t.value if t.value is not None else float("nan"))
                  for t in rows if name in t.params]
        xs, ys, values = zip(*points)
        numeric = all(isinstance(x, (int, float)) for x in xs)
        scatter = ax.scatter(xs if numeric else [str(x) for x in xs], ys, c=values, cmap="viridis")
        if getattr(space.distributions[name], "log", False):
            ax.set_xscale("log")
        if not numeric:
            ax.tick_params(axis="x", labelrotation=20)
        ax.axhline(0, color="grey", linewidth=0.8)
        ax.set_xlabel(name)
        ax.set_ylabel("train - val accuracy at the best epoch")
    figure.colorbar(scatter, ax=axes[0].tolist(), label="objective")
    figure.suptitle(f"overfitting map{title}: where training accuracy runs away from validation "
                    "(complete trials)")
    return figure
