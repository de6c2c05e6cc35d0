"""fastnn: train small neural networks on the CPU, fast.

    import fastnn, fastnn.functional as F
    fastnn.info()              # version, backend, isa, threads, compiler
    F.softmax_cross_entropy(logits, labels)
"""
import importlib as _importlib
import os as _os
import warnings as _warnings

from . import _threadpool, backends

__version__ = "0.1.0"

__all__ = ["info", "backend", "set_backend", "set_num_threads", "functional", "nn", "optim", "datasets",
           "Trainer", "MLPClassifier", "MLPRegressor", "save", "load", "__version__",
           "gradcheck", "numerical_gradient", "set_float32_matmul_precision", "get_float32_matmul_precision"]

# Public names defined in submodules, imported on first use so that
# `import fastnn` stays quick (no plotting or progress-bar imports).
_LAZY = {
    "functional": ("fastnn.functional", None),
    "nn": ("fastnn.nn", None),
    "optim": ("fastnn.optim", None),
    "datasets": ("fastnn.datasets", None),
    "Trainer": ("fastnn.train", "Trainer"),
    "MLPClassifier": ("fastnn.sklearn", "MLPClassifier"),
    "MLPRegressor": ("fastnn.sklearn", "MLPRegressor"),
    "save": ("fastnn.checkpoint", "save"),
    "load": ("fastnn.checkpoint", "load"),
    "gradcheck": ("fastnn.gradient_check", "gradcheck"),
    "numerical_gradient": ("fastnn.gradient_check", "numerical_gradient"),
}


def __getattr__(name):
    if name not in _LAZY:
        raise AttributeError(f"module 'fastnn' has no attribute {name!r}")
    module_name, attr = _LAZY[name]
    module = _importlib.import_module(module_name)
    value = module if attr is None else getattr(module, attr)
    globals()[name] = value
    return value


def __dir__():
    # What a user may use (lazy names included), not the modules imported here for internal use.
    return sorted(set(__all__) | set(_LAZY))


def backend():
    """Name of the active backend: 'cpp', 'numba' or 'numpy'."""
    return backends.active().NAME


def set_backend(name):
    """Switch the backend for all later calls. Raises ImportError if it cannot load."""
    backends.set_active(name)


def _core_or_none():
    try:
        from . import _core
        return _core
    except ImportError:
        return None


def set_num_threads(n):
    """Threads used by the C++ kernels (fastnn's pool, all callers together) and the Numba kernels."""
    if isinstance(n, bool) or not isinstance(n, int):
        raise TypeError(f"n must be an int, got {type(n).__name__}")
    if not 1 <= n <= 1024:
        raise ValueError(f"n must be in [1, 1024], got {n}")
    core = _core_or_none()
    if core is not None:
        core.set_num_threads(n)
    backends.requested_threads = n
    if "numba" in backends._loaded:
        backends.set_numba_threads(n)


_MATMUL_PRECISIONS = ("highest", "high", "medium")
# The setting when _core cannot load (the C++ kernels keep their own otherwise).
_matmul_precision = "highest"


def set_float32_matmul_precision(precision):
    """How float32 matmuls (matmul, linear, linear_backward) may round, with
    PyTorch's names and meanings; process-wide, seen by every thread.

    "highest" (the default): float32 math.
    "high": the same as "highest" here -- PyTorch's "high" (TF32, or bf16x3)
        needs hardware that pays for it, and a CPU has nothing between the two.
    "medium": the C++ kernels round the inputs of each product to bfloat16
        (round to nearest even) and accumulate in float32, twice as fast where
        the CPU has AVX512_BF16 (see info()["bf16"]); elsewhere they keep
        float32 math. Parameters, gradients and optimizer state stay float32;
        a mostly-zero input (the first layer's pixels) is multiplied by its
        nonzero pairs of bf16 values; float64 is never rounded. The numba and numpy backends keep float32
        math in every setting.
    """
    global _matmul_precision
    if not isinstance(precision, str):
        raise TypeError(f"precision must be a str, got {type(precision).__name__}")
    if precision not in _MATMUL_PRECISIONS:
        raise ValueError(f"precision must be 'highest', 'high' or 'medium', got {precision!r}")
    core = _core_or_none()
    if core is not None:
        core.set_matmul_precision(precision)
    _matmul_precision = precision


def get_float32_matmul_precision():
    """The setting of set_float32_matmul_precision: 'highest', 'high' or 'medium'."""
    core = _core_or_none()
    return core.matmul_precision() if core is not None else _matmul_precision


def info():
    """What fastnn runs on: version, backend, isa, threads, compiler, the
    float32 matmul precision, and whether bf16 matmuls run ("bf16": the CPU
    has AVX512_BF16 and FASTNN_ISA does not cap it off)."""
    core = _core_or_none()
    name = backend()
    if name == "numba":
        import numba
        threads = numba.get_num_threads()
    else:
        threads = core.num_threads() if core is not None and name == "cpp" else 1
    return {
        "version": __version__,
        "backend": name,
        "isa": core.isa() if core is not None else None,
        "cpu_isa": core.cpu_isa() if core is not None else None,
        "threads": threads,
        "compiler": core.compiler() if core is not None else None,
        "matmul_precision": get_float32_matmul_precision(),
        "bf16": core.has_bf16() if core is not None else False,
    }


def _apply_environment():
    isa = _os.environ.get("FASTNN_ISA")
    if isa is not None and isa not in ("avx512_bf16", "avx512", "avx2", "generic"):
        _warnings.warn(f"fastnn: FASTNN_ISA={isa!r} is not one of avx512_bf16, avx512, avx2, generic; ignored",
                      RuntimeWarning, stacklevel=3)
    threads = _os.environ.get("FASTNN_NUM_THREADS")
    if threads:
        try:
            set_num_threads(int(threads))
        except ValueError:
            _warnings.warn(f"fastnn: FASTNN_NUM_THREADS={threads!r} is not an integer in [1, 1024]; ignored",
                          RuntimeWarning, stacklevel=3)


_apply_environment()
_threadpool.install()
