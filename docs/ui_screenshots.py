"""The README's sweep pictures, from a real Fashion-MNIST sweep: the MLflow UI in headless
Chromium and the sweep report's figures.

    python docs/ui_screenshots.py [--trials N] [--workers K]

Runs `sweeps/tune.py` (the sweep's own n_trials and workers unless given) on real Fashion-MNIST
(the Debian copy, `apt-get install dataset-fashion-mnist`) into a temporary store, starts
`mlflow ui --workers 1` on it, opens the runs URL the sweep printed (the study's saved view), its
chart tab and the best trial's page as a click in the table opens it, and writes
docs/ui-runs-table.png, docs/ui-runs-charts.png and docs/ui-trial-curves.png; the parent run's
report figures become docs/sweep-*.png. It prints the sweep's last lines.
"""
from __future__ import annotations

import argparse
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from mlflow.tracking import MlflowClient

DOCS = Path(__file__).resolve().parent
ROOT = DOCS.parent
PICTURES = {"optimization_history.png": "sweep-history.png", "val_curves.png": "sweep-val-curves.png",
            "param_importances.png": "sweep-importances.png", "parallel_coordinates.png": "sweep-parallel.png"}


def serve(store: Path, port: int) -> subprocess.Popen:
    server = subprocess.Popen([sys.executable, "-m", "mlflow", "ui", "--backend-store-uri", f"sqlite:///{store}",
                               "--host", "127.0.0.1", "--port", str(port), "--workers", "1"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    for _ in range(600):
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2)
            return server
        except OSError:
            time.sleep(0.2)
    raise SystemExit("mlflow ui did not start")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trials", type=int, help="--n-trials of sweeps/tune.py (default: the sweep's)")
    parser.add_argument("--workers", type=int, help="--workers of sweeps/tune.py (default: the sweep's n_jobs)")
    parser.add_argument("--port", type=int, default=5123)
    args = parser.parse_args()
    from playwright.sync_api import sync_playwright

    with tempfile.TemporaryDirectory() as tmp:
        mlruns = Path(tmp) / "mlruns"
        flags = [*(["--n-trials", str(args.trials)] if args.trials else []),
                 *(["--workers", str(args.workers)] if args.workers else [])]
        done = subprocess.run([sys.executable, str(ROOT / "sweeps" / "tune.py"), *flags, f"mlruns_dir={mlruns}"],
                              capture_output=True, text=True, check=True)
        printed = (done.stdout + done.stderr).splitlines()
        url = re.search(r"runs table \(MLflow UI\): (\S+)", "\n".join(printed)).group(1)
        url = url.replace("127.0.0.1:5000", f"127.0.0.1:{args.port}")
        client = MlflowClient(f"sqlite:///{mlruns / 'mlflow.db'}")
        (parent,) = client.search_runs(["1"], filter_string="attributes.run_name LIKE 'study-%'")
        run_id = parent.data.tags["best.mlflow_run_id"]
        for artifact, picture in PICTURES.items():
            shutil.copyfile(client.download_artifacts(parent.info.run_id, artifact, tmp), DOCS / picture)
        server = serve(mlruns / "mlflow.db", args.port)
        try:
            with sync_playwright() as p:
                browser = p.chromium.launch(executable_path="/usr/bin/chromium", headless=True)
                page = browser.new_page(viewport={"width": 1500, "height": 760})
                page.goto(url)
                page.get_by_text("matching runs").wait_for(timeout=60000)
                _close_assistant(page)
                page.screenshot(path=str(DOCS / "ui-runs-table.png"))
                page.goto(url + "&compareRunsMode=CHART")
                page.get_by_text("Overfitting: train and test on one chart").wait_for(timeout=60000)
                _close_assistant(page)
                time.sleep(3)
                page.screenshot(path=str(DOCS / "ui-runs-charts.png"))
                page = browser.new_page(viewport={"width": 1500, "height": 1500})
                page.goto(f"http://127.0.0.1:{args.port}/#/experiments/1/runs/{run_id}?workflowType=machine_learning")
                page.get_by_text("Description").first.wait_for(timeout=60000)
                _close_assistant(page)
                page.get_by_text("Show more").first.click()
                page.locator("img[src*='get-artifact?path=curves.png']").scroll_into_view_if_needed()
                time.sleep(3)
                page.screenshot(path=str(DOCS / "ui-trial-curves.png"))
                browser.close()
        finally:
            os.killpg(server.pid, signal.SIGKILL)  # the server and its job runner
    print("\n".join(printed[-4:]))
    print(f"wrote ui-runs-table.png, ui-runs-charts.png, ui-trial-curves.png and {', '.join(PICTURES.values())} "
          f"in {DOCS}")


def _close_assistant(page) -> None:
    time.sleep(1)
    for button in page.get_by_label("Close").all():  # MLflow's assistant panel, where shown
        if button.is_visible():
            button.click()
    time.sleep(1)


if __name__ == "__main__":
    main()
