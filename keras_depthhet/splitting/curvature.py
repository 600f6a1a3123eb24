"""Per-token terms of the splitting matrix in `keras.ops`; `derivative` is
the backend's elementwise autodiff, for activations without closed form."""

import math
from collections.abc import Callable

import keras
from keras import ops

_INV_SQRT_2PI = 1.0 / math.sqrt(2.0 * math.pi)


def gelu_first_derivative(z):
    """d/dz of the exact GELU `z * Phi(z)`: `Phi(z) + z * phi(z)`."""
    pdf = _INV_SQRT_2PI * ops.exp(-0.5 * z * z)
    cdf = 0.5 * (1.0 + ops.erf(z / math.sqrt(2.0)))
    return cdf + z * pdf


def gelu_second_derivative(z):
    """d2/dz2 of the exact GELU: `phi(z) * (2 - z**2)`."""
    return _INV_SQRT_2PI * ops.exp(-0.5 * z * z) * (2.0 - z * z)


def _is_linear(layer) -> bool:
    return layer.activation in (None, keras.activations.linear)


def splitting_sigma_second(layer, z, derivative: Callable):
    """`sigma''(z')` of the activation (of the exact GELU for linear layers)."""
    if _is_linear(layer) or layer.activation is keras.activations.gelu:
        return gelu_second_derivative(z)
    return derivative(layer.activation, z, 2)


def activation_first(layer, z, derivative: Callable):
    """`act'(z')`, so that `dL/dz' = g * act'(z')` (1 for linear layers)."""
    if _is_linear(layer):
        return ops.ones_like(z)
    if layer.activation is keras.activations.gelu:
        return gelu_first_derivative(z)
    return derivative(layer.activation, z, 1)


def _flatten_tokens(tensor):
    """(..., k) -> (tokens, k) in float32."""
    return ops.cast(ops.reshape(tensor, (-1, tensor.shape[-1])), "float32")


def splitting_terms(layer, x, z, g, derivative: Callable):
    """`(x~, c)`, `(M, d+1)` tokens with a ones column (none without bias)
    and `(M, n)`, so that `S_i = sum_t c[t, i] x~[t] x~[t]^T`."""
    x2 = _flatten_tokens(x)
    if layer.use_bias:
        x2 = ops.concatenate([x2, ops.ones_like(x2[:, :1])], axis=1)
    z32 = ops.cast(z, "float32")
    c = ops.cast(g, "float32") * splitting_sigma_second(layer, z32, derivative)
    return x2, _flatten_tokens(c)


def proxy_terms(
    layer, x, z, g, derivative: Callable, include_bias: bool = False
):
    """`(r,)`, `r[i] = sum_t (sum_a x[t, a]) dL/dz'[t, i]` the sum of neuron
    `i`'s weight-gradient row, plus `dL/db_i` with `include_bias`."""
    x2 = _flatten_tokens(x)
    z32 = ops.cast(z, "float32")
    delta = ops.cast(g, "float32") * activation_first(layer, z32, derivative)
    bias_term = 1.0 if include_bias and layer.use_bias else 0.0
    row_sums = ops.sum(x2, axis=1) + bias_term
    return (ops.matmul(row_sums[None, :], _flatten_tokens(delta))[0],)
