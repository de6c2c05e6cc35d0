"""fastnn's environment and its small public helpers: FASTNN_ISA,
FASTNN_NUM_THREADS and FASTNN_BACKEND (good and bad values), the fallback
cpp -> numba -> numpy when a backend cannot load (simulated in a subprocess
by an import blocker), set_num_threads' argument checks, and
functional.as_float_array / as_labels."""
import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import fastnn
import fastnn.functional as F

# Imports fastnn with the modules of BLOCKED failing to import, and prints
# fastnn.info() and every warning raised on the way as JSON.
_PROBE = textwrap.dedent("""
    import importlib.abc, json, sys, warnings
    BLOCKED = set(sys.argv[1:])

    class Blocker(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path, target=None):
            if name in BLOCKED:
                raise ImportError(f"{name} blocked for this test")
            return None

    sys.meta_path.insert(0, Blocker())
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        import fastnn
        info = fastnn.info()  # the first kernel lookup: picks the backend
    print(json.dumps({"info": info, "warnings": [f"{w.category.__name__}: {w.message}" for w in caught]}))
""")


def probe(env, blocked=()):
    """(fastnn.info(), warnings) of a fresh interpreter with the FASTNN_* and
    OMP_* variables replaced by `env`."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("FASTNN_", "OMP_"))}
    result = subprocess.run([sys.executable, "-c", _PROBE, *blocked], capture_output=True, text=True,
                            env={**clean, **env}, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    out = json.loads(result.stdout.strip().splitlines()[-1])
    return out["info"], out["warnings"]


@pytest.fixture(scope="module")
def default():
    info, caught = probe({})
    assert caught == [], caught  # a clean environment warns about nothing
    return info


def test_good_environment_values_take_effect_silently(default):
    info, caught = probe({"FASTNN_ISA": "generic", "FASTNN_NUM_THREADS": "1", "FASTNN_BACKEND": "numba"})
    assert caught == []
    assert info["isa"] == "generic" and info["cpu_isa"] == default["cpu_isa"]
    assert info["backend"] == "numba" and info["threads"] == 1


def test_bad_fastnn_isa_warns_and_is_ignored(default):
    info, caught = probe({"FASTNN_ISA": "sse9"})
    assert caught == ["RuntimeWarning: fastnn: FASTNN_ISA='sse9' is not one of avx512_bf16, avx512, avx2, generic; ignored"]
    assert info["isa"] == default["isa"] == default["cpu_isa"]


@pytest.mark.parametrize("value", ["abc", "0", "-3", "2.5", "100000"])
def test_bad_fastnn_num_threads_warns_and_is_ignored(default, value):
    info, caught = probe({"FASTNN_NUM_THREADS": value})
    assert caught == [f"RuntimeWarning: fastnn: FASTNN_NUM_THREADS={value!r} is not an integer in [1, 1024]; "
                      "ignored"]
    assert info["threads"] == default["threads"]


def test_bad_fastnn_backend_warns_and_uses_cpp():
    info, caught = probe({"FASTNN_BACKEND": "gpu"})
    assert caught == ["RuntimeWarning: fastnn: FASTNN_BACKEND='gpu' is not one of cpp, numba, numpy; using cpp"]
    assert info["backend"] == "cpp"


@pytest.mark.parametrize("blocked, env, expected", [
    (["fastnn._core"], {}, "numba"),
    (["fastnn._core", "numba"], {}, "numpy"),
    (["numba"], {"FASTNN_BACKEND": "numba"}, "numpy"),
])
def test_a_backend_that_cannot_load_falls_back_with_a_warning(blocked, env, expected):
    info, caught = probe(env, blocked)
    chain = ["cpp", "numba", "numpy"]
    start = chain.index(env.get("FASTNN_BACKEND", "cpp"))
    want = [f"RuntimeWarning: fastnn: the {name} backend cannot load ({module} blocked for this test); "
            f"falling back to {chain[chain.index(name) + 1]}"
            for name, module in zip(chain[start:chain.index(expected)], [m for m in blocked])]
    assert caught == want
    assert info["backend"] == expected
    if "fastnn._core" in blocked:
        assert info["isa"] is None and info["compiler"] is None and info["bf16"] is False


@pytest.mark.parametrize("n, error", [(0, ValueError), (-1, ValueError), (1025, ValueError), (True, TypeError),
                                      (1.5, TypeError), (2.0, TypeError), ("2", TypeError), (None, TypeError)])
def test_set_num_threads_refuses_what_is_not_a_thread_count(n, error):
    from fastnn import _core
    before = _core.num_threads()
    with pytest.raises(error, match="n must be"):
        fastnn.set_num_threads(n)
    assert _core.num_threads() == before


def test_set_num_threads_sets_the_count():
    from fastnn import _core
    before = _core.num_threads()
    try:
        fastnn.set_num_threads(1)
        assert _core.num_threads() == 1
    finally:
        fastnn.set_num_threads(before)


# ------------------------------------------------------------ as_float_array

@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_as_float_array_returns_a_ready_array_itself(dtype):
    x = np.ones((3, 4), dtype)
    assert F.as_float_array(x, "x") is x
    assert F.as_float_array(x, "x", dtype) is x


@pytest.mark.parametrize("value, dtype", [
    (np.ones(3, np.float16), np.float32),       # other floats go to float32
    (np.arange(3, dtype=np.int32), np.float64),  # integers and bools as NumPy computes them
    (np.array([True, False]), np.float64),
    ([1, 2, 3], np.float64),
    ([[0.5, 1.5]], np.float64),
    (np.ones(3, ">f4"), np.float32),             # byte-swapped: native order
    (np.ones((4, 6))[:, ::2], np.float64),       # a strided view: copied once
    (np.asfortranarray(np.ones((3, 2), np.float32)), np.float32),
])
def test_as_float_array_converts_explicitly(value, dtype):
    got = F.as_float_array(value, "x")
    want = np.asarray(value)
    assert got.dtype == dtype and got.dtype.isnative
    assert got.flags.c_contiguous and got.flags.aligned and got.shape == want.shape
    np.testing.assert_array_equal(got, want.astype(np.float64))


def test_as_float_array_with_a_dtype_converts_to_it():
    got = F.as_float_array(np.arange(4, dtype=np.int64), "x", np.float32)
    assert got.dtype == np.float32
    np.testing.assert_array_equal(got, [0, 1, 2, 3])
    x = np.ones(3, np.float64)
    assert F.as_float_array(x, "x", np.float32).dtype == np.float32 and x.dtype == np.float64


@pytest.mark.parametrize("value", ["1.0", b"1", None, np.array(["a"]), np.array([1 + 2j]),
                                   np.array([object()], dtype=object), [[1.0], [1.0, 2.0]]])
def test_as_float_array_refuses_what_is_not_numbers(value):
    with pytest.raises(TypeError, match="^weights must"):
        F.as_float_array(value, "weights")


# ---------------------------------------------------------------- as_labels

def test_as_labels_gives_int64_labels():
    got = F.as_labels(np.array([2, 0, 1], np.int32), "t")
    assert got.dtype == np.int64 and got.flags.c_contiguous
    np.testing.assert_array_equal(got, [2, 0, 1])
    ready = np.array([1, 0], np.int64)
    assert F.as_labels(ready, "t") is ready
    np.testing.assert_array_equal(F.as_labels([1, 1, 0], "t"), [1, 1, 0])
    np.testing.assert_array_equal(F.as_labels(np.arange(6)[::2], "t"), [0, 2, 4])


@pytest.mark.parametrize("value, message", [
    (np.array([0.0, 1.0]), "t must hold integer class labels, got dtype float64"),
    (np.array([True, False]), "t must hold integer class labels, got dtype bool"),
])
def test_as_labels_refuses_what_are_not_integer_labels(value, message):
    with pytest.raises(TypeError, match=f"^{message}$"):
        F.as_labels(value, "t")


@pytest.mark.parametrize("labels", [np.array([[0, 1]]), np.array([0, 1, 2])])
def test_labels_of_the_wrong_shape_are_a_value_error_on_every_backend(backend, labels):
    with pytest.raises(ValueError, match="target"):
        F.cross_entropy(np.zeros((2, 3)), labels)


@pytest.mark.parametrize("bad", [-1, 3])
def test_labels_out_of_range_are_an_index_error_on_every_backend(backend, bad):
    labels = np.array([0, bad], np.int64)
    with pytest.raises(IndexError, match=f"{bad}"):
        F.cross_entropy(np.zeros((2, 3)), labels)
