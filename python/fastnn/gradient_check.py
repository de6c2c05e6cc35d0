"""The textbook's gradient check: backprop against central differences.

    grad = fastnn.numerical_gradient(lambda w: f(w), w)      # d f / d w, elementwise
    fastnn.gradcheck(model, nn.CrossEntropyLoss(), x, y)     # {'0.weight': 3e-11, ...}

Both work in float64 only: a central difference divides a rounding error of
the loss by 2 * eps, so float32's ~1e-7 relative precision would swamp it.
"""
import numbers

import numpy as np


__all__ = ["numerical_gradient", "gradcheck"]


def numerical_gradient(f, x, eps=1e-4):
    """d f(x) / d x by central differences, (f(x + eps) - f(x - eps)) / (2 eps)
    for every element of x in turn; eps=1e-4 is the textbook's h.

    f maps the array x to a scalar. x must be a writeable float64 ndarray: each
    element is perturbed in place (so f may also read x through another
    reference, such as a model's parameter) and restored exactly afterwards,
    even when f raises. Returns a float64 array shaped like x.
    """
    if not callable(f):
        raise TypeError(f"f must be callable, got {type(f).__name__}")
    if not isinstance(x, np.ndarray):
        raise TypeError(f"x must be a numpy array (it is perturbed in place), got {type(x).__name__}")
    if x.dtype != np.float64:
        raise TypeError(f"x must be float64 for central differences, got {x.dtype}")
    if not x.flags.writeable:
        raise ValueError("x must be writeable (each element is perturbed in place)")
    if isinstance(eps, bool) or not isinstance(eps, numbers.Real):
        raise TypeError(f"eps must be a real number, got {type(eps).__name__}")
    if not 0 < eps < np.inf:
        raise ValueError(f"eps must be positive and finite, got {eps!r}")
    grad = np.zeros(x.shape, np.float64)
    for index in np.ndindex(x.shape):
        original = x[index]
        try:
            x[index] = original + eps
            f_plus = _scalar(f(x))
            x[index] = original - eps
            f_minus = _scalar(f(x))
        finally:
            x[index] = original
        grad[index] = (f_plus - f_minus) / (2 * eps)
    return grad


def _scalar(value):
    if np.ndim(value) != 0:
        raise ValueError(f"f must return a scalar, got an array of shape {np.shape(value)}")
    return float(value)


def gradcheck(model, loss, x, y, eps=1e-6):
    """Mean |numerical - backprop| gradient of loss(model(x), y), per parameter.

    model: a fastnn.nn module with float64 parameters (build it with
    dtype=np.float64) and no randomness in forward (call model.eval() if it has
    Dropout). loss: a fastnn.nn loss (CrossEntropyLoss, MSELoss, ...). Returns
    {parameter name: mean absolute difference}, in model.named_parameters()
    order; values near 1e-10 mean backward() is right. The parameters end as
    they started and their .grad holds the backprop gradient.
    """
    named = model.named_parameters()
    if not named:
        raise ValueError("model has no parameters to check")
    for name, p in named:
        if p.data.dtype != np.float64:
            raise TypeError(f"gradcheck needs float64 parameters, but {name} is {p.data.dtype}: "
                            f"build the model with dtype=np.float64")
    x = np.ascontiguousarray(x, dtype=np.float64)
    if np.asarray(y).dtype.kind == "f":
        y = np.ascontiguousarray(y, dtype=np.float64)

    loss.forward(model.forward(x), y)
    model.backward(loss.backward())
    backprop = {name: np.array(p.grad, dtype=np.float64) for name, p in named}

    def loss_at(_):
        return loss.forward(model.forward(x), y)

    return {name: float(np.mean(np.abs(numerical_gradient(loss_at, p.data, eps) - backprop[name])))
            for name, p in named}
