"""Seconds per epoch against the chapter's loop, and peak memory of a full run.

    python benchmarks/epoch_speed.py [--epochs 5] [--baseline-epochs 2]

On Fashion-MNIST-shaped IDX files it generates (60,000 train / 10,000 test, 28x28), at batch
size 256, it times in the same process:
  baseline: the chapter's loop: gluon DataLoader over the dataset with the ToTensor transform,
            an un-hybridized Dense(10), two asscalar() syncs per batch, test accuracy per epoch;
  ours:     softmax_sweep's loop (whole data set as one NDArray, one cached graph per batch, no
            per-batch sync), which also computes validation and test loss and accuracy.
Then it runs `python -m softmax_sweep.train data=idx num_epochs=10` as a child process and reports
its peak RSS. Targets: ratio >= 20x, peak RSS <= 1.5 GiB.
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

import mxnet as mx
from mxnet import autograd, gluon, init, nd
from mxnet.gluon import loss as gloss
from mxnet.gluon import nn
from mxnet.gluon.data.vision import transforms

from softmax_sweep.data import load_dataset
from softmax_sweep.experiment import train_softmax
from softmax_sweep.idx import read_idx_pair
from softmax_sweep.synthetic import write_synthetic_idx

BATCH = 256


def chapter_epochs(folder: Path, num_epochs: int) -> list[float]:
    """The chapter's train_ch3 loop, as the seed notebook runs it."""
    def dataset(prefix: str) -> gluon.data.Dataset:
        images, labels = read_idx_pair(folder / f"{prefix}-images-idx3-ubyte.gz",
                                       folder / f"{prefix}-labels-idx1-ubyte.gz")
        # what gluon.data.vision.FashionMNIST holds: uint8 HWC images, int32 labels
        return gluon.data.ArrayDataset(nd.array(images.reshape(-1, 28, 28, 1), dtype="uint8"),
                                       labels.astype("int32"))

    transformer = transforms.ToTensor()
    train_iter = gluon.data.DataLoader(dataset("train").transform_first(transformer), BATCH, shuffle=True)
    test_iter = gluon.data.DataLoader(dataset("t10k").transform_first(transformer), BATCH, shuffle=False)
    mx.random.seed(0)
    net = nn.Sequential()
    net.add(nn.Dense(10))
    net.initialize(init.Normal(sigma=0.01))
    loss = gloss.SoftmaxCrossEntropyLoss()
    trainer = gluon.Trainer(net.collect_params(), "sgd", {"learning_rate": 0.1})
    times = []
    for _ in range(num_epochs):
        start = time.perf_counter()
        train_l_sum, train_acc_sum, n = 0.0, 0.0, 0
        for X, y in train_iter:
            with autograd.record():
                y_hat = net(X)
                batch_loss = loss(y_hat, y).sum()
            batch_loss.backward()
            trainer.step(BATCH)
            y = y.astype("float32")
            train_l_sum += batch_loss.asscalar()
            train_acc_sum += (y_hat.argmax(axis=1) == y).sum().asscalar()
            n += y.size
        acc_sum, m = 0.0, 0
        for X, y in test_iter:
            acc_sum += (net(X).argmax(axis=1) == y.astype("float32")).sum().asscalar()
            m += y.size
        times.append(time.perf_counter() - start)
    return times


def our_epochs(folder: Path, num_epochs: int) -> list[float]:
    data = load_dataset("idx", str(folder))
    _, result = train_softmax(data, lr=0.1, batch_size=BATCH, num_epochs=num_epochs, val_size=5000)
    return [m["epoch_seconds"] for m in result.history]


def full_run_peak_rss(folder: Path, mlruns: Path) -> tuple[float, float]:
    """(peak RSS in GiB, wall seconds) of a 10-epoch run of the real command."""
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "softmax_sweep.train", "data=idx", f"data.root={folder}",
                    "num_epochs=10", f"mlruns_dir={mlruns}"], check=True, capture_output=True)
    wall = time.perf_counter() - start
    peak_kib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return peak_kib / 2**20, wall


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=5, help="epochs of our loop to time")
    parser.add_argument("--baseline-epochs", type=int, default=2, help="epochs of the chapter's loop to time")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "fashion-shaped"
        write_synthetic_idx(folder, n_train=60000, n_test=10000)
        baseline = chapter_epochs(folder, args.baseline_epochs)
        ours = our_epochs(folder, args.epochs)
        peak_gib, wall = full_run_peak_rss(folder, Path(tmp) / "mlruns")
    base_s, our_s = statistics.median(baseline), statistics.median(ours)
    print(f"baseline (chapter loop) s/epoch: {' '.join(f'{t:.3f}' for t in baseline)}  median {base_s:.3f}")
    print(f"softmax_sweep s/epoch:           {' '.join(f'{t:.3f}' for t in ours)}  median {our_s:.4f}")
    print(f"speed-up: {base_s / our_s:.1f}x (target >= 20x)")
    print(f"full 10-epoch run (python -m softmax_sweep.train data=idx): peak RSS {peak_gib:.2f} GiB "
          f"(target <= 1.5), wall {wall:.1f} s")


if __name__ == "__main__":
    main()
