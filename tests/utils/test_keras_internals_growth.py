"""The private-Keras wrappers growth relies on, on the current backend."""

import keras
import numpy as np

from keras_depthhet.layers import GrowableDense
from keras_depthhet.utils.keras_internals import (
    reset_compiled_functions,
    reset_optimizer_state,
    sync_trainer_state,
)
from tests.growth.helpers import random_data


def compiled_mlp(optimizer=None):
    """The 8x8x1 images through a GELU `GrowableDense` and a Dense head.

    The wrappers act on the optimizer and the trainer, whatever the
    model; this one compiles its steps in a fraction of a ViT's time.
    """
    inputs = keras.Input((8, 8, 1))
    hidden = keras.layers.Flatten()(inputs)
    hidden = GrowableDense(8, activation="gelu", name="fc1")(hidden)
    outputs = keras.layers.Dense(10, name="head")(hidden)
    model = keras.Model(inputs, outputs)
    model.compile(
        optimizer or keras.optimizers.Adam(1e-3),
        keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    return model


def test_reset_optimizer_state_keeps_iterations_and_learning_rate():
    x, y = random_data()
    model = compiled_mlp(keras.optimizers.Adam(0.003))
    model.fit(x, y, batch_size=16, epochs=1, verbose=0)
    optimizer = model.optimizer
    iterations, learning_rate = optimizer.iterations, optimizer.learning_rate
    reset_optimizer_state(optimizer)
    assert not optimizer.built
    assert [v.name for v in optimizer.variables] == [
        "iteration",
        "learning_rate",
    ]
    assert int(optimizer.iterations) == 2
    assert optimizer.iterations is iterations
    np.testing.assert_allclose(float(learning_rate), 0.003)
    optimizer.build(model.trainable_variables)
    assert len(optimizer.variables) == 2 + 2 * len(model.trainable_variables)
    model.fit(x, y, batch_size=16, epochs=1, verbose=0)
    assert int(optimizer.iterations) == 4


def test_reset_optimizer_state_with_schedule_keeps_only_iterations():
    schedule = keras.optimizers.schedules.ExponentialDecay(1e-3, 10, 0.9)
    optimizer = keras.optimizers.SGD(schedule, momentum=0.9)
    model = compiled_mlp(optimizer)
    optimizer.build(model.trainable_variables)
    reset_optimizer_state(optimizer)
    assert [v.name for v in optimizer.variables] == ["iteration"]


def test_reset_compiled_functions_remakes_train_function():
    x, y = random_data()
    model = compiled_mlp()
    model.fit(x, y, batch_size=16, epochs=1, verbose=0)
    model.predict(x, verbose=0)
    old_train = model.train_function
    reset_compiled_functions(model)
    assert model.train_function is not None
    assert model.train_function is not old_train
    assert model.test_function is None and model.predict_function is None
    assert model.predict(x, verbose=0).shape == (32, 10)


def test_reset_compiled_functions_on_untrained_model():
    model = compiled_mlp()
    reset_compiled_functions(model)
    assert model.train_function is None


class _SyncInsideEpoch(keras.callbacks.Callback):
    def __init__(self):
        super().__init__()
        self.values = []

    def on_train_batch_end(self, batch, logs=None):
        sync_trainer_state(self.model)
        kernel = self.model.get_layer("head").kernel
        self.values.append(keras.ops.convert_to_numpy(kernel).copy())


def test_sync_trainer_state_exposes_current_weights_mid_epoch():
    x, y = random_data()
    model = compiled_mlp()
    recorder = _SyncInsideEpoch()
    model.fit(x, y, batch_size=8, epochs=1, callbacks=[recorder], verbose=0)
    # Every step's kernel is readable mid-epoch and differs from the last.
    assert len(recorder.values) == 4
    for i in range(1, len(recorder.values)):
        previous, current = recorder.values[i - 1], recorder.values[i]
        assert np.abs(current - previous).max() > 0
    final = keras.ops.convert_to_numpy(model.get_layer("head").kernel)
    np.testing.assert_array_equal(final, recorder.values[-1])
