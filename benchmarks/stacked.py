"""Stacked training against one model at a time, on real Fashion-MNIST, timed in the same run.

    python benchmarks/stacked.py [--models 16] [--epochs 10] [--torch-python PATH]

    (--torch-python: e.g. python3 -m venv .venv-torch && .venv-torch/bin/pip install torch, then
    --torch-python .venv-torch/bin/python)

(a) a --models-value lr grid (log-spaced 0.01 to 1) at batch 256, --epochs epochs, validation and
    test measured every epoch: each value trained alone (train_softmax, one after the other)
    against all in one stack (train_stacked); target: the stack in at most 2x the time of one
    run. Beside it two floors: the two matrix products of every stacked step, timed alone, and
    the arithmetic of the products of training and evaluation at this CPU's own peak (a large
    product's rate, measured here on one core and on all). How many stacked models end with
    the weights they end with alone, float for float, is printed too (tests/test_stacked.py).
    The same grid as the command a user types, `python -m softmax_sweep.train -m lr=...
    num_epochs=E` (MLflow runs, curves, the grid's parent run and table): stacked (the default)
    against hydra/launcher=basic (one at a time) and against one run's command, each timed
    from the outside.
(b) exercise 2's whole study, `sweeps/overfit.py` (26 queued trials x 10 seeds x 60 epochs, all
    trials in one launch, the models of one training set and batch size in one graph, each seed
    a lane with its own minibatches), twice (it moves by several seconds between runs), against
    `sweeps/overfit.py --no-stack` (one trial at a time) and against the study as the issue
    measured it (the project at commit FILED_AT, as in (c)): wall time, peak RSS of each command,
    and whether the stacked and one-at-a-time studies got the same trial values (target: stacked
    <= 60 s, under 3 GiB; the issue's 60 s of its 303 s at filing is 0.20 of the wall time at
    filing, which holds on a machine of another speed); and the arithmetic of the epochs the study
    ran (read from its MLflow store) at this CPU's peak.
(d) seconds per model of one training pass over the 55,000 training images at batch 16 and 256:
    one model alone, --models models stacked (the stack's pass / models), and a careful
    single-model PyTorch CPU loop (benchmarks/torch_loop.py: in-memory tensors, index-shuffled
    batches), run by --torch-python, an interpreter with torch (skipped, saying so, without one).
    Then --seeds seeds in one stack, each its own shuffle (a lane of 1 or 12 models), against
    the same seeds' stacks one after another.
(c) exercise 1, `sweeps/tune.py` (25 trials), per sampler seed: as the issue measured it (the
    project at commit FILED_AT, its last before stacked training, from `git archive`, run with its
    own packages first on PYTHONPATH) and as it runs by default today (two trials in flight in
    joblib worker processes, each trial alone) against all 25 trials asked at once, TPE with
    constant_liar, those that share a batch size trained together on the stacked launcher (no
    trial is pruned: the median pruner compares with completed trials, and none completes before
    the others; five a launch was slower, each launch waiting for its longest trial)
    (target: at most half the wall time, test accuracy at the best trial's best epoch >= 0.843).
(e) a training pass on one core against every core, at batch 16 to 256, for 1, 4 and --models
    models (the models of a pass are shared out among the cores: a model alone takes one).
(f) the fused operators (softmax_sweep/fused.py: the training pass, the loss of an evaluation)
    against MXNet's own operators: a training pass at batch 16 and 256 for one model and
    --models models, an evaluation of the test images, and (a)'s one run, each in both forms.
Peak RSS of this process at the end. This process runs MXNet as a multirun's process does
(softmax_sweep.engine: NaiveEngine, evaluations on every core where exact, a training pass's
models shared out among the cores).
"""
from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import tempfile
import time
from functools import partial
from pathlib import Path
from typing import Optional
from unittest import mock

from softmax_sweep import engine

engine.prepare_multirun()  # before MXNet is imported

import numpy as np  # noqa: E402
import published  # noqa: E402

from softmax_sweep import fused  # noqa: E402
from softmax_sweep.data import DataIter, load_dataset  # noqa: E402
from softmax_sweep.experiment import train_softmax  # noqa: E402
from softmax_sweep.model import build_net, evaluate  # noqa: E402
from softmax_sweep.sgd import Member, SoftmaxSGD  # noqa: E402
from softmax_sweep.stacking import ModelSettings, train_stacked  # noqa: E402

SHARED = dict(batch_size=256, val_size=5000, seed=0)
PRODUCT_FLOPS = 2 * 784 * 10  # one image through one model's product: 784 x 10 multiply-adds


def peak_gflops() -> tuple[float, float]:
    """This CPU's rate for one large matrix product (2048 x 2048 x 2048, MXNet's FullyConnected),
    in GFLOPS, on one core and on every core."""
    from mxnet import nd

    rng = np.random.RandomState(0)
    A, B = (nd.array(rng.rand(2048, 2048).astype(np.float32)) for _ in range(2))
    rates = []
    for threads in (1, engine.cores()):
        best = float("inf")
        with engine.using(threads):
            for _ in range(4):
                start = time.perf_counter()
                nd.FullyConnected(A, B, no_bias=True, num_hidden=2048).wait_to_read()
                best = min(best, time.perf_counter() - start)
        rates.append(2 * 2048 ** 3 / best / 1e9)
    return rates[0], rates[1]


SUMMARY: list[str] = []  # the lines the README's Speed section quotes (docs/results/stacked-summary.md)


def key_line(text: str, **kwargs) -> None:
    print(text, **kwargs)
    SUMMARY.append(text)


def span(values, fmt: str = ".2f", unit: str = "") -> str:
    """The range of values as printed ("0.19" where both ends print alike)."""
    low, high = f"{min(values):{fmt}}", f"{max(values):{fmt}}"
    return (low if low == high else f"{low}-{high}") + unit


def floor_text(gflop: float, peaks: tuple[float, float], unit: float, unit_name: str) -> str:
    """The seconds `gflop` of products take at the CPU's peak on one core and on all, also in `unit`s."""
    one, every = (gflop / peak for peak in peaks)
    return (f"{gflop:.0f} GFLOP of matrix products; at this CPU's peak for a large product ({peaks[0]:.0f} GFLOPS "
            f"on one core, {peaks[1]:.0f} on {engine.cores()}) that is {one:.1f} s = {one / unit:.2f}x {unit_name} "
            f"on one core, {every:.1f} s = {every / unit:.2f}x on {engine.cores()}")


def grid(data, lrs: list[float], epochs: int, peaks: tuple[float, float]) -> None:
    start = time.perf_counter()
    alone = [train_softmax(data, lr=lr, num_epochs=epochs, **SHARED) for lr in lrs]
    one_at_a_time = time.perf_counter() - start
    start = time.perf_counter()
    stack = train_stacked(data, [ModelSettings(lr, epochs, seed=SHARED['seed']) for lr in lrs],
                          **{k: v for k, v in SHARED.items() if k != 'seed'})
    stacked = time.perf_counter() - start
    one_run = one_at_a_time / len(lrs)
    diffs = [max(float(np.abs(a.data().asnumpy() - b.data().asnumpy()).max())
                 for a, b in zip(net.collect_params().values(), model.net.collect_params().values()))
             for (net, _), model in zip(alone, stack)]
    best = max(stack, key=lambda m: m.result.best["val_acc"])
    key_line(f"(a) {len(lrs)}-value lr grid, batch 256, {epochs} epochs: one at a time {one_at_a_time:.1f} s "
          f"(one run {one_run:.2f} s); stacked {stacked:.1f} s = {stacked / one_run:.2f}x one run (target <= 2x), "
          f"{one_at_a_time / stacked:.1f}x faster than one at a time")
    print(f"    models whose weights equal their weights alone, float for float: {diffs.count(0.0)} of {len(lrs)} "
          f"(largest difference {max(diffs):.1e})")
    print(f"    best lr {best.member.lr:.3g}: val_acc {best.result.best['val_acc']:.4f}, test_acc there "
          f"{best.result.best['test_acc']:.4f}")
    train_rows = data.num_train - SHARED["val_size"]
    floor = products_seconds(len(lrs), SHARED["batch_size"], epochs * -(-train_rows // SHARED["batch_size"]))
    print(f"    the stack's two matrix products per step alone (MXNet's FullyConnected, nothing else): {floor:.1f} s "
          f"= {floor / one_run:.2f}x one run")
    evaluated = SHARED["val_size"] + data.X_test.shape[0]
    gflop = len(lrs) * epochs * (2 * train_rows + evaluated) * PRODUCT_FLOPS / 1e9  # training: forward and gradient
    print(f"    arithmetic (training and the evaluations): {floor_text(gflop, peaks, one_run, 'one run')}")


def products_seconds(models: int, batch_size: int, steps: int) -> float:
    """Seconds of the two products a stacked SGD step cannot do without, `steps` times, in the
    form the step takes them (softmax_sweep.model: exact per model): logits (batch x 784 by 784 x
    models*10) and the weight gradient (784 x batch by batch x models*10)."""
    from mxnet import nd, sym

    from softmax_sweep.model import stacked_logits, weight_grad_columns
    from softmax_sweep.sgd import step_plan

    rng = np.random.RandomState(0)
    threads, chunks = step_plan(batch_size, 0, (models,), 10, 784)
    X, XT, weight, bias, grad = (sym.var(n) for n in ("X", "XT", "weight", "bias", "grad"))
    out = sym.Group([stacked_logits(X, weight, bias, 10, chunks[batch_size, models]),
                     weight_grad_columns(XT, grad, 10, chunks[batch_size, models])])
    graph = nd.CachedOp(out, flags=[("static_alloc", "true"), ("static_shape", "true")])
    feed = {"X": nd.array(rng.rand(batch_size, 784).astype(np.float32)),
            "weight": nd.array(rng.rand(models * 10, 784).astype(np.float32)), "bias": nd.zeros(models * 10),
            "grad": nd.array(rng.rand(batch_size, models * 10).astype(np.float32))}
    feed["XT"] = feed["X"].T
    inputs = [feed[name] for name in out.list_inputs()]
    with engine.using(threads):
        graph(*inputs)[0].wait_to_read()
        start = time.perf_counter()
        for _ in range(steps):
            logits, update = graph(*inputs)
        logits.wait_to_read()
        update.wait_to_read()
        return time.perf_counter() - start


def commands(lrs: list[float], epochs: int, folder: Path) -> None:
    def wall(*args: str) -> float:
        start = time.perf_counter()
        subprocess.run([sys.executable, "-m", "softmax_sweep.train", *args, f"num_epochs={epochs}",
                        f"mlruns_dir={folder / str(len(list(folder.iterdir())))}"],
                       check=True, capture_output=True, cwd=folder)
        return time.perf_counter() - start

    grid = "lr=" + ",".join(f"{lr:.4g}" for lr in lrs)
    one = wall(f"lr={lrs[len(lrs) // 2]:.4g}")
    stacked = wall("-m", grid)
    alone = wall("-m", grid, "hydra/launcher=basic")
    key_line(f"    as commands (MLflow runs and all): one run {one:.1f} s; the grid stacked {stacked:.1f} s = "
          f"{stacked / one:.2f}x one run; one at a time (hydra/launcher=basic) {alone:.1f} s = {alone / one:.2f}x")


def study_gflop(mlruns: Path, test_images: int) -> float:
    """The products' arithmetic of every epoch a study's runs trained, from its MLflow store: each
    epoch trains on its run's training images (forward and gradient) and evaluates validation,
    test and, with eval_train, the training images again."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{mlruns / 'mlflow.db'}")
    experiments = [e.experiment_id for e in client.search_experiments()]
    total = 0.0
    for run in client.search_runs(experiments, max_results=5000):
        epochs, params = run.data.metrics.get("epochs_trained"), run.data.params
        if epochs is None or "data.train_examples" not in run.data.tags:
            continue  # the study's parent run and its trials' summary runs train nothing
        train = int(run.data.tags["data.train_examples"])
        evaluated = int(params["data.val_size"]) + test_images + (train if params.get("eval_train") == "True" else 0)
        total += epochs * (2 * train + evaluated) * PRODUCT_FLOPS
    return total / 1e9


# exercise 2's study as the issue measured it (303 s) and the wall time it asked for
EXERCISE2_FILED, EXERCISE2_TARGET = 303.0, 60.0


def exercise2(folder: Path, peaks: tuple[float, float], test_images: int, then: Optional[Path]) -> None:
    """sweeps/overfit.py stacked (twice), one trial at a time, and at FILED_AT (`then`, where
    there is one), each on a new store."""
    import exercise1 as ex1
    import optuna

    from optuna_pruning.storages import make_storage

    found, walls = {}, {}
    # the stacked study twice: its wall time moves by several seconds from run to run on a shared 2-core machine
    modes = [("stacked", [], ex1.ROOT), ("stacked again", [], ex1.ROOT), ("one at a time", ["--no-stack"], ex1.ROOT)]
    if then is not None:
        modes.append(("at filing", [], then))
    else:
        print(f"(b) sweeps/overfit.py at commit {FILED_AT}: skipped (no git, or a clone without that commit)")
    for label, extra, root in modes:
        mlruns = folder / label.replace(" ", "-")
        start = time.perf_counter()
        proc = subprocess.Popen([sys.executable, str(root / "sweeps" / "overfit.py"), *extra, f"mlruns_dir={mlruns}"],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=folder,
                                env=ex1.project_env(root))
        _, status, usage = os.wait4(proc.pid, 0)
        walls[label] = time.perf_counter() - start
        trials = optuna.load_study(study_name="overfit-fashion_mnist",
                                   storage=make_storage(f"journal:///{mlruns / 'optuna.journal'}")).trials
        found[label] = [t.value for t in trials]
        shown = " ".join(extra) or {"stacked again": "(again)", "at filing": f"at commit {FILED_AT}"}.get(label, "")
        key_line(f"(b) exercise 2, sweeps/overfit.py {shown}: {walls[label]:.0f} s, peak RSS "
                 f"{usage.ru_maxrss / 1024:.0f} MB, {len(trials)} trials, exit {os.waitstatus_to_exitcode(status)}",
                 flush=True)
    diff = max((abs(a - b) for again in ("stacked", "stacked again")
                for a, b in zip(found[again], found["one at a time"])), default=float("nan"))
    key_line(f"    the stacked and one-at-a-time studies' trial values differ by at most {diff:.1e} (targets: stacked "
             f"<= {EXERCISE2_TARGET:.0f} s, < 3 GiB)")
    if then is not None:
        ratios = {label: wall / walls["at filing"] for label, wall in walls.items()}
        stacked = span((ratios["stacked"], ratios["stacked again"]))
        key_line(f"    stacked against the study at commit {FILED_AT}, both on this machine: {stacked} "
                 f"of its wall time (the issue's {EXERCISE2_TARGET:.0f} s of its "
                 f"{EXERCISE2_FILED:.0f} s at filing: <= {EXERCISE2_TARGET / EXERCISE2_FILED:.2f}); one at a time "
                 f"{ratios['one at a time']:.2f}")
    gflop = study_gflop(folder / "stacked", test_images)
    floor = floor_text(gflop, peaks, EXERCISE2_TARGET, f"the {EXERCISE2_TARGET:.0f} s target")
    print(f"    arithmetic of the epochs the study trained: {floor}")


STACKED_TUNE = ["hydra/launcher=stacked", "hydra.sweeper.n_jobs=25", "hydra.sweeper.sampler.constant_liar=true"]
# sweeps/tune.py as the stacked-training issue measured it: the project at its last commit before that work
FILED_AT = "7a44478"


def project_at(commit: str, folder: Path) -> Optional[Path]:
    """The project's files at `commit` (git archive) under folder, its MXNet library built by a
    one-epoch run (so that no study pays for the build); None where git or the commit is missing."""
    import exercise1 as ex1

    root = folder / f"at-{commit}"
    root.mkdir()
    archive = subprocess.run(["git", "-C", str(ex1.ROOT), "archive", commit], capture_output=True)
    if archive.returncode or subprocess.run(["tar", "-x", "-C", str(root)], input=archive.stdout).returncode:
        return None
    built = subprocess.run([sys.executable, "-m", "softmax_sweep.train", "data=digits", "num_epochs=1",
                            f"mlruns_dir={folder / 'warm-up'}"], capture_output=True, env=ex1.project_env(root))
    return root if built.returncode == 0 else None


def exercise1(seeds: list[int], folder: Path, then: Optional[Path]) -> None:
    """sweeps/tune.py as the issue measured it (the project at FILED_AT: `then`, where there is
    one) and as it runs by default today (two trials in flight in joblib workers, each trial alone)
    against all its trials asked at once and those that share a batch size trained together (the
    stacked launcher, TPE with constant_liar), each on a new store, per sampler seed."""
    import exercise1 as ex1

    modes = [("today", [], ex1.ROOT), ("stacked", STACKED_TUNE, ex1.ROOT)]
    if then is None:
        print(f"(c) sweeps/tune.py at commit {FILED_AT}: skipped (no git, or a clone without that commit)")
    else:
        modes.insert(0, ("at filing", [], then))
    walls: dict[str, list[float]] = {label: [] for label, _, _ in modes}
    accuracies: list[float] = []
    for seed in seeds:
        for label, extra, root in modes:
            with tempfile.TemporaryDirectory() as tmp:
                wall, best, test_acc, states = ex1.run("script", seed, Path(tmp), extra, root)
            walls[label].append(wall)
            if label != "at filing":
                accuracies.append(test_acc)
            print(f"(c) exercise 1, sweeps/tune.py, sampler seed {seed}, {label:9s}: {wall:5.1f} s, test_acc at the "
                  f"best trial's best epoch {test_acc:.4f}, {states}", flush=True)

    def seconds(label: str) -> str:
        return span(walls[label], ".1f", " s")

    today = sum(walls["stacked"]) / sum(walls["today"])
    print(f"    stacked: {' '.join(STACKED_TUNE)}; today: the default, two trials at a time in worker processes"
          + ("" if then is None else f"; at filing: the project at commit {FILED_AT}, before stacked training"))
    if then is not None:
        ratio = sum(walls["stacked"]) / sum(walls["at filing"])
        key_line(f"(c) exercise 1, sweeps/tune.py, sampler seeds {', '.join(map(str, seeds))}: as the issue "
                 f"measured it (commit {FILED_AT}) {seconds('at filing')}, stacked {seconds('stacked')} = {ratio:.2f} "
                 f"of its wall time (target <= 0.5); today's default {seconds('today')} (stacked: {today:.2f} of it)")
    else:
        key_line(f"(c) exercise 1, sweeps/tune.py, sampler seeds {', '.join(map(str, seeds))}: today's default "
                 f"{seconds('today')}, stacked {seconds('stacked')} = {today:.2f} of its wall time")
    key_line(f"    test_acc at the best trial's best epoch, today's default and stacked: "
             f"{span(accuracies, '.4f')} (target >= 0.843)")


def pass_seconds(data, batch_size: int, models: int, repeats: int = 2, lanes: int = 1) -> float:
    """Best seconds of one training pass of `models` stacked models (1: a model alone); lanes:
    that many times `models`, each lane on its own shuffle (another seed's)."""
    rows = np.arange(5000, data.num_train)
    best = float("inf")
    for repeat in range(repeats):
        updater = SoftmaxSGD.in_lanes([[Member(build_net(10, 784), lr) for lr in np.geomspace(0.01, 1, models)]
                                       for _ in range(lanes)], batch_size)
        orders = [DataIter(data.X_train, data.y_train, rows, batch_size, shuffle=True,
                           rng=np.random.RandomState(repeat * lanes + lane)).epoch_order() for lane in range(lanes)]
        start = time.perf_counter()
        loss, _ = updater.epoch(data.X_train, data.y_train, *orders)
        loss.asnumpy()
        best = min(best, time.perf_counter() - start)
    return best


def threads_table(data, models: int) -> None:
    """A training pass on one core against every core, for a model alone and for stacks, at small
    and large batches."""
    cores = engine.cores()
    print(f"(e) training pass on one core / on {cores} (above 1: every core is faster; a pass shares its models "
          "out among the cores, a model alone takes one):")
    for batch_size in (16, 32, 64, 256):
        cells = []
        for count in (1, 4, models):
            with engine.sharing(lambda: cores):  # as with as many groups beside it as cores: one core
                one = pass_seconds(data, batch_size, count)
            every = pass_seconds(data, batch_size, count)
            cells.append(f"{count:2d} model{'s' if count > 1 else ' '} {one / every:.2f}")
        print(f"    batch {batch_size:3d}: " + "   ".join(cells), flush=True)


def loss_ops(name: str):
    """Graphs built inside use the fused operators ("fused") or MXNet's operators ("mxnet")."""
    return mock.patch.dict(os.environ, {"SOFTMAX_SWEEP_FUSED": "1" if name == "fused" else "0"})


def both_forms(count: int, measure, digits: int) -> str:
    """`count` models' seconds with MXNet's operators / with the fused one, and their ratio."""
    found = {}
    for name in ("mxnet", "fused"):
        with loss_ops(name):
            found[name] = measure()
    return (f"{count:2d} model{'s' if count > 1 else ' '} {found['mxnet']:.{digits}f} / {found['fused']:.{digits}f} = "
            f"{found['mxnet'] / found['fused']:.2f}x")


def eval_seconds(data, models: int, repeats: int = 3) -> float:
    """Best seconds of evaluating `models` stacked models on the test images."""
    nets = [build_net(10, 784) for _ in range(models)]
    best = float("inf")
    for _ in range(repeats + 1):  # the first builds the graph
        start = time.perf_counter()
        evaluate(nets, data.test_batches())
        best = min(best, time.perf_counter() - start)
    return best


def loss_ops_table(data, models: int) -> None:
    """The fused operators against MXNet's operators: training passes, evaluations, one run."""
    if not fused.available():
        print("(f) skipped: the fused operators could not be built here (their warning says why)")
        return
    print("(f) the fused operators (softmax_sweep/fused.py: the training pass, the loss) against MXNet's operators "
          "(SOFTMAX_SWEEP_FUSED=0), seconds, MXNet's / fused:")
    for batch_size in (16, 256):
        cells = [both_forms(count, partial(pass_seconds, data, batch_size, count), 3) for count in (1, models)]
        print(f"    training pass, batch {batch_size:3d}: " + "   ".join(cells), flush=True)
    cells = [both_forms(count, partial(eval_seconds, data, count), 4) for count in (1, models)]
    print(f"    evaluating {data.X_test.shape[0]} test images: " + "   ".join(cells), flush=True)
    found = {}
    for name in ("mxnet", "fused", "mxnet", "fused"):  # twice each, the best kept
        with loss_ops(name):
            start = time.perf_counter()
            train_softmax(data, lr=0.1, num_epochs=10, **SHARED)
            found[name] = min(found.get(name, float("inf")), time.perf_counter() - start)
    print(f"    one run (batch 256, 10 epochs, validation and test every epoch): {found['mxnet']:.2f} / "
          f"{found['fused']:.2f} = {found['mxnet'] / found['fused']:.2f}x", flush=True)


def torch_seconds(torch_python: str, data, batch_size: int, folder: Path) -> tuple[float, str]:
    """(seconds, threads) of the PyTorch loop's best pass, with one thread and with torch's default."""
    arrays = folder / "train.npz"
    if not arrays.exists():
        np.savez(arrays, X=data.X_train[5000:].asnumpy(), y=data.y_train[5000:].asnumpy().astype(np.int64))
    found = []
    for threads in ("1", "default"):
        command = [torch_python, str(Path(__file__).with_name("torch_loop.py")), str(arrays), str(batch_size)]
        done = subprocess.run(command + (["--threads", threads] if threads != "default" else []),
                              capture_output=True, text=True, check=True)
        found.append((float(done.stdout.strip().splitlines()[-1]), threads))
    return min(found)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", type=int, default=16)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--seeds", type=int, default=10, help="(d)'s seeds stacked, each with its own minibatches")
    parser.add_argument("--torch-python", help="an interpreter with torch installed, for (d)'s PyTorch loop")
    parser.add_argument("--skip-exercise2", action="store_true", help="leave out (b), 5-15 minutes")
    parser.add_argument("--exercise1-seeds", type=int, nargs="*", default=[0, 1, 2],
                        help="sampler seeds for (c), about 2 minutes each; none: leave (c) out")
    args = parser.parse_args()
    data = load_dataset("fashion_mnist")
    print(f"real Fashion-MNIST ({data.place}): {data.num_train} training images, 5000 of them for validation")
    lrs = list(np.geomspace(0.01, 1, args.models))
    peaks = peak_gflops()
    grid(data, lrs, args.epochs, peaks)
    torch_python = args.torch_python
    with tempfile.TemporaryDirectory() as tmp:
        commands(lrs, args.epochs, Path(tmp))
        then = project_at(FILED_AT, Path(tmp)) if args.exercise1_seeds or not args.skip_exercise2 else None
        if not args.skip_exercise2:
            exercise2(Path(tmp), peaks, data.X_test.shape[0], then)
        if args.exercise1_seeds:
            exercise1(args.exercise1_seeds, Path(tmp), then)
        for batch_size in (16, 256):
            alone = pass_seconds(data, batch_size, 1)
            stacked = pass_seconds(data, batch_size, args.models)
            line = (f"(d) batch {batch_size:3d}, s per model per training pass: alone {alone:.3f}, "
                    f"{args.models} stacked {stacked / args.models:.3f} ({alone * args.models / stacked:.1f}x alone)")
            if torch_python:
                torch, threads = torch_seconds(torch_python, data, batch_size, Path(tmp))
                line += (f", PyTorch loop {torch:.3f} ({threads} thread{'s' if threads != '1' else ''}; stacked "
                         f"{torch * args.models / stacked:.1f}x PyTorch)")
            else:
                line += ", PyTorch loop: skipped (no --torch-python interpreter with torch given)"
            key_line(line, flush=True)
        for batch_size in (16, 256):  # models of other seeds: each lane takes its own minibatches
            cells = []
            for models in (1, 12):
                alone = pass_seconds(data, batch_size, models)
                lanes = pass_seconds(data, batch_size, models, lanes=args.seeds)
                cells.append(f"{args.seeds} seeds x {models:2d} model{'s' if models > 1 else ' '} "
                             f"{lanes / models / args.seeds:.3f} ({alone * args.seeds / lanes:.2f}x seed by seed)")
            print(f"(d) batch {batch_size:3d}, s per model per training pass, each seed its own shuffle: "
                  + "   ".join(cells), flush=True)
    threads_table(data, args.models)
    loss_ops_table(data, args.models)
    print(f"peak RSS of this process: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB")
    if "--write-docs" in published.argv():
        published.publish("stacked-summary", "```\n" + "\n".join(SUMMARY) + "\n```")


if __name__ == "__main__":
    published.run(main)
