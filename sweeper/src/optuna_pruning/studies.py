"""Opening Optuna studies for sweeps (the Hydra sweeper and any study script alike), their queued
trials, and counting trials toward n_trials."""
from __future__ import annotations

import itertools
import json
import logging
import math
from collections.abc import Mapping, Sequence
from typing import Any, Optional

import optuna
from omegaconf import OmegaConf
from optuna.storages import fail_stale_trials
from optuna.trial import FrozenTrial, TrialState

from optuna_pruning.errors import SweeperError
from optuna_pruning.internals import storage_of, trial_id
from optuna_pruning.quiet import quietly
from optuna_pruning.search_space import describe_distribution
from optuna_pruning.stale import StaleTrials, reap_dead_local_trials
from optuna_pruning.storages import damaged_journal
from optuna_pruning.workers import other_local_worker

log = logging.getLogger("optuna_pruning")
FINISHED = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)
DROPPED = "outside the search space of a later start: not run"


def directions_of(direction: Any) -> list[str]:
    """`maximize`, `[maximize, minimize]` or upstream's Direction enum as Optuna's names."""
    items = list(direction) if isinstance(direction, (list, tuple)) or OmegaConf.is_list(direction) else [direction]
    names = [getattr(d, "name", d) for d in items]
    for name in names:
        if name not in ("maximize", "minimize"):
            raise SweeperError(f"hydra.sweeper.direction must be maximize, minimize or a list of them, got {name!r}")
    return names


ENQUEUED_ATTR = "optuna_pruning.enqueued"


def open_study(storage, study_name: Optional[str], directions: Sequence[str], sampler, pruner,
               metric_names: Sequence[str] = (), enqueue: Sequence[Mapping[str, Any]] = (),
               distributions: Optional[Mapping[str, Any]] = None) -> optuna.Study:
    """Create the study or load it (resume), with the metric names optuna-dashboard shows; a new
    study gets the `enqueue` trials queued first (see expand_enqueued)."""
    try:
        with quietly():
            study = optuna.create_study(storage=storage, study_name=study_name, directions=list(directions),
                                        sampler=sampler, pruner=pruner, load_if_exists=True)
    except (UnicodeDecodeError, json.JSONDecodeError) as e:  # a journal file of other bytes
        raise damaged_journal(f"of study {study_name}", e) from None
    except ValueError as e:  # e.g. resumed with other directions
        raise SweeperError(f"study {study_name}: {e}") from None
    if metric_names and list(study.metric_names or []) != list(metric_names):
        with quietly():
            study.set_metric_names(list(metric_names))
    if enqueue and ENQUEUED_ATTR not in study.user_attrs:
        trials = expand_enqueued(enqueue, distributions or {})
        inside = [params for params in trials if _inside(params, distributions or {})]
        if len(inside) < len(trials):  # e.g. a command line that narrowed a parameter's range
            log.info("enqueue: %d of %d trials lie outside the search space: not queued", len(trials) - len(inside),
                     len(trials))
        for params in inside:  # skip_if_exists: workers opening a new study together queue each once
            study.enqueue_trial(params, skip_if_exists=True)
        study.set_user_attr(ENQUEUED_ATTR, len(inside))
    return study


def expand_enqueued(entries: Sequence[Mapping[str, Any]], distributions: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Each entry's trials: a list value stands for each of its values (the product over keys).
    Every key must be a parameter of the search space."""
    trials = []
    for entry in entries:
        unknown = sorted(set(entry) - set(distributions))
        if unknown:
            raise SweeperError(f"enqueue: {', '.join(unknown)} not a parameter of the search space "
                               f"({', '.join(distributions) or 'none'})")
        values = [v if isinstance(v, (list, tuple)) else [v] for v in entry.values()]
        trials += [dict(zip(entry, combination)) for combination in itertools.product(*values)]
    return trials


def check_choices_unchanged(study: optuna.Study, distributions: Mapping[str, Any]) -> None:
    """Optuna keeps a parameter's distribution kind and, for choice(), its choices for the life of a
    study; a start that changes them fails one line here, before a trial is asked (Optuna would
    raise in the middle of the first trial's suggestions)."""
    seen: dict[str, Any] = {}
    for trial in study.get_trials(deepcopy=False):
        seen.update({k: v for k, v in trial.distributions.items() if k in distributions and k not in seen})
    for name, old in seen.items():
        try:
            optuna.distributions.check_distribution_compatibility(old, distributions[name])
        except ValueError:
            raise SweeperError(f"hydra.sweeper.params.{name}: study {study.study_name} has it as "
                               f"{describe_distribution(old)}, which cannot become "
                               f"{describe_distribution(distributions[name])} (Optuna keeps a study's choices; "
                               f"a new study: hydra.sweeper.study_name=NAME)") from None


def drop_queued_outside(study: optuna.Study, distributions: Mapping[str, Any]) -> None:
    """Queued trials (retries of failed or dead ones) whose parameters this start's search space
    no longer holds (a typo fixed, a range changed) are failed, not run: one line says so."""
    dropped = []
    for trial in study.get_trials(deepcopy=False, states=(TrialState.WAITING,)):
        params = trial.system_attrs.get("fixed_params") or trial.params  # enqueued, or a retry
        if params and (not set(params) <= set(distributions) or not _inside(params, distributions)):
            try:
                storage_of(study).set_trial_user_attr(trial_id(trial), "fail_reason", DROPPED)
                storage_of(study).set_trial_state_values(trial_id(trial), TrialState.FAIL)
            except RuntimeError:
                continue  # another worker took it
            dropped.append(_first_difference(params, distributions))
    if dropped:
        log.warning("study %s: %d queued trial(s) lie outside this search space (%s): not run; a changed "
                    "search space continues the study, hydra.sweeper.study_name=NEW starts a new one",
                    study.study_name, len(dropped), dropped[0])


def _first_difference(params: Mapping[str, Any], distributions: Mapping[str, Any]) -> str:
    if extra := sorted(set(params) - set(distributions)):
        return f"{extra[0]} is no longer a parameter"
    key = next(k for k in params if not _inside({k: params[k]}, distributions))
    return f"{key}={params[key]} is outside {describe_distribution(distributions[key])}"


def _inside(params: Mapping[str, Any], distributions: Mapping[str, Any]) -> bool:
    for key, value in params.items():
        dist = distributions[key]
        if isinstance(dist, optuna.distributions.CategoricalDistribution):
            if value not in dist.choices:
                return False
        elif not (isinstance(value, (int, float)) and dist.low <= value <= dist.high):
            return False
    return True


def count_trials(study: optuna.Study) -> dict[str, int]:
    """Trials by state, leaving out the failures that say nothing of their parameters."""
    counts = {state.name: 0 for state in TrialState}
    for trial in _counted(study.get_trials(deepcopy=False)):
        counts[trial.state.name] += 1
    return counts


def best_so_far(trials: Sequence[FrozenTrial], direction: Any) -> list[tuple[int, float]]:
    """(trial number, best value of the complete trials up to it) for each complete trial, in order."""
    complete = {t.number for t in trials if t.state == TrialState.COMPLETE}
    return [(n, value) for n, value, _ in best_value_steps(trials, direction, settled_only=False) if n in complete]


def best_value_steps(trials: Sequence[FrozenTrial], direction: Any, after: int = -1,
                     settled_only: bool = True) -> list[tuple[int, float, int]]:
    """(trial number, best value of the complete trials up to it, the number of the trial that has
    it) for each finished trial above `after`, from the first complete one on. settled_only: only
    the steps no later finish can change, those below the lowest unfinished trial (with trials in
    flight, trial 3 can finish before trial 2)."""
    pick = max if direction == optuna.study.StudyDirection.MAXIMIZE else min
    horizon = min((t.number for t in trials if t.state not in FINISHED), default=math.inf) if settled_only else math.inf
    best, steps = None, []
    for t in sorted((t for t in trials if t.state in FINISHED), key=lambda t: t.number):
        if t.state == TrialState.COMPLETE and (best is None or pick(best.value, t.value) != best.value):
            best = t
        if best is not None and after < t.number < horizon:
            steps.append((t.number, best.value, best.number))
    return steps


def _not_counted(trials: Sequence[FrozenTrial]) -> set[int]:
    """Numbers of failed trials that say nothing of their parameters: their worker died and the
    parameters were queued again, or they were dropped as outside a later start's search space."""
    retried = {n for t in trials for n in t.system_attrs.get("retry_history", [])}
    return retried | {t.number for t in trials if t.user_attrs.get("fail_reason") == DROPPED}


def _counted(trials: Sequence[FrozenTrial]) -> list[FrozenTrial]:
    skip = _not_counted(trials)
    return [t for t in trials if not (t.state == TrialState.FAIL and t.number in skip)]


def _remaining(study: optuna.Study, n_trials: int) -> int:
    """n_trials minus the trials that count toward it (negative when workers overshot)."""
    return n_trials - sum(t.state != TrialState.WAITING for t in _counted(study.get_trials(deepcopy=False)))


def trials_to_go(study: optuna.Study, n_trials: int) -> int:
    """n_trials is the study's total: finished and running trials count toward it, queued ones
    (enqueued, waiting) are still to go; a trial retried after its worker died is counted once, by
    its retry."""
    return max(_remaining(study, n_trials), 0)


def next_step(study: optuna.Study, n_trials: int, heartbeats: bool, reap: Optional[StaleTrials] = None) -> str:
    """What a worker does next: "run" a trial (new, or queued for a retry), "wait" for running
    trials that may yet turn out to belong to a dead worker, or stop ("done"). With `reap`, the
    trials of local workers that died meanwhile are failed and queued again (a sibling SIGKILLed
    mid-study), and the trials of live local workers are waited for, as they could still die."""
    if heartbeats:
        with quietly():
            fail_stale_trials(study)
    if reap is not None:
        reap_dead_local_trials(study, reap)
    if trials_to_go(study, n_trials) > 0:  # queued trials count as to go: a retry, an enqueued one
        return "run"
    running = study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
    if heartbeats and running:
        return "wait"
    if reap is not None and any(other_local_worker(t.user_attrs.get("worker", "")) for t in running):
        return "wait"
    return "done"


def overshoot(study: optuna.Study, n_trials: int) -> Optional[str]:
    """A note when concurrent workers started more trials than n_trials (at most workers - 1)."""
    extra = -_remaining(study, n_trials)
    if extra <= 0:
        return None
    return (f"the study has {n_trials + extra} trials for n_trials={n_trials}: {extra} started while another "
            f"worker was finishing the last one (at most one fewer than the workers)")


def too_many_failures(study: optuna.Study, max_failure_rate: float, min_finished: int = 5) -> Optional[str]:
    """A message when more than max_failure_rate of the finished trials failed: judged once
    min_finished trials have finished, or at the first failure when max_failure_rate is 0."""
    counts = count_trials(study)
    finished = sum(counts[s.name] for s in FINISHED)
    if counts["FAIL"] <= max_failure_rate * finished or (max_failure_rate > 0 and finished < min_finished):
        return None
    return (f"{counts['FAIL']} of {finished} trials failed, more than max_failure_rate={max_failure_rate:g}: "
            f"stopping the sweep")


def trial_line(study: optuna.Study, number: int, n_trials: int) -> str:
    """One progress line for a finished trial: `[done/total] trial N STATE: value or reason {params}`."""
    trials = study.get_trials(deepcopy=False)
    trial = next(t for t in trials if t.number == number)
    done = sum(t.state in FINISHED for t in _counted(trials))
    if trial.state == TrialState.COMPLETE:
        detail = "value " + ", ".join(f"{v:.4f}" for v in trial.values)
    elif trial.state == TrialState.PRUNED:
        detail = f"pruned after step {trial.last_step}"
    else:
        detail = trial.user_attrs.get("fail_reason", "")
    shown = ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in trial.params.items())
    return f"[{done}/{n_trials}] trial {number} {trial.state.name}: {detail} ({shown})"


