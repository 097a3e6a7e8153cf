"""Saved views of MLflow's runs table, written as MLflow 3's web app writes them ("Save as new
view": an experiment tag `mlflow.sharedViewState.<key>`, opened by the runs URL's
viewStateShareKey). A view holds the table's filter, sort and columns and the chart tab's layout.

Every view's chart tab opens on the curves that show overfitting, train and test on one set of
axes per run (the web app's default draws one chart per metric, each on its own axis), with the
generated per-metric charts after them. A sweep's view shows its own study only: its trial runs
and parent (seed runs are reached from their trial), the columns it varies, best first.
"""
from __future__ import annotations

import json
import re
import time
from collections.abc import Sequence
from typing import Any

from softmax_sweep.config import OPTIMIZABLE_METRICS

VIEW_TAG = "mlflow.sharedViewState."
# experiment-wide views, by the metric they sort by: a plain run's URL opens the val_acc one
RUNS_VIEWS = {"val_acc": "softmax-sweep", "val_loss": "softmax-sweep-val_loss"}
OVERFITTING_SECTION = "overfitting"
# (title, metrics on one set of axes): the first is the chart a student looks at first
OVERLAYS = (("accuracy: train vs val vs test", ("train_acc", "val_acc", "test_acc")),
            ("loss: train vs val vs test", ("train_loss", "val_loss", "test_loss")),
            ("generalization gap (train - val accuracy)", ("generalization_gap",)))
# wide enough for a trial's name (`#22 (pruned) n=2000 lr=1 bs=32 weight_decay_1e-4`)
RUN_NAME_COLUMN = "attributes.`Run Name`"
# the section the web app files metrics without a "/" in their name under
DEFAULT_SECTION = "Model metrics"


def _line_chart(number: int, title: str, metrics: Sequence[str]) -> dict[str, Any]:
    """A line chart card as the web app's LINE card class serializes it."""
    return {"uuid": f"softmax-sweep-chart-{number}", "type": "LINE", "runsCountToCompare": 10,
            "metricSectionId": OVERFITTING_SECTION, "deleted": False, "isGenerated": False, "displayName": title,
            "metricKey": metrics[0], "selectedMetricKeys": list(metrics), "lineSmoothness": 0,
            "xAxisScaleType": "linear", "scaleType": "linear",
            "range": {"xMin": None, "xMax": None, "yMin": None, "yMax": None},
            "xAxisKey": "step", "selectedXAxisMetricKey": "", "yAxisKey": "metric", "yAxisExpressions": [],
            "ignoreOutliers": False, "useGlobalXaxisKey": True, "useGlobalLineSmoothing": True}


def _section(uuid: str, name: str) -> dict[str, Any]:
    return {"uuid": uuid, "name": name, "display": True, "isReordered": False, "deleted": False,
            "isGenerated": False}


def chart_layout() -> dict[str, Any]:
    """The chart tab: the overlays in a section of their own, first; then the web app's "Model
    metrics" section, where it adds a chart for every other metric it finds. isAccordionReordered
    keeps this order (the web app sorts sections by name, and would put any new one first)."""
    charts = [_line_chart(i, title, metrics) for i, (title, metrics) in enumerate(OVERLAYS)]
    sections = [_section(OVERFITTING_SECTION, "Overfitting: train and test on one chart"),
                _section("softmax-sweep-default", DEFAULT_SECTION)]
    return {"compareRunCharts": charts, "compareRunSections": sections, "isAccordionReordered": True,
            "hideEmptyCharts": True}


def _sort(metric: str) -> dict[str, Any]:
    return {"orderByKey": f"metrics.`best_{metric}`", "orderByAsc": OPTIMIZABLE_METRICS[metric] == "minimize"}


def experiment_view_state(metric: str) -> dict[str, Any]:
    """All runs, grouped by study, best first by `metric`: complete trials come before pruned and
    failed ones (which have no best_* metric: MLflow sorts missing values last)."""
    sort = _sort(metric)
    return {**sort, **chart_layout(),
            "selectedColumns": ["tags.`optuna.state`", "metrics.`best_val_acc`", "metrics.`best_val_loss`",
                                "metrics.`test_acc_at_best_epoch`",
                                "params.`lr`", "params.`batch_size`", "params.`num_epochs`"],
            "groupBy": {"aggregateFunction": "min" if sort["orderByAsc"] else "max",
                        "groupByKeys": [{"mode": "tag", "groupByData": "optuna.study_name"}]},
            "useGroupedValuesInCharts": False}


def study_view_key(study_name: str) -> str:
    """The share key of a study's view (tag keys allow letters, digits and `_-. /`)."""
    return "study-" + re.sub(r"[^A-Za-z0-9_.-]", "_", study_name)


def study_filter(study_name: str) -> str:
    """The study's parent and trial runs: seed runs (tag `seed`) are nested in their trial's run."""
    return f"tags.`optuna.study_name` = '{study_name.replace(chr(39), '')}' and tags.`seed` IS NULL"


def study_view_state(study_name: str, metric: str, varied: Sequence[str], seeds: int) -> dict[str, Any]:
    """One study's runs with the columns its sweep varies; with seeds, the seeds' intervals."""
    results = [f"metrics.`best_{metric}`", "metrics.`test_acc_at_best_epoch`"]
    if seeds > 1:
        results = [f"metrics.`best_{metric}`", f"metrics.`best_{metric}_ci95`", "metrics.`test_acc_at_best_epoch`",
                   "metrics.`test_acc_at_best_epoch_ci95`", "params.`seeds`", "tags.`seed_values`"]
    return {**_sort(metric), **chart_layout(), "searchFilter": study_filter(study_name),
            "selectedColumns": ["tags.`optuna.state`", *results, *(f"params.`{k}`" for k in varied)],
            "columnWidths": {RUN_NAME_COLUMN: 330}}


def view_tag(key: str, state: dict[str, Any]) -> tuple[str, str]:
    """The experiment tag that holds a saved view, as the web app writes one."""
    now = int(time.time() * 1000)
    return f"{VIEW_TAG}{key}", json.dumps({"name": key, "createdAt": now, "updatedAt": now,
                                           "state": json.dumps(state)})


def experiment_view_tags() -> dict[str, str]:
    return dict(view_tag(key, experiment_view_state(metric)) for metric, key in RUNS_VIEWS.items())


def view_state(tag_value: str) -> Any:
    """A saved view's state, its timestamps aside (None for a tag that is not a view)."""
    try:
        return json.loads(json.loads(tag_value)["state"])
    except (ValueError, KeyError, TypeError):
        return None
