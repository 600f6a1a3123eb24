import keras
import pytest

from keras_depthhet.utils.keras_internals import (
    iter_layers,
    unlocked_state,
    untrack_variable,
)


def test_unlocked_state_allows_new_weights_and_relocks():
    layer = keras.layers.Dense(3)
    layer.build((None, 2))
    with pytest.raises(ValueError, match="already built"):
        layer.add_weight(name="extra", shape=(1,))
    with unlocked_state(layer):
        extra = layer.add_weight(name="extra", shape=(1,))
    assert any(v is extra for v in layer.trainable_variables)
    assert extra.path == f"{layer.name}/extra"
    with pytest.raises(ValueError, match="already built"):
        layer.add_weight(name="extra2", shape=(1,))


def test_unlocked_state_relocks_after_an_error():
    layer = keras.layers.Dense(3)
    layer.build((None, 2))
    with pytest.raises(RuntimeError), unlocked_state(layer):
        raise RuntimeError("boom")
    with pytest.raises(ValueError, match="already built"):
        layer.add_weight(name="extra", shape=(1,))


def test_untrack_variable_removes_it():
    layer = keras.layers.Dense(3)
    layer.build((None, 2))
    with unlocked_state(layer):
        extra = layer.add_weight(name="extra", shape=(1,))
    untrack_variable(layer, extra)
    assert len(layer.weights) == 2


def test_iter_layers_walks_nested_layers_in_order():
    inner = keras.Sequential([keras.layers.Dense(2, name="a")], name="inner")
    model = keras.Sequential(
        [keras.Input((3,)), inner, keras.layers.Dense(1, name="b")]
    )
    assert [x.name for x in iter_layers(model)] == ["inner", "a", "b"]
