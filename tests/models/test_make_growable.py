"""`make_growable`: a user's Keras model with its Dense layers growable."""

import keras
import numpy as np
import pytest

from keras_depthhet import GrowableDense, GrowthCallback, make_growable
from keras_depthhet.models import growable_layer_map
from tests.growth.helpers import function_probes

X = np.random.default_rng(0).normal(size=(8, 16)).astype("float32")


def _types(model):
    return [
        type(layer).__name__
        for layer in model._flatten_layers(include_self=False)
        if not isinstance(layer, keras.layers.InputLayer)
    ]


def _mlp(with_input=True):
    layers = [
        keras.layers.Dense(8, activation="gelu", name="hidden"),
        keras.layers.Dense(4, name="head"),
    ]
    return keras.Sequential([keras.Input((16,))] * with_input + layers)


def _nested():
    inner = keras.Sequential(
        [keras.Input((16,)), keras.layers.Dense(8, "relu", name="dense")],
        name="inner",
    )
    inputs = keras.Input((16,))
    hidden = keras.layers.Dense(8, "gelu", name="dense")(inner(inputs))
    outputs = keras.layers.Dense(4, name="head")(hidden)
    return keras.Model(inputs, outputs)


def _same_function(model, copy):
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(copy(X)),
        keras.ops.convert_to_numpy(model(X)),
        atol=1e-6,
    )


@pytest.mark.parametrize("build", ["input", "built_without_input", "nested"])
def test_copy_computes_the_same_and_the_original_is_unchanged(build):
    if build == "nested":
        model = _nested()
    else:
        model = _mlp(with_input=build == "input")
        model(X)  # Built by a call, as `fit` would.
    before = [w.copy() for w in model.get_weights()]
    types = _types(model)
    copy = make_growable(model)
    _same_function(model, copy)
    assert _types(model) == types  # The original keeps its layers.
    for old, new in zip(before, model.get_weights(), strict=True):
        np.testing.assert_array_equal(old, new)
    if build == "nested":
        assert list(growable_layer_map(copy)) == ["inner/dense", "dense"]
        assert _types(copy) == ["Sequential", "GrowableDense"] * 1 + [
            "GrowableDense",
            "Dense",
        ]
    else:
        assert _types(copy) == ["GrowableDense", "Dense"]


def test_layers_by_name_path_and_predicate():
    model = _nested()
    by_path = make_growable(model, layers=["inner/dense", "head"])
    assert list(growable_layer_map(by_path)) == ["dense", "head"]
    assert growable_layer_map(by_path)["dense"].activation is (
        keras.activations.relu
    )
    _same_function(model, by_path)
    wide = make_growable(model, layers=lambda layer: layer.units == 4)
    assert list(growable_layer_map(wide)) == ["head"]


def test_bad_input_names_the_layer_and_what_to_do():
    model = _nested()
    with pytest.raises(ValueError, match="'nope'.*Convertible"):
        make_growable(model, layers=["nope"])
    with pytest.raises(ValueError, match="'inner' of model .* Sequential"):
        make_growable(model, layers=["inner"])
    with pytest.raises(ValueError, match="must be None, a list"):
        make_growable(model, layers="head")
    with pytest.raises(ValueError, match="must be a keras.Model"):
        make_growable(keras.layers.Dense(3))
    with pytest.raises(ValueError, match="name them in `layers`"):
        make_growable(
            keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
        )

    class Subclassed(keras.Model):
        def __init__(self):
            super().__init__()
            self.hidden = keras.layers.Dense(8, "gelu", name="hidden")
            self.head = keras.layers.Dense(4, name="head")

        def call(self, x):
            return self.head(self.hidden(x))

    subclassed = Subclassed()
    subclassed(X)
    with pytest.raises(
        ValueError, match=r"subclassed.*\['hidden', 'head'\].*Growable"
    ):
        make_growable(subclassed)


def test_converting_twice_keeps_the_growth():
    model = _mlp()
    once = make_growable(model)
    growable_layer_map(once)["hidden"].grow([1, 5])
    expected = keras.ops.convert_to_numpy(once(X))
    with pytest.raises(ValueError, match=r"can grow as it is: .*\['hidden'\]"):
        make_growable(once)
    twice = make_growable(once, layers=["head"])
    assert growable_layer_map(twice)["hidden"].num_grown == 2
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(twice(X)), expected, atol=1e-6
    )


@pytest.mark.slow
def test_a_converted_sequential_mlp_grows_inside_fit():
    from sklearn.datasets import load_digits

    digits = load_digits()
    x = (digits.data[:256] / 16.0).astype("float32")
    y = digits.target[:256]
    model = keras.Sequential(
        [
            keras.layers.Dense(32, activation="gelu"),
            keras.layers.Dense(32, activation="gelu"),
            keras.layers.Dense(10),
        ]
    )
    model = make_growable(model)
    assert _types(model) == ["GrowableDense", "GrowableDense", "Dense"]
    model.compile(
        "adam",
        keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    grower = GrowthCallback(
        warmup=1, interval=1, param_budget=2000, layer_threshold=0, verbose=0
    )
    before, after, changes = function_probes(model, x[:32])
    model.fit(
        x,
        y,
        epochs=3,
        batch_size=64,
        callbacks=[before, grower, after],
        verbose=0,
    )
    assert [e["epoch"] for e in grower.history] == [1, 2, 3]
    assert max(changes) <= 1e-5
    grown = [
        layer for layer in model.layers if isinstance(layer, GrowableDense)
    ]
    assert sum(layer.num_grown for layer in grown) > 0
    # The pairs train after the event that made them.
    pair = grown[0]._growth
    if pair:
        total = keras.ops.convert_to_numpy(
            pair["kernel_plus"] + pair["kernel_minus"]
        )
        assert np.abs(total).max() > 0


def test_growth_callback_on_a_plain_model_names_make_growable():
    model = _mlp()
    model.compile("adam", "mse")
    with pytest.raises(ValueError, match=r"make_growable\(model\)"):
        model.fit(
            X,
            np.zeros((8, 4)),
            epochs=1,
            callbacks=[GrowthCallback(criterion="random")],
            verbose=0,
        )
