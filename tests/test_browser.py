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
from mlflow.tracking import MlflowClient

from optuna_pruning.storages import make_storage

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
def sweep(tmp_path_factory) -> Iterator[tuple[Path, str, str]]:
    """Two studies in one experiment, as a student runs them: a small exercise-1 sweep on digits
    (sampler seed 0: complete and pruned trials) and a small exercise-2 study (26 configurations,
    2 seeds each); yields the folder and the runs-table URL each printed."""
    folder = tmp_path_factory.mktemp("browser")
    done = subprocess.run([sys.executable, "-m", "softmax_sweep.train", "-m", "sweep=tune", "data=digits",
                           "hydra.sweeper.n_trials=8", "num_epochs=range(3, 9)", f"mlruns_dir={folder / 'mlruns'}"],
                          capture_output=True, text=True, timeout=600, env=clean_env())
    assert done.returncode == 0, done.stderr[-2000:]
    tune_url = re.search(r"runs table \(MLflow UI\): (\S+)", done.stdout + done.stderr).group(1)
    done = subprocess.run([sys.executable, str(Path(__file__).parents[1] / "sweeps" / "overfit.py"), "data=digits",
                           "num_epochs=6", "--seeds", "2", f"mlruns_dir={folder / 'mlruns'}"],
                          capture_output=True, text=True, timeout=600, env=clean_env())
    assert done.returncode == 0, done.stderr[-2000:]
    overfit_url = re.search(r"runs table \(MLflow UI\): (\S+)", done.stdout + done.stderr).group(1)
    yield folder, tune_url, overfit_url


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
    folder = sweep[0]
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


def _table(page) -> list[str]:
    page.locator("[role=row]").nth(2).wait_for(timeout=60000)
    return [r for r in page.locator("[role=row]").all_inner_texts() if re.search(r"#\d+ ", r)]


def _name_cells_not_cut(page) -> list[str]:
    """The run names the table shows cut short (their text wider than their cell)."""
    return page.evaluate("""Array.from(document.querySelectorAll('[col-id="attributes.`Run Name`"] a'))
        .filter(a => a.scrollWidth > a.closest('[col-id]').clientWidth).map(a => a.innerText)""")


def _all_columns(page) -> set[str]:
    """The table's column ids, scrolling it sideways (the grid draws only the columns in view)."""
    found = set()
    for step in range(12):
        page.evaluate(f"document.querySelector('.ag-body-horizontal-scroll-viewport').scrollLeft = {step * 300}")
        time.sleep(0.3)
        found |= set(page.evaluate("Array.from(document.querySelectorAll('[role=columnheader][col-id]'))"
                                   ".map(h => h.getAttribute('col-id'))"))
    return found


@pytest.mark.parametrize("study", ["tune-digits", "overfit-digits"])
def test_each_study_prints_a_view_of_its_own_runs(sweep, mlflow_ui, browser, study) -> None:
    """The URL a sweep prints opens the runs table (not MLflow 3's GenAI view) on that study's runs
    only, every trial of it without "Load more", best first by the sweep's metric (complete trials
    before pruned ones), with the columns the sweep varies and names not cut short."""
    folder, tune_url, overfit_url = sweep
    printed = tune_url if study == "tune-digits" else overfit_url
    assert f"viewStateShareKey=study-{study}" in printed
    page = browser.new_page(viewport={"width": 1400, "height": 900})
    page.goto(printed.replace("http://127.0.0.1:5000", mlflow_ui))
    rows = _table(page)
    assert page.get_by_role("grid").count() == 1  # the runs table (the GenAI view has none)
    journal = f"journal:///{folder / 'mlruns' / 'optuna.journal'}"
    trials = optuna.load_study(study_name=study, storage=make_storage(journal)).trials
    page.get_by_text(f"{len(trials) + 1} matching runs").wait_for(timeout=30000)  # its trials and parent
    page.locator("[role=grid]").evaluate("g => g.querySelector('.ag-body-viewport').scrollTop = 1e6")
    time.sleep(1)
    assert page.get_by_text("Load more").count() == 0
    header = {h.strip() for h in page.locator("[role=columnheader]").all_inner_texts()}
    varied = {"lr", "batch_size", "num_epochs"} if study == "tune-digits" else {"data.train_size", "lr", "remedy"}
    page.locator("[role=grid]").evaluate("g => g.querySelector('.ag-body-viewport').scrollTop = 0")
    names = [re.search(r"#\d+ [^\n]+", r).group(0) for r in _table(page)]
    assert not any(n.split()[0] == "#0" and "study-" in n for n in names)
    assert _name_cells_not_cut(page) == []
    page.screenshot(path=str(folder / f"runs_table_{study}.png"))
    columns = _all_columns(page)
    assert {f"params.`{k}`" for k in varied} | {"tags.`optuna.state`"} <= columns, columns
    if study == "tune-digits":
        assert {"best_val_loss", "test_acc_at_best_epoch"} <= header, header
        best = min((t for t in trials if t.value is not None), key=lambda t: t.value)
        assert names[0].startswith(f"#{best.number} "), (names, best.number)  # lowest val_loss first
        pruned = [i for i, n in enumerate(names) if "(pruned)" in n]
        assert pruned and pruned == list(range(len(names) - len(pruned), len(names))), names
    else:
        assert {"best_val_acc", "best_val_acc_ci95"} <= header, header
        assert any("weight_decay_1e-2" in n for n in names) and any("n=1047" in n for n in names), names
    assert not any(other in " ".join(rows) for other in ("study-tune-digits", "study-overfit-digits")
                   if other != f"study-{study}")


def test_the_chart_tab_opens_on_train_and_test_on_one_chart(sweep, mlflow_ui, browser) -> None:
    """The printed view's chart tab: its first chart overlays train, validation and test accuracy
    of each run shown on one set of axes (three lines a run), the loss and the gap beside it."""
    folder, tune_url, _ = sweep
    page = browser.new_page(viewport={"width": 1400, "height": 1200})
    page.goto(tune_url.replace("http://127.0.0.1:5000", mlflow_ui) + "&compareRunsMode=CHART")
    page.get_by_text("Overfitting: train and test on one chart").wait_for(timeout=60000)
    plot = page.locator(".js-plotly-plot").first  # the first chart of the first section
    plot.wait_for(timeout=60000)
    page.wait_for_function("p => p.data && p.data.length > 0", arg=plot.element_handle(), timeout=30000)
    lines = plot.evaluate("p => p.data.map(d => [d.name, d.line.dash, d.y])")
    styles = {}  # run -> its lines' dash styles: MLflow draws the metrics of one chart solid, dashed, dotted
    for name, dash, _ in lines:
        styles.setdefault(name, set()).add(dash)
    assert len(styles) >= 2 and all(s == {"solid", "dash", "dot"} for s in styles.values()), styles
    (best,) = [n for n in styles if n.startswith("#1 ")]
    client = MlflowClient(f"sqlite:///{folder / 'mlruns' / 'mlflow.db'}")
    run_id = _run_id(folder, "#1 lr=%")
    train, test = ([m.value for m in client.get_metric_history(run_id, k)] for k in ("train_acc", "test_acc"))
    drawn = {dash: list(y) for name, dash, y in lines if name == best}
    assert drawn["solid"] == pytest.approx(train) and drawn["dot"] == pytest.approx(test)  # train and test, one axes
    page.screenshot(path=str(folder / "runs_charts.png"))


def test_a_trial_opened_from_the_table_shows_its_curves(sweep, mlflow_ui, browser) -> None:
    """Clicking a trial in the printed view opens its run, whose description shows curves.png:
    train, validation and test accuracy and loss on one chart."""
    folder, tune_url, _ = sweep
    page = browser.new_page(viewport={"width": 1400, "height": 1400})
    page.goto(tune_url.replace("http://127.0.0.1:5000", mlflow_ui))
    _table(page)
    page.locator("[role=gridcell] a", has_text=re.compile(r"^#1 lr=")).first.click()
    page.get_by_text("Description").first.wait_for(timeout=60000)
    image = page.locator("img[src*='get-artifact?path=curves.png']")
    image.wait_for(timeout=60000)
    page.wait_for_function("i => i.complete && i.naturalWidth > 0", arg=image.element_handle(), timeout=30000)
    assert image.evaluate("i => i.naturalWidth") >= 800
    assert page.get_by_text("Train, validation and test on one chart").count() == 1
    page.screenshot(path=str(folder / "trial_overview.png"))
    run_id = _run_id(folder, "#1 lr=%")
    page.goto(f"{mlflow_ui}/#/experiments/1/runs/{run_id}/model-metrics?workflowType=machine_learning")
    page.get_by_text("train_acc", exact=True).wait_for(timeout=60000)
    for metric in ("val_acc", "test_acc", "train_loss", "generalization_gap", "best_val_acc"):
        assert page.get_by_text(metric, exact=True).count() >= 1, metric


def test_the_parent_run_charts_the_best_value_so_far(sweep) -> None:
    """Not a picture: the parent's best_value has one point per finished trial (its chart in the UI
    is the optimization history)."""
    folder = sweep[0]
    client = MlflowClient(f"sqlite:///{folder / 'mlruns' / 'mlflow.db'}")
    parent = _run_id(folder, "study-tune-digits")
    history = client.get_metric_history(parent, "best_value")
    steps = sorted({m.step for m in history})
    assert len(steps) >= 7 and steps[-1] == 7
    by_step = {s: {m.value for m in history if m.step == s} for s in steps}
    assert all(len(v) == 1 for v in by_step.values()), by_step  # each step logged once it is settled
    values = [by_step[s].pop() for s in steps]
    assert values == sorted(values, reverse=True)  # sweep=tune minimizes val_loss: never worse than before
    numbers = client.get_metric_history(parent, "best_trial_number")  # a step line beside it, not one dot
    assert sorted(m.step for m in numbers) == steps
    params = client.get_run(parent).data.params  # the parent shows the search space and the fixed settings
    assert params["search.lr"] == "tag(log, interval(0.01, 1))" and params["data.name"] == "digits"


@pytest.mark.skipif(importlib.util.find_spec("optuna_dashboard") is None,
                    reason="optuna-dashboard is not installed (pip install -e '.[test]')")
def test_optuna_dashboard_names_the_metric(sweep, browser) -> None:
    folder = sweep[0]
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
