"""Small models and a float64 NumPy reference for the splitting tests.

The reference recomputes the forward pass, the gradient `g` (by hand-derived
backpropagation) and every `S_i` of the Method page in float64, independently
of the library's capture and solvers.
"""

import keras
import numpy as np
from scipy.special import erf  # noqa: F401 (used by the tests too)

from keras_depthhet.layers import GrowableDense


def gelu(s):
    return 0.5 * s * (1.0 + erf(s / np.sqrt(2.0)))


def gelu_prime2(z):
    """Exact GELU'' (checked against autodiff in test_curvature.py)."""
    return np.exp(-0.5 * z * z) / np.sqrt(2.0 * np.pi) * (2.0 - z * z)


def numpy_weights(layer) -> dict:
    return {
        v.path.rsplit("/", 1)[-1]: keras.ops.convert_to_numpy(v).astype(
            "float64"
        )
        for v in layer.weights
    }


def grown_preactivation(layer, x):
    """`z'` of a GrowableDense layer in float64 NumPy."""
    w = numpy_weights(layer)
    z = x @ w["kernel"] + (w["bias"] if layer.use_bias else 0.0)
    start = 0
    for indices in layer.growth_rounds:
        columns = slice(start, start + len(indices))
        start += len(indices)
        kernel = w["growth_kernel_plus"] + w["growth_kernel_minus"]
        s = x @ kernel[:, columns]
        if layer.use_bias:
            bias = w["growth_bias_plus"] + w["growth_bias_minus"]
            s = s + bias[columns]
        z[..., indices] += gelu(s) + s
    return z


def mlp(d=6, h=5, k=3, use_bias=True, activation="gelu", name="grow"):
    """x (B, d) -> GrowableDense(h, activation) -> Dense(k)."""
    inputs = keras.Input((d,))
    hidden = GrowableDense(
        h, activation=activation, use_bias=use_bias, name=name
    )(inputs)
    outputs = keras.layers.Dense(k, name="head")(hidden)
    return keras.Model(inputs, outputs)


def token_model(t=4, d=6, n=5, k=3, name="qkv"):
    """x (B, T, d) -> linear GrowableDense -> tanh -> mean over T -> Dense."""
    inputs = keras.Input((t, d))
    z = GrowableDense(n, name=name)(inputs)
    a = keras.layers.Activation("tanh")(z)
    pooled = keras.layers.GlobalAveragePooling1D()(a)
    outputs = keras.layers.Dense(k, name="head")(pooled)
    return keras.Model(inputs, outputs)


def randomise_growth(layer, rng, scale=0.5):
    """Gives every growth variable random values so branches matter."""
    for variable in layer.weights:
        if "growth_" in variable.path:
            variable.assign(
                rng.normal(scale=scale, size=variable.shape).astype("float32")
            )


def reference_mlp(model, xs, ys, layer_name="grow"):
    """float64 `S_i` of the MLP's growable layer for MSE over all samples."""
    layer = model.get_layer(layer_name)
    head = numpy_weights(model.get_layer("head"))
    x = np.concatenate(xs).astype("float64")
    y = np.concatenate(ys).astype("float64")
    z = grown_preactivation(layer, x)
    out = gelu(z) @ head["kernel"] + head["bias"]
    d_out = 2.0 * (out - y) / y.size
    g = d_out @ head["kernel"].T
    return _matrices(layer, x, g * gelu_prime2(z))


def reference_tokens(model, xs, ys, layer_name="qkv"):
    """float64 `S_i` of the token model's linear layer for MSE."""
    layer = model.get_layer(layer_name)
    head = numpy_weights(model.get_layer("head"))
    x = np.concatenate(xs).astype("float64")
    y = np.concatenate(ys).astype("float64")
    z = grown_preactivation(layer, x)
    a = np.tanh(z)
    out = a.mean(axis=1) @ head["kernel"] + head["bias"]
    d_out = 2.0 * (out - y) / y.size
    d_pooled = d_out @ head["kernel"].T
    g = d_pooled[:, None, :] / x.shape[1] * (1.0 - a * a)
    return _matrices(layer, x, g * gelu_prime2(z))


def _matrices(layer, x, c):
    x = x.reshape(-1, x.shape[-1])
    c = c.reshape(-1, c.shape[-1])
    if layer.use_bias:
        x = np.concatenate([x, np.ones((x.shape[0], 1))], axis=1)
    return np.einsum("ti,ta,tb->iab", c, x, x)


def assert_eigenvalues_close(values, matrices, rtol=1e-3):
    """`values` equal lambda_min of `matrices` within `rtol`.

    An absolute slack of `1e-6 * max|lambda|` covers neurons whose
    eigenvalue is float32 round-off next to the layer's scale.
    """
    reference = np.linalg.eigvalsh(matrices)[:, 0]
    slack = 1e-6 * np.abs(reference).max()
    np.testing.assert_allclose(values, reference, rtol=rtol, atol=slack)
    return reference
