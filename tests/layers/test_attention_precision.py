"""Attention under the mixed-precision policies, against NumPy."""

import keras
import numpy as np
import pytest

from keras_depthhet.layers import Attention


def _numpy_attention(layer, tokens):
    qkv = tokens @ keras.ops.convert_to_numpy(layer.qkv.kernel).astype(
        "float64"
    )
    qkv = qkv + keras.ops.convert_to_numpy(layer.qkv.bias)
    batch, length, _ = tokens.shape
    qkv = qkv.reshape(batch, length, 3, layer.num_heads, layer.head_dim)
    query, key, value = (qkv[:, :, i].transpose(0, 2, 1, 3) for i in range(3))
    scores = query @ key.transpose(0, 1, 3, 2) / np.sqrt(layer.head_dim)
    weights = np.exp(scores - scores.max(-1, keepdims=True))
    weights /= weights.sum(-1, keepdims=True)
    mixed = (weights @ value).transpose(0, 2, 1, 3).reshape(batch, length, -1)
    proj = layer.proj
    return mixed @ keras.ops.convert_to_numpy(proj.kernel) + (
        keras.ops.convert_to_numpy(proj.bias)
    )


@pytest.mark.parametrize(
    "policy", ["float32", "mixed_float16", "mixed_bfloat16"]
)
def test_attention_matches_numpy_under_each_policy(policy):
    layer = Attention(16, num_heads=2, dtype=policy)
    tokens = np.random.default_rng(0).normal(size=(3, 5, 16)).astype("float32")
    layer.build(tokens.shape)
    for variable in layer.weights:  # nonzero biases, larger kernels
        variable.assign(np.random.default_rng(1).normal(0, 0.3, variable.shape))
    expected = _numpy_attention(layer, tokens.astype("float64"))
    # Compiled, as `fit` and `predict` run it (XLA's CPU backend refused
    # JAX's fused float16 attention).
    model = keras.Sequential([keras.Input((5, 16)), layer])
    got = model.predict(tokens, verbose=0)
    tolerance = {"float32": 1e-5, "mixed_float16": 1e-2, "mixed_bfloat16": 5e-2}
    scale = np.abs(expected).max()
    np.testing.assert_allclose(got, expected, atol=tolerance[policy] * scale)
