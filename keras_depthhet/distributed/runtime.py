"""Choosing, starting and checking the distributed runtime of a run, and the
ViT's layout under `ModelParallel`."""

import contextlib
from dataclasses import dataclass

import keras
import numpy as np

from keras_depthhet.distributed.cluster import validate_tf_config
from keras_depthhet.utils import multi_worker
from keras_depthhet.utils.validation import positive_int

DISTRIBUTIONS = (
    "auto",
    "none",
    "mirrored",
    "multi_worker_mirrored",
    "data_parallel",
    "model_parallel",
)
"""Accepted names of `distribution`."""

_BACKEND_OF = {
    "mirrored": "tensorflow",
    "multi_worker_mirrored": "tensorflow",
    "data_parallel": "jax",
    "model_parallel": "jax",
}

VIT_MODEL_PARALLEL_LAYOUT = {
    r"_(qkv|fc1)/kernel$": (None, "model"),
    r"_(qkv|fc1)/bias$": ("model",),
    r"_(proj|fc2)/kernel$": ("model", None),
}
"""Layouts of the ViT's weights: variable-path pattern -> mesh axes.

Megatron-style over a `"model"` axis (one all-reduce per block): `qkv`
and `fc1` split by output neuron, `proj` and `fc2` by input neuron. All
else, growth weights included, is replicated.
"""


def vit_layout_map(
    mesh: keras.distribution.DeviceMesh,
) -> keras.distribution.LayoutMap:
    """A `LayoutMap` of `mesh` for `keras_depthhet.models.vit` models.

    Args:
        mesh: A `DeviceMesh` with a `"model"` axis (and a batch axis).

    Returns:
        A `keras.distribution.LayoutMap` holding `VIT_MODEL_PARALLEL_LAYOUT`,
        for `keras.distribution.ModelParallel(layout_map=...)`.

    Raises:
        ValueError: if `mesh` has no `"model"` axis.
    """
    if "model" not in mesh.axis_names:
        raise ValueError(
            "Argument `mesh` must have a 'model' axis. "
            f"Received: mesh with axes {mesh.axis_names}"
        )
    layout_map = keras.distribution.LayoutMap(mesh)
    for pattern, axes in VIT_MODEL_PARALLEL_LAYOUT.items():
        layout_map[pattern] = axes
    return layout_map


@dataclass
class Runtime:
    """A resolved distribution.

    Attributes:
        name: One of `DISTRIBUTIONS` except `"auto"`, or `"custom"`.
        num_replicas: How many parts the global batch is split into.
        strategy: The `tf.distribute.Strategy` (TensorFlow), else `None`.
        distribution: The `keras.distribution.Distribution` (JAX), else
            `None`.
    """

    name: str
    num_replicas: int = 1
    strategy: object = None
    distribution: object = None

    def scope(self):
        """The context to create variables in (and, on JAX, to train in)."""
        if self.strategy is not None:
            return self.strategy.scope()
        if self.distribution is not None:
            return self.distribution.scope()
        return contextlib.nullcontext()


def model_runtime(model: keras.Model) -> Runtime:
    """The `Runtime` `model` trains under, in whose `scope()` it grows.

    TensorFlow: the strategy the model was created with (the default
    strategy when none). JAX: the active `keras.distribution`, if any.
    """
    if keras.backend.backend() == "tensorflow":
        strategy = getattr(model, "distribute_strategy", None)
        if strategy is None:
            return Runtime("none")
        return Runtime("custom", strategy.num_replicas_in_sync, strategy)
    distribution = keras.distribution.distribution()
    if distribution is None:
        return Runtime("none")
    return Runtime("custom", distribution=distribution)


def _model_parallel(devices) -> keras.distribution.ModelParallel:
    if len(devices) < 2 or len(devices) % 2:
        raise ValueError(
            'distribution="model_parallel" needs an even number of devices '
            f"(a (batch, model=2) mesh). Received: {len(devices)} device(s)"
        )
    mesh = keras.distribution.DeviceMesh(
        (len(devices) // 2, 2), ["batch", "model"], devices
    )
    return keras.distribution.ModelParallel(
        layout_map=vit_layout_map(mesh), batch_dim_name="batch"
    )


def _require_multi_worker_fit(distribution) -> None:
    """Raises while Keras's `fit` is the unfixed one of Keras 3.15."""
    if (
        multi_worker.multi_worker_fit_enabled()
        or multi_worker.changed_keras_functions()
    ):
        return
    raise RuntimeError(
        "Keras's `model.fit` fails under a MultiWorkerMirroredStrategy of "
        f"two or more workers (Keras {keras.__version__}; "
        "keras-team/keras#20585), and keras-depthhet fixes it only when "
        "asked: call `keras_depthhet.distributed.enable_multi_worker_fit()` "
        "on every worker before resolving the distribution. "
        f"Received: distribution={distribution!r}"
    )


def resolve_distribution(
    distribution="auto",
    *,
    num_workers: int | None = None,
    timeout: int = 300,
) -> Runtime:
    """The `Runtime` for `distribution` on the running backend.

    It changes nothing in Keras; without `enable_multi_worker_fit()`, a
    multi-worker strategy raises here before any worker waits for others.

    Args:
        distribution: A name from `DISTRIBUTIONS`, a `tf.distribute.Strategy`
            (TensorFlow), a `keras.distribution.Distribution` (JAX), or a
            `Runtime` resolved before (returned as it is).
        num_workers: Optional positive integer: for
            `"multi_worker_mirrored"`, the number of workers `TF_CONFIG`
            must list (see `validate_tf_config`).
        timeout: Positive integer: for `"multi_worker_mirrored"`, the
            seconds a worker waits for the others (to join, or when
            silent) before failing.

    Returns:
        The resolved `Runtime`.

    Raises:
        ValueError: for an unknown name, or one that does not exist on the
            running backend (e.g. `"mirrored"` under JAX).
        RuntimeError: for a strategy of two or more workers while Keras's
            `fit` is not fixed for it (see `enable_multi_worker_fit`), or
            when the workers do not all join in `timeout` seconds.
    """
    if isinstance(distribution, Runtime):
        return distribution
    backend = keras.backend.backend()
    if isinstance(
        distribution,
        (keras.distribution.DataParallel, keras.distribution.ModelParallel),
    ):
        if backend != "jax":
            raise ValueError(
                "A keras.distribution.Distribution is supported here on JAX "
                'only; on TensorFlow use distribution="mirrored". '
                f"Received: {distribution!r} with backend {backend!r}"
            )
        mesh = distribution.device_mesh
        batch_axis = mesh.axis_names.index(distribution.batch_dim_name)
        return Runtime(
            "custom", mesh.shape[batch_axis], distribution=distribution
        )
    if not isinstance(distribution, str):
        if backend == "tensorflow":
            import tensorflow as tf

            if isinstance(distribution, tf.distribute.Strategy):
                if multi_worker.is_multi_worker(distribution):
                    _require_multi_worker_fit(distribution)
                replicas = distribution.num_replicas_in_sync
                return Runtime("custom", replicas, distribution)
        raise ValueError(
            f"Argument `distribution` must be one of {list(DISTRIBUTIONS)} "
            "or a strategy/distribution object of the running backend. "
            f"Received: distribution={distribution!r}"
        )
    if distribution not in DISTRIBUTIONS:
        raise ValueError(
            f"Argument `distribution` must be one of {list(DISTRIBUTIONS)}. "
            f"Received: distribution={distribution!r}"
        )
    parallel = "mirrored" if backend == "tensorflow" else "data_parallel"
    if distribution in _BACKEND_OF and _BACKEND_OF[distribution] != backend:
        raise ValueError(
            f'distribution="{distribution}" needs the '
            f"{_BACKEND_OF[distribution]} backend; on {backend} use "
            f'"{parallel}" (or "auto"). Received: distribution={distribution!r}'
        )
    if distribution == "multi_worker_mirrored":
        count = validate_tf_config(num_workers=num_workers)
        timeout = positive_int("timeout", timeout)
        if count > 1:
            _require_multi_worker_fit(distribution)
            multi_worker.bound_tf_cluster_waits(timeout)
        import tensorflow as tf

        try:
            strategy = tf.distribute.MultiWorkerMirroredStrategy()
        except tf.errors.OpError as error:
            raise RuntimeError(
                f"Not all {count} workers of TF_CONFIG joined the cluster "
                f"within {timeout} s: check that every worker was started, "
                "with the same cluster in TF_CONFIG. "
                f"({error.message.splitlines()[0]})"
            ) from None
        return Runtime(distribution, strategy.num_replicas_in_sync, strategy)
    if backend == "tensorflow":
        import tensorflow as tf

        devices = tf.config.list_logical_devices("GPU")
        devices = devices or tf.config.list_logical_devices("CPU")
    else:
        devices = keras.distribution.list_devices() if backend == "jax" else []
    if distribution == "auto":
        distribution = parallel if len(devices) > 1 else "none"
    if distribution == "none":
        return Runtime("none")
    if backend == "tensorflow":
        strategy = tf.distribute.MirroredStrategy([d.name for d in devices])
        return Runtime(distribution, strategy.num_replicas_in_sync, strategy)
    if distribution == "data_parallel":
        data_parallel = keras.distribution.DataParallel(devices=devices)
        return Runtime(distribution, len(devices), distribution=data_parallel)
    return Runtime(
        distribution, len(devices) // 2, distribution=_model_parallel(devices)
    )


def _first_leaf(structure):
    """The inputs' first tensor (or spec) of a dataset element."""
    leaf = structure[0] if isinstance(structure, (tuple, list)) else structure
    while isinstance(leaf, dict):
        leaf = next(iter(leaf.values()))
    return leaf


def _first_batch_size(data) -> int | None:
    """A batched `tf.data.Dataset`'s static batch size, else its first's."""
    shape = getattr(_first_leaf(data.element_spec), "shape", None)
    if shape is not None and shape.rank and shape[0] is not None:
        return int(shape[0])
    return int(_first_leaf(next(iter(data.take(1)))).shape[0])


def check_global_batch(data, batch_size, runtime: Runtime) -> None:
    """Raises when the global batch does not split evenly among replicas.

    Array data uses `batch_size` (Keras' default 32); a `tf.data.Dataset`
    its (first) batch. Other data (generators, `PyDataset`) is not checked.
    """
    if runtime.num_replicas <= 1:
        return
    global_batch = batch_size
    if global_batch is None:
        if isinstance(data, (tuple, list, np.ndarray)):
            global_batch = 32
        elif type(data).__module__.startswith("tensorflow"):
            global_batch = _first_batch_size(data)
    if global_batch is not None and global_batch % runtime.num_replicas:
        raise ValueError(
            f"The global batch size must be divisible by the number of "
            f"replicas ({runtime.num_replicas} under "
            f"distribution={runtime.name!r}). Received: global batch "
            f"size {global_batch}"
        )


def check_model_placement(model: keras.Model, runtime: Runtime) -> None:
    """Raises when `model`'s variables were not made for `runtime`.

    TensorFlow: the model and its variables must have been created in the
    strategy's scope; JAX: laid out over the distribution's devices.
    """
    if runtime.strategy is not None:
        strategy = runtime.strategy
        extended = strategy.extended
        if model.distribute_strategy is not strategy or not all(
            extended.variable_created_in_scope(v.value) for v in model.variables
        ):
            raise ValueError(
                f"Model {model.name!r} was built outside the scope of the "
                f"{type(strategy).__name__} it is trained with. Create (and "
                "compile) it inside `build_model`, which `fit_with_growth` "
                "calls in the scope."
            )
    elif runtime.distribution is not None:
        devices = set(runtime.distribution.device_mesh.devices.flatten())
        for variable in model.variables:
            placed = variable.value.sharding.device_set
            if {str(d) for d in placed} != {str(d) for d in devices}:
                raise ValueError(
                    f"Model {model.name!r} was built without the active "
                    f"{type(runtime.distribution).__name__}: variable "
                    f"{variable.path!r} lives on {len(placed)} of "
                    f"{len(devices)} devices. Create it inside `build_model`, "
                    "which `fit_with_growth` calls under the distribution."
                )
