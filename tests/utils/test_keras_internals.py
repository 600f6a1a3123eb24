import keras
import numpy as np
import pytest

from keras_depthhet.utils.keras_internals import (
    backup_epoch,
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


def _adam_for(shape, value=0.0):
    variable = keras.Variable(np.full(shape, 1.0, "float32"))
    optimizer = keras.optimizers.Adam()
    optimizer.build([variable])
    for slot in optimizer.variables[2:]:
        slot.assign(np.full(slot.shape, value, "float32"))
    return optimizer


def test_saved_slots_of_other_shapes_are_skipped_not_half_loaded():
    from keras_depthhet.utils.keras_internals import (
        skip_saved_state_of_other_shapes,
    )

    narrow = {}
    _adam_for((2, 3), value=5.0).save_own_variables(narrow)
    wide = _adam_for((2, 4), value=1.0)
    # Canary: Keras itself raises here (same count, other shapes) after
    # assigning the variables before the first mismatch.
    with pytest.raises(ValueError, match="shape"):
        wide.load_own_variables(narrow)
    wide = _adam_for((2, 4), value=1.0)
    skip_saved_state_of_other_shapes(wide)
    with pytest.warns(UserWarning, match="has grown since"):
        wide.load_own_variables(narrow)
    for slot in wide.variables[2:]:
        np.testing.assert_array_equal(keras.ops.convert_to_numpy(slot), 1.0)
    # A state of the same shapes still loads.
    same = {}
    _adam_for((2, 4), value=3.0).save_own_variables(same)
    wide.load_own_variables(same)
    for slot in wide.variables[2:]:
        np.testing.assert_array_equal(keras.ops.convert_to_numpy(slot), 3.0)
    # Another number of variables: Keras's own warning, as before.
    other = {}
    _adam_for((2,)).save_own_variables(other)
    other["99"] = np.zeros(1)
    with pytest.warns(UserWarning, match="Skipping variable loading"):
        wide.load_own_variables(other)


def test_backup_epoch_reads_the_epoch_keras_backup_and_restore_resumes_at(
    tmp_path,
):
    """Canary: Keras's `BackupAndRestore` records the completed epochs in
    the file `backup_epoch` reads, and resumes `fit` at that epoch."""
    x = np.random.default_rng(0).random((8, 2)).astype("float32")
    y = x.sum(axis=1, keepdims=True)
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    model.compile("sgd", "mse")
    backup = keras.callbacks.BackupAndRestore(
        tmp_path / "backup", delete_checkpoint=False
    )
    assert backup_epoch(backup) is None
    model.fit(x, y, epochs=3, callbacks=[backup], verbose=0)
    assert backup_epoch(backup) == 3
    history = model.fit(x, y, epochs=5, callbacks=[backup], verbose=0)
    assert history.epoch == [3, 4]
    assert backup_epoch(backup) == 5
