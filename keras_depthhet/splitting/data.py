"""The batches an analysis reads (once, into NumPy), and the checks of
data against the model."""

import contextlib
from dataclasses import dataclass

import keras
import numpy as np
from keras import ops

from keras_depthhet.splitting.loss import (
    flat_outputs,
    is_sparse_loss,
    per_output,
    resolve_loss,
)
from keras_depthhet.utils.validation import positive_int


@dataclass
class Batch:
    """One batch as read from `data`, in NumPy, with its sample count."""

    x: object
    y: object
    sample_weight: object
    size: int


def check_labels(model, loss, batches, argument: str = "data") -> None:
    """Refuses non-finite targets, and sparse categorical labels that are
    not integers in `[0, classes)` (JAX would silently clamp them)."""
    loss = getattr(model, "loss", None) if loss is None else loss
    multiple = isinstance(loss, (dict, list, tuple))
    losses = per_output(model, loss) if multiple else None
    outputs = keras.tree.flatten(getattr(model, "outputs", None) or [])
    for index, batch in enumerate(batches):
        for k, y in enumerate(flat_outputs(model, batch.y)):
            y = np.asarray(y)
            if np.issubdtype(y.dtype, np.floating) and not np.isfinite(y).all():
                raise ValueError(
                    f"Argument `{argument}` holds non-finite targets (NaN or "
                    f"Inf) in batch {index} (0-based)."
                )
            this = loss if losses is None else losses[k]
            if this is None or not is_sparse_loss(this):
                continue
            classes = outputs[k].shape[-1] if k < len(outputs) else None
            classes = None if classes is None else int(classes)
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


@contextlib.contextmanager
def naming(source: str):
    """Re-raises a `ValueError` about "Argument `data`" as one about
    `source` (what the caller's user passed)."""
    try:
        yield
    except ValueError as error:
        message = str(error)
        if "Argument `data`" not in message:
            raise
        raise ValueError(message.replace("Argument `data`", source)) from None


def check_analysis_data(
    model, data, argument: str, num_batches: int | None = None
) -> None:
    """Checks that `data` fits `model` and its loss, naming `argument`:
    reads its batches, runs the model and the loss on two samples."""
    loss_fn = resolve_loss(model, None)
    with naming(f"Argument `{argument}`"):
        batches = read_batches(data, num_batches)
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


def _is_arrays(part) -> bool:
    """An array of at least one dimension, or a dict of them (the targets
    of a multi-output model)."""
    if isinstance(part, dict):
        return bool(part) and all(map(_is_arrays, part.values()))
    return len(getattr(part, "shape", ())) >= 1


def _iterate(data):
    if (  # `(x, y)` or `(x, y, sample_weight)` of arrays (or dicts of them)
        isinstance(data, tuple)
        and len(data) in (2, 3)
        and all(_is_arrays(p) for p in data if p is not None)
    ):
        parts, size = _to_numpy(data), ARRAY_BATCH_SIZE
        count = len(keras.tree.flatten(parts[0])[0])
        return (
            keras.tree.map_structure(
                lambda a, i=i: None if a is None else a[i : i + size], parts
            )
            for i in range(0, count, size)
        )
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
    """Up to `num_batches` batches of `data`, read once into NumPy."""
    num_batches = positive_int("num_batches", num_batches, optional=True)
    batches = []
    for index, item in enumerate(_iterate(data)):
        if num_batches is not None and index >= num_batches:
            break
        if not isinstance(item, (tuple, list)) or len(item) not in (2, 3):
            items = (
                f" with {len(item)} items" if hasattr(item, "__len__") else ""
            )
            raise ValueError(
                "Argument `data` must yield (x, y) or (x, y, sample_weight) "
                f"batches. Received: batch {index} of type "
                f"{type(item).__name__}{items}"
            )
        x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(tuple(item))
        if y is None:
            raise ValueError(
                f"Argument `data` must give targets `y`. Received: batch "
                f"{index} with y=None"
            )
        x, y, sample_weight = _to_numpy((x, y, sample_weight))
        lengths = {
            name: sorted({int(t.shape[0]) for t in keras.tree.flatten(part)})
            for name, part in (
                ("x", x),
                ("y", y),
                ("sample_weight", sample_weight),
            )
            if part is not None
        }
        if len({n for found in lengths.values() for n in found}) > 1:
            raise ValueError(
                "Argument `data` must give as many targets (and sample "
                f"weights) as inputs in each batch. Received: batch {index} "
                f"with lengths {lengths}"
            )
        batches.append(Batch(x, y, sample_weight, lengths["x"][0]))
    if not batches:
        raise ValueError(
            "Argument `data` must contain at least one batch. "
            "Received: empty data"
        )
    return batches
