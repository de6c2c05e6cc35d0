// pybind11 bindings for fastnn._core: check every argument (dtype, ndim, shape,
// contiguity, writeability, overlap, label range), allocate missing outputs,
// release the GIL and call a kernel. No computation happens here.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <cstring>
#include <optional>
#include <string>
#include <vector>

#include "dispatch.h"
#include "kernels.h"
#include "thread_pool.h"

namespace py = pybind11;
using fastnn::Act;
using fastnn::index_t;

namespace {

using OptArray = std::optional<py::array>;
using Shape = std::vector<index_t>;

std::string dtype_name(const py::array& a) { return py::str(a.dtype()).cast<std::string>(); }

std::string shape_str(const py::array& a) {
  std::string s = "(";
  for (py::ssize_t i = 0; i < a.ndim(); ++i) s += (i ? ", " : "") + std::to_string(a.shape(i));
  return s + (a.ndim() == 1 ? ",)" : ")");
}

std::string shape_str(const Shape& shape) {
  std::string s = "(";
  for (size_t i = 0; i < shape.size(); ++i) s += (i ? ", " : "") + std::to_string(shape[i]);
  return s + (shape.size() == 1 ? ",)" : ")");
}

bool is_f32(const py::array& a) { return a.dtype().equal(py::dtype::of<float>()); }
bool is_f64(const py::array& a) { return a.dtype().equal(py::dtype::of<double>()); }

void check_float(const py::array& a, const char* name) {
  if (!is_f32(a) && !is_f64(a))
    throw py::type_error(std::string(name) + " must be a float32 or float64 array (native byte order), got dtype " +
                         dtype_name(a));
}

void check_contiguous(const py::array& a, const char* name) {
  if (!(a.flags() & py::array::c_style))
    throw py::value_error(std::string(name) + " must be C-contiguous; got a strided view of shape " + shape_str(a) +
                          " (pass np.ascontiguousarray(" + name + "))");
  // Kernels load whole elements (and vectors of them): a misaligned buffer is undefined behaviour.
  if (!(a.flags() & py::detail::npy_api::NPY_ARRAY_ALIGNED_))
    throw py::value_error(std::string(name) + " must be aligned to its element size; got a misaligned buffer (pass " +
                          "np.require(" + name + ", requirements='CA'))");
}

void check_ndim(const py::array& a, py::ssize_t ndim, const char* name) {
  if (a.ndim() != ndim)
    throw py::value_error(std::string(name) + " must be " + std::to_string(ndim) + "-D, got shape " + shape_str(a));
}

void check_shape(const py::array& a, const Shape& shape, const char* name) {
  bool same = a.ndim() == static_cast<py::ssize_t>(shape.size());
  for (size_t i = 0; same && i < shape.size(); ++i) same = a.shape(i) == shape[i];
  if (!same)
    throw py::value_error(std::string(name) + " must have shape " + shape_str(shape) + ", got " + shape_str(a));
}

void check_same_shape(const py::array& a, const py::array& b, const char* name_a, const char* name_b) {
  bool same = a.ndim() == b.ndim();
  for (py::ssize_t i = 0; same && i < a.ndim(); ++i) same = a.shape(i) == b.shape(i);
  if (!same)
    throw py::value_error(std::string(name_a) + " and " + name_b + " must have the same shape, got " + shape_str(a) +
                          " and " + shape_str(b));
}

// A float input: float32/float64, C-contiguous, and the same dtype as `like`.
void check_input(const py::array& a, const char* name, const py::array* like = nullptr, const char* like_name = "") {
  check_float(a, name);
  check_contiguous(a, name);
  if (like && !a.dtype().equal(like->dtype()))
    throw py::type_error(std::string(name) + " must have the same dtype as " + like_name + " (" + dtype_name(*like) +
                         "), got " + dtype_name(a));
}

bool overlaps(const py::array& a, const py::array& b) {
  const char* a0 = static_cast<const char*>(a.data());
  const char* b0 = static_cast<const char*>(b.data());
  const py::ssize_t an = a.nbytes(), bn = b.nbytes();
  return an > 0 && bn > 0 && a0 < b0 + bn && b0 < a0 + an;
}

bool same_memory(const py::array& a, const py::array& b) { return a.data() == b.data() && a.nbytes() == b.nbytes(); }

// Whether an output may be exactly one of the inputs: elementwise kernels read
// element i before writing element i, so in place is safe; other overlaps never are.
enum class Alias { refuse, allow_in_place };

// An output array: the dtype of `like`, the given shape, contiguous, writeable,
// and not overlapping any input whose values the kernel still needs.
void check_output(const py::array& out, const char* name, const py::array& like, const Shape& shape,
                  std::initializer_list<const py::array*> inputs = {}, Alias alias = Alias::refuse) {
  check_input(out, name, &like, "the inputs");
  check_shape(out, shape, name);
  if (!out.writeable()) throw py::value_error(std::string(name) + " must be writeable");
  for (const py::array* in : inputs) {
    if (!in || !overlaps(out, *in)) continue;
    if (alias == Alias::allow_in_place && same_memory(out, *in)) continue;
    throw py::value_error(std::string(name) + (alias == Alias::allow_in_place
                                                   ? " must be an input itself or not share memory with any input"
                                                   : " must not share memory with an input of this kernel"));
  }
}

Shape shape_of(const py::array& a) { return Shape(a.shape(), a.shape() + a.ndim()); }

template <class T>
T* ptr(const py::array& a) {
  return static_cast<T*>(const_cast<void*>(a.data()));
}
template <class T>
T* ptr(const OptArray& a) {
  return a ? ptr<T>(*a) : nullptr;
}

// Use `out` when given (checked), else allocate an array of `like`'s dtype.
py::array output(const OptArray& out, const char* name, const py::array& like, const Shape& shape,
                 std::initializer_list<const py::array*> inputs = {}, Alias alias = Alias::refuse) {
  if (out) {
    check_output(*out, name, like, shape, inputs, alias);
    return *out;
  }
  return py::array(like.dtype(), shape);
}

// Call f(T{}) with T the float type of `a` (already checked to be f32 or f64).
template <class F>
auto by_dtype(const py::array& a, F f) {
  if (is_f32(a)) return f(float{});
  return f(double{});
}

// 'none' or a fusable activation of activation.h.
Act parse_activation(const std::string& name, const char* what = "activation") {
  if (name == "none") return Act::none;
  std::string choices = "'none'";
  for (const fastnn::ActivationInfo& a : fastnn::kActivations) {
    if (!a.fusable) continue;
    if (name == a.name) return a.act;
    choices += std::string(", '") + a.name + "'";
  }
  throw py::value_error(std::string(what) + " must be one of " + choices + ", got '" + name + "'");
}

// Labels: int64, 1-D, length rows, every value in [0, classes).
void check_labels(const py::array& labels, index_t rows, index_t classes, const char* name) {
  if (!labels.dtype().equal(py::dtype::of<std::int64_t>()))
    throw py::type_error(std::string(name) + " labels must be int64, got dtype " + dtype_name(labels));
  check_contiguous(labels, name);
  check_shape(labels, {rows}, name);
  const std::int64_t* v = ptr<std::int64_t>(labels);
  for (index_t i = 0; i < rows; ++i)
    if (v[i] < 0 || v[i] >= classes)
      throw py::index_error(std::string(name) + " label " + std::to_string(v[i]) + " at position " + std::to_string(i) +
                            " is out of range [0, " + std::to_string(classes) + ")");
}

// A target is either int64 labels (rows,) or a float array shaped like `pred`.
bool check_target(const py::array& target, const py::array& pred, const char* name) {
  const index_t rows = pred.shape(0), cols = pred.shape(1);
  if (target.ndim() == 1) {
    check_labels(target, rows, cols, name);
    return true;
  }
  check_input(target, name, &pred, "the prediction");
  check_shape(target, {rows, cols}, name);
  return false;
}

// ------------------------------------------------------------------ softmax

py::array softmax_impl(const py::array& x, const OptArray& out, bool log) {
  check_input(x, "x");
  check_ndim(x, 2, "x");
  py::array y = output(out, "out", x, shape_of(x), {&x}, Alias::allow_in_place);
  by_dtype(x, [&](auto t) {
    using T = decltype(t);
    fastnn::SoftmaxArgs<T> a;
    a.x = ptr<T>(x); a.y = ptr<T>(y); a.rows = x.shape(0); a.cols = x.shape(1); a.log = log;
    if (a.cols == 0) return;
    py::gil_scoped_release release;
    fastnn::softmax(a);
  });
  return y;
}

// Checks a cross-entropy call's arguments; returns whether target holds labels.
bool check_cross_entropy(const py::array& logits, const py::array& target, double label_smoothing) {
  check_input(logits, "logits");
  check_ndim(logits, 2, "logits");
  const index_t rows = logits.shape(0), cols = logits.shape(1);
  if (cols == 0 && rows > 0) throw py::value_error("logits must have at least one class, got shape " + shape_str(logits));
  const bool labels = check_target(target, logits, "target");
  if (!(label_smoothing >= 0.0 && label_smoothing <= 1.0))
    throw py::value_error("label_smoothing must be in [0, 1], got " + std::to_string(label_smoothing));
  return labels;
}

// Runs the kernel on checked arguments; returns the sum of the row losses.
double run_cross_entropy(const py::array& logits, const py::array& target, bool labels, double label_smoothing,
                         const OptArray& row_loss, const OptArray& dlogits, double grad_scale) {
  return by_dtype(logits, [&](auto t) {
    using T = decltype(t);
    fastnn::CrossEntropyArgs<T> a;
    a.logits = ptr<T>(logits); a.rows = logits.shape(0); a.cols = logits.shape(1);
    if (labels) a.labels = ptr<std::int64_t>(target); else a.target = ptr<T>(target);
    a.label_smoothing = label_smoothing;
    a.row_loss = ptr<T>(row_loss); a.dlogits = ptr<T>(dlogits);
    a.grad_scale = grad_scale;
    py::gil_scoped_release release;
    return fastnn::cross_entropy(a);
  });
}

double cross_entropy_impl(const py::array& logits, const py::array& target, double label_smoothing,
                          const OptArray& row_loss, const OptArray& dlogits, double grad_scale) {
  const bool labels = check_cross_entropy(logits, target, label_smoothing);
  const index_t rows = logits.shape(0), cols = logits.shape(1);
  if (row_loss) check_output(*row_loss, "row_loss", logits, {rows}, {&logits, &target});
  if (dlogits) check_output(*dlogits, "dlogits", logits, {rows, cols}, {&logits, &target});
  if (row_loss && dlogits && overlaps(*row_loss, *dlogits))
    throw py::value_error("row_loss and dlogits must not share memory");
  return run_cross_entropy(logits, target, labels, label_smoothing, row_loss, dlogits, grad_scale);
}

// (loss, dlogits) with torch's reductions: 'mean' and 'sum' give a float,
// 'none' the row losses (N,); dlogits is the gradient of that loss ('none': of
// the summed row losses). One call for a training step's loss, because on a
// small batch each call into _core costs about as much as the kernel.
py::tuple softmax_cross_entropy_impl(const py::array& logits, const py::array& target, const std::string& reduction,
                                     double label_smoothing, const OptArray& out) {
  if (reduction != "mean" && reduction != "sum" && reduction != "none")
    throw py::value_error("reduction must be one of 'mean', 'sum', 'none', got '" + reduction + "'");
  const bool labels = check_cross_entropy(logits, target, label_smoothing);
  const index_t rows = logits.shape(0), cols = logits.shape(1);
  if (rows == 0) throw py::value_error("logits has no rows: a loss over no elements is undefined");
  const py::array dlogits = output(out, "out", logits, {rows, cols}, {&logits, &target});
  const double scale = reduction == "mean" ? 1.0 / double(rows) : 1.0;
  if (reduction == "none") {
    const py::array row_loss(logits.dtype(), Shape{rows});
    run_cross_entropy(logits, target, labels, label_smoothing, row_loss, dlogits, scale);
    return py::make_tuple(row_loss, dlogits);
  }
  const double total = run_cross_entropy(logits, target, labels, label_smoothing, std::nullopt, dlogits, scale);
  return py::make_tuple(total * scale, dlogits);
}

// -------------------------------------------------------------- activations

// y = f(x) elementwise, any shape.
py::array unary(const py::array& x, const OptArray& out, Act act, double param) {
  check_input(x, "x");
  py::array y = output(out, "out", x, shape_of(x), {&x}, Alias::allow_in_place);
  by_dtype(x, [&](auto t) {
    using T = decltype(t);
    py::gil_scoped_release release;
    fastnn::elementwise(
        fastnn::ElementwiseArgs<T>{act, false, ptr<T>(x), nullptr, ptr<T>(y), index_t(x.size()), T(param)});
  });
  return y;
}

// dx = f'(.) * dy elementwise; `saved` is the forward's output or input.
py::array binary(const py::array& saved, const char* saved_name, const py::array& dy, const OptArray& out, Act act,
                 double param) {
  check_input(saved, saved_name);
  check_input(dy, "dy", &saved, saved_name);
  check_same_shape(saved, dy, saved_name, "dy");
  py::array dx = output(out, "out", dy, shape_of(dy), {&saved, &dy}, Alias::allow_in_place);
  by_dtype(dy, [&](auto t) {
    using T = decltype(t);
    py::gil_scoped_release release;
    fastnn::elementwise(
        fastnn::ElementwiseArgs<T>{act, true, ptr<T>(saved), ptr<T>(dy), ptr<T>(dx), index_t(dy.size()), T(param)});
  });
  return dx;
}

// name(x, [parameter,] out=None) and name_backward(saved, dy, [parameter,]
// out=None) for an activation of activation.h, saved being its output y or its
// input x, as its gradient is written.
void bind_activation(py::module_& m, const fastnn::ActivationInfo& info) {
  const Act act = info.act;
  const char* saved = info.fusable ? "y" : "x";
  const std::string backward = std::string(info.name) + "_backward";
  auto x_arg = py::arg("x").noconvert();
  auto saved_arg = py::arg(saved).noconvert();
  auto dy_arg = py::arg("dy").noconvert();
  auto out_arg = py::arg("out").noconvert() = py::none();
  if (info.parameter == nullptr) {
    m.def(info.name, [act](const py::array& x, const OptArray& out) { return unary(x, out, act, 0.0); }, x_arg,
          out_arg);
    m.def(backward.c_str(), [act, saved](const py::array& s, const py::array& dy, const OptArray& out) {
      return binary(s, saved, dy, out, act, 0.0);
    }, saved_arg, dy_arg, out_arg);
    return;
  }
  auto param_arg = py::arg(info.parameter) = info.default_parameter;
  m.def(info.name, [act](const py::array& x, double param, const OptArray& out) {
    return unary(x, out, act, param);
  }, x_arg, param_arg, out_arg);
  m.def(backward.c_str(), [act, saved](const py::array& s, const py::array& dy, double param, const OptArray& out) {
    return binary(s, saved, dy, out, act, param);
  }, saved_arg, dy_arg, param_arg, out_arg);
}

// ------------------------------------------------------------------- losses

// Elementwise losses on (pred, target) of one shape: returns the sum, writes
// per-element losses into `per_element` when given.
template <class Kernel>
double elementwise_loss(const py::array& pred, const char* pred_name, const py::array& target,
                        const OptArray& per_element, Kernel kernel) {
  check_input(pred, pred_name);
  check_input(target, "t", &pred, pred_name);
  check_same_shape(pred, target, pred_name, "t");
  if (per_element)
    check_output(*per_element, "per_element", pred, shape_of(pred), {&pred, &target}, Alias::allow_in_place);
  return by_dtype(pred, [&](auto t) {
    using T = decltype(t);
    py::gil_scoped_release release;
    return kernel(ptr<T>(pred), ptr<T>(target), ptr<T>(per_element), index_t(pred.size()));
  });
}

template <class Kernel>
py::array elementwise_loss_backward(const py::array& pred, const char* pred_name, const py::array& target,
                                    double scale, const OptArray& out, Kernel kernel) {
  check_input(pred, pred_name);
  check_input(target, "t", &pred, pred_name);
  check_same_shape(pred, target, pred_name, "t");
  py::array grad = output(out, "out", pred, shape_of(pred), {&pred, &target}, Alias::allow_in_place);
  by_dtype(pred, [&](auto t) {
    using T = decltype(t);
    py::gil_scoped_release release;
    kernel(ptr<T>(pred), ptr<T>(target), ptr<T>(grad), index_t(pred.size()), scale);
  });
  return grad;
}

void check_probabilities(const py::array& y) {
  check_input(y, "y");
  check_ndim(y, 2, "y");
}

// ------------------------------------------------------------------- linear

py::array matmul(const py::array& a, const py::array& b, bool trans_a, bool trans_b, const OptArray& out) {
  check_input(a, "a");
  check_input(b, "b", &a, "a");
  check_ndim(a, 2, "a");
  check_ndim(b, 2, "b");
  const index_t M = trans_a ? a.shape(1) : a.shape(0), K = trans_a ? a.shape(0) : a.shape(1);
  const index_t Kb = trans_b ? b.shape(1) : b.shape(0), N = trans_b ? b.shape(0) : b.shape(1);
  if (K != Kb)
    throw py::value_error("matmul: inner dimensions differ: op(a) is (" + std::to_string(M) + ", " + std::to_string(K) +
                          ") and op(b) is (" + std::to_string(Kb) + ", " + std::to_string(N) + ")");
  py::array c = output(out, "out", a, {M, N}, {&a, &b});
  by_dtype(a, [&](auto t) {
    using T = decltype(t);
    fastnn::GemmArgs<T> g;
    g.trans_a = trans_a; g.trans_b = trans_b;
    g.M = M; g.N = N; g.K = K;
    g.A = ptr<T>(a); g.lda = a.shape(1);
    g.B = ptr<T>(b); g.ldb = b.shape(1);
    g.C = ptr<T>(c); g.ldc = N;
    py::gil_scoped_release release;
    fastnn::gemm(g);
  });
  return c;
}

void check_linear_operands(const py::array& x, const py::array& W) {
  check_input(x, "x");
  check_input(W, "W", &x, "x");
  check_ndim(x, 2, "x");
  check_ndim(W, 2, "W");
  if (x.shape(1) != W.shape(0))
    throw py::value_error("x has " + std::to_string(x.shape(1)) + " features but W has shape " + shape_str(W) +
                          " (W must be (in_features, out_features))");
}

py::array linear(const py::array& x, const py::array& W, const OptArray& b, const std::string& activation,
                 const OptArray& out, bool sparse) {
  check_linear_operands(x, W);
  const index_t rows = x.shape(0), in = x.shape(1), n_out = W.shape(1);
  if (b) {
    check_input(*b, "b", &x, "x");
    check_shape(*b, {n_out}, "b");
  }
  const Act act = parse_activation(activation);
  const py::array* bias = b ? &*b : nullptr;
  py::array y = output(out, "out", x, {rows, n_out}, {&x, &W, bias});
  by_dtype(x, [&](auto t) {
    using T = decltype(t);
    py::gil_scoped_release release;
    fastnn::linear_forward(ptr<T>(x), ptr<T>(W), ptr<T>(b), ptr<T>(y), rows, in, n_out, act, sparse);
  });
  return y;
}

py::tuple linear_backward(const py::array& x, const py::array& W, const py::array& dy, const OptArray& y,
                          const std::string& activation, bool need_dx, const OptArray& dx_out,
                          const OptArray& dW_out, const OptArray& db_out, const std::string& x_activation,
                          const OptArray& dz_out, bool sparse) {
  check_linear_operands(x, W);
  const index_t rows = x.shape(0), in = x.shape(1), n_out = W.shape(1);
  check_input(dy, "dy", &x, "x");
  check_shape(dy, {rows, n_out}, "dy");
  const Act act = parse_activation(activation);
  const Act x_act = parse_activation(x_activation, "x_activation");
  if (act != Act::none) {
    if (!y) throw py::value_error("y (the activation's output) is required when activation is '" + activation + "'");
    check_input(*y, "y", &x, "x");
    check_shape(*y, {rows, n_out}, "y");
  }
  const py::array* y_ptr = y ? &*y : nullptr;
  py::array dW = output(dW_out, "dW_out", x, {in, n_out}, {&x, &W, &dy, y_ptr});
  py::array db = output(db_out, "db_out", x, {n_out}, {&x, &W, &dy, y_ptr, &dW});
  std::optional<py::array> dx;
  if (need_dx) dx = output(dx_out, "dx_out", x, {rows, in}, {&x, &W, &dy, y_ptr, &dW, &db});
  std::optional<py::array> dz;
  if (act != Act::none) {
    // dz may be dy itself (the caller's scratch), but not any other input.
    dz = output(dz_out, "dz_out", x, {rows, n_out}, {&x, &W, y_ptr, &dW, &db});
    if (dx && overlaps(*dz, *dx)) throw py::value_error("dz_out must not share memory with dx_out");
    if (overlaps(*dz, dy) && !same_memory(*dz, dy))
      throw py::value_error("dz_out must be dy itself or not share memory with it");
  }
  by_dtype(x, [&](auto t) {
    using T = decltype(t);
    py::gil_scoped_release release;
    fastnn::linear_backward(ptr<T>(x), ptr<T>(W), ptr<T>(dy), ptr<T>(y), ptr<T>(dz), ptr<T>(dx), ptr<T>(dW),
                            ptr<T>(db), rows, in, n_out, act, x_act, sparse);
  });
  return py::make_tuple(dx ? py::object(*dx) : py::object(py::none()), dW, db);
}

// x's block-sparse form (see kernels.h) as (count, index, values) arrays, or
// None when linear() would multiply x densely; with pairs, the form of bf16
// pairs, its values as their bits (uint32).
py::object block_sparse(const py::array& x, bool by_columns, bool pairs) {
  check_input(x, "x");
  check_ndim(x, 2, "x");
  if (pairs && !py::isinstance<py::array_t<float>>(x))
    throw py::type_error("block_sparse: pairs=True takes float32 x, got " + std::string(py::str(x.dtype())));
  if (pairs && !fastnn::has_bf16())
    throw py::value_error("block_sparse: pairs=True needs AVX512_BF16, and this process runs " +
                          std::string(fastnn::isa_name(fastnn::active_isa())));
  return by_dtype(x, [&](auto t) -> py::object {
    using T = decltype(t);
    fastnn::BlockSparse<T> a;
    bool sparse;
    {
      py::gil_scoped_release release;
      sparse = fastnn::block_sparse_form(ptr<T>(x), x.shape(0), x.shape(1), by_columns, pairs, a);
    }
    if (!sparse) return py::none();
    const index_t blocks = a.blocks(), lines = fastnn::kSparseBlockLines;
    index_t entries = 0;
    for (index_t b = 0; b < blocks; ++b) entries += a.count[b];
    py::array_t<std::int64_t> count(blocks);
    py::array_t<std::int32_t> index(entries);
    py::array_t<T> values({entries, lines});
    index_t e = 0;
    for (index_t b = 0; b < blocks; ++b) {
      count.mutable_data()[b] = a.count[b];
      std::memcpy(index.mutable_data() + e, a.index + b * a.capacity, a.count[b] * sizeof(std::int32_t));
      std::memcpy(values.mutable_data() + e * lines, a.value + b * a.capacity * lines, a.count[b] * lines * sizeof(T));
      e += a.count[b];
    }
    if (pairs) return py::make_tuple(count, index, values.attr("view")(py::dtype::of<std::uint32_t>()));
    return py::make_tuple(count, index, values);
  });
}

// x (rows, ...) holding plain numbers, contiguous, and index: int64 (count,)
// with every value a row of x.
void check_rows_and_index(const py::array& x, const py::array& index) {
  // Rows are handled as raw bytes, which is wrong for Python object references.
  if (x.dtype().attr("hasobject").cast<bool>())
    throw py::type_error("x must hold plain numbers, got dtype " + dtype_name(x));
  check_contiguous(x, "x");
  if (x.ndim() < 1) throw py::value_error("x must have at least 1 dimension, got a 0-D array");
  if (!index.dtype().equal(py::dtype::of<std::int64_t>()))
    throw py::type_error("index must be int64, got dtype " + dtype_name(index));
  check_contiguous(index, "index");
  check_ndim(index, 1, "index");
  const index_t count = index.shape(0), rows = x.shape(0);
  const std::int64_t* idx = ptr<std::int64_t>(index);
  for (index_t i = 0; i < count; ++i)
    if (idx[i] < 0 || idx[i] >= rows)
      throw py::index_error("index " + std::to_string(idx[i]) + " at position " + std::to_string(i) +
                            " is out of range for x with " + std::to_string(rows) + " rows");
}

index_t row_bytes_of(const py::array& x) { return x.shape(0) > 0 ? index_t(x.nbytes()) / x.shape(0) : 0; }

void prefetch_rows(const py::array& x, const py::array& index) {
  check_rows_and_index(x, index);
  const index_t row_bytes = row_bytes_of(x);  // (reads x's dtype object: needs the GIL)
  py::gil_scoped_release release;
  fastnn::prefetch_rows(static_cast<const char*>(x.data()), ptr<std::int64_t>(index), index.shape(0), row_bytes);
}

py::array gather_rows(const py::array& x, const py::array& index, const OptArray& out) {
  check_rows_and_index(x, index);
  const index_t count = index.shape(0);
  const std::int64_t* idx = ptr<std::int64_t>(index);
  Shape shape = shape_of(x);
  shape[0] = count;
  py::array result;
  if (out) {
    if (!out->dtype().equal(x.dtype()))
      throw py::type_error("out must have x's dtype " + dtype_name(x) + ", got " + dtype_name(*out));
    check_contiguous(*out, "out");
    check_shape(*out, shape, "out");
    if (!out->writeable()) throw py::value_error("out must be writeable");
    if (overlaps(*out, x) || overlaps(*out, index)) throw py::value_error("out must not share memory with x or index");
    result = *out;
  } else {
    result = py::array(x.dtype(), shape);
  }
  const index_t row_bytes = row_bytes_of(x);
  py::gil_scoped_release release;
  fastnn::gather_rows(static_cast<const char*>(x.data()), idx, static_cast<char*>(result.mutable_data()), count,
                      row_bytes);
  return result;
}

// --------------------------------------------------------------- optimizers

// param and every state array: same shape and dtype as grad, contiguous,
// writeable, and no two of them sharing memory.
void check_param_and_state(const py::array& param, const py::array& grad,
                           std::initializer_list<std::pair<const OptArray*, const char*>> state) {
  check_input(param, "param");
  if (!param.writeable()) throw py::value_error("param must be writeable");
  check_input(grad, "grad", &param, "param");
  check_same_shape(param, grad, "param", "grad");
  if (overlaps(param, grad)) throw py::value_error("param and grad must not share memory");
  std::vector<const py::array*> seen = {&param, &grad};
  for (auto [arr, name] : state) {
    if (!*arr) continue;
    check_input(**arr, name, &param, "param");
    check_same_shape(param, **arr, "param", name);
    if (!(*arr)->writeable()) throw py::value_error(std::string(name) + " must be writeable");
    for (const py::array* other : seen)
      if (overlaps(**arr, *other)) throw py::value_error(std::string(name) + " must not share memory with another argument");
    seen.push_back(&**arr);
  }
}

void require_state(const OptArray& a, bool needed, const char* name, const char* why) {
  if (needed && !a) throw py::value_error(std::string(name) + " is required " + why);
}

}  // namespace

PYBIND11_MODULE(_core, m) {
  m.doc() = "fastnn's C++ kernels. Arguments are checked here; see _core.pyi for shapes.";

  m.def("version", [] { return std::string(FASTNN_VERSION); });
  m.def("compiler", [] { return std::string(FASTNN_COMPILER); });
  m.def("isa", [] { return std::string(fastnn::isa_name(fastnn::active_isa())); });
  m.def("cpu_isa", [] { return std::string(fastnn::isa_name(fastnn::cpu_isa())); });
  m.def("pool_workers", &fastnn::pool_workers);
  m.def("has_bf16", &fastnn::has_bf16);
  m.def("matmul_precision", [] {
    switch (fastnn::matmul_precision()) {
      case fastnn::MatmulPrecision::medium: return std::string("medium");
      case fastnn::MatmulPrecision::high: return std::string("high");
      default: return std::string("highest");
    }
  });
  m.def("set_matmul_precision", [](const std::string& precision) {
    if (precision == "highest") fastnn::set_matmul_precision(fastnn::MatmulPrecision::highest);
    else if (precision == "high") fastnn::set_matmul_precision(fastnn::MatmulPrecision::high);
    else if (precision == "medium") fastnn::set_matmul_precision(fastnn::MatmulPrecision::medium);
    else throw py::value_error("precision must be 'highest', 'high' or 'medium', got '" + precision + "'");
  }, py::arg("precision"));
  m.def("num_threads", &fastnn::num_threads);
  m.def("set_num_threads", [](int n) {
    if (n < 1 || n > fastnn::kMaxThreads)
      throw py::value_error("n must be in [1, " + std::to_string(fastnn::kMaxThreads) + "], got " + std::to_string(n));
    fastnn::set_num_threads(n);
  }, py::arg("n"));

  auto x_arg = py::arg("x").noconvert();
  auto out_arg = py::arg("out").noconvert() = py::none();

  m.def("softmax", [](const py::array& x, const OptArray& out) { return softmax_impl(x, out, false); }, x_arg, out_arg);
  m.def("log_softmax", [](const py::array& x, const OptArray& out) { return softmax_impl(x, out, true); }, x_arg,
        out_arg);
  m.def("cross_entropy", &cross_entropy_impl, py::arg("logits").noconvert(), py::arg("target").noconvert(),
        py::arg("label_smoothing") = 0.0, py::arg("row_loss").noconvert() = py::none(),
        py::arg("dlogits").noconvert() = py::none(), py::arg("grad_scale") = 1.0);
  m.def("softmax_cross_entropy", &softmax_cross_entropy_impl, py::arg("logits").noconvert(),
        py::arg("target").noconvert(), py::arg("reduction") = "mean", py::arg("label_smoothing") = 0.0, out_arg);

  for (const fastnn::ActivationInfo& a : fastnn::kActivations) bind_activation(m, a);

  auto y_arg = py::arg("y").noconvert();
  auto dy_arg = py::arg("dy").noconvert();
  auto t_arg = py::arg("t").noconvert();
  auto per_element_arg = py::arg("per_element").noconvert() = py::none();
  auto scale_arg = py::arg("scale") = 1.0;
  m.def("squared_error", [](const py::array& y, const py::array& t, const OptArray& per_element) {
    return elementwise_loss(y, "y", t, per_element, [](auto* a, auto* b, auto* c, index_t n) {
      return fastnn::squared_error(a, b, c, n);
    });
  }, y_arg, t_arg, per_element_arg);
  m.def("squared_error_backward", [](const py::array& y, const py::array& t, double scale, const OptArray& out) {
    return elementwise_loss_backward(y, "y", t, scale, out, [](auto* a, auto* b, auto* c, index_t n, double s) {
      fastnn::squared_error_backward(a, b, c, n, s);
    });
  }, y_arg, t_arg, scale_arg, out_arg);
  m.def("binary_cross_entropy", [](const py::array& p, const py::array& t, const OptArray& per_element) {
    return elementwise_loss(p, "p", t, per_element, [](auto* a, auto* b, auto* c, index_t n) {
      return fastnn::binary_cross_entropy(a, b, c, n);
    });
  }, py::arg("p").noconvert(), t_arg, per_element_arg);
  m.def("binary_cross_entropy_backward", [](const py::array& p, const py::array& t, double scale, const OptArray& out) {
    return elementwise_loss_backward(p, "p", t, scale, out, [](auto* a, auto* b, auto* c, index_t n, double s) {
      fastnn::binary_cross_entropy_backward(a, b, c, n, s);
    });
  }, py::arg("p").noconvert(), t_arg, scale_arg, out_arg);
  m.def("binary_cross_entropy_with_logits", [](const py::array& z, const py::array& t, const OptArray& per_element) {
    return elementwise_loss(z, "z", t, per_element, [](auto* a, auto* b, auto* c, index_t n) {
      return fastnn::binary_cross_entropy_with_logits(a, b, c, n);
    });
  }, py::arg("z").noconvert(), t_arg, per_element_arg);
  m.def("binary_cross_entropy_with_logits_backward",
        [](const py::array& z, const py::array& t, double scale, const OptArray& out) {
    return elementwise_loss_backward(z, "z", t, scale, out, [](auto* a, auto* b, auto* c, index_t n, double s) {
      fastnn::binary_cross_entropy_with_logits_backward(a, b, c, n, s);
    });
  }, py::arg("z").noconvert(), t_arg, scale_arg, out_arg);

  m.def("cross_entropy_error", [](const py::array& y, const py::array& target) {
    check_probabilities(y);
    const bool labels = check_target(target, y, "t");
    return by_dtype(y, [&](auto t) {
      using T = decltype(t);
      py::gil_scoped_release release;
      return fastnn::cross_entropy_error(ptr<T>(y), labels ? ptr<std::int64_t>(target) : nullptr,
                                         labels ? nullptr : ptr<T>(target), y.shape(0), y.shape(1));
    });
  }, y_arg, t_arg);
  m.def("cross_entropy_error_backward", [](const py::array& y, const py::array& target, double scale,
                                           const OptArray& out) {
    check_probabilities(y);
    const bool labels = check_target(target, y, "t");
    py::array dy = output(out, "out", y, shape_of(y), {&y, &target});
    by_dtype(y, [&](auto t) {
      using T = decltype(t);
      py::gil_scoped_release release;
      fastnn::cross_entropy_error_backward(ptr<T>(y), labels ? ptr<std::int64_t>(target) : nullptr,
                                           labels ? nullptr : ptr<T>(target), ptr<T>(dy), y.shape(0), y.shape(1),
                                           scale);
    });
    return dy;
  }, y_arg, t_arg, scale_arg, out_arg);

  m.def("matmul", &matmul, py::arg("a").noconvert(), py::arg("b").noconvert(), py::arg("trans_a") = false,
        py::arg("trans_b") = false, out_arg);
  m.def("linear", &linear, x_arg, py::arg("W").noconvert(), py::arg("b").noconvert() = py::none(),
        py::arg("activation") = "none", out_arg, py::arg("sparse") = true);
  m.def("linear_backward", &linear_backward, x_arg, py::arg("W").noconvert(), dy_arg,
        py::arg("y").noconvert() = py::none(), py::arg("activation") = "none", py::arg("need_dx") = true,
        py::arg("dx_out").noconvert() = py::none(), py::arg("dW_out").noconvert() = py::none(),
        py::arg("db_out").noconvert() = py::none(), py::arg("x_activation") = "none",
        py::arg("dz_out").noconvert() = py::none(), py::arg("sparse") = true);
  m.def("gather_rows", &gather_rows, x_arg, py::arg("index").noconvert(), out_arg);
  m.def("prefetch_rows", &prefetch_rows, x_arg, py::arg("index").noconvert());
  m.def("block_sparse", &block_sparse, x_arg, py::arg("by_columns") = false, py::arg("pairs") = false);

  auto param_arg = py::arg("param").noconvert();
  auto grad_arg = py::arg("grad").noconvert();
  m.def("sgd_step", [](const py::array& param, const py::array& grad, const OptArray& momentum_buf, double lr,
                       double momentum, double dampening, bool nesterov, double weight_decay, bool maximize,
                       bool first_step) {
    check_param_and_state(param, grad, {{&momentum_buf, "momentum_buf"}});
    require_state(momentum_buf, momentum != 0.0, "momentum_buf", "when momentum != 0");
    by_dtype(param, [&](auto t) {
      using T = decltype(t);
      py::gil_scoped_release release;
      fastnn::sgd_step(fastnn::SgdArgs<T>{ptr<T>(param), ptr<T>(grad), ptr<T>(momentum_buf), index_t(param.size()),
                                          lr, momentum, dampening, weight_decay, nesterov, maximize, first_step});
    });
  }, param_arg, grad_arg, py::arg("momentum_buf").noconvert(), py::arg("lr"), py::arg("momentum") = 0.0,
     py::arg("dampening") = 0.0, py::arg("nesterov") = false, py::arg("weight_decay") = 0.0,
     py::arg("maximize") = false, py::arg("first_step") = true);
  m.def("adagrad_step", [](const py::array& param, const py::array& grad, const py::array& state_sum, double step,
                           double lr, double lr_decay, double weight_decay, double eps, bool maximize) {
    const OptArray state = state_sum;
    check_param_and_state(param, grad, {{&state, "state_sum"}});
    by_dtype(param, [&](auto t) {
      using T = decltype(t);
      py::gil_scoped_release release;
      fastnn::adagrad_step(fastnn::AdagradArgs<T>{ptr<T>(param), ptr<T>(grad), ptr<T>(state_sum),
                                                  index_t(param.size()), step, lr, lr_decay, weight_decay, eps,
                                                  maximize});
    });
  }, param_arg, grad_arg, py::arg("state_sum").noconvert(), py::arg("step"), py::arg("lr") = 0.01,
     py::arg("lr_decay") = 0.0, py::arg("weight_decay") = 0.0, py::arg("eps") = 1e-10, py::arg("maximize") = false);
  m.def("rmsprop_step", [](const py::array& param, const py::array& grad, const py::array& square_avg,
                           const OptArray& grad_avg, const OptArray& momentum_buf, double lr, double alpha,
                           double eps, double weight_decay, double momentum, bool centered, bool maximize) {
    const OptArray square = square_avg;
    check_param_and_state(param, grad, {{&square, "square_avg"}, {&grad_avg, "grad_avg"}, {&momentum_buf, "momentum_buf"}});
    require_state(grad_avg, centered, "grad_avg", "when centered");
    require_state(momentum_buf, momentum > 0.0, "momentum_buf", "when momentum > 0");
    by_dtype(param, [&](auto t) {
      using T = decltype(t);
      py::gil_scoped_release release;
      fastnn::rmsprop_step(fastnn::RmspropArgs<T>{ptr<T>(param), ptr<T>(grad), ptr<T>(square_avg), ptr<T>(grad_avg),
                                                  ptr<T>(momentum_buf), index_t(param.size()), lr, alpha, eps,
                                                  weight_decay, momentum, centered, maximize});
    });
  }, param_arg, grad_arg, py::arg("square_avg").noconvert(), py::arg("grad_avg").noconvert(),
     py::arg("momentum_buf").noconvert(), py::arg("lr") = 0.01, py::arg("alpha") = 0.99, py::arg("eps") = 1e-8,
     py::arg("weight_decay") = 0.0, py::arg("momentum") = 0.0, py::arg("centered") = false,
     py::arg("maximize") = false);
  m.def("adam_step", [](const py::array& param, const py::array& grad, const py::array& exp_avg,
                        const py::array& exp_avg_sq, double step, double lr, double beta1, double beta2, double eps,
                        double weight_decay, bool decoupled_weight_decay, bool maximize) {
    const OptArray m1 = exp_avg, m2 = exp_avg_sq;
    check_param_and_state(param, grad, {{&m1, "exp_avg"}, {&m2, "exp_avg_sq"}});
    if (!(step >= 1)) throw py::value_error("step must be >= 1, got " + std::to_string(step));
    by_dtype(param, [&](auto t) {
      using T = decltype(t);
      py::gil_scoped_release release;
      fastnn::adam_step(fastnn::AdamArgs<T>{ptr<T>(param), ptr<T>(grad), ptr<T>(exp_avg), ptr<T>(exp_avg_sq),
                                            index_t(param.size()), step, lr, beta1, beta2, eps, weight_decay,
                                            decoupled_weight_decay, maximize});
    });
  }, param_arg, grad_arg, py::arg("exp_avg").noconvert(), py::arg("exp_avg_sq").noconvert(), py::arg("step"),
     py::arg("lr") = 1e-3, py::arg("beta1") = 0.9, py::arg("beta2") = 0.999, py::arg("eps") = 1e-8,
     py::arg("weight_decay") = 0.0, py::arg("decoupled_weight_decay") = false, py::arg("maximize") = false);
}
