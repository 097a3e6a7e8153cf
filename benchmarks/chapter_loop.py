"""The chapter's training loop (d2l's train_ch3 in Gluon), as the seed notebook runs it: a gluon
DataLoader with the ToTensor transform, an un-hybridized Dense(10), trainer.step(batch_size), two
asscalar() syncs per batch, test accuracy after every epoch. Shared by the benchmarks."""
from __future__ import annotations

import time
from pathlib import Path

import mxnet as mx
import numpy as np
from mxnet import autograd, gluon, init, nd
from mxnet.gluon import loss as gloss
from mxnet.gluon import nn
from mxnet.gluon.data.vision import transforms

from softmax_sweep.idx import read_idx_pair


def idx_paths(folder: Path, prefix: str) -> tuple[Path, Path]:
    def find(base: str) -> Path:
        gz = folder / f"{base}.gz"
        return gz if gz.exists() else folder / base

    return find(f"{prefix}-images-idx3-ubyte"), find(f"{prefix}-labels-idx1-ubyte")


def _dataset(folder: Path, prefix: str) -> gluon.data.Dataset:
    images, labels = read_idx_pair(*idx_paths(folder, prefix))
    # what gluon.data.vision.FashionMNIST holds: uint8 HWC images, int32 labels
    return gluon.data.ArrayDataset(nd.array(images.reshape(-1, 28, 28, 1), dtype="uint8"), labels.astype("int32"))


def chapter_run(folder: Path, num_epochs: int, seed: int = 0, lr: float = 0.1,
                batch_size: int = 256) -> tuple[list[float], list[float]]:
    """(test accuracy after each epoch, seconds of each epoch) of the chapter's loop."""
    mx.random.seed(seed)
    np.random.seed(seed)  # the DataLoader's shuffling
    transformer = transforms.ToTensor()
    train_iter = gluon.data.DataLoader(_dataset(folder, "train").transform_first(transformer), batch_size,
                                       shuffle=True)
    test_iter = gluon.data.DataLoader(_dataset(folder, "t10k").transform_first(transformer), batch_size,
                                      shuffle=False)
    net = nn.Sequential()
    net.add(nn.Dense(10))
    net.initialize(init.Normal(sigma=0.01))
    loss = gloss.SoftmaxCrossEntropyLoss()
    trainer = gluon.Trainer(net.collect_params(), "sgd", {"learning_rate": lr})
    accs, times = [], []
    for _ in range(num_epochs):
        start = time.perf_counter()
        train_l_sum, train_acc_sum, n = 0.0, 0.0, 0
        for X, y in train_iter:
            with autograd.record():
                y_hat = net(X)
                batch_loss = loss(y_hat, y).sum()
            batch_loss.backward()
            trainer.step(batch_size)
            y = y.astype("float32")
            train_l_sum += batch_loss.asscalar()
            train_acc_sum += (y_hat.argmax(axis=1) == y).sum().asscalar()
            n += y.size
        acc_sum, m = 0.0, 0
        for X, y in test_iter:
            acc_sum += (net(X).argmax(axis=1) == y.astype("float32")).sum().asscalar()
            m += y.size
        times.append(time.perf_counter() - start)
        accs.append(acc_sum / m)
    return accs, times
