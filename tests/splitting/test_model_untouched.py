"""The analysis reads the model: weights, optimizer and hooks unchanged."""

import keras
import numpy as np
import pytest

from keras_depthhet.models.vit import growable_layers
from keras_depthhet.splitting import gradient_proxy, splitting_eigenvalues
from tests.growth.helpers import compiled_tiny_vit, random_data, values_by_path


def _state(model):
    return values_by_path(model.weights), values_by_path(
        model.optimizer.variables
    )


@pytest.mark.slow
def test_weights_optimizer_and_hooks_unchanged():
    model = compiled_tiny_vit()
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
    model = compiled_tiny_vit()
    x, y = random_data(8)
    x[3] = np.nan
    with pytest.raises(ValueError, match="Non-finite"):
        splitting_eigenvalues(model, [(x, y)])
    assert all(layer._analysis_hook is None for layer in growable_layers(model))


def test_inside_fit_sees_current_weights():
    """Called from a callback mid-fit (JAX keeps state outside variables)."""
    model = compiled_tiny_vit()
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
