"""Splitting scores of multi-output models and of layers called twice.

Both against a float64 NumPy reference written independently of the
library: forward pass, hand-derived backward pass and every `S_i`.
"""

import keras
import numpy as np
import pytest

from keras_depthhet import GrowableDense, GrowthCallback
from keras_depthhet.splitting import gradient_proxy, splitting_eigenvalues
from tests.splitting import helpers

D, N = 6, 5


def _shared_layer_model():
    """Two inputs through ONE GrowableDense, then a head: two call sites."""
    a, b = keras.Input((D,), name="a"), keras.Input((D,), name="b")
    shared = GrowableDense(N, activation="gelu", name="shared")
    joined = keras.layers.Concatenate()([shared(a), shared(b)])
    outputs = keras.layers.Dense(3, name="head")(joined)
    return keras.Model([a, b], outputs)


def _reference_shared(model, xa, xb, y):
    layer = model.get_layer("shared")
    head = helpers.numpy_weights(model.get_layer("head"))
    xa, xb, y = (t.astype("float64") for t in (xa, xb, y))
    za = helpers.grown_preactivation(layer, xa)
    zb = helpers.grown_preactivation(layer, xb)
    hidden = np.concatenate([helpers.gelu(za), helpers.gelu(zb)], axis=1)
    out = hidden @ head["kernel"] + head["bias"]
    g = (2.0 * (out - y) / y.size) @ head["kernel"].T
    ca = g[:, :N] * helpers.gelu_prime2(za)
    cb = g[:, N:] * helpers.gelu_prime2(zb)
    first_call = helpers._matrices(layer, xa, ca)
    return first_call + helpers._matrices(layer, xb, cb), first_call


@pytest.mark.parametrize("method", ["dense", "matrix_free"])
def test_layer_called_twice_sums_over_both_calls(rng, method):
    model = _shared_layer_model()
    layer = model.get_layer("shared")
    layer.grow([0, 3])
    helpers.randomise_growth(layer, rng)
    xa = rng.normal(size=(16, D)).astype("float32")
    xb = rng.normal(size=(16, D)).astype("float32")
    y = rng.normal(size=(16, 3)).astype("float32")
    values = splitting_eigenvalues(
        model, [((xa, xb), y)], loss="mse", method=method
    )
    both, first_call = _reference_shared(model, xa, xb, y)
    reference = helpers.assert_eigenvalues_close(values["shared"], both)
    # Scoring one call alone would give other values.
    assert not np.allclose(np.linalg.eigvalsh(first_call)[:, 0], reference)


def _two_output_model():
    inputs = keras.Input((D,))
    hidden = GrowableDense(N, activation="gelu", name="trunk")(inputs)
    out_a = keras.layers.Dense(3, name="out_a")(hidden)
    out_b = keras.layers.Dense(2, name="out_b")(hidden)
    model = keras.Model(inputs, [out_a, out_b])
    model.compile(
        "adam",
        loss={"out_a": "mse", "out_b": "mse"},
        loss_weights={"out_a": 1.0, "out_b": 0.5},
    )
    return model


def _reference_two_outputs(model, x, ya, yb):
    layer = model.get_layer("trunk")
    x, ya, yb = (t.astype("float64") for t in (x, ya, yb))
    z = helpers.grown_preactivation(layer, x)
    hidden = helpers.gelu(z)
    g = 0.0
    for name, y, weight in (("out_a", ya, 1.0), ("out_b", yb, 0.5)):
        head = helpers.numpy_weights(model.get_layer(name))
        out = hidden @ head["kernel"] + head["bias"]
        g = g + weight * (2.0 * (out - y) / y.size) @ head["kernel"].T
    return helpers._matrices(layer, x, g * helpers.gelu_prime2(z))


@pytest.mark.parametrize("targets", ["list", "dict"])
def test_multi_output_model_uses_the_weighted_sum_of_its_losses(
    rng, targets
):
    model = _two_output_model()
    x = rng.normal(size=(24, D)).astype("float32")
    ya = rng.normal(size=(24, 3)).astype("float32")
    yb = rng.normal(size=(24, 2)).astype("float32")
    y = [ya, yb] if targets == "list" else {"out_a": ya, "out_b": yb}
    values = splitting_eigenvalues(model, [(x, y)], method="dense")
    helpers.assert_eigenvalues_close(
        values["trunk"], _reference_two_outputs(model, x, ya, yb)
    )
    proxy = gradient_proxy(model, [(x, y)])
    assert proxy["trunk"].shape == (N,)


def test_multi_output_model_grows_inside_fit(rng):
    model = _two_output_model()
    x = rng.normal(size=(64, D)).astype("float32")
    y = [
        rng.normal(size=(64, 3)).astype("float32"),
        rng.normal(size=(64, 2)).astype("float32"),
    ]
    grower = GrowthCallback(
        warmup=1, interval=1, param_budget=100, layer_threshold=0, verbose=0
    )
    before = model.count_params()
    model.fit(x, y, batch_size=16, epochs=2, callbacks=[grower], verbose=0)
    assert len(grower.history) == 2
    assert model.count_params() > before
    assert model.count_params() == grower.history[-1]["params_after"]
