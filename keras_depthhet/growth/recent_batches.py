"""`RecentBatches`: keep the last batches that `model.fit` trains on.

Relies on Keras (3.15; `tests/growth/test_recent_batches.py` checks it)
calling `model.train_function`, read anew at each step of `fit`, with an
iterator to pull its `steps_per_execution` batches from. On TensorFlow the
wrapper pulls them in Python, so the compiled step runs once per batch.
"""

import collections

import keras
import numpy as np

from keras_depthhet.splitting.data import Batch
from keras_depthhet.utils.validation import positive_int


def _wrap_jax(original, keep):
    def kept(iterator):
        for data in iterator:
            keep(data)
            yield data

    def train_function(state, iterator):
        return original(state, kept(iterator))

    return train_function


def _wrap_tensorflow(model, original, keep):
    import tensorflow as tf

    def train_function(iterator):
        step = []
        for _ in range(model.steps_per_execution):
            try:
                step.append(next(iterator))
            except (StopIteration, tf.errors.OutOfRangeError):
                break
        if not step:
            raise StopIteration
        for data in step:
            keep(data)
        return original(iter(step))

    return train_function


def _owned(value):
    # A generator may refill one NumPy buffer in place for every batch.
    return value.copy() if isinstance(value, np.ndarray) else value


def _check_single_process(model) -> None:
    """Raises when this process feeds only part of each global batch."""
    backend = keras.backend.backend()
    if backend == "jax":
        import jax

        processes = jax.process_count()
    elif backend == "tensorflow":
        strategy = model.distribute_strategy
        replicas = strategy.num_replicas_in_sync
        processes = 1
        # The default strategy (one replica) has no worker device list.
        if replicas > 1:
            processes = replicas // len(strategy.extended.worker_devices)
    else:
        raise ValueError(
            "`RecentBatches` supports the 'jax' and 'tensorflow' backends. "
            f"Received: backend={backend!r}"
        )
    if processes > 1:
        raise ValueError(
            "`RecentBatches` would keep only this process's part of each "
            "global batch in multi-worker training; pass the same analysis "
            f"data to every worker. Received: a model trained by {processes} "
            "processes"
        )


class RecentBatches:
    """Keeps the last `num_batches` (`None`: all) batches `fit` trains on
    between `start` and `stop` (e.g. in `on_epoch_begin`/`on_epoch_end`),
    wrapping `model.train_function` meanwhile; `batches` gives them in
    NumPy (global batches under a one-process distribution)."""

    def __init__(self, num_batches: int | None):
        self.num_batches = positive_int(
            "num_batches", num_batches, optional=True
        )
        self.model = None
        self._kept = collections.deque(maxlen=self.num_batches)
        self._original = None
        self._wrapper = None
        self._replaced = False
        self._strategy = None

    @property
    def started(self) -> bool:
        """Whether batches are being kept."""
        return self._wrapper is not None

    @property
    def num_kept(self) -> int:
        """How many batches are kept now."""
        return len(self._kept)

    def attach(self, model: keras.Model) -> None:
        """Keeps `model`'s batches from now on (detaching any previous one);
        raises for a non-model or a multi-process run."""
        if not isinstance(model, keras.Model):
            raise ValueError(
                "Argument `model` must be a Keras model. Received: model of "
                f"type {type(model).__name__}"
            )
        _check_single_process(model)
        self.detach()
        self.model = model

    def detach(self) -> None:
        """Stops keeping, forgets the model and the kept batches."""
        self.stop()
        self.model = None
        self._kept.clear()

    def start(self) -> None:
        """Forgets the kept batches and keeps those trained on from now."""
        if self.model is None:
            raise ValueError(
                "`RecentBatches.start()` needs a model: call `attach(model)` "
                "first. Received: no attached model"
            )
        original = self.model.train_function
        if original is None:
            raise ValueError(
                "`RecentBatches.start()` must run once `fit` has made the "
                "model's train function (e.g. from a callback's "
                f"`on_epoch_begin`). Received: model {self.model.name!r} "
                "with train_function=None"
            )
        self.stop()
        self._kept.clear()
        self._replaced = False
        if keras.backend.backend() == "jax":
            wrapper = _wrap_jax(original, self._keep)
            self._strategy = None
        else:
            wrapper = _wrap_tensorflow(self.model, original, self._keep)
            self._strategy = self.model.distribute_strategy
        self._original, self._wrapper = original, wrapper
        self.model.train_function = wrapper

    def stop(self) -> None:
        """Stops keeping and gives the model back its own train function
        (unless it was remade meanwhile: `batches` then raises)."""
        if self._wrapper is None:
            return
        if self.model.train_function is self._wrapper:
            self.model.train_function = self._original
        else:
            self._replaced = True
        self._original = self._wrapper = None

    def _keep(self, data) -> None:
        self._kept.append(keras.tree.map_structure(_owned, data))

    def batches(self) -> list[Batch]:
        """The kept batches, oldest first, as NumPy `splitting.data.Batch`es;
        raises if none was kept or the train function was replaced."""
        if self.started and self.model.train_function is not self._wrapper:
            self._replaced = True
        if self._replaced:
            raise RuntimeError(
                "The model's train function was replaced (recompiled or "
                "grown) while `RecentBatches` kept batches, so later batches "
                "were not kept. Start keeping after such changes."
            )
        if not self._kept:
            raise RuntimeError(
                "`RecentBatches` kept no batch: no training step ran since "
                f"`start()`, or Keras {keras.version()} no longer calls "
                "`model.train_function` with the batches of `fit`. Pass "
                "analysis data explicitly instead."
            )
        return [self._to_batch(data) for data in self._kept]

    def _to_batch(self, data) -> Batch:
        x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(
            tuple(data) if isinstance(data, (list, tuple)) else (data,)
        )
        x, y, sample_weight = keras.tree.map_structure(
            self._to_numpy, (x, y, sample_weight)
        )
        size = int(keras.tree.flatten(x)[0].shape[0])
        return Batch(x, y, sample_weight, size)

    def _to_numpy(self, value):
        if value is None:
            return None
        if self._strategy is None:
            return np.asarray(value)
        import tensorflow as tf

        if isinstance(value, tf.experimental.Optional):
            return None  # how Keras's TF data adapters pass a missing part
        parts = [
            np.asarray(part)
            for part in self._strategy.experimental_local_results(value)
        ]
        return parts[0] if len(parts) == 1 else np.concatenate(parts)
