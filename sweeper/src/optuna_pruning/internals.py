"""Every use of a private name of Optuna or Hydra, in one place, each with the reason no public
API serves. A new Optuna or Hydra release that renames one breaks this module alone."""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

from hydra._internal.config_loader_impl import ConfigLoaderImpl, get_overrides_dirname

if TYPE_CHECKING:
    import optuna

__all__ = ["apply_overrides", "get_overrides_dirname", "job_exception", "storage_of", "trial_id"]


def trial_id(trial: Any) -> int:
    """The trial's id in its storage (Trial and FrozenTrial alike). Optuna shows only the
    number, but a job in another process reaches its trial by this id (optuna.Trial(study,
    trial_id) is public; the id is not)."""
    return trial._trial_id


def storage_of(study: optuna.Study) -> Any:
    """The study's storage, to write the state of a trial this process is not running (a dead
    worker's, a dropped queued one) and to beat its heart: Study.tell would run the sampler's
    after_trial hook for a trial the sampler never proposed, and Trial(study, id) samples
    relative parameters on creation; neither may happen for a trial that is only being closed."""
    return study._storage


def apply_overrides(overrides: list[Any], cfg: Any) -> None:
    """Apply parsed value overrides to a composed config as Hydra's own last composition step
    does (reuse.py: a job's config from a composed template). Hydra has no public function for
    it, and an equal result (types, interpolation, struct mode) needs its exact code."""
    ConfigLoaderImpl._apply_overrides_to_config(overrides, cfg)


def job_exception(job_return: Any) -> Any:
    """What a failed job raised. JobReturn.return_value raises it again, but first writes "Error
    executing job with overrides: [...]" to stderr on every read (Hydra 1.3): for each pruned
    trial, which is no error at all, a sweep printed that twice."""
    return job_return._return_value
