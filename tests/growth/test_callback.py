"""`GrowthCallback`: schedule, history, logs, budget and bad input."""

import csv
import json

import keras
import numpy as np
import pytest

from keras_depthhet.growth import GrowthCallback, plan_cost
from keras_depthhet.models.vit import growable_layers
from tests.growth.helpers import (
    compiled_tiny_mlp,
    layer_costs,
    random_data,
)


class _FixedScores(GrowthCallback):
    """Hand-made scores: the callback's wiring without the analysis."""

    def __init__(self, scores_fn, **kwargs):
        super().__init__(criterion="splitting", **kwargs)
        self.scores_fn = scores_fn

    def compute_scores(self):
        return {
            layer.name: self.scores_fn(layer)
            for layer in growable_layers(self.model)
            if self.layers is None or layer.name in self.layers
        }


def test_event_schedule():
    paper = GrowthCallback(criterion="random")
    assert [e for e in range(1, 150) if paper.is_event_epoch(e)] == [
        50,
        80,
        110,
        140,
    ]
    every = GrowthCallback(warmup=1, interval=1, criterion="random")
    assert all(every.is_event_epoch(e) for e in range(1, 6))
    from_zero = GrowthCallback(warmup=0, interval=3, criterion="random")
    assert [e for e in range(1, 10) if from_zero.is_event_epoch(e)] == [
        3,
        6,
        9,
    ]


@pytest.mark.slow
def test_events_history_logs_and_standard_callbacks(tmp_path, capsys):
    x, y = random_data()
    model = compiled_tiny_mlp()
    initial = model.count_params()
    grower = GrowthCallback(
        warmup=1,
        interval=2,
        param_budget=500,
        layer_threshold=0,
        criterion="random",
        seed=3,
        log_path=tmp_path / "growth.jsonl",
    )
    csv_path = tmp_path / "log.csv"
    callbacks = [
        grower,
        keras.callbacks.EarlyStopping(monitor="loss", patience=10),
        keras.callbacks.ModelCheckpoint(tmp_path / "model.keras"),
        keras.callbacks.CSVLogger(str(csv_path)),
        keras.callbacks.ReduceLROnPlateau(monitor="loss", patience=1),
        keras.callbacks.TensorBoard(log_dir=str(tmp_path / "tensorboard")),
    ]
    history = model.fit(
        x, y, batch_size=16, epochs=5, callbacks=callbacks, verbose=0
    )
    events = grower.history
    assert [e["epoch"] for e in events] == [1, 3, 5]
    costs = layer_costs(model)
    params = initial
    for event in events:
        assert event["params_before"] == params
        assert 500 - max(costs.values()) < event["params_added"] <= 500
        assert event["params_after"] == params + event["params_added"]
        assert event["params_added"] == plan_cost(
            {n: range(k) for n, k in event["neurons"].items()}, costs
        )
        params = event["params_after"]
    assert model.count_params() == params
    grown = {layer.name: layer.num_grown for layer in growable_layers(model)}
    assert events[-1]["total_grown"] == grown
    expected = [events[0]["params_after"]] * 2 + [events[1]["params_after"]]
    expected += [events[1]["params_after"], params]
    assert history.history["num_params"] == expected
    with open(csv_path) as f:
        rows = list(csv.DictReader(f))
    assert [int(r["num_params"]) for r in rows] == expected
    with open(tmp_path / "growth.jsonl") as f:
        assert [json.loads(line) for line in f] == events
    lines = [
        line
        for line in capsys.readouterr().out.splitlines()
        if line.startswith("GrowthCallback:")
    ]
    assert len(lines) == 3 and "-> " in lines[0]
    # The checkpoint of the last epoch is the grown model.
    restored = keras.saving.load_model(tmp_path / "model.keras")
    assert restored.count_params() == params
    # TensorBoard logged one run with the parameter count of every epoch.
    assert _tensorboard_scalars(tmp_path / "tensorboard" / "train") == {
        epoch: float(n) for epoch, n in enumerate(expected)
    }


def _tensorboard_scalars(log_dir, tag="epoch_num_params"):
    import tensorflow as tf

    files = sorted(log_dir.glob("events.out.tfevents.*"))
    assert len(files) == 1, files
    scalars = {}
    for event in tf.compat.v1.train.summary_iterator(str(files[0])):
        for value in event.summary.value:
            if value.tag == tag:
                scalars[event.step] = float(tf.make_ndarray(value.tensor))
    return scalars


def test_hand_made_scores_choose_eligible_neurons_of_taking_part_layers():
    x, y = random_data()
    model = compiled_tiny_mlp()

    def scores(layer):
        values = np.ones(layer.units)
        if layer.name == "fc1":
            values[[1, 4, 6]] = [-3.0, -1.0, -2.0]
        if layer.name == "fc2":
            values[0] = -10.0  # Below the threshold of 2: ignored.
        return values

    grower = _FixedScores(
        scores, warmup=1, interval=1, param_budget=10_000, layer_threshold=2
    )
    model.fit(x, y, batch_size=32, epochs=1, callbacks=[grower], verbose=0)
    layer = model.get_layer("fc1")
    assert [r.tolist() for r in layer.growth_rounds] == [[1, 4, 6]]
    event = grower.history[0]
    assert event["neurons"] == {"fc1": 3}
    assert event["scores"]["fc1"]["min"] == -3.0
    assert event["scores"]["fc1"]["num_negative"] == 3


def test_no_eligible_neuron_logs_one_line(capsys):
    x, y = random_data()
    model = compiled_tiny_mlp()
    params = model.count_params()
    grower = _FixedScores(
        lambda layer: np.ones(layer.units), warmup=1, interval=1
    )
    model.fit(x, y, batch_size=32, epochs=1, callbacks=[grower], verbose=0)
    assert model.count_params() == params
    assert grower.history[0]["neurons"] == {}
    out = [
        line
        for line in capsys.readouterr().out.splitlines()
        if "GrowthCallback" in line
    ]
    assert len(out) == 1 and "no growth" in out[0]


@pytest.mark.slow
def test_target_params_is_never_exceeded_and_stops_growth():
    x, y = random_data()
    model = compiled_tiny_mlp()
    initial = model.count_params()
    cheapest = layer_costs(model)["fc2"]
    target = initial + 5 * cheapest + cheapest // 2
    grower = GrowthCallback(
        warmup=1,
        interval=1,
        param_budget=3 * cheapest,
        layer_threshold=0,
        target_params=target,
        criterion="random",
        seed=0,
        layers=["fc2"],
    )
    # Events after epochs 1 and 2 grow; those after 3 and 4 find no
    # neuron that fits under the target.
    model.fit(x, y, batch_size=32, epochs=4, callbacks=[grower], verbose=0)
    assert model.count_params() <= target
    assert target - model.count_params() < cheapest
    assert len(grower.history) == 2
    for event in grower.history:
        assert set(event["neurons"]) <= {"fc2"}


def test_lr_budget_schedule_scales_the_budget():
    x, y = random_data()
    schedule = keras.optimizers.schedules.ExponentialDecay(1e-3, 1, 0.5)
    model = compiled_tiny_mlp(keras.optimizers.Adam(schedule))
    grower = GrowthCallback(
        warmup=1,
        interval=1,
        param_budget=1024,
        layer_threshold=0,
        criterion="random",
        budget_schedule="lr",
    )
    model.fit(x, y, batch_size=16, epochs=2, callbacks=[grower], verbose=0)
    # Two steps per epoch: the rate is halved twice per epoch.
    assert [e["budget"] for e in grower.history] == pytest.approx([256, 64])


def test_lr_budget_schedule_is_relative_to_the_peak_after_warm_up():
    x, y = random_data()
    # 2 steps per epoch; linear warm-up from 1e-6 to 1e-3 over 2 steps,
    # then cosine decay to 0 over 4 steps.
    schedule = keras.optimizers.schedules.CosineDecay(
        1e-6, 4, alpha=0.0, warmup_target=1e-3, warmup_steps=2
    )
    model = compiled_tiny_mlp(keras.optimizers.Adam(schedule))
    grower = GrowthCallback(
        warmup=2,
        interval=1,
        param_budget=1024,
        layer_threshold=0,
        criterion="random",
        budget_schedule="lr",
    )
    model.fit(x, y, batch_size=16, epochs=3, callbacks=[grower], verbose=0)
    # Events after steps 4 and 6: cos decay at 2/4 and 4/4 of the way.
    expected = [1024 * 0.5 * (1 + np.cos(np.pi * k / 4)) for k in (2, 4)]
    budgets = [e["budget"] for e in grower.history]
    assert budgets[0] == pytest.approx(expected[0], rel=1e-4)
    assert len(budgets) == 1 or budgets[1] < 1


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"interval": 0}, "interval"),
        ({"warmup": -1}, "warmup"),
        ({"param_budget": 0}, "param_budget"),
        ({"param_budget": -5.0}, "param_budget"),
        ({"layer_threshold": -1}, "layer_threshold"),
        ({"scale": 0}, "scale"),
        ({"target_params": 0}, "target_params"),
        ({"criterion": "fisher"}, "criterion"),
        ({"budget_schedule": "cosine"}, "budget_schedule"),
        ({"budget_split": "halves"}, "budget_split"),
        ({"analysis_batches": 0}, "analysis_batches"),
        ({"layers": "block_0_mlp_fc1"}, "layers"),
        ({"verbose": 3}, "verbose"),
    ],
)
def test_bad_arguments_raise_at_construction(kwargs, match):
    with pytest.raises(ValueError, match=match):
        GrowthCallback(**{"criterion": "random", **kwargs})


def _plain_model():
    model = keras.Sequential(
        [keras.Input((8, 8, 1)), keras.layers.Flatten(), keras.layers.Dense(10)]
    )
    model.compile("adam", "sparse_categorical_crossentropy")
    return model


@pytest.mark.parametrize(
    "make_model, kwargs, match",
    [
        (_plain_model, {}, "GrowableDense"),
        (compiled_tiny_mlp, {"layers": ["head"]}, "layers"),
    ],
)
def test_bad_model_raises_before_any_step(make_model, kwargs, match):
    x, y = random_data()
    model = make_model()
    grower = GrowthCallback(criterion="random", **kwargs)
    with pytest.raises(ValueError, match=match):
        model.fit(x, y, epochs=1, callbacks=[grower], verbose=0)
    assert int(model.optimizer.iterations) == 0


def test_a_callback_reused_on_another_model_starts_afresh(capsys):
    x, y = random_data()
    grower = GrowthCallback(
        warmup=1,
        interval=1,
        param_budget=300,
        layer_threshold=0,
        criterion="random",
        seed=0,
    )
    first = compiled_tiny_mlp()
    first.fit(x, y, batch_size=16, epochs=2, callbacks=[grower], verbose=0)
    assert [e["epoch"] for e in grower.history] == [1, 2]
    # The same model trained on keeps its history.
    first.fit(
        x, y, batch_size=16, initial_epoch=2, epochs=3, callbacks=[grower],
        verbose=0,
    )
    assert [e["epoch"] for e in grower.history] == [1, 2, 3]
    capsys.readouterr()
    second = compiled_tiny_mlp()
    params = second.count_params()
    second.fit(x, y, batch_size=16, epochs=1, callbacks=[grower], verbose=0)
    assert "the 3 events of the previous one" in capsys.readouterr().out
    assert [e["epoch"] for e in grower.history] == [1]
    assert grower.history[0]["params_before"] == params
    assert grower.history[0]["params_after"] == second.count_params()
    # A state set before a fit is the next model's.
    third = compiled_tiny_mlp()
    grower.set_state({"history": [{"epoch": 7}], "initial_lr": None})
    third.fit(x, y, batch_size=16, epochs=1, callbacks=[grower], verbose=0)
    assert [e["epoch"] for e in grower.history] == [7, 1]


@pytest.mark.integration  # Seven events to pass TF's warning threshold.
@pytest.mark.slow
def test_no_retracing_warning_at_events_and_the_filter_is_removed():
    """Each event below outgrows the layers' capacity, so TensorFlow traces
    the capture step and Keras's train and test functions anew (2 steps an
    epoch: 5 traces in 10 calls is TensorFlow's warning threshold)."""
    import logging

    records = []
    handler = logging.Handler()
    handler.emit = records.append
    logger = logging.getLogger("tensorflow")
    logger.addHandler(handler)
    x, y = random_data(32)
    model = compiled_tiny_mlp()
    shapes = []
    grower = GrowthCallback(
        warmup=1,
        interval=1,
        param_budget=5000,
        layer_threshold=0,
        analysis_data=(x[:16], y[:16]),
        verbose=0,
    )
    record_shapes = keras.callbacks.LambdaCallback(
        on_epoch_end=lambda epoch, logs: shapes.append(
            [tuple(w.shape) for w in model.weights]
        )
    )
    try:
        model.fit(
            x,
            y,
            batch_size=16,
            epochs=7,
            validation_data=(x[:16], y[:16]),
            callbacks=[grower, record_shapes],
            verbose=0,
        )
        assert len(grower.history) == 7
        assert all(a != b for a, b in zip(shapes, shapes[1:], strict=False))
        assert not [r.getMessage() for r in records]
        # Other retracing warnings pass, and this one once `fit` is over.
        for name in ("make_step.<locals>.traced", "TensorFlowTrainer."
                     "_make_function.<locals>.multi_step_on_iterator"):
            logger.warning(
                f"5 out of the last 5 calls to <function {name}> triggered "
                "tf.function retracing."
            )
        assert len(records) == 2
    finally:
        logger.removeHandler(handler)
