"""Growth pairs packed into one set of variables per layer.

Each round widens the layer's four pair variables instead of adding four
more, so the number of variables (and the optimizer's per-variable work)
does not grow with the number of events. These tests check what packing
must keep: the function, the optimizer state of the old columns, and the
loading of files saved when every round had its own variables.
"""

import os

import keras
import numpy as np
import pytest

from keras_depthhet.growth import grow_model, rebuild_grown_model
from keras_depthhet.layers import GrowableDense

DATA = os.path.join(os.path.dirname(__file__), "data")


def _np(x):
    return keras.ops.convert_to_numpy(x)


def _per_round_expected():
    expected = np.load(os.path.join(DATA, "per_round_expected.npz"))
    return expected["x"], expected["y"]


def test_keras_file_saved_with_per_round_variables_loads():
    x, y = _per_round_expected()
    model = keras.saving.load_model(os.path.join(DATA, "per_round.keras"))
    np.testing.assert_allclose(_np(model(x)), y, rtol=1e-5, atol=1e-6)
    a = model.get_layer("a")
    assert [r.tolist() for r in a.growth_rounds] == [[0, 3], [3], [1, 4, 2]]
    assert sorted(v.name for v in a.weights) == sorted(
        ["kernel", "bias"]
        + [f"growth_{s}" for s in ("kernel_plus", "kernel_minus")]
        + [f"growth_{s}" for s in ("bias_plus", "bias_minus")]
    )
    assert a._growth["kernel_plus"].shape == (6, 6)


def test_weights_file_saved_with_per_round_variables_loads(tmp_path):
    x, y = _per_round_expected()
    model = keras.saving.load_model(os.path.join(DATA, "per_round.keras"))
    for variable in model.weights:
        variable.assign(np.zeros(variable.shape, "float32"))
    model.load_weights(os.path.join(DATA, "per_round.weights.h5"))
    np.testing.assert_allclose(_np(model(x)), y, rtol=1e-5, atol=1e-6)
    # Saved again, packed, it still computes the same.
    model.save(tmp_path / "packed.keras")
    loaded = keras.saving.load_model(tmp_path / "packed.keras")
    np.testing.assert_allclose(_np(loaded(x)), y, rtol=1e-5, atol=1e-6)


def test_per_round_file_loads_into_a_model_grown_further():
    x, y = _per_round_expected()
    model = keras.saving.load_model(os.path.join(DATA, "per_round.keras"))
    grow_model(model, {"a": [0, 1], "b": [1]})
    model.load_weights(os.path.join(DATA, "per_round.weights.h5"))
    np.testing.assert_allclose(_np(model(x)), y, rtol=1e-5, atol=1e-6)
    a = model.get_layer("a")
    plus, minus = _np(a._growth["kernel_plus"]), _np(a._growth["kernel_minus"])
    np.testing.assert_allclose(
        plus[:, 6:], 0.2 * _np(a.kernel)[:, [0, 1]], rtol=1e-6
    )
    np.testing.assert_array_equal(plus[:, 6:] + minus[:, 6:], 0)


def test_per_round_file_of_another_history_is_refused():
    model = keras.saving.load_model(os.path.join(DATA, "per_round.keras"))
    config = model.get_config()
    config["layers"][1]["config"]["growth_rounds"] = [[0, 3], [4], [1, 4, 2]]
    other = keras.Model.from_config(config)
    with pytest.raises(ValueError, match="grew other neurons"):
        other.load_weights(os.path.join(DATA, "per_round.weights.h5"))


def test_rounds_share_one_set_of_variables_and_compute_per_round():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(4, 6)).astype("float32")
    layer = GrowableDense(5, activation="gelu", bias_initializer="ones")
    before = _np(layer(x))
    rounds = [[0, 3], [3], [1, 4, 2], [3, 0]]
    for indices in rounds:
        layer.grow(indices)
        np.testing.assert_allclose(_np(layer(x)), before, atol=1e-5)
    assert len(layer.weights) == 2 + 4
    kernel, bias = _np(layer.kernel), _np(layer.bias)
    targets = [i for indices in rounds for i in indices]
    np.testing.assert_allclose(
        _np(layer._growth["kernel_plus"]), 0.2 * kernel[:, targets]
    )
    np.testing.assert_allclose(
        _np(layer._growth["bias_minus"]), -0.2 * bias[targets]
    )
    assert layer._round_columns(2) == slice(3, 6)


def _tiny_fc1_model(optimizer):
    """An MLP of two `GrowableDense` layers (16 -> 8 -> 10), fitted once.

    Packing is a matter of the layer and the optimizer's slots, not of the
    model around them; the MLP compiles its train step in a fraction of a
    ViT's time.
    """
    inputs = keras.Input((16,))
    hidden = GrowableDense(8, activation="gelu", name="fc1")(inputs)
    outputs = GrowableDense(10, name="fc2")(hidden)
    model = keras.Model(inputs, outputs)
    model.compile(
        optimizer,
        keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    rng = np.random.default_rng(0)
    x = rng.normal(size=(32, 16)).astype("float32")
    y = rng.integers(0, 10, 32)
    model.fit(x, y, batch_size=8, epochs=1, verbose=0)
    return model, x, y


def _slots_of(optimizer, variable):
    """The optimizer's slot values aligned with `variable`, by name."""
    from keras_depthhet.utils.keras_internals import optimizer_slots

    variables, slots = optimizer_slots(optimizer)
    i = next(j for j, v in enumerate(variables) if v is variable)
    return {
        name: _np(values[i]).copy()
        for name, values in slots.items()
        if values[i] is not None
    }


@pytest.mark.parametrize("route", ["in_place", "rebuild"])
def test_a_second_round_keeps_the_old_columns_optimizer_state(route):
    model, x, y = _tiny_fc1_model(keras.optimizers.Adam(1e-2, use_ema=True))
    grow_model(model, {"fc1": [1, 4]})
    model.fit(x, y, batch_size=8, epochs=1, verbose=0)
    layer = model.get_layer("fc1")
    old = layer._growth["kernel_plus"]
    slots = _slots_of(model.optimizer, old)
    assert np.abs(slots["_momentums"]).max() > 0
    if route == "in_place":
        grow_model(model, {"fc1": [4, 7, 0]})
        grown = model
    else:
        grown = rebuild_grown_model(model, {"fc1": [4, 7, 0]})
    layer = grown.get_layer("fc1")
    new = layer._growth["kernel_plus"]
    assert new is not old and tuple(new.shape) == (16, 5)
    after = _slots_of(grown.optimizer, new)
    for name in ("_momentums", "_velocities"):
        np.testing.assert_array_equal(after[name][:, :2], slots[name])
        np.testing.assert_array_equal(after[name][:, 2:], 0)
    # The moving average: old columns kept, new ones start at the weights.
    ema = after["_model_variables_moving_average"]
    np.testing.assert_array_equal(
        ema[:, :2], slots["_model_variables_moving_average"]
    )
    np.testing.assert_array_equal(ema[:, 2:], _np(new)[:, 2:])
    assert len(grown.trainable_variables) == len(model.trainable_variables)
    grown.fit(x, y, batch_size=8, epochs=1, verbose=0)
    assert np.abs(_np(new)[:, 2:] - after["_model_variables_moving_average"][
        :, 2:
    ]).max() > 0


def test_new_columns_of_adagrad_start_at_its_initial_accumulator():
    model, x, y = _tiny_fc1_model(
        keras.optimizers.Adagrad(0.1, initial_accumulator_value=0.3)
    )
    grow_model(model, {"fc1": [1, 4]})
    model.fit(x, y, batch_size=8, epochs=1, verbose=0)
    layer = model.get_layer("fc1")
    before = _slots_of(model.optimizer, layer._growth["bias_plus"])
    grow_model(model, {"fc1": [2]})
    after = _slots_of(model.optimizer, layer._growth["bias_plus"])
    (name,) = after
    np.testing.assert_array_equal(after[name][:2], before[name])
    assert before[name].min() > 0.3  # trained
    np.testing.assert_allclose(after[name][2:], 0.3)


def test_the_number_of_variables_does_not_grow_with_events():
    model, x, y = _tiny_fc1_model(keras.optimizers.Adam(1e-3))
    plan = {"fc1": [1, 4], "fc2": [0]}
    grow_model(model, plan)
    counts = (len(model.trainable_variables), len(model.optimizer.variables))
    for _ in range(3):
        model.fit(x, y, batch_size=8, epochs=1, verbose=0)
        grow_model(model, plan)
        assert (
            len(model.trainable_variables),
            len(model.optimizer.variables),
        ) == counts
    assert model.get_layer("fc1").num_grown == 8


def test_best_weights_of_an_earlier_round_load_with_the_optimizer_kept(
    tmp_path,
):
    model, x, y = _tiny_fc1_model(keras.optimizers.Adam(1e-2))
    grow_model(model, {"fc1": [1, 4]})
    model.fit(x, y, batch_size=8, epochs=1, verbose=0)
    path = tmp_path / "best.weights.h5"
    model.save_weights(path)
    best = model.predict(x, verbose=0)
    grow_model(model, {"fc1": [0, 2, 3]})
    model.fit(x, y, batch_size=8, epochs=1, verbose=0)
    slots = [_np(v).copy() for v in model.optimizer.variables]
    with pytest.warns(UserWarning, match="has grown since"):
        model.load_weights(path)
    np.testing.assert_allclose(
        model.predict(x, verbose=0), best, rtol=1e-5, atol=1e-6
    )
    for value, variable in zip(slots, model.optimizer.variables, strict=True):
        np.testing.assert_array_equal(_np(variable), value)
