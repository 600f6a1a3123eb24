"""`RecentBatches`: the batches kept are those `fit` trained on.

The samples are index-labelled (every pixel of sample `i` is `i`, its
label `i % 10`, its weight `0.5 + i / 100`), so a kept batch names the
samples it holds.
"""

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_depthhet.growth.recent_batches import RecentBatches
from tests.growth.helpers import tiny_mlp
from tests.subprocess_utils import run_python

N, BATCH = 40, 8
INDEX = np.arange(N)
X = np.broadcast_to(
    INDEX[:, None, None, None].astype("float32"), (N, 8, 8, 1)
).copy()
Y = INDEX % 10
WEIGHTS = (0.5 + INDEX / 100).astype("float32")


class _KeepIn(keras.callbacks.Callback):
    """Keeps batches in the given epochs; records the train function used."""

    def __init__(self, recent, epochs):
        super().__init__()
        self.recent = recent
        self.epochs = set(epochs)
        self.functions = {}

    def on_train_begin(self, logs=None):
        self.recent.attach(self.model)
        self.keras_function = self.model.train_function

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch
        if epoch in self.epochs:
            self.recent.start()

    def on_train_batch_begin(self, batch, logs=None):
        self.functions.setdefault(self.epoch, set()).add(
            self.model.train_function is self.keras_function
        )

    def on_epoch_end(self, epoch, logs=None):
        self.recent.stop()


class _IndexedPyDataset(keras.utils.PyDataset):
    def __len__(self):
        return N // BATCH

    def __getitem__(self, i):
        part = slice(i * BATCH, (i + 1) * BATCH)
        return X[part], Y[part], WEIGHTS[part]


def _compiled(steps_per_execution=1, jit_compile=True):
    """A model of `GrowableDense` layers: what `fit` feeds its train
    function does not depend on the model."""
    model = tiny_mlp()
    model.compile(
        keras.optimizers.Adam(1e-3),
        keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        steps_per_execution=steps_per_execution,
        jit_compile=jit_compile,
    )
    return model


def _generator():
    for start in range(0, N, BATCH):
        part = slice(start, start + BATCH)
        yield X[part], Y[part], WEIGHTS[part]


def _fit_args(kind):
    if kind == "arrays":
        return dict(x=X, y=Y, sample_weight=WEIGHTS, batch_size=BATCH)
    if kind == "dataset":
        data = tf.data.Dataset.from_tensor_slices((X, Y, WEIGHTS))
        return dict(x=data.batch(BATCH))
    if kind == "pydataset":
        return dict(x=_IndexedPyDataset())
    return dict(x=_generator(), steps_per_epoch=N // BATCH)


def _assert_indexed(batches, starts, size=BATCH, weighted=True):
    assert [batch.size for batch in batches] == [size] * len(starts)
    for batch, start in zip(batches, starts, strict=True):
        index = np.arange(start, start + size)
        assert isinstance(batch.x, np.ndarray)
        np.testing.assert_array_equal(batch.x[:, 0, 0, 0], index)
        np.testing.assert_array_equal(batch.y, index % 10)
        if weighted:
            np.testing.assert_allclose(batch.sample_weight, WEIGHTS[index])
        else:
            assert batch.sample_weight is None


@pytest.mark.parametrize(
    "kind", ["arrays", "dataset", "pydataset", "generator"]
)
def test_keeps_the_last_batches_of_each_input_kind(kind):
    # Five batches run as executions of 3 and 2 steps (one step each is the
    # canary's case).
    model = _compiled(steps_per_execution=3)
    recent = RecentBatches(3)
    model.fit(
        **_fit_args(kind),
        epochs=1,
        shuffle=False,
        callbacks=[_KeepIn(recent, [0])],
        verbose=0,
    )
    _assert_indexed(recent.batches(), [16, 24, 32])


def test_nothing_kept_in_epochs_not_started():
    model = _compiled()
    recent = RecentBatches(None)
    keep = _KeepIn(recent, [1])
    model.fit(X, Y, batch_size=BATCH, epochs=3, callbacks=[keep], verbose=0)
    batches = recent.batches()
    # Only epoch 1's batches (shuffled: every sample once), and Keras's own
    # train function runs in the other epochs.
    assert len(batches) == N // BATCH
    seen = np.concatenate([batch.x[:, 0, 0, 0] for batch in batches])
    np.testing.assert_array_equal(np.sort(seen), INDEX)
    assert all(batch.sample_weight is None for batch in batches)
    assert keep.functions == {0: {True}, 1: {False}, 2: {True}}
    assert model.train_function is keep.keras_function
    assert not recent.started


def test_replaying_the_kept_batches_gives_the_trained_weights():
    model = _compiled(steps_per_execution=3)
    initial = model.get_weights()
    recent = RecentBatches(None)
    model.fit(
        X,
        Y,
        sample_weight=WEIGHTS,
        batch_size=BATCH,
        epochs=1,
        callbacks=[_KeepIn(recent, [0])],
        verbose=0,
    )
    replay = _compiled()
    replay.set_weights(initial)
    for batch in recent.batches():
        replay.train_on_batch(
            batch.x, batch.y, sample_weight=batch.sample_weight
        )
    moved = max(
        np.abs(a - b).max()
        for a, b in zip(initial, model.get_weights(), strict=True)
    )
    assert moved > 1e-4
    for trained, replayed in zip(
        model.get_weights(), replay.get_weights(), strict=True
    ):
        np.testing.assert_allclose(replayed, trained, rtol=1e-5, atol=1e-6)


def test_canary_fit_passes_its_batches_through_train_function():
    model = _compiled()
    recent = RecentBatches(None)
    model.fit(
        X,
        Y,
        batch_size=BATCH,
        epochs=1,
        shuffle=False,
        callbacks=[_KeepIn(recent, [0])],
        verbose=0,
    )
    try:
        batches = recent.batches()
    except RuntimeError as error:
        pytest.fail(
            f"Keras {keras.version()} changed how `fit` feeds its steps: "
            f"{error} Adapt keras_depthhet/growth/recent_batches.py."
        )
    assert len(batches) == N // BATCH, (
        f"Keras {keras.version()}: `fit` ran {N // BATCH} steps but "
        f"{len(batches)} batches went through `model.train_function`; adapt "
        "keras_depthhet/growth/recent_batches.py."
    )
    _assert_indexed(batches, range(0, N, BATCH), weighted=False)


def test_no_batch_or_replaced_train_function_raises():
    model = _compiled()
    model.make_train_function()
    recent = RecentBatches(2)
    recent.attach(model)
    recent.start()
    recent.stop()
    with pytest.raises(RuntimeError, match="kept no batch"):
        recent.batches()
    recent.start()
    model.make_train_function(force=True)
    remade = model.train_function
    recent.stop()
    assert model.train_function is remade
    with pytest.raises(RuntimeError, match="replaced"):
        recent.batches()


def test_bad_arguments():
    for bad in (0, 1.5, True, "3"):
        with pytest.raises(ValueError, match="num_batches"):
            RecentBatches(bad)
    recent = RecentBatches(2)
    with pytest.raises(ValueError, match="attach"):
        recent.start()
    with pytest.raises(ValueError, match="Keras model"):
        recent.attach(keras.layers.Dense(2))
    recent.attach(_compiled())
    with pytest.raises(ValueError, match="train_function=None"):
        recent.start()


def test_multi_worker_training_is_refused(backend, monkeypatch):
    model = _compiled()
    if backend == "jax":
        import jax

        monkeypatch.setattr(jax, "process_count", lambda: 2)
    else:

        class Extended:
            worker_devices = ("/cpu:0", "/cpu:1")

        class TwoWorkers:
            num_replicas_in_sync = 4
            extended = Extended()

        monkeypatch.setattr(
            type(model), "distribute_strategy", property(lambda m: TwoWorkers())
        )
    with pytest.raises(ValueError, match="2 processes"):
        RecentBatches(2).attach(model)


_TWO_DEVICES = """
import json

import keras
import numpy as np
import tensorflow as tf

from keras_depthhet.growth.recent_batches import RecentBatches
from tests.growth.test_recent_batches import _compiled, _KeepIn

n, batch = 36, 8  # the last global batch of 4 splits 2 + 2
index = np.arange(n)
x = np.broadcast_to(
    index[:, None, None, None].astype("float32"), (n, 8, 8, 1)
).copy()
y = index % 10
w = (0.5 + index / 100).astype("float32")


def kept(steps_per_execution, data):
    model = _compiled(steps_per_execution, jit_compile=JIT)
    recent = RecentBatches(3)
    model.fit(
        **data, epochs=1, shuffle=False, callbacks=[_KeepIn(recent, [0])],
        verbose=0,
    )
    return [
        {
            "x": b.x[:, 0, 0, 0].tolist(),
            "y": b.y.tolist(),
            "w": b.sample_weight.tolist(),
            "size": b.size,
        }
        for b in recent.batches()
    ]


def run():
    dataset = tf.data.Dataset.from_tensor_slices((x, y, w)).batch(batch)
    return {
        "arrays": kept(1, dict(x=x, y=y, sample_weight=w, batch_size=batch)),
        "dataset": kept(3, dict(x=dataset)),
    }
"""


@pytest.mark.integration
@pytest.mark.slow
def test_two_devices_keep_the_global_batches(backend):
    if backend == "jax":
        code = (
            "JIT = True\n"
            + _TWO_DEVICES
            + """
devices = keras.distribution.list_devices("cpu")
assert len(devices) == 2, devices
keras.distribution.set_distribution(
    keras.distribution.DataParallel(devices=devices)
)
print(json.dumps(run()))
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
# XLA cannot compile steps that read variables mirrored on other CPUs.
JIT = False
"""
            + _TWO_DEVICES
            + """
strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
with strategy.scope():
    result = run()
print(json.dumps(result))
"""
        )
        env = {}
    result = run_python(code, backend=backend, env=env, timeout=500)
    for kind in ("arrays", "dataset"):
        kept = result[kind]
        assert [b["size"] for b in kept] == [8, 8, 4], kind
        for b, start in zip(kept, [16, 24, 32], strict=True):
            index = np.arange(start, start + b["size"])
            assert b["x"] == index.tolist(), kind
            assert b["y"] == (index % 10).tolist(), kind
            np.testing.assert_allclose(b["w"], 0.5 + index / 100, rtol=1e-6)
