"""The workers of a multi-worker run, and the collectives that make them agree.

In a multi-worker run (TensorFlow `MultiWorkerMirroredStrategy` over two
or more workers, or JAX with two or more processes) every worker holds a
copy of the model and must grow exactly the same neurons at every event;
a worker that grew others would hold another architecture, and the next
collective would fail or hang. Scores computed by each worker on its own
data differ, so the decision is made identical by construction:

1. At `on_train_begin` every worker sends a fingerprint of its growth
   settings and of its model's architecture (`check_same_settings`); if
   any differ, every worker raises the same error before training.
2. At an event the chief (worker 0) alone computes the scores and the
   budget; one broadcast gives every worker the chief's numbers, bit for
   bit (`Workers.broadcast`).
3. Every worker then runs the same pure selection (`select_neurons`) on
   the same numbers with the same settings, so every worker holds the
   same plan, grows the same neurons and records the same event.

Checkpoints and logs are written by the chief only (`Workers.is_chief`).
`keras_depthhet.growth` uses these collectives at `on_train_begin` and at
each event; they know nothing of growth, so they sit below it.
"""

import hashlib
import json

import keras
import numpy as np

from keras_depthhet.utils.multi_worker import is_multi_worker


class Workers:
    """The processes of one multi-worker run, and the collectives growth uses.

    Use `workers_of(model)` to get the group a model trains in. Every
    collective must be called by every worker, in the same order, with
    arrays of the same shape.

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

    def broadcast(self, array) -> np.ndarray:
        """The chief's `array` (float64), bit for bit, on every worker.

        Args:
            array: A float array of the same shape on every worker; only
                the chief's values matter.

        Returns:
            The chief's values as a float64 array.
        """
        array = np.ascontiguousarray(array, dtype="float64")
        # Summing the chief's bits with zeros is exact in integers.
        bits = array.view("int32") if self.is_chief else None
        if bits is None:
            bits = np.zeros(array.size * 2, dtype="int32")
        summed = self._all_sum(bits.reshape(-1)).astype("int32")
        return summed.view("float64").reshape(array.shape)

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
        summed = self._all_sum(slots).astype("int32")
        return summed.view("float64").reshape((self.size, *array.shape))


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

    TensorFlow: the workers of the model's `MultiWorkerMirroredStrategy`
    when it spans two or more. JAX: the processes started by
    `jax.distributed` (e.g. `initialize_multi_host`) when there are two or
    more.
    """
    backend = keras.backend.backend()
    if backend == "tensorflow":
        strategy = getattr(model, "distribute_strategy", None)
        if is_multi_worker(strategy):
            return _TensorFlowWorkers(strategy)
        return None
    if backend == "jax":
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
    same `settings`.

    One all-gather of a failure flag and a fingerprint per setting, so a
    worker whose own checks failed does not leave the others waiting in
    the next collective: each raises, naming the workers that failed or
    the settings that differ (with this worker's values of them).

    Args:
        workers: The run's `Workers`.
        settings: `{name: JSON-serialisable value}`, with the same names
            on every worker.
        failure: The exception this worker's own checks raised, if any;
            it is raised again here once the others know.

    Raises:
        ValueError: on every worker, if some worker failed or holds other
            settings.
    """
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
    """The chief's budget and scores, the same numbers on every worker.

    Args:
        workers: The run's `Workers`.
        budget: The event's parameter budget (only the chief's is used).
        scores: `{layer key: 1-D array}`, the same keys and lengths on
            every worker; only the chief's values are used, so the other
            workers may pass placeholders instead of scoring.

    Returns:
        `(budget, scores)` as the chief computed them.
    """
    names = list(scores)
    sizes = [np.asarray(scores[n]).size for n in names]
    flat = np.concatenate(
        [[budget]] + [np.asarray(scores[n], "float64").ravel() for n in names]
    )
    flat = workers.broadcast(flat)
    bounds = np.cumsum([1, *sizes])
    agreed = {
        n: flat[a:b]
        for n, a, b in zip(names, bounds[:-1], bounds[1:], strict=True)
    }
    return float(flat[0]), agreed
