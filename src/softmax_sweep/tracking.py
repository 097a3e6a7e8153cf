"""MLflow tracking: the store, the experiment, and a run logger handed to the training loop."""
from __future__ import annotations

import base64
import contextlib
import fcntl
import functools
import json
import logging
import os
import socket
import sqlite3
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional
from urllib.parse import urlsplit, urlunsplit

from mlflow.entities import Dataset as MlflowDataset
from mlflow.entities import DatasetInput, InputTag, Metric, Param, RunTag
from mlflow.exceptions import MlflowException
from mlflow.store.artifact.artifact_repository_registry import get_artifact_repository
from mlflow.tracking import MlflowClient

from optuna_pruning.urls import driver_extra, mask_password, openable
from optuna_pruning.workers import dead_local_worker, worker_name
from softmax_sweep import interrupts, views
from softmax_sweep.config import default_tracking_uri
from softmax_sweep.errors import StoreUnreachable, Terminated, UserError, lost_connection

RunEndHook = Callable[["RunLogger", Optional[BaseException]], None]
EXPERIMENT_KIND_TAG = ("mlflow.experimentKind", "custom_model_development")


MAX_PARAM_LENGTH = 6000
BATCH_LIMIT = 100


log = logging.getLogger("softmax_sweep")


def resolve_tracking_uri(uri: Optional[str], mlruns_dir: str) -> str:
    """Explicit tracking.uri, else MLFLOW_TRACKING_URI, else the SQLite DB in mlruns_dir."""
    return openable(uri or os.environ.get("MLFLOW_TRACKING_URI") or default_tracking_uri(mlruns_dir))


def _artifact_root(uri: str, mlruns_dir: str) -> Optional[str]:
    """Where new experiments keep artifacts: beside a SQLite DB, in mlruns_dir for other
    databases, and wherever a tracking server decides for http(s)."""
    scheme = urlsplit(uri).scheme
    if scheme in ("http", "https", "databricks"):
        return None
    if scheme == "sqlite":
        return (Path(uri[len("sqlite:///"):]).resolve().parent / "artifacts").as_uri()
    return (Path(mlruns_dir).resolve() / "artifacts").as_uri()


def _probe(uri: str, timeout: float = 10) -> None:
    """Fail fast with one line when the store cannot be reached (MLflow itself retries for minutes)."""
    scheme = urlsplit(uri).scheme
    if scheme in ("http", "https"):
        parts = urlsplit(uri)
        bare = urlunsplit(parts._replace(netloc=parts.netloc.rpartition("@")[2]))
        request = urllib.request.Request(bare.rstrip("/") + "/health")
        if parts.username is not None:  # http://user:password@host: basic auth, as MLflow sends it
            token = base64.b64encode(f"{parts.username}:{parts.password or ''}".encode()).decode()
            request.add_header("Authorization", f"Basic {token}")
        try:
            with urllib.request.urlopen(request, timeout=timeout):
                pass
        except (urllib.error.URLError, OSError) as e:
            raise UserError(f"tracking URI {mask_password(uri)} is unreachable: {getattr(e, 'reason', e)}") from None
    elif scheme.partition("+")[0] in ("postgresql", "mysql", "mssql"):
        _probe_database(uri)
    elif scheme == "sqlite":
        path = Path(uri[len("sqlite:///"):])
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise UserError(f"tracking URI {uri}: cannot create {path.parent}: {e.strerror}") from None
        # SQLite writes the database and, beside it, its journal files: both must be writable
        for place in (path, path.parent):
            if place.exists() and not os.access(place, os.W_OK):
                raise UserError(f"tracking URI {uri}: {place} is read-only (make it writable, or choose "
                                "another mlruns_dir or tracking.uri)")


def _probe_database(uri: str) -> None:
    """Connect once, with a short timeout: MLflow itself retries a failing database for ~2 minutes."""
    import sqlalchemy

    try:
        engine = sqlalchemy.create_engine(uri, connect_args={"connect_timeout": 10}, poolclass=sqlalchemy.pool.NullPool)
        with engine.connect():
            pass
    except ImportError as e:
        raise UserError(f"tracking URI {mask_password(uri)} needs a database driver: {e} "
                        f"(pip install 'softmax-sweep[{driver_extra(uri)}]')") from None
    except sqlalchemy.exc.SQLAlchemyError as e:
        cause = str(getattr(e, "orig", None) or e).strip()
        first = cause.splitlines()[0] if cause else type(e).__name__
        raise UserError(f"tracking URI {mask_password(uri)} is unusable: {mask_password(first)}") from None


@dataclass
class _Server:
    """A tracking server as a Tracker and its RunLoggers share it: once it has failed to answer,
    every later call fails at once instead of retrying again."""

    uri: str  # masked
    retry_seconds: float
    unreachable: bool = False
    url: str = field(default="", repr=False)  # with its password, to ask it again

    def answers(self) -> bool:
        """Whether it answers a health check within 3 s now; if not, every later call fails at once."""
        if not self.unreachable:
            try:
                _probe(self.url, timeout=3)
            except UserError:
                self.unreachable = True
        return not self.unreachable

    def error(self) -> StoreUnreachable:
        return StoreUnreachable(f"tracking server {self.uri} is unreachable (gave up within "
                                f"tracking.retry_seconds={self.retry_seconds:g})")


def _is_server_store(uri: str) -> bool:
    return urlsplit(uri).scheme in ("http", "https")


def bound_http_retries(seconds: float) -> None:
    """Make MLflow give up on a tracking server within about `seconds`, whether it refuses
    connections (a restart: retried with backoff) or accepts and never answers (a stopped or hung
    process: each attempt waits for its read timeout); MLflow's defaults take ~4 minutes, each
    request waiting up to 120 s. urllib3 sleeps 0, 2f, 4f s before its retries (f, the backoff
    factor, is an integer to MLflow): about a third of the budget goes to them and half to the
    attempts' timeouts, the rest is kept for the health check and the last attempt to end the run
    on the way out."""
    retries = 2 if seconds < 30 else 3
    sleeps = 2 ** retries - 2  # in units of f
    factor = max(1, round(seconds / 3 / sleeps))  # a refusing server is retried for about a third
    timeout = max(2, round(seconds / 2 / (retries + 1)))  # a silent one costs about half in timeouts
    os.environ.update({"MLFLOW_HTTP_REQUEST_MAX_RETRIES": str(retries),
                       "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": str(factor),
                       "MLFLOW_HTTP_REQUEST_BACKOFF_JITTER": "0", "MLFLOW_HTTP_REQUEST_TIMEOUT": str(timeout)})


@contextlib.contextmanager
def _one_attempt() -> Iterator[None]:
    """MLflow's HTTP requests in the block try once, for a few seconds (on the way out after Ctrl-C)."""
    saved = {k: os.environ.get(k) for k in ("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "MLFLOW_HTTP_REQUEST_TIMEOUT")}
    os.environ.update({"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0", "MLFLOW_HTTP_REQUEST_TIMEOUT": "3"})
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def _uninterrupted(method: Callable) -> Callable:
    """An MLflow write of a RunLogger, see RunLogger._writing."""

    @functools.wraps(method)
    def wrapper(self: RunLogger, *args: Any, **kwargs: Any) -> Any:
        with self._writing():
            return method(self, *args, **kwargs)

    return wrapper


def _use_wal(db: Path) -> None:
    """Write-ahead logging (a persistent setting of the file): faster commits, and readers never
    block the writer when several local workers share the store."""
    with contextlib.closing(sqlite3.connect(db, timeout=60)) as con:
        if con.execute("PRAGMA journal_mode").fetchone()[0] != "wal":
            con.execute("PRAGMA journal_mode=WAL")


def _create_sqlite_store(db: Path, artifact_root: Optional[str]) -> None:
    """Build a new MLflow SQLite store under a temporary name and rename it into place, one
    process at a time: concurrent first users of an empty mlruns/ neither race in MLflow's schema
    migrations nor leave a half-built database behind (a killed builder leaves only its temporary file)."""
    if db.exists():
        return
    db.parent.mkdir(parents=True, exist_ok=True)
    with open(db.with_name(f"{db.name}.lock"), "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if db.exists():
            return
        building = db.with_name(f".{db.name}.{os.getpid()}.building")
        try:
            from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

            store = SqlAlchemyStore(f"sqlite:///{building}", artifact_root or str(db.parent))
            store.engine.dispose()
            os.replace(building, db)
        finally:
            building.unlink(missing_ok=True)


class Tracker:
    """An MLflow store and experiment, checked on opening."""

    def __init__(self, uri: str, experiment: str, mlruns_dir: str, retry_seconds: float = 15.0) -> None:
        # MLflow prints "View run ... at <tracking URI>" for servers, password included; we log
        # our own masked line instead.
        os.environ["MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT"] = "true"
        _probe(uri)
        logging.getLogger("alembic").setLevel(logging.WARNING)  # schema set-up chatter on every new DB
        # MLflow logs a database error with its traceback and raises it: the error is reported once, in one line
        logging.getLogger("mlflow.store.db.utils").setLevel(logging.CRITICAL)
        self.uri = uri
        self.server = _Server(mask_password(uri), retry_seconds, url=uri) if _is_server_store(uri) else None
        if self.server:
            bound_http_retries(retry_seconds)
        try:
            if urlsplit(uri).scheme == "sqlite":  # MlflowClient opens (and migrates) the store at once
                _create_sqlite_store(Path(uri[len("sqlite:///"):]), _artifact_root(uri, mlruns_dir))
            self.client = MlflowClient(tracking_uri=uri)
            self.experiment_id = self._experiment(experiment, _artifact_root(uri, mlruns_dir))
            self._reap_dead_local_runs()
            if urlsplit(uri).scheme == "sqlite":
                _use_wal(Path(uri[len("sqlite:///"):]))
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
        if stored is None or _view_state(stored) != _view_state(value):
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
            _call_quietly(on_end, logger, e)
            logger.end("KILLED", "terminated (SIGTERM)" if isinstance(e, Terminated) else "interrupted (Ctrl-C)")
            raise
        except BaseException as e:
            _call_quietly(on_end, logger, e)
            logger.end(getattr(e, "mlflow_status", "FAILED"), str(e) or type(e).__name__)
            raise
        else:
            if on_end:
                on_end(logger, None)
            logger.end("FINISHED")


def _call_quietly(hook: Optional[RunEndHook], logger: RunLogger, error: BaseException) -> None:
    """Run a hook on the way out of a failed run without letting it hide the original error."""
    if hook is None:
        return
    try:
        with interrupts.deferred():
            hook(logger, error)
    except Exception as e:  # noqa: BLE001
        logging.getLogger("softmax_sweep").warning("run end hook failed: %s", e)


class RunLogger:
    """Logs one MLflow run; as a training callback it records the six metrics every epoch.

    Params, tags and metrics are queued and written together, at most once per
    flush_seconds and always when the run ends: a sub-second epoch (or a trial of a sweep, with
    other workers sharing the database) does not pay a commit for each of them.
    """

    flush_seconds = 1.0

    def __init__(self, client: MlflowClient, run_id: str, artifact_uri: Optional[str] = None,
                 server: Optional[_Server] = None) -> None:
        self.client = client
        self.run_id = run_id
        self.artifact_uri = artifact_uri
        self.server = server  # None for a database
        self.view_url: Optional[str] = None  # a sweep parent's view of its runs in the MLflow UI
        self._metrics: list[Metric] = []
        self._params: list[Param] = []
        self._tags: dict[str, str] = {}
        self._flushed_at = time.monotonic()

    def log_params(self, params: Mapping[str, Any]) -> None:
        self._params.extend(Param(k, str(v)[:MAX_PARAM_LENGTH]) for k, v in params.items())

    def set_tags(self, tags: Mapping[str, Any]) -> None:
        self._tags.update({k: str(v) for k, v in tags.items()})

    def log_metrics(self, metrics: Mapping[str, float], step: int = 0,
                    tags: Optional[Mapping[str, Any]] = None) -> None:
        self._queue(metrics, step)
        self.set_tags(tags or {})
        self._flush_if_due()

    def on_epoch_end(self, epoch: int, metrics: dict[str, float]) -> None:
        self._queue(metrics, epoch)
        self._flush_if_due()

    def _flush_if_due(self) -> None:
        if time.monotonic() - self._flushed_at >= self.flush_seconds:
            self.flush()

    def _queue(self, metrics: Mapping[str, float], step: int) -> None:
        now = int(time.time() * 1000)
        self._metrics.extend(Metric(k, float(v), now, step) for k, v in metrics.items())

    @_uninterrupted
    def flush(self) -> None:
        metrics, params, tags = self._metrics, self._params, [RunTag(k, v) for k, v in self._tags.items()]
        self._metrics, self._params, self._tags = [], [], {}
        # MLflow takes at most 1000 metrics, 100 params and 100 tags in one call
        while metrics or params or tags:
            self.client.log_batch(self.run_id, metrics=metrics[:900], params=params[:BATCH_LIMIT],
                                  tags=tags[:BATCH_LIMIT])
            metrics, params, tags = metrics[900:], params[BATCH_LIMIT:], tags[BATCH_LIMIT:]
        self._flushed_at = time.monotonic()

    @_uninterrupted
    def log_dataset(self, name: str, digest: str, source: str, context: str = "training") -> None:
        dataset = MlflowDataset(name=name, digest=digest, source_type="local" if "://" not in source else "http",
                                source=source)
        inputs = [DatasetInput(dataset=dataset, tags=[InputTag(key="mlflow.data.context", value=context)])]
        try:
            self.client.log_inputs(self.run_id, datasets=inputs)
        except MlflowException:
            # MLflow looks the data set up, then inserts it: two workers starting their first
            # trials together can both insert, and one fails on the unique key. Its transaction
            # was rolled back; the data set exists now, so logging again links the run to it.
            self.client.log_inputs(self.run_id, datasets=inputs)

    @_uninterrupted
    def log_artifacts(self, folder: Path) -> None:
        if self.artifact_uri is None:
            self.client.log_artifacts(self.run_id, str(folder))
        else:  # MlflowClient would read the whole run back from the store first, to learn this URI
            get_artifact_repository(self.artifact_uri, tracking_uri=self.client.tracking_uri).log_artifacts(str(folder))

    def check_artifacts_writable(self) -> None:
        """A local artifact folder that cannot be written (read-only, a file in its place) is one
        line before training; a server's artifact store answers for itself."""
        if not self.artifact_uri or not self.artifact_uri.startswith("file:"):
            return
        folder = Path(urlsplit(self.artifact_uri).path)
        try:
            folder.mkdir(parents=True, exist_ok=True)
            with tempfile.NamedTemporaryFile(dir=folder, prefix=".write-check-"):
                pass
        except OSError as e:
            raise UserError(f"cannot write this run's artifacts (curves, config) to {folder}: {e.strerror} (make it "
                            "writable, or choose another mlruns_dir)") from None

    @property
    def unreachable(self) -> bool:
        return bool(self.server and self.server.unreachable)

    def server_answers(self) -> bool:
        """A tracking server answers now (3 s at most); a database store: True."""
        return self.server is None or self.server.answers()

    @contextlib.contextmanager
    def _writing(self) -> Iterator[None]:
        """Around every MLflow write. On a database, Ctrl-C/SIGTERM wait until the write is done:
        an interrupt raised inside the database client can be swallowed there (and training would
        go on) or leave a write half done. A tracking server's request is atomic on the server and
        may retry for seconds, so there an interrupt acts at once. Once the server has failed to
        answer, later writes fail at once instead of retrying again."""
        if self.server and self.server.unreachable:
            raise self.server.error()
        if not self.server:
            guard = interrupts.deferred()
        else:  # after Ctrl-C, the run's last writes do not keep the user waiting on a dead server
            guard = _one_attempt() if interrupts.received() else contextlib.nullcontext()
        try:
            with guard:
                yield
        except MlflowException as e:
            if self.server and lost_connection(e):
                self.server.unreachable = True
                raise self.server.error() from None
            raise

    def end(self, status: str, reason: Optional[str] = None) -> None:
        """Write what is queued and end the run; on a database a second Ctrl-C meanwhile cannot
        leave it RUNNING (a server's run that cannot be ended is reaped by a later start). Ending
        after an error or interrupt never raises for an unreachable server (the error that ended
        the run is the one to report)."""
        with contextlib.nullcontext() if self.server else interrupts.deferred():
            if reason and status != "FINISHED":
                self.set_tags({"failure_reason": reason[:5000]})
            with contextlib.suppress(MlflowException, StoreUnreachable):
                self.flush()
            try:
                self._set_terminated(status)
            except StoreUnreachable:
                if status == "FINISHED":
                    raise
                log.warning("run %s could not be ended on the unreachable tracking server %s: it stays RUNNING "
                            "there until the next run on that server marks it KILLED", self.run_id, self.server.uri)

    @_uninterrupted
    def _set_terminated(self, status: str) -> None:
        self.client.set_terminated(self.run_id, status=status)


def _view_state(tag_value: str) -> Any:
    try:
        return json.loads(json.loads(tag_value)["state"])
    except (ValueError, KeyError, TypeError):
        return None
