"""The user's own data for `fastnn train --data`, `predict` and `evaluate`.

Formats:
  .npz  arrays x_train, y_train and optionally x_test, y_test (no pickle);
  .csv  one sample per row, one column holding the label (the first unless
        told otherwise), every other column a number; a header row is optional;
  .npy  features only (for predict).

Feature arrays of more than two dimensions (images) are flattened per sample.
Labels may be integers or strings; `classes` lists the distinct labels in
sorted order, and the model's output k stands for classes[k].
Every error is a DataFileError naming the file and the array, line or column.
"""
import csv
import os

import numpy as np


class DataFileError(ValueError):
    """A data file that cannot be used as it is; the message says where and why."""


def _features(x, path, name):
    """x as a finite float32 (samples, features) array."""
    if x.dtype.kind not in "biuf":
        raise DataFileError(f"{path}: array '{name}' has dtype {x.dtype}, expected numbers")
    if x.ndim < 2:
        raise DataFileError(f"{path}: array '{name}' has shape {x.shape}, expected (samples, features)")
    x = np.ascontiguousarray(x.reshape(x.shape[0], -1), dtype=np.float32)
    if x.shape[0] == 0 or x.shape[1] == 0:
        raise DataFileError(f"{path}: array '{name}' is empty (shape {x.shape})")
    bad = np.flatnonzero(~np.isfinite(x).all(axis=1))
    if bad.size:
        raise DataFileError(f"{path}: array '{name}' has a NaN or infinite value in sample {bad[0]}")
    return x


def _labels(y, path, name, n):
    """y as a 1-D array of n labels (integers or strings)."""
    y = np.asarray(y)
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if y.ndim != 1:
        raise DataFileError(f"{path}: array '{name}' has shape {y.shape}, expected one label per sample ({n},)")
    if y.shape[0] != n:
        raise DataFileError(f"{path}: array '{name}' has {y.shape[0]} labels for {n} samples")
    if y.dtype.kind == "f":
        if not np.all(np.isfinite(y)) or np.any(y != np.round(y)):
            raise DataFileError(f"{path}: array '{name}' holds non-integer numbers; labels must be "
                                "class labels (integers or strings)")
        y = y.astype(np.int64)
    elif y.dtype.kind not in "biuU":
        raise DataFileError(f"{path}: array '{name}' has dtype {y.dtype}, expected integer or string labels")
    return y


def read_npz(path):
    """{'x_train', 'y_train'[, 'x_test', 'y_test']} from an .npz, checked."""
    try:
        with np.load(path, allow_pickle=False) as f:
            arrays = {k: f[k] for k in f.files}
    except ValueError as exc:
        if "pickle" in str(exc):
            raise DataFileError(f"{path}: holds Python objects (pickled); save plain numeric arrays") from None
        raise DataFileError(f"{path}: not a readable .npz file ({exc})") from None
    except Exception as exc:  # zipfile.BadZipFile, EOFError, OSError: all mean an unreadable file
        raise DataFileError(f"{path}: not a readable .npz file ({type(exc).__name__}: {exc})") from None
    for name in ("x_train", "y_train"):
        if name not in arrays:
            raise DataFileError(f"{path}: no array '{name}' (it has {', '.join(sorted(arrays)) or 'none'}); "
                                "the .npz needs x_train and y_train, and optionally x_test and y_test")
    if ("x_test" in arrays) != ("y_test" in arrays):
        missing = "y_test" if "x_test" in arrays else "x_test"
        raise DataFileError(f"{path}: has {'x_test' if missing == 'y_test' else 'y_test'} but no '{missing}'")
    data = {}
    for split in ("train", "test"):
        if f"x_{split}" in arrays:
            x = _features(arrays[f"x_{split}"], path, f"x_{split}")
            data[f"x_{split}"] = x
            data[f"y_{split}"] = _labels(arrays[f"y_{split}"], path, f"y_{split}", x.shape[0])
    if "x_test" in data and data["x_test"].shape[1] != data["x_train"].shape[1]:
        raise DataFileError(f"{path}: x_test has {data['x_test'].shape[1]} features, x_train "
                            f"{data['x_train'].shape[1]}")
    return data


def read_npy(path):
    """The features in an .npy file (no labels)."""
    try:
        x = np.load(path, allow_pickle=False)
    except Exception as exc:  # a pickled object array, a truncated or foreign file
        raise DataFileError(f"{path}: not a readable .npy array of numbers ({exc})") from None
    if not isinstance(x, np.ndarray):
        raise DataFileError(f"{path}: an .npz archive, expected one .npy array of features")
    return _features(x, path, "features")


def _is_number(text):
    try:
        float(text)
    except ValueError:
        return False
    return True


def _is_integer(text):
    try:
        int(text)
    except ValueError:
        return False
    return True


def read_csv(path, label_column=None, n_features=None):
    """(x, y, header) from a CSV file. label_column is a header name or a
    0-based column index (negative counts from the end); the default is the
    first column. With n_features given (predict), a file with exactly that
    many columns is all features and y is None."""
    try:
        with open(path, newline="") as f:
            rows = [(i, row) for i, row in enumerate(csv.reader(f), start=1) if any(c.strip() for c in row)]
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise DataFileError(f"{path}: cannot read it as CSV ({exc})") from None
    if not rows:
        raise DataFileError(f"{path}: the file is empty")
    width = len(rows[0][1])
    first = [c.strip() for c in rows[0][1]]
    all_features = n_features is not None and width == n_features
    if all_features:
        label_guess = None
    elif label_column is not None and not _is_integer(label_column):
        label_guess = first.index(label_column) if label_column in first else None
    else:
        label_guess = int(label_column or 0) % max(width, 1)
    # A header row has a cell that is not a number outside the label column (labels may be words).
    header = first if any(not _is_number(c) for j, c in enumerate(first) if j != label_guess) else None
    if header is not None:
        rows = rows[1:]
    if not rows:
        raise DataFileError(f"{path}: has a header row but no data rows")
    for line, row in rows:
        if len(row) != width:
            raise DataFileError(f"{path} line {line}: {len(row)} fields, expected {width} like line 1")
    label_index = None if all_features else _column_index(path, label_column, header, width)
    names = header or [str(i) for i in range(width)]
    feature_cols = [j for j in range(width) if j != label_index]
    if not feature_cols:
        raise DataFileError(f"{path}: has only the label column, no features")
    x = np.empty((len(rows), len(feature_cols)), dtype=np.float32)
    for r, (line, row) in enumerate(rows):
        for k, j in enumerate(feature_cols):
            try:
                x[r, k] = float(row[j])
            except ValueError:
                raise DataFileError(f"{path} line {line}, column '{names[j]}': {row[j].strip()!r} is not a "
                                    "number") from None
    bad = np.argwhere(~np.isfinite(x))
    if bad.size:
        r, k = bad[0]
        raise DataFileError(f"{path} line {rows[r][0]}, column '{names[feature_cols[k]]}': not a finite number")
    if label_index is None:
        return x, None, header
    raw = [row[label_index].strip() for _, row in rows]
    try:
        y = np.array([int(v) for v in raw], dtype=np.int64)
    except ValueError:
        if all(_is_number(v) for v in raw):
            bad = next(v for v in raw if not _is_integer(v))
            raise DataFileError(f"{path}, label column '{names[label_index]}': {bad!r} is not a class label "
                                "(labels are integers or words)") from None
        y = np.array(raw)
    return x, y, header


def _column_index(path, label_column, header, width):
    """The 0-based index of the label column."""
    if label_column is None:
        return 0
    if header is not None and label_column in header:
        return header.index(label_column)
    try:
        index = int(label_column)
    except ValueError:
        known = f"its columns are {', '.join(header)}" if header else "it has no header row"
        raise DataFileError(f"{path}: no column named {label_column!r} for --label-column ({known})") from None
    if not -width <= index < width:
        raise DataFileError(f"{path}: --label-column {index} is out of range for {width} columns")
    return index % width


def read_labelled(path, label_column=None):
    """{'x_train', 'y_train'[, 'x_test', 'y_test']} from an .npz or a CSV (all of it training data)."""
    ext = os.path.splitext(path)[1].lower()
    if ext == ".npz":
        return read_npz(path)
    if ext == ".csv":
        x, y, _ = read_csv(path, label_column)
        return {"x_train": x, "y_train": y}
    raise DataFileError(f"{path}: unknown data format {ext or '(no extension)'}; use .npz (x_train, y_train, "
                        "optional x_test, y_test) or .csv (a label column and feature columns)")


def encode_labels(classes, y, path, name):
    """Indices into classes for the labels y; a label that is not a class is an error."""
    classes = np.asarray(classes)
    if classes.dtype.kind == "U" and y.dtype.kind != "U":
        y = y.astype(str)
    elif classes.dtype.kind != "U" and y.dtype.kind == "U":
        raise DataFileError(f"{path}: {name} holds words, but the model's classes are the integers "
                            f"{classes[0]}..{classes[-1]}")
    index = np.minimum(np.searchsorted(classes, y), len(classes) - 1)
    unknown = np.flatnonzero(classes[index] != y)
    if unknown.size:
        raise DataFileError(f"{path}: {name} has label {y[unknown[0]].item()!r} (sample {unknown[0]}), which is "
                            f"not one of the model's {len(classes)} classes")
    return index.astype(np.int64)
