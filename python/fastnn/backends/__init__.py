"""Backend selection: cpp (fastnn._core), numba, or numpy (the reference).

Every backend module exposes the same kernel names and signatures (see
numpy_backend), and every kernel checks its arguments: _core in C++, the numpy
and numba kernels through the one Python validator, backends.checks, with the
same exceptions and messages. The active one is chosen from FASTNN_BACKEND
(default cpp); a backend that cannot load falls back to the next, with a
warning that says why.
"""
import importlib
import os
import warnings

NAMES = ("cpp", "numba", "numpy")
_MODULES = {"cpp": "cpp_backend", "numba": "numba_backend", "numpy": "numpy_backend"}
_loaded = {}
_active = None
# The count of fastnn.set_num_threads, for a numba backend that loads after it was set.
requested_threads = None


def load(name):
    """Import and return the backend module `name`; raises ImportError if it cannot load."""
    if name not in NAMES:
        raise ValueError(f"backend must be one of {', '.join(NAMES)}, got {name!r}")
    if name not in _loaded:
        module = importlib.import_module(f".{_MODULES[name]}", __name__)
        if name != "cpp":  # _core checks its own arguments
            from .checks import checked
            module = checked(module)
        _loaded[name] = module
        if name == "numba" and requested_threads is not None:
            set_numba_threads(requested_threads)
    return _loaded[name]


def set_numba_threads(n):
    import numba
    numba.set_num_threads(min(n, numba.config.NUMBA_NUM_THREADS))


def _first_loadable(preferred):
    start = NAMES.index(preferred)
    for name in NAMES[start:]:
        try:
            return load(name)
        except ImportError as exc:
            nxt = NAMES[NAMES.index(name) + 1] if name != NAMES[-1] else None
            if nxt is None:
                raise
            warnings.warn(f"fastnn: the {name} backend cannot load ({exc}); falling back to {nxt}",
                          RuntimeWarning, stacklevel=3)
    raise ImportError("no fastnn backend could load")


def active():
    """The active backend module (chosen on first use)."""
    global _active
    if _active is None:
        wanted = os.environ.get("FASTNN_BACKEND", "cpp").strip().lower() or "cpp"
        if wanted not in NAMES:
            warnings.warn(f"fastnn: FASTNN_BACKEND={wanted!r} is not one of {', '.join(NAMES)}; using cpp",
                          RuntimeWarning, stacklevel=2)
            wanted = "cpp"
        _active = _first_loadable(wanted)
    return _active


def set_active(name):
    """Make backend `name` active. Unlike the environment default, an explicit
    choice does not fall back: it raises ImportError if that backend cannot load."""
    global _active
    _active = load(name)
    return _active
