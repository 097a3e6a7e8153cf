"""How soon `mlflow ui` answers on this machine, and with how much memory, per setting.

    python benchmarks/ui_start.py [--repeats 3]

For each setting, alternating, --repeats times: start `mlflow ui` on a small SQLite store (one
run), time until the experiments search of the runs page answers (`/ajax-api/2.0/mlflow/
experiments/search`, after /health), and sum the resident memory of every process it started.
Settings: MLflow's default (4 web workers, a job runner), `--workers 1`, and `--workers 1` with
MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false (no job runner: it serves GenAI jobs, which runs of this
project never use). Medians are printed with the ratio against the default.
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import published

SETTINGS = {
    "default": ([], {}),
    "--workers 1": (["--workers", "1"], {}),
    "--workers 1, no job runner": (["--workers", "1"], {"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}),
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def group_rss_mb(pgid: int) -> float:
    total = 0
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            if os.getpgid(int(pid)) != pgid:
                continue
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        except (OSError, ProcessLookupError):
            continue
    return total / 1024


def start(store: str, flags: list[str], env: dict[str, str]) -> tuple[float, float]:
    """(seconds until the runs page's first API call answers, MB of all its processes 10 s later)."""
    port = free_port()
    began = time.perf_counter()
    server = subprocess.Popen([sys.executable, "-m", "mlflow", "ui", "--backend-store-uri", store, "--host",
                               "127.0.0.1", "--port", str(port), *flags], env={**os.environ, **env},
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    request = urllib.request.Request(f"http://127.0.0.1:{port}/ajax-api/2.0/mlflow/experiments/search",
                                     data=json.dumps({"max_results": 10}).encode(),
                                     headers={"Content-Type": "application/json"})
    try:
        while True:
            try:
                urllib.request.urlopen(request, timeout=5).read()
                break
            except OSError:
                if time.perf_counter() - began > 180:
                    raise SystemExit("mlflow ui did not answer within 180 s") from None
                time.sleep(0.1)
        seconds = time.perf_counter() - began
        time.sleep(10)  # the job runner starts its consumers after the first answer
        return seconds, group_rss_mb(server.pid)
    finally:
        os.killpg(server.pid, signal.SIGKILL)
        server.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        store = f"sqlite:///{Path(tmp) / 'mlflow.db'}"
        from mlflow.tracking import MlflowClient

        client = MlflowClient(store)
        run = client.create_run(client.create_experiment("ui-start"))
        client.log_metric(run.info.run_id, "val_acc", 0.8)
        client.set_terminated(run.info.run_id)
        found: dict[str, list[tuple[float, float]]] = {name: [] for name in SETTINGS}
        for repeat in range(args.repeats):
            for name, (flags, env) in SETTINGS.items():
                found[name].append(start(store, flags, env))
                seconds, mb = found[name][-1]
                print(f"{name:28s} run {repeat + 1}: answered after {seconds:5.1f} s, {mb:6.0f} MB", flush=True)
    base = statistics.median(s for s, _ in found["default"])
    for name, rows in found.items():
        seconds, mb = statistics.median(s for s, _ in rows), statistics.median(m for _, m in rows)
        print(f"median {name:28s} {seconds:5.1f} s ({seconds / base:.2f}x the default), {mb:6.0f} MB")


if __name__ == "__main__":
    published.run(main)
