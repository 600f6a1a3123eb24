"""A model grown inside `fit` saves, loads, resumes and crosses backends."""

import shutil

import keras
import numpy as np
import pytest

from keras_depthhet.growth import (
    GrowthBackupAndRestore,
    GrowthCallback,
    grow_model,
)
from tests.growth.helpers import (
    compiled_tiny_mlp,
    compiled_tiny_transformer,
    compiled_tiny_vit,
    random_data,
)
from tests.subprocess_utils import run_python

FIT = {"batch_size": 8, "shuffle": False, "verbose": 0}


def _grower():
    """One random growth event, after epoch 1, the same plan every run."""
    return GrowthCallback(
        warmup=1,
        interval=1000,
        param_budget=400,
        layer_threshold=0,
        criterion="random",
        seed=5,
        verbose=0,
    )


def _model(build=compiled_tiny_mlp):
    """Saving and resuming a grown model is the same for any model of
    `GrowableDense` layers: the fast tests use the MLP."""
    keras.utils.set_random_seed(99)
    return build()


def _weights(model):
    """Model and optimizer values by path (optimizer name left out)."""
    values = {v.path: keras.ops.convert_to_numpy(v) for v in model.weights}
    for v in model.optimizer.variables:
        values["optimizer/" + v.path.split("/", 1)[1]] = (
            keras.ops.convert_to_numpy(v)
        )
    return values


def _assert_same(actual, expected):
    assert set(actual) == set(expected)
    for path, value in expected.items():
        np.testing.assert_allclose(actual[path], value, atol=1e-5, err_msg=path)


def _uninterrupted(x, y, epochs, build=compiled_tiny_mlp):
    model = _model(build)
    model.fit(x, y, epochs=epochs, callbacks=[_grower()], **FIT)
    return _weights(model)


@pytest.mark.slow
def test_keras_file_resumes_to_the_uninterrupted_weights(tmp_path):
    x, y = random_data()
    model = _model()
    model.fit(x, y, epochs=2, callbacks=[_grower()], **FIT)
    path = tmp_path / "grown.keras"
    model.save(path)
    loaded = keras.saving.load_model(path)
    assert loaded.count_params() == model.count_params()
    assert int(loaded.optimizer.iterations) == 8
    np.testing.assert_allclose(
        loaded.predict(x, verbose=0), model.predict(x, verbose=0), atol=1e-6
    )
    loaded.fit(x, y, epochs=4, initial_epoch=2, callbacks=[_grower()], **FIT)
    _assert_same(_weights(loaded), _uninterrupted(x, y, 4))


class _Interrupt(keras.callbacks.Callback):
    def on_train_batch_end(self, batch, logs=None):
        if self.model.optimizer.iterations.numpy() == 10:
            raise RuntimeError("interrupted")


@pytest.mark.slow
@pytest.mark.parametrize(
    "build", [compiled_tiny_mlp, compiled_tiny_transformer], ids=["mlp", "mha"]
)
def test_backup_and_restore_resumes_after_growth(tmp_path, build):
    x, y = random_data()
    model = _model(build)
    grower = _grower()
    backup = GrowthBackupAndRestore(str(tmp_path / "backup"), grower)
    # Step 10 is in epoch 3, after the growth at the end of epoch 1 and the
    # backup at the end of epoch 2.
    with pytest.raises(RuntimeError, match="interrupted"):
        model.fit(
            x, y, epochs=4, callbacks=[grower, backup, _Interrupt()], **FIT
        )
    grown_params = model.count_params()
    assert len(grower.history) == 1
    shutil.copytree(tmp_path / "backup", tmp_path / "copy")
    history = model.fit(x, y, epochs=4, callbacks=[grower, backup], **FIT)
    assert len(history.epoch) == 2  # Resumed at epoch 3.
    assert model.count_params() == grown_params
    assert len(grower.history) == 1
    _assert_same(_weights(model), _uninterrupted(x, y, 4, build))
    # A model whose growth is not the backup's is refused before training.
    grow_model(model, {"fc2": [1]})
    other = _grower()
    copy = GrowthBackupAndRestore(str(tmp_path / "copy"), other)
    with pytest.raises(ValueError, match="growth rounds are not those"):
        model.fit(x, y, epochs=5, callbacks=[other, copy], **FIT)


@pytest.mark.integration
@pytest.mark.slow
def test_grown_model_saved_mid_training_predicts_the_same_on_other_backend(
    tmp_path, backend
):
    x, y = random_data(8)
    model = _model(compiled_tiny_vit)
    path = tmp_path / "epoch_{epoch}.keras"
    model.fit(
        x,
        y,
        epochs=2,
        callbacks=[_grower(), keras.callbacks.ModelCheckpoint(str(path))],
        **FIT,
    )
    saved = tmp_path / "epoch_1.keras"  # Saved right after the growth.
    expected = keras.saving.load_model(saved).predict(x, verbose=0)
    other = "tensorflow" if backend == "jax" else "jax"
    np.save(tmp_path / "x.npy", x)
    result = run_python(
        f"""
        import json
        import keras
        import numpy as np
        import keras_depthhet.layers  # noqa: F401 (registers the layers)
        model = keras.saving.load_model({str(saved)!r})
        x = np.load({str(tmp_path / "x.npy")!r})
        print(json.dumps({{
            "pred": model.predict(x, verbose=0).tolist(),
            "params": model.count_params(),
        }}))
        """,
        backend=other,
    )
    assert result["params"] == keras.saving.load_model(saved).count_params()
    assert result["params"] > _model(compiled_tiny_vit).count_params()
    np.testing.assert_allclose(np.array(result["pred"]), expected, atol=1e-5)
