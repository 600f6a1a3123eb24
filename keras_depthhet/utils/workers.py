"""The workers of a multi-worker run and the collectives that make them agree
on every growth decision."""

import hashlib
import json

import keras
import numpy as np

from keras_depthhet.utils.multi_worker import is_multi_worker


class Workers:
    """The processes of one multi-worker run, and the collectives growth uses.

    `workers_of(model)` gives the group a model trains in. Every worker must
    call every collective, in the same order, with arrays of one shape.

    Attributes:
        rank: This worker's index; 0 is the chief.
        size: The number of workers.
    """

    def __init__(self, rank: int, size: int):
        self.rank = rank
        self.size = size

    @property
    def is_chief(self) -> bool:
        """Whether this worker is the chief (rank 0), which writes files."""
        return self.rank == 0

    def _all_sum(self, array: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def _sum_bits(self, bits, shape) -> np.ndarray:
        """The all-sum of int32 `bits`, read back as float64 of `shape`."""
        summed = self._all_sum(bits).astype("int32")
        return summed.view("float64").reshape(shape)

    def broadcast(self, array) -> np.ndarray:
        """The chief's `array` (float64), bit for bit, on every worker.

        Args:
            array: A float array of the same shape on every worker; only
                the chief's values matter.

        Returns:
            The chief's values as a float64 array.
        """
        array = np.ascontiguousarray(array, dtype="float64")
        bits = array.view("int32").reshape(-1) * int(self.is_chief)
        return self._sum_bits(bits, array.shape)  # Plus zeros: exact.

    def all_gather(self, array) -> np.ndarray:
        """Every worker's `array` (float64), stacked in rank order.

        Args:
            array: A float array of the same shape on every worker.

        Returns:
            A float64 array of shape `(size, *array.shape)`.
        """
        array = np.ascontiguousarray(array, dtype="float64")
        slots = np.zeros((self.size, array.size * 2), dtype="int32")
        slots[self.rank] = array.view("int32").reshape(-1)
        return self._sum_bits(slots, (self.size, *array.shape))


class _TensorFlowWorkers(Workers):
    def __init__(self, strategy):
        resolver = strategy.cluster_resolver
        cluster = resolver.cluster_spec().as_dict()
        order = [("chief", i) for i in range(len(cluster.get("chief", [])))]
        order += [("worker", i) for i in range(len(cluster.get("worker", [])))]
        super().__init__(
            order.index((resolver.task_type, resolver.task_id)), len(order)
        )
        self.strategy = strategy

    def _all_sum(self, array):
        import tensorflow as tf

        with self.strategy.scope():
            total = self.strategy.reduce("SUM", tf.constant(array), axis=None)
        return total.numpy()


class _JaxWorkers(Workers):
    def __init__(self):
        import jax

        super().__init__(jax.process_index(), jax.process_count())

    def _all_sum(self, array):
        from jax.experimental import multihost_utils

        gathered = multihost_utils.process_allgather(array, tiled=False)
        return np.asarray(gathered).sum(axis=0)


def workers_of(model: keras.Model) -> Workers | None:
    """The `Workers` `model` trains with, or `None` in a one-worker run.

    TensorFlow: those of its `MultiWorkerMirroredStrategy`; JAX: the
    processes of `jax.distributed` (e.g. `initialize_multi_host`).
    """
    strategy = getattr(model, "distribute_strategy", None)
    if is_multi_worker(strategy):  # Only ever on TensorFlow.
        return _TensorFlowWorkers(strategy)
    if keras.backend.backend() == "jax":
        import jax

        return _JaxWorkers() if jax.process_count() > 1 else None
    return None


def _fingerprint(value) -> float:
    """52 bits of a hash of `value`'s JSON, exact as a float64."""
    text = json.dumps(value, sort_keys=True, default=repr)
    return float(int(hashlib.sha256(text.encode()).hexdigest()[:13], 16))


def check_same_settings(
    workers: Workers, settings: dict, failure: Exception | None = None
) -> None:
    """Raises on every worker unless all passed their checks and hold the
    same `settings` (`{name: JSON value}`), in one all-gather so that none
    waits: `failure` (this worker's own) again here, `ValueError` elsewhere."""
    names = sorted(settings)
    prints = workers.all_gather(
        [float(failure is not None)]
        + [_fingerprint(settings[n]) for n in names]
    )
    if failure is not None:
        raise failure
    failed = [rank for rank in range(workers.size) if prints[rank, 0]]
    if failed:
        raise ValueError(
            f"Worker(s) {failed} of the {workers.size} workers of this run "
            "failed their checks when training began (their output says "
            f"why), so worker {workers.rank} stops too."
        )
    differ = [n for i, n in enumerate(names, 1) if len(set(prints[:, i])) > 1]
    if differ:
        mine = {n: settings[n] for n in differ}
        raise ValueError(
            f"The {workers.size} workers of this run were started with "
            f"different settings: {differ} differ between workers (worker "
            f"{workers.rank} has {mine}). Start every worker with the same "
            "model and `GrowthCallback` arguments."
        )


def chief_decides(
    workers: Workers, budget: float, scores: dict
) -> tuple[float, dict]:
    """`(budget, scores)` of the chief on every worker; `scores` is `{layer
    key: 1-D array}`, of the same keys and lengths on every worker."""
    names = list(scores)
    parts = [np.asarray(scores[n], "float64").ravel() for n in names]
    flat = workers.broadcast(np.concatenate([[budget], *parts]))
    splits = np.cumsum([p.size for p in parts])[:-1]
    agreed = zip(names, np.split(flat[1:], splits), strict=False)
    return float(flat[0]), dict(agreed)
