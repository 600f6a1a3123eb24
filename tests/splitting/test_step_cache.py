"""Capture steps are reused for an unchanged model and remade after growth."""

import keras
import numpy as np

from keras_depthhet.models.vit import growable_layers
from keras_depthhet.splitting import splitting_eigenvalues
from tests.growth.helpers import random_data, tiny_vit


def test_growth_makes_a_new_step():
    model = tiny_vit(depth=1)  # Growth of one block's fc1 is the event.
    x, y = random_data(16)
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    first = splitting_eigenvalues(model, [(x, y)], loss=loss)
    again = splitting_eigenvalues(model, [(x, y)], loss=loss)
    for name, values in first.items():
        np.testing.assert_array_equal(again[name], values)
    fc1 = growable_layers(model)[2]
    fc1.grow([0, 1])
    for variable in fc1.weights:
        if "growth_" in variable.path:
            variable.assign(np.full(variable.shape, 0.3, "float32"))
    grown = splitting_eigenvalues(model, [(x, y)], loss=loss)
    rebuilt = keras.models.clone_model(model)
    rebuilt.set_weights(model.get_weights())
    expected = splitting_eigenvalues(rebuilt, [(x, y)], loss=loss)
    for name, values in expected.items():
        np.testing.assert_allclose(grown[name], values, rtol=1e-5)
    assert not np.allclose(grown[fc1.name], first[fc1.name])


def test_compiling_with_xla_makes_a_new_step_with_the_same_values():
    model = tiny_vit()
    x, y = random_data(16)
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    model.compile(loss=loss, jit_compile=False)
    plain = splitting_eigenvalues(model, [(x, y)])
    model.compile(loss=loss, jit_compile=True)
    compiled = splitting_eigenvalues(model, [(x, y)])
    # One cached step per setting (XLA on TensorFlow; JAX always jits).
    assert len(model.__dict__["_keras_depthhet_splitting_steps"]) == 2
    for name, values in plain.items():
        np.testing.assert_allclose(compiled[name], values, rtol=1e-3)
