"""The README's sweep pictures, from a real Fashion-MNIST sweep: the MLflow UI in headless
Chromium and the sweep report's figures.

    python docs/ui_screenshots.py [--trials N] [--workers K]

Runs `sweeps/tune.py` (the sweep's own n_trials and workers unless given) on real Fashion-MNIST
(the Debian copy, `apt-get install dataset-fashion-mnist`) into a temporary store, starts
`mlflow ui --workers 1` on it, opens the runs URL the sweep printed (the project's saved view) and
the best trial's Model metrics page, and writes docs/ui-runs-table.png and docs/ui-trial-metrics.png;
the parent run's optimization_history.png and val_curves.png become docs/sweep-history.png and
docs/sweep-val-curves.png. It prints the sweep's last lines.
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
        for artifact, picture in (("optimization_history.png", "sweep-history.png"),
                                  ("val_curves.png", "sweep-val-curves.png")):
            shutil.copyfile(client.download_artifacts(parent.info.run_id, artifact, tmp), DOCS / picture)
        server = serve(mlruns / "mlflow.db", args.port)
        try:
            with sync_playwright() as p:
                browser = p.chromium.launch(executable_path="/usr/bin/chromium", headless=True)
                page = browser.new_page(viewport={"width": 1500, "height": 760})
                page.goto(url)
                page.get_by_text(re.compile(r"Group: tune-")).wait_for(timeout=60000)
                for button in page.get_by_label("Close").all():  # MLflow's assistant panel, where shown
                    if button.is_visible():
                        button.click()
                time.sleep(2)
                page.screenshot(path=str(DOCS / "ui-runs-table.png"))
                page = browser.new_page(viewport={"width": 1500, "height": 2050})  # all 13 charts
                page.goto(f"http://127.0.0.1:{args.port}/#/experiments/1/runs/{run_id}/model-metrics"
                          f"?workflowType=machine_learning")
                page.get_by_text("val_loss", exact=True).wait_for(timeout=60000)
                for button in page.get_by_label("Close").all():  # MLflow's assistant panel, where shown
                    if button.is_visible():
                        button.click()
                time.sleep(4)
                page.screenshot(path=str(DOCS / "ui-trial-metrics.png"))
                browser.close()
        finally:
            os.killpg(server.pid, signal.SIGKILL)  # the server and its job runner
    print("\n".join(printed[-4:]))
    print(f"wrote ui-runs-table.png, ui-trial-metrics.png, sweep-history.png and sweep-val-curves.png in {DOCS}")


if __name__ == "__main__":
    main()
