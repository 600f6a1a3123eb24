"""What would fail at the first growth event fails when `fit` starts.

Each case would otherwise fail (or silently mislead) only after the
warm-up; here `fit` must refuse it in `on_train_begin`, before any
training step, with a message naming the argument, and leave the model
unchanged.
"""

import keras
import numpy as np
import pytest

from keras_depthhet import GrowableDense, GrowthCallback, splitting
from keras_depthhet.models import growable_layer_map
from tests.growth.helpers import compiled_tiny_vit, random_data


class _CountSteps(keras.callbacks.Callback):
    def __init__(self):
        super().__init__()
        self.steps = 0

    def on_train_batch_end(self, batch, logs=None):
        self.steps += 1


def _refused(model, grower, x, y, match):
    counter = _CountSteps()
    weights = [keras.ops.convert_to_numpy(w).copy() for w in model.weights]
    with pytest.raises(ValueError, match=match):
        model.fit(x, y, epochs=3, callbacks=[grower, counter], verbose=0)
    assert counter.steps == 0
    after = [keras.ops.convert_to_numpy(w) for w in model.weights]
    assert len(after) == len(weights)
    for a, b in zip(after, weights, strict=True):
        np.testing.assert_array_equal(a, b)


BAD_DATA = {
    "wrong input shape": (
        lambda x, y: (x[:, :4], y),
        "`analysis_data` does not fit the model",
    ),
    "labels out of range": (
        lambda x, y: (x, y + 10),
        "`analysis_data` holds labels that are not class indices",
    ),
    "negative labels": (
        lambda x, y: (x, y - 20),
        "`analysis_data` holds labels that are not class indices",
    ),
    "NaN labels": (
        lambda x, y: (x, np.where(y > 4, np.nan, y).astype("float32")),
        "`analysis_data` holds non-finite targets",
    ),
    "wrong target shape": (
        lambda x, y: (x, np.stack([y, y], axis=1)),
        "`analysis_data`",
    ),
    "fewer targets than inputs": (
        lambda x, y: (x, y[:20]),
        r"`analysis_data` must give as many targets .* as inputs in each "
        r"batch. Received: batch 0 with lengths \{'x': \[32\], 'y': \[20\]\}",
    ),
}


@pytest.mark.parametrize("case", sorted(BAD_DATA))
def test_bad_analysis_data_is_refused_at_train_begin(case):
    x, y = random_data(32)
    model = compiled_tiny_vit()
    make, match = BAD_DATA[case]
    grower = GrowthCallback(warmup=2, interval=1, analysis_data=make(x, y))
    _refused(model, grower, x, y, match)


def test_scale_that_overflows_the_weights_is_refused_at_train_begin():
    x, y = random_data(32)
    model = compiled_tiny_vit()
    grower = GrowthCallback(
        warmup=2, interval=1, scale=1e39, analysis_data=(x, y)
    )
    _refused(model, grower, x, y, "`scale`")


def test_non_finite_weights_are_named_as_weights():
    x, y = random_data(32)
    model = compiled_tiny_vit()
    layer = growable_layer_map(model)["block_0_mlp_fc1"]
    kernel = keras.ops.convert_to_numpy(layer.kernel).copy()
    kernel[0, 0] = np.nan
    layer.kernel.assign(kernel)
    with pytest.raises(ValueError, match="non-finite weights") as error:
        splitting.splitting_eigenvalues(model, (x, y))
    assert "block_0_mlp_fc1/kernel" in str(error.value)
    assert "data" not in str(error.value).split(".")[0]


def test_plan_growth_outside_fit_without_analysis_data_says_what_to_do():
    model = compiled_tiny_vit()
    grower = GrowthCallback(warmup=1, interval=1)
    grower.set_model(model)
    grower.on_train_begin()
    with pytest.raises(ValueError, match="pass `analysis_data`"):
        grower.plan_growth(1)


def test_multi_output_targets_as_a_dict_are_read_as_keras_reads_them():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(40, 8)).astype("float32")
    y = {"a": rng.integers(0, 3, 40), "b": rng.normal(size=(40, 1))}
    batches = splitting.data.read_batches((x, y), None)
    assert [b.size for b in batches] == [32, 8]
    np.testing.assert_array_equal(batches[1].y["a"], y["a"][32:])
    np.testing.assert_array_equal(batches[1].x, x[32:])

    inputs = keras.Input((8,))
    hidden = GrowableDense(16, activation="gelu", name="fc")(inputs)
    model = keras.Model(
        inputs,
        {
            "a": keras.layers.Dense(3, name="a")(hidden),
            "b": keras.layers.Dense(1, name="b")(hidden),
        },
    )
    model.compile(
        "adam",
        loss={
            "a": keras.losses.SparseCategoricalCrossentropy(from_logits=True),
            "b": "mse",
        },
    )
    grower = GrowthCallback(
        warmup=1,
        interval=1,
        param_budget=100,
        layer_threshold=1,
        analysis_data=(x, y),
        verbose=0,
    )
    model.fit(x, y, epochs=1, callbacks=[grower], verbose=0)
    assert (
        grower.history[0]["params_after"] > grower.history[0]["params_before"]
    )


def test_bad_training_targets_are_named_as_training_data_not_data():
    # Without `analysis_data` the event scores the training batches it
    # kept: an error there must not name an argument the user never passed.
    rng = np.random.default_rng(0)
    x = rng.normal(size=(64, 8)).astype("float32")
    y = rng.normal(size=(64, 1)).astype("float32")
    y[5] = np.nan
    model = keras.Sequential(
        [
            keras.Input((8,)),
            GrowableDense(16, activation="gelu"),
            keras.layers.Dense(1),
        ]
    )
    model.compile("sgd", "mse")
    grower = GrowthCallback(
        warmup=1, interval=1, param_budget=100, layer_threshold=1, verbose=0
    )
    with pytest.raises(ValueError) as caught:
        model.fit(x, y, epochs=1, callbacks=[grower], verbose=0)
    message = str(caught.value)
    assert message.startswith(
        "The training data scored at this event (no `analysis_data` given) "
        "holds non-finite targets"
    )
    assert "`data`" not in message
