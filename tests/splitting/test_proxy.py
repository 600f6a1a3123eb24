"""`gradient_proxy` against a float64 NumPy weight gradient."""

import numpy as np
import pytest

from keras_depthhet.splitting import gradient_proxy
from tests.splitting import helpers


def _gelu_prime(z):
    pdf = np.exp(-0.5 * z * z) / np.sqrt(2 * np.pi)
    return 0.5 * (1 + helpers.erf(z / np.sqrt(2))) + z * pdf


@pytest.mark.parametrize("use_bias", [True, False])
def test_row_sums_of_the_weight_gradient(rng, use_bias):
    model = helpers.mlp(h=16, use_bias=use_bias)
    layer = model.get_layer("grow")
    layer.grow([2])
    helpers.randomise_growth(layer, rng)
    xs = [rng.normal(size=(n, 6)).astype("float32") for n in (9, 4)]
    ys = [rng.normal(size=(n, 3)).astype("float32") for n in (9, 4)]
    scores = gradient_proxy(model, list(zip(xs, ys, strict=True)), loss="mse")
    x, y = np.concatenate(xs).astype("float64"), np.concatenate(ys)
    head = helpers.numpy_weights(model.get_layer("head"))
    z = helpers.grown_preactivation(layer, x)
    out = helpers.gelu(z) @ head["kernel"] + head["bias"]
    g = (2.0 * (out - y) / y.size) @ head["kernel"].T
    delta = g * _gelu_prime(z)
    row = (x.T @ delta).sum(axis=0)
    if use_bias:
        row = row + delta.sum(axis=0)
    expected = np.minimum(0.0, row)
    assert np.any(expected < 0) and np.any(expected == 0)
    np.testing.assert_allclose(
        scores["grow"], expected, rtol=1e-3, atol=1e-6 * np.abs(row).max()
    )
