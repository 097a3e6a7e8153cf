"""Names of data sets as a person reads them in titles and reports."""
from __future__ import annotations

from pathlib import Path

DISPLAY_NAMES = {"fashion_mnist": "Fashion-MNIST", "mnist": "MNIST", "digits": "scikit-learn digits"}


def data_label(name: str, source: str = "") -> str:
    """`Fashion-MNIST`; an IDX folder is named by its folder (`idx` tells a reader nothing)."""
    if name == "idx":
        return f"IDX files in {Path(source).name or source}"
    return DISPLAY_NAMES.get(name, name)
