"""`grow_model` inside `fit`: function, optimizer state and new weights."""

import keras
import numpy as np
import pytest

from keras_depthhet.growth import grow_model, plan_cost, rebuild_optimizer
from tests.growth.helpers import (
    compiled_tiny_mlp,
    compiled_tiny_transformer,
    compiled_tiny_vit,
    fixed_batch_loss,
    layer_costs,
    random_data,
    values_by_path,
)

PLAN = {"fc1": np.array([0, 5, 7]), "fc2": np.array([1, 2, 15])}
"""A plan for `compiled_tiny_mlp`: growth inside `fit` is the same for any
model of `GrowableDense` layers."""


class _GrowOnce(keras.callbacks.Callback):
    """Grows by `plan` at the end of epoch `epoch`; records what it saw."""

    def __init__(self, plan, x, y, epoch=0):
        super().__init__()
        self.plan, self.x, self.y, self.epoch = plan, x, y, epoch
        self.seen = {}

    def on_epoch_end(self, epoch, logs=None):
        if epoch != self.epoch:
            return
        model, optimizer = self.model, self.model.optimizer
        seen = self.seen
        seen["loss_before"] = fixed_batch_loss(model, self.x, self.y)
        seen["params_before"] = model.count_params()
        seen["slots_before"] = values_by_path(optimizer.variables)
        seen["weights_before"] = {v.path for v in model.weights}
        seen["lr_before"] = float(
            keras.ops.convert_to_numpy(optimizer.learning_rate)
        )
        seen["added"] = grow_model(model, self.plan)
        seen["loss_after"] = fixed_batch_loss(model, self.x, self.y)
        seen["params_after"] = model.count_params()
        seen["slots_after"] = values_by_path(optimizer.variables)
        seen["lr_after"] = float(
            keras.ops.convert_to_numpy(optimizer.learning_rate)
        )
        seen["new_weights"] = {
            v.path: keras.ops.convert_to_numpy(v).copy()
            for v in model.weights
            if v.path not in seen["weights_before"]
        }


TRANSFORMER_PLAN = {
    "query": np.array([0, 5]),
    "value": np.array([7]),
    "attention_output": np.array([1, 2]),
    "fc1": np.array([3, 4]),
}
"""A plan for `compiled_tiny_transformer`: `GrowableEinsumDense` units of
`MultiHeadAttention`'s projections beside `GrowableDense` neurons."""


@pytest.mark.slow
@pytest.mark.parametrize(
    "build, plan, jit_compile",
    [
        (compiled_tiny_mlp, PLAN, True),
        (compiled_tiny_mlp, PLAN, False),
        (compiled_tiny_transformer, TRANSFORMER_PLAN, "auto"),
    ],
    ids=["mlp-xla", "mlp", "transformer"],
)
def test_growth_inside_fit_keeps_function_and_optimizer_state(
    build, plan, jit_compile
):
    x, y = random_data(16)
    schedule = keras.optimizers.schedules.ExponentialDecay(1e-3, 3, 0.5)
    model = build(keras.optimizers.Adam(schedule), jit_compile=jit_compile)
    grower = _GrowOnce(plan, x, y)
    model.fit(x, y, batch_size=8, epochs=2, callbacks=[grower], verbose=0)
    seen = grower.seen

    # (a) Same function on a fixed batch.
    assert abs(seen["loss_before"] - seen["loss_after"]) < 1e-5
    # (d) Parameters added equal the plan's cost.
    cost = plan_cost(plan, layer_costs(model))
    assert seen["added"] == cost
    assert seen["params_after"] - seen["params_before"] == cost
    # (b) Old slots (moments, iteration count) unchanged; new slots zero.
    before, after = seen["slots_before"], seen["slots_after"]
    assert set(before) < set(after)
    for path, value in before.items():
        np.testing.assert_array_equal(after[path], value, err_msg=path)
    new_slots = set(after) - set(before)
    assert len(new_slots) == 2 * len(seen["new_weights"])
    for path in new_slots:
        assert not np.any(after[path]), path
    assert seen["lr_before"] == seen["lr_after"]
    # (c) The new weights and their slots move with further training.
    assert int(model.optimizer.iterations) == 4
    for path, initial in seen["new_weights"].items():
        variable = next(v for v in model.weights if v.path == path)
        assert np.abs(keras.ops.convert_to_numpy(variable) - initial).max() > 0
    final = values_by_path(model.optimizer.variables)
    for path in new_slots:
        assert np.any(final[path]), path


def test_adamw_weight_decay_exclusions_cover_growth_biases():
    x, y = random_data()
    # wd * lr = 0.5: a decayed weight halves in one step, far more than the
    # Adam step (about lr) could move it.
    optimizer = keras.optimizers.AdamW(learning_rate=1e-3, weight_decay=500.0)
    optimizer.exclude_from_weight_decay(var_names=["bias"])
    model = compiled_tiny_mlp(optimizer)
    model.fit(x, y, batch_size=32, epochs=1, verbose=0)
    layer = model.get_layer("fc2")
    layer.bias.assign(np.full(layer.units, 5.0, "float32"))
    layer.kernel.assign(np.full(layer.kernel.shape, 5.0, "float32"))
    grow_model(model, {layer.name: [0, 1]})
    model.fit(x, y, batch_size=32, epochs=1, verbose=0)
    growth = {v.name: keras.ops.convert_to_numpy(v) for v in layer.weights}
    # Initialised to +/- 0.2 * 5 = 1.
    np.testing.assert_allclose(growth["growth_bias_plus"], 1.0, atol=0.01)
    np.testing.assert_allclose(growth["growth_bias_minus"], -1.0, atol=0.01)
    np.testing.assert_allclose(growth["growth_kernel_plus"], 0.5, atol=0.01)
    np.testing.assert_allclose(growth["growth_kernel_minus"], -0.5, atol=0.01)


def test_growth_between_fits_and_rebuild_counts():
    """On the ViT: its layers, nested in blocks, grow as a flat model's."""
    x, y = random_data()
    model = compiled_tiny_vit()
    model.fit(x, y, batch_size=16, epochs=1, verbose=0)
    predict_before = model.predict(x, verbose=0)
    slots_before = values_by_path(model.optimizer.variables)
    assert grow_model(model, {"block_1_mlp_fc1": [4]}) == 2 * (16 + 1)
    np.testing.assert_allclose(
        model.predict(x, verbose=0), predict_before, atol=1e-5
    )
    # Rebuilding again with the same variables keeps every slot.
    assert rebuild_optimizer(model.optimizer, model.trainable_variables) == 0
    slots = values_by_path(model.optimizer.variables)
    for path, value in slots_before.items():
        np.testing.assert_array_equal(slots[path], value)
    history = model.fit(x, y, batch_size=16, epochs=2, verbose=0)
    assert np.all(np.isfinite(history.history["loss"]))
    assert np.isfinite(model.evaluate(x, y, verbose=0)[0])


def test_empty_plan_changes_nothing():
    model = compiled_tiny_vit()
    model.build((None, 8, 8, 1))
    params = model.count_params()
    assert grow_model(model, {}) == 0
    assert model.count_params() == params


@pytest.mark.parametrize(
    "plan, match",
    [
        ({"head": [0]}, "not a growable"),
        ({"block_0_mlp_fc1": [0, 0]}, "distinct"),
        ({"block_0_mlp_fc1": [99]}, "distinct"),
        ({"block_0_mlp_fc1": []}, "non-empty"),
        ([("block_0_mlp_fc1", [0])], "dict"),
    ],
)
def test_bad_plan_raises_and_leaves_model_unchanged(plan, match):
    model = compiled_tiny_vit()
    model.optimizer.build(model.trainable_variables)
    params = model.count_params()
    num_slots = len(model.optimizer.variables)
    # A valid layer listed first must not grow when a later entry is bad.
    if isinstance(plan, dict):
        plan = {"block_1_mlp_fc1": [0], **plan}
    with pytest.raises(ValueError, match=match):
        grow_model(model, plan)
    assert model.count_params() == params
    assert len(model.optimizer.variables) == num_slots
