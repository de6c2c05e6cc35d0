"""Input sparsity, behind one switch: `nn.Linear(..., sparse_input=...)`.

Inputs that are mostly zeros, like MNIST's pixels, can be multiplied
block-sparsely: the cpp backend's linear / linear_backward list the nonzero
positions of each block of 4 rows (or columns) of x and multiply only those,
deciding per call from x itself whether that beats its GEMM (src/cpp). The
numpy and numba backends have no sparse product and multiply densely. On the
Python side two things feed that product, both decided here:

* which product a Linear asks for: the backend's `linear` (sparse where the
  backend can and x is sparse enough) or its `dense_linear` (never sparse);
* the order of the rows inside each training batch: rows of one class share
  more nonzero positions, so the Trainer can sort each batch by label (the
  same batches, in the same sequence), which leaves the sparse product fewer
  positions to multiply.

`sparse_input` of a Linear is one of:

* "auto" (the default): the backend's `linear`; when this Linear takes the
  model's input, the Trainer sorts each batch by label on a backend that has
  the sparse product (cpp).
* True: as "auto", and the Trainer sorts the batches on every backend.
* False: always the dense product, and batches in their shuffled order.

All three give the same results up to the order of summation.
"""
import numpy as np

MODES = ("auto", True, False)


def check_mode(mode):
    """`mode` if it is one of MODES (True and False themselves, not 1 or 0)."""
    if not (mode is True or mode is False or (isinstance(mode, str) and mode == "auto")):
        raise ValueError(f"sparse_input must be 'auto', True or False, got {mode!r}")
    return mode


def linear_kernels(backend, mode):
    """(forward, backward) kernels of `backend` for a Linear with sparse_input `mode`."""
    if mode is False:
        return backend.dense_linear, backend.dense_linear_backward
    return backend.linear, backend.linear_backward


def input_layer_mode(model):
    """sparse_input of the Linear that takes the model's input, or False if there is none."""
    layer = model
    while getattr(layer, "layers", None):
        layer = layer.layers[0]
    return getattr(layer, "sparse_input", False)


def sorts_batches(model, backend):
    """Whether the Trainer sorts each batch of `model`'s training data by label."""
    mode = input_layer_mode(model)
    return mode is True or (mode == "auto" and backend.BLOCK_SPARSE)


def label_sorted_batches(order, labels, batch_size):
    """(order, labels) with each batch's entries ([k * batch_size:(k + 1) * batch_size])
    sorted by label: the same batches, in the same sequence. Targets that are
    not integer labels are left as they are."""
    if labels.ndim != 1 or labels.dtype.kind not in "iu" or labels.shape[0] == 0:
        return order, labels
    low, classes = labels.min(), int(labels.max() - labels.min()) + 1
    keys = np.arange(labels.shape[0]) // batch_size * classes + (labels - low)
    # argsort radix-sorts 16-bit keys, which is faster than its comparison sort.
    if (labels.shape[0] - 1) // batch_size * classes + classes <= 1 << 16:
        keys = keys.astype(np.uint16)
    by_label = np.argsort(keys, kind="stable")
    return order[by_label], labels[by_label]
