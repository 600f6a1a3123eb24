"""`fit_with_growth` on one device: equivalence, callbacks, traces, errors."""

import csv

import keras
import numpy as np
import pytest

from keras_depthhet.distributed import fit_with_growth
from keras_depthhet.growth.callback import GrowthCallback
from keras_depthhet.layers import GrowableDense, growable_layers
from tests.growth.helpers import random_data, tiny_vit, values_by_path

TRACES = [0]


def counting_loss(y_true, y_pred):
    # Runs in Python only while a train/test function is being traced.
    TRACES[0] += 1
    return keras.losses.sparse_categorical_crossentropy(
        y_true, y_pred, from_logits=True
    )


def tiny_mlp():
    """Two `GrowableDense` layers on the flattened 8x8x1 images.

    `fit_with_growth` rebuilds any functional model from its config; a
    ViT's nested layers are covered in test_rebuild.py. The MLP's train
    step compiles in a fraction of a ViT's time, once per segment.
    """
    inputs = keras.Input((8, 8, 1))
    hidden = keras.layers.Flatten()(inputs)
    hidden = GrowableDense(8, activation="gelu", name="fc1")(hidden)
    outputs = GrowableDense(10, name="fc2")(hidden)
    return keras.Model(inputs, outputs)


def build(loss="sparse"):
    keras.utils.set_random_seed(3)
    model = tiny_mlp()
    model.compile(
        keras.optimizers.Adam(1e-3),
        counting_loss
        if loss == "counting"
        else keras.losses.SparseCategoricalCrossentropy(),
        metrics=["accuracy"],
    )
    return model


class WeightScores(GrowthCallback):
    """Deterministic scores from the weights (no splitting analysis)."""

    def compute_scores(self):
        scores = {}
        for layer in growable_layers(self.model):
            norms = np.abs(keras.ops.convert_to_numpy(layer.kernel)).sum(0)
            scores[layer.name] = np.median(norms) - norms
        return scores


GROWTH = dict(
    interval=1,
    warmup=1,
    param_budget=150,
    layer_threshold=0,
    analysis_data=random_data(8),  # WeightScores does not read it.
    verbose=0,
)


class Snapshots(keras.callbacks.Callback):
    """Weights and optimizer slots at the start of every epoch."""

    def __init__(self):
        super().__init__()
        self.states = {}

    def on_epoch_begin(self, epoch, logs=None):
        model = self.model
        self.states[epoch] = (
            values_by_path(model.variables),
            {
                v.path.split("/", 1)[1]: keras.ops.convert_to_numpy(v)
                for v in model.optimizer.variables
            },
        )


@pytest.mark.slow
def test_equivalent_to_in_place_growth_callback():
    x, y = random_data()
    in_place = build()
    callback, seen = WeightScores(**GROWTH), Snapshots()
    in_place.fit(
        x,
        y,
        batch_size=8,
        epochs=3,
        shuffle=False,
        verbose=0,
        callbacks=[callback, seen],
    )
    functional, rebuilt = Snapshots(), WeightScores(**GROWTH)
    run = fit_with_growth(
        build,
        (x, y),
        epochs=3,
        growth=rebuilt,
        distribution="none",
        callbacks=[functional],
        batch_size=8,
        shuffle=False,
        verbose=0,
    )
    assert len(run.events) == 3 and len(callback.history) == 3
    for ours, theirs in zip(run.events, callback.history, strict=True):
        assert ours["neurons"] == theirs["neurons"]
        assert ours["params_after"] == theirs["params_after"]
        assert ours["total_grown"] == theirs["total_grown"]
    assert run.model.count_params() == in_place.count_params()
    for layer, other in zip(
        growable_layers(run.model), growable_layers(in_place), strict=True
    ):
        assert [r.tolist() for r in layer.growth_rounds] == [
            r.tolist() for r in other.growth_rounds
        ]
    for epoch in (1, 2):
        for ours, theirs in zip(
            functional.states[epoch], seen.states[epoch], strict=True
        ):
            assert ours.keys() == theirs.keys()
            for path in theirs:
                np.testing.assert_allclose(
                    ours[path], theirs[path], atol=1e-5, err_msg=path
                )


def test_plan_growth_decides_without_growing():
    model = build()
    grower = WeightScores(**GROWTH, seed=0)
    grower.set_model(model)
    grower.on_train_begin()
    before = values_by_path(model.variables)
    decision = grower.plan_growth(4)
    assert values_by_path(model.variables).keys() == before.keys()
    assert grower.history == []
    assert decision["epoch"] == 4 and decision["budget"] == 150
    assert decision["params_before"] == model.count_params()
    assert decision["neurons"] == {
        name: len(indices) for name, indices in decision["plan"].items()
    }
    assert set(decision["scores"]) == {
        layer.name for layer in growable_layers(model)
    }
    target = WeightScores(**GROWTH, target_params=model.count_params())
    target.set_model(model)
    target.on_train_begin()
    assert target.plan_growth(4) is None


@pytest.mark.slow
def test_callbacks_and_history_continue_as_one_run(tmp_path):
    x, y = random_data()
    log = tmp_path / "log.csv"
    run = fit_with_growth(
        build,
        (x, y),
        (x[:8], y[:8]),
        epochs=4,
        growth={**GROWTH, "criterion": "random", "seed": 0, "warmup": 2},
        distribution="auto",
        callbacks=[keras.callbacks.CSVLogger(str(log))],
        batch_size=8,
        verbose=0,
    )
    assert run.runtime.name == "none"
    assert run.history.epoch == [0, 1, 2, 3]
    assert run.model.history is run.history
    rows = list(csv.DictReader(open(log)))
    assert [int(r["epoch"]) for r in rows] == [0, 1, 2, 3]
    params = [int(r["num_params"]) for r in rows]
    assert params[0] == params[1] < params[2] < params[3]


@pytest.mark.slow
def test_recompiles_once_per_segment():
    x, y = random_data()
    TRACES[0] = 0
    fit_with_growth(
        lambda: build("counting"),
        (x, y),
        epochs=1,
        distribution="none",
        batch_size=8,
        verbose=0,
    )
    per_segment = TRACES[0]
    assert 1 <= per_segment <= 2
    TRACES[0] = 0
    run = fit_with_growth(
        lambda: build("counting"),
        (x, y),
        epochs=3,
        growth={**GROWTH, "criterion": "random", "seed": 1},
        distribution="none",
        batch_size=8,
        verbose=0,
    )
    assert len(run.events) == 3  # Three segments of 4 steps each.
    assert TRACES[0] == 3 * per_segment


def test_stops_when_a_callback_stops_training():
    class StopAt(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            if epoch == 1:
                self.model.stop_training = True

    x, y = random_data()
    run = fit_with_growth(
        build,
        (x, y),
        epochs=5,
        growth={**GROWTH, "criterion": "random", "warmup": 3},
        distribution="none",
        callbacks=[StopAt()],
        batch_size=8,
        verbose=0,
    )
    assert run.history.epoch == [0, 1] and not run.events


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"distribution": "parameter_server"}, "must be one of"),
        ({"epochs": 0}, "epochs"),
        ({"growth": {"interval": 0}}, "interval"),
        ({"growth": [1]}, "growth"),
        ({"callbacks": [GrowthCallback(criterion="random")]}, "growth="),
        ({"build_model": tiny_vit()}, "build_model"),
        ({"build_model": tiny_vit}, "compiled"),
        ({"growth": {"analysis_data": None}}, "analysis_data"),
        (
            {"callbacks": [keras.callbacks.BackupAndRestore("backup")]},
            "BackupAndRestore",
        ),
        (
            {
                "callbacks": [
                    keras.callbacks.EarlyStopping(restore_best_weights=True)
                ]
            },
            "GrowthEarlyStopping",
        ),
    ],
)
def test_bad_input_fails_before_training(kwargs, match):
    x, y = random_data()
    arguments = dict(build_model=build, epochs=2, distribution="none")
    arguments.update(kwargs)
    with pytest.raises(ValueError, match=match):
        fit_with_growth(train_data=(x, y), batch_size=8, **arguments)


def test_strategy_of_the_other_backend_is_rejected(backend):
    other = "mirrored" if backend == "jax" else "data_parallel"
    with pytest.raises(ValueError, match="backend"):
        fit_with_growth(build, random_data(), epochs=1, distribution=other)


# Strategy scopes exist only on TensorFlow; JAX placement under
# `keras.distribution` is checked in test_multi_device.py.
if keras.backend.backend() == "tensorflow":

    def test_tensorflow_model_built_outside_strategy_scope():
        import tensorflow as tf

        outside = build()
        strategy = tf.distribute.MirroredStrategy(["/cpu:0"])
        with pytest.raises(ValueError, match="outside the scope"):
            fit_with_growth(
                lambda: outside,
                random_data(),
                epochs=1,
                distribution=strategy,
            )
