"""`make_growable`: a user's Keras model with its Dense layers growable."""

import keras
import numpy as np
import pytest

from keras_depthhet import GrowableDense, GrowthCallback, make_growable
from keras_depthhet.models import growable_layer_map
from tests.growth.helpers import grows_inside_fit

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

    class NeedsArguments(keras.Model):
        def __init__(self, width):
            super().__init__()
            self.hidden = keras.layers.Dense(width, "gelu", name="hidden")

        def call(self, x):
            return self.hidden(x)

    needs_arguments = NeedsArguments(8)
    needs_arguments(X)
    with pytest.raises(
        ValueError, match=r"cannot be copied from its config.*\['hidden'\]"
    ):
        make_growable(needs_arguments, layers=["hidden"])


class Subclassed(keras.Model):
    """A subclassed model that Keras copies from its (default) config."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.hidden = keras.layers.Dense(8, "gelu", name="hidden")
        self.head = keras.layers.Dense(4, name="head")

    def call(self, x):
        return self.head(self.hidden(x))


def test_subclassed_model_converts_in_place_of_its_attributes():
    model = Subclassed()
    model(X)
    copy = make_growable(model, layers=["hidden"])
    assert isinstance(copy.hidden, GrowableDense)
    assert type(model.hidden) is keras.layers.Dense
    _same_function(model, copy)
    assert len(copy.weights) == len(model.weights)  # The old layer is gone.
    copy.hidden.grow([0, 3])
    _same_function(model, copy)


def _transformer():
    """A functional transformer classifier of Keras layers."""
    inputs = keras.Input((6, 16))
    attended = keras.layers.MultiHeadAttention(2, 8, name="mha")(inputs, inputs)
    tokens = keras.layers.LayerNormalization()(inputs + attended)
    hidden = keras.layers.Dense(32, "gelu", name="fc1")(tokens)
    tokens = tokens + keras.layers.Dense(16, name="fc2")(hidden)
    pooled = keras.layers.GlobalAveragePooling1D()(tokens)
    return keras.Model(inputs, keras.layers.Dense(3, name="head")(pooled))


def test_multi_head_attention_projections_become_growable():
    x = np.random.default_rng(1).normal(size=(4, 6, 16)).astype("float32")
    model = _transformer()
    copy = make_growable(model)
    layers = growable_layer_map(copy)
    assert list(layers) == [
        "query",
        "key",
        "value",
        "attention_output",
        "fc1",
        "fc2",
    ]
    assert {type(layer).__name__ for k, layer in layers.items()} == {
        "GrowableEinsumDense",
        "GrowableDense",
    }
    assert copy.count_params() == model.count_params()
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(copy(x)),
        keras.ops.convert_to_numpy(model(x)),
        atol=1e-6,
    )
    for layer in layers.values():
        layer.grow([0, 5])
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(copy(x)),
        keras.ops.convert_to_numpy(model(x)),
        atol=1e-5,
    )


def test_growth_rounds_rebuild_a_grown_copy_for_its_weights(tmp_path):
    x = np.random.default_rng(2).normal(size=(4, 6, 16)).astype("float32")
    grown = make_growable(_transformer())
    rng = np.random.default_rng(3)
    for layer in growable_layer_map(grown).values():
        layer.grow([0, 2])
        layer.grow([2])
        for variable in layer._growth.values():
            variable.assign(rng.normal(size=variable.shape) * 0.1)
    rounds = {
        key: [r.tolist() for r in layer.growth_rounds]
        for key, layer in growable_layer_map(grown).items()
    }
    grown.save_weights(tmp_path / "grown.weights.h5")
    # A grown MultiHeadAttention's config does not hold its projections'
    # growth: its `.keras` file is refused; the weights route loads.
    grown.save(tmp_path / "grown.keras")
    with pytest.raises(ValueError, match="could not be loaded"):
        keras.saving.load_model(tmp_path / "grown.keras")
    again = make_growable(_transformer(), growth_rounds=rounds)
    again.load_weights(tmp_path / "grown.weights.h5")
    assert again.count_params() == grown.count_params()
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(again(x)),
        keras.ops.convert_to_numpy(grown(x)),
        atol=1e-6,
    )
    with pytest.raises(ValueError, match="must map layer names to lists"):
        make_growable(_transformer(), growth_rounds={"fc1": 3})


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


@pytest.mark.integration  # Three events on the digits.
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
    grows_inside_fit(model, x, y, epochs=3, param_budget=2000)
    grown = [
        layer for layer in model.layers if isinstance(layer, GrowableDense)
    ]
    assert sum(layer.num_grown for layer in grown) > 0


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


def test_fit_with_growth_refuses_layers_its_rebuild_would_lose():
    from keras_depthhet.distributed import fit_with_growth

    def build():
        model = make_growable(_transformer())
        model.compile("adam", "mse")
        return model

    x = np.zeros((8, 6, 16), "float32")
    with pytest.raises(
        ValueError, match=r"does not record.*'query'.*model.fit"
    ):
        fit_with_growth(
            build,
            (x, np.zeros((8, 3))),
            epochs=2,
            growth=dict(criterion="random", warmup=1, interval=1),
            distribution="none",
        )
