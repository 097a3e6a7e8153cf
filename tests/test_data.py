"""Data: IDX parsing, the downloader against a loopback server, splits."""
from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pytest

from softmax_sweep import idx_cache
from softmax_sweep.data import DataIter, load_dataset, split_indices
from softmax_sweep.download import DownloadError, RemoteFile, fetch
from softmax_sweep.errors import UserError
from softmax_sweep.idx import DataFileError, read_idx, read_idx_pair, write_idx
from softmax_sweep.synthetic import IDX_FILES

from conftest import make_idx_folder


@pytest.mark.parametrize("name", ["images-idx3-ubyte", "images-idx3-ubyte.gz"])
def test_idx_round_trip(tmp_path: Path, name: str) -> None:
    images = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    write_idx(tmp_path / name, images)
    np.testing.assert_array_equal(read_idx(tmp_path / name, 3), images)


def test_idx_rejects_wrong_magic_and_dimensions(tmp_path: Path) -> None:
    write_idx(tmp_path / "labels", np.zeros(5, np.uint8))
    with pytest.raises(DataFileError, match="labels is not an IDX file of 3-d"):
        read_idx(tmp_path / "labels", 3)
    (tmp_path / "junk").write_bytes(b"GIF89a" + bytes(100))
    with pytest.raises(DataFileError, match="magic 47494638"):
        read_idx(tmp_path / "junk", 1)


def test_idx_rejects_truncated_files(tmp_path: Path) -> None:
    write_idx(tmp_path / "raw", np.ones((4, 5, 5), np.uint8))
    data = (tmp_path / "raw").read_bytes()
    (tmp_path / "raw").write_bytes(data[:-7])
    with pytest.raises(DataFileError, match="truncated or padded: header says 4x5x5 = 100 bytes, file holds 93"):
        read_idx(tmp_path / "raw", 3)
    packed = gzip.compress(data)
    (tmp_path / "cut.gz").write_bytes(packed[: len(packed) // 2])
    with pytest.raises(DataFileError, match="cannot read data file .*cut.gz"):
        read_idx(tmp_path / "cut.gz", 3)


def test_idx_pair_counts_must_match(tmp_path: Path) -> None:
    write_idx(tmp_path / "i", np.zeros((3, 2, 2), np.uint8))
    write_idx(tmp_path / "l", np.zeros(4, np.uint8))
    with pytest.raises(DataFileError, match="holds 3 images but .* holds 4 labels"):
        read_idx_pair(tmp_path / "i", tmp_path / "l")


def _remote_files(md5s: dict[str, str]) -> list[RemoteFile]:
    return [RemoteFile(name, digests=(md5s[name],)) for name in IDX_FILES]


def test_download_verifies_and_caches(idx_server, tmp_path: Path) -> None:
    server, md5s = idx_server
    cache = tmp_path / "cache"
    paths = fetch(_remote_files(md5s), cache, [server.url], "test set", progress=False)
    assert [p.name for p in paths] == list(IDX_FILES)
    for p in paths:
        assert p.read_bytes() == (server.folder / p.name).read_bytes()
    assert sorted(server.requests) == sorted(IDX_FILES)
    fetch(_remote_files(md5s), cache, [server.url], "test set", progress=False)
    assert len(server.requests) == 4, "a verified cache must not be downloaded again"
    assert sorted(f.name for f in cache.iterdir()) == sorted(IDX_FILES)


def test_download_checksum_failure_leaves_cache_clean(idx_server, tmp_path: Path) -> None:
    server, md5s = idx_server
    files = _remote_files(md5s)
    files[2] = RemoteFile(files[2].name, digests=("0" * 32,))
    cache = tmp_path / "cache"
    with pytest.raises(DownloadError, match="t10k-images-idx3-ubyte.gz failed its check"):
        fetch(files, cache, [server.url], "test set", progress=False)
    assert sorted(f.name for f in cache.iterdir()) == sorted(IDX_FILES[:2]), "no partial or bad file kept"


def test_interrupted_download_never_poisons_the_cache(idx_server, tmp_path: Path) -> None:
    server, md5s = idx_server
    server.truncate.add(IDX_FILES[0])
    cache = tmp_path / "cache"
    with pytest.raises(DownloadError, match=f"put {IDX_FILES[0]}, .* into {cache}"):
        fetch(_remote_files(md5s), cache, [server.url], "test set", progress=False)
    assert list(cache.iterdir()) == [], "a dropped connection leaves neither the file nor a .part"
    server.truncate.clear()
    assert len(fetch(_remote_files(md5s), cache, [server.url], "test set", progress=False)) == 4


def test_offline_without_a_copy_names_the_cache_and_files(places_in_tmp: Path) -> None:
    with pytest.raises(DownloadError) as err:
        load_dataset("mnist", str(places_in_tmp / "empty"), "http://127.0.0.1:9/", progress=False)
    message = str(err.value)
    assert "\n" not in message
    assert str(places_in_tmp / "mxnet" / "datasets" / "mnist") in message
    for name in IDX_FILES:
        assert name in message
    assert not (places_in_tmp / "empty").exists(), "data.root is never written into"


def test_damaged_file_in_the_cache_is_named_when_it_cannot_be_replaced(tmp_path: Path) -> None:
    md5s = make_idx_folder(tmp_path / "cache")
    target = tmp_path / "cache" / IDX_FILES[1]
    target.write_bytes(target.read_bytes()[:-10])
    with pytest.raises(DownloadError, match=f"{target} in the download cache is damaged .*set data.root"):
        fetch(_remote_files(md5s), tmp_path / "cache", ["http://127.0.0.1:9/"], "test set", progress=False)


def test_idx_data_set_from_folder(tmp_path: Path) -> None:
    make_idx_folder(tmp_path / "kmnist", n_train=50, n_test=20, side=12)
    data = load_dataset("idx", str(tmp_path / "kmnist"))
    assert data.X_train.shape == (50, 144) and data.X_test.shape == (20, 144)
    assert 0.0 <= data.X_train.min().asscalar() and data.X_train.max().asscalar() <= 1.0
    assert load_dataset("idx", str(tmp_path / "kmnist")) is data, "loaded once per process"
    make_idx_folder(tmp_path / "broken", n_train=50, n_test=20, side=12)
    (tmp_path / "broken" / IDX_FILES[3]).unlink()
    with pytest.raises(DataFileError, match="lacks t10k-labels-idx1-ubyte"):
        load_dataset("idx", str(tmp_path / "broken"))


def test_gzip_data_set_is_decompressed_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                            _data_cache_in_tmp: Path) -> None:
    import softmax_sweep.data as data_module

    def entries() -> set[Path]:
        return set(_data_cache_in_tmp.glob("idx2-*.npz"))

    def load_in_new_process():
        data_module._load_dataset.cache_clear()
        return load_dataset("idx", str(folder))

    folder = tmp_path / "gz"
    make_idx_folder(folder, n_train=50, n_test=20, side=12)
    before = entries()
    first = load_dataset("idx", str(folder))
    (entry,) = entries() - before
    assert not list(_data_cache_in_tmp.glob("*.part"))

    def no_decompressing(*args):
        raise AssertionError("decompressed again")

    with monkeypatch.context() as mp:
        mp.setattr(idx_cache, "read_idx_bytes", no_decompressing)
        again = load_in_new_process()
    assert again.digest == first.digest
    assert np.array_equal(again.X_train.asnumpy(), first.X_train.asnumpy())
    assert np.array_equal(again.y_test.asnumpy(), first.y_test.asnumpy())

    make_idx_folder(folder, n_train=60, n_test=20, side=12, seed=1)  # new files, new entry and digest
    changed = load_in_new_process()
    assert changed.num_train == 60 and changed.digest != first.digest
    (new_entry,) = entries() - before - {entry}

    new_entry.write_bytes(new_entry.read_bytes()[:200])  # a damaged entry is read around and replaced
    assert load_in_new_process().digest == changed.digest
    with np.load(new_entry) as saved:
        assert saved["a0"].shape == (60, 12, 12)


def test_digits_test_split_is_fixed_and_stratified() -> None:
    data = load_dataset("digits")
    assert data.X_train.shape == (1347, 64) and data.X_test.shape == (450, 64)
    counts = np.bincount(data.y_test.asnumpy().astype(int))
    assert counts.min() >= 43 and counts.max() <= 46


def test_split_is_disjoint_seeded_and_complete() -> None:
    train_idx, val_idx = split_indices(1000, 200, seed=3)
    assert len(val_idx) == 200 and len(train_idx) == 800
    assert not set(train_idx) & set(val_idx)
    assert set(train_idx) | set(val_idx) == set(range(1000))
    again, val_again = split_indices(1000, 200, seed=3)
    np.testing.assert_array_equal(val_idx, val_again)
    assert not np.array_equal(val_idx, split_indices(1000, 200, seed=4)[1])
    subset, val_subset = split_indices(1000, 200, seed=3, train_size=50)
    np.testing.assert_array_equal(val_subset, val_idx)
    assert len(subset) == 50 and set(subset) <= set(train_idx)
    with pytest.raises(UserError, match="val_size=1000 must be smaller than the training set"):
        split_indices(1000, 1000, seed=0)


def test_data_iter_covers_each_example_once_per_epoch() -> None:
    data = load_dataset("digits")
    indices = np.arange(100, 200)
    batches = list(DataIter(data.X_train, data.y_train, indices, 32, shuffle=True))
    assert [len(X) for X, _ in batches] == [32, 32, 32, 4]
    seen = np.concatenate([X.asnumpy() for X, _ in batches])
    expected = data.X_train.asnumpy()[indices]
    assert sorted(map(bytes, seen)) == sorted(map(bytes, expected))
