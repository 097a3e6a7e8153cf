"""What a tracking URI points at: which store, where its artifacts go, whether it can be used
now (one line instead of MLflow's minutes of retries), and a new SQLite store built safely."""
from __future__ import annotations

import base64
import contextlib
import fcntl
import os
import sqlite3
import urllib.error
import urllib.request
from pathlib import Path
from typing import Optional
from urllib.parse import urlsplit, urlunsplit

from optuna_pruning.urls import driver_extra, mask_password, openable
from softmax_sweep.config import default_tracking_uri
from softmax_sweep.errors import UserError


def resolve_tracking_uri(uri: Optional[str], mlruns_dir: str) -> str:
    """Explicit tracking.uri, else MLFLOW_TRACKING_URI, else the SQLite DB in mlruns_dir."""
    return openable(uri or os.environ.get("MLFLOW_TRACKING_URI") or default_tracking_uri(mlruns_dir))


def artifact_root(uri: str, mlruns_dir: str) -> Optional[str]:
    """Where new experiments keep artifacts: beside a SQLite DB, in mlruns_dir for other
    databases, and wherever a tracking server decides for http(s)."""
    scheme = urlsplit(uri).scheme
    if scheme in ("http", "https", "databricks"):
        return None
    if scheme == "sqlite":
        return (Path(uri[len("sqlite:///"):]).resolve().parent / "artifacts").as_uri()
    return (Path(mlruns_dir).resolve() / "artifacts").as_uri()


def probe(uri: str, timeout: float = 10) -> None:
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


def is_server_store(uri: str) -> bool:
    return urlsplit(uri).scheme in ("http", "https")


def use_wal(db: Path) -> None:
    """Write-ahead logging (a persistent setting of the file): faster commits, and readers never
    block the writer when several local workers share the store."""
    with contextlib.closing(sqlite3.connect(db, timeout=60)) as con:
        if con.execute("PRAGMA journal_mode").fetchone()[0] != "wal":
            con.execute("PRAGMA journal_mode=WAL")


def sync_wal_at_checkpoints() -> None:
    """Every SQLite connection this process opens to a database in WAL mode (MLflow's store) syncs
    the disk at checkpoints, not at each commit: SQLite's setting for WAL, under which a commit
    survives the crash or SIGKILL of the process (a power cut may take the last ones back; the
    file stays whole). A commit was a disk sync: exercise 2's 286 runs spent 5-8 s of its ~60 in them."""
    from sqlalchemy import event
    from sqlalchemy.engine import Engine

    if not event.contains(Engine, "connect", _sync_at_checkpoints):
        event.listen(Engine, "connect", _sync_at_checkpoints)


def _sync_at_checkpoints(connection, _record) -> None:
    if isinstance(connection, sqlite3.Connection) and \
            connection.execute("PRAGMA journal_mode").fetchone()[0] == "wal":
        connection.execute("PRAGMA synchronous=NORMAL")


def create_sqlite_store(db: Path, artifact_root: Optional[str]) -> None:
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
            use_wal(building)  # before anyone connects: every connection then syncs at checkpoints only
            os.replace(building, db)
        finally:
            building.unlink(missing_ok=True)
