"""A run logger handed to the training loop: params, tags and metrics queued and written in
batches, writes that an interrupt cannot cut in half, and an end that never leaves a run RUNNING."""
from __future__ import annotations

import contextlib
import functools
import logging
import tempfile
import time
import weakref
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any, Optional
from urllib.parse import urlsplit

from mlflow.entities import Dataset as MlflowDataset
from mlflow.entities import DatasetInput, InputTag, Metric, Param, RunTag
from mlflow.exceptions import MlflowException
from mlflow.store.artifact.artifact_repository_registry import get_artifact_repository
from mlflow.tracking import MlflowClient

from softmax_sweep import interrupts
from softmax_sweep.errors import StoreUnreachable, UserError, lost_connection
from softmax_sweep.server import Server, one_attempt

RunEndHook = Callable[["RunLogger", Optional[BaseException]], None]
MAX_PARAM_LENGTH = 6000
BATCH_LIMIT = 100
log = logging.getLogger("softmax_sweep")


def _uninterrupted(method: Callable) -> Callable:
    """An MLflow write of a RunLogger, see RunLogger._writing."""

    @functools.wraps(method)
    def wrapper(self: RunLogger, *args: Any, **kwargs: Any) -> Any:
        with self._writing():
            return method(self, *args, **kwargs)

    return wrapper


def call_quietly(hook: Optional[RunEndHook], logger: RunLogger, error: BaseException) -> None:
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
    other workers sharing the database) does not pay a commit for each of them. Where many runs
    of one process are open at once (a stack of trials), each waits longer, so that their writes
    together take about write_share of the process's time, up to most_seconds (a tracking server
    that stopped answering is still met within that and tracking.retry_seconds). Open runs, not
    runs with metrics queued: a stack's runs end their epochs in turn, so when each one's turn
    comes the others have just written (exercise 2's 287 runs wrote 8,470 times, most every epoch or two).
    """

    flush_seconds = 1.0
    write_share = 0.05
    most_seconds = 10.0
    _open: weakref.WeakSet[RunLogger] = weakref.WeakSet()  # this process's loggers of runs not yet ended
    _write_seconds = 0.0  # a write's recent duration (moving average)

    def __init__(self, client: MlflowClient, run_id: str, artifact_uri: Optional[str] = None,
                 server: Optional[Server] = None) -> None:
        self.client = client
        self.run_id = run_id
        self.artifact_uri = artifact_uri
        self.server = server  # None for a database
        self.view_url: Optional[str] = None  # a sweep parent's view of its runs in the MLflow UI
        self._metrics: list[Metric] = []
        self._params: list[Param] = []
        self._tags: dict[str, str] = {}
        self._flushed_at = time.monotonic()
        RunLogger._open.add(self)

    def log_params(self, params: Mapping[str, Any]) -> None:
        self._params.extend(Param(k, str(v)[:MAX_PARAM_LENGTH]) for k, v in params.items())

    def set_tags(self, tags: Mapping[str, Any]) -> None:
        self._tags.update({k: str(v) for k, v in tags.items()})

    def log_metrics(self, metrics: Mapping[str, float], step: int = 0,
                    tags: Optional[Mapping[str, Any]] = None) -> None:
        """Queued for the run's next write, at the latest as it ends (a run's summary, a trial's
        mean curves: one write with the run's end instead of one more before it)."""
        self._queue(metrics, step)
        self.set_tags(tags or {})

    def log_batch(self, metrics: list[Metric]) -> None:
        """Queue MLflow Metric objects (their own steps and timestamps)."""
        self._metrics.extend(metrics)
        self._flush_if_due()

    def on_epoch_end(self, epoch: int, metrics: dict[str, float]) -> None:
        self._queue(metrics, epoch)
        self._flush_if_due()

    def _flush_if_due(self) -> None:
        due, runs = self.flush_seconds, len(RunLogger._open)
        if runs > 1:
            due = max(due, min(self.most_seconds, runs * RunLogger._write_seconds / self.write_share))
        if time.monotonic() - self._flushed_at >= due:
            self.flush()

    def _queue(self, metrics: Mapping[str, float], step: int) -> None:
        now = int(time.time() * 1000)
        self._metrics.extend(Metric(k, float(v), now, step) for k, v in metrics.items())

    @_uninterrupted
    def flush(self) -> None:
        metrics, params, tags = self._metrics, self._params, [RunTag(k, v) for k, v in self._tags.items()]
        self._metrics, self._params, self._tags = [], [], {}
        start, writes = time.monotonic(), bool(metrics or params or tags)
        # MLflow takes at most 1000 metrics, 100 params and 100 tags in one call
        while metrics or params or tags:
            self.client.log_batch(self.run_id, metrics=metrics[:900], params=params[:BATCH_LIMIT],
                                  tags=tags[:BATCH_LIMIT])
            metrics, params, tags = metrics[900:], params[BATCH_LIMIT:], tags[BATCH_LIMIT:]
        self._flushed_at = time.monotonic()
        if writes:
            took = self._flushed_at - start
            RunLogger._write_seconds = 0.8 * RunLogger._write_seconds + 0.2 * took if RunLogger._write_seconds \
                else took

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
            guard = one_attempt() if interrupts.received() else contextlib.nullcontext()
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
        RunLogger._open.discard(self)
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
