"""Two devices: JAX DataParallel, TF MirroredStrategy (subprocesses)."""

import numpy as np
import pytest

from tests.subprocess_utils import run_python

pytestmark = pytest.mark.integration

CHILD = """
import json, os
import keras, numpy as np
if keras.backend.backend() == "tensorflow":
    import tensorflow as tf
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(
        cpu, [tf.config.LogicalDeviceConfiguration()] * 2
    )
from tests.growth.helpers import fixed_batch_loss, random_data, tiny_vit
from keras_depthhet.distributed import fit_with_growth

x, y = random_data(32)

def build():
    keras.utils.set_random_seed(5)
    model = tiny_vit()
    model.compile(
        keras.optimizers.SGD(0.05, momentum=0.9),
        keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    return model

class LossProbe(keras.callbacks.Callback):
    # Loss on a fixed batch at the end of every epoch and at the start
    # of the next one (after an event: the rebuilt model).
    def __init__(self):
        super().__init__()
        self.jumps = []
        self.last = None
    def on_epoch_begin(self, epoch, logs=None):
        if self.last is not None:
            loss = fixed_batch_loss(self.model, x, y)
            self.jumps.append(abs(loss - self.last))
    def on_epoch_end(self, epoch, logs=None):
        self.last = fixed_batch_loss(self.model, x, y)

growth = dict(interval=2, warmup=1, param_budget=150, layer_threshold=0,
              criterion="random", seed=0, verbose=0)
results = {}
for name in ("none", *DISTRIBUTED):
    probe = LossProbe()
    run = fit_with_growth(build, (x, y), epochs=4, growth=growth,
                          distribution=name, callbacks=[probe],
                          batch_size=8, shuffle=False, verbose=0)
    results[name] = dict(
        replicas=run.runtime.num_replicas,
        events=[e["epoch"] for e in run.events],
        params=run.model.count_params(),
        jump=max(probe.jumps),
        loss=fixed_batch_loss(run.model, x, y),
        weights={v.path: keras.ops.convert_to_numpy(v).tolist()
                 for v in run.model.trainable_variables},
    )
errors = {}
for label, kwargs in (
    ("batch", dict(build_model=build, batch_size=7)),
    ("placement", dict(build_model=lambda m=build(): m, batch_size=8)),
):
    try:
        fit_with_growth(train_data=(x, y), epochs=1,
                        distribution=DISTRIBUTED[0], verbose=0, **kwargs)
        errors[label] = None
    except ValueError as error:
        errors[label] = str(error)
print(json.dumps(dict(results=results, errors=errors)))
"""

JAX_TWO_DEVICES = {"XLA_FLAGS": "--xla_force_host_platform_device_count=2"}
# Runtimes, each with its number of data-parallel replicas on 2 devices
# (ModelParallel's mesh is (batch=1, model=2): kernels split by neuron).
CASES = {
    "jax": ({"data_parallel": 2, "model_parallel": 1}, JAX_TWO_DEVICES),
    "tensorflow": ({"mirrored": 2}, {}),
}


@pytest.mark.slow
def test_two_devices_grow_like_one(backend):
    # The child runs on the suite's own backend; the suite runs once per
    # backend, so both runtimes are covered without running either twice.
    runtimes, env = CASES[backend]
    out = run_python(
        CHILD.replace("DISTRIBUTED", repr(tuple(runtimes))),
        backend=backend,
        env=env,
    )
    single = out["results"]["none"]
    assert single["replicas"] == 1
    assert single["events"] == [1, 3]
    # No step runs between an epoch's end and the next one's start, so
    # across an event (a rebuild) the fixed-batch loss must not move.
    assert single["jump"] < 1e-5
    for name, replicas in runtimes.items():
        multi = out["results"][name]
        assert multi["replicas"] == replicas, name
        assert multi["events"] == single["events"], name
        assert multi["params"] == single["params"], name
        assert multi["jump"] < 1e-5, name
        assert abs(multi["loss"] - single["loss"]) < 1e-4, name
        for path, value in single["weights"].items():
            np.testing.assert_allclose(
                multi["weights"][path],
                value,
                atol=1e-4,
                err_msg=f"{name}: {path}",
            )
    assert "divisible by the number of replicas" in out["errors"]["batch"]
    assert "build_model" in out["errors"]["placement"]
