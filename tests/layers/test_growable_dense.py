import keras
import numpy as np
import pytest
from keras import ops

from keras_depthhet.layers import GrowableDense
from keras_depthhet.layers.growable_dense import GROWTH_SCALE


def _built(units=12, d=7, **kwargs):
    layer = GrowableDense(units, **kwargs)
    layer.build((None, d))
    return layer


def _np(x):
    return ops.convert_to_numpy(x)


@pytest.mark.parametrize("shape", [(5, 7), (3, 4, 7), (2, 3, 2, 7)])
@pytest.mark.parametrize("activation", [None, "gelu", "relu"])
@pytest.mark.parametrize("use_bias", [True, False])
def test_ungrown_layer_matches_dense(rng, shape, activation, use_bias):
    x = rng.normal(size=shape).astype("float32")
    layer = GrowableDense(12, activation=activation, use_bias=use_bias)
    dense = keras.layers.Dense(12, activation=activation, use_bias=use_bias)
    y = layer(x)
    dense(x)
    assert [w.shape for w in dense.get_weights()] == [
        w.shape for w in layer.get_weights()
    ]
    dense.set_weights(layer.get_weights())
    np.testing.assert_allclose(_np(y), _np(dense(x)), rtol=1e-6, atol=1e-6)
    assert layer.compute_output_shape(shape) == shape[:-1] + (12,)
    assert layer.count_params() == dense.count_params()


@pytest.mark.parametrize("shape", [(6, 9), (4, 5, 9)])
@pytest.mark.parametrize("activation", [None, "gelu"])
@pytest.mark.parametrize("use_bias", [True, False])
def test_growth_preserves_function_and_counts_parameters(
    rng, shape, activation, use_bias
):
    x = rng.normal(size=shape).astype("float32")
    layer = GrowableDense(
        10,
        activation=activation,
        use_bias=use_bias,
        bias_initializer="random_normal",
    )
    before = _np(layer(x))
    params = layer.count_params()
    d = shape[-1]
    per_neuron = 2 * (d + 1) if use_bias else 2 * d
    # Neurons 1 and 4 are chosen in several rounds; the last round is all.
    for indices in ([1, 4, 7], [4], [0, 1, 2, 3, 4, 5, 6, 7, 8, 9], [1, 4]):
        added = layer.grow(indices)
        assert added == per_neuron * len(indices)
        assert layer.count_params() == params + added
        params += added
        np.testing.assert_allclose(_np(layer(x)), before, atol=1e-5)
    assert [r.tolist() for r in layer.growth_rounds] == [
        [1, 4, 7],
        [4],
        list(range(10)),
        [1, 4],
    ]
    assert layer.num_grown == 16


def test_growth_initialisation_follows_the_scale(rng):
    layer = _built(units=6, d=4, bias_initializer="random_normal")
    kernel, bias = _np(layer.kernel), _np(layer.bias)
    layer.grow(np.array([5, 2]), scale=0.5)
    weights = {v.name: _np(v) for v in layer.weights}
    np.testing.assert_allclose(
        weights["growth_kernel_plus"], 0.5 * kernel[:, [5, 2]]
    )
    np.testing.assert_allclose(
        weights["growth_kernel_minus"], -0.5 * kernel[:, [5, 2]]
    )
    np.testing.assert_allclose(
        weights["growth_bias_plus"], 0.5 * bias[[5, 2]]
    )
    np.testing.assert_allclose(
        weights["growth_bias_minus"], -0.5 * bias[[5, 2]]
    )
    assert GROWTH_SCALE == 0.2


def _reference_preactivation(x, layer):
    """The Method page's formula, one neuron and round at a time, NumPy."""
    weights = {v.name: _np(v).astype("float64") for v in layer.weights}
    x = x.astype("float64")
    z = x @ weights["kernel"] + weights["bias"]
    from scipy.special import erf

    # The pairs of all rounds, round after round, in one set of variables.
    pairs = [i for indices in layer.growth_rounds for i in indices]
    assert weights["growth_kernel_plus"].shape[1] == len(pairs)
    for j, i in enumerate(pairs):
        a_plus = x @ weights["growth_kernel_plus"][:, j]
        a_plus += weights["growth_bias_plus"][j]
        a_minus = x @ weights["growth_kernel_minus"][:, j]
        a_minus += weights["growth_bias_minus"][j]
        s = a_plus + a_minus
        z[..., i] += 0.5 * s * (1 + erf(s / np.sqrt(2))) + s
    return z


def test_grown_forward_matches_reference_formula_after_weights_move(rng):
    x = rng.normal(size=(3, 5, 6)).astype("float32")
    layer = GrowableDense(8, activation="gelu")
    layer(x)
    layer.grow([0, 3, 6])
    layer.grow([3, 7])
    layer.grow([3])
    # Move every weight so the pairs no longer cancel.
    layer.set_weights(
        [
            w + rng.normal(size=w.shape).astype("float32")
            for w in layer.get_weights()
        ]
    )
    z = _reference_preactivation(x, layer)
    np.testing.assert_allclose(
        _np(layer.preactivation(x)), z, rtol=1e-4, atol=1e-4
    )
    np.testing.assert_allclose(
        _np(layer(x)),
        _np(keras.activations.gelu(z.astype("float32"))),
        atol=1e-4,
    )


def _gradients(layer, x, upstream):
    backend = keras.backend.backend()
    variables = layer.trainable_variables
    if backend == "jax":
        import jax

        def loss(values):
            out, _ = layer.stateless_call(values, [], x)
            return (out * upstream).sum()

        return [
            np.asarray(g) for g in jax.grad(loss)([v.value for v in variables])
        ]
    import tensorflow as tf

    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(layer(x) * upstream)
    return [g.numpy() for g in tape.gradient(loss, variables)]


@pytest.mark.parametrize("activation", [None, "gelu"])
def test_new_weights_receive_nonzero_gradients(rng, activation):
    x = rng.normal(size=(4, 3, 5)).astype("float32")
    layer = GrowableDense(6, activation=activation)
    layer(x)
    layer.grow([1, 2, 5])
    upstream = rng.normal(size=(4, 3, 6)).astype("float32")
    grads = dict(
        zip(
            [v.name for v in layer.trainable_variables],
            _gradients(layer, x, upstream),
            strict=True,
        )
    )
    for suffix in ("kernel_plus", "kernel_minus", "bias_plus", "bias_minus"):
        grad = grads[f"growth_{suffix}"]
        assert np.all(np.abs(grad).sum(axis=0) > 1e-6), suffix
    # The pair only appears summed: both halves get the same gradient, and
    # at z = 0 the branch slope GELU'(0) + 1 = 1.5 times dL/dz'.
    np.testing.assert_allclose(
        grads["growth_kernel_plus"], grads["growth_kernel_minus"]
    )
    if activation is None:
        expected = 1.5 * upstream[..., [1, 2, 5]].sum(axis=(0, 1))
        np.testing.assert_allclose(
            grads["growth_bias_plus"], expected, rtol=1e-5
        )


def test_get_config_round_trip(rng):
    layer = GrowableDense(
        9,
        activation="gelu",
        kernel_regularizer="l2",
        bias_constraint="non_neg",
        name="fc",
    )
    x = rng.normal(size=(2, 4)).astype("float32")
    layer(x)
    layer.grow([0, 8])
    layer.grow([8])
    config = layer.get_config()
    clone = GrowableDense.from_config(config)
    assert clone.get_config() == config
    clone(x)
    clone.set_weights(layer.get_weights())
    np.testing.assert_allclose(_np(clone(x)), _np(layer(x)))
    assert [r.tolist() for r in clone.growth_rounds] == [[0, 8], [8]]
    # A rebuilt layer's growth weights start at zero: still the same function
    # as the ungrown base with the same base weights.
    fresh = GrowableDense.from_config(config)
    fresh(x)
    base = GrowableDense.from_config({**config, "growth_rounds": []})
    base(x)
    base.set_weights(fresh.get_weights()[:2])
    np.testing.assert_allclose(_np(fresh(x)), _np(base(x)), atol=1e-6)


def test_saved_grown_model_loads_without_custom_objects(rng, tmp_path):
    inputs = keras.Input((5, 4))
    hidden = GrowableDense(8, activation="gelu", name="fc1")(inputs)
    outputs = GrowableDense(3, name="fc2")(hidden)
    model = keras.Model(inputs, outputs)
    x = rng.normal(size=(2, 5, 4)).astype("float32")
    model.get_layer("fc1").grow([1, 7])
    model.get_layer("fc2").grow([0])
    model.get_layer("fc1").grow([7])
    model.set_weights(
        [
            w + 0.1 * rng.normal(size=w.shape).astype("float32")
            for w in model.get_weights()
        ]
    )
    expected = _np(model(x))
    path = tmp_path / "grown.keras"
    model.save(path)
    loaded = keras.saving.load_model(path)
    np.testing.assert_allclose(_np(loaded(x)), expected, rtol=1e-6, atol=1e-6)
    assert [r.tolist() for r in loaded.get_layer("fc1").growth_rounds] == [
        [1, 7],
        [7],
    ]
    assert loaded.count_params() == model.count_params()


@pytest.mark.parametrize(
    "indices, message",
    [
        ([0, 12], "must lie in"),
        ([-1], "must lie in"),
        ([3, 3], "must not repeat"),
        ([], "at least one"),
        ([1.0, 2.0], "must contain integers"),
        ([True, False], "must contain integers"),
        ([[1, 2]], "one-dimensional"),
    ],
)
def test_bad_indices_raise_and_leave_layer_unchanged(indices, message):
    layer = _built()
    layer.grow([1])
    weights_before = [w.copy() for w in layer.get_weights()]
    with pytest.raises(ValueError, match=message) as info:
        layer.grow(indices)
    assert "indices" in str(info.value)
    assert len(layer.get_weights()) == len(weights_before)
    assert [r.tolist() for r in layer.growth_rounds] == [[1]]


@pytest.mark.parametrize("scale", [0, -0.2, float("nan"), float("inf"), "0.2"])
def test_bad_scale_raises(scale):
    layer = _built()
    with pytest.raises(ValueError, match="scale") as info:
        layer.grow([0], scale=scale)
    assert repr(scale) in str(info.value)
    assert layer.growth_rounds == [] and len(layer.weights) == 2


def test_grow_unbuilt_layer_raises():
    layer = GrowableDense(4)
    with pytest.raises(ValueError, match="must be built"):
        layer.grow([0])
    assert layer.growth_rounds == []


@pytest.mark.parametrize("units", [0, -3, 2.5, "8", True])
def test_bad_units_raise(units):
    with pytest.raises(ValueError, match=r"`units`.*Received: units="):
        GrowableDense(units)


def test_bad_growth_rounds_in_config_raise():
    with pytest.raises(ValueError, match="must lie in"):
        GrowableDense(4, growth_rounds=[[0, 4]])


@pytest.mark.parametrize("use_bias", [True, False])
def test_float_weights_are_saved_in_keras_order(use_bias):
    """Files written before weights were saved by role load unchanged."""
    layer = _built(use_bias=use_bias)
    layer.grow([1, 3])
    layer.grow([2])
    ours, keras_default = {}, {}
    layer.save_own_variables(ours)
    keras.layers.Layer.save_own_variables(layer, keras_default)
    assert [key for key in ours if key.isdigit()] == list(keras_default)
    for key, value in keras_default.items():
        np.testing.assert_array_equal(_np(ours[key]), _np(value))
    np.testing.assert_array_equal(ours["growth_1_indices"], [2])
