"""Fetching data files into a cache folder: checksums, atomic writes, a progress bar."""
from __future__ import annotations

import hashlib
import os
import tempfile
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from tqdm import tqdm

from softmax_sweep.idx import DataFileError

CHUNK = 1 << 20


@dataclass(frozen=True)
class RemoteFile:
    name: str
    # any one matching digest accepts the file: official MD5s and MXNet's SHA-1s of the same files
    digests: tuple[str, ...]


class DownloadError(DataFileError):
    """Nothing usable in the cache and the file could not be fetched."""


def file_digests(path: Path) -> set[str]:
    md5, sha1 = hashlib.md5(usedforsecurity=False), hashlib.sha1(usedforsecurity=False)
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            md5.update(chunk)
            sha1.update(chunk)
    return {md5.hexdigest(), sha1.hexdigest()}


def is_valid(path: Path, remote: RemoteFile) -> bool:
    return bool(file_digests(path) & set(remote.digests))


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
        if not is_valid(tmp, remote):
            raise DataFileError(f"{url} failed its checksum: the download is corrupt or not {dest.name}")
        os.replace(tmp, dest)
    finally:
        tmp.unlink(missing_ok=True)


def fetch(files: list[RemoteFile], folder: Path, base_urls: list[str], what: str,
          progress: bool = True) -> list[Path]:
    """Return the verified local paths of `files`, downloading what the cache lacks."""
    paths = []
    for remote in files:
        dest = folder / remote.name
        if dest.exists() and is_valid(dest, remote):
            paths.append(dest)
            continue
        corrupt = dest.exists()
        errors = []
        for base in base_urls:
            try:
                download(base.rstrip("/") + "/" + remote.name, dest, remote, progress)
                break
            except DataFileError as e:
                errors.append(str(e))
            except (urllib.error.URLError, OSError, ValueError) as e:
                errors.append(f"{base}: {getattr(e, 'reason', e)}")
        else:
            if corrupt:
                raise DownloadError(
                    f"{dest} is corrupt (checksum mismatch) and could not be downloaded again "
                    f"({errors[-1]}); replace or delete it"
                )
            names = ", ".join(f.name for f in files)
            raise DownloadError(
                f"cannot download {what} ({errors[-1]}); put {names} into {folder} "
                f"or set data.url to a reachable mirror"
            )
        paths.append(dest)
    return paths
