"""Every route that grows a model leaves no stale compiled function behind.

Each route grows a model that has already run `fit`, `predict`,
`evaluate`, `train_on_batch` and `predict_on_batch` (so that every
compiled function exists), then the growth weights are perturbed: every
inference entry point must see them, and every training entry point must
train them.
"""

import keras
import numpy as np
import pytest

from keras_depthhet import GrowthCallback
from keras_depthhet.growth import grow_model, rebuild_grown_model
from keras_depthhet.models import growable_layers
from tests.growth.helpers import compiled_tiny_mlp, random_data

PLAN = {"fc1": [1, 4], "fc2": [0, 3]}
"""A plan for `compiled_tiny_mlp`: the compiled functions that a route
must reset are the model's, whatever layers it holds."""


def _use_everything(model, x, y):
    model.fit(x, y, batch_size=16, epochs=1, verbose=0)
    model.predict(x, verbose=0)
    model.evaluate(x, y, verbose=0)
    model.train_on_batch(x[:16], y[:16])
    model.predict_on_batch(x[:16])


def _growth_variables(model):
    return [
        v
        for layer in growable_layers(model)
        for v in layer.trainable_weights
        if "growth_" in v.name
    ]


def _values(variables):
    return [keras.ops.convert_to_numpy(v).copy() for v in variables]


def _assert_every_entry_point_uses_growth_weights(model, x, y):
    variables = _growth_variables(model)
    assert variables, "the route grew nothing"
    before = {
        "predict": model.predict(x, verbose=0),
        "predict_on_batch": model.predict_on_batch(x[:16]),
        "evaluate": model.evaluate(x, y, verbose=0),
        "call": keras.ops.convert_to_numpy(model(x)),
    }
    rng = np.random.default_rng(3)
    for v in variables:
        v.assign(rng.normal(scale=0.3, size=v.shape).astype("float32"))
    after = {
        "predict": model.predict(x, verbose=0),
        "predict_on_batch": model.predict_on_batch(x[:16]),
        "evaluate": model.evaluate(x, y, verbose=0),
        "call": keras.ops.convert_to_numpy(model(x)),
    }
    for name in before:
        moved = np.max(np.abs(np.asarray(after[name]) - before[name]))
        # A stale compiled function returns exactly the old values.
        assert moved > 1e-6, f"{name} ignores the growth weights"
    np.testing.assert_allclose(
        after["predict"], after["call"], rtol=1e-4, atol=1e-5
    )
    start = _values(variables)
    model.train_on_batch(x[:16], y[:16])
    trained = _values(variables)
    assert all(
        np.max(np.abs(a - b)) > 0 for a, b in zip(start, trained, strict=True)
    ), "train_on_batch does not train the growth weights"
    model.fit(x, y, batch_size=16, epochs=1, verbose=0)
    fitted = _values(variables)
    assert all(
        np.max(np.abs(a - b)) > 0 for a, b in zip(trained, fitted, strict=True)
    ), "fit does not train the growth weights"


@pytest.mark.slow
@pytest.mark.parametrize("jit_compile", [True, False])
def test_grow_model_after_every_compiled_function(jit_compile):
    x, y = random_data(32)
    model = compiled_tiny_mlp(jit_compile=jit_compile)
    _use_everything(model, x, y)
    grow_model(model, PLAN)
    _assert_every_entry_point_uses_growth_weights(model, x, y)


@pytest.mark.slow
def test_growth_callback_inside_fit():
    x, y = random_data(32)
    model = compiled_tiny_mlp()
    _use_everything(model, x, y)
    grower = GrowthCallback(
        warmup=1,
        interval=1,
        param_budget=200,
        layer_threshold=0,
        criterion="random",
        seed=0,
        verbose=0,
    )
    model.fit(x, y, batch_size=16, epochs=2, callbacks=[grower], verbose=0)
    assert len(grower.history) == 2
    _assert_every_entry_point_uses_growth_weights(model, x, y)


@pytest.mark.slow
def test_rebuilt_model():
    x, y = random_data(32)
    model = compiled_tiny_mlp()
    _use_everything(model, x, y)
    grown = rebuild_grown_model(model, PLAN)
    _use_everything(grown, x, y)
    _assert_every_entry_point_uses_growth_weights(grown, x, y)


@pytest.mark.slow
def test_loaded_grown_file(tmp_path):
    x, y = random_data(32)
    model = compiled_tiny_mlp()
    _use_everything(model, x, y)
    grow_model(model, PLAN)
    model.save(tmp_path / "grown.keras")
    loaded = keras.saving.load_model(tmp_path / "grown.keras")
    _use_everything(loaded, x, y)
    _assert_every_entry_point_uses_growth_weights(loaded, x, y)


@pytest.mark.slow
def test_layer_grow_is_refused_once_traced_and_allowed_before():
    x, y = random_data(32)
    model = compiled_tiny_mlp()
    layer = {v.name: v for v in growable_layers(model)}["fc1"]
    model(x)  # eager calls trace nothing
    assert layer.grow([0, 1]) > 0
    model.predict(x, verbose=0)
    params = model.count_params()
    with pytest.raises(ValueError, match="grow_model"):
        layer.grow([2, 3])
    assert model.count_params() == params
    assert len(layer.growth_rounds) == 1
    grow_model(model, {"fc1": [2, 3]})
    assert len(layer.growth_rounds) == 2
    _assert_every_entry_point_uses_growth_weights(model, x, y)
