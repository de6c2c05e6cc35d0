"""What every module of the numba backend shares: the on-disk cache location
(chosen before numba is imported), the jit decorator and its fast-math flag
sets, and the small array helpers of the Python wrappers."""
import os
import tempfile


def _writable_dir(path):
    # The same test numba's cache locators apply: create it, then write a file in it.
    try:
        os.makedirs(path, exist_ok=True)
        tempfile.TemporaryFile(dir=path).close()
        return True
    except OSError:
        return False


def _choose_cache_dir():
    """Returns (use_disk_cache, directory or None). Sets NUMBA_CACHE_DIR if needed."""
    if os.environ.get("NUMBA_CACHE_DIR"):
        return True, os.environ["NUMBA_CACHE_DIR"]
    here = os.path.dirname(os.path.abspath(__file__))
    if _writable_dir(os.path.join(here, "__pycache__")):
        return True, None  # numba's default in-tree cache works
    candidates = []
    if os.environ.get("FASTNN_DATA"):
        candidates.append(os.path.join(os.environ["FASTNN_DATA"], "numba-cache"))
    xdg = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    candidates.append(os.path.join(xdg, "fastnn", "numba-cache"))
    uid = os.getuid() if hasattr(os, "getuid") else os.environ.get("USERNAME", "user")
    candidates.append(os.path.join(tempfile.gettempdir(), "fastnn-numba-cache-%s" % uid))
    for path in candidates:
        if _writable_dir(path):
            os.environ["NUMBA_CACHE_DIR"] = path
            return True, path
    return False, None


CACHE, CACHE_DIR = _choose_cache_dir()

import numpy as np  # noqa: E402
import numba  # noqa: E402

if CACHE_DIR is not None and not numba.core.config.CACHE_DIR:
    # numba was imported before us: it read NUMBA_CACHE_DIR already.
    numba.core.config.CACHE_DIR = CACHE_DIR

FM_SUM = {"contract", "reassoc"}    # kernels with float64 sums (need reassoc to vectorise)
FM_MATH = {"contract"}              # the polynomial helpers (FMA only; no reassociation!)
MATH_OPTIONS = {"fastmath": FM_MATH, "error_model": "numpy"}


def jit(fn=None, **opts):
    # error_model="numpy": x / 0 gives inf/nan as in NumPy instead of raising
    # ZeroDivisionError, and without that per-division check loops vectorise.
    if fn is None:
        return lambda f: jit(f, **opts)
    return numba.njit(cache=CACHE, error_model="numpy", **opts)(fn)


def target(out, like):
    # Where a kernel may write a result shaped and typed like `like`: `out`
    # itself when it is a C-contiguous writeable array of that shape and dtype.
    if out is None:
        return np.empty(like.shape, like.dtype)
    if (out.dtype == like.dtype and out.shape == like.shape
            and out.flags.c_contiguous and out.flags.writeable):
        return out
    return np.empty(like.shape, like.dtype)


def finish(out, result):
    if out is None or result is out:
        return result
    out[...] = result
    return out


_EMPTY = {}


def empty(dtype, ndim=1):
    # A placeholder for an unused array argument (kernels are typed by dtype and ndim).
    key = (dtype, ndim)
    if key not in _EMPTY:
        _EMPTY[key] = np.empty((0,) * ndim, dtype)
    return _EMPTY[key]
