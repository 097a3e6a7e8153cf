"""What the sweeper raises for its user: a setting to fix, or a sweep that stopped. Hydra prints
a CompactHydraException as its message alone, so any app gets one line, not a traceback."""

from hydra.errors import CompactHydraException


class SweeperError(CompactHydraException):
    """A bad sweeper setting or search space: worth one line, not a traceback (exit code 2)."""

    exit_code = 2


class TooManyFailures(SweeperError):
    """More trials failed than max_failure_rate allows: the sweep stopped (exit code 1)."""

    exit_code = 1
