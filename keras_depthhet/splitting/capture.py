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
from keras_depthhet.models.vit import growable_layer_map


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


def select_layers(
    model, layers: Sequence[str] | None
) -> dict[str, GrowableDense]:
    """The model's `GrowableDense` layers named in `layers` (all if None).

    Returns `{key: layer}` in model order, keyed as `growable_layer_map`
    keys them (the layer name, or its path where names repeat).
    """
    if not isinstance(model, keras.layers.Layer):
        raise ValueError(
            "Argument `model` must be a Keras model or layer. "
            f"Received: model of type {type(model).__name__}"
        )
    available = growable_layer_map(model)
    if not available:
        raise ValueError(
            "Argument `model` must contain at least one `GrowableDense` "
            f"layer. Received: model={model.name!r} without any"
        )
    unbuilt = [key for key, layer in available.items() if not layer.built]
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
    unknown = [name for name in layers if name not in available]
    if unknown:
        raise ValueError(
            f"Argument `layers` names layers that are not growable layers of "
            f"model {model.name!r}: {unknown}. Growable layers: "
            f"{list(available)}. Received: layers={list(layers)!r}"
        )
    if len(set(layers)) != len(layers):
        raise ValueError(
            f"Argument `layers` must not repeat a name. Received: "
            f"layers={list(layers)!r}"
        )
    wanted = set(layers)
    return {k: layer for k, layer in available.items() if k in wanted}


def _single_loss(loss) -> Callable:
    """`loss_fn(y, y_pred, sample_weight)` for one output's loss."""
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


def _output_names(model) -> list[str]:
    names = getattr(model, "output_names", None)
    if not names:
        raise ValueError(
            "Argument `loss` is a dict, which needs a model with named "
            f"outputs. Received: model {model.name!r} without output names"
        )
    return list(names)


def _per_output(model, value, names: list[str] | None = None) -> list:
    """A per-output structure (list or dict by output name) as a list."""
    if isinstance(value, dict):
        names = names or _output_names(model)
        unknown = sorted(set(value) - set(names))
        if unknown:
            raise ValueError(
                f"Argument `loss` names outputs the model does not have: "
                f"{unknown}. Outputs: {names}. Received: loss={value!r}"
            )
        return [value.get(name) for name in names]
    return list(value)


def _flat_outputs(model, tree) -> list:
    """`y` or `y_pred` of a multi-output model as a list in output order."""
    if isinstance(tree, dict):
        return [tree[name] for name in _output_names(model) if name in tree]
    if isinstance(tree, (list, tuple)):
        return list(tree)
    return [tree]


def resolve_loss(model, loss) -> Callable:
    """`loss_fn(y, y_pred, sample_weight)` returning the batch-mean loss.

    `loss` may be a Keras `Loss` instance, a loss name or a function
    `(y_true, y_pred) -> per-sample losses`; `None` means the model's
    compiled loss, with its `loss_weights`. Functions are reduced as Keras
    does by default (`"sum_over_batch_size"`: the weighted sum divided by
    the number of values). A list or dict of losses (one per output of a
    multi-output model, None for an output without loss) gives the
    weighted sum of the outputs' losses, as Keras trains it.
    """
    weights = None
    if loss is None:
        loss = getattr(model, "loss", None)
        if loss is None:
            raise ValueError(
                "Argument `loss` is required when the model is not compiled "
                "with a loss. Received: loss=None and model.loss=None"
            )
        config = getattr(model, "_compile_config", None)
        if config is not None:
            weights = config.config.get("loss_weights")
    if not isinstance(loss, (dict, list, tuple)):
        return _single_loss(loss)
    losses = [
        None if item is None else _single_loss(item)
        for item in _per_output(model, loss)
    ]
    if weights is None:
        weights = [1.0] * len(losses)
    else:
        weights = [
            1.0 if w is None else float(w)
            for w in _per_output(model, weights)
        ]

    def loss_fn(y, y_pred, sample_weight):
        ys, preds = _flat_outputs(model, y), _flat_outputs(model, y_pred)
        if not len(ys) == len(preds) == len(losses):
            raise ValueError(
                f"Argument `loss` has {len(losses)} entries but the data "
                f"give {len(ys)} targets for {len(preds)} model outputs."
            )
        if isinstance(sample_weight, (dict, list, tuple)):
            sws = _flat_outputs(model, sample_weight)
        else:
            sws = [sample_weight] * len(losses)
        total = 0.0
        for fn, w, yt, yp, sw in zip(
            losses, weights, ys, preds, sws, strict=True
        ):
            if fn is not None:
                total = total + w * ops.cast(fn(yt, yp, sw), "float32")
        return total

    return loss_fn


def _is_sparse_loss(loss) -> bool:
    """Whether `loss` takes integer class labels (sparse crossentropy)."""
    if isinstance(loss, keras.losses.SparseCategoricalCrossentropy):
        return True
    if isinstance(loss, keras.losses.Loss):
        # Keras wraps loss functions in a `Loss` that keeps them as `fn`.
        loss = getattr(loss, "fn", None)
    name = loss if isinstance(loss, str) else getattr(loss, "__name__", "")
    return name.startswith("sparse_categorical")


def check_labels(model, loss, batches, argument: str = "data") -> None:
    """Refuses labels that would silently steer the analysis wrong.

    Targets must be finite, and labels of a sparse categorical loss must
    be integers in `[0, classes)` (JAX would otherwise read a clamped or
    undefined probability without an error).
    """
    if loss is None:
        loss = getattr(model, "loss", None)
    if isinstance(loss, (dict, list, tuple)):
        losses = _per_output(model, loss)
    else:
        losses = None
    for index, batch in enumerate(batches):
        targets = _flat_outputs(model, batch.y)
        for k, y in enumerate(targets):
            y = np.asarray(y)
            if np.issubdtype(y.dtype, np.floating) and not np.all(
                np.isfinite(y)
            ):
                raise ValueError(
                    f"Argument `{argument}` holds non-finite targets (NaN or "
                    f"Inf) in batch {index} (0-based)."
                )
            this = loss if losses is None else losses[k]
            if this is None or not _is_sparse_loss(this):
                continue
            classes = _num_classes(model, k)
            bad = (y != np.round(y)) | (y < 0)
            if classes is not None:
                bad |= y >= classes
            if np.any(bad):
                raise ValueError(
                    f"Argument `{argument}` holds labels that are not class "
                    f"indices in [0, {classes}) for a sparse categorical "
                    f"loss: {np.unique(y[bad])[:10].tolist()} in batch "
                    f"{index} (0-based)."
                )


def _num_classes(model, output: int) -> int | None:
    outputs = getattr(model, "outputs", None)
    if not outputs or output >= len(keras.tree.flatten(outputs)):
        return None
    size = keras.tree.flatten(outputs)[output].shape[-1]
    return None if size is None else int(size)


def check_analysis_data(
    model, data, argument: str, num_batches: int | None = None
) -> None:
    """Checks that `data` can be analysed with `model` and its loss.

    Reads up to `num_batches` batches (checking their labels), runs the
    model on two samples of the first and computes their loss, so that a
    wrong input shape, a target that does not fit the loss or an
    unsupported loss is reported now, naming `argument`. The model is
    not changed.
    """
    loss_fn = resolve_loss(model, None)
    try:
        batches = read_batches(data, num_batches)
    except ValueError as error:
        raise ValueError(
            str(error).replace("Argument `data`", f"Argument `{argument}`")
        ) from None
    check_labels(model, None, batches, argument)
    first = batches[0]
    x, y, sw = keras.tree.map_structure(
        lambda t: None if t is None else t[:2],
        (first.x, first.y, first.sample_weight),
    )
    shapes = keras.tree.map_structure(lambda t: tuple(t.shape), first.x)
    try:
        y_pred = model(x, training=False)
    except Exception as error:
        raise ValueError(
            f"Argument `{argument}` does not fit the model: running it on "
            f"inputs of shape {shapes} failed with {type(error).__name__}: "
            f"{error}"
        ) from error
    try:
        value = loss_fn(y, y_pred, sw)
    except Exception as error:
        raise ValueError(
            f"Argument `{argument}` does not fit the model's loss: its "
            f"targets failed with {type(error).__name__}: {error}"
        ) from error
    if not np.all(np.isfinite(ops.convert_to_numpy(value))):
        raise ValueError(
            f"Argument `{argument}` gives a non-finite loss on its first "
            "samples; check the inputs and targets."
        )


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


def check_finite_weights(model) -> None:
    """Raises naming the model's first non-finite weights, if any."""
    bad = [
        v.path
        for v in model.weights
        if not np.all(np.isfinite(ops.convert_to_numpy(v)))
    ]
    if bad:
        raise ValueError(
            f"Model {model.name!r} has non-finite weights (NaN or Inf): "
            f"{bad[:5]}{' ...' if len(bad) > 5 else ''}. Training diverged; "
            "its neurons cannot be scored. Check the learning rate, the "
            "loss and the data."
        )


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


def tokens_per_sample(model, layers: dict, batch: Batch) -> dict[str, int]:
    """Tokens each layer sees per sample, over all its calls.

    1 for `(B, d)` inputs, T for `(B, T, d)`, summed over the layer's calls;
    read from the layers' input shapes for one sample, traced without
    running the model where the backend allows it.
    """
    one = keras.tree.map_structure(lambda t: t[:1], batch.x)
    shapes = _backend_module().input_shapes(model, layers, one)
    return {
        key: sum(int(np.prod(shape[:-1])) for shape in calls)
        for key, calls in shapes.items()
    }


def compile_solver(solve: Callable) -> Callable:
    """`solve(*arrays)` compiled by the backend's XLA, float64 enabled.

    `jax.jit` on JAX, a `tf.function` with `jit_compile=True` on
    TensorFlow; used by the matrix-free solver (`lanczos`).
    """
    return _backend_module().compile_solver(solve)


_CACHE_ATTRIBUTE = "_keras_depthhet_splitting_steps"


def make_step(model, layers, loss, transform: Callable, kind: tuple):
    """The backend's capture step (see `_capture_jax.make_step`), cached.

    A step is reused while the model's variables (the same objects and
    shapes), the
    layers, the loss and the `kind` of `transform` are the same, so
    repeated analyses of an unchanged model skip tracing and compilation;
    growth changes the variables and so makes a new step. The cache lives
    on the model (set past Keras' attribute tracking), so it goes with it.
    """
    key = (
        keras.backend.backend(),
        tuple((k, id(layer)) for k, layer in layers.items()),
        kind,
        tuple((id(v), tuple(v.shape)) for v in model.weights),
        bool(getattr(model, "jit_compile", False)),
    )
    cache = model.__dict__.get(_CACHE_ATTRIBUTE)
    if cache is None:
        cache = {}
        object.__setattr__(model, _CACHE_ATTRIBUTE, cache)
    cached = cache.get(key)
    # None means the compiled loss with its loss weights, not the same as
    # passing `model.loss` itself.
    given = ("compiled", model.loss) if loss is None else ("given", loss)
    if cached is not None and (cached[0] is given or cached[0] == given):
        return cached[1]
    loss_fn = resolve_loss(model, loss)
    step = _backend_module().make_step(model, layers, loss_fn, transform)
    cache[key] = (given, step)
    return step


def run_step(
    step, batch: Batch, index: int, scale: float, model=None
) -> dict:
    """Runs `step` on `batch`; raises if a layer's terms are not finite.

    With `model`, non-finite weights are named as such (not as data).
    """
    terms, finite = step(batch.x, batch.y, batch.sample_weight, scale)
    for name, ok in finite.items():
        if not bool(ops.convert_to_numpy(ok)):
            if model is not None:
                check_finite_weights(model)
            raise ValueError(
                f"Non-finite values in the gradients or inputs of layer "
                f"{name!r} at batch {index} (0-based). Check the data and "
                "the loss (NaN/Inf inputs, log of zero)."
            )
    return terms
