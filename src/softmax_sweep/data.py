"""Data sets held in memory as normalized float32 NDArrays, loaded once per process."""
from __future__ import annotations

import functools
import hashlib
import logging
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import numpy as np
from mxnet import nd

from softmax_sweep.download import RemoteFile, fetch
from softmax_sweep.errors import UserError
from softmax_sweep.idx import DataFileError
from softmax_sweep.idx_cache import read_idx_set
from softmax_sweep.places import places

IDX_NAMES = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)

# Official addresses first. Fashion-MNIST files are checked by the SHA-256 of their decompressed
# contents (Debian recompresses them); MNIST, whose content digests are not recorded here, by the
# official .gz files' MD5s and MXNet's SHA-1s.
DOWNLOADS = {
    "fashion_mnist": (
        "Fashion-MNIST",
        ["http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/"],
        [
            RemoteFile("train-images-idx3-ubyte.gz",
                       "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888",
                       ("8d4fb7e6c68d591d4c3dfef9ec88bf0d", "0cf37b0d40ed5169c6b3aba31069a9770ac9043d")),
            RemoteFile("train-labels-idx1-ubyte.gz",
                       "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9",
                       ("25c81989df183df01b3e8a0aad5dffbe", "236021d52f1e40852b06a4c3008d8de8aef1e40b")),
            RemoteFile("t10k-images-idx3-ubyte.gz",
                       "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b",
                       ("bef4ecab320f06d8554ea6380940ec79", "626ed6a7c06dd17c0eec72fa3be1740f146a2863")),
            RemoteFile("t10k-labels-idx1-ubyte.gz",
                       "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34",
                       ("bb300cfdad3c16e7a12a480ee83cd310", "17f9ab60e7257a1620f4ad76bbbaf857c3920701")),
        ],
    ),
    "mnist": (
        "MNIST",
        ["http://yann.lecun.com/exdb/mnist/", "https://ossci-datasets.s3.amazonaws.com/mnist/"],
        [
            RemoteFile("train-images-idx3-ubyte.gz", None,
                       ("f68b3c2dcbeaaa9fbdd348bbdeb94873", "6c95f4b05d2bf285e1bfb0e7960c31bd3b3f8a7d")),
            RemoteFile("train-labels-idx1-ubyte.gz", None,
                       ("d53e105ee54ea40749a09fcbcd1e9432", "2a80914081dc54586dbdf242f9805a6b8d2a15fc")),
            RemoteFile("t10k-images-idx3-ubyte.gz", None,
                       ("9fb629c4189551a2d022fa330f9573f3", "c3a25af1f52dad7f726cce8cacb138654b760d48")),
            RemoteFile("t10k-labels-idx1-ubyte.gz", None,
                       ("ec29112dd5afa0611ce80d1b7f02629c", "763e7fa3757d93b0cdec073cef058b2004252c17")),
        ],
    ),
}
log = logging.getLogger("softmax_sweep")
DIGITS_TEST_FRACTION = 0.25
DIGITS_SPLIT_SEED = 0  # fixed: the digits test split must not move with `seed`


@dataclass(frozen=True)
class Dataset:
    """A whole data set in memory: features flattened and scaled to [0, 1], labels as float32."""

    name: str
    source: str  # the folder (or loader) the data came from
    digest: str  # of the decompressed contents: the same for any copy of the same files
    X_train: nd.NDArray
    y_train: nd.NDArray
    X_test: nd.NDArray
    y_test: nd.NDArray
    num_classes: int
    place: str = ""  # which of the places searched held the copy (data.root, cache, debian, ...)
    _val_batches: dict = field(default_factory=dict, compare=False, repr=False)

    @property
    def num_train(self) -> int:
        return self.X_train.shape[0]

    def test_batches(self) -> list[tuple[nd.NDArray, nd.NDArray]]:
        return fixed_batches(self.X_test, self.y_test)

    def val_batches(self, val_idx: np.ndarray) -> list[tuple[nd.NDArray, nd.NDArray]]:
        """The validation rows gathered once per split (a sweep's trials share them)."""
        key = hashlib.sha1(np.ascontiguousarray(val_idx).tobytes()).hexdigest()
        if key not in self._val_batches:
            self._val_batches.clear()
            self._val_batches[key] = fixed_batches(self.X_train, self.y_train, val_idx)
        return self._val_batches[key]


def _to_ndarrays(images: np.ndarray, labels: np.ndarray, scale: float) -> tuple[nd.NDArray, nd.NDArray]:
    # Converted by MXNet from the bytes: no float32 copy in NumPy first (half the time for 60k images)
    X = nd.array(images.reshape(len(images), -1), dtype=images.dtype).astype("float32")
    X /= scale
    return X, nd.array(labels.astype(np.float32), dtype="float32")


def _from_idx_files(name: str, source: str, paths: list[Path], square: Optional[int],
                    expected: Sequence[RemoteFile] = (), place: str = "") -> Dataset:
    (train_images, train_labels, test_images, test_labels), digest = read_idx_set(paths, expected)
    for path, images in ((paths[0], train_images), (paths[2], test_images)):
        if len(images) == 0:
            raise DataFileError(f"{path} holds no images")
    if train_images.shape[1:] != test_images.shape[1:]:
        raise DataFileError(
            f"{paths[0]} holds {train_images.shape[1:]} images but {paths[2]} holds {test_images.shape[1:]}"
        )
    if square and train_images.shape[1:] != (square, square):
        raise DataFileError(f"{paths[0]} holds {train_images.shape[1:]} images, expected {square}x{square}")
    labels_max = max(int(train_labels.max(initial=0)), int(test_labels.max(initial=0)))
    if square and labels_max > 9:
        raise DataFileError(f"{paths[1]} has label {labels_max}; this data set has classes 0-9")
    X_train, y_train = _to_ndarrays(train_images, train_labels, 255.0)
    X_test, y_test = _to_ndarrays(test_images, test_labels, 255.0)
    num_classes = 10 if square else labels_max + 1
    return Dataset(name, source, digest, X_train, y_train, X_test, y_test, num_classes, place)


def _idx_files_in(folder: Path) -> Optional[list[Path]]:
    """The four IDX files in folder, each plain or .gz (torchvision keeps both); None if any is missing."""
    paths = []
    for base in IDX_NAMES:
        found = [folder / f"{base}{ext}" for ext in (".gz", "") if (folder / f"{base}{ext}").is_file()]
        if not found:
            return None
        paths.append(found[0])
    return paths


def _find_idx_files(root: Path) -> list[Path]:
    paths = _idx_files_in(root)
    if paths is None:
        missing = next(b for b in IDX_NAMES if not any((root / f"{b}{e}").is_file() for e in (".gz", "")))
        names = ", ".join(f"{b}[.gz]" for b in IDX_NAMES)
        raise DataFileError(f"data folder {root} lacks {missing}[.gz] (or it is not a file); data=idx needs {names}")
    return paths


def _named_data_set(name: str, root: Optional[str], url: Optional[str], progress: bool) -> Dataset:
    """A copy the user already has, found and checked; else a download into the project's cache.
    A damaged file is replaced only in that cache: anywhere else it is an error naming the file."""
    what, official, files = DOWNLOADS[name]
    searched = places(name, root)
    for place in searched:
        paths = _idx_files_in(place.folder)
        if paths is None:
            continue
        try:
            data = _from_idx_files(name, str(place.folder), paths, 28, files, place.label)
        except DataFileError as e:
            if place.owned:
                log.warning("%s: %s; downloading it again", place, e)
                break
            raise DataFileError(f"{e}; point data.root at a good copy of {what} "
                                f"(files outside the project's cache are never changed)") from None
        log.info("%s from %s", what, place)
        return data
    cache = next(p for p in searched if p.owned)
    bases = [url] if url else official
    log.info("%s not found in %s: downloading it into %s", what, ", ".join(str(p.folder) for p in searched),
             cache.folder)
    paths = fetch(files, cache.folder, bases, what, progress=progress)
    return _from_idx_files(name, bases[0], paths, 28, files, "download")


def _digits() -> Dataset:
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    bunch = load_digits()
    images, labels = bunch.images, bunch.target
    train_i, test_i = train_test_split(
        np.arange(len(labels)), test_size=DIGITS_TEST_FRACTION, stratify=labels,
        random_state=DIGITS_SPLIT_SEED,
    )
    X_train, y_train = _to_ndarrays(images[train_i], labels[train_i], 16.0)
    X_test, y_test = _to_ndarrays(images[test_i], labels[test_i], 16.0)
    digest = hashlib.sha256(images.tobytes() + labels.tobytes() + test_i.tobytes()).hexdigest()[:16]
    return Dataset("digits", "sklearn.datasets.load_digits", digest, X_train, y_train, X_test, y_test, 10)


def load_dataset(name: str, root: Optional[str] = None, url: Optional[str] = None,
                 progress: bool = True) -> Dataset:
    """Load (downloading if needed) a data set once per process; later calls reuse it."""
    return _load_dataset(name, root, url, progress)


@functools.lru_cache(maxsize=4)
def _load_dataset(name: str, root: Optional[str], url: Optional[str], progress: bool) -> Dataset:
    if name == "digits":
        return _digits()
    if name == "idx":
        folder = Path(os.path.expanduser(root or ""))
        return _from_idx_files("idx", str(folder), _find_idx_files(folder), square=None, place="data.root")
    if name not in DOWNLOADS:
        raise UserError(f"unknown data set {name!r}")
    return _named_data_set(name, root, url, progress)


def check_val_size(num_train: int, val_size: int) -> None:
    if val_size >= num_train:
        raise UserError(f"data.val_size={val_size} must be smaller than the training set ({num_train} examples)")


def train_count(num_train: int, val_size: int, train_size: Optional[int] = None) -> int:
    """How many training rows split_indices gives (its checks, without drawing the split)."""
    check_val_size(num_train, val_size)
    if train_size is not None and train_size > num_train - val_size:
        raise UserError(f"data.train_size={train_size} is more than the {num_train - val_size} training examples "
                        f"left after data.val_size={val_size}")
    return num_train - val_size if train_size is None else train_size


@functools.lru_cache(maxsize=8)  # a sweep's trials share a split (3 ms each for 60k examples)
def split_indices(num_train: int, val_size: int, seed: int,
                  train_size: Optional[int] = None) -> tuple[np.ndarray, np.ndarray]:
    """Seeded, disjoint (train, validation) index arrays into the training set (read-only)."""
    count = train_count(num_train, val_size, train_size)
    order = np.random.RandomState(seed).permutation(num_train)
    val_idx, train_idx = order[:val_size], order[val_size:val_size + count]
    train_idx, val_idx = np.sort(train_idx), np.sort(val_idx)
    train_idx.flags.writeable = val_idx.flags.writeable = False
    return train_idx, val_idx


class DataIter:
    """Minibatches over rows `indices` of (X, y), reshuffled every epoch; no copy of the data set."""

    def __init__(self, X: nd.NDArray, y: nd.NDArray, indices: np.ndarray, batch_size: int,
                 shuffle: bool, rng: Optional[np.random.RandomState] = None) -> None:
        self.X, self.y = X, y
        self.indices = np.asarray(indices, dtype=np.int64)
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.rng = rng or np.random.RandomState(0)

    def __len__(self) -> int:
        return -(-len(self.indices) // self.batch_size)

    def epoch_order(self) -> nd.NDArray:
        """The rows of the next epoch, in the order its minibatches take them."""
        return nd.array(self.rng.permutation(self.indices) if self.shuffle else self.indices, dtype="int64")

    def __iter__(self) -> Iterator[tuple[nd.NDArray, nd.NDArray]]:
        order_nd = self.epoch_order()
        for start in range(0, order_nd.shape[0], self.batch_size):
            batch = order_nd[start:start + self.batch_size]
            yield nd.take(self.X, batch), nd.take(self.y, batch)


def fixed_batches(X: nd.NDArray, y: nd.NDArray, indices: Optional[np.ndarray] = None,
                  batch_size: int = 10000) -> list[tuple[nd.NDArray, nd.NDArray]]:
    """Evaluation data in a few large batches (a list is a valid data_iter); the whole array is
    sliced without a copy, a subset gathered once."""
    if indices is None:
        return [(X[i:i + batch_size], y[i:i + batch_size]) for i in range(0, X.shape[0], batch_size)]
    return list(DataIter(X, y, indices, batch_size, shuffle=False))
