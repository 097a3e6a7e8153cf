"""Seconds per epoch against the chapter's loop, and peak memory of a full run.

    python benchmarks/epoch_speed.py [--epochs 5] [--baseline-epochs 2] [--batches 16 64 256]

On real Fashion-MNIST (Debian's /usr/share/datasets/fashion-mnist; Fashion-shaped files it generates
where that is absent), at batch size 256, it times in the same process:
  baseline: the chapter's loop: gluon DataLoader over the dataset with the ToTensor transform,
            an un-hybridized Dense(10), two asscalar() syncs per batch, test accuracy per epoch;
  ours:     softmax_sweep's loop (whole data set as one NDArray, eight SGD steps per call of one
            cached graph, no per-batch sync), which also computes validation and test loss and accuracy.
Then, at each of --batches, one training pass over the same shuffled 55,000 images with the step
the project used before (autograd.record, backward, gluon.Trainer.step: the chapter's) and with
softmax_sweep.sgd's fused steps. Then it runs `python -m softmax_sweep.train num_epochs=10` as a
child process and reports its peak RSS. Targets: ratio >= 20x, peak RSS <= 1.5 GiB.
"""
from __future__ import annotations

import argparse
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import published
from chapter_loop import chapter_run

from softmax_sweep.data import DataIter, load_dataset
from softmax_sweep.experiment import train_softmax
from softmax_sweep.model import build_net, build_step
from softmax_sweep.sgd import SoftmaxSGD
from softmax_sweep.synthetic import write_synthetic_idx

BATCH = 256
REAL = Path("/usr/share/datasets/fashion-mnist")


def chapter_epochs(folder: Path, num_epochs: int) -> list[float]:
    """Seconds per epoch of the chapter's train_ch3 loop, as the seed notebook runs it."""
    return chapter_run(folder, num_epochs, batch_size=BATCH)[1]


def our_epochs(folder: Path, num_epochs: int) -> list[float]:
    data = load_dataset("fashion_mnist", str(folder)) if folder == REAL else load_dataset("idx", str(folder))
    _, result = train_softmax(data, lr=0.1, batch_size=BATCH, num_epochs=num_epochs, val_size=5000)
    return [m["epoch_seconds"] for m in result.history]


def training_pass_seconds(folder: Path, batch_size: int, repeats: int = 2) -> tuple[float, float]:
    """(autograd + gluon.Trainer, SoftmaxSGD): best seconds of one training pass over the same
    55,000 shuffled images at batch_size (no evaluation), each step as the chapter computes it."""
    import mxnet as mx
    import numpy as np
    from mxnet import autograd, gluon

    data = load_dataset("fashion_mnist", str(folder)) if folder == REAL else load_dataset("idx", str(folder))
    rows = np.arange(5000, data.num_train)
    times: dict[str, list[float]] = {"autograd": [], "fused": []}
    for _ in range(repeats):
        for kind in times:
            mx.random.seed(0)
            net = build_net(10, data.X_train.shape[1])
            train_iter = DataIter(data.X_train, data.y_train, rows, batch_size, shuffle=True)
            start = time.perf_counter()
            if kind == "fused":
                updater = SoftmaxSGD.single(net, 0.1, batch_size)
                loss, _ = updater.epoch(data.X_train, data.y_train, train_iter.epoch_order())
            else:
                step, loss = build_step(net), mx.nd.zeros(1)
                trainer = gluon.Trainer(net.collect_params(), "sgd", {"learning_rate": 0.1}, kvstore=None)
                for X, y in train_iter:
                    with autograd.record():
                        batch_loss, _ = step(X, y)
                    batch_loss.backward()
                    trainer.step(batch_size)
                    loss += batch_loss
            loss.asscalar()
            times[kind].append(time.perf_counter() - start)
    return min(times["autograd"]), min(times["fused"])


def full_run_peak_rss(folder: Path, mlruns: Path) -> tuple[float, float]:
    """(peak RSS in GiB, wall seconds) of a 10-epoch run of the real command."""
    start = time.perf_counter()
    data = ["data=fashion_mnist"] if folder == REAL else ["data=idx", f"data.root={folder}"]
    subprocess.run([sys.executable, "-m", "softmax_sweep.train", *data, "num_epochs=10", f"mlruns_dir={mlruns}"],
                   check=True, capture_output=True)
    wall = time.perf_counter() - start
    peak_kib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return peak_kib / 2**20, wall


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=5, help="epochs of our loop to time")
    parser.add_argument("--baseline-epochs", type=int, default=2, help="epochs of the chapter's loop to time")
    parser.add_argument("--batches", type=int, nargs="*", default=[16, 64, 256],
                        help="batch sizes at which to time a training pass, autograd + Trainer vs fused steps")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = REAL
        if not (REAL / "train-images-idx3-ubyte.gz").exists():
            print(f"real Fashion-MNIST not in {REAL}: timing generated Fashion-shaped files")
            folder = Path(tmp) / "fashion-shaped"
            write_synthetic_idx(folder, n_train=60000, n_test=10000)
        baseline = chapter_epochs(folder, args.baseline_epochs)
        ours = our_epochs(folder, args.epochs)
        passes = {b: training_pass_seconds(folder, b) for b in args.batches}
        peak_gib, wall = full_run_peak_rss(folder, Path(tmp) / "mlruns")
    base_s, our_s = statistics.median(baseline), statistics.median(ours)
    print(f"baseline (chapter loop) s/epoch: {' '.join(f'{t:.3f}' for t in baseline)}  median {base_s:.3f}")
    print(f"softmax_sweep s/epoch:           {' '.join(f'{t:.3f}' for t in ours)}  median {our_s:.4f}")
    print(f"speed-up: {base_s / our_s:.1f}x (target >= 20x)")
    for batch_size, (autograd_s, fused_s) in passes.items():
        print(f"training pass at batch {batch_size:3d}: autograd + gluon.Trainer {autograd_s:.3f} s, "
              f"fused SGD steps {fused_s:.3f} s: {autograd_s / fused_s:.1f}x")
    print(f"full 10-epoch run (python -m softmax_sweep.train data=idx): peak RSS {peak_gib:.2f} GiB "
          f"(target <= 1.5), wall {wall:.1f} s")


if __name__ == "__main__":
    published.run(main)
