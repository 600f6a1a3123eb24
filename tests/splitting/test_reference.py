"""Eigenvalues against the float64 NumPy reference, cases (a)-(e) of issue 3."""

import keras
import numpy as np
import pytest

from keras_depthhet.splitting import splitting_eigenvalues
from tests.splitting import helpers

METHODS = ["dense", "matrix_free"]


def _batches(rng, sizes, x_shape, k=3):
    xs = [rng.normal(size=(n, *x_shape)).astype("float32") for n in sizes]
    ys = [rng.normal(size=(n, k)).astype("float32") for n in sizes]
    return xs, ys


@pytest.mark.parametrize("method", METHODS)
def test_mlp_gelu_layer(rng, method):
    model = helpers.mlp()
    xs, ys = _batches(rng, [16], (6,))
    values = splitting_eigenvalues(
        model, list(zip(xs, ys, strict=True)), loss="mse", method=method
    )
    assert list(values) == ["grow"]
    assert values["grow"].shape == (5,)
    assert values["grow"].dtype == np.float64
    reference = helpers.assert_eigenvalues_close(
        values["grow"], helpers.reference_mlp(model, xs, ys)
    )
    assert np.any(reference < 0)


@pytest.mark.parametrize("method", METHODS)
def test_tokens_with_linear_layer(rng, method):
    model = helpers.token_model()
    xs, ys = _batches(rng, [8], (4, 6))
    values = splitting_eigenvalues(
        model, list(zip(xs, ys, strict=True)), loss="mse", method=method
    )
    helpers.assert_eigenvalues_close(
        values["qkv"], helpers.reference_tokens(model, xs, ys)
    )


@pytest.mark.parametrize("method", METHODS)
def test_grown_layer(rng, method):
    model = helpers.token_model()
    layer = model.get_layer("qkv")
    layer.grow([1, 3])
    layer.grow([3, 4])
    helpers.randomise_growth(layer, rng)
    xs, ys = _batches(rng, [8], (4, 6))
    values = splitting_eigenvalues(
        model, list(zip(xs, ys, strict=True)), loss="mse", method=method
    )
    helpers.assert_eigenvalues_close(
        values["qkv"], helpers.reference_tokens(model, xs, ys)
    )


@pytest.mark.parametrize("method", METHODS)
def test_grown_gelu_layer_without_bias(rng, method):
    model = helpers.mlp(use_bias=False)
    layer = model.get_layer("grow")
    layer.grow([0, 2])
    helpers.randomise_growth(layer, rng)
    xs, ys = _batches(rng, [16], (6,))
    values, vectors = splitting_eigenvalues(
        model,
        list(zip(xs, ys, strict=True)),
        loss="mse",
        method=method,
        return_vectors=True,
    )["grow"]
    matrices = helpers.reference_mlp(model, xs, ys)
    assert matrices.shape == (5, 6, 6)
    assert vectors.shape == (5, 6)
    reference = helpers.assert_eigenvalues_close(values, matrices)
    # Each vector is a unit eigenvector: S v = lambda v.
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1, rtol=1e-5)
    residual = np.einsum("iab,ib->ia", matrices, vectors) - (
        reference[:, None] * vectors
    )
    scale = np.abs(np.linalg.eigvalsh(matrices)).max(axis=1)
    assert np.all(np.linalg.norm(residual, axis=1) <= 1e-2 * scale)


@pytest.mark.parametrize("method", METHODS)
def test_unequal_batches_give_the_mean_loss(rng, method):
    model = helpers.mlp()
    xs, ys = _batches(rng, [7, 3, 11], (6,))
    values = splitting_eigenvalues(
        model, list(zip(xs, ys, strict=True)), loss="mse", method=method
    )
    helpers.assert_eigenvalues_close(
        values["grow"], helpers.reference_mlp(model, xs, ys)
    )
    # The same samples in one batch give the same L, so the same values.
    whole = splitting_eigenvalues(
        model,
        [(np.concatenate(xs), np.concatenate(ys))],
        loss="mse",
        method=method,
    )
    np.testing.assert_allclose(values["grow"], whole["grow"], rtol=1e-4)


def test_sample_weights_scale_each_sample(rng):
    model = helpers.mlp()
    x, y = _batches(rng, [12], (6,))
    weight = np.zeros(12, dtype="float32")
    weight[:6] = 2.0
    weighted = splitting_eigenvalues(
        model, [(x[0], y[0], weight)], loss="mse", method="dense"
    )
    # Keras divides the weighted sum by the batch size: the same L as twice
    # the loss of the first six samples, averaged over twelve.
    matrices = helpers.reference_mlp(model, [x[0][:6]], [y[0][:6]])
    helpers.assert_eigenvalues_close(weighted["grow"], matrices)


def test_compiled_loss_is_the_default(rng):
    model = helpers.mlp()
    model.compile(loss=keras.losses.MeanSquaredError())
    xs, ys = _batches(rng, [16], (6,))
    values = splitting_eigenvalues(
        model, list(zip(xs, ys, strict=True)), method="dense"
    )
    helpers.assert_eigenvalues_close(
        values["grow"], helpers.reference_mlp(model, xs, ys)
    )


def test_loss_function_is_reduced_like_keras(rng):
    model = helpers.mlp()
    xs, ys = _batches(rng, [16], (6,))
    from_function = splitting_eigenvalues(
        model,
        list(zip(xs, ys, strict=True)),
        loss=keras.losses.mean_squared_error,
        method="dense",
    )
    helpers.assert_eigenvalues_close(
        from_function["grow"], helpers.reference_mlp(model, xs, ys)
    )


def test_num_batches_limits_reading(rng):
    model = helpers.mlp()
    xs, ys = _batches(rng, [5, 5, 5], (6,))
    values = splitting_eigenvalues(
        model,
        list(zip(xs, ys, strict=True)),
        loss="mse",
        num_batches=2,
        method="dense",
    )
    helpers.assert_eigenvalues_close(
        values["grow"], helpers.reference_mlp(model, xs[:2], ys[:2])
    )
