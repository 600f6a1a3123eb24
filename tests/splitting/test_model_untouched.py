"""The analysis reads the model: weights, optimizer and hooks unchanged."""

import keras
import numpy as np
import pytest

from keras_depthhet.layers import GrowableDense
from keras_depthhet.models.vit import growable_layers
from keras_depthhet.splitting import gradient_proxy, splitting_eigenvalues
from tests.growth.helpers import values_by_path


def _compiled_model():
    """Tokens (B, 4, 6) through two GELU `GrowableDense` layers (one on
    the tokens, one on their mean) and a head, compiled as a classifier.

    What the analysis touches (weights, optimizer slots, the layers'
    hooks) is the same in a ViT; this model's steps compile faster.
    """
    inputs = keras.Input((4, 6))
    hidden = GrowableDense(8, activation="gelu", name="tokens")(inputs)
    pooled = keras.layers.GlobalAveragePooling1D()(hidden)
    hidden = GrowableDense(5, activation="gelu", name="pooled")(pooled)
    outputs = keras.layers.Dense(3, name="head")(hidden)
    model = keras.Model(inputs, outputs)
    model.compile(
        keras.optimizers.Adam(1e-3),
        keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    return model


def random_data(n, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 4, 6)).astype("float32")
    return x, rng.integers(0, 3, n)


def _state(model):
    return values_by_path(model.weights), values_by_path(
        model.optimizer.variables
    )


def test_weights_optimizer_and_hooks_unchanged():
    model = _compiled_model()
    x, y = random_data(16)
    model.fit(x, y, batch_size=8, epochs=1, verbose=0)
    weights, slots = _state(model)
    for method in ("dense", "matrix_free"):
        splitting_eigenvalues(model, [(x, y)], method=method)
    gradient_proxy(model, [(x, y)])
    after_weights, after_slots = _state(model)
    assert weights.keys() == after_weights.keys()
    for path, value in weights.items():
        np.testing.assert_array_equal(after_weights[path], value)
    assert slots.keys() == after_slots.keys()
    for path, value in slots.items():
        np.testing.assert_array_equal(after_slots[path], value)
    assert all(layer._analysis_hook is None for layer in growable_layers(model))


def test_no_hook_left_after_an_error():
    model = _compiled_model()
    x, y = random_data(8)
    x[3] = np.nan
    with pytest.raises(ValueError, match="Non-finite"):
        splitting_eigenvalues(model, [(x, y)])
    assert all(layer._analysis_hook is None for layer in growable_layers(model))


def test_inside_fit_sees_current_weights():
    """Called from a callback mid-fit (JAX keeps state outside variables)."""
    model = _compiled_model()
    x, y = random_data(16)
    seen = {}

    class Probe(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            seen[epoch] = splitting_eigenvalues(self.model, [(x, y)])

    model.fit(x, y, batch_size=8, epochs=2, verbose=0, callbacks=[Probe()])
    after = splitting_eigenvalues(model, [(x, y)])
    for name, values in after.items():
        np.testing.assert_allclose(seen[1][name], values, rtol=1e-5)
        assert not np.allclose(seen[0][name], values, rtol=1e-3)
