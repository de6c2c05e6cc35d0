"""fastnn._core called directly: every kernel accepts its good call and refuses
each kind of bad argument (dtype, mixed dtypes, strides, shapes, labels out of
range, read-only or overlapping out) with TypeError, ValueError or IndexError.
Without the C++ extension this whole file skips, and only this file."""
import numpy as np
import pytest

from conftest import need

core = need("fastnn._core")


def _core_cases():
    """name -> (function, good arguments, name of the labels argument or None,
    name of the output argument or None, list of wrong-shape overrides)."""
    rng = np.random.default_rng(7)
    x = rng.standard_normal((6, 4))
    p = rng.uniform(0.1, 0.9, (6, 4))
    lab = np.array([0, 1, 2, 3, 0, 1], dtype=np.int64)
    W = rng.standard_normal((4, 3))
    b = rng.standard_normal(3)
    dy3 = rng.standard_normal((6, 3))
    short = {"x": x[:-1].copy(), "p": p[:-1].copy()}
    bad_t = [{"t": p[:-1].copy()}, {"t": p.reshape(4, 6)}]
    cases = {
        "softmax": (core.softmax, {"x": x}, None, "out", [{"x": x[0].copy()}, {"x": x.reshape(2, 3, 4)}]),
        "log_softmax": (core.log_softmax, {"x": x}, None, "out", [{"x": x[0].copy()}, {"x": x.reshape(2, 3, 4)}]),
    }
    for name in ("sigmoid", "tanh", "relu", "leaky_relu", "elu"):
        cases[name] = (getattr(core, name), {"x": x}, None, "out", [])
    for name in ("sigmoid_backward", "tanh_backward", "relu_backward"):
        cases[name] = (getattr(core, name), {"y": p, "dy": x}, None, "out", [{"dy": short["x"]}, {"y": short["p"]}])
    for name in ("leaky_relu_backward", "elu_backward"):
        cases[name] = (getattr(core, name), {"x": x, "dy": p}, None, "out", [{"dy": short["p"]}])
    cases["squared_error"] = (core.squared_error, {"y": x, "t": p}, None, "per_element", bad_t)
    cases["squared_error_backward"] = (core.squared_error_backward, {"y": x, "t": p}, None, "out", bad_t)
    cases["binary_cross_entropy"] = (core.binary_cross_entropy, {"p": p, "t": p}, None, "per_element", bad_t)
    cases["binary_cross_entropy_backward"] = (core.binary_cross_entropy_backward, {"p": p, "t": p}, None, "out",
                                              bad_t)
    cases["binary_cross_entropy_with_logits"] = (core.binary_cross_entropy_with_logits, {"z": x, "t": p}, None,
                                                 "per_element", bad_t)
    cases["binary_cross_entropy_with_logits_backward"] = (core.binary_cross_entropy_with_logits_backward,
                                                          {"z": x, "t": p}, None, "out", bad_t)
    bad_cee = [{"t": lab[:-1].copy()}, {"t": p[:, :3].copy()}, {"y": p[0].copy(), "t": lab[:1].copy()}]
    cases["cross_entropy_error"] = (core.cross_entropy_error, {"y": p, "t": lab}, "t", None, bad_cee)
    cases["cross_entropy_error_backward"] = (core.cross_entropy_error_backward, {"y": p, "t": lab}, "t", "out",
                                             bad_cee)
    bad_ce = [{"target": lab[:-1].copy()}, {"target": p[:, :3].copy()}, {"logits": x[0].copy(), "target": lab[:1]}]
    cases["cross_entropy-row_loss"] = (core.cross_entropy, {"logits": x, "target": lab}, "target", "row_loss", bad_ce)
    cases["cross_entropy-dlogits"] = (core.cross_entropy, {"logits": x, "target": lab}, "target", "dlogits", bad_ce)
    cases["matmul"] = (core.matmul, {"a": x, "b": W}, None, "out", [{"b": W[:-1].copy()}, {"a": x.reshape(-1)}])
    cases["linear"] = (core.linear, {"x": x, "W": W, "b": b}, None, "out",
                       [{"W": W[:-1].copy()}, {"b": np.ones(4)}, {"x": x.reshape(-1)}])
    bad_lb = [{"dy": dy3[:, :2].copy()}, {"W": W[:-1].copy()}, {"y": np.ones((6, 2)), "activation": "relu"}]
    for out_name in ("dW_out", "db_out", "dx_out"):
        cases["linear_backward-" + out_name] = (core.linear_backward, {"x": x, "W": W, "dy": dy3}, None, out_name,
                                                bad_lb)
    cases["gather_rows"] = (core.gather_rows, {"x": x, "index": lab}, "index", "out",
                            [{"index": lab.reshape(2, 3)}, {"x": np.array(1.0)}])
    return cases


CORE = _core_cases()
CORE_NAMES = list(CORE)
WITH_LABELS = [n for n in CORE_NAMES if CORE[n][2]]
WITH_OUT = [n for n in CORE_NAMES if CORE[n][3]]


def _core_call(name, **overrides):
    fn, args = CORE[name][:2]
    return fn(**dict(args, **overrides))


def _float_args(name):
    _, args, labels_arg, _, _ = CORE[name]
    return [a for a, v in args.items() if a != labels_arg and v.dtype.kind == "f"]


def _out_shape(name):
    fn, args, _, out_name, _ = CORE[name]
    if name.startswith("cross_entropy-"):
        n, c = args["logits"].shape
        return (n,) if out_name == "row_loss" else (n, c)
    if name.startswith("linear_backward-"):
        return fn(**args)[{"dx_out": 0, "dW_out": 1, "db_out": 2}[out_name]].shape
    if out_name == "per_element":
        return next(iter(args.values())).shape
    return fn(**args).shape


@pytest.mark.parametrize("name", CORE_NAMES)
def test_core_accepts_the_good_call(name):
    """The baseline every refusal below is measured against: float64 and float32 both work."""
    _core_call(name)
    _core_call(name, **{a: CORE[name][1][a].astype(np.float32) for a in _float_args(name)})
    if CORE[name][3]:
        out = np.empty(_out_shape(name))
        result = _core_call(name, **{CORE[name][3]: out})
        if isinstance(result, np.ndarray):
            assert result is out


@pytest.mark.parametrize("bad_dtype", [np.float16, np.int32, np.int64, np.complex128])
@pytest.mark.parametrize("name", [n for n in CORE_NAMES if n != "gather_rows"])
def test_core_refuses_non_float_arrays_with_type_error(name, bad_dtype):
    args = CORE[name][1]
    for arg in _float_args(name):
        with pytest.raises(TypeError):
            _core_call(name, **{arg: args[arg].astype(bad_dtype)})


@pytest.mark.parametrize("name", [n for n in CORE_NAMES if len(_float_args(n)) > 1])
def test_core_refuses_mixed_float_dtypes_with_type_error(name):
    second = _float_args(name)[1]
    with pytest.raises(TypeError):
        _core_call(name, **{second: CORE[name][1][second].astype(np.float32)})


@pytest.mark.parametrize("name", WITH_OUT)
def test_core_refuses_out_of_another_dtype(name):
    with pytest.raises(TypeError):
        _core_call(name, **{CORE[name][3]: np.empty(_out_shape(name), dtype=np.float32)})


@pytest.mark.parametrize("name", CORE_NAMES)
def test_core_refuses_strided_views_with_value_error(name):
    args = CORE[name][1]
    for arg, value in args.items():
        view = np.repeat(value, 2, axis=-1)[..., ::2]
        assert not view.flags.c_contiguous
        np.testing.assert_array_equal(view, value)
        with pytest.raises(ValueError, match="C-contiguous"):
            _core_call(name, **{arg: view})
    if CORE[name][3]:
        shape = _out_shape(name)
        out = np.empty(shape[:-1] + (2 * shape[-1],))[..., ::2]
        with pytest.raises(ValueError, match="C-contiguous"):
            _core_call(name, **{CORE[name][3]: out})


@pytest.mark.parametrize("name", CORE_NAMES)
def test_core_refuses_wrong_shapes_with_value_error(name):
    _, _, _, out_name, bad_shapes = CORE[name]
    cases = list(bad_shapes)
    if out_name:
        shape = _out_shape(name)
        cases.append({out_name: np.empty((shape[0] + 1,) + shape[1:])})
    assert cases
    for overrides in cases:
        with pytest.raises(ValueError):
            _core_call(name, **overrides)


@pytest.mark.parametrize("name", WITH_LABELS)
def test_core_refuses_out_of_range_labels_with_index_error(name):
    _, args, labels_arg, _, _ = CORE[name]
    limit = args["x"].shape[0] if name == "gather_rows" else 4
    for bad in (limit, -1, 10 ** 12):
        lab = args[labels_arg].copy()
        lab[3] = bad
        with pytest.raises(IndexError):
            _core_call(name, **{labels_arg: lab})
    with pytest.raises(TypeError):  # labels must be int64: int32 and float are refused
        _core_call(name, **{labels_arg: args[labels_arg].astype(np.int32)})


@pytest.mark.parametrize("name", WITH_OUT)
def test_core_refuses_read_only_out_with_value_error(name):
    out = np.empty(_out_shape(name))
    out.flags.writeable = False
    with pytest.raises(ValueError):
        _core_call(name, **{CORE[name][3]: out})


@pytest.mark.parametrize("name", WITH_OUT)
def test_core_refuses_out_overlapping_an_input_with_value_error(name):
    """An out that partly overlaps an input (a window of the same buffer, one
    element further on) cannot be computed correctly in one pass: refused."""
    _, args, _, out_name, _ = CORE[name]
    shape = _out_shape(name)
    size = int(np.prod(shape))
    accepted = []
    for arg in _float_args(name):
        value = args[arg]
        buf = np.empty(max(value.size, size) + 1)
        buf[:value.size] = value.ravel()
        inp = buf[:value.size].reshape(value.shape)
        out = buf[1:1 + size].reshape(shape)
        try:
            _core_call(name, **{arg: inp, out_name: out})
        except ValueError as exc:
            assert "memory" in str(exc), exc
        else:
            accepted.append(arg)
    assert not accepted, f"{name}: an {out_name} partly overlapping {accepted} was accepted"


# Kernels whose out may be one of the inputs itself: elementwise kernels read
# element i before writing it, softmax reads a whole row before writing it.
IN_PLACE = {"softmax", "log_softmax", "sigmoid", "tanh", "relu", "leaky_relu", "elu",
            "sigmoid_backward", "tanh_backward", "relu_backward", "leaky_relu_backward", "elu_backward",
            "squared_error", "squared_error_backward", "binary_cross_entropy", "binary_cross_entropy_backward",
            "binary_cross_entropy_with_logits", "binary_cross_entropy_with_logits_backward"}


def _aliased_inputs(name):
    """The float inputs of `name` that have its output's shape (those an out could be)."""
    shape = _out_shape(name)
    return [arg for arg in _float_args(name) if CORE[name][1][arg].shape == shape]


@pytest.mark.parametrize("name", [n for n in WITH_OUT if _aliased_inputs(n)])
def test_core_out_that_is_an_input(name):
    """out = an input (the very same array): an in-place result equal to the
    out-of-place one for the kernels of IN_PLACE, a ValueError naming the
    shared memory for every other kernel."""
    _, args, _, out_name, _ = CORE[name]
    expected_out = np.empty(_out_shape(name))
    expected_ret = _core_call(name, **{out_name: expected_out})
    for arg in _aliased_inputs(name):
        alias = args[arg].copy()
        call = f"{name}({arg}=a, {out_name}=a)"
        if name not in IN_PLACE:
            with pytest.raises(ValueError, match="memory"):
                _core_call(name, **{arg: alias, out_name: alias})
            continue
        ret = _core_call(name, **{arg: alias, out_name: alias})
        np.testing.assert_allclose(alias, expected_out, rtol=1e-12, atol=1e-15, err_msg=f"{call} wrote wrong values")
        if np.ndim(expected_ret) == 0:
            assert ret == pytest.approx(expected_ret, rel=1e-12), f"{call} returned {ret}"
        else:
            assert ret is alias, f"{call} returned another array than out"
