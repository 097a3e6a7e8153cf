"""Synthetic MNIST-shaped IDX files, for tests and benchmarks on machines without the real data."""
from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np

from softmax_sweep.idx import write_idx

IDX_FILES = ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz",
             "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")


def write_synthetic_idx(folder: Path, n_train: int = 600, n_test: int = 100, side: int = 28,
                        seed: int = 0, compress: bool = True) -> dict[str, str]:
    """Write a learnable IDX quadruple (the class is which tenth of the pixels is bright, plus
    noise) and return each file's MD5."""
    rng = np.random.RandomState(seed)
    folder.mkdir(parents=True, exist_ok=True)
    block = side * side // 10
    suffix = ".gz" if compress else ""
    names = []
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        labels = rng.randint(0, 10, n).astype(np.uint8)
        images = rng.randint(0, 60, (n, side * side)).astype(np.uint8)
        rows = np.arange(n)[:, None]
        images[rows, labels[:, None] * block + np.arange(block)] += 150
        for kind, array in (("images-idx3", images.reshape(n, side, side)), ("labels-idx1", labels)):
            name = f"{prefix}-{kind}-ubyte{suffix}"
            write_idx(folder / name, array)
            names.append(name)
    return {name: hashlib.md5((folder / name).read_bytes()).hexdigest() for name in names}
