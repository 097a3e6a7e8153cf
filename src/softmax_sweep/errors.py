"""Exceptions that end a run with a one-line message instead of a traceback."""
import errno
from collections.abc import Iterator
from typing import Optional


class UserError(Exception):
    """Bad input from the user: printed as one line, exit code 2."""

    exit_code = 2


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite; the run is recorded FAILED."""

    exit_code = 1

    def __init__(self, epoch: int, loss: float, lr: float) -> None:
        kind = "NaN" if loss != loss else "infinite"
        super().__init__(f"loss became {kind} at epoch {epoch}; lr={lr:g} too large?")
        self.epoch, self.loss, self.lr = epoch, loss, lr

    def __reduce__(self):  # pickled with its constructor's arguments: job results cross processes
        return type(self), (self.epoch, self.loss, self.lr)


class Terminated(KeyboardInterrupt):
    """SIGTERM or SIGHUP, raised like Ctrl-C so that every cleanup path for an interrupt runs."""


class SweepFailed(UserError):
    """Too many trials failed: the sweep stopped (exit code 1)."""

    exit_code = 1


class StoreUnreachable(Exception):
    """The tracking server stopped answering (after the bounded retries). Not a trial's failure:
    a sweep stops on it, as every later trial would fail the same way. One line, exit code 2."""

    exit_code = 2


def lost_connection(error: BaseException) -> bool:
    """Whether an MLflow error comes from a server that did not answer (refused, timed out, or
    cut the answer short), as opposed to one that answered with an error."""
    import requests

    cause = error.__cause__ or error.__context__  # MLflow raises while handling requests' error
    return isinstance(cause, requests.exceptions.RequestException) and not isinstance(
        cause, requests.exceptions.HTTPError)


def causes(exc: Optional[BaseException]) -> Iterator[BaseException]:
    """exc, then what it was raised from or while handling, and so on (each once)."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        yield exc
        seen.add(id(exc))
        exc = exc.__cause__ or exc.__context__


def says_disk_full(error: BaseException) -> bool:
    """This error itself says the disk is full (one pickled in a launcher's worker process keeps
    only its text)."""
    return (isinstance(error, OSError) and error.errno == errno.ENOSPC
            or any(m in str(error) for m in ("database or disk is full", "No space left on device")))


def disk_full(error: Optional[BaseException]) -> bool:
    """The error, or one it was raised from, says the disk is full (None: no error)."""
    return any(says_disk_full(e) for e in causes(error))
