"""`gradient_proxy` against the authors' construction and a NumPy reference.

The authors' code scores a neuron by the minimum eigenvalue of the matrix
every row of which is the neuron's weight-gradient row; these tests build
that matrix with NumPy from a gradient taken by the backend's own autodiff,
and check the row sums against a float64 backpropagation by hand.
"""

import keras
import numpy as np
import pytest

from keras_depthhet.growth import GrowthCallback
from keras_depthhet.splitting import gradient_proxy
from tests.splitting import helpers


def _gelu_prime(z):
    pdf = np.exp(-0.5 * z * z) / np.sqrt(2 * np.pi)
    return 0.5 * (1 + helpers.erf(z / np.sqrt(2))) + z * pdf


def _mse_gradients(model, variables, x, y) -> list[np.ndarray]:
    """Gradients of the mean squared error over all of `x` with respect to
    `variables`, by the backend's autodiff (not the library's capture)."""
    backend = keras.backend.backend()
    if backend == "jax":
        import jax
        import jax.numpy as jnp

        trainable = [v.value for v in model.trainable_variables]
        where = [
            next(
                i
                for i, w in enumerate(model.trainable_variables)
                if w is v
            )
            for v in variables
        ]

        def loss_of(values):
            given = list(trainable)
            for i, value in zip(where, values, strict=True):
                given[i] = value
            out, _ = model.stateless_call(
                given, [v.value for v in model.non_trainable_variables], x
            )
            return jnp.mean((out - y) ** 2)

        grads = jax.grad(loss_of)([trainable[i] for i in where])
    elif backend == "tensorflow":
        import tensorflow as tf

        with tf.GradientTape() as tape:
            loss = tf.reduce_mean((model(x) - y) ** 2)
        grads = tape.gradient(loss, variables)
    else:
        pytest.fail(f"no autodiff reference for backend {backend!r}")
    return [np.asarray(g, dtype="float64") for g in grads]


def _authors_score(weight_row: np.ndarray) -> float:
    """The authors' construction: the matrix whose every row is the
    neuron's weight-gradient row, and its smallest eigenvalue."""
    matrix = np.ones((weight_row.size, 1)) * weight_row[None, :]
    assert np.all(matrix == weight_row)
    return float(np.min(np.linalg.eigvals(matrix).real))


def _token_data(rng):
    xs = [rng.normal(size=(n, 4, 6)).astype("float32") for n in (7, 5)]
    ys = [rng.normal(size=(n, 3)).astype("float32") for n in (7, 5)]
    return xs, ys


def _grown_token_model(rng):
    """The token model with a grown `qkv`, every weight drawn from `rng`
    (the same on both backends)."""
    model = helpers.token_model()
    layer = model.get_layer("qkv")
    layer.grow([1, 3])
    model.set_weights(
        [
            rng.normal(scale=0.5, size=w.shape).astype("float32")
            for w in model.get_weights()
        ]
    )
    return model, layer


def test_score_is_the_authors_rank_1_eigenvalue(rng):
    model, layer = _grown_token_model(rng)
    xs, ys = _token_data(rng)
    scores = gradient_proxy(model, list(zip(xs, ys, strict=True)), loss="mse")
    (kernel_grad,) = _mse_gradients(
        model, [layer.kernel], np.concatenate(xs), np.concatenate(ys)
    )
    expected = np.array(
        [_authors_score(kernel_grad[:, i]) for i in range(layer.units)]
    )
    np.testing.assert_allclose(
        expected, np.minimum(0.0, kernel_grad.sum(axis=0)), atol=1e-12
    )
    assert np.any(expected < 0) and np.any(expected > -1e-12)
    np.testing.assert_allclose(
        scores["qkv"],
        expected,
        rtol=1e-3,
        atol=1e-5 * np.abs(kernel_grad.sum(axis=0)).max(),
    )


def test_include_bias_adds_the_bias_gradient(rng):
    model, layer = _grown_token_model(rng)
    xs, ys = _token_data(rng)
    data = list(zip(xs, ys, strict=True))
    ours = gradient_proxy(model, data, loss="mse", include_bias=True)
    kernel_grad, bias_grad = _mse_gradients(
        model,
        [layer.kernel, layer.bias],
        np.concatenate(xs),
        np.concatenate(ys),
    )
    with_bias = kernel_grad.sum(axis=0) + bias_grad
    without = kernel_grad.sum(axis=0)
    expected = np.minimum(0.0, with_bias)
    # The bias changes which neurons are eligible here, so the two scores
    # cannot agree by accident.
    assert np.any((with_bias < 0) != (without < 0))
    np.testing.assert_allclose(
        ours["qkv"], expected, rtol=1e-3, atol=1e-5 * np.abs(with_bias).max()
    )


@pytest.mark.parametrize(
    ("use_bias", "include_bias"),
    [(True, False), (True, True), (False, False), (False, True)],
)
def test_row_sums_of_the_weight_gradient(rng, use_bias, include_bias):
    model = helpers.mlp(h=16, use_bias=use_bias)
    layer = model.get_layer("grow")
    layer.grow([2])
    helpers.randomise_growth(layer, rng)
    xs = [rng.normal(size=(n, 6)).astype("float32") for n in (9, 4)]
    ys = [rng.normal(size=(n, 3)).astype("float32") for n in (9, 4)]
    scores = gradient_proxy(
        model,
        list(zip(xs, ys, strict=True)),
        loss="mse",
        include_bias=include_bias,
    )
    x, y = np.concatenate(xs).astype("float64"), np.concatenate(ys)
    head = helpers.numpy_weights(model.get_layer("head"))
    z = helpers.grown_preactivation(layer, x)
    out = helpers.gelu(z) @ head["kernel"] + head["bias"]
    g = (2.0 * (out - y) / y.size) @ head["kernel"].T
    delta = g * _gelu_prime(z)
    row = (x.T @ delta).sum(axis=0)
    if use_bias and include_bias:
        row = row + delta.sum(axis=0)
    expected = np.minimum(0.0, row)
    assert np.any(expected < 0) and np.any(expected == 0)
    np.testing.assert_allclose(
        scores["grow"], expected, rtol=1e-3, atol=1e-6 * np.abs(row).max()
    )


def test_growth_callback_uses_the_authors_score(rng):
    model, _ = _grown_token_model(rng)
    model.compile(loss="mse")
    xs, ys = _token_data(rng)
    data = list(zip(xs, ys, strict=True))
    grower = GrowthCallback(
        criterion="gradient_proxy", analysis_data=data, verbose=0
    )
    grower.set_model(model)
    scores = grower.compute_scores()
    authors = gradient_proxy(model, data)
    ours = gradient_proxy(model, data, include_bias=True)
    np.testing.assert_array_equal(scores["qkv"], authors["qkv"])
    assert not np.array_equal(authors["qkv"], ours["qkv"])


@pytest.mark.parametrize("include_bias", [1, "yes", None])
def test_include_bias_must_be_a_bool(rng, include_bias):
    model = helpers.mlp()
    x = rng.normal(size=(4, 6)).astype("float32")
    y = rng.normal(size=(4, 3)).astype("float32")
    with pytest.raises(ValueError, match="include_bias"):
        gradient_proxy(model, [(x, y)], loss="mse", include_bias=include_bias)
