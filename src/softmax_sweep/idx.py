"""Reading IDX files (the MNIST file format), plain or gzip-compressed, with strict validation."""
from __future__ import annotations

import gzip
import hashlib
import struct
import zlib
from pathlib import Path

import numpy as np

from softmax_sweep.errors import UserError

UBYTE = 0x08
GZIP_MAGIC = b"\x1f\x8b"


class DataFileError(UserError):
    """A data file is missing, unreadable, truncated or not what it claims to be."""


def read_idx_bytes(path: Path) -> bytes:
    """The IDX bytes of a file, decompressed when it is gzip (told by its first bytes, not its name)."""
    try:
        raw = path.read_bytes()
        if raw[:2] == GZIP_MAGIC:
            raw = gzip.decompress(raw)  # one call: much faster than reading a GzipFile in chunks
    except (OSError, EOFError, zlib.error, gzip.BadGzipFile) as e:
        raise DataFileError(f"cannot read data file {path}: {e}") from None
    return raw


def content_sha256(path: Path) -> str:
    """SHA-256 of a data file's IDX contents: the same for a plain file and any gzip wrapper of it."""
    return hashlib.sha256(read_idx_bytes(path)).hexdigest()


def parse_idx(raw: bytes, path: Path, ndim: int) -> np.ndarray:
    """The uint8 array in the IDX bytes `raw` (read from `path`, named in errors)."""
    header = 4 + 4 * ndim
    if len(raw) < header or raw[0:2] != b"\0\0" or raw[2] != UBYTE or raw[3] != ndim:
        found = raw[:4].hex() if len(raw) >= 4 else "too short"
        raise DataFileError(
            f"{path} is not an IDX file of {ndim}-d unsigned bytes "
            f"(magic {found}, expected 0000{UBYTE:02x}{ndim:02x})"
        )
    dims = struct.unpack(f">{ndim}I", raw[4:header])
    expected = int(np.prod(dims))
    if len(raw) - header != expected:
        raise DataFileError(
            f"{path} is truncated or padded: header says {'x'.join(map(str, dims))} "
            f"= {expected} bytes, file holds {len(raw) - header}"
        )
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(dims)


def read_idx(path: Path, ndim: int) -> np.ndarray:
    """Return the uint8 array stored in an IDX file with `ndim` dimensions."""
    return parse_idx(read_idx_bytes(path), path, ndim)


def check_pair(images: np.ndarray, labels: np.ndarray, images_path: Path, labels_path: Path) -> None:
    if len(images) != len(labels):
        raise DataFileError(
            f"{images_path} holds {len(images)} images but {labels_path} holds {len(labels)} labels"
        )


def read_idx_pair(images_path: Path, labels_path: Path) -> tuple[np.ndarray, np.ndarray]:
    images = read_idx(images_path, 3)
    labels = read_idx(labels_path, 1)
    check_pair(images, labels, images_path, labels_path)
    return images, labels


def write_idx(path: Path, array: np.ndarray) -> None:
    """Write a uint8 array as IDX (gzip-compressed when the name ends in .gz)."""
    array = np.ascontiguousarray(array, dtype=np.uint8)
    header = bytes([0, 0, UBYTE, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    opener = gzip.open if path.name.endswith(".gz") else open
    with opener(path, "wb") as f:
        f.write(header + array.tobytes())
