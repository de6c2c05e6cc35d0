"""fastnn._core: the C++ kernels (pybind11).

Every function checks its arguments itself: arrays must be float32 or float64
(native byte order), C-contiguous and aligned, of agreeing shapes and one dtype;
labels and indices are int64 and in range; outputs are writeable and do not
overlap the inputs (elementwise kernels may write in place). Violations raise
TypeError, ValueError or IndexError naming the argument. Every kernel releases
the GIL. Shapes: N rows (batch), C classes, W is (in, out).
"""
from typing import Optional, Tuple, Union

import numpy as np

Array = np.ndarray

def version() -> str: ...
def compiler() -> str: ...
def isa() -> str:
    """The instruction set in use: 'avx512_bf16', 'avx512', 'avx2' or 'generic' (FASTNN_ISA caps it)."""
def cpu_isa() -> str:
    """The best instruction set this CPU supports."""
def has_bf16() -> bool:
    """Whether float32 matmuls round to bf16 in 'medium' precision: the CPU has
    AVX512_BF16 and FASTNN_ISA does not cap it off."""
def matmul_precision() -> str:
    """The process-wide float32 matmul precision: 'highest' (default), 'high' or 'medium'."""
def set_matmul_precision(precision: str) -> None:
    """'highest' and 'high': float32 math. 'medium': matmul, linear and
    linear_backward round float32 inputs to bf16 and accumulate in float32
    (where has_bf16()); float64 is never rounded. ValueError for other values."""
def num_threads() -> int:
    """Threads parallel kernels may use together, the calling thread included."""
def pool_workers() -> int:
    """Worker threads alive in fastnn's pool (0 before the first parallel call, and in a fresh fork child)."""
def set_num_threads(n: int) -> None:
    """Threads for every parallel kernel, 1 <= n <= 1024."""

def softmax(x: Array, out: Optional[Array] = None) -> Array:
    """x (N, C) -> softmax over each row."""
def log_softmax(x: Array, out: Optional[Array] = None) -> Array:
    """x (N, C) -> log-softmax over each row."""
def cross_entropy(logits: Array, target: Array, label_smoothing: float = 0.0, row_loss: Optional[Array] = None,
                  dlogits: Optional[Array] = None, grad_scale: float = 1.0) -> float:
    """Sum over rows of the cross-entropy of logits (N, C) against int64 labels (N,)
    or probabilities (N, C). Writes each row's loss to row_loss (N,) and
    grad_scale * d(row loss)/d(logits) to dlogits (N, C) when given."""

def softmax_cross_entropy(logits: Array, target: Array, reduction: str = "mean", label_smoothing: float = 0.0,
                          out: Optional[Array] = None) -> Tuple[Union[float, Array], Array]:
    """(loss, dlogits): cross_entropy reduced 'mean' | 'sum' (a float) or
    'none' (the row losses (N,)), and its gradient (N, C), written to out when
    given ('none': the gradient of the summed row losses)."""

def relu(x: Array, out: Optional[Array] = None) -> Array: ...
def sigmoid(x: Array, out: Optional[Array] = None) -> Array: ...
def tanh(x: Array, out: Optional[Array] = None) -> Array: ...
def leaky_relu(x: Array, negative_slope: float = 0.01, out: Optional[Array] = None) -> Array: ...
def elu(x: Array, alpha: float = 1.0, out: Optional[Array] = None) -> Array: ...
def relu_backward(y: Array, dy: Array, out: Optional[Array] = None) -> Array:
    """dx from the forward's output y."""
def sigmoid_backward(y: Array, dy: Array, out: Optional[Array] = None) -> Array: ...
def tanh_backward(y: Array, dy: Array, out: Optional[Array] = None) -> Array: ...
def leaky_relu_backward(x: Array, dy: Array, negative_slope: float = 0.01, out: Optional[Array] = None) -> Array:
    """dx from the forward's input x."""
def elu_backward(x: Array, dy: Array, alpha: float = 1.0, out: Optional[Array] = None) -> Array: ...

def squared_error(y: Array, t: Array, per_element: Optional[Array] = None) -> float:
    """sum((y - t)**2); per-element terms into per_element when given."""
def squared_error_backward(y: Array, t: Array, scale: float = 1.0, out: Optional[Array] = None) -> Array:
    """scale * (y - t)."""
def cross_entropy_error(y: Array, t: Array) -> float:
    """-sum(t * log(y + 1e-7)) for probabilities y (N, C); t int64 labels (N,) or (N, C)."""
def cross_entropy_error_backward(y: Array, t: Array, scale: float = 1.0, out: Optional[Array] = None) -> Array: ...
def binary_cross_entropy(p: Array, t: Array, per_element: Optional[Array] = None) -> float:
    """Sum of torch's BCE terms (each log clamped at -100)."""
def binary_cross_entropy_backward(p: Array, t: Array, scale: float = 1.0, out: Optional[Array] = None) -> Array: ...
def binary_cross_entropy_with_logits(z: Array, t: Array, per_element: Optional[Array] = None) -> float: ...
def binary_cross_entropy_with_logits_backward(z: Array, t: Array, scale: float = 1.0,
                                              out: Optional[Array] = None) -> Array: ...

def matmul(a: Array, b: Array, trans_a: bool = False, trans_b: bool = False, out: Optional[Array] = None) -> Array:
    """op(a) (M, K) @ op(b) (K, N); transposed operands are read in place, never copied."""
def linear(x: Array, W: Array, b: Optional[Array] = None, activation: str = "none",
           out: Optional[Array] = None, sparse: bool = True) -> Array:
    """act(x (N, in) @ W (in, out) + b (out,)), bias and activation applied by the GEMM's store.
    With sparse, a mostly-zero x is multiplied by its nonzeros only (see block_sparse)."""
def linear_backward(x: Array, W: Array, dy: Array, y: Optional[Array] = None, activation: str = "none",
                    need_dx: bool = True, dx_out: Optional[Array] = None, dW_out: Optional[Array] = None,
                    db_out: Optional[Array] = None, x_activation: str = "none",
                    dz_out: Optional[Array] = None, sparse: bool = True) -> Tuple[Optional[Array], Array, Array]:
    """(dx (N, in) or None, dW (in, out), db (out,)) given dy (N, out) and, for a
    fused activation, its output y. dz_out is scratch for dy * act'(y) (may be dy).
    With x_activation, x is that activation's output and dx is dx * act'(x),
    applied by the dx GEMM's store. With sparse, dW = x^T @ dz skips a
    mostly-zero x's zeros, as linear does."""
def gather_rows(x: Array, index: Array, out: Optional[Array] = None) -> Array:
    """x[index] for int64 index (B,), rows copied in parallel; any plain dtype."""

def prefetch_rows(x: Array, index: Array) -> None:
    """Starts loading the rows x[index] into the cache and returns at once (a
    hint for the next gather_rows; nothing is written)."""
def block_sparse(x: Array, by_columns: bool = False, pairs: bool = False) -> Optional[Tuple[Array, Array, Array]]:
    """The form in which linear() / linear_backward() multiply a mostly-zero x (N, K),
    or None when x is too dense and they use the GEMM. Lines are x's rows (the
    forward) or, with by_columns, its columns (the weight gradient), grouped by 4:
    count (blocks,) int64 = positions listed per block; index (entries,) int32 =
    the positions where any line of the block is nonzero (NaN counts); values
    (entries, 4) = the block's lines at those positions.
    With pairs (float32 x, AVX512_BF16 only; the form "medium" precision uses), a
    position p stands for the depths 2p and 2p + 1 of a line, listed unless both
    are zeros once rounded to bf16, and values (entries, 4) uint32 holds each
    line's two values there as bf16 bits, 2p in the low half."""

def sgd_step(param: Array, grad: Array, momentum_buf: Optional[Array], lr: float, momentum: float = 0.0,
             dampening: float = 0.0, nesterov: bool = False, weight_decay: float = 0.0, maximize: bool = False,
             first_step: bool = True) -> None:
    """torch.optim.SGD's update, in place."""
def adagrad_step(param: Array, grad: Array, state_sum: Array, step: float, lr: float = 0.01, lr_decay: float = 0.0,
                 weight_decay: float = 0.0, eps: float = 1e-10, maximize: bool = False) -> None: ...
def rmsprop_step(param: Array, grad: Array, square_avg: Array, grad_avg: Optional[Array],
                 momentum_buf: Optional[Array], lr: float = 0.01, alpha: float = 0.99, eps: float = 1e-8,
                 weight_decay: float = 0.0, momentum: float = 0.0, centered: bool = False,
                 maximize: bool = False) -> None: ...
def adam_step(param: Array, grad: Array, exp_avg: Array, exp_avg_sq: Array, step: float, lr: float = 1e-3,
              beta1: float = 0.9, beta2: float = 0.999, eps: float = 1e-8, weight_decay: float = 0.0,
              decoupled_weight_decay: bool = False, maximize: bool = False) -> None:
    """Adam (AdamW with decoupled_weight_decay), torch's update rule, in place."""
