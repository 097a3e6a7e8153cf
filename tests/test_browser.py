"""What a person sees: the MLflow UI and optuna-dashboard on a real sweep's stores, in Debian's
Chromium driven headless by Playwright. Screenshots stay in the test's temporary folder.
Skips, saying why, where Chromium or Playwright is absent (`apt-get install chromium`)."""
from __future__ import annotations

import importlib.util
import re
import sqlite3
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import optuna
import pytest

from optuna_pruning.studies import make_storage

from conftest import clean_env, free_port, server_env, stop_process_group

CHROMIUM = Path("/usr/bin/chromium")
pytestmark = [
    pytest.mark.skipif(not CHROMIUM.exists(), reason="Chromium is not installed (apt-get install chromium)"),
    pytest.mark.skipif(importlib.util.find_spec("playwright") is None,
                       reason="Playwright is not installed (pip install -e '.[test]')"),
]


def _serve(command: list[str], url: str, log: Path) -> subprocess.Popen:
    with open(log, "w") as out:
        server = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=server_env(),
                                  start_new_session=True)
    deadline = time.time() + 120
    while True:
        try:
            with urllib.request.urlopen(url, timeout=2):
                return server
        except OSError:
            if server.poll() is not None or time.time() > deadline:
                stop_process_group(server)
                raise AssertionError(f"{command[1:4]} did not start: {log.read_text()[-2000:]}") from None
            time.sleep(0.3)


@pytest.fixture(scope="module")
def sweep(tmp_path_factory) -> Iterator[tuple[Path, str]]:
    """A small Optuna sweep on digits (sampler seed 0: complete and pruned trials); yields its
    folder and the runs-table URL the sweep printed."""
    folder = tmp_path_factory.mktemp("browser")
    done = subprocess.run([sys.executable, "-m", "softmax_sweep.train", "-m", "sweep=tune", "data=digits",
                           "hydra.sweeper.n_trials=8", "num_epochs=range(3, 9)", f"mlruns_dir={folder / 'mlruns'}"],
                          capture_output=True, text=True, timeout=600, env=clean_env())
    assert done.returncode == 0, done.stderr[-2000:]
    url = re.search(r"runs table \(MLflow UI\): (\S+)", done.stdout + done.stderr).group(1)
    yield folder, url


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=str(CHROMIUM), headless=True)
        yield chromium
        chromium.close()


@pytest.fixture(scope="module")
def mlflow_ui(sweep) -> Iterator[str]:
    """`mlflow ui` on the sweep's store, as the README starts it."""
    folder, _ = sweep
    port = free_port()
    store = f"sqlite:///{folder / 'mlruns' / 'mlflow.db'}"
    server = _serve([sys.executable, "-m", "mlflow", "ui", "--backend-store-uri", store,
                     "--host", "127.0.0.1", "--port", str(port), "--workers", "1"],
                    f"http://127.0.0.1:{port}/health", folder / "mlflow-ui.log")
    yield f"http://127.0.0.1:{port}"
    stop_process_group(server)


def _run_id(folder: Path, name_like: str) -> str:
    with sqlite3.connect(folder / "mlruns" / "mlflow.db") as con:
        return con.execute("SELECT run_uuid FROM runs WHERE name LIKE ?", (name_like,)).fetchone()[0]


def test_the_runs_table_shows_the_sweep_and_its_trials(sweep, mlflow_ui, browser) -> None:
    """The URL a sweep prints opens the runs table (not MLflow 3's GenAI view) in the project's
    saved view: trials grouped by study, result columns shown, each trial's Optuna state, best
    first by the sweep's metric, so pruned trials come after the complete ones in the table and in the charts. Leaving
    the saved view, the parent run expands to its trials."""
    folder, printed = sweep
    page = browser.new_page(viewport={"width": 1600, "height": 900})
    page.goto(printed.replace("http://127.0.0.1:5000", mlflow_ui))
    page.get_by_text("Group: tune-digits").wait_for(timeout=60000)
    assert page.get_by_role("grid").count() == 1  # the runs table (the GenAI view has none)
    header = page.locator("[role=columnheader]").all_inner_texts()
    assert {"best_val_acc", "test_acc_at_best_epoch", "optuna.state"} <= {h.strip() for h in header}, header
    rows = page.locator("[role=row]").all_inner_texts()
    names = [re.search(r"#\d+ (?:\(pruned\) )?tune-digits lr=\S+", r).group(0) for r in rows
             if re.search(r"#\d+ (?:\(pruned\) )?tune-digits lr=", r)]
    assert len(names) == 8, rows
    pruned = [i for i, n in enumerate(names) if "(pruned)" in n]
    assert pruned and pruned == list(range(len(names) - len(pruned), len(names))), names  # complete first
    assert sum("PRUNED" in r for r in rows) == len(pruned) and sum("COMPLETE" in r for r in rows) == 8 - len(pruned)
    # sweep=tune picks by val_loss: its URL opens the view that sorts by it, lowest first
    assert "viewStateShareKey=softmax-sweep-val_loss" in printed and page.get_by_text("Sort: best_val_loss").count()
    journal = f"journal:///{folder / 'mlruns' / 'optuna.journal'}"
    study = optuna.load_study(study_name="tune-digits", storage=make_storage(journal))
    assert names[0].startswith(f"#{study.best_trial.number} "), (names, study.best_trial.number)
    page.screenshot(path=str(folder / "runs_table.png"))
    page.goto(printed.replace("http://127.0.0.1:5000", mlflow_ui) + "&compareRunsMode=CHART")
    page.get_by_text("best_val_acc").first.wait_for(timeout=60000)
    listed = [n for n in page.locator("[role=row]").all_inner_texts() if "tune-digits lr=" in n]
    assert "(pruned)" not in " ".join(listed[:8 - len(pruned)]), listed  # the charts' first runs are complete
    page.screenshot(path=str(folder / "runs_charts.png"))
    page.get_by_text("Exit shared view").click()
    parent = page.locator("[role=gridcell]", has_text="study-tune-digits").first
    page.goto(f"{mlflow_ui}/#/experiments/1/runs?workflowType=machine_learning")
    parent.wait_for(timeout=60000)
    parent.locator("button").first.click()  # the expander of a parent run (MLflow nests runs by start time)
    page.get_by_text(re.compile(r"#0 tune-digits lr=")).wait_for(timeout=30000)
    nested = re.findall(r"#\d+ (?:\(pruned\) )?tune-digits lr=\S+", page.get_by_role("grid").inner_text())
    assert len(nested) == 8, nested


def test_a_trials_metric_page_shows_its_curves(sweep, mlflow_ui, browser) -> None:
    folder, _ = sweep
    run_id = _run_id(folder, "#1 tune-digits %")
    page = browser.new_page(viewport={"width": 1400, "height": 2400})  # the page draws only the charts in view
    page.goto(f"{mlflow_ui}/#/experiments/1/runs/{run_id}/model-metrics?workflowType=machine_learning")
    page.get_by_text("train_acc", exact=True).wait_for(timeout=60000)
    for metric in ("val_acc", "test_acc", "train_loss", "best_val_acc", "test_acc_at_best_epoch"):
        assert page.get_by_text(metric, exact=True).count() >= 1, metric
    # the charts are drawn (Plotly), not only their titles: per-epoch curves have a "Step" axis
    page.get_by_text("Step").nth(5).wait_for(timeout=60000)
    page.screenshot(path=str(folder / "trial_metrics.png"))


def test_the_parent_run_charts_the_best_value_so_far(sweep) -> None:
    """Not a picture: the parent's best_value has one point per finished trial (its chart in the UI
    is the optimization history)."""
    from mlflow.tracking import MlflowClient

    folder, _ = sweep
    client = MlflowClient(f"sqlite:///{folder / 'mlruns' / 'mlflow.db'}")
    history = client.get_metric_history(_run_id(folder, "study-tune-digits"), "best_value")
    steps = sorted({m.step for m in history})
    assert len(steps) >= 7 and steps[-1] == 7
    by_step = {s: {m.value for m in history if m.step == s} for s in steps}
    assert all(len(v) == 1 for v in by_step.values()), by_step  # each step logged once it is settled
    values = [by_step[s].pop() for s in steps]
    assert values == sorted(values, reverse=True)  # sweep=tune minimizes val_loss: never worse than before


@pytest.mark.skipif(importlib.util.find_spec("optuna_dashboard") is None,
                    reason="optuna-dashboard is not installed (pip install -e '.[test]')")
def test_optuna_dashboard_names_the_metric(sweep, browser) -> None:
    folder, _ = sweep
    port = free_port()
    server = _serve([str(Path(sys.executable).parent / "optuna-dashboard"), str(folder / "mlruns" / "optuna.journal"),
                     "--host", "127.0.0.1", "--port", str(port)],
                    f"http://127.0.0.1:{port}/dashboard", folder / "dashboard.log")
    try:
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.goto(f"http://127.0.0.1:{port}/dashboard")
        page.get_by_text("tune-digits").first.wait_for(timeout=60000)
        page.get_by_text("tune-digits").first.click()
        page.get_by_text("val_loss").first.wait_for(timeout=60000)  # sweep=tune's metric
        assert page.get_by_text("Objective 0").count() == 0
        page.screenshot(path=str(folder / "optuna_dashboard.png"))
    finally:
        stop_process_group(server)
