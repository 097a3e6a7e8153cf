"""Where a copy of a named data set may already be, in the order the places are tried; the
project's own cache."""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

# Debian/Ubuntu's packages (apt-get install dataset-fashion-mnist)
SYSTEM_FOLDERS = {"fashion_mnist": "/usr/share/datasets/fashion-mnist", "mnist": "/usr/share/datasets/mnist"}
# torchvision keeps the IDX files in <root>/<class name>/raw
TORCHVISION_FOLDERS = {"fashion_mnist": "FashionMNIST/raw", "mnist": "MNIST/raw"}
# Keras keeps Fashion-MNIST as the four .gz files (MNIST as mnist.npz, which is not IDX)
KERAS_FOLDERS = {"fashion_mnist": "datasets/fashion-mnist"}
CACHE_FOLDERS = {"fashion_mnist": "datasets/fashion-mnist", "mnist": "datasets/mnist"}


@dataclass(frozen=True)
class Place:
    label: str  # what the place is, as logged and tagged: data.root, torchvision, cache, debian, keras
    folder: Path
    owned: bool = False  # the project's download cache: the only folder it ever writes into

    def __str__(self) -> str:
        return f"{self.folder} ({self.label})"


def cache_folder(name: str) -> Path:
    """The download cache: MXNet's, shared with Gluon and d2l ($MXNET_HOME, default ~/.mxnet)."""
    home = os.environ.get("MXNET_HOME") or os.path.expanduser("~/.mxnet")
    return Path(home) / CACHE_FOLDERS[name]


def own_cache() -> Path:
    """softmax-sweep's own cache (decompressed data sets, the built loss operator):
    $SOFTMAX_SWEEP_CACHE, else $XDG_CACHE_HOME/softmax-sweep, else ~/.cache/softmax-sweep."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache")
    return Path(os.environ.get("SOFTMAX_SWEEP_CACHE") or Path(base) / "softmax-sweep")


def places(name: str, root: Optional[str]) -> list[Place]:
    """data.root (and torchvision's layout under it), the download cache, the Debian package's
    folder, Keras' cache."""
    found = []
    if root:
        folder = Path(os.path.expanduser(root))
        found += [Place("data.root", folder), Place("torchvision", folder / TORCHVISION_FOLDERS[name])]
    found.append(Place("cache", cache_folder(name), owned=True))
    if name in SYSTEM_FOLDERS:
        found.append(Place("debian", Path(SYSTEM_FOLDERS[name])))
    if name in KERAS_FOLDERS:
        keras_home = os.environ.get("KERAS_HOME") or os.path.expanduser("~/.keras")
        found.append(Place("keras", Path(keras_home) / KERAS_FOLDERS[name]))
    return found
