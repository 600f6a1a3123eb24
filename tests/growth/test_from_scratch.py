"""`fresh_model`: a grown architecture with fresh weights."""

import keras
import numpy as np
import pytest

from keras_depthhet.growth import grow_model
from keras_depthhet.growth.from_scratch import PAIR_SCALE, fresh_model
from keras_depthhet.models.vit import growable_layer_map
from tests.growth.helpers import random_data, tiny_vit

PLANS = (
    {"block_0_mlp_fc1": [0, 3, 5], "block_1_attn_qkv": [1, 2]},
    {"block_0_mlp_fc1": [3], "block_1_attn_proj": [0]},
)
"""Two growth rounds; neuron 3 of `block_0_mlp_fc1` grows in both."""


def _numpy(variable):
    return keras.ops.convert_to_numpy(variable)


@pytest.fixture(scope="module")
def grown():
    model = tiny_vit()
    for plan in PLANS:
        grow_model(model, plan)
    return model


def _rounds(model) -> dict:
    return {
        name: [r.tolist() for r in layer.growth_rounds]
        for name, layer in growable_layer_map(model).items()
    }


def test_same_architecture_and_parameter_count(grown):
    fresh = fresh_model(grown, seed=3)
    assert fresh.count_params() == grown.count_params()
    assert _rounds(fresh) == _rounds(grown)
    assert _rounds(fresh)["block_0_mlp_fc1"] == [[0, 3, 5], [3]]
    assert [v.path for v in fresh.weights] == [v.path for v in grown.weights]
    assert not fresh.compiled


def test_every_weight_is_fresh_and_no_pair_sums_to_zero(grown):
    fresh = fresh_model(grown, seed=3)
    for new, old in zip(fresh.weights, grown.weights, strict=True):
        values = _numpy(new)
        if np.any(values != values.flat[0]):  # a random draw, not a constant
            assert not np.allclose(values, _numpy(old)), new.path
    pairs = 0
    for name, layer in growable_layer_map(fresh).items():
        variables = layer._growth
        if variables:
            pair_sum = _numpy(variables["kernel_plus"]) + _numpy(
                variables["kernel_minus"]
            )
            # Every pair's summed column is a fresh, non-zero neuron.
            assert np.all(np.abs(pair_sum).max(axis=0) > 1e-3), name
            assert not np.allclose(
                _numpy(variables["kernel_plus"]),
                _numpy(variables["kernel_minus"]),
            )
            pairs += pair_sum.shape[1]
    assert pairs == 3 + 2 + 1 + 1


def test_pair_sum_has_the_spread_of_a_fresh_kernel_column():
    """Against an independent reference: the base kernel's own draws."""
    model = tiny_vit(depth=1)
    indices = list(range(32))
    grow_model(model, {"block_0_mlp_fc1": indices})
    grow_model(model, {"block_0_mlp_fc1": indices})
    fresh = fresh_model(model, seed=0)
    layer = growable_layer_map(fresh)["block_0_mlp_fc1"]
    growth = layer._growth
    sums = _numpy(growth["kernel_plus"]) + _numpy(growth["kernel_minus"])
    kernel = _numpy(layer.kernel)
    assert sums.shape == (16, 64) and kernel.shape == (16, 32)
    # 1,024 draws each: the standard deviations agree to about 5 %.
    assert np.std(sums) == pytest.approx(np.std(kernel), rel=0.15)
    assert abs(np.mean(sums)) < 0.1 * np.std(kernel)
    assert PAIR_SCALE == pytest.approx(2**-0.5)


def test_seed_makes_it_reproducible(grown):
    first = [_numpy(v) for v in fresh_model(grown, seed=7).weights]
    again = [_numpy(v) for v in fresh_model(grown, seed=7).weights]
    other = [_numpy(v) for v in fresh_model(grown, seed=8).weights]
    assert all(np.array_equal(a, b) for a, b in zip(first, again, strict=True))
    assert not all(
        np.array_equal(a, b) for a, b in zip(first, other, strict=True)
    )


def test_keras_file_round_trip_and_build_from_config_or_file(grown, tmp_path):
    fresh = fresh_model(grown, seed=1)
    x, _ = random_data(4)
    path = tmp_path / "fresh.keras"
    fresh.save(path)
    loaded = keras.saving.load_model(path)
    np.testing.assert_allclose(
        loaded.predict(x, verbose=0), fresh.predict(x, verbose=0), atol=1e-6
    )
    assert _rounds(loaded) == _rounds(grown)
    grown_path = tmp_path / "grown.keras"
    grown.save(grown_path)
    sources = (
        grown.get_config(),
        keras.saving.serialize_keras_object(grown),
        grown_path,
        str(grown_path),
    )
    for source in sources:
        model = fresh_model(source, seed=1)
        assert model.count_params() == grown.count_params()
        assert _rounds(model) == _rounds(grown)


def test_a_fresh_model_trains(grown):
    fresh = fresh_model(grown, seed=2)
    fresh.compile(
        keras.optimizers.Adam(1e-2),
        keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    x, y = random_data(64)
    before = fresh.evaluate(x, y, verbose=0)
    fresh.fit(x, y, epochs=5, batch_size=16, verbose=0)
    assert fresh.evaluate(x, y, verbose=0) < before
    plus = growable_layer_map(fresh)["block_0_mlp_fc1"]._growth
    assert np.all(np.isfinite(_numpy(plus["kernel_plus"])))


def test_bad_arguments(tmp_path):
    with pytest.raises(ValueError, match="model_or_config of type int"):
        fresh_model(3)
    with pytest.raises(ValueError, match=r"model_or_config='.*missing\.keras'"):
        fresh_model(str(tmp_path / "missing.keras"))
    not_a_zip = tmp_path / "broken.keras"
    not_a_zip.write_text("not a zip")
    with pytest.raises(ValueError, match="is not a `.keras` file"):
        fresh_model(not_a_zip)
    with pytest.raises(ValueError, match="seed=-1"):
        fresh_model(tiny_vit(1), seed=-1)
