"""End to end: a model grows on scikit-learn's digits and learns.

The tiny ViT grows by splitting; the gradient proxy, whose analysis is
the same for any model of `GrowableDense` layers, grows the tiny MLP.
"""

import keras
import numpy as np
import pytest
from sklearn.datasets import load_digits

from keras_depthhet.growth import GrowthCallback
from tests.growth.helpers import tiny_mlp, tiny_vit


def _digits():
    digits = load_digits()
    x = (digits.images / 16.0).astype("float32")[..., None]
    y = digits.target.astype("int32")
    order = np.random.default_rng(0).permutation(len(y))
    x, y = x[order], y[order]
    return (x[:1400], y[:1400]), (x[1400:], y[1400:])


@pytest.mark.slow
@pytest.mark.parametrize(
    "criterion, build, layers",
    [
        ("splitting", tiny_vit, ["block_0_mlp_fc1", "block_1_mlp_fc1"]),
        ("gradient_proxy", tiny_mlp, ["fc1", "fc2"]),
    ],
    ids=["splitting-vit", "gradient_proxy-mlp"],
)
def test_digits_grows_by_splitting_and_learns(criterion, build, layers):
    (x, y), (x_test, y_test) = _digits()
    model = build()
    model.compile(
        keras.optimizers.Adam(3e-3),
        keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    initial = model.count_params()
    grower = GrowthCallback(
        warmup=1,
        interval=1,
        param_budget=340,  # 10 neurons of the ViT's FC1 (2 * (16 + 1) each)
        layer_threshold=2,
        target_params=initial + 680,
        analysis_data=[(x[:128], y[:128])],
        layers=layers,
        criterion=criterion,
        verbose=0,
    )
    # Batches of 70 divide the 1,400 samples: no last, smaller batch whose
    # shape would compile the train step once more after every event.
    model.fit(x, y, batch_size=70, epochs=5, callbacks=[grower], verbose=0)
    grown = [e for e in grower.history if e["neurons"]]
    assert len(grown) >= 2
    assert initial + 340 < model.count_params() <= initial + 680
    assert model.count_params() == grower.history[-1]["params_after"]
    for event in grower.history:
        assert event["params_added"] <= 340
        eligible = {
            name
            for name, summary in event["scores"].items()
            if summary["num_negative"] >= 2
        }
        assert set(event["neurons"]) <= eligible
    _, accuracy = model.evaluate(
        x_test, y_test, batch_size=len(x_test), verbose=0
    )
    assert accuracy > 0.5
