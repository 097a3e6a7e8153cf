"""The optuna_pruning sweeper as any Hydra app meets it: a small app that is not softmax-sweep
(tests/foreign_app), hydra-optuna-sweeper's documented behaviour and its test suite's cases, the
launchers that run jobs in other processes, trials in flight, and upstream's plugin installed
beside it."""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
from omegaconf import OmegaConf
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.trial import TrialState

from optuna_pruning.search_space import parse_search_space
from optuna_pruning.storages import make_storage

APP = Path(__file__).parent / "foreign_app" / "app.py"


@pytest.mark.parametrize("text, expected", [
    ("key=choice(1,2)", CategoricalDistribution([1, 2])),
    ("key=choice(true, false)", CategoricalDistribution([True, False])),
    ("key=choice('hello', 'world')", CategoricalDistribution(["hello", "world"])),
    ("key=range(1,3)", IntDistribution(1, 2)),  # Hydra's range stops before 3 (upstream samples 3 too)
    ("key=interval(1, 5)", FloatDistribution(1, 5)),
    ("key=int(interval(1, 5))", IntDistribution(1, 5)),
    ("key=tag(log, interval(1, 5))", FloatDistribution(1, 5, log=True)),
    ("key=tag(log, int(interval(1, 5)))", IntDistribution(1, 5, log=True)),
    ("key=range(0.5, 5.5, step=1)", FloatDistribution(0.5, 4.5, step=1)),
])
def test_overrides_as_distributions(text: str, expected) -> None:
    """hydra-optuna-sweeper's table of search-space overrides, as this sweeper reads them."""
    assert parse_search_space({}, [text]).distributions["key"] == expected


def test_shuffle_fixed_values_and_deletes() -> None:
    assert set(parse_search_space({}, ["key=shuffle(range(1,3))"]).distributions["key"].choices) == {1, 2}
    space = parse_search_space({"key1": "choice(1,2)", "key2": "5"}, ["~z", "~y=10", "+w=3"])
    assert space.distributions == {"key1": CategoricalDistribution([1, 2])}
    assert space.fixed == {"key2": "5", "+w": "3"} and space.deletions == ("~z", "~y=10")


def test_upstream_sampler_keys_without_a_sampler_node(tmp_path: Path) -> None:
    """`hydra.sweeper.sampler.seed=N` as upstream's users type it: the chosen sampler is the
    `sampler` node, so a config need not write one (before: "Key 'seed' is not in struct")."""
    for i in range(3):
        (tmp_path / str(i)).mkdir()
    runs = [run_app(tmp_path / str(i), "hydra/sweeper/optuna_sampler=random", "hydra.sweeper.sampler.seed=7",
                    "hydra.sweeper.n_trials=4", "x=interval(-5, 5)") for i in range(2)]
    found = [results(tmp_path / str(i)) for i in range(2)]
    assert found[0] == found[1], "one seed, one sequence of trials"
    other = run_app(tmp_path / "2", "hydra/sweeper/optuna_sampler=random", "hydra.sweeper.sampler.seed=8",
                    "hydra.sweeper.n_trials=4", "x=interval(-5, 5)")
    assert results(tmp_path / "2") != found[0] and all(r.returncode == 0 for r in [*runs, other])


def test_motpe_says_it_is_gone() -> None:
    """Optuna 4 removed MOTPESampler; hydra/sweeper/optuna_sampler=motpe says what to use."""
    from optuna_pruning import SweeperError
    from optuna_pruning.samplers import make_sampler

    with pytest.raises(SweeperError, match="The 'motpe' sampler was removed in Optuna 4.0. Use .*=tpe"):
        make_sampler({"_target_": "optuna_pruning.samplers.motpe_removed"}, parse_search_space({}))


def run_app(tmp_path: Path, *overrides: str, ok: bool = True, env: dict | None = None,
            timeout: int = 600) -> subprocess.CompletedProcess:
    done = subprocess.run([sys.executable, str(APP), "-m", f"hydra.sweep.dir={tmp_path / 'sweep'}", *overrides],
                          capture_output=True, text=True, timeout=timeout, cwd=tmp_path,
                          env={**os.environ, **(env or {})})
    if ok:
        assert done.returncode == 0, done.stderr[-3000:]
    return done


def results(tmp_path: Path) -> dict:
    return OmegaConf.to_container(OmegaConf.load(tmp_path / "sweep" / "optimization_results.yaml"))


def trial_files(tmp_path: Path) -> list[tuple[int, float, float]]:
    """(trial number, start, end) of every job, from the files the app wrote."""
    rows = []
    for path in (tmp_path / "sweep").glob("*/trial.txt"):
        number, start, end = path.read_text().split()
        rows.append((int(number), float(start), float(end)))
    return sorted(rows)


@pytest.mark.parametrize("with_commandline", [True, False])
def test_the_upstream_sphere_example_in_memory(tmp_path: Path, with_commandline: bool) -> None:
    """hydra-optuna-sweeper's example: 20 trials in memory (storage: null) minimize x^2 + y^2; the
    search space from the config or the command line; optimization_results.yaml as upstream writes it."""
    space = ["x=range(-5.5, 5.5, step=0.5)", "y=choice(-5, 0, 5)"] if with_commandline else []
    done = run_app(tmp_path, *space)
    found = results(tmp_path)
    assert found["name"] == "optuna"
    assert found["best_value"] == found["best_params"]["x"] ** 2 + found["best_params"]["y"] ** 2
    assert found["best_value"] <= 2.27  # as upstream's test: TPE finds the bowl within 20 trials
    assert len(trial_files(tmp_path)) == 20
    assert "[20/20] trial 19 COMPLETE" in done.stdout


def test_a_lightning_hydra_template_search_space_runs_unchanged(tmp_path: Path) -> None:
    """conf/hparams_search/lht_style.yaml is written as lightning-hydra-template writes one for
    hydra-optuna-sweeper (`override /hydra/sweeper: optuna`, upstream's class in `_target_`, a
    `sampler:` node): it runs on this sweeper where upstream is not installed (as here)."""
    done = run_app(tmp_path, "hparams_search=lht_style")
    assert len(trial_files(tmp_path)) == 6 and "[6/6] trial 5 COMPLETE" in done.stdout
    found = results(tmp_path)
    assert found["best_value"] == pytest.approx(found["best_params"]["x"] ** 2 + found["best_params"]["y"] ** 2)


def test_grid_sampler_caps_n_trials_at_the_grid(tmp_path: Path) -> None:
    run_app(tmp_path, "hydra/sweeper/optuna_sampler=grid", "x=choice(-1, 0, 1)", "y=range(-1, 2)")
    assert [n for n, _, _ in trial_files(tmp_path)] == list(range(9))
    assert results(tmp_path)["best_value"] == 0


def test_multi_objective_writes_the_pareto_front(tmp_path: Path) -> None:
    run_app(tmp_path, "objectives=2", "hydra.sweeper.direction=[minimize,minimize]",
            "hydra/sweeper/optuna_sampler=nsgaii", "hydra.sweeper.n_trials=12", "x=range(0, 3)", "y=range(0, 2)")
    front = results(tmp_path)["solutions"]
    assert front and all(set(s) == {"params", "values"} and len(s["values"]) == 2 for s in front)
    points = [tuple(s["values"]) for s in front]
    for a in points:  # no solution of the front is dominated by another
        assert not any(b != a and b[0] <= a[0] and b[1] <= a[1] for b in points)


def test_custom_search_space_delete_and_int_cast(tmp_path: Path) -> None:
    """custom_search_space adds parameters that depend on others; `~key` reaches every job;
    int(interval(...)) samples integers."""
    storage = f"sqlite:///{tmp_path / 'study.db'}"
    run_app(tmp_path, "hydra.sweeper.custom_search_space=app.extend", "hydra.sweeper.n_trials=5", "~extra",
            "must_not_have=extra", "y=int(interval(-3, 3))", f"hydra.sweeper.storage={storage}")
    study = optuna.load_study(study_name="sphere", storage=storage)
    assert len(study.trials) == 5 and all(t.state == TrialState.COMPLETE for t in study.trials)
    for trial in study.trials:
        assert abs(trial.params["z"] - trial.params["x"]) <= 0.5
        assert 0 <= trial.params["+w"] <= 1 and isinstance(trial.params["y"], int)


@pytest.mark.parametrize("max_failure_rate", [0.5, 1.0])
def test_failure_rate(tmp_path: Path, max_failure_rate: float) -> None:
    """Trials that fail are FAIL in Optuna; the sweep stops once more than max_failure_rate of
    the finished trials failed (x above 0 fails about half of them)."""
    done = run_app(tmp_path, "fail_above=-4", f"hydra.sweeper.max_failure_rate={max_failure_rate}",
                   "hydra.sweeper.n_trials=10", ok=max_failure_rate == 1.0)
    if max_failure_rate < 1:  # as upstream's test: the task's own exception is in stderr; here without a traceback
        assert done.returncode == 1 and "more than max_failure_rate=0.5" in done.stderr
        assert "RuntimeError: x=" in done.stderr and "Traceback" not in done.stderr
    else:
        assert done.stdout.count(" FAIL: x=") >= 5


@pytest.mark.parametrize("launcher", ["basic", "joblib", "submitit_local"])
def test_pruning_in_any_process(tmp_path: Path, launcher: str) -> None:
    """A task function that reports a value per step is pruned in the sweeper's process (basic)
    and in others (joblib, submitit: SLURM's code path), through the study's storage; pruned and
    failed trials are recorded the same way under every launcher."""
    storage = f"journal:///{tmp_path / 'study.journal'}"
    done = run_app(tmp_path, f"hydra/launcher={launcher}", "hydra/sweeper/optuna_pruner=median",
                   "hydra.sweeper.optuna_pruner.n_startup_trials=2", f"hydra.sweeper.storage={storage}",
                   "hydra/sweeper/optuna_sampler=grid", "hydra.sweeper.n_jobs=2", "steps=4", "fail_above=4.8",
                   "hydra.sweeper.max_failure_rate=1", "x=choice(-5, 0.5, -0.5, 4.9, 3)", "y=choice(0, 5)")
    # Hydra's JobReturn.return_value announces "Error executing job" on each read: a pruned trial is no
    # error, and a failed one has its own line with its reason
    assert "Error executing job" not in done.stdout + done.stderr
    study = optuna.load_study(study_name="sphere", storage=optuna.storages.JournalStorage(
        optuna.storages.journal.JournalFileBackend(str(tmp_path / "study.journal"))))
    states = {t.state for t in study.trials}
    assert states == {TrialState.PRUNED, TrialState.COMPLETE, TrialState.FAIL}, [t.state for t in study.trials]
    assert len(study.trials) == 10
    for trial in study.trials:
        if trial.state == TrialState.PRUNED:
            assert trial.intermediate_values and trial.last_step < 4
        elif trial.state == TrialState.FAIL:
            assert trial.params["x"] == 4.9 and "above" in trial.user_attrs["fail_reason"]
    assert not [t for t in study.trials if t.state == TrialState.RUNNING]


def test_pruning_needs_a_storage_out_of_process(tmp_path: Path) -> None:
    done = run_app(tmp_path, "hydra/launcher=joblib", "hydra/sweeper/optuna_pruner=median", ok=False)
    assert done.returncode != 0 and "set hydra.sweeper.storage" in done.stderr


def test_trials_in_flight_do_not_wait_for_the_slowest(tmp_path: Path) -> None:
    """n_jobs 2 under joblib: a new trial starts as soon as one finishes, while a slow one goes on
    (batches of 2 would start trials only when both of a batch are done)."""
    run_app(tmp_path, "hydra/launcher=joblib", "hydra.sweeper.n_jobs=2", "hydra.sweeper.n_trials=6",
            "hydra/sweeper/optuna_sampler=grid", "x=choice(8, 0, 0.1, 0.2, 0.3, 0.4)", "y=0", "steps=1",
            "sleep=0.5")
    rows = trial_files(tmp_path)
    assert len(rows) == 6
    slow = max(rows, key=lambda r: r[2] - r[1])
    overlapping = [r for r in rows if r is not slow and slow[1] < r[1] and r[2] < slow[2]]
    assert len(overlapping) >= 2, f"trials started and ended while the slow one ran: {rows}"


def test_beside_hydra_optuna_sweeper(tmp_path: Path) -> None:
    """Both plugins installed: `hydra/sweeper=optuna` and its sampler group stay upstream's, and
    this plugin runs under its own names."""
    target = tmp_path / "upstream"
    got = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(target),
                          "hydra-optuna-sweeper"], capture_output=True, text=True, timeout=300)
    if got.returncode != 0:
        pytest.skip(f"hydra-optuna-sweeper cannot be installed here: {got.stderr.strip().splitlines()[-1:]}")
    env = {"PYTHONPATH": os.pathsep.join([str(target), os.environ.get("PYTHONPATH", "")])}
    upstream = subprocess.run([sys.executable, str(APP), "hydra/sweeper=optuna", "hydra/sweeper/sampler=random",
                               "--cfg", "hydra", "-p", "hydra.sweeper"], capture_output=True, text=True,
                              cwd=tmp_path, env={**os.environ, **env}, timeout=120)
    assert upstream.returncode == 0, upstream.stderr[-2000:]
    node = OmegaConf.create(upstream.stdout.split("\n", 1)[1])
    assert node._target_ == "hydra_plugins.hydra_optuna_sweeper.optuna_sweeper.OptunaSweeper"
    assert node.sampler._target_ == "optuna.samplers.RandomSampler" and node.sampler.seed == 123
    ours = run_app(tmp_path, "hydra.sweeper.n_trials=3", env=env)
    assert len(trial_files(tmp_path)) == 3 and "[3/3] trial 2 COMPLETE" in ours.stdout


def test_mlflow_tracking_for_any_app(tmp_path: Path) -> None:
    """The plugin's own MLflow callback: one parent run per study, one child per trial with its
    state, parameters, value and reported values by step, best_value by trial number."""
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    storage = f"journal:///{tmp_path / 'study.journal'}"
    run_app(tmp_path, "+hydra.sweeper.callbacks.mlflow={_target_:optuna_pruning.tracking.MlflowSweepTracking,"
                      f"tracking_uri:'{uri}',experiment_name:sphere}}", f"hydra.sweeper.storage={storage}",
            "hydra/sweeper/optuna_pruner=median", "hydra.sweeper.optuna_pruner.n_startup_trials=2",
            "hydra/sweeper/optuna_sampler=grid", "steps=3", "fail_above=4.8", "hydra.sweeper.max_failure_rate=1",
            "x=choice(-5, 0.5, -0.5, 4.9, 3)", "y=choice(0, 5)")
    study = optuna.load_study(study_name="sphere", storage=optuna.storages.JournalStorage(
        optuna.storages.journal.JournalFileBackend(str(tmp_path / "study.journal"))))
    client = MlflowClient(uri)
    runs = client.search_runs([client.get_experiment_by_name("sphere").experiment_id])
    (parent,) = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    children = {int(r.data.tags["optuna.trial_number"]): r for r in runs if r is not parent}
    assert parent.info.status == "FINISHED" and parent.info.run_name == "study-sphere"
    assert sorted(children) == [t.number for t in study.trials] and len(children) == 10
    for trial in study.trials:
        child = children[trial.number]
        assert child.data.tags["optuna.state"] == trial.state.name
        assert child.data.params == {k: str(v) for k, v in trial.params.items()}
        steps = [m.step for m in client.get_metric_history(child.info.run_id, "reported")]
        assert steps == sorted(trial.intermediate_values)
        if trial.state == TrialState.COMPLETE:
            assert child.data.metrics["value"] == trial.value and child.info.status == "FINISHED"
        if trial.state == TrialState.PRUNED:
            assert "(pruned)" in child.info.run_name and len(steps) < 3
        if trial.state == TrialState.FAIL:
            assert child.info.status == "FAILED" and "above" in child.data.tags["failure_reason"]
    best = client.get_metric_history(parent.info.run_id, "best_value")
    assert best[-1].value == study.best_value and [m.value for m in best] == sorted(
        [m.value for m in best], reverse=True), "best so far only improves"


@pytest.mark.parametrize("launcher", ["basic", "joblib"])
def test_ctrl_c_leaves_no_trial_running(tmp_path: Path, launcher: str) -> None:
    """Ctrl-C during a trial: the trials in flight end FAIL ("interrupted"), so a rerun on the
    same storage resumes instead of counting them as running forever."""
    import signal
    import time

    journal = tmp_path / "study.journal"
    proc = subprocess.Popen([sys.executable, str(APP), "-m", f"hydra.sweep.dir={tmp_path / 'sweep'}",
                             f"hydra/launcher={launcher}", f"hydra.sweeper.storage=journal:///{journal}",
                             "hydra.sweeper.n_jobs=2", "steps=200", "sleep=0.05", "hydra/sweeper/optuna_pruner=median"],
                            cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)

    def study() -> optuna.Study:
        return optuna.load_study(study_name="sphere", storage=optuna.storages.JournalStorage(
            optuna.storages.journal.JournalFileBackend(str(journal))))

    def reported() -> bool:
        try:
            return journal.exists() and any(t.intermediate_values for t in study().trials)
        except KeyError:  # the journal file is there before the study is written into it
            return False

    deadline = time.time() + 120
    while not reported():
        assert proc.poll() is None and time.time() < deadline, "no trial reported a step"
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGINT)  # as Ctrl-C in a terminal reaches the whole process group
    proc.communicate(timeout=120)
    assert proc.returncode != 0
    trials = study().trials
    assert trials and not [t for t in trials if t.state == TrialState.RUNNING], [t.state for t in trials]
    assert all(t.user_attrs.get("fail_reason") == "interrupted" for t in trials if t.state == TrialState.FAIL)


def test_enqueued_trials_run_first_and_count_toward_n_trials(tmp_path: Path) -> None:
    """hydra.sweeper.enqueue: Optuna's enqueue_trial from the config, a list value standing for each
    of its values; trials outside a range the command line narrowed are not queued; n_trials caps."""
    journal = tmp_path / "study.journal"
    done = run_app(tmp_path, f"hydra.sweeper.storage=journal:///{journal}", "hydra.sweeper.n_trials=4",
                   "x=range(-2.0, 2.5, 0.5)", "+hydra.sweeper.enqueue=[{x: [0.0, 1.5], y: 5}, {x: 9.0, y: 0}]")
    assert "enqueue: 1 of 3 trials lie outside the search space: not queued" in done.stdout
    study = optuna.load_study(study_name="sphere", storage=make_storage(f"journal:///{journal}"))
    assert len(study.trials) == 4 and all(t.state.name == "COMPLETE" for t in study.trials)
    assert [t.params for t in study.trials[:2]] == [{"x": 0.0, "y": 5}, {"x": 1.5, "y": 5}]
    bad = run_app(tmp_path, "hydra.sweeper.study_name=other", f"hydra.sweeper.storage=journal:///{journal}",
                  "+hydra.sweeper.enqueue=[{z: 1}]", ok=False)
    assert bad.returncode != 0 and "enqueue: z not a parameter of the search space (x, y)" in bad.stderr


def test_a_killed_pool_worker_fails_and_retries_its_trials(tmp_path: Path) -> None:
    """SIGKILL of one of joblib's worker processes (the OOM killer, a user's kill -9): loky fails
    every job in flight in that pool. Before: those trials were plain FAILs, the study ended
    short of n_trials. Now they are failed as dead-worker trials and queued again."""
    import signal
    import time

    journal = tmp_path / "study.journal"
    proc = subprocess.Popen([sys.executable, str(APP), "-m", f"hydra.sweep.dir={tmp_path / 'sweep'}",
                             "hydra/launcher=joblib", f"hydra.sweeper.storage=journal:///{journal}",
                             "hydra.sweeper.n_jobs=2", "hydra.sweeper.n_trials=3", "steps=40", "sleep=0.02",
                             "hydra/sweeper/optuna_pruner=median"],
                            cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)

    def study() -> optuna.Study:
        return optuna.load_study(study_name="sphere", storage=optuna.storages.JournalStorage(
            optuna.storages.journal.JournalFileBackend(str(journal))))

    def reporting() -> list[int]:
        try:
            return [t.number for t in study().trials if t.state == TrialState.RUNNING and t.intermediate_values]
        except (KeyError, FileNotFoundError):
            return []

    deadline = time.time() + 120
    while len(reporting()) < 2:
        assert proc.poll() is None and time.time() < deadline, "two trials never reported at once"
        time.sleep(0.1)
    workers = subprocess.run(["pgrep", "-P", str(proc.pid), "-f", "popen_loky"], capture_output=True,
                             text=True).stdout.split()
    os.kill(int(workers[0]), signal.SIGKILL)
    output, _ = proc.communicate(timeout=300)
    assert proc.returncode == 0, output[-3000:]
    assert "its worker process died (TerminatedWorkerError); marked FAIL and queued again" in output
    trials = study().trials
    failed = [t for t in trials if t.state == TrialState.FAIL]
    retries = {t.system_attrs.get("failed_trial"): t for t in trials if "failed_trial" in t.system_attrs}
    assert failed and set(retries) == {t.number for t in failed}
    assert all(retries[t.number].params == t.params and retries[t.number].state == TrialState.COMPLETE
               for t in failed)
    assert sum(t.state == TrialState.COMPLETE for t in trials) >= 3, "the study still reaches n_trials"


def test_timeout_stops_starting_trials(tmp_path: Path) -> None:
    """hydra.sweeper.timeout, as study.optimize's: no trial starts after it; those in flight end."""
    # trials of 0.05-0.3 s: several fit in 2 s also on a loaded machine (CI once ran one of 1.2 s in 1 s)
    done = run_app(tmp_path, "hydra.sweeper.timeout=2", "hydra.sweeper.n_trials=200", "steps=1", "sleep=0.05")
    rows = trial_files(tmp_path)
    assert 2 <= len(rows) < 200 and "hydra.sweeper.timeout=2 s reached: no more trials started" in done.stdout
    first_start = min(start for _, start, _ in rows)
    assert all(start - first_start < 2.5 for _, start, _ in rows), "a trial started after the timeout"


def test_mlflow_tracking_is_an_optuna_callback_too(tmp_path: Path) -> None:
    """The same callback in plain Optuna, with the shape of Optuna's callbacks (study, frozen_trial):
    one parent run, a child per trial with its state and value, best_value by trial number."""
    from mlflow.tracking import MlflowClient

    from optuna_pruning.tracking import MlflowSweepTracking

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    tracking = MlflowSweepTracking(tracking_uri=uri, experiment_name="plain")
    study = optuna.create_study(study_name="plain", sampler=optuna.samplers.RandomSampler(seed=0))
    study.optimize(lambda t: (t.suggest_float("x", -5, 5) - 1) ** 2, n_trials=6, callbacks=[tracking])
    tracking.on_sweep_end(study, None)
    client = MlflowClient(uri)
    runs = client.search_runs([client.get_experiment_by_name("plain").experiment_id])
    (parent,) = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    children = {int(r.data.tags["optuna.trial_number"]): r for r in runs if r is not parent}
    assert parent.info.status == "FINISHED" and sorted(children) == list(range(6))
    assert all(children[t.number].data.metrics["value"] == t.value for t in study.trials)
    best = client.get_metric_history(parent.info.run_id, "best_value")
    assert best[-1].value == study.best_value


def test_a_job_that_starts_after_its_sweep_died_stops(tmp_path: Path) -> None:
    """A pool worker handed its job just before the sweep was SIGKILLed starts it as an orphan:
    watching its parent would see init, alive for ever, and it trained on (a 100000-epoch trial,
    5 minutes until killed by hand). It watches the sweep's own process instead."""
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    sweeper = f"{socket.gethostname()}:{dead.stdout.strip()}"
    code = ("import sys, time; from optuna_pruning.workers import end_with_parent; "
            "end_with_parent(sys.argv[1], grace_seconds=0.5, poll_seconds=0.1); time.sleep(60)")
    started = time.monotonic()
    job = subprocess.run([sys.executable, "-c", code, sweeper], capture_output=True, text=True, timeout=60)
    assert job.returncode in (-signal.SIGTERM, 143), job.stderr
    assert time.monotonic() - started < 10
    with pytest.raises(subprocess.TimeoutExpired):  # its sweep (this process) alive: it goes on
        subprocess.run([sys.executable, "-c", code, f"{socket.gethostname()}:{os.getpid()}"], timeout=5)


def test_a_resumed_seeded_study_draws_new_trials(tmp_path: Path) -> None:
    """n_trials is the study's total: a rerun tops it up. With the sampler's seed as it was, the
    rerun drew the very trials of the first run again (random sampler, seed 0: trials 2-3 equal to
    0-1); the seed now moves on by the trials the study has."""
    storage = f"sqlite:///{tmp_path / 'study.db'}"
    common = ["hydra/sweeper/optuna_sampler=random", "hydra.sweeper.sampler.seed=0", f"hydra.sweeper.storage={storage}",
              "x=interval(-5.0, 5.0)", "y=interval(-5.0, 5.0)",
              "hydra.sweeper.study_name=resumed"]
    run_app(tmp_path, *common, "hydra.sweeper.n_trials=2")
    run_app(tmp_path, *common, "hydra.sweeper.n_trials=4")
    trials = optuna.load_study(study_name="resumed", storage=storage).trials
    assert len(trials) == 4
    first, again = [t.params for t in trials[:2]], [t.params for t in trials[2:]]
    assert not [p for p in again if p in first], (first, again)
    (tmp_path / "fresh").mkdir()
    run_app(tmp_path / "fresh", *[c.replace("study.db", "fresh.db") for c in common], "hydra.sweeper.n_trials=2")
    fresh = optuna.load_study(study_name="resumed", storage=storage.replace("study.db", "fresh.db")).trials
    assert [t.params for t in fresh] == first, "a new study with the seed still draws what it drew"


def test_changed_choices_of_a_resumed_study_are_one_line(tmp_path: Path) -> None:
    """Optuna keeps a parameter's choices for the life of a study: a rerun with other choices
    raised ValueError in the middle of its first trial (a traceback, that trial left RUNNING)."""
    storage = f"sqlite:///{tmp_path / 'study.db'}"
    common = [f"hydra.sweeper.storage={storage}", "hydra.sweeper.study_name=resumed", "x=interval(-5.0, 5.0)"]
    run_app(tmp_path, *common, "hydra.sweeper.n_trials=2", "y=choice(1, 2)")
    done = run_app(tmp_path, *common, "hydra.sweeper.n_trials=4", "y=choice(1, 3)", ok=False)
    assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr[-3000:]
    assert ("hydra.sweeper.params.y: study resumed has it as choice(1, 2), which cannot become choice(1, 3) "
            "(Optuna keeps a study's choices; a new study: hydra.sweeper.study_name=NAME)") in done.stderr
    assert [t.state for t in optuna.load_study(study_name="resumed", storage=storage).trials] == \
        [TrialState.COMPLETE] * 2
