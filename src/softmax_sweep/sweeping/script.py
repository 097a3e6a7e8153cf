"""Study scripts (sweeps/*.py): plain `study.optimize` over a search space in conf/sweep/."""
from __future__ import annotations

import argparse
import logging
import os
import shlex
import sys
import time
from collections.abc import Sequence
from typing import Optional

from hydra import compose, initialize_config_dir
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import DictConfig, OmegaConf

from optuna_pruning.urls import mask_password
from optuna_pruning.workers import end_with_parent, worker_name
from softmax_sweep import interrupts
from softmax_sweep.cli import prepare_overrides, run_cli
from softmax_sweep.config import CONF_DIR, to_settings
from softmax_sweep.errors import SweepFailed, UserError
from softmax_sweep.heap import freeze_setup
from softmax_sweep.passwords import hide_passwords, mask_logs
from softmax_sweep.sweeping import study_workers

log = logging.getLogger("softmax_sweep.sweep")
SAMPLERS = ("tpe", "random", "grid", "cmaes", "qmc")
PRUNERS = ("median_warmup", "median_early", "median", "percentile", "successive_halving", "hyperband", "none")


def build_parser(sweep: str, description: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=f"sweeps/{sweep}.py", description=description,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=f"Defaults come from conf/sweep/{sweep}.yaml (hydra.sweeper.*). Results: one MLflow parent "
               f"run per study with one child run per trial; `mlflow ui --backend-store-uri "
               f"sqlite:///mlruns/mlflow.db` and `optuna-dashboard mlruns/optuna.journal` show them.")
    parser.add_argument("--n-trials", type=int, metavar="N",
                        help="total trials of the study: a rerun with the same storage and study name "
                             "tops it up to N, it never starts over (default: hydra.sweeper.n_trials)")
    parser.add_argument("--storage", metavar="URL",
                        help="Optuna storage: journal:///path/file (default: journal:///mlruns/optuna.journal, "
                             "safe for several local workers), sqlite:///file.db, postgresql://user@host/db, "
                             "mysql://user@host/db")
    parser.add_argument("--study-name", metavar="NAME",
                        help=f"study to create or resume (default: {sweep}-<data set>)")
    parser.add_argument("--sampler", choices=SAMPLERS, help="search algorithm (default: tpe)")
    parser.add_argument("--pruner", choices=PRUNERS,
                        help="stop unpromising trials after an epoch (default: the sweep config's)")
    parser.add_argument("--seeds", type=int, metavar="K",
                        help="train each configuration with K seeds (seed, seed + 1, ...) and optimize their mean; "
                             "the report gives each configuration's 95%% confidence interval and tests the best "
                             "against the runner-up (default: the config's seeds)")
    parser.add_argument("--timeout", type=float, metavar="SECONDS",
                        help="stop starting new trials after this many seconds")
    parser.add_argument("--workers", type=int, metavar="K",
                        help="start K local worker processes on the study; the same command on another "
                             "machine with the same --storage and --study-name adds workers there "
                             "(default: the sweep config's hydra.sweeper.n_jobs, trials in flight)")
    parser.add_argument("--heartbeat-interval", type=int, metavar="SECONDS",
                        help="trials send a heartbeat this often (database storages only); a trial whose "
                             "worker died is failed and retried by any live or later worker once its "
                             "heartbeat is older than the grace period (2 intervals)")
    parser.add_argument("--worker", type=int, help=argparse.SUPPRESS)  # index of a child of --workers K
    parser.add_argument("overrides", nargs="*", metavar="OVERRIDE",
                        help="Hydra overrides: plain values fix a key for every trial (data=digits lr=0.1); "
                             "sweep values replace its range ('lr=tag(log, interval(0.001, 1))')")
    return parser


def split_overrides(overrides: Sequence[str]) -> tuple[list[str], list[str]]:
    """(plain overrides for composing, sweep overrides for the search space)."""
    parsed = OverridesParser.create().parse_overrides(list(overrides))
    plain = [text for text, o in zip(overrides, parsed) if not o.is_sweep_override()]
    sweeps = [text for text, o in zip(overrides, parsed) if o.is_sweep_override()]
    return plain, sweeps


def compose_sweep(sweep: str, args: argparse.Namespace, plain: Sequence[str]) -> DictConfig:
    groups = [f"sweep={sweep}"]
    if args.sampler:
        groups.append(f"hydra/sweeper/optuna_sampler={args.sampler}")
    if args.pruner:
        groups.append(f"hydra/sweeper/optuna_pruner={args.pruner}")
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose(config_name="train", overrides=[*groups, *plain], return_hydra_config=True)


def run_study(sweep: str, args: argparse.Namespace, argv: Optional[Sequence[str]] = None) -> None:
    """Create or resume the study and run trials until it has n_trials: in this process, or in
    --workers K child processes. A --worker child only runs trials; its coordinator (or the single
    process) writes the sweep report and ends the MLflow parent run.

    argv: the command line of sweeps/NAME.py, which worker processes run again; without it (a
    call from Python) the study runs in this process unless --workers says otherwise."""
    import optuna

    from optuna_pruning.quiet import quietly
    from optuna_pruning.search_space import parse_search_space
    from optuna_pruning.studies import next_step, overshoot, too_many_failures, trial_line, trials_to_go
    from softmax_sweep.curves import drawn_in_background
    from softmax_sweep.data import load_dataset
    from softmax_sweep.errors import TrainingDiverged
    from softmax_sweep.sweeping.parent import BestSoFar, end_stopped_sweep, finish_sweep, open_sweep
    from softmax_sweep.trial_runs import run_trial

    freeze_setup()
    plain, sweep_overrides = split_overrides(args.overrides)
    full = compose_sweep(sweep, args, plain)
    sweeper = full.hydra.sweeper
    app_cfg = OmegaConf.masked_copy(full, [k for k in full if k != "hydra"])
    settings = to_settings(app_cfg)
    # a data set that cannot be loaded fails the sweep now, not every trial; trials reuse it
    load_dataset(settings.data.name, settings.data.root, settings.data.url)
    task_overrides = [o for o in plain if not o.startswith(("hydra", "+hydra", "++hydra"))]
    params = OmegaConf.to_container(sweeper.params or {}, resolve=True)
    space = parse_search_space(params, [*task_overrides, *sweep_overrides])
    groups = set(full.hydra.runtime.choices)
    absent = space  # a sentinel: OmegaConf.select gives None for a key set to null
    if unknown := [k for k in space.distributions if k not in groups and OmegaConf.select(app_cfg, k, default=absent)
                   is absent]:
        raise UserError(f"hydra.sweeper.params: {', '.join(unknown)} not a key of the config (a typo? --cfg job "
                        "lists the keys)")
    for name in groups.intersection(space.distributions):
        options = sorted(p.stem for p in (CONF_DIR / name).glob("*.yaml"))
        if unknown := [str(c) for c in getattr(space.distributions[name], "choices", ()) if str(c) not in options]:
            raise UserError(f"hydra.sweeper.params.{name}: no option {', '.join(unknown)} in config group {name!r} "
                            f"(options: {', '.join(options)})")
    storage_url = args.storage or sweeper.storage
    study_name = args.study_name or sweeper.study_name or "softmax-sweep"
    n_trials = sweeper.n_trials if args.n_trials is None else args.n_trials
    seeds = settings.seeds if args.seeds is None else args.seeds
    wanted = args.workers if args.workers is not None else sweeper.n_jobs if argv is not None else 1
    if n_trials < 1 or wanted < 1 or seeds < 1:
        raise UserError(f"--n-trials, --workers and --seeds must be at least 1, got {n_trials}, {wanted} "
                        f"and {seeds}")
    heartbeat = args.heartbeat_interval or sweeper.heartbeat_interval
    sampler_cfg = sweeper.sampler
    if args.worker is not None and sampler_cfg.get("seed") is not None:
        # workers with one seed would suggest the same parameters at the same time
        sampler_cfg = OmegaConf.merge(sampler_cfg, {"seed": sampler_cfg.seed + args.worker})
    opened = open_sweep(settings, space, storage_url, study_name, sweeper.direction, sampler_cfg, sweeper.optuna_pruner,
                        n_trials, heartbeat, sweeper.grace_period,
                        OmegaConf.to_container(sweeper.enqueue, resolve=True), sweeper.storage_timeout)
    study, parent, n_trials = opened.study, opened.parent, opened.n_trials
    if args.worker is None and next_step(study, n_trials, bool(heartbeat)) == "done":
        parent.end("FINISHED")
        log.info("study %s already has its %d trials (%s): nothing to run. More trials: --n-trials %d; a new "
                 "study: --study-name NAME", study_name, n_trials, parent.view_url, 2 * n_trials)
        return
    if args.worker is None:
        log.info("study %s: %d trials to go of %d (%s, %s, %d worker%s); MLflow parent run %s", study_name,
                 trials_to_go(study, n_trials), n_trials, type(study.sampler).__name__,
                 type(study.pruner).__name__, wanted, "s" if wanted > 1 else "", parent.run_id)

    best = BestSoFar(parent)

    def objective(trial: optuna.Trial) -> float:
        params = {name: _suggest(trial, name, dist) for name, dist in space.distributions.items()}
        if groups.isdisjoint(params):  # plain keys: set them on a copy instead of composing again
            cfg = app_cfg.copy()
            for key, value in params.items():
                OmegaConf.update(cfg, key, value, merge=False)
        else:
            with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
                cfg = compose(config_name="train", overrides=[f"sweep={sweep}", *space.overrides(params)])
        return run_trial(cfg, trial, study_name, parent.run_id, seeds)

    def after_trial(study: optuna.Study, frozen: optuna.trial.FrozenTrial) -> None:
        log.info(trial_line(study, frozen.number, n_trials))
        best.update(study)

    def work() -> None:
        with drawn_in_background():  # a trial's curves.png while the next one trains
            run_trials()

    def run_trials() -> None:
        deadline = time.monotonic() + args.timeout if args.timeout else None
        while (step := next_step(study, n_trials, bool(heartbeat), opened.stale)) != "done":
            interrupts.check()
            if too_many_failures(study, sweeper.max_failure_rate) or (deadline and time.monotonic() > deadline):
                return
            if step == "wait":  # running trials elsewhere: finish them, or fail them when their worker died
                time.sleep(heartbeat / 2 if heartbeat else 1)
                continue
            with quietly():  # Optuna's own line per trial (with a traceback for a failed one): the sweep logs its own
                study.optimize(objective, n_trials=1, callbacks=[after_trial], catch=(UserError, TrainingDiverged))

    rerun = " ".join(["python", sys.argv[0], *(shlex.quote(mask_password(a)) for a in sys.argv[1:]),
                      "--study-name {study}"])
    workers = min(wanted, max(trials_to_go(study, n_trials), 1), os.cpu_count() or 1)
    if workers < wanted:  # more would only share the cores (and memory) to no avail
        log.info("--workers %d capped at %d (%d trials to go, %d cores)", wanted, workers,
                 trials_to_go(study, n_trials), os.cpu_count() or 1)
    try:
        if workers > 1:
            failed = study_workers.run_workers(workers, argv or ())
            if failed and next_step(study, n_trials, bool(heartbeat), opened.stale) != "done":
                raise SweepFailed(f"{len(failed)} of {workers} workers failed before the study had "
                                  f"{n_trials} trials; their messages are above. Run the command again to resume.")
        else:
            work()
        if failure := too_many_failures(study, sweeper.max_failure_rate):
            raise SweepFailed(failure)
    except BaseException as e:
        if args.worker is None:
            end_stopped_sweep(parent, study, space, rerun, e, settings.optimized_metric)
        raise
    if args.worker is not None:
        return
    if note := overshoot(study, n_trials):
        log.info(note)
    for line in finish_sweep(parent, study, space, rerun, metric=settings.optimized_metric):
        log.info(line)


def _suggest(trial, name: str, dist):
    from optuna.distributions import CategoricalDistribution, FloatDistribution

    if isinstance(dist, CategoricalDistribution):
        return trial.suggest_categorical(name, dist.choices)
    if isinstance(dist, FloatDistribution):
        return trial.suggest_float(name, dist.low, dist.high, step=dist.step, log=dist.log)
    return trial.suggest_int(name, dist.low, dist.high, step=dist.step, log=dist.log)


def main(sweep: str, description: str, argv: Optional[Sequence[str]] = None) -> None:
    try:
        argv = hide_passwords(prepare_overrides(list(sys.argv[1:] if argv is None else argv)))
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(UserError.exit_code)
    args = build_parser(sweep, description).parse_intermixed_args(argv)
    who = f"[worker {worker_name()}]" if args.worker is not None else ""
    logging.basicConfig(level=logging.INFO, format=f"[%(asctime)s]{who}[%(name)s][%(levelname)s] - %(message)s")
    mask_logs()
    if args.worker is not None:
        end_with_parent()  # a SIGKILLed coordinator leaves no worker training on
    if args.worker is not None and os.environ.get("MXNET_ENGINE_TYPE"):
        study_workers.start_engine_quietly()
    run_cli(lambda: run_study(sweep, args, argv))
