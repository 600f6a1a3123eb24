"""`model.fit(x, y, epochs=E, callbacks=[GrowthCallback(interval=30)])`.

The project's promise, with every other argument at its default: no
analysis data (the last training batches are scored), the paper's DeiT-S
schedule, budget and layer threshold. The growth it does must be the
growth that passing the same batches explicitly as `analysis_data` gives.
"""

import keras
import numpy as np
import pytest

import keras_depthhet.splitting as splitting_module
from keras_depthhet import GrowableDense, GrowthCallback
from keras_depthhet.models import growable_layer_map


@pytest.mark.slow
def test_the_one_liner_grows_as_explicit_analysis_data_would(monkeypatch):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(320, 8, 8, 1)).astype("float32")
    y = rng.integers(0, 10, 320)
    # Any model of `GrowableDense` layers: two of 2,304 GELU neurons side
    # by side on the flattened inputs (steps and analysis cost a fraction
    # of a ViT's, and 64 inputs keep to the dense eigen-solver), so that
    # the default budget (580,000 parameters) and threshold (60 neurons)
    # choose some neurons, not all: 2 * (64 + 1) = 130 parameters per
    # neuron, 599,040 for all of them.
    inputs = keras.Input((8, 8, 1))
    flat = keras.layers.Flatten()(inputs)
    hidden = keras.layers.Concatenate()(
        [
            GrowableDense(2304, activation="gelu", name=name)(flat)
            for name in ("fc_a", "fc_b")
        ]
    )
    outputs = keras.layers.Dense(10, name="head")(hidden)
    model = keras.Model(inputs, outputs)
    model.compile(
        "adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    )
    seen = {}
    original = splitting_module.splitting_eigenvalues

    def spy(model_, data, **kwargs):
        if "explicit" not in seen:
            seen["data"] = list(data)
            explicit = GrowthCallback(
                interval=30, analysis_data=seen["data"], verbose=0
            )
            explicit.set_model(model_)
            explicit.on_train_begin()
            seen["explicit"] = "running"
            seen["explicit"] = explicit.plan_growth(50)
        return original(model_, data, **kwargs)

    monkeypatch.setattr(splitting_module, "splitting_eigenvalues", spy)
    grower = GrowthCallback(interval=30)
    model.fit(x, y, epochs=50, callbacks=[grower], verbose=0)

    assert len(seen["data"]) == 10  # analysis_batches' default
    assert all(len(batch[0]) == 32 for batch in seen["data"])
    assert len(grower.history) == 1
    event, explicit = grower.history[0], seen["explicit"]
    assert event["epoch"] == 50
    assert event["scores"] == explicit["scores"]
    assert event["neurons"] == explicit["neurons"]
    layers = growable_layer_map(model)
    grown = 0
    for key, indices in explicit["plan"].items():
        np.testing.assert_array_equal(
            np.sort(layers[key].growth_rounds[-1]), np.sort(indices)
        )
        grown += len(indices)
    units = sum(layer.units for layer in layers.values())
    assert 0 < grown < units
