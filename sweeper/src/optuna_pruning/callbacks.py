"""Sweep callbacks: how an app follows a sweep (a tracking parent run, a report at the end).

Listed under `hydra.sweeper.callbacks` like Hydra's own callbacks (`name: {_target_: ...}`); the
sweeper calls them in its own process, in the order given."""
from __future__ import annotations

from typing import Any, Optional

from optuna_pruning.internals import job_exception


def job_error(job_return: Any) -> Optional[BaseException]:
    """The exception a failed job raised (TrialPruned included), None for a job that returned
    (Hydra's JobReturn raises it again from return_value, announcing an error on stderr; this
    hands it over quietly)."""
    if job_return is None or getattr(job_return.status, "name", None) != "FAILED":
        return None
    error = job_exception(job_return)
    return error if isinstance(error, BaseException) else None


class SweepCallback:
    """Override what you need; an exception raised by a callback stops the sweep."""

    def on_sweep_start(self, study: Any, config: Any, search_space: Any) -> None:
        """The study is open (created or resumed); no trial of this sweep has started yet.
        config: the sweep's composed config (the app's keys and `hydra`)."""

    def on_trial_end(self, study: Any, trial: Any, job_return: Any) -> None:
        """A trial was told to Optuna (study.trials[trial.number] has its state); job_return is
        Hydra's JobReturn of its job."""

    def on_trial_stale(self, study: Any, trial: Any, reason: str) -> None:
        """A trial left RUNNING by a dead worker was failed and queued again."""

    def on_sweep_end(self, study: Any, error: Optional[BaseException]) -> None:
        """The sweep finished (error None) or stopped on `error` (KeyboardInterrupt on Ctrl-C);
        the error is raised again after the callbacks."""
