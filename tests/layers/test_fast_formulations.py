"""Faster JAX formulations with the same function: `exact_gelu`, `LayerNorm`."""

import keras
import numpy as np
import pytest
from scipy.special import erf

from keras_depthhet.layers import GrowableDense
from keras_depthhet.layers.growable_dense import exact_gelu


def test_exact_gelu_is_the_erf_formula_and_keras_gelu():
    x = np.linspace(-9.0, 9.0, 2001).astype("float32")
    reference = 0.5 * x.astype("float64") * (1 + erf(x / np.sqrt(2.0)))
    ours = keras.ops.convert_to_numpy(exact_gelu(x))
    # Within float32 rounding (about 1e-7 relative); in the far negative
    # tail `1 + erf` cancels in float32, as in PyTorch's formula, and the
    # error stays below 1e-6 absolute.
    np.testing.assert_allclose(ours, reference, rtol=2e-7, atol=1e-6)
    keras_gelu = keras.ops.convert_to_numpy(
        keras.ops.gelu(x, approximate=False)
    )
    np.testing.assert_allclose(ours, keras_gelu, rtol=1e-6, atol=1e-6)
    # Not the tanh approximation, which differs by up to about 5e-4 here.
    approximate = keras.ops.convert_to_numpy(keras.ops.gelu(x))
    assert np.abs(ours - approximate).max() > 1e-4


def test_gelu_layer_equals_keras_dense_with_gelu_in_value_and_gradient():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(4, 7)).astype("float32") * 3
    ours = GrowableDense(5, activation="gelu")
    dense = keras.layers.Dense(5, activation="gelu")
    ours.build((None, 7))
    dense.build((None, 7))
    dense.set_weights(ours.get_weights())
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(ours(x)),
        keras.ops.convert_to_numpy(dense(x)),
        rtol=1e-6,
        atol=1e-6,
    )
    if keras.backend.backend() == "jax":
        import jax

        def input_gradient(layer):
            return np.asarray(jax.grad(lambda v: layer(v).sum())(x))
    else:
        import tensorflow as tf

        def input_gradient(layer):
            tensor = tf.constant(x)
            with tf.GradientTape() as tape:
                tape.watch(tensor)
                total = tf.reduce_sum(layer(tensor))
            return tape.gradient(total, tensor).numpy()

    np.testing.assert_allclose(
        input_gradient(ours), input_gradient(dense), rtol=1e-5, atol=1e-6
    )


@pytest.mark.parametrize("policy", ["float32", "mixed_bfloat16"])
def test_layer_norm_equals_keras_layer_normalization(policy):
    from keras_depthhet.layers.transformer_block import LayerNorm

    rng = np.random.default_rng(1)
    x = (rng.normal(size=(3, 5, 16)) * 4 + 2).astype("float32")
    ours = LayerNorm(epsilon=1e-6, dtype=policy)
    keras_ln = keras.layers.LayerNormalization(epsilon=1e-6, dtype=policy)
    ours.build(x.shape)
    keras_ln.build(x.shape)
    weights = [rng.normal(size=(16,)).astype("float32") for _ in range(2)]
    ours.set_weights(weights)
    keras_ln.set_weights(weights)
    tolerance = 1e-5 if policy == "float32" else 2e-2

    def value_and_input_gradient(layer):
        if keras.backend.backend() == "jax":
            import jax

            def total(v):
                return keras.ops.cast(layer(v), "float32").sum()

            return (
                np.asarray(keras.ops.cast(layer(x), "float32")),
                np.asarray(jax.grad(lambda v: (total(v) ** 2))(x)),
            )
        import tensorflow as tf

        tensor = tf.constant(x)
        with tf.GradientTape() as tape:
            tape.watch(tensor)
            out = tf.cast(layer(tensor), "float32")
            total = tf.reduce_sum(out) ** 2
        return out.numpy(), tape.gradient(total, tensor).numpy()

    for a, b in zip(
        value_and_input_gradient(ours),
        value_and_input_gradient(keras_ln),
        strict=True,
    ):
        np.testing.assert_allclose(a, b, rtol=tolerance, atol=tolerance)
    assert ours(x).dtype == keras_ln(x).dtype
    assert ours.get_config() == {
        **keras_ln.get_config(),
        "name": ours.name,
    }
