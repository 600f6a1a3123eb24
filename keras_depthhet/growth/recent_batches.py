"""`RecentBatches`: keep the last batches that `model.fit` trains on.

Keras behaviour relied on (Keras 3.15, checked on both backends by
`tests/growth/test_recent_batches.py`): every training step of `fit`
calls the attribute `model.train_function`, read anew at each step, with
an iterator from which that function pulls its `steps_per_execution`
batches.

- JAX: `train_function(state, iterator)` is plain Python that calls
  `next(iterator)` once per batch and hands the batch to the jitted step;
  the batches are NumPy arrays, or global `jax.Array`s under a
  `keras.distribution`.
- TensorFlow: `train_function(iterator)` given a `tf.data` or distributed
  iterator pulls the batches inside a `tf.function`, where Python never
  sees them; given any other Python iterator, it runs the same compiled
  one-batch step on each batch that iterator yields. Under a
  `tf.distribute` strategy a batch is `PerReplica` values whose local
  results, in replica order, are the global batch.

While started, `RecentBatches` replaces `model.train_function` with a
wrapper that passes the batches through and keeps the last ones; `stop`
puts the original back. Epochs in which it is not started run Keras's own
function untouched, so they pay nothing. On TensorFlow the wrapper pulls
the step's batches in Python, so a started epoch runs its
`steps_per_execution` steps as separate calls of the compiled step
instead of one `tf.function` loop (the same updates).
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
    # A generator may refill one NumPy buffer in place for every batch;
    # backend tensors are immutable and kept as they are.
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
            "`RecentBatches` keeps the batches this process feeds, which in "
            "multi-worker training are only part of each global batch (so "
            "workers would analyse different data). Pass the same "
            "analysis data to every worker instead. Received: a model "
            f"trained by {processes} processes"
        )


class RecentBatches:
    """Keeps the last training batches `model.fit` runs, while started.

    `attach` a model, `start` (e.g. in a callback's `on_epoch_begin`)
    once `fit` has made the model's train function, `stop` (e.g. in
    `on_epoch_end`), then read `batches`: the last `num_batches` batches
    the model trained on since `start`, in training order, with their
    sample weights (those `class_weight` adds included), in NumPy. Under a
    single-process distribution (TensorFlow `MirroredStrategy`, JAX
    `keras.distribution.DataParallel`) each batch is the global batch, as
    the replicas' shards joined in order, so every replica reads the same
    data; multi-worker training is refused (each worker sees only its own
    shard). Between `stop` and the next `start` the model trains through
    Keras's own train function, untouched.

    The batches are held in host memory as given to the train step (NumPy
    arrays copied, tensors referenced): `num_batches` input batches, or a
    whole epoch's with `num_batches=None`.

    Args:
        num_batches: Positive integer or `None` (every batch since
            `start`), the most batches kept.

    Example:

    ```python
    model = vit(image_size=8, patch_size=4, num_channels=1, num_classes=10,
                dim=16, depth=1, num_heads=2)
    model.compile("adam", "sparse_categorical_crossentropy")
    x = np.random.rand(64, 8, 8, 1).astype("float32")
    y = np.random.randint(0, 10, 64)
    recent = RecentBatches(num_batches=2)

    class KeepLastEpoch(keras.callbacks.Callback):
        def on_train_begin(self, logs=None):
            recent.attach(self.model)

        def on_epoch_begin(self, epoch, logs=None):
            if epoch == 2:
                recent.start()

        def on_epoch_end(self, epoch, logs=None):
            recent.stop()

    model.fit(x, y, batch_size=16, epochs=3, callbacks=[KeepLastEpoch()])
    [batch.size for batch in recent.batches()]  # [16, 16], of epoch 3
    ```
    """

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
        """Chooses the model whose training batches are kept.

        Args:
            model: A Keras model; detaches from any previous one.

        Raises:
            ValueError: if `model` is not a Keras model or is trained by
                several processes.
        """
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
        """Forgets the kept batches and keeps those trained on from now.

        Raises:
            ValueError: without an attached model, or before `fit` (or
                `make_train_function`) has made its train function.
        """
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
        """Stops keeping and gives the model back its own train function.

        The kept batches stay readable. A train function that was remade
        while keeping (by a recompilation or by growth) is left in place,
        and `batches` then raises.
        """
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
        """The kept batches, oldest first, in NumPy.

        Returns:
            A list of `keras_depthhet.splitting.data.Batch` (`x`, `y`,
            `sample_weight` as the train step received them, `y` and
            `sample_weight` possibly `None`, and the number of samples).

        Raises:
            RuntimeError: if no batch was kept since `start` (Keras's `fit`
                did not call `model.train_function` with the training
                batches, which this class relies on) or if the model's
                train function was replaced while keeping.
        """
        if self.started and self.model.train_function is not self._wrapper:
            self._replaced = True
        if self._replaced:
            raise RuntimeError(
                "The model's train function was replaced while "
                "`RecentBatches` kept batches (the model was recompiled or "
                "grown during the epoch), so the batches trained on "
                "afterwards were not kept. Start keeping after such changes."
            )
        if not self._kept:
            raise RuntimeError(
                "`RecentBatches` kept no batch. Either no training step ran "
                "between `start()` and now, or this Keras version "
                f"({keras.version()}) no longer calls "
                "`model.train_function` with an iterator of the training "
                "batches at each step of `fit`, which `RecentBatches` "
                "relies on. Pass analysis data explicitly instead."
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
