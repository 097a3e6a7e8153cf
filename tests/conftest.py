"""Shared fixtures: a small composed config per test, IDX files and a loopback HTTP server."""
from __future__ import annotations

import contextlib
import http.server
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Optional

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig, OmegaConf

from softmax_sweep.config import CONF_DIR
from softmax_sweep.synthetic import write_synthetic_idx


def compose_config(overrides: list[str]) -> DictConfig:
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose(config_name="train", overrides=overrides)


@pytest.fixture(autouse=True)
def _no_ambient_tracking_uri(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)


@pytest.fixture(autouse=True, scope="session")
def _data_cache_in_tmp(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """Decompressed data sets go to a folder of this test session, not the user's ~/.cache
    (subprocesses inherit it)."""
    folder = tmp_path_factory.mktemp("data-cache")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SOFTMAX_SWEEP_CACHE", str(folder))
        yield folder


@pytest.fixture(scope="session")
def digits_cfg_template() -> DictConfig:
    return compose_config(["data=digits", "num_epochs=3", "lr=0.5", "batch_size=32"])


@pytest.fixture
def cfg(digits_cfg_template: DictConfig, tmp_path: Path) -> DictConfig:
    """The small digits config, its run data redirected into this test's tmp_path."""
    cfg = digits_cfg_template.copy()
    OmegaConf.set_struct(cfg, False)
    cfg.mlruns_dir = str(tmp_path / "mlruns")  # the default tracking URI follows it
    OmegaConf.set_struct(cfg, True)
    return cfg


make_idx_folder = write_synthetic_idx


class IdxServer:
    """Serves a folder over HTTP on 127.0.0.1 and counts the requests per path."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.requests: list[str] = []
        self.truncate: set[str] = set()  # paths whose body is cut short (a dropped connection)
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802
                name = self.path.lstrip("/")
                server.requests.append(name)
                path = server.folder / name
                if not path.is_file():
                    self.send_error(404)
                    return
                body = path.read_bytes()
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body[: len(body) // 2] if name in server.truncate else body)

            def log_message(self, *args) -> None:
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self) -> IdxServer:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def idx_server(tmp_path: Path) -> Iterator[tuple[IdxServer, dict[str, str]]]:
    md5s = make_idx_folder(tmp_path / "served")
    with IdxServer(tmp_path / "served") as server:
        yield server, md5s


def run_statuses(db: Path) -> list[str]:
    """Statuses of every run in a SQLite MLflow store (empty when the store was never created)."""
    if not db.exists():
        return []
    with sqlite3.connect(db) as con:
        return [row[0] for row in con.execute("SELECT status FROM runs")]


def clean_env() -> dict[str, str]:
    """The environment for a subprocess under test, without settings that would redirect it."""
    return {k: v for k, v in os.environ.items() if k not in ("MLFLOW_TRACKING_URI", "HYDRA_FULL_ERROR")}


def server_env() -> dict[str, str]:
    """For `mlflow server`/`mlflow ui` under test: as the README starts them on a small machine,
    without the job runner (seven more processes for GenAI jobs that these runs never use)."""
    return {**clean_env(), "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}


def wait_for_count(db: Path, proc: subprocess.Popen, sql: str, at_least: int, what: str,
                   timeout: float = 120) -> None:
    """Poll a SQLite MLflow store until `sql` (a count) reaches at_least; the process must live."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        assert proc.poll() is None, proc.communicate()
        if db.exists():
            try:
                with contextlib.closing(sqlite3.connect(db)) as con:
                    if con.execute(sql).fetchone()[0] >= at_least:
                        return
            except sqlite3.OperationalError:
                pass  # tables not created yet
        time.sleep(0.2)
    raise AssertionError(f"never saw {what}")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def mlflow_server(backend_uri: str, folder: Path, port: Optional[int] = None
                  ) -> Iterator[tuple[str, subprocess.Popen]]:
    """`mlflow server` on a loopback port with artifacts proxied into folder; yields (URL, process)."""
    port = port or free_port()
    with open(folder / "server.log", "a") as log:
        server = subprocess.Popen(
            [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", backend_uri,
             "--artifacts-destination", (folder / "artifacts").as_uri(), "--host", "127.0.0.1", "--port", str(port),
             "--workers", "1"],
            stdout=log, stderr=subprocess.STDOUT, env=server_env(), start_new_session=True)
        url = f"http://127.0.0.1:{port}"
        try:
            deadline = time.time() + 120
            while True:
                try:
                    with urllib.request.urlopen(f"{url}/health", timeout=2):
                        break
                except OSError:
                    if server.poll() is not None or time.time() > deadline:
                        log_text = (folder / "server.log").read_text()[-2000:]
                        raise AssertionError(f"mlflow server did not start: {log_text}") from None
                    time.sleep(0.5)
            yield url, server
        finally:
            stop_process_group(server)


def stop_process_group(proc: subprocess.Popen) -> None:
    """Kill a process started with start_new_session and everything it started (server workers)."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)


REAL_FASHION = Path("/usr/share/datasets/fashion-mnist")
needs_real_fashion = pytest.mark.skipif(
    not (REAL_FASHION / "train-images-idx3-ubyte.gz").exists(),
    reason="real Fashion-MNIST is not installed (apt-get install dataset-fashion-mnist)")


@pytest.fixture
def places_in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Every place a data set is looked for moved under tmp_path: MXNet's cache (tmp/mxnet),
    Keras' (tmp/keras), the system folders (tmp/system/<name>); loaded data sets forgotten."""
    import softmax_sweep.data as data_module
    import softmax_sweep.places as places_module

    monkeypatch.setenv("MXNET_HOME", str(tmp_path / "mxnet"))
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras"))
    for name in places_module.SYSTEM_FOLDERS:
        monkeypatch.setitem(places_module.SYSTEM_FOLDERS, name, str(tmp_path / "system" / name))
    data_module._load_dataset.cache_clear()
    yield tmp_path
    data_module._load_dataset.cache_clear()
