"""The private Keras APIs that multi-worker training needs, wrapped once.

Keras 3.15's TensorFlow `model.fit` fails under a
`tf.distribute.MultiWorkerMirroredStrategy` that spans two or more workers
(keras-team/keras#20585, tensorflow/tensorflow#72388), in two places of
`keras/src/backend/tensorflow/trainer.py`:

- `TensorFlowTrainer._maybe_symbolic_build` averages the first distributed
  batch, a tuple of `PerReplica` values, with one
  `strategy.reduce("MEAN", batch, axis=None)`; `Strategy.reduce` takes a
  single value, and in multi-worker mode the tuple reaches
  `convert_to_tensor` ("Attempt to convert a value (PerReplica: ...) with
  an unsupported type").
- `reduce_per_replica(..., reduction="auto")` reduces the train step's
  outputs with `strategy.reduce("MEAN", v, axis=0)` in multi-worker mode;
  the loss and metric results are scalars ("Invalid reduction dimension 0
  for input with 0 dimensions").

`enable_multi_worker_fit` replaces both with versions that do exactly what
Keras does unless the strategy runs in multi-worker mode: the symbolic
build reads shapes from the first local replica's batch (it needs shapes
and dtypes only), and scalars are averaged over the replicas. Nothing
applies it implicitly: the user calls it by name (the training CLI does
for `distribution="multi_worker_mirrored"`), and it logs once what it
replaced and why. It refuses to patch functions whose source is not the
one it was written for, so a Keras upgrade that changes (or fixes) them
fails loudly (`tests/distributed/test_keras_multi_worker_fixes.py` checks
them).

`bound_tf_cluster_waits` makes TensorFlow's coordination service give up
(with an error, not a hang) when a worker does not join the cluster or
stops answering, which `MultiWorkerMirroredStrategy` leaves unbounded.

On JAX, `seed_all_processes` gives every process the same Keras seed (as
`keras.distribution.initialize` does after starting `jax.distributed`).
"""

import hashlib
import inspect
import logging

import keras

from keras_depthhet.utils.keras_internals import (
    coordination_service_config,
    in_multi_worker_mode,
    initialize_jax_rng,
    replace_tensorflow_fit_functions,
    symbolic_build,
    tensorflow_fit_functions,
)

_logger = logging.getLogger(__name__)

PATCHED_SOURCES = {
    "TensorFlowTrainer._maybe_symbolic_build": "92a504f5eba9b29f",
    "reduce_per_replica": "2e7d54b1e6edc29a",
}
"""SHA-256 prefixes of the Keras 3.15 functions `enable_multi_worker_fit`
replaces, by qualified name."""


def source_fingerprint(function) -> str:
    """The first 16 hex digits of the SHA-256 of `function`'s source."""
    source = inspect.getsource(getattr(function, "__wrapped__", function))
    return hashlib.sha256(source.encode()).hexdigest()[:16]


def changed_keras_functions() -> list[str]:
    """The patched Keras functions whose source differs from Keras 3.15's."""
    return [
        name
        for name, function in tensorflow_fit_functions().items()
        if source_fingerprint(function) != PATCHED_SOURCES[name]
    ]


def is_multi_worker(strategy) -> bool:
    """Whether `strategy` is a `MultiWorkerMirroredStrategy` of 2+ workers."""
    if strategy is None or keras.backend.backend() != "tensorflow":
        return False
    return in_multi_worker_mode(strategy)


def _first_local_values(batch, strategy):
    import tensorflow as tf

    def first(value):
        if isinstance(value, tf.distribute.DistributedValues):
            return strategy.experimental_local_results(value)[0]
        return value

    return keras.tree.map_structure(first, batch)


def multi_worker_fit_enabled() -> bool:
    """Whether `enable_multi_worker_fit` has patched Keras in this process."""
    if keras.backend.backend() != "tensorflow":
        return False
    build = tensorflow_fit_functions()[
        "TensorFlowTrainer._maybe_symbolic_build"
    ]
    return bool(getattr(build, "_multi_worker_fix", False))


def enable_multi_worker_fit() -> None:
    """Makes Keras's TensorFlow `fit` work on a multi-worker strategy.

    Keras 3.15's `model.fit` fails under a `MultiWorkerMirroredStrategy`
    of two or more workers before the first step (keras-team/keras#20585,
    tensorflow/tensorflow#72388). This replaces, process-wide, the two
    functions of Keras's TensorFlow trainer that fail there:
    `TensorFlowTrainer._maybe_symbolic_build` and the trainer module's
    `reduce_per_replica` (see the module docstring for why each fails).
    Both replacements call Keras's own functions unless the model's
    strategy runs in multi-worker mode, so single-worker training is
    unchanged.

    The library never calls it for you: call it on every worker, before
    `resolve_distribution` makes or receives a multi-worker strategy
    (which refuses one while Keras is unfixed). The first call logs, at
    the warning level of the `logging` module, what it replaced and why;
    calling it again does nothing.

    Raises:
        ValueError: if the backend is not TensorFlow.
        RuntimeError: if the installed Keras's versions of those functions
            differ from the ones the replacements were written for (Keras
            may have fixed `fit`; check keras-team/keras#20585).

    Example:

    ```python
    from keras_depthhet import distributed

    distributed.enable_multi_worker_fit()  # on every worker, first
    runtime = distributed.resolve_distribution("multi_worker_mirrored")
    with runtime.scope():
        model = build_model()
    model.fit(train_ds, epochs=40, callbacks=[growth])
    ```
    """
    if keras.backend.backend() != "tensorflow":
        raise ValueError(
            "`enable_multi_worker_fit` fixes Keras's TensorFlow trainer and "
            "is for the TensorFlow backend only. "
            f"Received: backend={keras.backend.backend()!r}"
        )
    if multi_worker_fit_enabled():
        return
    changed = changed_keras_functions()
    if changed:
        raise RuntimeError(
            "keras-depthhet's multi-worker fixes were written for Keras "
            f"3.15, whose {changed} the installed Keras "
            f"{keras.__version__} has changed. Check whether Keras now "
            "supports MultiWorkerMirroredStrategy in `fit` "
            "(keras-team/keras#20585) before updating the fixes."
        )
    functions = tensorflow_fit_functions()
    keras_build = functions["TensorFlowTrainer._maybe_symbolic_build"]
    keras_reduce = functions["reduce_per_replica"]

    def _maybe_symbolic_build(self, iterator=None, data_batch=None):
        strategy = self.distribute_strategy
        if not is_multi_worker(strategy):
            return keras_build(self, iterator=iterator, data_batch=data_batch)
        if iterator is not None:
            for _, _, batches in iterator:
                data_batch = _first_local_values(next(batches), strategy)
                break
        with strategy.scope():
            symbolic_build(self, data_batch)

    def reduce_per_replica(values, strategy, reduction):
        if reduction not in ("auto", "mean") or not is_multi_worker(strategy):
            return keras_reduce(values, strategy, reduction)
        import tensorflow as tf

        def mean(value):
            local = value
            if isinstance(value, tf.distribute.DistributedValues):
                local = strategy.experimental_local_results(value)[0]
            axis = None if local.shape.rank == 0 else 0
            return strategy.reduce("MEAN", value, axis=axis)

        return keras.tree.map_structure(mean, values)

    _maybe_symbolic_build.__wrapped__ = keras_build
    _maybe_symbolic_build._multi_worker_fix = True
    reduce_per_replica.__wrapped__ = keras_reduce
    replace_tensorflow_fit_functions(_maybe_symbolic_build, reduce_per_replica)
    _logger.warning(
        "keras_depthhet.distributed.enable_multi_worker_fit() replaced "
        "Keras's TensorFlowTrainer._maybe_symbolic_build and "
        "keras.src.backend.tensorflow.trainer.reduce_per_replica in this "
        "process, because Keras %s's model.fit fails under a "
        "MultiWorkerMirroredStrategy of two or more workers "
        "(keras-team/keras#20585, tensorflow/tensorflow#72388). Both "
        "replacements call Keras's own functions unless the strategy runs "
        "in multi-worker mode.",
        keras.__version__,
    )


def bound_tf_cluster_waits(timeout: int) -> None:
    """Bounds how long a TensorFlow worker waits for the others.

    Configures the coordination service that `MultiWorkerMirroredStrategy`
    starts from `TF_CONFIG` as the strategy would, with `timeout` seconds
    to register every worker and to declare a silent worker dead. Must be
    called before the strategy is created; does nothing once the service
    is configured.
    """
    from tensorflow.compiler.xla.tsl.protobuf import coordination_config_pb2
    from tensorflow.python.distribute import multi_worker_util
    from tensorflow.python.distribute.cluster_resolver import (
        TFConfigClusterResolver,
    )
    from tensorflow.python.eager import context

    if context.context().coordination_service is not None:
        return
    cluster = multi_worker_util.normalize_cluster_spec(
        TFConfigClusterResolver().cluster_spec()
    )
    jobs = [
        coordination_config_pb2.CoordinatedJob(
            name=job, num_tasks=cluster.num_tasks(job)
        )
        for job in ("chief", "worker")
        if job in cluster.jobs
    ]
    context.context().configure_coordination_service(
        service_type="standalone",
        service_leader=multi_worker_util.coordination_leader(cluster),
        cluster_register_timeout_in_ms=timeout * 1000,
        heartbeat_timeout_in_ms=timeout * 1000,
        coordinated_jobs=jobs,
    )
    # Without the barrier, registration waits for missing workers forever.
    coordination_service_config().cluster_register_with_barrier = True


def seed_all_processes() -> None:
    """Gives every JAX process the same Keras seed, unless one is set.

    Variables of a model built under a `keras.distribution` are laid out
    from each process's own initial values, which must agree.
    """
    initialize_jax_rng()
