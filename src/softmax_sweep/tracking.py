"""MLflow tracking: the store and the experiment, checked on opening, and its runs."""
from __future__ import annotations

import contextlib
import logging
import os
import socket
import sqlite3
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, Optional
from urllib.parse import urlsplit, urlunsplit

from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from optuna_pruning.urls import mask_password
from optuna_pruning.workers import dead_local_worker, worker_name
from softmax_sweep import interrupts, views
from softmax_sweep.errors import Terminated, UserError, lost_connection
from softmax_sweep.runlog import RunEndHook, RunLogger, call_quietly
from softmax_sweep.server import Server, bound_http_retries
from softmax_sweep.stores import (
    artifact_root,
    create_sqlite_store,
    is_server_store,
    probe,
    sync_wal_at_checkpoints,
    use_wal,
)

EXPERIMENT_KIND_TAG = ("mlflow.experimentKind", "custom_model_development")
log = logging.getLogger("softmax_sweep")


class Tracker:
    """An MLflow store and experiment, checked on opening."""

    def __init__(self, uri: str, experiment: str, mlruns_dir: str, retry_seconds: float = 15.0) -> None:
        # MLflow prints "View run ... at <tracking URI>" for servers, password included; we log
        # our own masked line instead.
        os.environ["MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT"] = "true"
        probe(uri)
        logging.getLogger("alembic").setLevel(logging.WARNING)  # schema set-up chatter on every new DB
        # MLflow logs a database error with its traceback and raises it: the error is reported once, in one line
        logging.getLogger("mlflow.store.db.utils").setLevel(logging.CRITICAL)
        self.uri = uri
        self.server = Server(mask_password(uri), retry_seconds, url=uri) if is_server_store(uri) else None
        if self.server:
            bound_http_retries(retry_seconds)
        try:
            if urlsplit(uri).scheme == "sqlite":  # MlflowClient opens (and migrates) the store at once
                sync_wal_at_checkpoints()
                create_sqlite_store(Path(uri[len("sqlite:///"):]), artifact_root(uri, mlruns_dir))
            self.client = MlflowClient(tracking_uri=uri)
            self.experiment_id = self._experiment(experiment, artifact_root(uri, mlruns_dir))
            self._reap_dead_local_runs()
            if urlsplit(uri).scheme == "sqlite":
                use_wal(Path(uri[len("sqlite:///"):]))
        except (MlflowException, OSError, sqlite3.Error) as e:
            first_line = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise UserError(f"tracking URI {mask_password(uri)} is unusable: {first_line}") from None

    def _reap_dead_local_runs(self) -> None:
        """Runs left RUNNING by a process of this machine that is gone (SIGKILL, a power cut) end
        KILLED, with the reason: every later start on the store cleans up after it."""
        host = socket.gethostname().replace("'", "")
        query = f"attributes.status = 'RUNNING' and tags.worker LIKE '{host}:%'"
        running = self.client.search_runs([self.experiment_id], filter_string=query, max_results=1000)
        for run in running:
            worker = run.data.tags["worker"]
            if dead_local_worker(worker):
                self.client.set_tag(run.info.run_id, "failure_reason", f"its process {worker} died (killed)")
                self.client.set_terminated(run.info.run_id, status="KILLED")
                log.warning("run %s was left RUNNING by process %s, which died: marked KILLED", run.info.run_id,
                            worker)

    def _experiment(self, name: str, artifact_location: Optional[str]) -> str:
        found = self.client.get_experiment_by_name(name)
        if found is None:
            try:
                tags = dict([EXPERIMENT_KIND_TAG, *views.experiment_view_tags().items()])
                return self.client.create_experiment(name, artifact_location=artifact_location, tags=tags)
            except MlflowException:
                found = self.client.get_experiment_by_name(name)  # another worker created it
                if found is None:
                    raise
        if found.lifecycle_stage == "deleted":  # MLflow keeps a deleted experiment's name reserved
            raise UserError(f"the MLflow experiment {name!r} was deleted (its name stays reserved): restore it in "
                            f"the MLflow UI or with `mlflow experiments restore --experiment-id "
                            f"{found.experiment_id}`, or choose tracking.experiment=NAME")
        if found.tags.get(EXPERIMENT_KIND_TAG[0]) != EXPERIMENT_KIND_TAG[1]:
            self.client.set_experiment_tag(found.experiment_id, *EXPERIMENT_KIND_TAG)
        for key, value in views.experiment_view_tags().items():
            self._save_view(found.tags.get(key), found.experiment_id, key, value)
        return found.experiment_id

    def _save_view(self, stored: Optional[str], experiment_id: str, key: str, value: str) -> None:
        """Write a saved view unless the experiment holds the same one (its timestamps aside)."""
        if stored is None or views.view_state(stored) != views.view_state(value):
            self.client.set_experiment_tag(experiment_id, key, value)

    def save_view(self, share_key: str, state: dict[str, Any]) -> str:
        """Save a view of the runs table under share_key; returns its URL."""
        key, value = views.view_tag(share_key, state)
        experiment = self.client.get_experiment(self.experiment_id)
        self._save_view(experiment.tags.get(key), self.experiment_id, key, value)
        return self.runs_url(share_key)

    def runs_url(self, share_key: str = views.RUNS_VIEWS["val_acc"]) -> str:
        """The experiment's runs table in the MLflow UI, in the saved view share_key. MLflow 3
        opens an experiment in its GenAI view unless the URL asks for the training one (it ignores
        the mlflow.experimentKind tag); for a local store, the address of `mlflow ui` with its
        default port."""
        parts = urlsplit(self.uri)
        base = (urlunsplit(parts._replace(netloc=parts.netloc.rpartition("@")[2])).rstrip("/")
                if self.server else "http://127.0.0.1:5000")
        return (f"{base}/#/experiments/{self.experiment_id}/runs?workflowType=machine_learning"
                f"&viewStateShareKey={share_key}")

    def logger(self, run_id: str, artifact_uri: Optional[str] = None) -> RunLogger:
        """A RunLogger for an existing run of this store."""
        return RunLogger(self.client, run_id, artifact_uri, server=self.server)

    def start_run(self, run_name: Optional[str] = None, tags: Optional[Mapping[str, str]] = None) -> RunLogger:
        """A new RUNNING run. An interrupt while it is created stays pending for the next
        interrupts.check(), so that the caller holds the run it has to end (a tracking server is
        not waited for: a run it created unseen is reaped by the next start, as after SIGKILL)."""
        with contextlib.nullcontext() if self.server else interrupts.held():
            return self._create_run(run_name, tags)

    def _create_run(self, run_name: Optional[str], tags: Optional[Mapping[str, str]]) -> RunLogger:
        if self.server and self.server.unreachable:
            raise self.server.error()
        try:
            run = self.client.create_run(self.experiment_id, run_name=run_name,
                                         tags={"worker": worker_name(), **(tags or {})})
        except MlflowException as e:
            if self.server and lost_connection(e):
                self.server.unreachable = True
                raise self.server.error() from None
            raise
        return self.logger(run.info.run_id, run.info.artifact_uri)

    @contextlib.contextmanager
    def run(self, run_name: Optional[str] = None, tags: Optional[Mapping[str, str]] = None,
            on_end: Optional[RunEndHook] = None) -> Iterator[RunLogger]:
        """A run that always ends: FINISHED, FAILED with the reason, or KILLED on Ctrl-C/SIGTERM.
        An exception with an `mlflow_status` attribute (a pruned trial) ends with that status."""
        logger = self.start_run(run_name, tags)
        try:
            interrupts.check()  # Ctrl-C while the run was being created
            yield logger
        except KeyboardInterrupt as e:
            call_quietly(on_end, logger, e)
            logger.end("KILLED", "terminated (SIGTERM)" if isinstance(e, Terminated) else "interrupted (Ctrl-C)")
            raise
        except BaseException as e:
            call_quietly(on_end, logger, e)
            logger.end(getattr(e, "mlflow_status", "FAILED"), str(e) or type(e).__name__)
            raise
        else:
            if on_end:
                on_end(logger, None)
            logger.end("FINISHED")
