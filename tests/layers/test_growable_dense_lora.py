"""LoRA on GrowableDense, inherited from `keras.layers.Dense`."""

import os

import keras
import numpy as np
import pytest
from keras import ops

from keras_depthhet.layers import GrowableDense


def _np(x):
    return ops.convert_to_numpy(x)


def _grown_with_lora(rng):
    layer = GrowableDense(6, activation="gelu", bias_initializer="ones")
    layer.build((None, 4))
    layer.grow([1, 4])
    for variable in layer.weights:
        if "growth_" in variable.path:
            variable.assign(rng.normal(size=variable.shape).astype("float32"))
    layer.enable_lora(2)
    layer.lora_kernel_b.assign(rng.normal(size=(2, 6)).astype("float32"))
    return layer


def test_lora_output_is_the_grown_layer_with_the_delta_in_the_kernel(rng):
    x = rng.normal(size=(5, 4)).astype("float32")
    layer = _grown_with_lora(rng)
    delta = _np(layer.lora_kernel_a) @ _np(layer.lora_kernel_b)
    reference = GrowableDense(6, activation="gelu", growth_rounds=[[1, 4]])
    reference.build((None, 4))
    weights = {v.name: _np(v) for v in layer.weights}
    weights["kernel"] = weights["kernel"] + delta * layer.lora_alpha / 2
    reference.set_weights([weights[v.name] for v in reference.weights])
    np.testing.assert_allclose(
        _np(layer(x)), _np(reference(x)), rtol=1e-5, atol=1e-5
    )
    assert [v.name for v in layer.trainable_weights if "lora" in v.name] == [
        "lora_kernel_a",
        "lora_kernel_b",
    ]
    assert [v.name for v in layer.non_trainable_weights] == ["kernel"]


def test_lora_layer_saves_the_merged_kernel_and_round_trips(rng, tmp_path):
    x = rng.normal(size=(5, 4)).astype("float32")
    layer = _grown_with_lora(rng)
    model = keras.Sequential([keras.Input((4,)), layer])
    expected = _np(model(x))
    path = os.path.join(tmp_path, "lora.keras")
    model.save(path)
    loaded = keras.saving.load_model(path)
    np.testing.assert_allclose(_np(loaded(x)), expected, rtol=1e-5, atol=1e-5)
    assert loaded.layers[-1].get_config()["lora_rank"] == 2
    assert loaded.layers[-1].growth_rounds[0].tolist() == [1, 4]


def test_lora_and_int8_or_growth_are_refused(rng):
    layer = _grown_with_lora(rng)
    with pytest.raises(ValueError, match="LoRA enabled.*grow"):
        layer.grow([0])
    with pytest.raises(ValueError, match="LoRA enabled.*mode='int8'"):
        layer.quantize("int8")
    assert layer.quantization_mode is None
    quantized = GrowableDense(6)
    quantized.build((None, 4))
    quantized.quantize("int8")
    with pytest.raises(ValueError, match="quantized.*rank=2"):
        quantized.enable_lora(2)
    assert not quantized.lora_enabled
