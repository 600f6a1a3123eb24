"""`GrowableEinsumDense` in models: config and `.keras` round trips (also
across backends), refusals, training, the layer lookup, FLOPs and the
splitting analysis."""

import keras
import numpy as np
import pytest
from keras import ops

from keras_depthhet.layers import (
    GrowableDense,
    GrowableEinsumDense,
    growable_layer_map,
    growable_layers,
)
from keras_depthhet.models.flops import count_flops
from tests.subprocess_utils import run_python


def _np(x):
    return ops.convert_to_numpy(x)


def _model():
    """Tokens (5, 4) -> query-like (5, 2, 3) -> output-like (5, 4) -> 1."""
    inputs = keras.Input((5, 4))
    heads = GrowableEinsumDense(
        "abc,cde->abde",
        (None, 2, 3),
        bias_axes="de",
        activation="gelu",
        name="query",
    )(inputs)
    tokens = GrowableEinsumDense(
        "abcd,cde->abe", (None, 4), bias_axes="e", name="output"
    )(heads)
    pooled = keras.layers.GlobalAveragePooling1D(name="pool")(tokens)
    return keras.Model(inputs, GrowableDense(1, name="head")(pooled))


def _grown_model(rng):
    model = _model()
    model.get_layer("query").grow([0, 5])
    model.get_layer("output").grow([3])
    model.get_layer("query").grow([5])
    model.get_layer("head").grow([0])
    # Trained-looking weights: the pairs no longer cancel.
    model.set_weights(
        [
            w + 0.3 * rng.normal(size=w.shape).astype("float32")
            for w in model.get_weights()
        ]
    )
    return model


def test_get_config_round_trip(rng):
    layer = GrowableEinsumDense(
        "abc,cde->abde",
        (None, 2, 3),
        bias_axes="e",
        activation="relu",
        kernel_regularizer="l2",
        bias_constraint="non_neg",
        name="query",
    )
    x = rng.normal(size=(2, 5, 4)).astype("float32")
    layer(x)
    layer.grow([0, 5])
    layer.grow([5])
    config = layer.get_config()
    assert config["growth_rounds"] == [[0, 5], [5]]
    clone = GrowableEinsumDense.from_config(config)
    assert clone.get_config() == config
    clone(x)
    clone.set_weights(
        [w + rng.normal(size=w.shape) for w in layer.get_weights()]
    )
    layer.set_weights(clone.get_weights())
    np.testing.assert_allclose(_np(clone(x)), _np(layer(x)), atol=1e-6)
    assert [r.tolist() for r in clone.growth_rounds] == [[0, 5], [5]]
    # Rebuilt from its config alone, the pairs are zero: the base function.
    fresh = GrowableEinsumDense.from_config(config)
    fresh(x)
    base = GrowableEinsumDense.from_config({**config, "growth_rounds": []})
    base(x)
    base.set_weights(fresh.get_weights()[:2])
    np.testing.assert_allclose(_np(fresh(x)), _np(base(x)), atol=1e-6)


def test_saved_grown_model_loads_with_the_same_outputs(rng, tmp_path):
    model = _grown_model(rng)
    x = rng.normal(size=(3, 5, 4)).astype("float32")
    expected = _np(model(x))
    model.save(tmp_path / "grown.keras")
    loaded = keras.saving.load_model(tmp_path / "grown.keras")
    np.testing.assert_allclose(_np(loaded(x)), expected, rtol=1e-6, atol=1e-6)
    assert isinstance(loaded.get_layer("query"), GrowableEinsumDense)
    assert [r.tolist() for r in loaded.get_layer("query").growth_rounds] == [
        [0, 5],
        [5],
    ]
    assert loaded.count_params() == model.count_params()


def test_weights_saved_before_a_round_load_into_the_grown_layer(rng, tmp_path):
    model = _model()
    model.set_weights(
        [rng.normal(size=w.shape).astype("float32") for w in model.weights]
    )
    x = rng.normal(size=(3, 5, 4)).astype("float32")
    expected = _np(model(x))
    model.save_weights(tmp_path / "before.weights.h5")
    grown = _model()
    grown.get_layer("output").grow([1, 2])
    grown.load_weights(tmp_path / "before.weights.h5")
    np.testing.assert_allclose(_np(grown(x)), expected, atol=1e-5)
    # A file of another growth history is refused.
    model.get_layer("output").grow([0])
    model.save_weights(tmp_path / "other.weights.h5")
    with pytest.raises(ValueError, match="another growth history"):
        grown.load_weights(tmp_path / "other.weights.h5")


@pytest.mark.integration
def test_saved_grown_model_loads_on_the_other_backend(rng, tmp_path):
    model = _grown_model(rng)
    x = rng.normal(size=(3, 5, 4)).astype("float32")
    np.save(tmp_path / "x.npy", x)
    model.save(tmp_path / "grown.keras")
    other = "tensorflow" if keras.backend.backend() == "jax" else "jax"
    result = run_python(
        f"""
        import json, keras, numpy as np
        import keras_depthhet
        model = keras.saving.load_model({str(tmp_path / "grown.keras")!r})
        x = np.load({str(tmp_path / "x.npy")!r})
        query = model.get_layer("query")
        print(json.dumps({{
            "backend": keras.backend.backend(),
            "outputs": keras.ops.convert_to_numpy(model(x)).tolist(),
            "type": type(query).__name__,
            "rounds": [r.tolist() for r in query.growth_rounds],
        }}))
        """,
        backend=other,
    )
    assert result["backend"] == other
    assert result["type"] == "GrowableEinsumDense"
    assert result["rounds"] == [[0, 5], [5]]
    np.testing.assert_allclose(
        np.array(result["outputs"]), _np(model(x)), rtol=1e-5, atol=1e-5
    )


def test_grow_is_refused_once_traced_by_predict(rng):
    model = _model()
    x = rng.normal(size=(2, 5, 4)).astype("float32")
    model.get_layer("query").grow([1])  # Eager calls only so far.
    model.predict(x, verbose=0)
    layer = model.get_layer("query")
    with pytest.raises(ValueError, match="traced into a compiled function"):
        layer.grow([2])
    assert [r.tolist() for r in layer.growth_rounds] == [[1]]


@pytest.mark.parametrize(
    "equation",
    [
        "abc,dc->abd",  # transposed kernel
        "abc,cd->bad",  # output reorders the leading axes
        "abc,cde->abed",  # output reorders the free axes
        "abcd,dce->abe",  # contracted axes in another order
        "abc,bcd->abd",  # contracts a non-trailing axis
        "abc,acd->abd",  # batch axis shared with the kernel
        "ab...,bc->ac...",  # ellipsis on the right
        "...b,bc->c",  # ellipsis on one side only
        "abc,cd->ab",  # no free axis
        "aab,bc->aac",  # repeated axis
        "b,bc->c",  # no batch axis
        "abc,de->abde",  # nothing contracted
        "abc, cd->abd",
    ],
)
def test_equations_that_cannot_grow_are_refused(equation):
    with pytest.raises(ValueError, match="cannot grow") as info:
        GrowableEinsumDense(equation, (None, 4, 4))
    assert repr(equation) in str(info.value)


@pytest.mark.parametrize(
    "kwargs, argument",
    [
        ({"bias_axes": "b"}, "bias_axes"),  # a sequence axis
        ({"bias_axes": "dd"}, "bias_axes"),
        ({"bias_axes": ""}, "bias_axes"),
        ({"output_shape": (None, None, 3)}, "output_shape"),
        ({"output_shape": (2, 3)}, "output_shape"),
        ({"output_shape": None}, "output_shape"),
        ({"lora_rank": 2}, "lora_rank"),
    ],
)
def test_bad_arguments_are_refused(kwargs, argument):
    arguments = {"output_shape": (None, 2, 3), **kwargs}
    with pytest.raises(ValueError, match=f"{argument}=") as info:
        GrowableEinsumDense("abc,cde->abde", **arguments)
    assert "abc,cde->abde" in str(info.value) or argument == "lora_rank"


def test_quantize_and_lora_are_refused(rng):
    model = _model()
    with pytest.raises(ValueError, match="cannot be quantized"):
        model.quantize("int8")
    with pytest.raises(ValueError, match="cannot be LoRA-enabled"):
        model.get_layer("query").enable_lora(2)


@pytest.mark.parametrize(
    "indices, message",
    [
        ([0, 6], "must lie in"),
        ([-1], "must lie in"),
        ([3, 3], "must not repeat"),
        ([], "at least one"),
        ([1.0], "must contain integers"),
    ],
)
def test_bad_indices_raise_and_leave_layer_unchanged(indices, message):
    layer = GrowableEinsumDense("abc,cde->abde", (None, 2, 3), bias_axes="e")
    layer.build((None, 5, 4))
    layer.grow([1])
    weights = len(layer.weights)
    with pytest.raises(ValueError, match=message) as info:
        layer.grow(indices)
    assert "indices" in str(info.value)
    assert len(layer.weights) == weights
    assert [r.tolist() for r in layer.growth_rounds] == [[1]]


def test_bad_growth_rounds_in_config_raise():
    with pytest.raises(ValueError, match="must lie in"):
        GrowableEinsumDense("ab,bc->ac", 4, growth_rounds=[[0, 4]])


def test_training_moves_the_pairs_apart(rng):
    model = _model()
    x = rng.normal(size=(64, 5, 4)).astype("float32")
    y = np.sin(x.sum(axis=(1, 2)))[:, None].astype("float32")
    model.get_layer("query").grow([0, 2, 4])
    model.get_layer("output").grow([1, 3])
    model.compile(keras.optimizers.Adam(0.01), "mse")
    before = model.evaluate(x, y, verbose=0)
    model.fit(x, y, batch_size=16, epochs=5, verbose=0)
    assert model.evaluate(x, y, verbose=0) < before
    for name in ("query", "output"):
        growth = model.get_layer(name)._growth
        pair_sum = _np(growth["kernel_plus"]) + _np(growth["kernel_minus"])
        assert np.all(np.abs(pair_sum).max(axis=0) > 1e-4), name


def test_lookup_finds_both_growable_layers():
    model = _model()
    assert list(growable_layer_map(model)) == ["query", "output", "head"]
    assert growable_layers(model) == [
        model.get_layer(name) for name in ("query", "output", "head")
    ]
    layer = model.get_layer("output")
    assert growable_layer_map(layer) == {"output": layer}


def test_flops_count_the_pairs_of_a_grown_layer():
    model = _model()
    # 5 tokens: query 4 -> 6 units, output 6 -> 4 units, head 4 -> 1.
    assert count_flops(model) == 5 * 4 * 6 + 5 * 6 * 4 + 4 * 1
    model.get_layer("query").grow([0, 5])
    model.get_layer("output").grow([3])
    assert count_flops(model) == 5 * 4 * 8 + 5 * 6 * 5 + 4 * 1


def test_splitting_sees_the_dense_layers_of_the_flat_views(rng):
    """The same model written with `GrowableDense` on flattened tokens has
    the same outputs and the same splitting eigenvalues per unit."""
    from keras_depthhet.splitting import splitting_eigenvalues

    einsum = _model()
    inputs = keras.Input((5, 4))
    heads = GrowableDense(6, activation="gelu", name="query")(inputs)
    tokens = GrowableDense(4, name="output")(heads)
    pooled = keras.layers.GlobalAveragePooling1D()(tokens)
    dense = keras.Model(inputs, GrowableDense(1, name="head")(pooled))
    weights = [
        0.5 * rng.normal(size=w.shape).astype("float32") for w in einsum.weights
    ]
    einsum.set_weights(weights)
    query, query_bias, output, *rest = weights
    dense.set_weights(
        [query.reshape(4, 6), query_bias.reshape(6), output.reshape(6, 4)]
        + rest
    )
    for model in (einsum, dense):
        model.get_layer("query").grow([1, 4])
        model.get_layer("output").grow([0])
    x = rng.normal(size=(16, 5, 4)).astype("float32")
    y = rng.normal(size=(16, 1)).astype("float32")
    np.testing.assert_allclose(
        _np(einsum(x)), _np(dense(x)), rtol=1e-5, atol=1e-6
    )
    layers = ["query", "output"]
    ours, theirs = (
        splitting_eigenvalues(m, (x, y), loss="mse", layers=layers)
        for m in (einsum, dense)
    )
    for name in layers:
        np.testing.assert_allclose(
            np.asarray(ours[name]), np.asarray(theirs[name]), atol=1e-5
        )
    assert np.min(ours["query"]) < 0
