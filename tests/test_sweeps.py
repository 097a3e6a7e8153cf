"""Sweeps: the Hydra sweeper plugin, the study scripts, MLflow parent/child runs, pruning, faults."""
from __future__ import annotations

import contextlib
import os
import re
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

import numpy as np
import optuna
import pytest
from hydra.core.config_store import ConfigStore
from hydra.core.plugins import Plugins
from hydra.plugins.sweeper import Sweeper
from mlflow.tracking import MlflowClient
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.trial import TrialState

from optuna_pruning import SweeperError
from optuna_pruning.search_space import parse_search_space
from optuna_pruning.storages import make_storage
from softmax_sweep.config import CONF_DIR, PROJECT_ROOT
from softmax_sweep.sweeping import script
from softmax_sweep.sweeping.search_space import bound_warnings

from conftest import clean_env, run_statuses, wait_for_count

TUNE = [sys.executable, str(PROJECT_ROOT / "sweeps" / "tune.py")]
OVERFIT = [sys.executable, str(PROJECT_ROOT / "sweeps" / "overfit.py")]
TRAIN = [sys.executable, "-m", "softmax_sweep.train"]


def _study(mlruns: Path, name: str) -> optuna.Study:
    return optuna.load_study(study_name=name, storage=make_storage(f"journal:///{mlruns / 'optuna.journal'}"))


def _runs(mlruns: Path):
    client = MlflowClient(f"sqlite:///{mlruns / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("softmax-sweep")
    return client, client.search_runs([experiment.experiment_id], max_results=1000)


def _study_args(mlruns: Path, *extra: str) -> list[str]:
    return ["data=digits", f"mlruns_dir={mlruns}", *extra]


def assert_consistent(mlruns: Path, study: optuna.Study) -> None:
    """Optuna and MLflow agree: one parent, exactly one child run per finished trial, the best
    value is a value its trial's run logged, nothing RUNNING anywhere."""
    client, runs = _runs(mlruns)
    parents = [r for r in runs if r.data.tags.get("sweep.kind") == "optuna"
               and r.data.tags.get("optuna.study_name") == study.study_name]
    assert len(parents) == 1
    parent = parents[0]
    assert parent.info.run_id == study.user_attrs["mlflow_parent_run_id"]
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    finished = [t for t in study.trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)]
    assert sorted(int(r.data.tags["optuna.trial_number"]) for r in children) == sorted(t.number for t in finished)
    for trial in finished:
        (child,) = [r for r in children if r.data.tags["optuna.trial_number"] == str(trial.number)]
        assert child.data.tags["optuna.state"] == trial.state.name
        assert child.info.run_id == trial.user_attrs["mlflow_run_id"]
    best = study.best_trial
    (best_run,) = [r for r in children if r.info.run_id == best.user_attrs["mlflow_run_id"]]
    assert best_run.data.metrics[f"best_{study.metric_names[0]}"] == study.best_value
    assert "RUNNING" not in {r.info.status for r in runs}
    assert not [t for t in study.trials if t.state == TrialState.RUNNING]


# --- the plugin and the search space -------------------------------------------------------

def test_plugin_is_discovered_with_its_configs() -> None:
    sweepers = [cls.__name__ for cls in Plugins.instance().discover(Sweeper)]
    assert "OptunaPruningSweeper" in sweepers
    store = ConfigStore.instance().repo["hydra"]["sweeper"]
    assert "optuna_pruning.yaml" in store
    assert {"tpe.yaml", "random.yaml", "grid.yaml", "cmaes.yaml", "nsgaii.yaml", "gp.yaml", "qmc.yaml"} <= set(
        store["optuna_sampler"])
    assert {"median.yaml", "percentile.yaml", "hyperband.yaml", "successive_halving.yaml", "none.yaml"} <= set(
        store["optuna_pruner"])
    assert "sampler" not in store, "upstream's sampler group is left to upstream"
    assert "optuna.yaml" in store, "upstream's sweeper name, where upstream is not installed (it is not here)"


def test_overrides_become_distributions() -> None:
    space = parse_search_space(
        {"lr": "tag(log, interval(0.01, 1.0))", "batch_size": "choice(32, 64, 256)",
         "num_epochs": "range(5, 16)", "weight_decay": "interval(0, 0.01)", "seed": "3"},
        ["data.train_size=int(interval(100, 500))", "batch_size=128", "~early_stopping_patience"])
    d = space.distributions
    assert d["lr"] == FloatDistribution(0.01, 1.0, log=True)
    assert d["num_epochs"] == IntDistribution(5, 15)
    assert d["weight_decay"] == FloatDistribution(0.0, 0.01)
    assert d["data.train_size"] == IntDistribution(100, 500), "int(interval(...)) samples ints"
    assert space.deletions == ("~early_stopping_patience",)
    assert space.overrides({"lr": 0.5})[-1] == "~early_stopping_patience", "a delete goes to every trial"
    assert "batch_size" not in d and space.fixed["batch_size"] == "128", "a plain override fixes the key"
    assert space.fixed["seed"] == "3"
    assert space.intervals == {"lr", "weight_decay", "data.train_size"}
    assert parse_search_space({"b": "choice(1, 2)"}).distributions["b"] == CategoricalDistribution([1, 2])
    assert parse_search_space({"n": "range(1, 7, 2)", "b": "choice(a, b)"}).grid() == {"n": [1, 3, 5], "b": ["a", "b"]}
    with pytest.raises(SweeperError, match="grid sampler needs choice"):
        space.grid()
    with pytest.raises(SweeperError, match="not a valid interval"):
        parse_search_space({"lr": "tag(log, interval(0, 1))"})


def test_job_configs_reused_for_values_equal_hydras_own(tmp_path: Path) -> None:
    """The sweeper composes a job's config once per set of group choices and sets the trial's
    values on a copy: the result must be what Hydra composes itself, for every job."""
    from hydra._internal.config_loader_impl import ConfigLoaderImpl
    from hydra._internal.utils import create_config_search_path
    from hydra.types import RunMode
    from omegaconf import OmegaConf

    from optuna_pruning.reuse import ReusingConfigLoader

    Plugins.instance()  # registers the plugin's configs, as Hydra's start-up does
    hydra_loader = ConfigLoaderImpl(config_search_path=create_config_search_path(str(CONF_DIR)))
    master = hydra_loader.load_configuration(
        "train", ["sweep=tune", "hydra/sweeper/optuna_sampler=random", "hydra.sweeper.n_trials=3", "data=digits",
                  f"mlruns_dir={tmp_path}"], run_mode=RunMode.MULTIRUN)
    reusing = ReusingConfigLoader(hydra_loader)
    fixed = ["sweep=tune", f"mlruns_dir={tmp_path}"]  # the task's own overrides come with every job
    jobs = [["lr=0.5", "batch_size=64", "data=digits", "++hydra.job.env_set.OPTUNA_PRUNING_TRIAL_ID=1", *fixed],
            ["lr=0.013", "batch_size=256", "data=digits", "++hydra.job.env_set.OPTUNA_PRUNING_TRIAL_ID=2", *fixed],
            ["lr=0.2", "batch_size=32", "data=idx", "++hydra.job.env_set.OPTUNA_PRUNING_TRIAL_ID=3", *fixed],  # a group
            ["lr=0.3", "batch_size=32", "data=idx", "++hydra.job.env_set.OPTUNA_PRUNING_TRIAL_ID=4", *fixed]]
    for job in jobs:
        ours, hydras = reusing.load_sweep_config(master, job), hydra_loader.load_sweep_config(master, job)
        assert OmegaConf.to_container(ours) == OmegaConf.to_container(hydras)
        assert ours.lr == float(job[0][3:]) and ours.hydra.job.env_set.OPTUNA_PRUNING_TRIAL_ID == job[3][-1]
        assert ours.hydra.job.override_dirname == hydras.hydra.job.override_dirname
    assert reusing.reused == 2, "jobs 2 and 4 reuse the compositions of jobs 1 and 3"
    with pytest.raises(Exception, match="batch_size"):  # values are still type-checked
        reusing.load_sweep_config(master, ["lr=0.5", "batch_size=abc", "data=digits",
                                           "++hydra.job.env_set.OPTUNA_PRUNING_TRIAL_ID=5", *fixed])

    # a launcher's worker process gets a pickled copy of the loader: prepared, it composes nothing
    fresh = ReusingConfigLoader(hydra_loader)
    fresh.prepare(master, jobs[0])
    fresh.prepare(master, jobs[1])  # same shape: nothing composed again
    assert len(fresh.templates) == 1 and fresh.reused == 0
    import pickle

    in_worker = pickle.loads(pickle.dumps(fresh))
    ours = in_worker.load_sweep_config(master, jobs[1])
    assert in_worker.reused == 1 and ours.lr == 0.013
    assert OmegaConf.to_container(ours) == OmegaConf.to_container(hydra_loader.load_sweep_config(master, jobs[1]))


def test_best_value_at_a_bound_suggests_a_wider_range() -> None:
    space = parse_search_space({"lr": "tag(log, interval(0.01, 1.0))", "wd": "interval(0.0, 0.1)",
                                "b": "choice(1, 2)"})
    found = bound_warnings(space, {"lr": 0.98, "wd": 0.05, "b": 2})
    assert found == [("best lr=0.98 sits at the upper bound of interval(0.01, 1)",
                      "'lr=tag(log, interval(0.01, 10))'")]
    assert bound_warnings(space, {"lr": 0.1, "wd": 0.0})[0][1] == "'wd=interval(0, 0.1)'"
    assert bound_warnings(space, {"lr": 0.1, "wd": 0.05}) == []


# --- study scripts (in process) --------------------------------------------------------------

def _run_tune(mlruns: Path, *args: str) -> None:
    """sweeps/tune.py in this process, trials in this process too."""
    script.main("tune", "", ["--workers", "1", *args])


def test_n_trials_is_a_total_and_a_rerun_resumes(tmp_path: Path) -> None:
    mlruns = tmp_path / "mlruns"
    _run_tune(mlruns, "--n-trials", "2", "--pruner", "none", *_study_args(mlruns, "num_epochs=3"))
    study = _study(mlruns, "tune-digits")
    parent_id = study.user_attrs["mlflow_parent_run_id"]
    assert len(study.trials) == 2
    _run_tune(mlruns, "--n-trials", "4", "--pruner", "none", *_study_args(mlruns, "num_epochs=3"))
    study = _study(mlruns, "tune-digits")
    assert [t.number for t in study.trials] == [0, 1, 2, 3], "topped up to 4, not 2 + 4"
    _run_tune(mlruns, "--n-trials", "4", *_study_args(mlruns, "num_epochs=3"))
    assert len(_study(mlruns, "tune-digits").trials) == 4, "already complete: nothing to do"
    assert study.user_attrs["mlflow_parent_run_id"] == parent_id, "the parent run is reused"
    assert_consistent(mlruns, study)
    client, _ = _runs(mlruns)
    parent = client.get_run(parent_id)
    assert parent.info.status == "FINISHED"
    assert parent.data.metrics["best_value"] == study.best_value
    assert parent.data.tags["best.lr"] == str(study.best_params["lr"])
    artifacts = {a.path for a in client.list_artifacts(parent_id)}
    assert {"optimization_history.png", "param_importances.png", "parallel_coordinates.png", "val_curves.png",
            "trials.csv", "best.json"} <= artifacts
    # the map needs training accuracy measured at the epoch's end (eval_train), not the running average
    assert "overfitting_map.png" not in artifacts
    child = client.get_run(study.best_trial.user_attrs["mlflow_run_id"])
    assert [m.step for m in client.get_metric_history(child.info.run_id, "val_acc")] == [1, 2, 3]
    assert child.data.params["lr"] == str(study.best_params["lr"]) and child.data.tags["worker"]


def test_pruning_really_cuts_epochs(tmp_path: Path) -> None:
    mlruns = tmp_path / "mlruns"
    _run_tune(mlruns, "--n-trials", "14", "--sampler", "random", "--pruner", "median",
              *_study_args(mlruns, "num_epochs=12", "batch_size=64", "lr=tag(log, interval(0.001, 1.0))"))
    study = _study(mlruns, "tune-digits")
    pruned = [t for t in study.trials if t.state == TrialState.PRUNED]
    assert pruned, "some slow learners must be pruned"
    client, _ = _runs(mlruns)
    for trial in pruned:
        run = client.get_run(trial.user_attrs["mlflow_run_id"])
        steps = [m.step for m in client.get_metric_history(run.info.run_id, "val_acc")]
        assert steps == list(range(1, trial.last_step + 1)) and len(steps) < 12
        assert run.info.status == "FINISHED" and run.data.tags["optuna.state"] == "PRUNED"
    assert_consistent(mlruns, study)


def test_a_failing_trial_does_not_stop_the_sweep(tmp_path: Path) -> None:
    mlruns = tmp_path / "mlruns"
    _run_tune(mlruns, "--n-trials", "3", "--sampler", "grid",
              *_study_args(mlruns, "num_epochs=2", "lr=choice(0.5, 1e38)", "batch_size=choice(64)"))
    study = _study(mlruns, "tune-digits")
    assert sorted(t.state.name for t in study.trials) == ["COMPLETE", "FAIL"], "grid of 2 caps n_trials"
    failed = next(t for t in study.trials if t.state == TrialState.FAIL)
    assert failed.user_attrs["fail_reason"].startswith("loss became NaN at epoch 1")
    client, _ = _runs(mlruns)
    run = client.get_run(failed.user_attrs["mlflow_run_id"])
    assert run.info.status == "FAILED" and run.data.tags["optuna.state"] == "FAIL"
    assert_consistent(mlruns, study)


def test_max_failure_rate_stops_a_sweep_where_everything_fails(tmp_path: Path,
                                                              capsys: pytest.CaptureFixture) -> None:
    mlruns = tmp_path / "mlruns"
    with pytest.raises(SystemExit) as stopped:
        _run_tune(mlruns, "--n-trials", "20", "--sampler", "random",
                  *_study_args(mlruns, "num_epochs=2", "lr=interval(1e37, 1e38)"))
    assert stopped.value.code == 1
    assert re.search(r"^error: 5 of 5 trials failed, more than max_failure_rate=0.5: stopping the sweep \(the last: "
                     r"TrainingDiverged: loss became (NaN|infinite) at epoch 1", capsys.readouterr().err, re.M)
    study = _study(mlruns, "tune-digits")
    assert len(study.trials) == 5
    client, runs = _runs(mlruns)
    parent = client.get_run(study.user_attrs["mlflow_parent_run_id"])
    assert parent.info.status == "FAILED" and "max_failure_rate" in parent.data.tags["failure_reason"]
    assert "RUNNING" not in {r.info.status for r in runs}


def _app_tracking(tmp_path: Path, study: optuna.Study, space, *overrides: str):
    """The app's sweep tracking callback, started on `study` as the sweeper starts it."""
    from hydra import compose, initialize_config_dir

    from softmax_sweep.sweeping.hydra_sweep import SweepTracking

    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        config = compose(config_name="train", return_hydra_config=True,
                         overrides=["sweep=tune", "data=digits", f"mlruns_dir={tmp_path}", *overrides])
    tracking = SweepTracking()
    tracking.on_sweep_start(study, config, space)
    return tracking


def test_the_sweep_says_when_the_best_sits_at_a_bound(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    space = parse_search_space({"lr": "interval(0.01, 0.02)"})
    study = optuna.create_study(direction="minimize", study_name="bounds")
    for lr, value in ((0.012, 0.80), (0.0199, 0.41), (0.015, 0.85)):
        study.add_trial(optuna.trial.create_trial(params={"lr": lr}, distributions=space.distributions, value=value))
    tracking = _app_tracking(tmp_path, study, space)
    with caplog.at_level("INFO", logger="softmax_sweep.sweep"):
        tracking.on_sweep_end(study, None)
    lines = [r.getMessage() for r in caplog.records if r.name == "softmax_sweep.sweep"]
    assert lines[-1] == ("runs table (MLflow UI): http://127.0.0.1:5000/#/experiments/1/runs?"
                         "workflowType=machine_learning&viewStateShareKey=study-bounds")
    assert lines[-2] == ("best lr=0.0199 sits at the upper bound of interval(0.01, 0.02); widen the range: "
                         "python -m softmax_sweep.train -m sweep=tune data=digits mlruns_dir=" + str(tmp_path) +
                         " hydra.sweeper.study_name=bounds-wider 'lr=interval(0.01, 0.03)'")
    run = tracking.client.get_run(tracking.parent_id)
    assert run.data.metrics["best_value"] == 0.41 and run.info.status == "FINISHED"
    assert run.data.params["search.lr"] == "interval(0.01, 0.02)" and run.data.params["batch_size"] == "256"


def test_val_curves_mark_the_best_trial_by_the_study_direction() -> None:
    """A val_loss study: the black curve is the lowest trial, and a diverging trial does not
    flatten the others (the axis stops above most curves and says where)."""
    from softmax_sweep.sweeping.report import _val_curves

    space = parse_search_space({"lr": "interval(0.01, 1)"})
    study = optuna.create_study(direction="minimize")
    curves = {0: [(1, 0.60), (2, 0.50)], 1: [(1, 2.0), (2, 3.8)], 2: [(1, 0.55), (2, 0.41)],
              3: [(1, 0.62), (2, 0.52)], 4: [(1, 0.58), (2, 0.47)]}
    for curve in curves.values():
        study.add_trial(optuna.trial.create_trial(params={"lr": 0.1}, distributions=space.distributions,
                                                  value=curve[-1][1]))
    ax = _val_curves(study.trials, study.direction, curves, "val_loss").axes[0]
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["best (trial 2)"]
    low, high = ax.get_ylim()
    assert high < 3.8 and low < 0.41 and ax.get_ylabel().startswith("val_loss (cut at ")
    study = optuna.create_study(direction="maximize")
    for number in range(3):
        study.add_trial(optuna.trial.create_trial(params={"lr": 0.1}, distributions=space.distributions,
                                                  value=[0.80, 0.86, 0.84][number]))
    ax = _val_curves(study.trials, study.direction, {n: [(1, v)] for n, v in enumerate([0.80, 0.86, 0.84])},
                     "val_acc").axes[0]
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["best (trial 1)"] and ax.get_ylabel() == "val_acc"


def test_importances_are_drawn_where_two_or_more_parameters_vary(tmp_path: Path) -> None:
    """A grid over lr alone has no param_importances.png (its one importance is 1 by definition);
    lr and batch_size get one."""
    from softmax_sweep.sweeping.report import write_report

    rng = np.random.default_rng(0)
    for spec, expected in (({"lr": "interval(0.01, 1)"}, False),
                           ({"lr": "interval(0.01, 1)", "batch_size": "choice(32, 256)"}, True)):
        space = parse_search_space(spec)
        study = optuna.create_study(direction="maximize")
        for _ in range(6):
            params = {"lr": float(rng.uniform(0.01, 1)), "batch_size": int(rng.choice([32, 256]))}
            study.add_trial(optuna.trial.create_trial(params={k: params[k] for k in spec},
                                                      distributions=space.distributions, value=float(rng.random())))
        folder = tmp_path / str(len(spec))
        folder.mkdir()
        written = {p.name for p in write_report(study, space, folder, {}, {})}
        assert ("param_importances.png" in written) is expected, written
        assert {"optimization_history.png", "parallel_coordinates.png", "trials.csv"} <= written


def _finish_out_of_order(study: optuna.Study, space, after_each) -> None:
    """Trials 0-5 with two in flight, trial 3 finishing while trial 2 still runs; 0 fails, 4 is pruned."""
    values = {0: TrialState.FAIL, 1: 0.7, 2: 0.3, 3: 0.5, 4: TrialState.PRUNED, 5: 0.2}
    running = [study.ask(space.distributions) for _ in range(2)]  # trials 0 and 1
    for number in (0, 1, 3, 2, 4, 5):
        trial = next(t for t in running if t.number == number)
        if isinstance(values[number], TrialState):
            study.tell(trial, state=values[number])
        else:
            study.tell(trial, values[number])
        running.remove(trial)
        after_each(study.trials[number])
        if len(study.trials) < 6:
            running.append(study.ask(space.distributions))
    assert [t.number for t in study.trials] == list(range(6))


def test_best_so_far_with_trials_finishing_out_of_order(tmp_path: Path) -> None:
    """Two trials in flight: trial 2 finishes after trial 3. The parent's best_value (the app's
    and the plugin's own MLflow callback) has one value per finished trial from the first complete
    one on, each the best of the complete trials up to that number: never worse than the step before."""
    from optuna_pruning.tracking import MlflowSweepTracking

    space = parse_search_space({"lr": "interval(0.01, 1)"})
    expected = [(1, 0.7), (2, 0.3), (3, 0.3), (4, 0.3), (5, 0.2)]

    study = optuna.create_study(direction="minimize", study_name="app")
    app = _app_tracking(tmp_path, study, space)
    _finish_out_of_order(study, space, lambda trial: app.on_trial_end(study, trial, None))
    app.on_sweep_end(study, None)
    history = app.client.get_metric_history(app.parent_id, "best_value")
    assert sorted({(m.step, m.value) for m in history}) == expected
    assert len({m.step for m in history}) == len(expected)

    study = optuna.create_study(direction="minimize", study_name="plugin")
    plugin = MlflowSweepTracking(f"sqlite:///{tmp_path / 'plugin.db'}", "plugin")
    plugin.on_sweep_start(study, None, space)
    _finish_out_of_order(study, space, lambda trial: plugin.on_trial_end(study, trial, None))
    plugin.on_sweep_end(study, None)
    history = plugin.client.get_metric_history(plugin.parent_id, "best_value")
    assert [(m.step, m.value) for m in history] == expected


# --- through real subprocesses ---------------------------------------------------------------

def test_optuna_sweep_from_hydra_multirun(tmp_path: Path) -> None:
    mlruns = tmp_path / "mlruns"
    done = subprocess.run([*TRAIN, "-m", "sweep=tune", "data=digits", f"mlruns_dir={mlruns}",
                           "hydra.sweeper.n_trials=4", "num_epochs=range(2, 4)"],
                          capture_output=True, text=True, timeout=600, env=clean_env())
    assert done.returncode == 0, done.stderr[-2000:]
    output = done.stdout + done.stderr
    # two trials in flight (sweep=tune's joblib launcher): any of them can be the last to finish
    assert re.search(r"\[4/4\] trial [0-3] ", output) and "best value" in output
    study = _study(mlruns, "tune-digits")
    assert len(study.trials) == 4
    assert {t.params["num_epochs"] for t in study.trials} <= {2, 3}
    assert_consistent(mlruns, study)
    client, _ = _runs(mlruns)
    child = client.get_run(study.trials[0].user_attrs["mlflow_run_id"])
    assert child.data.tags["hydra.output_dir"].startswith(str(mlruns / "hydra" / "multirun"))


def test_basic_multirun_has_one_parent_and_survives_a_failing_job(tmp_path: Path) -> None:
    mlruns = tmp_path / "mlruns"
    done = subprocess.run([*TRAIN, "-m", "data=digits", "num_epochs=2", "lr=0.5,1e38,-1", "batch_size=64,128",
                           f"mlruns_dir={mlruns}"], capture_output=True, text=True, timeout=600, env=clean_env())
    assert done.returncode == 1, done.stderr[-2000:]  # the exit code says that jobs failed
    assert "Traceback" not in done.stdout + done.stderr
    assert done.stderr.strip().splitlines()[-1] == "error: 4 of 6 jobs failed (their reasons are in the table above)"
    table = done.stdout[done.stdout.index("job  overrides"):].splitlines()
    assert table[-1].startswith("runs table (MLflow UI): http://127.0.0.1:5000/#/experiments/")
    table = table[:-1]
    assert len(table) == 7 and sum("loss became NaN at epoch 1" in row for row in table) == 2
    assert sum("lr must be a positive number" in row for row in table) == 2  # refused before training: recorded too
    client, runs = _runs(mlruns)
    (parent,) = [r for r in runs if r.data.tags.get("sweep.kind") == "hydra-basic"]
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    assert sorted(r.info.status for r in children) == ["FAILED"] * 4 + ["FINISHED"] * 2
    assert parent.info.status == "FINISHED" and parent.data.metrics["jobs_failed"] == 4
    # named by what the grid varied; the parent gets the sweep report, the jobs as trials
    assert sorted(r.info.run_name for r in children) == ["lr=-1 bs=128", "lr=-1 bs=64", "lr=0.5 bs=128",
                                                        "lr=0.5 bs=64", "lr=1e+38 bs=128", "lr=1e+38 bs=64"]
    artifacts = {a.path for a in client.list_artifacts(parent.info.run_id)}
    assert {"optimization_history.png", "val_curves.png", "trials.csv"} <= artifacts
    best = client.get_metric_history(parent.info.run_id, "best_value")
    finished = [r.data.metrics["best_val_acc"] for r in children if r.info.status == "FINISHED"]
    assert max(m.value for m in best) == max(finished)


def test_study_scripts_end_to_end_and_help(tmp_path: Path) -> None:
    help_text = subprocess.run([*TUNE, "--help"], capture_output=True, text=True, env=clean_env()).stdout
    for flag in ("--n-trials", "--storage", "--study-name", "--sampler", "--pruner", "--timeout", "OVERRIDE"):
        assert flag in help_text
    mlruns = tmp_path / "mlruns"
    done = subprocess.run([*OVERFIT, "--seeds", "2", "--n-trials", "6", "data=digits", "num_epochs=8",
                           "data.train_size=choice(100)", "lr=choice(1.0)", f"mlruns_dir={mlruns}"],
                          capture_output=True, text=True, timeout=600, env=clean_env())
    assert done.returncode == 0, done.stderr[-2000:]
    output = done.stdout + done.stderr
    assert "enqueue: 20 of 26 trials lie outside the search space: not queued" in output
    assert "trained 12 runs together (100 training images, batch 32, 2 seeds, each its own minibatches)" in output, \
        "no pruner: each trial's seeds train at once, as lanes of one stack"
    study = _study(mlruns, "overfit-digits")
    assert len(study.trials) == 6, "the queued trials of one training-set size and lr: six remedies"
    assert {t.params["remedy"] for t in study.trials} == {"none", "weight_decay_1e-4", "weight_decay",
                                                           "weight_decay_1e-2", "early_stopping", "lr_decay"}
    assert all(len(t.user_attrs["seed_values"]) == 2 for t in study.trials)
    assert output.index("**Test accuracy falls again because") < output.index("## The evidence")
    assert "With 100 images at lr 1" in output and "weight decay 0.01" in output
    client, runs = _runs(mlruns)
    (parent,) = [r for r in runs if r.data.tags.get("sweep.kind") == "optuna"]
    artifacts = {a.path for a in client.list_artifacts(parent.info.run_id)}
    assert {"answer.md", "exercise2_curves.png", "exercise2_remedies.png", "overfitting_map.png"} <= artifacts
    seed_runs = [r for r in runs if "seed" in r.data.tags]
    assert len(seed_runs) == 12 and all("train_eval_acc" in r.data.metrics for r in seed_runs)
    for trial in study.trials:  # each seed's run nests under its trial's run, which holds their mean
        nested = [r for r in seed_runs if r.data.tags["mlflow.parentRunId"] == trial.user_attrs["mlflow_run_id"]]
        assert sorted(r.data.tags["seed"] for r in nested) == ["0", "1"]
        assert sorted(r.info.run_id for r in nested) == sorted(trial.user_attrs["seed_run_ids"])
        assert len({r.data.tags["hydra.output_dir"] for r in nested}) == 1, "a trial's seeds write in its job's folder"
        trial_run = client.get_run(trial.user_attrs["mlflow_run_id"]).data.metrics
        values = [r.data.metrics["best_val_acc"] for r in nested]
        assert trial_run["best_val_acc"] == pytest.approx(sum(values) / 2) == pytest.approx(trial.value)
    assert len({r.data.tags["hydra.output_dir"] for r in seed_runs}) == 6, "each trial its own folder"
    assert "configurations.csv" in artifacts
    assert_consistent(mlruns, study)
    bad = subprocess.run([*TUNE, "--sampler", "annealing"], capture_output=True, text=True, env=clean_env())
    assert bad.returncode == 2 and bad.stderr.strip().splitlines() == [
        "error: In 'hydra/sweeper/optuna_pruning': Could not find 'hydra/sweeper/optuna_sampler/annealing'; available "
        "options in 'hydra/sweeper/optuna_sampler': cmaes, gp, grid, motpe, nsgaii, qmc, random, tpe"]


def test_sigint_leaves_nothing_running_and_the_rerun_resumes(tmp_path: Path) -> None:
    mlruns = tmp_path / "mlruns"
    command = [*TUNE, "--n-trials", "2", "--workers", "1", "--pruner", "none", "data=digits", "num_epochs=2500",
               "batch_size=256", f"mlruns_dir={mlruns}"]
    proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=clean_env())
    wait_for_count(mlruns / "mlflow.db", proc, "SELECT count(*) FROM metrics m JOIN tags t ON m.run_uuid = t.run_uuid "
                   "WHERE t.key = 'optuna.trial_number' AND m.key = 'val_acc'", 1, "a trial logging epochs")
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err[-3000:]
    assert "Traceback" not in err
    statuses = run_statuses(mlruns / "mlflow.db")
    assert sorted(statuses) == ["KILLED", "KILLED"], "the trial's run and the parent run"
    study = _study(mlruns, "tune-digits")
    assert [t.state for t in study.trials] == [TrialState.FAIL]
    parent_id = study.user_attrs["mlflow_parent_run_id"]

    rerun = [a.replace("num_epochs=2500", "num_epochs=3") for a in command]  # a fixed value, not searched
    done = subprocess.run(rerun, capture_output=True, text=True, timeout=600, env=clean_env())
    assert done.returncode == 0, done.stderr[-2000:]
    study = _study(mlruns, "tune-digits")
    assert [t.state for t in study.trials] == [TrialState.FAIL, TrialState.COMPLETE], "resumed, not restarted"
    assert study.user_attrs["mlflow_parent_run_id"] == parent_id
    assert_consistent(mlruns, study)


def test_hydra_sweeper_on_a_database_storage_with_heartbeats(tmp_path: Path) -> None:
    mlruns = tmp_path / "mlruns"
    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    done = subprocess.run([*TRAIN, "-m", "sweep=tune", "data=digits", f"mlruns_dir={mlruns}", "num_epochs=60",
                           "hydra.sweeper.n_trials=2", "batch_size=256", f"hydra.sweeper.storage={storage}",
                           "hydra.sweeper.heartbeat_interval=1", "hydra/sweeper/optuna_pruner=none"],
                          capture_output=True, text=True, timeout=600, env=clean_env())
    assert done.returncode == 0, done.stderr[-2000:]
    study = optuna.load_study(study_name="tune-digits", storage=storage)
    assert [t.state for t in study.trials] == [TrialState.COMPLETE] * 2
    with contextlib.closing(sqlite3.connect(tmp_path / "optuna.db")) as con:
        beating = {row[0] for row in con.execute("SELECT trial_id FROM trial_heartbeats")}
    assert beating == {t._trial_id for t in study.trials}, "the sweeper recorded heartbeats while trials ran"


def test_ctrl_c_while_the_report_is_written_leaves_nothing_running(tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """The report step comes after the last trial; an interrupt there used to leave the parent
    run RUNNING while the message said every unfinished run was marked KILLED."""
    import softmax_sweep.sweeping.sweep_files as parent_module

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    mlruns = tmp_path / "mlruns"
    with monkeypatch.context() as mp:
        mp.setattr(parent_module, "write_report", interrupted)
        with pytest.raises(SystemExit) as stopped:
            _run_tune(mlruns, "--n-trials", "2", "--pruner", "none", *_study_args(mlruns, "num_epochs=2"))
        assert stopped.value.code == 130
    client, runs = _runs(mlruns)
    (parent,) = [r for r in runs if r.data.tags.get("sweep.kind") == "optuna"]
    assert parent.info.status == "KILLED"
    assert parent.data.tags["failure_reason"] == "interrupted while writing the sweep report"
    assert "RUNNING" not in run_statuses(mlruns / "mlflow.db")
    _run_tune(mlruns, "--n-trials", "2", "--pruner", "none", *_study_args(mlruns, "num_epochs=2"))
    _, runs = _runs(mlruns)
    parents = [r for r in runs if r.data.tags.get("sweep.kind") == "optuna"]
    assert [p.info.status for p in parents] == ["FINISHED"], "the rerun reopens the same parent and ends it"


@pytest.mark.parametrize("launcher", ["joblib", pytest.param("submitit_local", marks=pytest.mark.slow)])
def test_pruning_under_launchers_that_run_jobs_in_other_processes(launcher: str, tmp_path: Path) -> None:
    """Under joblib and submitit (SLURM's code path) a job's result, a pruned trial's exception
    included, is pickled back to the sweeper: pruned trials are PRUNED in Optuna and in MLflow.
    (median_early: sweep=tune's own pruner waits for 5 complete trials, which 2 in flight of 6 may not give.)"""
    mlruns = tmp_path / "mlruns"
    done = subprocess.run([*TRAIN, "-m", "sweep=tune", "data=digits", f"hydra/launcher={launcher}",
                           "hydra/sweeper/optuna_pruner=median_early",
                           "hydra.sweeper.n_jobs=2", "hydra.sweeper.n_trials=8", "num_epochs=range(2, 6)",
                           f"mlruns_dir={mlruns}"], capture_output=True, text=True, timeout=600, env=clean_env())
    assert done.returncode == 0, done.stderr[-2000:]
    assert "Traceback" not in done.stdout + done.stderr
    assert "Error executing job" not in done.stdout + done.stderr, "a pruned trial is no error"
    study = _study(mlruns, "tune-digits")
    states = [t.state for t in study.trials]
    assert states.count(TrialState.PRUNED) >= 1 and states.count(TrialState.COMPLETE) >= 3, states
    assert_consistent(mlruns, study)
    client, _ = _runs(mlruns)
    workers = {client.get_run(t.user_attrs["mlflow_run_id"]).data.tags["worker"] for t in study.trials}
    assert len(workers) >= 2, "the jobs ran in other processes than the sweeper (in-process: one worker)"


def test_script_flags_mean_what_they_say(tmp_path: Path) -> None:
    """--n-trials 0 is refused (it used to mean 'not given': 30 trials); --workers is capped by the
    cores instead of starting processes that only share them."""
    mlruns = tmp_path / "mlruns"
    zero = subprocess.run([*TUNE, "--n-trials", "0", *_study_args(mlruns)], capture_output=True, text=True,
                          timeout=300, env=clean_env())
    assert zero.returncode == 2 and zero.stderr.strip().splitlines() == [
        "error: argument --n-trials: must be at least 1, got 0 (sweeps/tune.py --help lists the flags)"]
    many = subprocess.run([*TUNE, "--n-trials", "2", "--workers", "8", "--pruner", "none",
                           *_study_args(mlruns, "num_epochs=2")], capture_output=True, text=True, timeout=300,
                          env=clean_env())
    assert many.returncode == 0, many.stderr[-2000:]
    assert f"--workers 8 capped at {os.cpu_count()} ({os.cpu_count()} cores)" in many.stderr
    assert len(_study(mlruns, "tune-digits").trials) == 2


def test_sigkill_leaves_nothing_running_once_the_store_is_used_again(tmp_path: Path) -> None:
    """A study script killed with SIGKILL (or a power cut) on the default journal storage left its
    trial RUNNING in Optuna and its runs RUNNING in MLflow forever, and the rerun said '0 trials
    to go'. The next start on the store reaps what the dead process left and retries the trial."""
    mlruns = tmp_path / "mlruns"
    proc = subprocess.Popen([*TUNE, "--n-trials", "2", "--workers", "1", "--pruner", "none",
                             *_study_args(mlruns, "num_epochs=100000")],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=clean_env())
    wait_for_count(mlruns / "mlflow.db", proc, "SELECT count(*) FROM metrics WHERE key = 'val_acc'", 2,
                   "two epochs of the first trial")
    proc.kill()
    proc.wait(timeout=60)
    killed_trial = _study(mlruns, "tune-digits").trials[0]
    assert killed_trial.state == TrialState.RUNNING
    again = subprocess.run([*TUNE, "--n-trials", "2", "--workers", "1", "--pruner", "none",
                            *_study_args(mlruns, "num_epochs=2")],
                           capture_output=True, text=True, timeout=600, env=clean_env())
    assert again.returncode == 0, again.stderr[-2000:]
    assert "marked FAIL and queued again" in again.stdout + again.stderr
    study = _study(mlruns, "tune-digits")
    first = study.trials[0]
    assert first.state == TrialState.FAIL and first.user_attrs["fail_reason"].startswith("its worker ")
    retried = [t for t in study.trials if t.system_attrs.get("failed_trial") == 0]
    assert len(retried) == 1 and retried[0].state == TrialState.COMPLETE and retried[0].params == first.params
    assert sum(t.state == TrialState.COMPLETE for t in study.trials) == 2
    assert "RUNNING" not in run_statuses(mlruns / "mlflow.db")
    client, _ = _runs(mlruns)
    assert client.get_run(first.user_attrs["mlflow_run_id"]).info.status in ("KILLED", "FAILED")
    assert_consistent(mlruns, study)  # the killed trial's run says FAIL, as Optuna does


def test_sweeps_started_together_on_a_new_study_share_one_parent(tmp_path: Path) -> None:
    """Each of several sweeps starting on a new study at once could create its own parent run;
    they now all keep the earliest one (the others' are deleted)."""
    mlruns = tmp_path / "mlruns"
    procs = [subprocess.Popen([*TUNE, "--n-trials", "4", "--workers", "1", "--pruner", "none",
                               *_study_args(mlruns, "num_epochs=2")],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=clean_env())
             for _ in range(4)]
    assert [p.wait(timeout=300) for p in procs] == [0] * 4, [p.stderr.read()[-1500:] for p in procs]
    client, runs = _runs(mlruns)  # active runs only
    parents = [r for r in runs if r.data.tags.get("sweep.kind") == "optuna"]
    assert len(parents) == 1
    study = _study(mlruns, "tune-digits")
    assert study.user_attrs["mlflow_parent_run_id"] == parents[0].info.run_id
    children = [r for r in runs if "optuna.trial_number" in r.data.tags]
    assert children and {r.data.tags["mlflow.parentRunId"] for r in children} == {parents[0].info.run_id}


@pytest.mark.parametrize("storage, expected", [
    ("journal:///proc/no-such-folder/optuna.journal",
     "cannot use the journal file /proc/no-such-folder/optuna.journal"),
    ("grpc://127.0.0.1:1", "no Optuna storage proxy answers at grpc://127.0.0.1:1"),
])
def test_an_unusable_storage_is_one_line(storage: str, expected: str, tmp_path: Path) -> None:
    mlruns = tmp_path / "mlruns"
    done = subprocess.run([*TUNE, "--storage", storage, *_study_args(mlruns)], capture_output=True, text=True,
                          timeout=300, env=clean_env())
    assert done.returncode == 2, done.stderr[-2000:]
    lines = done.stderr.strip().splitlines()
    assert lines[-1].startswith(f"error: {expected}") and "Traceback" not in done.stderr
    assert "RUNNING" not in run_statuses(mlruns / "mlflow.db")


def test_a_complete_study_says_so_in_one_line(tmp_path: Path) -> None:
    """Exercise 1's two forms run one after the other: the same study twice does nothing the second
    time and says how to run more trials or a new study; the parent run ends as it was."""
    mlruns = tmp_path / "mlruns"
    command = [*TUNE, "--n-trials", "2", "--workers", "1", "data=digits", "num_epochs=range(2, 4)",
               f"mlruns_dir={mlruns}"]
    first = subprocess.run(command, capture_output=True, text=True, timeout=600, env=clean_env())
    assert first.returncode == 0, first.stderr[-2000:]
    again = subprocess.run(command, capture_output=True, text=True, timeout=600, env=clean_env())
    assert again.returncode == 0, again.stderr[-2000:]
    lines = [line for line in (again.stdout + again.stderr).splitlines() if "already has" in line]
    assert len(lines) == 1 and "study tune-digits already has its 2 trials" in lines[0], again.stderr
    assert "More trials: hydra.sweeper.n_trials=4; a new study: hydra.sweeper.study_name=NAME" in lines[0]
    assert len(_study(mlruns, "tune-digits").trials) == 2
    client, runs = _runs(mlruns)
    assert {r.info.status for r in runs} == {"FINISHED"}
