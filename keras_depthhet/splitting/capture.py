"""Input checks, data reading, loss resolution and the backend dispatch.

Everything here is backend-neutral; `make_step` and `tokens_per_sample`
call the one small module per backend (`_capture_jax`,
`_capture_tensorflow`) that traces or runs the model with that backend's
own autodiff.
"""

import numbers
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import keras
import numpy as np
from keras import ops

from keras_depthhet.layers.growable_dense import GrowableDense
from keras_depthhet.models.vit import growable_layers


@dataclass
class Batch:
    """One batch as read from `data`, in NumPy, with its sample count."""

    x: object
    y: object
    sample_weight: object
    size: int


def check_positive_int(name: str, value, allow_none: bool = True):
    if value is None and allow_none:
        return None
    if (
        isinstance(value, bool)
        or not isinstance(value, numbers.Integral)
        or value < 1
    ):
        raise ValueError(
            f"Argument `{name}` must be a positive integer"
            f"{' or None' if allow_none else ''}. Received: {name}={value!r}"
        )
    return int(value)


def select_layers(model, layers: Sequence[str] | None) -> list[GrowableDense]:
    """The model's `GrowableDense` layers named in `layers` (all if None)."""
    if not isinstance(model, keras.layers.Layer):
        raise ValueError(
            "Argument `model` must be a Keras model or layer. "
            f"Received: model of type {type(model).__name__}"
        )
    available = growable_layers(model)
    if not available:
        raise ValueError(
            "Argument `model` must contain at least one `GrowableDense` "
            f"layer. Received: model={model.name!r} without any"
        )
    unbuilt = [layer.name for layer in available if not layer.built]
    if unbuilt:
        raise ValueError(
            "Argument `model` must be built (call it on a batch first). "
            f"Received: unbuilt growable layers {unbuilt}"
        )
    if layers is None:
        return available
    if isinstance(layers, str) or not all(isinstance(n, str) for n in layers):
        raise ValueError(
            "Argument `layers` must be a list of layer names or None. "
            f"Received: layers={layers!r}"
        )
    by_name = {layer.name: layer for layer in available}
    unknown = [name for name in layers if name not in by_name]
    if unknown:
        raise ValueError(
            f"Argument `layers` names layers that are not growable layers of "
            f"model {model.name!r}: {unknown}. Growable layers: "
            f"{list(by_name)}. Received: layers={list(layers)!r}"
        )
    if len(set(layers)) != len(layers):
        raise ValueError(
            f"Argument `layers` must not repeat a name. Received: "
            f"layers={list(layers)!r}"
        )
    wanted = set(layers)
    return [layer for layer in available if layer.name in wanted]


def resolve_loss(model, loss) -> Callable:
    """`loss_fn(y, y_pred, sample_weight)` returning the batch-mean loss.

    `loss` may be a Keras `Loss` instance, a loss name or a function
    `(y_true, y_pred) -> per-sample losses`; `None` means the model's
    compiled loss. Functions are reduced as Keras does by default
    (`"sum_over_batch_size"`: the weighted sum divided by the number of
    values).
    """
    if loss is None:
        loss = getattr(model, "loss", None)
        if loss is None:
            raise ValueError(
                "Argument `loss` is required when the model is not compiled "
                "with a loss. Received: loss=None and model.loss=None"
            )
    if isinstance(loss, (dict, list, tuple)):
        raise ValueError(
            "Argument `loss` must be a single loss (multi-output losses are "
            f"not supported). Received: loss={loss!r}"
        )
    if isinstance(loss, str):
        try:
            loss = keras.losses.get(loss)
        except ValueError as error:
            raise ValueError(
                f"Argument `loss` is not a known Keras loss. "
                f"Received: loss={loss!r}"
            ) from error
    if isinstance(loss, keras.losses.Loss):
        return lambda y, y_pred, sw: loss(y, y_pred, sample_weight=sw)
    if not callable(loss):
        raise ValueError(
            "Argument `loss` must be a Keras loss, a loss name or a function. "
            f"Received: loss={loss!r}"
        )

    def loss_fn(y, y_pred, sample_weight):
        values = ops.cast(loss(y, y_pred), "float32")
        if sample_weight is not None:
            weight = ops.cast(sample_weight, "float32")
            weight = ops.reshape(
                weight, weight.shape + (1,) * (values.ndim - weight.ndim)
            )
            values = values * weight
        return ops.mean(values)

    return loss_fn


def _to_numpy(tree):
    return keras.tree.map_structure(
        lambda t: None if t is None else np.asarray(t), tree
    )


ARRAY_BATCH_SIZE = 32
"""Batch size into which an `(x, y)` tuple of arrays is cut (Keras's)."""


def _is_array_tuple(data) -> bool:
    """Whether `data` is `(x, y)` or `(x, y, sample_weight)` of arrays."""
    return (
        isinstance(data, tuple)
        and len(data) in (2, 3)
        and all(
            len(getattr(part, "shape", ())) >= 1
            for part in data
            if part is not None
        )
    )


def _array_batches(data):
    parts = _to_numpy(data)
    size = len(parts[0])
    for start in range(0, size, ARRAY_BATCH_SIZE):
        yield tuple(
            None if p is None else p[start : start + ARRAY_BATCH_SIZE]
            for p in parts
        )


def _iterate(data):
    if _is_array_tuple(data):
        return _array_batches(data)
    if isinstance(data, keras.utils.PyDataset):
        return (data[i] for i in range(len(data)))
    try:
        return iter(data)
    except TypeError:
        raise ValueError(
            "Argument `data` must be a tf.data.Dataset, a keras PyDataset, "
            "an (x, y) tuple of arrays or an iterable of (x, y) or "
            "(x, y, sample_weight) batches. "
            f"Received: data of type {type(data).__name__}"
        ) from None


def read_batches(data, num_batches: int | None) -> list[Batch]:
    """Reads up to `num_batches` batches of `data` into NumPy.

    Input batches are small next to the activations the analysis keeps, and
    reading them once makes every pass over them see the same samples (a
    shuffled `tf.data.Dataset` would not).
    """
    num_batches = check_positive_int("num_batches", num_batches)
    batches = []
    for index, item in enumerate(_iterate(data)):
        if num_batches is not None and index >= num_batches:
            break
        if not isinstance(item, (tuple, list)) or len(item) not in (2, 3):
            raise ValueError(
                "Argument `data` must yield (x, y) or (x, y, sample_weight) "
                f"batches. Received: batch {index} of type "
                f"{type(item).__name__}"
                + (
                    f" with {len(item)} items"
                    if hasattr(item, "__len__")
                    else ""
                )
            )
        x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(tuple(item))
        if y is None:
            raise ValueError(
                f"Argument `data` must give targets `y`. Received: batch "
                f"{index} with y=None"
            )
        x, y, sample_weight = _to_numpy((x, y, sample_weight))
        size = int(keras.tree.flatten(x)[0].shape[0])
        batches.append(Batch(x, y, sample_weight, size))
    if not batches:
        raise ValueError(
            "Argument `data` must contain at least one batch. "
            "Received: empty data"
        )
    return batches


def _backend_module():
    backend = keras.backend.backend()
    if backend == "jax":
        from keras_depthhet.splitting import _capture_jax as module
    elif backend == "tensorflow":
        from keras_depthhet.splitting import _capture_tensorflow as module
    else:
        raise ValueError(
            "Splitting analysis supports the 'jax' and 'tensorflow' backends. "
            f"Received: backend={backend!r}"
        )
    return module


def tokens_per_sample(model, layers, batch: Batch) -> dict[str, int]:
    """Tokens each layer sees per sample (1 for `(B, d)`, T for `(B, T, d)`).

    Read from the layers' input shapes for one sample, traced without
    running the model where the backend allows it.
    """
    one = keras.tree.map_structure(lambda t: t[:1], batch.x)
    shapes = _backend_module().input_shapes(model, layers, one)
    return {name: int(np.prod(shape[:-1])) for name, shape in shapes.items()}


def lanczos_products(x, c):
    """The backend's products for the Lanczos solver, or None (NumPy)."""
    return _backend_module().lanczos_products(x, c)


_CACHE_ATTRIBUTE = "_keras_depthhet_splitting_steps"


def make_step(model, layers, loss, transform: Callable, kind: tuple):
    """The backend's capture step (see `_capture_jax.make_step`), cached.

    A step is reused while the model's variables (paths and shapes), the
    layers, the loss and the `kind` of `transform` are the same, so
    repeated analyses of an unchanged model skip tracing and compilation;
    growth changes the variables and so makes a new step. The cache lives
    on the model (set past Keras' attribute tracking), so it goes with it.
    """
    if loss is None:
        loss = model.loss
    key = (
        keras.backend.backend(),
        tuple(layer.name for layer in layers),
        kind,
        tuple((v.path, tuple(v.shape)) for v in model.weights),
        bool(getattr(model, "jit_compile", False)),
    )
    cache = model.__dict__.get(_CACHE_ATTRIBUTE)
    if cache is None:
        cache = {}
        object.__setattr__(model, _CACHE_ATTRIBUTE, cache)
    cached = cache.get(key)
    if cached is not None and (cached[0] is loss or cached[0] == loss):
        return cached[1]
    loss_fn = resolve_loss(model, loss)
    step = _backend_module().make_step(model, layers, loss_fn, transform)
    cache[key] = (loss, step)
    return step


def run_step(step, batch: Batch, index: int, scale: float) -> dict:
    """Runs `step` on `batch`; raises if a layer's terms are not finite."""
    terms, finite = step(batch.x, batch.y, batch.sample_weight, scale)
    for name, ok in finite.items():
        if not bool(ops.convert_to_numpy(ok)):
            raise ValueError(
                f"Non-finite values in the gradients or inputs of layer "
                f"{name!r} at batch {index} (0-based). Check the data and "
                "the loss (NaN/Inf inputs, log of zero)."
            )
    return terms
