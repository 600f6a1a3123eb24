"""Growth inside `fit` on two devices (JAX DataParallel, TF Mirrored).

Device flags must be set before the backend starts, so each case runs in a
child interpreter; each backend's suite runs its own backend's case.
"""

import numpy as np
import pytest

from tests.subprocess_utils import run_python

_COMMON = """
import json

import keras
import numpy as np

from keras_depthhet.growth import GrowthCallback
from tests.growth.helpers import compiled_tiny_vit, random_data


class Watch(keras.callbacks.Callback):
    # Records the growth weights right after the event (epoch 1).
    def on_epoch_end(self, epoch, logs=None):
        if epoch == 0:
            self.after_growth = {
                v.path: keras.ops.convert_to_numpy(v)
                for v in self.model.weights if "growth_" in v.path
            }


def grow_and_train(jit_compile):
    x, y = random_data(64)
    model = compiled_tiny_vit(jit_compile=jit_compile)
    params = model.count_params()
    grower = GrowthCallback(
        warmup=1, interval=1, param_budget=400, layer_threshold=0,
        criterion="random", seed=0, verbose=0,
    )
    watch = Watch()
    history = model.fit(
        x, y, batch_size=16, epochs=3, callbacks=[grower, watch], verbose=0
    )
    # Later events widen the pairs: compare the columns of the first event.
    moved = min(
        np.abs(
            keras.ops.convert_to_numpy(v)[..., : old.shape[-1]] - old
        ).max()
        for v in model.weights
        if (old := watch.after_growth.get(v.path)) is not None
    )
    return model, {
        "params": [params, model.count_params()],
        "events": len(grower.history),
        "losses": history.history["loss"],
        "moved": float(moved),
    }
"""


def _check(result):
    assert result["events"] == 3
    assert result["params"][1] > result["params"][0]
    assert all(np.isfinite(result["losses"]))
    assert result["moved"] > 0


@pytest.mark.integration
@pytest.mark.slow
def test_growth_inside_fit_on_two_devices(backend):
    if backend == "jax":
        code = (
            _COMMON
            + """
devices = keras.distribution.list_devices("cpu")
assert len(devices) == 2, devices
keras.distribution.set_distribution(
    keras.distribution.DataParallel(devices=devices)
)
model, result = grow_and_train(jit_compile=True)
result["devices"] = min(
    len(v.value.sharding.device_set)
    for v in model.weights + model.optimizer.variables
)
print(json.dumps(result))
"""
        )
        env = {"XLA_FLAGS": "--xla_force_host_platform_device_count=2"}
    else:
        code = (
            """
import tensorflow as tf
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(
    cpu, [tf.config.LogicalDeviceConfiguration()] * 2
)
"""
            + _COMMON
            + """
strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
# XLA cannot compile steps that read variables mirrored on other CPUs.
with strategy.scope():
    model, result = grow_and_train(jit_compile=False)
result["devices"] = min(
    len(getattr(v.value, "values", [v.value]))
    for v in model.weights + model.optimizer.variables
)
print(json.dumps(result))
"""
        )
        env = {}
    result = run_python(code, backend=backend, env=env, timeout=500)
    _check(result)
    # Every weight and optimizer slot, new ones included, spans 2 devices.
    assert result["devices"] == 2
