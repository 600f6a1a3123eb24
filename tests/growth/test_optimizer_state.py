"""Optimizer state across growth: EMA, loss scaling, equal variable paths."""

import keras
import numpy as np
import pytest

from keras_depthhet import GrowableDense, GrowthCallback
from keras_depthhet.growth import grow_model
from keras_depthhet.models import growable_layer_map
from tests.growth.helpers import (
    compiled_tiny_mlp,
    compiled_tiny_transformer,
    compiled_tiny_vit,
    random_data,
)

PLAN = {"fc1": [1, 4], "fc2": [0, 3]}
"""A plan for `compiled_tiny_mlp`: what growth does to the optimizer's
state does not depend on the kind of model that holds the layers."""


def _growth_variables(model):
    return [
        v
        for layer in growable_layer_map(model).values()
        for v in layer.trainable_weights
        if "growth_" in v.name
    ]


def test_ema_slots_of_new_weights_start_at_the_weights():
    x, y = random_data(16)
    model = compiled_tiny_mlp(keras.optimizers.Adam(1e-2, use_ema=True))
    model.fit(x, y, batch_size=8, epochs=1, verbose=0)
    grow_model(model, PLAN)
    optimizer = model.optimizer
    averages = optimizer._model_variables_moving_average
    by_variable = dict(
        zip([id(v) for v in model.trainable_variables], averages, strict=True)
    )
    for variable in _growth_variables(model):
        np.testing.assert_array_equal(
            keras.ops.convert_to_numpy(by_variable[id(variable)]),
            keras.ops.convert_to_numpy(variable),
        )


@pytest.mark.slow
def test_ema_overwrite_at_the_end_of_fit_keeps_grown_weights():
    x, y = random_data(32)
    momentum = 0.9
    model = compiled_tiny_mlp(
        keras.optimizers.Adam(1e-3, use_ema=True, ema_momentum=momentum)
    )
    grower = GrowthCallback(
        warmup=1,
        interval=10,
        param_budget=400,
        layer_threshold=0,
        criterion="random",
        seed=0,
        verbose=0,
    )
    trained = []  # the new weights after each step since the event

    class Record(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            if epoch == 0:
                trained.append(_values(self.model))

        def on_train_batch_end(self, batch, logs=None):
            if trained:
                trained.append(_values(self.model))

    model.fit(
        x, y, batch_size=8, epochs=3, callbacks=[grower, Record()], verbose=0
    )
    assert grower.history and len(trained) == 1 + 8
    # Keras' EMA, computed here from the recorded weights: the average of
    # a new weight starts at its value at the event (not at 0).
    expected = trained[0]
    for step in trained[1:]:
        expected = [
            momentum * e + (1 - momentum) * v
            for e, v in zip(expected, step, strict=True)
        ]
    from_zero = [0 * e for e in trained[0]]
    for step in trained[1:]:
        from_zero = [
            momentum * e + (1 - momentum) * v
            for e, v in zip(from_zero, step, strict=True)
        ]
    for end, want in zip(_values(model), expected, strict=True):
        np.testing.assert_allclose(end, want, rtol=1e-4, atol=1e-7)
    # The two starts give averages far apart: the check above can fail.
    want, wrong = (
        np.concatenate([v.ravel() for v in a]) for a in (expected, from_zero)
    )
    assert np.linalg.norm(want - wrong) > 0.2 * np.linalg.norm(want)


def _values(model):
    return [
        keras.ops.convert_to_numpy(v).copy() for v in _growth_variables(model)
    ]


def _nested_equal_names():
    def branch(name):
        inputs = keras.Input((6,))
        outputs = GrowableDense(5, activation="gelu", name="dense")(inputs)
        return keras.Model(inputs, outputs, name=name)

    inputs = keras.Input((6,))
    a, b = branch("branch_a"), branch("branch_b")
    joined = keras.layers.Concatenate()([a(inputs), b(inputs)])
    outputs = keras.layers.Dense(3, name="head")(joined)
    return keras.Model(inputs, outputs)


def test_equal_names_in_nested_models_grow_by_path():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(16, 6)).astype("float32")
    y = rng.normal(size=(16, 3)).astype("float32")
    model = _nested_equal_names()
    model.compile(keras.optimizers.Adam(1e-2), "mse")
    model.fit(x, y, epochs=2, verbose=0)
    layers = growable_layer_map(model)
    assert list(layers) == ["branch_a/dense", "branch_b/dense"]
    before = model.predict(x, verbose=0)
    momenta = _momenta(model)
    assert len({v.path for v in model.trainable_variables}) < len(momenta)
    grow_model(model, {"branch_b/dense": [0, 2]})
    assert len(layers["branch_a/dense"].growth_rounds) == 0
    assert len(layers["branch_b/dense"].growth_rounds) == 1
    np.testing.assert_allclose(
        model.predict(x, verbose=0), before, rtol=1e-5, atol=1e-6
    )
    # Each old weight keeps its own Adam moments although two weights
    # share each path ("dense/kernel", "dense/bias").
    for key, value in _momenta(model).items():
        if key in momenta:
            np.testing.assert_array_equal(value, momenta[key])
        else:
            assert not np.any(value)


def _momenta(model):
    return {
        id(variable): keras.ops.convert_to_numpy(momentum).copy()
        for variable, momentum in zip(
            model.trainable_variables, model.optimizer._momentums, strict=True
        )
    }


@pytest.mark.slow
@pytest.mark.parametrize(
    "policy, build",
    [
        ("mixed_float16", compiled_tiny_mlp),
        ("mixed_bfloat16", compiled_tiny_mlp),
        # Keras's own MultiHeadAttention fails under mixed_float16 on a
        # JAX CPU (no float16 dot_general there), grown or not.
        ("mixed_bfloat16", compiled_tiny_transformer),
    ],
    ids=["float16", "bfloat16", "bfloat16-mha"],
)
def test_growth_inside_fit_under_mixed_precision(policy, build):
    x, y = random_data(32)
    keras.config.set_dtype_policy(policy)
    try:
        model = build()
        optimizer = model.optimizer
        if policy == "mixed_float16":
            assert isinstance(optimizer, keras.optimizers.LossScaleOptimizer)
        grower = GrowthCallback(
            warmup=1,
            interval=1,
            param_budget=300,
            layer_threshold=0,
            analysis_data=(x, y),
            verbose=0,
        )
        seen = {}

        class Around(keras.callbacks.Callback):
            """Reads the state just before and after the event."""

            def on_epoch_end(self, epoch, logs=None):
                if epoch == 0:
                    seen["before"] = self.model.predict(x, verbose=0)
                    seen["state"] = _state(self.model.optimizer)

        class After(keras.callbacks.Callback):
            def on_epoch_end(self, epoch, logs=None):
                if epoch == 0:
                    seen["after"] = self.model.predict(x, verbose=0)
                    seen["state_after"] = _state(self.model.optimizer)

        model.fit(
            x,
            y,
            batch_size=8,
            epochs=2,
            callbacks=[Around(), grower, After()],
            verbose=0,
        )
    finally:
        keras.config.set_dtype_policy("float32")
    assert len(grower.history) == 2
    assert model.optimizer is optimizer
    tolerance = 2e-2 if policy == "mixed_bfloat16" else 2e-3
    np.testing.assert_allclose(
        seen["after"], seen["before"], rtol=tolerance, atol=tolerance
    )
    for name, value in seen["state"].items():
        np.testing.assert_array_equal(seen["state_after"][name], value)
    assert _growth_variables(model)
    assert all(
        np.any(keras.ops.convert_to_numpy(v)) for v in _growth_variables(model)
    )


def _state(optimizer):
    """Loss scale and step counters, by path (they must survive growth)."""
    return {
        v.path: keras.ops.convert_to_numpy(v).copy()
        for v in optimizer.variables
        if v.shape == ()
    }


@pytest.mark.slow
def test_splitting_scores_under_mixed_precision_are_float32_scores():
    from keras_depthhet import splitting

    x, y = random_data(64)
    reference_model = compiled_tiny_vit()
    weights = reference_model.get_weights()
    reference = splitting.splitting_eigenvalues(reference_model, (x, y))
    for policy in ["mixed_float16", "mixed_bfloat16"]:
        keras.config.set_dtype_policy(policy)
        try:
            model = compiled_tiny_vit()
        finally:
            keras.config.set_dtype_policy("float32")
        model.set_weights(weights)
        scores = splitting.splitting_eigenvalues(model, (x, y))
        for key, values in reference.items():
            scale = np.abs(values).max()
            assert np.abs(scores[key] - values).max() <= 0.01 * scale, key
