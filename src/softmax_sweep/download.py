"""Fetching data files into a cache folder: checksums, atomic writes, a progress bar."""
from __future__ import annotations

import hashlib
import os
import tempfile
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from tqdm import tqdm

from optuna_pruning.urls import mask_password
from softmax_sweep.idx import DataFileError, content_sha256

CHUNK = 1 << 20


@dataclass(frozen=True)
class RemoteFile:
    name: str
    # SHA-256 of the decompressed IDX contents: accepts a genuine copy whatever gzip wrapper it has
    content: Optional[str] = None
    # MD5s / SHA-1s of the official .gz files: the check where no content digest is known (MNIST)
    digests: tuple[str, ...] = ()

    def content_problem(self, found: str) -> Optional[str]:
        """What is wrong with contents whose SHA-256 is `found` (None: they are this file's, or no
        content digest is known)."""
        if self.content and found != self.content:
            return f"its IDX contents have SHA-256 {found[:16]}..., the official {self.content[:16]}..."
        return None

    def problem(self, path: Path) -> Optional[str]:
        """None when the file at `path` is this file, else what the check found (one phrase)."""
        if self.content:
            return self.content_problem(content_sha256(path))
        if self.digests and not file_digests(path) & set(self.digests):
            return "its checksum is not the official file's"
        return None


class DownloadError(DataFileError):
    """Nothing usable in the cache and the file could not be fetched."""


def file_digests(path: Path) -> set[str]:
    md5, sha1 = hashlib.md5(usedforsecurity=False), hashlib.sha1(usedforsecurity=False)
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            md5.update(chunk)
            sha1.update(chunk)
    return {md5.hexdigest(), sha1.hexdigest()}


def _problem(path: Path, remote: RemoteFile) -> Optional[str]:
    try:
        return remote.problem(path)
    except DataFileError as e:
        return str(e)


def download(url: str, dest: Path, remote: RemoteFile, progress: bool = True) -> None:
    """Download url to dest; dest appears only complete and verified (rename within its folder)."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".part")
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=30) as response:
            total = int(response.headers.get("Content-Length") or 0) or None
            with tqdm(total=total, unit="B", unit_scale=True, desc=dest.name,
                      disable=not progress, leave=False) as bar:
                while chunk := response.read(CHUNK):
                    out.write(chunk)
                    bar.update(len(chunk))
            out.flush()
            os.fsync(out.fileno())
        if problem := _problem(tmp, remote):
            raise DataFileError(f"{url} failed its check ({problem}): the download is corrupt or not {dest.name}")
        os.replace(tmp, dest)
    finally:
        tmp.unlink(missing_ok=True)


def fetch(files: list[RemoteFile], folder: Path, base_urls: list[str], what: str,
          progress: bool = True) -> list[Path]:
    """Return the verified local paths of `files` in `folder`, the project's own cache: what it
    lacks, or holds damaged, is downloaded (a damaged file is replaced)."""
    paths = []
    for remote in files:
        dest = folder / remote.name
        damage = _problem(dest, remote) if dest.exists() else None
        if dest.exists() and damage is None:
            paths.append(dest)
            continue
        errors = []
        for base in base_urls:
            try:
                download(base.rstrip("/") + "/" + remote.name, dest, remote, progress)
                break
            except DataFileError as e:
                errors.append(mask_password(str(e)))
            except (urllib.error.URLError, OSError, ValueError) as e:
                errors.append(mask_password(f"{base}: {getattr(e, 'reason', e)}"))
        else:
            if damage:
                raise DownloadError(
                    f"{dest} in the download cache is damaged ({damage}) and could not be downloaded again "
                    f"({errors[-1]}); it is replaced once a download works, or set data.root to a good copy"
                )
            names = ", ".join(f.name for f in files)
            raise DownloadError(
                f"cannot download {what} ({errors[-1]}); put {names} into {folder} "
                f"or set data.url to a reachable mirror"
            )
        paths.append(dest)
    return paths
