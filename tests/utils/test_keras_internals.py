import inspect

import keras
import numpy as np
import pytest

from keras_depthhet.utils.keras_internals import (
    TRAINER_FUNCTIONS,
    backup_epoch,
    coordination_service_config,
    in_multi_worker_mode,
    initialize_jax_rng,
    iter_layers,
    replace_tensorflow_fit_functions,
    symbolic_build,
    tensorflow_fit_functions,
    unlocked_state,
    untrack_variable,
    untracked_cache,
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


def test_untracked_cache_stays_out_of_keras_tracking_and_saving(tmp_path):
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(3)])
    # The canary: Keras wraps a dict set on a layer in a tracked one.
    model.tracked = {}
    assert type(model.tracked) is not dict
    weights = len(model.weights)
    cache = untracked_cache(model, "_steps")
    assert type(cache) is dict
    assert untracked_cache(model, "_steps") is cache
    cache["step"] = keras.Variable(np.zeros(2), name="not_a_weight")
    assert len(model.weights) == weights
    path = str(tmp_path / "model.keras")
    model.save(path)
    loaded = keras.saving.load_model(path)
    assert "_steps" not in loaded.__dict__


def test_tensorflow_fit_functions_are_keras_trainer_functions():
    functions = tensorflow_fit_functions()
    assert list(functions) == [
        "TensorFlowTrainer._maybe_symbolic_build",
        "reduce_per_replica",
    ]
    for name, function in functions.items():
        assert function.__qualname__ == name
        assert function.__module__ == "keras.src.backend.tensorflow.trainer"
    reduce = inspect.signature(functions["reduce_per_replica"])
    assert list(reduce.parameters) == ["values", "strategy", "reduction"]


def test_trainer_functions_name_the_functions_keras_traces():
    """The retracing warnings `quiet_trainer_retracing` drops name these
    functions (the growth tests see the warnings go under TensorFlow)."""
    from keras.src.backend.tensorflow.trainer import TensorFlowTrainer

    make = TensorFlowTrainer._make_function
    assert f"{make.__qualname__}.<locals>." == TRAINER_FUNCTIONS
    source = inspect.getsource(make)
    for name in ("one_step_on_data", "multi_step_on_iterator"):
        assert f"def {name}(" in source


def test_replaced_tensorflow_fit_functions_are_the_ones_keras_calls():
    from keras.src.backend.tensorflow import trainer

    keras_build, keras_reduce = tensorflow_fit_functions().values()

    def build(self, iterator=None, data_batch=None):
        return keras_build(self, iterator=iterator, data_batch=data_batch)

    def reduce(values, strategy, reduction):
        return keras_reduce(values, strategy, reduction)

    try:
        replace_tensorflow_fit_functions(build, reduce)
        assert trainer.TensorFlowTrainer._maybe_symbolic_build is build
        assert trainer.reduce_per_replica is reduce
        assert list(tensorflow_fit_functions().values()) == [build, reduce]
    finally:
        replace_tensorflow_fit_functions(keras_build, keras_reduce)
    assert trainer.TensorFlowTrainer._maybe_symbolic_build is keras_build
    # The trainer calls the module-level function by name.
    source = inspect.getsource(trainer.TensorFlowTrainer)
    assert "reduce_per_replica(" in source
    assert "self._maybe_symbolic_build(" in inspect.getsource(
        trainer.TensorFlowTrainer.fit
    )


def test_in_multi_worker_mode_is_false_off_a_multi_worker_cluster():
    import tensorflow as tf

    assert in_multi_worker_mode(tf.distribute.get_strategy()) is False
    one_device = tf.distribute.OneDeviceStrategy("/cpu:0")
    assert in_multi_worker_mode(one_device) is False


def test_symbolic_build_builds_model_optimizer_and_metrics_from_specs():
    model = keras.Sequential([keras.layers.Dense(3)])
    model.compile(optimizer="adam", loss="mse", metrics=["mae"])
    x = np.ones((4, 2), "float32")
    y = np.zeros((4, 3), "float32")
    assert not model.built
    symbolic_build(model, (x, y))
    assert model.built and model.optimizer.built
    assert model.layers[0].kernel.shape == (2, 3)
    # Adam: iterations, learning rate, two moments per weight.
    assert len(model.optimizer.variables) == 2 + 2 * 2
    assert int(keras.ops.convert_to_numpy(model.optimizer.iterations)) == 0


def test_coordination_service_config_is_tensorflows_unset_proto():
    from tensorflow.compiler.xla.tsl.protobuf import coordination_config_pb2
    from tensorflow.python.eager import context

    # Not configured in this process; the attribute itself must exist.
    assert coordination_service_config() is None
    configure = inspect.getsource(
        context.Context.configure_coordination_service
    )
    assert "self._coordination_service_config = config" in configure
    fields = coordination_config_pb2.CoordinationServiceConfig.DESCRIPTOR
    assert "cluster_register_with_barrier" in fields.fields_by_name


def test_initialize_jax_rng_keeps_a_set_seed_and_sets_one_otherwise():
    from keras.src.backend.common import global_state
    from keras.src.utils import rng_utils

    keras.utils.set_random_seed(7)
    initialize_jax_rng()
    assert rng_utils.get_random_seed() == 7
    global_state.set_global_attribute(rng_utils.GLOBAL_RANDOM_SEED, None)
    initialize_jax_rng()
    assert isinstance(rng_utils.get_random_seed(), int)
