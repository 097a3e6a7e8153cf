"""The four arrays of an IDX data set, each file checked against what is expected of it, and
decompressed once: a cache file keyed by the files' paths, sizes and modification times."""
from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import zipfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from softmax_sweep.download import RemoteFile, file_digests
from softmax_sweep.idx import DataFileError, check_pair, parse_idx, read_idx_bytes
from softmax_sweep.places import own_cache

log = logging.getLogger("softmax_sweep")


class ContentMismatch(DataFileError):
    def __init__(self, path: Path, finding: str) -> None:
        super().__init__(f"{path} is not the official file: {finding}")
        self.path, self.finding = path, finding

    def __reduce__(self):
        return type(self), (self.path, self.finding)


def read_idx_set(paths: list[Path], expected: Sequence[RemoteFile] = ()) -> tuple[list[np.ndarray], str]:
    """The four arrays of an IDX data set and the digest of their contents, each file checked
    against `expected` (ContentMismatch). Gzip-compressed files are decompressed once: the arrays
    are kept in a cache file (decompressing 60,000 images took longer than a training epoch), which
    is written only after the check passed."""
    cached = _cache_file(paths) if any(p.name.endswith(".gz") for p in paths) else None
    if cached is not None and cached.exists():
        try:
            with np.load(cached) as saved:
                return [saved[f"a{i}"] for i in range(4)], str(saved["digest"])
        except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile):
            pass  # a damaged cache file: read the data files again and replace it
    arrays, contents = [], hashlib.sha256()
    for i, path in enumerate(paths):
        raw = read_idx_bytes(path)
        digest = hashlib.sha256(raw).hexdigest()
        if i < len(expected):
            remote = expected[i]
            if finding := remote.content_problem(digest):
                raise ContentMismatch(path, finding)
            if not remote.content and remote.digests and not file_digests(path) & set(remote.digests):
                log.warning("%s: no official digest of its contents is recorded and it is not the "
                            "official .gz file; accepted after checking its format", path)
        arrays.append(parse_idx(raw, path, 3 if i % 2 == 0 else 1))
        contents.update(digest.encode())
    check_pair(arrays[0], arrays[1], paths[0], paths[1])
    check_pair(arrays[2], arrays[3], paths[2], paths[3])
    digest = contents.hexdigest()[:16]
    if cached is not None:
        _save_atomically(cached, digest, arrays)
    return arrays, digest


def _cache_file(paths: list[Path]) -> Path:
    """Where the decompressed arrays of these files are kept, named after their paths, sizes and
    modification times (changed files get a new entry)."""
    stats = []
    for path in paths:
        info = path.stat()
        stats.append((str(path.resolve()), info.st_size, info.st_mtime_ns))
    return own_cache() / f"idx2-{hashlib.sha1(repr(stats).encode()).hexdigest()[:20]}.npz"


def _save_atomically(path: Path, digest: str, arrays: list[np.ndarray]) -> None:
    """Write the cache file under a temporary name and rename it, so that no reader ever sees
    half a file; a cache that cannot be written is no error."""
    part = path.with_name(f"{path.name}.{os.getpid()}.part")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(part, "wb") as f:
            np.savez(f, digest=np.array(digest), **{f"a{i}": a for i, a in enumerate(arrays)})
        os.replace(part, path)
    except BaseException as e:
        with contextlib.suppress(OSError):
            part.unlink(missing_ok=True)
        if not isinstance(e, OSError):
            raise
