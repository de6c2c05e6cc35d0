"""Checkpoints: one .npz file, no pickle, written atomically.

Layout: '__fastnn__' holds the format name; 'model.config' the architecture
(JSON); 'model/<name>' each weight; 'optimizer' and 'meta' are JSON documents
whose arrays are stored beside them as 'optimizer/<k>' and 'meta/<k>'.
"""
import json
import os
import tempfile
import zipfile

import numpy as np

__all__ = ["save", "load", "Checkpoint"]

FORMAT = "fastnn-checkpoint-1"


class Checkpoint:
    """What load() returns: the rebuilt model, the optimizer's state_dict (or None) and meta."""

    def __init__(self, model, optimizer_state, meta):
        self.model = model
        self.optimizer_state = optimizer_state
        self.meta = meta

    def __repr__(self):
        return f"Checkpoint(model={type(self.model).__name__}, optimizer_state={'yes' if self.optimizer_state else None}, meta={sorted(self.meta)})"


def _encode(value, prefix, arrays):
    """value as JSON-able data; arrays are moved into `arrays` under prefix/<n>."""
    if isinstance(value, np.ndarray):
        key = f"{prefix}/{len(arrays)}"
        arrays[key] = value
        return {"__array__": key}
    if isinstance(value, dict):
        return {"__dict__": [[k, _encode(v, prefix, arrays)] for k, v in value.items()]}
    if isinstance(value, tuple):
        return {"__tuple__": [_encode(v, prefix, arrays) for v in value]}
    if isinstance(value, list):
        return [_encode(v, prefix, arrays) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    raise TypeError(f"cannot store a {type(value).__name__} in a checkpoint (no pickle): {value!r}")


def _decode(value, arrays):
    if isinstance(value, list):
        return [_decode(v, arrays) for v in value]
    if isinstance(value, dict):
        if "__array__" in value:
            return arrays[value["__array__"]]
        if "__tuple__" in value:
            return tuple(_decode(v, arrays) for v in value["__tuple__"])
        return {k: _decode(v, arrays) for k, v in value["__dict__"]}
    return value


def save(path, model, optimizer=None, **meta):
    """Write model (architecture and weights), optimizer state and meta to one
    .npz at `path`, atomically: a reader sees the old file or the new one."""
    arrays = {"__fastnn__": np.array(FORMAT), "model.config": np.array(json.dumps(model.config()))}
    for name, value in model.state_dict().items():
        arrays[f"model/{name}"] = value
    if optimizer is not None:
        arrays["optimizer"] = np.array(json.dumps(_encode(optimizer.state_dict(), "optimizer", arrays)))
    arrays["meta"] = np.array(json.dumps(_encode(meta, "meta", arrays)))
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".npz", dir=directory)
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **arrays)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise
    return path


def load(path):
    """Read a checkpoint written by save(); a truncated or foreign file raises ValueError."""
    from . import nn

    try:
        with np.load(path, allow_pickle=False) as f:
            arrays = {k: f[k] for k in f.files}
    except (zipfile.BadZipFile, EOFError, OSError, ValueError) as exc:
        if isinstance(exc, FileNotFoundError):
            raise
        # numpy's advice for pickled files (load them unsafely) is not advice for a checkpoint.
        detail = "" if "pickle" in str(exc) else f": {exc}"
        raise ValueError(f"{path} is not a readable fastnn checkpoint (truncated or not an .npz file){detail}") from None
    if "__fastnn__" not in arrays or str(arrays["__fastnn__"]) != FORMAT:
        raise ValueError(f"{path} is not a fastnn checkpoint (no '{FORMAT}' marker)")
    try:
        model = nn.build(json.loads(str(arrays["model.config"])))
        model.load_state_dict({k[len("model/"):]: v for k, v in arrays.items() if k.startswith("model/")})
        optimizer_state = _decode(json.loads(str(arrays["optimizer"])), arrays) if "optimizer" in arrays else None
        meta = _decode(json.loads(str(arrays["meta"])), arrays)
    except (KeyError, ValueError, TypeError) as exc:
        raise ValueError(f"{path} is a damaged fastnn checkpoint: {exc}") from None
    return Checkpoint(model, optimizer_state, meta)
