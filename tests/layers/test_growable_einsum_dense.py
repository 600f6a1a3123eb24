"""`GrowableEinsumDense`: EinsumDense's function until it grows, then the
Method page's formula on the flat views, checked against NumPy."""

import keras
import numpy as np
import pytest
from keras import ops
from scipy.special import erf

from keras_depthhet.layers import GrowableDense, GrowableEinsumDense
from keras_depthhet.utils.keras_internals import iter_layers

# (equation, output_shape, input shape, bias_axes): the projections of
# `MultiHeadAttention` (query/key/value, output), plain and sequence Dense,
# an ellipsis, and partial biases.
CASES = [
    ("abc,cde->abde", (None, 2, 3), (2, 5, 4), "de"),
    ("abc,cde->abde", (None, 2, 3), (2, 5, 4), "e"),
    ("abc,cde->abde", (None, 2, 3), (2, 5, 4), "d"),
    ("abc,cde->abde", (None, 2, 3), (2, 5, 4), None),
    ("abcd,cde->abe", (None, 4), (2, 5, 2, 3), "e"),
    ("abcd,cde->abe", (None, 4), (2, 5, 2, 3), None),
    ("ab,bc->ac", (6,), (3, 4), "c"),
    ("ab,bc->ac", (6,), (3, 4), None),
    ("abc,cd->abd", (None, 6), (2, 5, 4), "d"),
    ("abc,cd->abd", (None, 6), (2, 5, 4), None),
    ("...b,bc->...c", (6,), (2, 3, 5, 4), "c"),
]
IDS = [f"{eq}-{bias}" for eq, _, _, bias in CASES]


def _np(x):
    return ops.convert_to_numpy(x)


def _layer(case, rng, **kwargs):
    equation, output_shape, shape, bias_axes = case
    layer = GrowableEinsumDense(
        equation,
        output_shape,
        bias_axes=bias_axes,
        bias_initializer="random_normal",
        **kwargs,
    )
    x = rng.normal(size=shape).astype("float32")
    layer(x)
    return layer, x


def _contracted(equation):
    """The number of contracted axes, read independently of the layer."""
    inputs, rest = equation.replace("...", "").split(",")
    kernel = rest.split("->")[0]
    return len(set(inputs) & set(kernel))


def _reference(layer, x):
    """EinsumDense plus the pairs of every round, one unit at a time: each
    flat unit `i` is the free-axes position `np.unravel_index(i, free)`."""
    weights = {v.name: _np(v).astype("float64") for v in layer.weights}
    x = x.astype("float64")
    kernel = weights["kernel"]
    m = _contracted(layer.equation)
    z = np.einsum(layer.equation, x, kernel)
    if "bias" in weights:
        z = z + weights["bias"]
    free = kernel.shape[m:]
    pairs = [i for indices in layer.growth_rounds for i in indices]
    for j, i in enumerate(pairs):
        contracted = kernel.shape[:m]
        w_plus = weights["growth_kernel_plus"][:, j].reshape(contracted)
        w_minus = weights["growth_kernel_minus"][:, j].reshape(contracted)
        a_plus = np.tensordot(x, w_plus, axes=m)
        a_minus = np.tensordot(x, w_minus, axes=m)
        if "growth_bias_plus" in weights:
            a_plus += weights["growth_bias_plus"][j]
            a_minus += weights["growth_bias_minus"][j]
        s = a_plus + a_minus
        z[(Ellipsis, *np.unravel_index(i, free))] += (
            0.5 * s * (1 + erf(s / np.sqrt(2))) + s
        )
    return z


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_growth_preserves_function_and_counts_parameters(rng, case):
    layer, x = _layer(case, rng, activation="gelu")
    before = _np(layer(x))
    params = layer.count_params()
    units = int(np.prod(before.shape[len(x.shape) - _contracted(case[0]) :]))
    assert layer.units == units
    # Every output size known (EinsumDense leaves `None` in `output_shape`).
    symbolic = (None, *x.shape[1:])
    assert layer.compute_output_shape(symbolic) == (None, *before.shape[1:])
    per_unit = 2 * (layer.input_dim + (case[3] is not None))
    # Unit 1 grows in three rounds, unit 3 in two; the last round is all.
    for indices in ([1, 3], [1], list(range(units)), [3, 1]):
        added = layer.grow(indices)
        assert added == per_unit * len(indices)
        assert layer.count_params() == params + added
        params += added
        np.testing.assert_allclose(_np(layer(x)), before, atol=1e-5)
    assert layer.num_grown == 5 + units
    assert layer.growth_cost(3) == 3 * per_unit


@pytest.mark.parametrize("case", CASES, ids=IDS)
@pytest.mark.parametrize("activation", [None, "gelu"])
def test_grown_output_is_the_reference_after_the_pairs_move(
    rng, case, activation
):
    layer, x = _layer(case, rng, activation=activation)
    layer.grow([0, 3, 2])
    layer.grow([3, 1])
    layer.grow([3])
    # Random distinct values everywhere: the pairs no longer cancel.
    layer.set_weights(
        [rng.normal(size=w.shape).astype("float32") for w in layer.weights]
    )
    growth = {k: _np(v) for k, v in layer._growth.items()}
    grown = growth["kernel_plus"] + growth["kernel_minus"]
    assert np.all(np.abs(grown) > 1e-4)
    z = _reference(layer, x)
    np.testing.assert_allclose(
        _np(layer.preactivation(x)), z, rtol=1e-4, atol=1e-4
    )
    expected = z if activation is None else 0.5 * z * (1 + erf(z / np.sqrt(2)))
    np.testing.assert_allclose(_np(layer(x)), expected, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_flat_weights_are_the_kernel_reshaped_and_the_bias_broadcast(rng, case):
    layer, x = _layer(case, rng)
    kernel, bias = layer._flat_weights()
    assert kernel.shape == (layer.input_dim, layer.units)
    np.testing.assert_array_equal(
        kernel, _np(layer.kernel).reshape(layer.input_dim, layer.units)
    )
    if case[3] is None:
        assert bias is None and not layer.use_bias
        return
    # The ungrown layer's output at a zero input is the broadcast bias.
    lead = x.ndim - _contracted(case[0])
    zero = np.zeros((1,) * lead + x.shape[lead:], "float32")
    np.testing.assert_array_equal(bias, _np(layer(zero)).reshape(-1))
    assert bias.shape == (layer.units,)


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_hook_sees_flat_views_and_its_result_is_the_output(rng, case):
    layer, x = _layer(case, rng)
    layer.grow([0, 2])
    layer.set_weights(
        [rng.normal(size=w.shape).astype("float32") for w in layer.weights]
    )
    expected = _reference(layer, x)
    seen = []

    def hook(hooked, inputs, preactivation, outputs):
        seen.append((hooked, _np(inputs), _np(preactivation), _np(outputs)))
        return outputs * 2.0 + 1.0

    layer.set_analysis_hook(hook)
    outputs = _np(layer(x))
    layer.set_analysis_hook(None)
    np.testing.assert_allclose(outputs, 2 * expected + 1, rtol=1e-4, atol=1e-4)
    (hooked, inputs, preactivation, flat_outputs), *rest = seen
    assert hooked is layer and not rest
    lead = x.shape[: x.ndim - _contracted(case[0])]
    assert inputs.shape == (*lead, layer.input_dim)
    np.testing.assert_array_equal(inputs, x.reshape(inputs.shape))
    assert preactivation.shape == flat_outputs.shape == (*lead, layer.units)
    np.testing.assert_allclose(
        preactivation, expected.reshape(preactivation.shape), atol=1e-4
    )
    np.testing.assert_allclose(flat_outputs, preactivation)
    np.testing.assert_allclose(_np(layer(x)), expected, atol=1e-4)


def test_hook_runs_in_a_compiled_predict_without_marking_the_layer(rng):
    inputs = keras.Input((5, 2, 3))
    layer = GrowableEinsumDense("abcd,cde->abe", (None, 4), bias_axes="e")
    model = keras.Model(inputs, layer(inputs))
    layer.grow([1, 3])
    x = rng.normal(size=(6, 5, 2, 3)).astype("float32")
    plain = _np(model(x))
    shapes = []

    def hook(hooked, flat_inputs, preactivation, outputs):
        shapes.append((flat_inputs.shape[-1], outputs.shape[-1]))
        return outputs - 3.0

    layer.set_analysis_hook(hook)
    hooked = model.predict(x, batch_size=4, verbose=0)
    layer.set_analysis_hook(None)
    np.testing.assert_allclose(hooked, plain - 3.0, atol=1e-5)
    assert set(shapes) == {(6, 4)}
    layer.grow([0])  # The analysis does not count as a trace.


def _dense_layers():
    """`(layer, input shape)` of Keras EinsumDense layers of the dense-like
    equations, built; those of a `MultiHeadAttention` included."""
    attention = keras.layers.MultiHeadAttention(
        num_heads=2, key_dim=3, output_shape=5
    )
    attention(np.zeros((1, 4, 6), "float32"), np.zeros((1, 3, 7), "float32"))
    shapes = {
        "query": (2, 4, 6),
        "key": (2, 3, 7),
        "value": (2, 3, 7),
        "attention_output": (2, 4, 2, 3),
    }
    found = [
        (sub, shapes[sub.name])
        for sub in iter_layers(attention)
        if isinstance(sub, keras.layers.EinsumDense)
    ]
    assert len(found) == 4
    for equation, output_shape, shape, bias_axes in CASES:
        dense = keras.layers.EinsumDense(
            equation, output_shape, bias_axes=bias_axes, activation="relu"
        )
        dense.build(shape)
        found.append((dense, shape))
    return found


def test_einsum_dense_converts_through_its_config(rng):
    for dense, shape in _dense_layers():
        dense.set_weights(
            [rng.normal(size=w.shape).astype("float32") for w in dense.weights]
        )
        layer = GrowableEinsumDense.from_config(dense.get_config())
        layer.build(shape)
        layer.set_weights(dense.get_weights())
        x = rng.normal(size=shape).astype("float32")
        expected = _np(dense(x))
        np.testing.assert_allclose(
            _np(layer(x)), expected, rtol=1e-6, atol=1e-6
        )
        assert layer.count_params() == dense.count_params()
        layer.grow([0])
        np.testing.assert_allclose(_np(layer(x)), expected, atol=1e-5)


def test_growable_dense_flat_weights(rng):
    layer = GrowableDense(5, bias_initializer="random_normal")
    layer.build((None, 3))
    kernel, bias = layer._flat_weights()
    np.testing.assert_array_equal(kernel, _np(layer.kernel))
    np.testing.assert_array_equal(bias, _np(layer.bias))
    assert isinstance(kernel, np.ndarray) and isinstance(bias, np.ndarray)
    unbiased = GrowableDense(5, use_bias=False)
    unbiased.build((None, 3))
    assert unbiased._flat_weights()[1] is None
    float_kernel = _np(layer.kernel)
    layer.quantize("int8")
    kernel, _ = layer._flat_weights()
    assert kernel.dtype == np.float32 and kernel.shape == (3, 5)
    step = np.abs(float_kernel).max(axis=0) / 127
    assert np.all(np.abs(kernel - float_kernel) <= step)
