"""Process-level plumbing shared by every command: signals, exit codes, one-line errors."""
from __future__ import annotations

import errno
import logging
import os
import re
import sys
from collections.abc import Callable
from typing import Optional, TypeVar
from urllib.parse import urlsplit

from hydra.errors import HydraException, MissingConfigException
from omegaconf.errors import ConfigAttributeError, ConfigKeyError, OmegaConfBaseException

from optuna_pruning import SweeperError
from optuna_pruning.urls import mask_password
from softmax_sweep import interrupts
from softmax_sweep.errors import (
    StoreUnreachable,
    Terminated,
    TrainingDiverged,
    UserError,
    causes,
    lost_connection,
    says_disk_full,
)

T = TypeVar("T")
EXIT_INTERRUPTED, EXIT_TERMINATED = 130, 143
_API_REQUEST = re.compile(r"API request to (\S+) failed")
_DETAIL_LINE = re.compile(r"^\s*(full_key|object_type|reference_type|Set the environment)")


def _omegaconf_cause(exc: BaseException) -> Optional[OmegaConfBaseException]:
    return next((e for e in causes(exc) if isinstance(e, OmegaConfBaseException)), None)


def _user_error_cause(exc: BaseException) -> Optional[BaseException]:
    """The UserError behind exc, also when Hydra wrapped it (instantiating the sweeper)."""
    one_line = (UserError, SweeperError, TrainingDiverged, StoreUnreachable)
    return next((e for e in causes(exc) if isinstance(e, one_line)), None)


def _unreachable_server(exc: BaseException) -> Optional[str]:
    """The server of an MLflow request that gave up on connecting (after its bounded retries)."""
    for error in causes(exc):
        found = _API_REQUEST.search(str(error)) if lost_connection(error) else None
        if found:
            parts = urlsplit(found.group(1))
            return f"{parts.scheme}://{parts.netloc.rpartition('@')[2]}"
    return None


_DAMAGED_SQLITE = ("file is not a database", "database disk image is malformed", "no such table")


def _machine_fault(exc: BaseException) -> Optional[tuple[str, int]]:
    """One line for a fault of the machine around the program (a folder that cannot be made or
    written, a full disk, a damaged store) and the exit code: 2 for what was wrong before the
    work began, 1 for a fault during it. The user fixes the machine, not the code."""
    for error in causes(exc):
        if isinstance(error, OSError) and error.filename is not None and error.strerror:
            where = error.filename if error.filename2 is None else f"{error.filename} -> {error.filename2}"
            return (f"cannot use {where}: {error.strerror} (check mlruns_dir, hydra.run.dir, data.root and the "
                    "free space there)", 1 if error.errno == errno.ENOSPC else 2)
        text = str(error)
        if says_disk_full(error):
            return ("the disk is full: the epochs logged before it filled are kept; free space and run again "
                    "(a sweep resumes)", 1)
        if type(error).__module__.startswith("sqlalchemy") and any(m in text for m in _DAMAGED_SQLITE):
            return (f"the store is damaged ({text.splitlines()[0].split(') ', 1)[-1]}): move mlruns/mlflow.db "
                    "away and run again, or choose another mlruns_dir or tracking.uri", 2)
        if type(error).__name__ == "StorageInternalError" or (
                type(error).__name__ == "OperationalError" and type(error).__module__.startswith("sqlalchemy")):
            first = next((ln.strip() for ln in text.splitlines() if ln.strip() and not ln.startswith("(Background")),
                         type(error).__name__)
            return (f"a store's database failed mid-work ({mask_password(first)[:200]}): was it dropped, or its "
                    "server stopped? The data written so far is kept; run again once it is back (a sweep resumes)", 1)
        if isinstance(error, UnicodeDecodeError):
            return ("a store file is damaged (it does not decode as text: an Optuna journal?): move it away and "
                    "run again, or choose another storage", 2)
    return None


def describe(exc: BaseException) -> Optional[str]:
    """One line for an error the user can fix; None for a bug (which keeps its traceback)."""
    if (cause := _user_error_cause(exc)) is not None:
        return str(cause)
    if (fault := _machine_fault(exc)) is not None:
        return fault[0]
    if (server := _unreachable_server(exc)) is not None:
        return f"tracking server {server} is unreachable (gave up within tracking.retry_seconds)"
    if isinstance(exc, ValueError) and str(exc).startswith("Only one of --run, --multirun, --cfg"):
        return f"{exc} (Hydra's command line; --cfg job prints the config of a single run)"
    if isinstance(exc, MissingConfigException) and exc.options:
        group = (exc.missing_cfg_file or "").rsplit("/", 1)[0]
        return f"{str(exc).splitlines()[0].strip()}; available options in {group!r}: {', '.join(exc.options)}"
    if not isinstance(exc, (HydraException, OmegaConfBaseException)):
        return None
    cause = _omegaconf_cause(exc)
    if isinstance(cause, (ConfigKeyError, ConfigAttributeError)) and getattr(cause, "full_key", None):
        return f"unknown config key {cause.full_key!r} (--cfg job lists the keys)"
    if cause is not None and getattr(cause, "full_key", None):
        return f"{cause.full_key}: {_one_line(cause.msg)}"
    return _one_line(str(exc))


def _one_line(text: str) -> str:
    return " ".join(ln.strip() for ln in text.splitlines() if ln.strip() and not _DETAIL_LINE.match(ln))


def prepare_overrides(argv: list[str]) -> list[str]:
    """Hydra overrides as a user means them: `key=~/path` is the home folder (Hydra's grammar has
    no `~` at the start of a value, and the shell does not expand it after `key=`); a key given
    twice is refused, as Hydra would silently take the last."""
    seen: dict[str, str] = {}
    prepared = []
    for arg in argv:
        key, eq, value = arg.partition("=")
        if eq and not arg.startswith("-"):
            name = key.lstrip("+~")
            if name in seen:
                raise UserError(f"{name} is given twice ({seen[name]} and {arg}): give it once")
            seen[name] = arg
            if value == "~" or value.startswith("~/"):
                arg = f"{key}={os.path.expanduser(value)}"
        prepared.append(arg)
    return prepared


_deferred: list[BaseException] = []
_aborts: list[Callable[[BaseException], None]] = []


def on_abort(cleanup: Callable[[BaseException], None]) -> None:
    """Call cleanup(error) if the command ends by an interrupt or an error (e.g. to end an MLflow
    parent run that a Hydra callback opened and will never get to close)."""
    _aborts.append(cleanup)


def forget_abort(cleanup: Callable[[BaseException], None]) -> None:
    if cleanup in _aborts:
        _aborts.remove(cleanup)


def _run_aborts(error: BaseException) -> None:
    while _aborts:
        try:
            _aborts.pop()(error)
        except Exception as e:  # noqa: BLE001 - cleanup must not hide the original error
            print(f"warning: cleanup failed: {e}", file=sys.stderr)


def defer(exc: BaseException) -> None:
    """Hand a job's error to run_cli, which reports it after Hydra returns (Hydra would
    otherwise print its own extra lines first)."""
    _deferred.append(exc)


_USER_FULL_ERROR = "SOFTMAX_SWEEP_FULL_ERROR"


def _interrupted(terminated: bool) -> None:
    print(f"{'terminated' if terminated else 'interrupted'}: run data kept, unfinished runs marked KILLED",
          file=sys.stderr)
    sys.exit(EXIT_TERMINATED if terminated else EXIT_INTERRUPTED)


def user_full_error() -> bool:
    """Whether the user asked for tracebacks (HYDRA_FULL_ERROR=1), not run_cli for its own ends."""
    return os.environ.get(_USER_FULL_ERROR, os.environ.get("HYDRA_FULL_ERROR", "")) == "1"


def run_cli(body: Callable[[], T]) -> T:
    """Run a command: SIGTERM acts like Ctrl-C, user errors become `error: ...` and exit 2."""
    full_error = user_full_error()
    os.environ[_USER_FULL_ERROR] = "1" if full_error else "0"  # for the processes it starts
    os.environ["HYDRA_FULL_ERROR"] = "1"  # let Hydra raise, so the errors can be printed here
    logging.raiseExceptions = False  # a log file on a full disk: the error says so once, without tracebacks
    interrupts.install()
    try:
        result = body()
        if _deferred:
            raise _deferred.pop(0)
        return result
    except KeyboardInterrupt as e:
        _run_aborts(e)
        _interrupted(isinstance(e, Terminated))
    except Exception as e:
        _run_aborts(e)
        message = describe(e)
        if message is None or full_error:
            raise
        print(f"error: {mask_password(message)}", file=sys.stderr)
        if interrupts.received():  # the error came while ending on Ctrl-C (a store that hung, say)
            _interrupted(interrupts.terminated())
        fault = _machine_fault(e) if _user_error_cause(e) is None else None
        sys.exit(fault[1] if fault else getattr(_user_error_cause(e) or e, "exit_code", UserError.exit_code))
