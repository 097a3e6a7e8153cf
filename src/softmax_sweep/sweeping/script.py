"""Study scripts (sweeps/*.py): `python -m softmax_sweep.train -m sweep=NAME` with flags.

A script is a command line for the sweep, nothing more: its flags become the Hydra overrides
they stand for (--n-trials N is hydra.sweeper.n_trials=N, --workers K is K trials in flight
under the joblib launcher, ...) and the optuna_pruning sweeper runs the study, as for `-m`. So
both entry points train every trial by one code path, and anything the sweeper can do (its
other settings, samplers, launchers) a script can do through its overrides."""
from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence
from importlib import resources
from typing import NoReturn, Optional

import yaml

log = logging.getLogger("softmax_sweep.sweep")


def _at_least_one(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _positive(text: str) -> float:
    value = float(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be above 0, got {text}")
    return value


TYPES = {"str": str, "at_least_one": _at_least_one, "positive": _positive}
# flag, the override it stands for, its type, metavar and help, as flags.yaml gives them
FLAGS = tuple((f["flag"], f["override"], TYPES[f["type"]], f["metavar"], f["help"])
              for f in yaml.safe_load(resources.files(__package__).joinpath("flags.yaml").read_text()))


class _OneLineParser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        """A bad flag is one line, as every other user error (argparse adds its usage first)."""
        self.exit(2, f"error: {message} (sweeps/{self.prog.rpartition('/')[2]} --help lists the flags)\n")


def build_parser(sweep: str, description: str) -> argparse.ArgumentParser:
    parser = _OneLineParser(
        prog=f"sweeps/{sweep}.py", description=description,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=f"The same as `python -m softmax_sweep.train -m sweep={sweep} OVERRIDE...` with the overrides each "
               f"flag stands for (shown in brackets); defaults come from conf/sweep/{sweep}.yaml. Results: one "
               f"MLflow parent run per study with one child run per trial; `mlflow ui --backend-store-uri "
               f"sqlite:///mlruns/mlflow.db` and `optuna-dashboard mlruns/optuna.journal` show them.")
    for flag, key, kind, metavar, text in FLAGS:
        parser.add_argument(flag, type=kind, metavar=metavar, help=f"{text.format(sweep=sweep)} [{key}={metavar}]")
    parser.add_argument("--workers", type=_at_least_one, metavar="K",
                        help="K trials in flight, each in its own worker process (at most one per core); the same "
                             "command on another machine with the same --storage and --study-name adds workers "
                             "there [hydra.sweeper.n_jobs=K hydra/launcher=joblib; K=1: in this process]")
    parser.add_argument("--no-stack", action="store_true",
                        help="train the trials one at a time, not those that share minibatches together in one "
                             "graph [hydra/launcher=basic hydra.sweeper.n_jobs=1]")
    parser.add_argument("overrides", nargs="*", metavar="OVERRIDE",
                        help="Hydra overrides: plain values fix a key for every trial (data=digits lr=0.1); "
                             "sweep values replace its range ('lr=tag(log, interval(0.001, 1))'); any "
                             "hydra.sweeper.* setting")
    return parser


def hydra_overrides(sweep: str, args: argparse.Namespace) -> list[str]:
    """The overrides of `python -m softmax_sweep.train -m` that the script's flags stand for."""
    overrides = [f"sweep={sweep}"]
    for flag, key, *_ in FLAGS:
        if (value := getattr(args, flag[2:].replace("-", "_"))) is not None:
            overrides.append(f"{key}={value}")
    if args.workers is not None:
        workers = min(args.workers, os.cpu_count() or 1)
        if workers < args.workers:  # more would only share the cores (and memory) to no avail
            log.info("--workers %d capped at %d (%d cores)", args.workers, workers, os.cpu_count() or 1)
        overrides += [f"hydra.sweeper.n_jobs={workers}", f"hydra/launcher={'joblib' if workers > 1 else 'basic'}"]
        if workers > 1:
            overrides.append(f"hydra.launcher.n_jobs={workers}")
    if args.no_stack:
        overrides += ["hydra/launcher=basic", "hydra.sweeper.n_jobs=1"]
    return [*overrides, *args.overrides]


def main(sweep: str, description: str, argv: Optional[Sequence[str]] = None) -> None:
    from softmax_sweep import train

    args = build_parser(sweep, description).parse_intermixed_args(sys.argv[1:] if argv is None else argv)
    logging.basicConfig(level=logging.INFO, format="[%(asctime)s][%(name)s][%(levelname)s] - %(message)s")
    sys.argv = [sys.argv[0], "-m", *hydra_overrides(sweep, args)]
    train.main()
