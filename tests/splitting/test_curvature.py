"""sigma'' and the splitting-matrix formula against autodiff."""

import jax
import jax.numpy as jnp
import keras
import numpy as np

from keras_depthhet.splitting import capture as curvature
from keras_depthhet.splitting.capture import _backend_module
from tests.splitting import helpers


def _backend_derivative(fn, z, order):
    return keras.ops.convert_to_numpy(
        _backend_module().derivative(fn, keras.ops.convert_to_tensor(z), order)
    )


def test_gelu_second_derivative_matches_backend_autodiff():
    z = np.linspace(-5, 5, 201).astype("float32")
    closed = keras.ops.convert_to_numpy(curvature.gelu_second_derivative(z))
    autodiff = _backend_derivative(keras.activations.gelu, z, 2)
    np.testing.assert_allclose(closed, autodiff, rtol=1e-4, atol=1e-6)
    first = keras.ops.convert_to_numpy(curvature.gelu_first_derivative(z))
    np.testing.assert_allclose(
        first, _backend_derivative(keras.activations.gelu, z, 1), atol=1e-6
    )


def test_other_activations_use_autodiff_second_derivative(rng):
    from tests.splitting.helpers import mlp

    layer = mlp(activation="tanh").get_layer("grow")
    z = rng.normal(size=(7, 5)).astype("float32")
    got = keras.ops.convert_to_numpy(
        curvature.splitting_sigma_second(
            layer, keras.ops.convert_to_tensor(z), _backend_module().derivative
        )
    )
    t = np.tanh(z)
    np.testing.assert_allclose(got, -2 * t * (1 - t * t), rtol=1e-4, atol=1e-6)


def test_formula_is_the_hessian_with_g_fixed(rng):
    """S = Hessian in w of sum_t g_t GELU(w . x~_t), by jax.hessian."""
    x = rng.normal(size=(30, 4))
    x_tilde = np.concatenate([x, np.ones((30, 1))], axis=1)
    g = rng.normal(size=30)
    w = rng.normal(size=5)

    def objective(weights):
        s = jnp.asarray(x_tilde, "float32") @ weights
        return jnp.sum(jnp.asarray(g, "float32") * jax.nn.gelu(s, False))

    hessian = np.asarray(jax.hessian(objective)(jnp.asarray(w, "float32")))
    c = g * helpers.gelu_prime2(x_tilde @ w)
    formula = np.einsum("t,ta,tb->ab", c, x_tilde, x_tilde)
    np.testing.assert_allclose(hessian, formula, rtol=1e-3, atol=1e-4)
