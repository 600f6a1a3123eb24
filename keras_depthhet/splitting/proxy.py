"""`gradient_proxy`: the rank-1 score of the paper authors' released code."""

import functools
from collections.abc import Sequence

import keras
import numpy as np
from keras import ops

from keras_depthhet.splitting import capture
from keras_depthhet.splitting.curvature import proxy_terms


def gradient_proxy(
    model: keras.Model,
    data,
    *,
    loss=None,
    num_batches: int | None = None,
    layers: Sequence[str] | None = None,
    include_bias: bool = False,
) -> dict[str, np.ndarray]:
    """Rank-1 stand-in for lambda_min used by the paper authors' code.

    Their code scores neuron `i` from the gradient of the loss with
    respect to the neuron's incoming weights only, its weight-gradient row
    `v_i = dL/dW[:, i]` (`layer.weight.grad[i]` in PyTorch; the bias
    gradient and the growth-branch weights are not used). It builds the
    `d x d` matrix every row of which equals `v_i`, that is `1 v_i^T`,
    whose eigenvalues are `sum(v_i)` (eigenvector `1`) and 0 (`d - 1`
    times), and takes its minimum eigenvalue; the score is therefore
    `min(0, sum(v_i))` (in exact arithmetic), and a neuron is eligible for
    growth exactly when its weight-gradient row sums to a negative number.

    `L` is the mean loss over the analysed samples, as in
    `splitting_eigenvalues`, and the gradients are taken in inference mode
    on the batches given (the authors take `v_i` from the last training
    minibatch, in training mode).

    `include_bias=True` is this library's variant, not the authors': it
    adds `dL/db_i`, scoring `min(0, sum(v_i) + dL/db_i)`, the sum of the
    gradient of neuron `i`'s weights and bias together.

    Args:
        model: A built Keras model with `GrowableDense` layers.
        data: Batches as for `splitting_eigenvalues`.
        loss: A Keras `Loss`, loss name or function; `None` uses the
            model's compiled loss.
        num_batches: Most batches to read from `data` (None: all).
        layers: Names of the growable layers to score (None: all).
        include_bias: Whether to add the bias gradient `dL/db_i` to the
            row sum (layers without a bias have none to add). Default
            `False`, the authors' score.

    Returns:
        `{layer_name: float64 array (units,)}` of scores, in layer order.

    Raises:
        ValueError: on the same bad input as `splitting_eigenvalues`, or
            when `include_bias` is not a bool.

    Example:

    >>> import keras
    >>> from keras_depthhet.layers import GrowableDense
    >>> model = keras.Sequential([
    ...     keras.Input((4,)),
    ...     GrowableDense(3, activation="gelu", name="grow"),
    ...     keras.layers.Dense(2),
    ... ])
    >>> x = np.ones((5, 4), dtype="float32")
    >>> y = np.zeros((5, 2), dtype="float32")
    >>> scores = gradient_proxy(model, [(x, y)], loss="mse")
    >>> scores["grow"].shape, bool((scores["grow"] <= 0).all())
    ((3,), True)
    """
    if not isinstance(include_bias, bool):
        raise ValueError(
            "`include_bias` must be a bool. "
            f"Received: include_bias={include_bias!r}"
        )
    chosen, batches = capture.analysis_inputs(
        model, data, loss, num_batches, layers
    )
    total = sum(batch.size for batch in batches)
    terms_fn = functools.partial(proxy_terms, include_bias=include_bias)
    step = capture.make_step(
        model, chosen, loss, terms_fn, ("proxy", include_bias)
    )
    sums = {key: np.zeros(layer.units) for key, layer in chosen.items()}
    for index, batch in enumerate(batches):
        terms = capture.run_step(
            step, batch, index, batch.size / total, model
        )
        for name, (row_sums,) in terms.items():
            sums[name] += ops.convert_to_numpy(row_sums)
    return {name: np.minimum(0.0, values) for name, values in sums.items()}
