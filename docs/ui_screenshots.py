"""The README's MLflow UI pictures, from a real Fashion-MNIST sweep, in headless Chromium.

    python docs/ui_screenshots.py [--trials 12] [--workers 2]

Runs `sweeps/tune.py` on real Fashion-MNIST (the Debian copy, `apt-get install dataset-fashion-mnist`)
into a temporary store, starts `mlflow ui --workers 1` on it, opens the runs URL the sweep printed
(the project's saved view) and a complete trial's Model metrics page, and writes
docs/ui-runs-table.png and docs/ui-trial-metrics.png.
"""
from __future__ import annotations

import argparse
import os
import re
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

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
    parser.add_argument("--trials", type=int, default=12)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--port", type=int, default=5123)
    args = parser.parse_args()
    from playwright.sync_api import sync_playwright

    with tempfile.TemporaryDirectory() as tmp:
        mlruns = Path(tmp) / "mlruns"
        done = subprocess.run([sys.executable, str(ROOT / "sweeps" / "tune.py"), "--n-trials", str(args.trials),
                               "--workers", str(args.workers), f"mlruns_dir={mlruns}"],
                              capture_output=True, text=True, check=True)
        url = re.search(r"runs table \(MLflow UI\): (\S+)", done.stdout + done.stderr).group(1)
        url = url.replace("127.0.0.1:5000", f"127.0.0.1:{args.port}")
        with sqlite3.connect(mlruns / "mlflow.db") as con:
            (run_id,) = con.execute("SELECT r.run_uuid FROM runs r JOIN metrics m ON m.run_uuid = r.run_uuid "
                                    "WHERE m.key = 'best_val_acc' AND r.name LIKE '#%' "
                                    "ORDER BY m.value DESC LIMIT 1").fetchone()
        server = serve(mlruns / "mlflow.db", args.port)
        try:
            with sync_playwright() as p:
                browser = p.chromium.launch(executable_path="/usr/bin/chromium", headless=True)
                page = browser.new_page(viewport={"width": 1500, "height": 760})
                page.goto(url)
                page.get_by_text(re.compile(r"Group: tune-")).wait_for(timeout=60000)
                if page.get_by_label("Close").count():  # MLflow's assistant panel
                    page.get_by_label("Close").first.click()
                time.sleep(2)
                page.screenshot(path=str(DOCS / "ui-runs-table.png"))
                page = browser.new_page(viewport={"width": 1500, "height": 1300})
                page.goto(f"http://127.0.0.1:{args.port}/#/experiments/1/runs/{run_id}/model-metrics"
                          f"?workflowType=machine_learning")
                page.get_by_text("train_acc", exact=True).wait_for(timeout=60000)
                time.sleep(4)
                page.screenshot(path=str(DOCS / "ui-trial-metrics.png"))
                browser.close()
        finally:
            os.killpg(server.pid, signal.SIGKILL)  # the server and its job runner
    print(f"wrote {DOCS / 'ui-runs-table.png'} and {DOCS / 'ui-trial-metrics.png'}")


if __name__ == "__main__":
    main()
