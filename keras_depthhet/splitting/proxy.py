"""`gradient_proxy`: the paper authors' rank-1 stand-in for the splitting
eigenvalue."""

import functools
from collections.abc import Sequence

import keras
import numpy as np
from keras import ops

from keras_depthhet.splitting import capture


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

    Neuron `i` scores `min(0, sum(v_i))`, the smallest eigenvalue of the
    rank-1 matrix `1 v_i^T` of their code, `v_i = dL/dW[:, i]` its
    weight-gradient row (no bias, no growth-branch weights), for the mean
    loss `L` over the analysed samples in inference mode, as in
    `splitting_eigenvalues` (the authors take their last training
    minibatch). `include_bias=True`, this library's variant, scores
    `min(0, sum(v_i) + dL/db_i)`.

    Args:
        model: A built Keras model with growable layers.
        data: Batches as for `splitting_eigenvalues`.
        loss: A Keras `Loss`, loss name or function; `None` uses the
            model's compiled loss.
        num_batches: Most batches to read from `data` (None: all).
        layers: Names of the growable layers to score (None: all).
        include_bias: Whether to add the bias gradient `dL/db_i` (if the
            layer has a bias) to the row sum.

    Returns:
        `{layer_name: float64 array (units,)}` of scores, in layer order.

    Raises:
        ValueError: on the same bad input as `splitting_eigenvalues`, or
            when `include_bias` is not a bool.

    Examples:
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
    terms_fn = functools.partial(capture.proxy_terms, include_bias=include_bias)
    sums = {key: np.zeros(layer.units) for key, layer in chosen.items()}
    for terms in capture.batch_terms(
        model, chosen, loss, terms_fn, ("proxy", include_bias), batches
    ):
        for name, (row_sums,) in terms.items():
            sums[name] += ops.convert_to_numpy(row_sums)
    return {name: np.minimum(0.0, values) for name, values in sums.items()}
