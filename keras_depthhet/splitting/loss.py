"""The loss an analysis differentiates, as one backend-neutral function
`loss_fn(y, y_pred, sample_weight)`: the batch mean, as Keras trains it."""

from collections.abc import Callable

import keras
from keras import ops

from keras_depthhet.utils.keras_internals import compile_arguments


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


def per_output(model, value) -> list:
    """A per-output structure (list or dict by output name) as a list."""
    if isinstance(value, dict):
        names = _output_names(model)
        unknown = sorted(set(value) - set(names))
        if unknown:
            raise ValueError(
                f"Argument `loss` names outputs the model does not have: "
                f"{unknown}. Outputs: {names}. Received: loss={value!r}"
            )
        return [value.get(name) for name in names]
    return list(value)


def flat_outputs(model, tree) -> list:
    """`y` or `y_pred` of a multi-output model as a list in output order."""
    if isinstance(tree, dict):
        return [tree[name] for name in _output_names(model) if name in tree]
    if isinstance(tree, (list, tuple)):
        return list(tree)
    return [tree]


def resolve_loss(model, loss) -> Callable:
    """`loss_fn(y, y_pred, sample_weight)`, the batch mean of `loss` (per
    output: the weighted sum), or of the compiled loss when it is None."""
    weights = None
    if loss is None:
        loss = getattr(model, "loss", None)
        if loss is None:
            raise ValueError(
                "Argument `loss` is required when the model is not compiled "
                "with a loss. Received: loss=None and model.loss=None"
            )
        if getattr(model, "compiled", False):
            weights = compile_arguments(model).get("loss_weights")
    if not isinstance(loss, (dict, list, tuple)):
        return _single_loss(loss)
    losses = [
        None if item is None else _single_loss(item)
        for item in per_output(model, loss)
    ]
    weights = [None] * len(losses) if weights is None else weights
    weights = [
        1.0 if w is None else float(w) for w in per_output(model, weights)
    ]

    def loss_fn(y, y_pred, sample_weight):
        ys, preds = flat_outputs(model, y), flat_outputs(model, y_pred)
        if not len(ys) == len(preds) == len(losses):
            raise ValueError(
                f"Argument `loss` has {len(losses)} entries but the data "
                f"give {len(ys)} targets for {len(preds)} model outputs."
            )
        if isinstance(sample_weight, (dict, list, tuple)):
            sws = flat_outputs(model, sample_weight)
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


def is_sparse_loss(loss) -> bool:
    """Whether `loss` takes integer class labels (sparse crossentropy)."""
    if isinstance(loss, keras.losses.SparseCategoricalCrossentropy):
        return True
    if isinstance(loss, keras.losses.Loss):  # a wrapped function: `fn`
        loss = getattr(loss, "fn", None)
    name = loss if isinstance(loss, str) else getattr(loss, "__name__", "")
    return name.startswith("sparse_categorical")
