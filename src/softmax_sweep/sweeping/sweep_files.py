"""The files a sweep's parent run gets at the end, read back from MLflow and the study: the sweep
report (figures, trials.csv), configurations.csv with seeds, and exercise 2's answer."""
from __future__ import annotations

import contextlib
import math
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Optional

import optuna
from mlflow.exceptions import MlflowException
from optuna.trial import TrialState

from optuna_pruning.search_space import SearchSpace
from softmax_sweep.data_names import data_label
from softmax_sweep.runlog import RunLogger
from softmax_sweep.sweeping import answer, answer_plots, answer_text
from softmax_sweep.sweeping.report import Curves, write_report


def write_report_files(parent: RunLogger, study: optuna.Study, space: SearchSpace, folder: Path, metric: str) -> None:
    write_report(study, space, folder, *from_mlflow(parent, study, metric), metric=metric,
                 title=report_title(parent, study))


def write_configurations(study: optuna.Study, path: Path) -> None:
    """With seeds: every complete configuration's mean and 95% confidence interval over its seeds."""
    import csv

    from softmax_sweep.stats import mean_ci

    rows = [t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)) if "seed_values" in t.user_attrs]
    if not rows:
        return
    names = sorted({k for t in rows for k in t.params})
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["trial", *names, "mean", "ci95", "seeds", "values"])
        for t in sorted(rows, key=lambda t: t.value, reverse=study.direction.name == "MAXIMIZE"):
            values = t.user_attrs["seed_values"]
            mean, half = mean_ci(values)
            writer.writerow([t.number, *(t.params.get(n, "") for n in names), f"{mean:.6f}", f"{half:.6f}",
                             len(values), " ".join(f"{v:.6f}" for v in values)])


def report_title(parent: RunLogger, study: optuna.Study) -> str:
    """What the trials trained on, as their runs recorded it: `Fashion-MNIST, 55000 training
    images, 3 seeds`."""
    sizes, seeds, tags = set(), 1, {}
    for trial in study.get_trials(deepcopy=False):
        run_ids = trial.user_attrs.get("seed_run_ids") or [trial.user_attrs.get("mlflow_run_id")]
        seeds = max(seeds, len(run_ids))
        if run_ids[0]:
            try:
                run = parent.client.get_run(run_ids[0])
            except MlflowException:
                continue
            tags = tags or run.data.tags
            sizes.add(run.data.tags.get("data.train_examples", ""))
    if not tags:
        return ""
    sizes.discard("")
    shown = "/".join(sorted(sizes, key=int)) if len(sizes) <= 4 else "various"
    label = data_label(tags.get("data.name", ""), tags.get("data.source", ""))
    return f"{label}, {shown} training images, {seeds} seed{'s' if seeds > 1 else ''}"


def write_answer(parent: RunLogger, study: optuna.Study, folder: Path) -> str:
    """Exercise 2's answer.md and figures, from the seed runs' curves and params in MLflow."""
    run_params, tags = {}, {}
    seed_runs = [[run_id for run_id in answer.seed_run_ids(trial) if run_id]
                 for trial in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))]
    for first in (ids[0] for ids in seed_runs if ids):  # the seeds of a trial share their settings
        with contextlib.suppress(MlflowException):  # a run in another tracking store
            run = parent.client.get_run(first)
            run_params[first], tags = run.data.params, tags or run.data.tags

    def curves(run_id: str) -> Optional[dict[str, list[float]]]:
        try:
            return {m: [x.value for x in sorted(parent.client.get_metric_history(run_id, m), key=lambda x: x.step)]
                    for m in answer.CURVES}
        except MlflowException:
            return None

    run_ids = [run_id for ids in seed_runs for run_id in ids]
    # two reads at a time: SQLite reads outside Python's lock (exercise 2's 1300 curves: 2.3 -> 1.6 s),
    # and a tracking server answers both
    pool = ThreadPoolExecutor(2)
    try:
        histories = {run_id: found for run_id, found in zip(run_ids, pool.map(curves, run_ids)) if found is not None}
    finally:  # Ctrl-C: the reads not yet started are dropped, not waited for
        pool.shutdown(cancel_futures=True)
    configs = answer.load_configs(study, histories, run_params)
    label = data_label(tags.get("data.name", ""), tags.get("data.source", ""))
    text = answer_text.answer_markdown(answer.settings(configs), label)
    (folder / "answer.md").write_text(text)
    if any(c.remedy == "none" for c in configs):
        answer_plots.plot_curves_by_size(configs, label, folder / "exercise2_curves.png")
    if configs:
        answer_plots.plot_remedies(configs, label, folder / "exercise2_remedies.png")
    return text


def from_mlflow(parent: RunLogger, study: optuna.Study, metric: str) -> tuple[Curves, dict[int, float]]:
    """Each trial's validation curve, and for complete trials that measured their training
    accuracy (eval_train) the gap train_eval_acc - val_acc at the best validation epoch."""
    curves, gaps = {}, {}
    for trial in study.get_trials(deepcopy=False):
        run_id = trial.user_attrs.get("mlflow_run_id")
        if not run_id:
            continue
        try:
            history = parent.client.get_metric_history(run_id, metric)
            train = (parent.client.get_metric_history(run_id, "train_eval_acc")
                     if trial.state == TrialState.COMPLETE else [])
            val = [] if not train else history if metric == "val_acc" else \
                parent.client.get_metric_history(run_id, "val_acc")
        except MlflowException:
            continue  # a run in another tracking store
        curves[trial.number] = sorted((m.step, m.value) for m in history)
        if train and val:
            best = max(val, key=lambda m: m.value)
            at_best = [m.value for m in train if m.step == best.step]
            if at_best and math.isfinite(at_best[0] - best.value):
                gaps[trial.number] = at_best[0] - best.value
    return curves, gaps


def seed_comparison(study: optuna.Study, best: optuna.trial.FrozenTrial) -> list[str]:
    """With seeds: the best configuration's mean and confidence interval, and whether it is really
    better than the runner-up (a paired t-test over the same seeds)."""
    from softmax_sweep.stats import mean_ci, paired_p_value

    if "seed_values" not in best.user_attrs:
        return []
    values = best.user_attrs["seed_values"]
    mean, half = mean_ci(values)
    line = f"best trial {best.number}: {mean:.4f} +- {half:.4f} (95% CI over {len(values)} seeds)"
    rivals = [t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
              if t.number != best.number and len(t.user_attrs.get("seed_values", ())) == len(values)]
    if not rivals:
        return [line]
    runner_up = max(rivals, key=lambda t: t.value) if study.direction.name == "MAXIMIZE" else \
        min(rivals, key=lambda t: t.value)
    other = runner_up.user_attrs["seed_values"]
    other_mean, other_half = mean_ci(other)
    p = paired_p_value(values, other)
    verdict = "significantly better" if p < 0.05 else "not significantly better"
    return [f"{line}; runner-up trial {runner_up.number}: {other_mean:.4f} +- {other_half:.4f}; "
            f"paired t-test over seeds p = {p:.3g}: the best is {verdict} (at 0.05)"]
