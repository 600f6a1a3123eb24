"""Functional rebuild of a grown model against in-place growth."""

import keras
import numpy as np
import pytest

from keras_depthhet.growth.grow import grow_model
from keras_depthhet.growth.rebuild import grown_config, rebuild_grown_model
from keras_depthhet.layers import GrowableDense
from keras_depthhet.models.vit import growable_layers
from keras_depthhet.utils.keras_internals import compile_arguments
from tests.growth.helpers import (
    compiled_tiny_vit,
    fixed_batch_loss,
    random_data,
    values_by_path,
)

PLAN = {"block_0_attn_qkv": [1, 4], "block_1_mlp_fc1": [0, 2, 5]}
BLOCK_0_PLAN = {"block_0_attn_qkv": [1, 4], "block_0_mlp_fc1": [0, 2, 5]}


def _rounds(model):
    return {
        layer.name: [r.tolist() for r in layer.growth_rounds]
        for layer in growable_layers(model)
    }


def _slots(optimizer):
    """Slot values by path without the optimizer's (uniquified) name."""
    return {
        path.split("/", 1)[1]: value
        for path, value in values_by_path(optimizer.variables).items()
    }


def test_grown_config_appends_one_round_to_nested_layers():
    model = compiled_tiny_vit()
    config = model.get_config()
    before = repr(config)
    grown = grown_config(config, PLAN)
    assert repr(config) == before
    rebuilt = keras.Model.from_config(grown)
    rounds = _rounds(rebuilt)
    assert rounds["block_0_attn_qkv"] == [[1, 4]]
    assert rounds["block_1_mlp_fc1"] == [[0, 2, 5]]
    assert sum(len(r) for r in rounds.values()) == 2
    twice = grown_config(grown_config(config, PLAN), PLAN)
    twice = _rounds(keras.Model.from_config(twice))
    assert twice["block_1_mlp_fc1"] == [[0, 2, 5], [0, 2, 5]]


def test_grown_config_rejects_unknown_layer():
    config = compiled_tiny_vit().get_config()
    with pytest.raises(ValueError, match="'block_9_mlp_fc1'"):
        grown_config(config, {"block_9_mlp_fc1": [0]})


@pytest.mark.slow
def test_rebuild_equals_grow_model_in_place():
    x, y = random_data()
    # One block: the rebuild reaches the layers nested in it as in any
    # other block, and the train step compiles in half the time.
    keras.utils.set_random_seed(7)
    in_place = compiled_tiny_vit(depth=1)
    in_place.fit(x, y, batch_size=8, epochs=2, verbose=0, shuffle=False)
    keras.utils.set_random_seed(7)
    functional = compiled_tiny_vit(depth=1)
    functional.fit(x, y, batch_size=8, epochs=2, verbose=0, shuffle=False)
    loss_before = fixed_batch_loss(functional, x, y)

    added = grow_model(in_place, BLOCK_0_PLAN)
    # The scale is checked as `grow_model` checks it: NumPy scalars pass.
    grown = rebuild_grown_model(
        functional, BLOCK_0_PLAN, scale=np.float32(0.2)
    )

    assert grown is not functional
    assert grown.count_params() - functional.count_params() == added
    assert _rounds(grown) == _rounds(in_place)
    assert abs(fixed_batch_loss(grown, x, y) - loss_before) < 1e-5
    expected = values_by_path(in_place.variables)
    actual = values_by_path(grown.variables)
    assert actual.keys() == expected.keys()
    for path, value in expected.items():
        np.testing.assert_allclose(actual[path], value, atol=1e-7, err_msg=path)
    expected = _slots(in_place.optimizer)
    actual = _slots(grown.optimizer)
    assert actual.keys() == expected.keys()
    for path, value in expected.items():
        np.testing.assert_allclose(actual[path], value, atol=1e-7, err_msg=path)
    assert int(grown.optimizer.iterations) == 8

    in_place.fit(x, y, batch_size=8, epochs=1, verbose=0, shuffle=False)
    grown.fit(x, y, batch_size=8, epochs=1, verbose=0, shuffle=False)
    for path, value in values_by_path(in_place.variables).items():
        np.testing.assert_allclose(
            values_by_path(grown.variables)[path], value, atol=1e-5
        )


def test_rebuild_keeps_compile_arguments_and_new_weights_train(rng):
    # Neither depends on the model around the grown layer: one
    # `GrowableDense`, whose unjitted steps (op by op on JAX) are few.
    x = rng.normal(size=(16, 16)).astype("float32")
    y = rng.integers(0, 10, 16)
    inputs = keras.Input((16,))
    outputs = GrowableDense(10, activation="gelu", name="dense")(inputs)
    model = keras.Model(inputs, outputs)
    model.compile(
        keras.optimizers.Adam(1e-3),
        keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
        jit_compile=False,
    )
    model.fit(x, y, batch_size=16, epochs=1, verbose=0)
    grown = rebuild_grown_model(model, {"dense": [1, 4]}, scale=0.5)
    assert grown.optimizer is model.optimizer
    assert compile_arguments(grown)["jit_compile"] is False
    kernel = next(
        v for v in grown.variables if v.path.endswith("growth_kernel_plus")
    )
    (dense,) = growable_layers(grown)
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(kernel),
        keras.ops.convert_to_numpy(dense.kernel)[:, [1, 4]] * 0.5,
        rtol=1e-6,
    )
    start = keras.ops.convert_to_numpy(kernel).copy()
    grown.fit(x, y, batch_size=16, epochs=1, verbose=0)
    assert not np.allclose(keras.ops.convert_to_numpy(kernel), start)
    assert "accuracy" in grown.get_metrics_result()


def test_rebuild_of_uncompiled_model_and_empty_plan():
    model = compiled_tiny_vit()
    assert rebuild_grown_model(model, {}) is model
    uncompiled = keras.Model.from_config(model.get_config())
    grown = rebuild_grown_model(uncompiled, PLAN)
    assert not grown.compiled
    with pytest.raises(ValueError, match="must be compiled"):
        compile_arguments(uncompiled)


@pytest.mark.parametrize(
    "plan, scale, match",
    [
        ({"head": [0]}, 0.2, "not a growable"),
        ({"block_0_mlp_fc1": [99]}, 0.2, "units="),
        (PLAN, 0.0, "scale"),
    ],
)
def test_rebuild_rejects_bad_input_and_leaves_model(plan, scale, match):
    model = compiled_tiny_vit()
    params = model.count_params()
    with pytest.raises(ValueError, match=match):
        rebuild_grown_model(model, plan, scale=scale)
    assert model.count_params() == params
