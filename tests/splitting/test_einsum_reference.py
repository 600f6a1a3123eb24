"""Splitting eigenvalues of `GrowableEinsumDense` units against the float64
NumPy reference (a MultiHeadAttention-shaped query projection)."""

import keras
import numpy as np
import pytest

from keras_depthhet.layers import GrowableEinsumDense
from keras_depthhet.splitting import splitting_eigenvalues
from tests.splitting import helpers

T, D, HEADS, HEAD_DIM, K = 4, 6, 2, 3, 3


def _model():
    """x (B, T, d) -> query projection (B, T, heads, head_dim) -> tanh ->
    flattened per token, mean over T -> Dense head."""
    inputs = keras.Input((T, D))
    z = GrowableEinsumDense(
        "abc,cde->abde", (T, HEADS, HEAD_DIM), bias_axes="de", name="query"
    )(inputs)
    a = keras.layers.Activation("tanh")(z)
    a = keras.layers.Reshape((T, HEADS * HEAD_DIM))(a)
    pooled = keras.layers.GlobalAveragePooling1D()(a)
    outputs = keras.layers.Dense(K, name="head")(pooled)
    return keras.Model(inputs, outputs)


def _reference(model, x, y):
    """float64 `S_i` of the projection's `heads * head_dim` units (MSE)."""
    layer = model.get_layer("query")
    w = helpers.numpy_weights(layer)
    units = HEADS * HEAD_DIM
    kernel = w["kernel"].reshape(D, units)
    z = x @ kernel + w["bias"].reshape(units)
    start = 0
    for indices in layer.growth_rounds:
        columns = slice(start, start + len(indices))
        start += len(indices)
        pair = w["growth_kernel_plus"] + w["growth_kernel_minus"]
        bias = w["growth_bias_plus"] + w["growth_bias_minus"]
        s = x @ pair[:, columns] + bias[columns]
        z[..., indices] += helpers.gelu(s) + s
    a = np.tanh(z)
    head = helpers.numpy_weights(model.get_layer("head"))
    out = a.mean(axis=1) @ head["kernel"] + head["bias"]
    d_out = 2.0 * (out - y) / y.size
    g = (d_out @ head["kernel"].T)[:, None, :] / T * (1.0 - a * a)
    c = (g * helpers.gelu_prime2(z)).reshape(-1, units)
    tokens = x.reshape(-1, D)
    tokens = np.concatenate([tokens, np.ones((len(tokens), 1))], axis=1)
    return np.einsum("ti,ta,tb->iab", c, tokens, tokens)


@pytest.mark.parametrize("method", ["dense", "matrix_free"])
def test_einsum_units_match_the_reference(rng, method):
    model = _model()
    layer = model.get_layer("query")
    layer.grow([1, 4])
    layer.grow([4, 5])
    helpers.randomise_growth(layer, rng)
    x = rng.normal(size=(8, T, D)).astype("float32")
    y = rng.normal(size=(8, K)).astype("float32")
    values = splitting_eigenvalues(model, [(x, y)], loss="mse", method=method)
    assert values["query"].shape == (HEADS * HEAD_DIM,)
    reference = helpers.assert_eigenvalues_close(
        values["query"],
        _reference(model, x.astype("float64"), y.astype("float64")),
    )
    assert np.any(reference < 0) and np.ptp(reference) > 0
