"""Every file in conf/sweep/ sets what a trial trains with: its top-level values win over
conf/train.yaml's, from `-m sweep=NAME` and from the study scripts alike."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from mlflow.tracking import MlflowClient

from softmax_sweep.config import CONF_DIR
from softmax_sweep.sweeping import script

from conftest import clean_env

SWEEPS = sorted(p.stem for p in (CONF_DIR / "sweep").glob("*.yaml") if p.stem != "none")  # none: no search space


def file_values(name: str) -> dict:
    tree = yaml.safe_load((CONF_DIR / "sweep" / f"{name}.yaml").read_text()) or {}
    return {k: v for k, v in tree.items() if k not in ("defaults", "hydra")}


def trained_params(mlruns: Path) -> list[dict[str, str]]:
    client = MlflowClient(f"sqlite:///{mlruns / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("softmax-sweep")
    runs = client.search_runs([experiment.experiment_id])
    return [r.data.params for r in runs if "mlflow.parentRunId" in r.data.tags]


def assert_trained_with(mlruns: Path, values: dict) -> None:
    (params,) = trained_params(mlruns)
    for key, value in values.items():
        assert params[key] == str(value), f"{key}: the file says {value}, the trial trained with {params[key]}"


def test_the_sweep_files_set_values_that_differ_from_the_defaults() -> None:
    assert file_values("overfit")["num_epochs"] == 60 and file_values("overfit")["batch_size"] == 32
    assert file_values("overfit")["eval_train"] is True
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        assert compose(config_name="train", overrides=["sweep=overfit"]).seeds == 10, "the file's seeds win"


def test_exercise_1_picks_by_validation_loss_with_two_trials_in_flight() -> None:
    """sweep=tune minimizes val_loss (the direction follows optimized_metric), prunes with the
    measured median_warmup pruner and runs two trials at a time (joblib; the study script's workers)."""
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        tune = compose(config_name="train", overrides=["sweep=tune"], return_hydra_config=True)
        by_acc = compose(config_name="train", overrides=["sweep=tune", "optimized_metric=val_acc"],
                         return_hydra_config=True)
    assert tune.optimized_metric == "val_loss" and tune.hydra.sweeper.direction == "minimize"
    assert by_acc.hydra.sweeper.direction == "maximize"
    assert tune.hydra.runtime.choices["hydra/launcher"] == "joblib" and tune.hydra.sweeper.n_jobs == 2
    pruner = tune.hydra.sweeper.optuna_pruner
    assert (pruner.n_startup_trials, pruner.n_warmup_steps) == (5, 3)
    args = script.build_parser("tune", "").parse_intermixed_args([])
    assert script.hydra_overrides("tune", args) == ["sweep=tune"], "the sweep file decides"


@pytest.mark.parametrize("name", SWEEPS)
def test_hydra_multirun_trains_with_the_sweep_files_values(name: str, tmp_path: Path) -> None:
    mlruns = tmp_path / "mlruns"
    done = subprocess.run([sys.executable, "-m", "softmax_sweep.train", "-m", f"sweep={name}", "data=digits",
                           "hydra.sweeper.n_trials=1", "seeds=1",
                           f"mlruns_dir={mlruns}"],
                          capture_output=True, text=True, timeout=600, env=clean_env())
    assert done.returncode == 0, done.stderr[-2000:]
    assert_trained_with(mlruns, {k: v for k, v in file_values(name).items() if k != "seeds"})  # seeds=1 here


@pytest.mark.parametrize("name", [n for n in SWEEPS if (CONF_DIR.parent / "sweeps" / f"{n}.py").exists()])
def test_study_scripts_train_with_the_sweep_files_values(name: str, tmp_path: Path) -> None:
    mlruns = tmp_path / "mlruns"
    script.main(name, "", ["--n-trials", "1", "--seeds", "1", "data=digits", f"mlruns_dir={mlruns}"])
    assert_trained_with(mlruns, {k: v for k, v in file_values(name).items() if k != "seeds"})  # --seeds 1 here
