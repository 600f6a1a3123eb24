"""Int8 quantization of GrowableDense: outputs, training, saving, refusals.

The int8 base matmul is checked against Keras's own `Dense` in int8 mode
with the same weights; the float growth branch against the float layer.
"""

import gc
import os
import warnings

import keras
import numpy as np
import pytest
from keras import ops

from keras_depthhet import GrowthCallback
from keras_depthhet.growth import grow_model
from keras_depthhet.layers import GrowableDense
from keras_depthhet.models import growable_layers, vit

ROUNDS = [[1, 5, 7], [5], [0, 2]]
VIT = dict(
    image_size=8,
    patch_size=4,
    num_channels=1,
    num_classes=5,
    dim=16,
    depth=1,
    num_heads=2,
)
VIT_PLAN = {"block_0_mlp_fc1": [0, 5], "block_0_attn_qkv": [1]}


@pytest.fixture(autouse=True)
def _no_full_collection_per_deleted_variable(monkeypatch):
    """Keras's `Layer.__delattr__` runs a full `gc.collect()` for every
    variable it deletes, and `quantize` deletes each float kernel: in a
    process holding a backend's modules, about half a second each, most
    of these tests' time. Deleting is what is tested, not collecting."""
    monkeypatch.setattr(gc, "collect", lambda generation=2: 0)


def _np(x):
    return ops.convert_to_numpy(x)


def _randomize_growth(model_or_layer, rng):
    """Moves the pairs apart so that the growth branch is not zero."""
    for variable in model_or_layer.weights:
        if "growth_" in variable.path:
            noise = rng.normal(scale=0.3, size=variable.shape)
            variable.assign(noise.astype("float32"))


def _grown(rng, rounds=ROUNDS, use_bias=True, activation="gelu", d=8):
    layer = GrowableDense(
        16,
        activation=activation,
        use_bias=use_bias,
        bias_initializer="random_normal",
    )
    layer.build((None, d))
    for indices in rounds:
        layer.grow(indices)
    _randomize_growth(layer, rng)
    return layer


def _int8_dense_reference(layer, x):
    """Keras's int8 `Dense` with the layer's kernel (and no bias)."""
    dense = keras.layers.Dense(layer.units, use_bias=False)
    dense.build((None, x.shape[-1]))
    dense.set_weights([_np(layer.kernel)])
    dense.quantize("int8")
    return _np(dense(x))


def _names(layer):
    return [(v.name, str(v.dtype), v.trainable) for v in layer.weights]


@pytest.mark.parametrize("rounds", [[], ROUNDS])
@pytest.mark.parametrize("use_bias", [True, False])
@pytest.mark.parametrize("shape", [(6, 8), (2, 3, 8)])
def test_int8_output_is_dense_int8_plus_float_growth_branch(
    rng, rounds, use_bias, shape
):
    x = rng.normal(size=shape).astype("float32")
    layer = _grown(rng, rounds, use_bias=use_bias)
    float_out = _np(layer(x))
    float_z = _np(layer.preactivation(x))
    base = x @ _np(layer.kernel)
    branch = float_z - base  # bias + growth branch, in float
    reference = _np(
        keras.activations.gelu(_int8_dense_reference(layer, x) + branch)
    )

    layer.quantize("int8")

    out = _np(layer(x))
    np.testing.assert_allclose(out, reference, rtol=1e-5, atol=1e-5)
    # The tolerance of Keras's own `Dense` int8 test.
    assert np.mean((out - float_out) ** 2) < 1e-3
    assert str(layer.dtype_policy.name) == "int8_from_float32"
    weights = {
        name: (dtype, trainable) for name, dtype, trainable in _names(layer)
    }
    assert weights["kernel"] == ("int8", False)
    assert weights["kernel_scale"] == ("float32", False)
    growth = [n for n in weights if n.startswith("growth_")]
    # One packed set of pair variables, whatever the number of rounds.
    assert len(growth) == (4 if use_bias else 2) * (len(rounds) > 0)
    assert all(weights[n] == ("float32", True) for n in growth)


def test_int8_under_mixed_bfloat16(rng):
    x = rng.normal(size=(6, 8)).astype("float32")
    layer = GrowableDense(16, activation="gelu", dtype="mixed_bfloat16")
    layer.build((None, 8))
    layer.grow([1, 2])
    _randomize_growth(layer, rng)
    float_out = _np(ops.cast(layer(x), "float32"))
    layer.quantize("int8")
    assert layer.dtype_policy.name == "int8_from_mixed_bfloat16"
    out = layer(x)
    assert keras.backend.standardize_dtype(out.dtype) == "bfloat16"
    assert np.mean((_np(ops.cast(out, "float32")) - float_out) ** 2) < 1e-3
    assert all(
        str(v.dtype) == "float32" for v in layer.weights if v.name != "kernel"
    )


def test_training_moves_bias_and_pairs_not_the_int8_kernel(rng):
    x = rng.normal(size=(8, 8)).astype("float32")
    layer = _grown(rng)
    layer.quantize("int8")
    model = keras.Sequential([keras.Input((8,)), layer])
    model.compile(keras.optimizers.SGD(0.1), "mse")
    before = {v.name: _np(v) for v in layer.weights}
    model.fit(x, np.zeros((8, 16), "float32"), epochs=1, verbose=0)
    after = {v.name: _np(v) for v in layer.weights}
    np.testing.assert_array_equal(after["kernel"], before["kernel"])
    np.testing.assert_array_equal(after["kernel_scale"], before["kernel_scale"])
    for name in ("bias", "growth_kernel_plus", "growth_bias_minus"):
        assert np.abs(after[name] - before[name]).max() > 1e-4, name


def test_input_gradient_uses_the_dequantized_kernel(rng):
    x = rng.normal(size=(5, 8)).astype("float32")
    layer = GrowableDense(6)
    layer.build((None, 8))
    layer.quantize("int8")
    upstream = rng.normal(size=(5, 6)).astype("float32")
    dequantized = _np(layer.kernel).astype("float32") / _np(layer.kernel_scale)
    if keras.backend.backend() == "jax":
        import jax

        grad = jax.grad(lambda t: (layer(t) * upstream).sum())(x)
    else:
        import tensorflow as tf

        t = tf.constant(x)
        with tf.GradientTape() as tape:
            tape.watch(t)
            loss = tf.reduce_sum(layer(t) * upstream)
        grad = tape.gradient(loss, t)
    np.testing.assert_allclose(
        _np(grad), upstream @ dequantized.T, rtol=1e-5, atol=1e-5
    )


def test_quantized_grown_layer_round_trips(rng, tmp_path):
    x = rng.normal(size=(4, 8)).astype("float32")
    layer = _grown(rng)
    layer.quantize("int8")
    model = keras.Sequential([keras.Input((8,)), layer])
    expected = model.predict(x, verbose=0)

    path = os.path.join(tmp_path, "model.keras")
    model.save(path)
    loaded = keras.saving.load_model(path)
    np.testing.assert_array_equal(loaded.predict(x, verbose=0), expected)
    assert loaded.layers[-1].dtype_policy.name == "int8_from_float32"

    path = os.path.join(tmp_path, "model.weights.h5")
    model.save_weights(path)
    fresh = GrowableDense(16, activation="gelu", growth_rounds=ROUNDS)
    other = keras.Sequential([keras.Input((8,)), fresh])
    other.quantize("int8")
    other.load_weights(path)
    np.testing.assert_array_equal(other.predict(x, verbose=0), expected)

    config = layer.get_config()
    clone = GrowableDense.from_config(config)
    clone.build((None, 8))
    assert clone.get_config() == config
    assert _names(clone) == _names(layer)
    clone.set_weights(layer.get_weights())
    np.testing.assert_array_equal(_np(clone(x)), _np(layer(x)))


def test_config_keeps_a_weight_only_quantization_config(rng):
    x = rng.normal(size=(4, 8)).astype("float32")
    layer = _grown(rng)
    config = keras.quantizers.Int8QuantizationConfig(activation_quantizer=None)
    layer.quantize("int8", config=config)
    assert layer.inputs_quantizer is None
    clone = GrowableDense.from_config(layer.get_config())
    clone.build((None, 8))
    assert clone.inputs_quantizer is None
    clone.set_weights(layer.get_weights())
    np.testing.assert_array_equal(_np(clone(x)), _np(layer(x)))


def test_quantized_file_of_fewer_rounds_loads_with_zero_sum_pairs(
    rng, tmp_path
):
    x = rng.normal(size=(4, 8)).astype("float32")
    saved = _grown(rng, ROUNDS[:1])
    saved.quantize("int8")
    path = os.path.join(tmp_path, "early.weights.h5")
    keras.Sequential([keras.Input((8,)), saved]).save_weights(path)

    grown = GrowableDense(16, activation="gelu", growth_rounds=ROUNDS)
    model = keras.Sequential([keras.Input((8,)), grown])
    model.quantize("int8")
    model.load_weights(path)
    np.testing.assert_allclose(_np(grown(x)), _np(saved(x)), atol=1e-6)
    weights = {v.name: _np(v) for v in grown.weights}
    # Rounds 1 and 2, after round 0's pairs, start as zero-sum pairs.
    later = slice(len(ROUNDS[0]), None)
    pair = weights["growth_kernel_plus"][:, later]
    assert np.abs(pair).max() > 0
    np.testing.assert_array_equal(
        pair + weights["growth_kernel_minus"][:, later], 0
    )

    shorter = GrowableDense(16, activation="gelu")
    model = keras.Sequential([keras.Input((8,)), shorter])
    model.quantize("int8")
    with pytest.raises(ValueError, match="grown further"):
        model.load_weights(path)
    other = GrowableDense(16, activation="gelu", growth_rounds=[[1, 5, 6]])
    model = keras.Sequential([keras.Input((8,)), other])
    model.quantize("int8")
    with pytest.raises(ValueError, match="another growth history"):
        model.load_weights(path)


def test_float_and_int8_files_between_float_and_quantized_layers(rng, tmp_path):
    x = rng.normal(size=(4, 8)).astype("float32")
    float_layer = _grown(rng, ROUNDS[:1])
    float_model = keras.Sequential([keras.Input((8,)), float_layer])
    float_path = os.path.join(tmp_path, "float.weights.h5")
    float_model.save_weights(float_path)
    float_model.quantize("int8")
    int8_path = os.path.join(tmp_path, "int8.weights.h5")
    float_model.save_weights(int8_path)

    target = GrowableDense(16, activation="gelu", growth_rounds=ROUNDS[:1])
    model = keras.Sequential([keras.Input((8,)), target])
    model.quantize("int8")
    before = _names(target)
    with pytest.raises(ValueError, match="hold a float kernel"):
        model.load_weights(float_path)
    assert _names(target) == before

    # A float layer (e.g. rebuilt inside a ViT block) takes an int8 file.
    target = GrowableDense(16, activation="gelu", growth_rounds=ROUNDS[:1])
    model = keras.Sequential([keras.Input((8,)), target])
    model.load_weights(int8_path)
    assert target.dtype_policy.name == "int8_from_float32"
    np.testing.assert_array_equal(_np(target(x)), _np(float_layer(x)))

    # A refused int8 file leaves a float layer float.
    target = GrowableDense(16, activation="gelu")
    model = keras.Sequential([keras.Input((8,)), target])
    with pytest.raises(ValueError, match="grown further"):
        model.load_weights(int8_path)
    assert target.dtype_policy.name == "float32"
    assert [v.name for v in target.weights] == ["kernel", "bias"]


@pytest.mark.parametrize("mode", ["int4", "float8"])
def test_other_modes_are_refused_and_change_nothing(rng, mode):
    x = rng.normal(size=(4, 8)).astype("float32")
    layer = _grown(rng)
    before, names = _np(layer(x)), _names(layer)
    message = f"'{layer.name}'.*only int8.*mode='{mode}'"
    with pytest.raises(ValueError, match=message):
        layer.quantize(mode)
    with pytest.raises(ValueError, match=message):
        layer.dtype_policy = f"{mode}_from_float32"
    assert layer.dtype_policy.name == "float32"
    assert _names(layer) == names
    np.testing.assert_array_equal(_np(layer(x)), before)

    built_quantized = GrowableDense(4, dtype=f"{mode}_from_float32")
    with pytest.raises(ValueError, match=f"mode='{mode}'"):
        built_quantized.build((None, 8))


def test_growth_of_a_quantized_layer_is_refused(rng):
    layer = _grown(rng)
    layer.quantize("int8")
    names = _names(layer)
    for grow in (layer.grow, layer._grow):
        with pytest.raises(ValueError, match="Quantize after growth"):
            grow([3])
    assert _names(layer) == names
    assert len(layer.growth_rounds) == len(ROUNDS)


@pytest.mark.slow
def test_quantized_vit(rng, tmp_path):
    x = rng.normal(size=(3, 8, 8, 1)).astype("float32")
    model = vit(**VIT)
    grow_model(model, VIT_PLAN)
    _randomize_growth(model, rng)
    float_out = model.predict(x, verbose=0)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model.quantize("int8")
    assert not [w for w in caught if "GrowableDense" in str(w.message)]
    layers = growable_layers(model)
    assert len(layers) == 4
    assert all(la.dtype_policy.name == "int8_from_float32" for la in layers)
    out = model.predict(x, verbose=0)
    assert np.mean((out - float_out) ** 2) < 1e-3

    path = os.path.join(tmp_path, "vit.keras")
    model.save(path)
    loaded = keras.saving.load_model(path)
    np.testing.assert_array_equal(loaded.predict(x, verbose=0), out)
    assert all(
        la.dtype_policy.name == "int8_from_float32"
        for la in growable_layers(loaded)
    )

    path = os.path.join(tmp_path, "vit.weights.h5")
    model.save_weights(path)
    other = vit(**VIT)
    grow_model(other, VIT_PLAN)
    other.quantize("int8")
    other.load_weights(path)
    np.testing.assert_array_equal(other.predict(x, verbose=0), out)

    # Every route that grows refuses; the model is left as it was.
    with pytest.raises(ValueError, match="Quantize after growth"):
        grow_model(model, {"block_0_mlp_fc1": [1]})
    model.compile("sgd", "sparse_categorical_crossentropy")
    callback = GrowthCallback(warmup=1, interval=1, criterion="random")
    with pytest.raises(ValueError, match="Quantize after growth"):
        model.fit(x, np.zeros(3), epochs=1, callbacks=[callback], verbose=0)
    np.testing.assert_array_equal(model.predict(x, verbose=0), out)


def test_other_mode_on_a_vit_is_refused_before_any_layer_changes():
    model = vit(**VIT)
    with pytest.raises(ValueError, match="only int8.*mode='int4'"):
        model.quantize("int4")
    assert all(la.quantization_mode is None for la in model._flatten_layers())
