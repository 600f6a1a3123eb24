"""GrowthCallback beside EarlyStopping, ModelCheckpoint and BackupAndRestore:
their growth-aware subclasses, and Keras's own ones failing loudly."""

import json

import keras
import numpy as np
import pytest

from keras_depthhet import GrowthCallback
from keras_depthhet.growth import GrowthBackupAndRestore, GrowthEarlyStopping
from tests.growth.helpers import compiled_tiny_mlp, random_data


def _grower(**kwargs):
    arguments = dict(
        warmup=1,
        interval=1,
        param_budget=300,
        layer_threshold=0,
        criterion="random",
        seed=0,
        verbose=0,
    )
    arguments.update(kwargs)
    return GrowthCallback(**arguments)


class _Predictions(keras.callbacks.Callback):
    """Predictions on `x` at the end of each epoch (after growth)."""

    def __init__(self, x):
        super().__init__()
        self.x, self.by_epoch = x, {}

    def on_epoch_end(self, epoch, logs=None):
        self.by_epoch[epoch] = self.model.predict(self.x, verbose=0)


class _FakeLoss(keras.callbacks.Callback):
    """Makes epoch `best` the best monitored epoch."""

    def __init__(self, best):
        super().__init__()
        self.best = best

    def on_epoch_end(self, epoch, logs=None):
        logs["fake"] = 0.0 if epoch == self.best else 1.0 + epoch


@pytest.mark.slow
@pytest.mark.parametrize("best", [0, 2])
def test_early_stopping_restores_pre_growth_best_into_the_grown_model(best):
    """Best epoch 0 comes before any event; best epoch 2 after two, so its
    weights hold trained pairs that the last round widens."""
    x, y = random_data(32)
    model = compiled_tiny_mlp()
    grower = _grower()
    predictions = _Predictions(x)
    stopper = GrowthEarlyStopping(
        monitor="fake", mode="min", patience=10, restore_best_weights=True
    )
    # Events follow every epoch, so the best epoch's weights come from a
    # smaller model. The stopper comes first or last: it follows growth
    # in either place.
    callbacks = [grower, _FakeLoss(best=best), predictions, stopper]
    if best == 2:
        callbacks = [_FakeLoss(best=best), stopper, grower, predictions]
    model.fit(x, y, batch_size=8, epochs=3, callbacks=callbacks, verbose=0)
    assert len(grower.history) == 3
    best_params = grower.history[best]["params_before"]
    assert model.count_params() > best_params
    # Epoch 0's prediction was taken after its event, which preserved the
    # function: the restored grown model computes the best epoch's function.
    np.testing.assert_allclose(
        model.predict(x, verbose=0), predictions.by_epoch[best], atol=1e-5
    )


@pytest.mark.slow
def test_best_weights_checkpoint_loads_into_the_grown_model(tmp_path):
    x, y = random_data(32)
    model = compiled_tiny_mlp()
    path = tmp_path / "best.weights.h5"
    predictions = _Predictions(x)
    model.fit(
        x,
        y,
        batch_size=8,
        epochs=3,
        callbacks=[
            _grower(),
            _FakeLoss(best=0),
            predictions,
            keras.callbacks.ModelCheckpoint(
                path,
                monitor="fake",
                mode="min",
                save_best_only=True,
                save_weights_only=True,
            ),
        ],
        verbose=0,
    )
    with pytest.warns(UserWarning, match="optimizer"):
        model.load_weights(path)
    np.testing.assert_allclose(
        model.predict(x, verbose=0), predictions.by_epoch[0], atol=1e-5
    )


@pytest.mark.slow
def test_keras_early_stopping_fails_loudly_after_growth():
    """Keras's own EarlyStopping cannot restore pre-growth weights: it
    raises instead of restoring something else."""
    x, y = random_data(16)
    model = compiled_tiny_mlp()
    stopper = keras.callbacks.EarlyStopping(
        monitor="fake", mode="min", patience=10, restore_best_weights=True
    )
    with pytest.raises(ValueError):
        model.fit(
            x,
            y,
            batch_size=8,
            epochs=2,
            callbacks=[_grower(), _FakeLoss(best=0), stopper],
            verbose=0,
        )


def test_backup_and_restore_must_come_after_growth_callback(tmp_path):
    x, y = random_data(16)
    model = compiled_tiny_mlp()
    params = model.count_params()
    grower = _grower()
    backup = GrowthBackupAndRestore(tmp_path / "backup", grower)
    with pytest.raises(ValueError, match="before `GrowthBackupAndRestore`"):
        model.fit(x, y, epochs=1, callbacks=[backup, grower], verbose=0)
    assert model.count_params() == params
    with pytest.raises(ValueError, match="before `GrowthBackupAndRestore`"):
        model.fit(x, y, epochs=1, callbacks=[backup], verbose=0)
    with pytest.raises(ValueError, match="growth"):
        GrowthBackupAndRestore(tmp_path / "backup", "grower")


@pytest.mark.slow
def test_backup_resumes_a_fresh_model_with_growth_and_optimizer_state(
    tmp_path,
):
    x, y = random_data(32)
    backup_dir = tmp_path / "backup"

    class Interrupt(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            if epoch == 1:
                raise RuntimeError("interrupted")

    def run(extra):
        keras.utils.set_random_seed(7)
        model = compiled_tiny_mlp()
        grower = _grower()
        model.fit(
            x,
            y,
            batch_size=8,
            epochs=3,
            shuffle=False,
            callbacks=[
                grower,
                GrowthBackupAndRestore(
                    backup_dir, grower, delete_checkpoint=False
                ),
                *extra,
            ],
            verbose=0,
        )
        return model, grower

    with pytest.raises(RuntimeError, match="interrupted"):
        run([Interrupt()])
    state = json.loads((backup_dir / "growth_state.json").read_text())
    assert [e["epoch"] for e in state["history"]] == [1, 2]
    resumed, grower = run([])
    assert [e["epoch"] for e in grower.history] == [1, 2, 3]

    backup_dir = tmp_path / "uninterrupted"
    straight, straight_grower = run([])
    assert grower.history == straight_grower.history
    assert resumed.count_params() == straight.count_params()
    for a, b in zip(resumed.weights, straight.weights, strict=True):
        np.testing.assert_allclose(
            keras.ops.convert_to_numpy(a),
            keras.ops.convert_to_numpy(b),
            atol=1e-5,
        )
    iterations = keras.ops.convert_to_numpy(resumed.optimizer.iterations)
    assert int(iterations) == 12
