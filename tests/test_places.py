"""Finding a copy of Fashion-MNIST / MNIST the user already has, checking it by its contents,
and downloading into the project's own cache only."""
from __future__ import annotations

import gzip
import shutil
from pathlib import Path

import pytest

import softmax_sweep.data as data_module
from softmax_sweep.data import load_dataset
from softmax_sweep.download import RemoteFile
from softmax_sweep.idx import DataFileError, content_sha256
from softmax_sweep.synthetic import IDX_FILES

from conftest import REAL_FASHION, make_idx_folder, needs_real_fashion

# The official Fashion-MNIST contents' digest as this project records it (data.digest)
REAL_FASHION_DIGEST = "d1fd84a877f3b78f"


def fake_fashion(monkeypatch: pytest.MonkeyPatch, folder: Path, url: str = "http://127.0.0.1:9/") -> dict:
    """Generated IDX files in folder, made 'the official Fashion-MNIST' by their content digests."""
    md5s = make_idx_folder(folder)
    files = [RemoteFile(name, content_sha256(folder / name), (md5s[name],)) for name in IDX_FILES]
    monkeypatch.setitem(data_module.DOWNLOADS, "fashion_mnist", ("Fashion-MNIST", [url], files))
    return md5s


def copy_to(src: Path, dest: Path, plain: bool = False) -> None:
    dest.mkdir(parents=True, exist_ok=True)
    for name in IDX_FILES:
        if plain:
            (dest / name[:-3]).write_bytes(gzip.decompress((src / name).read_bytes()))
        else:
            shutil.copy(src / name, dest / name)


def listing(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def load_fresh(*args, **kwargs):
    data_module._load_dataset.cache_clear()
    return load_dataset(*args, progress=False, **kwargs)


def test_copies_are_used_in_order_before_any_download(places_in_tmp: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    tmp = places_in_tmp
    fake_fashion(monkeypatch, tmp / "official")
    root, torch_root = tmp / "mine", tmp / "torch"
    places = {
        "data.root": root,
        "torchvision": torch_root / "FashionMNIST" / "raw",
        "cache": tmp / "mxnet" / "datasets" / "fashion-mnist",
        "debian": tmp / "system" / "fashion_mnist",
        "keras": tmp / "keras" / "datasets" / "fashion-mnist",
    }
    for label, folder in places.items():
        copy_to(tmp / "official", folder, plain=label == "torchvision")
    digests = set()
    assert load_fresh("fashion_mnist", str(root)).place == "data.root"
    for label, folder in places.items():
        data = load_fresh("fashion_mnist", str(torch_root) if label == "torchvision" else None)
        if label == "data.root":
            continue
        assert (data.place, data.source) == (label, str(folder))
        assert data.num_train == 600
        digests.add(data.digest)
        shutil.rmtree(folder)
    assert len(digests) == 1, "a plain copy and a .gz copy of the same files have one content digest"
    with pytest.raises(DataFileError, match="cannot download Fashion-MNIST"):
        load_fresh("fashion_mnist", None)


def test_a_recompressed_copy_is_accepted(places_in_tmp: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    tmp = places_in_tmp
    fake_fashion(monkeypatch, tmp / "official")
    copy_to(tmp / "official", tmp / "mine")
    reference = load_fresh("fashion_mnist", str(tmp / "mine")).digest
    for name in IDX_FILES:  # another gzip wrapper: level, header time and no file name differ
        raw = gzip.decompress((tmp / "mine" / name).read_bytes())
        (tmp / "mine" / name).write_bytes(gzip.compress(raw, compresslevel=1, mtime=12345))
    assert (tmp / "mine" / IDX_FILES[0]).read_bytes() != (tmp / "official" / IDX_FILES[0]).read_bytes()
    assert load_fresh("fashion_mnist", str(tmp / "mine")).digest == reference


def test_a_damaged_copy_outside_the_cache_is_named_and_left_alone(places_in_tmp: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    tmp = places_in_tmp
    fake_fashion(monkeypatch, tmp / "official")
    system = tmp / "system" / "fashion_mnist"
    copy_to(tmp / "official", system)
    raw = bytearray(gzip.decompress((system / IDX_FILES[2]).read_bytes()))
    raw[-1] ^= 0xFF  # one pixel changed: a valid IDX file, not the official one
    (system / IDX_FILES[2]).write_bytes(gzip.compress(bytes(raw)))
    before = listing(system)
    with pytest.raises(DataFileError) as err:
        load_fresh("fashion_mnist", None)
    message = str(err.value)
    assert "\n" not in message
    assert f"{system / IDX_FILES[2]} is not the official file" in message
    assert "SHA-256" in message and "point data.root" in message
    assert "delete" not in message
    assert listing(system) == before, "nothing written into or removed from a folder the project does not own"


def test_a_damaged_file_in_the_cache_is_downloaded_again(places_in_tmp: Path, monkeypatch: pytest.MonkeyPatch,
                                                         idx_server) -> None:
    server, _ = idx_server
    tmp = places_in_tmp
    shutil.rmtree(server.folder)
    fake_fashion(monkeypatch, server.folder, server.url)
    cache = tmp / "mxnet" / "datasets" / "fashion-mnist"
    copy_to(server.folder, cache)
    (cache / IDX_FILES[3]).write_bytes(gzip.compress(b"\0\0\x08\x01" + bytes(4)))  # an empty label file
    data = load_fresh("fashion_mnist", None)
    assert data.place == "download" and data.num_train == 600
    assert server.requests == [IDX_FILES[3]], "only the damaged file is fetched again"
    assert listing(cache) == listing(server.folder)


def test_mnist_downloader_against_a_loopback_server(places_in_tmp: Path, monkeypatch: pytest.MonkeyPatch,
                                                    idx_server) -> None:
    server, md5s = idx_server
    files = [RemoteFile(name, None, (md5s[name],)) for name in IDX_FILES]  # MNIST: checked by .gz digests
    monkeypatch.setitem(data_module.DOWNLOADS, "mnist", ("MNIST", [server.url], files))
    data = load_fresh("mnist", None, server.url)
    cache = places_in_tmp / "mxnet" / "datasets" / "mnist"
    assert (data.place, data.source) == ("download", server.url)
    assert sorted(server.requests) == sorted(IDX_FILES)
    again = load_fresh("mnist", None, server.url)
    assert (again.place, again.source, again.digest) == ("cache", str(cache), data.digest)
    assert len(server.requests) == 4, "a verified cache is not downloaded again"


@needs_real_fashion
def test_the_debian_copy_of_real_fashion_mnist_is_found_and_accepted(tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MXNET_HOME", str(tmp_path / "mxnet"))
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras"))
    before = sorted(p.name for p in REAL_FASHION.iterdir())
    data = load_fresh("fashion_mnist", None, "http://127.0.0.1:9/")
    assert (data.place, data.source) == ("debian", str(REAL_FASHION))
    assert (data.num_train, data.X_test.shape, data.num_classes) == (60000, (10000, 784), 10)
    assert data.digest == REAL_FASHION_DIGEST
    assert sorted(p.name for p in REAL_FASHION.iterdir()) == before
    assert not (tmp_path / "mxnet").exists(), "nothing downloaded"
    copy_to(REAL_FASHION, tmp_path / "torch" / "FashionMNIST" / "raw", plain=True)  # torchvision's layout
    plain = load_fresh("fashion_mnist", str(tmp_path / "torch"))
    assert (plain.place, plain.digest) == ("torchvision", REAL_FASHION_DIGEST)
