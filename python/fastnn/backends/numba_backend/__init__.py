"""The Numba backend: the reference backend's interface, compiled with Numba.

Same public names, signatures, defaults and return conventions as
`fastnn.backends.numpy_backend` (read its docstring for the shapes and for what
the validated inputs look like: C-contiguous float32/float64 arrays of agreeing
shapes and dtypes, int64 labels in [0, C)). Outputs keep the input dtype.

The modules, by concern:

  activations  softmax, the activations and the one activation code table
  losses       SSE, MSE, cross-entropy (textbook, from logits, fused), BCE
  linear_ops   matmul, linear with its fused epilogue, linear_backward, gather_rows
  optimizers   SGD, Adagrad, RMSprop, Adam / AdamW steps
  vmath        vectorisable exp, expm1, log, tanh, sigmoid
  _parallel    the one parallel-driver template, work thresholds, fork safety
  _common      the on-disk cache location, the jit decorator, array helpers

How it is built:

* Every kernel is `@njit(cache=True)` and compiled lazily, once per dtype.
  Kernels that pay for threads are wrapped by `_parallel.threaded`, which adds
  a tiny `parallel=True` driver, made from one template, that splits the rows
  (or elements) into chunks and calls the same serial kernel on slices of
  them in a prange (parfor compilation is slow, so the parallel part is kept
  minimal). It picks the driver above a work threshold. Both paths run the
  same arithmetic in the same order: results are bit-identical.
* exp / expm1 / log / tanh are written out as polynomials (`vmath`) so that
  LLVM vectorises the loops that use them; Numba's own np.exp is a scalar libm
  call.
* Only `contract` and `reassoc` fast-math flags are used, and only where sums
  must vectorise; never nnan/ninf, so NaN and Inf propagate as in NumPy.
  Sums (softmax denominators, loss totals, bias gradients) accumulate in float64,
  except the at most 16 terms of a short row's cross-entropy (_ce_narrow_block).
* Where the reference is plain dtype arithmetic (activation backward passes,
  optimizer steps, MSE, ...) the kernels repeat NumPy's operations in the same
  dtype and order without contraction, so they agree with it to the bit.

Numba's on-disk cache lives next to these files (`__pycache__`) when that is
writable. When it is not (a read-only site-packages) and NUMBA_CACHE_DIR is not
set, `_common` sets NUMBA_CACHE_DIR to `$FASTNN_DATA/numba-cache`, else
`$XDG_CACHE_HOME/fastnn/numba-cache` (default `~/.cache/...`), else a per-user
directory under the temp dir, before Numba is imported. If none is writable,
kernels are compiled without an on-disk cache instead of failing. Numba checks
a cached kernel only against its own file: after editing `vmath` or another
module whose jitted functions a kernel calls, clear `__pycache__`.
"""
from .activations import *  # noqa: F401,F403
from .linear_ops import *  # noqa: F401,F403
from .losses import *  # noqa: F401,F403
from .optimizers import *  # noqa: F401,F403

NAME = "numba"
