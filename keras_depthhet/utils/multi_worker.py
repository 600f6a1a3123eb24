"""Keras's TensorFlow `fit` fixed for multi-worker training.

Under a `MultiWorkerMirroredStrategy` of two or more workers, Keras 3.15's
`TensorFlowTrainer._maybe_symbolic_build` reduces the first batch (`PerReplica`
values) with one `strategy.reduce`, and `reduce_per_replica` reduces scalars
along axis 0 (keras-team/keras#20585, tensorflow/tensorflow#72388).
`enable_multi_worker_fit` replaces both; `bound_tf_cluster_waits` makes a
worker fail instead of hang when another does not join or stops answering.
"""

import hashlib
import inspect
import logging

import keras

from keras_depthhet.utils.keras_internals import (
    coordination_service_config,
    in_multi_worker_mode,
    replace_tensorflow_fit_functions,
    symbolic_build,
    tensorflow_fit_functions,
)

_logger = logging.getLogger(__name__)
_BUILD = "TensorFlowTrainer._maybe_symbolic_build"

PATCHED_SOURCES = {
    _BUILD: "92a504f5eba9b29f",
    "reduce_per_replica": "2e7d54b1e6edc29a",
}
"""SHA-256 prefixes of the sources of the Keras 3.15 functions replaced."""


def changed_keras_functions() -> list[str]:
    """The patched Keras functions whose source differs from Keras 3.15's."""
    changed = []
    for name, function in tensorflow_fit_functions().items():
        source = inspect.getsource(getattr(function, "__wrapped__", function))
        digest = hashlib.sha256(source.encode()).hexdigest()
        if digest[:16] != PATCHED_SOURCES[name]:
            changed.append(name)
    return changed


def is_multi_worker(strategy) -> bool:
    """Whether `strategy` is a `MultiWorkerMirroredStrategy` of 2+ workers."""
    if strategy is None or keras.backend.backend() != "tensorflow":
        return False
    return in_multi_worker_mode(strategy)


def _first_local(value, strategy):
    """`value`'s first local replica value if it is distributed, else it."""
    import tensorflow as tf

    if isinstance(value, tf.distribute.DistributedValues):
        return strategy.experimental_local_results(value)[0]
    return value


def multi_worker_fit_enabled() -> bool:
    """Whether `enable_multi_worker_fit` has patched Keras in this process."""
    if keras.backend.backend() != "tensorflow":
        return False
    build = tensorflow_fit_functions()[_BUILD]
    return bool(getattr(build, "_multi_worker_fix", False))


def enable_multi_worker_fit() -> None:
    """Makes Keras's TensorFlow `fit` work on a multi-worker strategy.

    Replaces, process-wide, the two trainer functions that fail there (see
    above); outside multi-worker mode both call Keras's own. Call it on every
    worker before `resolve_distribution`, which refuses a multi-worker
    strategy until then; the first call logs a warning, later ones nothing.

    Raises:
        ValueError: if the backend is not TensorFlow.
        RuntimeError: if the installed Keras's versions of those functions
            differ from the ones the replacements were written for (Keras
            may have fixed `fit`; check keras-team/keras#20585).

    Examples:
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
    keras_build, keras_reduce = tensorflow_fit_functions().values()

    def _maybe_symbolic_build(self, iterator=None, data_batch=None):
        strategy = self.distribute_strategy
        if not is_multi_worker(strategy):
            return keras_build(self, iterator=iterator, data_batch=data_batch)
        if iterator is not None:
            for _, _, batches in iterator:
                data_batch = keras.tree.map_structure(
                    lambda v: _first_local(v, strategy), next(batches)
                )
                break
        with strategy.scope():
            symbolic_build(self, data_batch)

    def reduce_per_replica(values, strategy, reduction):
        if reduction not in ("auto", "mean") or not is_multi_worker(strategy):
            return keras_reduce(values, strategy, reduction)

        def mean(value):
            rank = _first_local(value, strategy).shape.rank
            return strategy.reduce("MEAN", value, axis=None if rank == 0 else 0)

        return keras.tree.map_structure(mean, values)

    _maybe_symbolic_build.__wrapped__ = keras_build
    _maybe_symbolic_build._multi_worker_fix = True
    reduce_per_replica.__wrapped__ = keras_reduce
    replace_tensorflow_fit_functions(_maybe_symbolic_build, reduce_per_replica)
    _logger.warning(
        "enable_multi_worker_fit() replaced, in this process, Keras %s's "
        "TensorFlowTrainer._maybe_symbolic_build and reduce_per_replica, "
        "which fail under a MultiWorkerMirroredStrategy of two or more "
        "workers (keras-team/keras#20585, tensorflow/tensorflow#72388); "
        "both call Keras's own unless the strategy runs in multi-worker mode.",
        keras.__version__,
    )


def bound_tf_cluster_waits(timeout: int) -> None:
    """Makes a TensorFlow worker wait at most `timeout` s for the others to
    register or answer (call before `MultiWorkerMirroredStrategy` exists)."""
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
