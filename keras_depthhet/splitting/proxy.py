"""`gradient_proxy`: the rank-1 score of the paper authors' released code."""

from collections.abc import Sequence

import keras
import numpy as np
from keras import ops

from keras_depthhet.splitting import capture
from keras_depthhet.splitting.curvature import proxy_terms
from keras_depthhet.utils.keras_internals import sync_trainer_state


def gradient_proxy(
    model: keras.Model,
    data,
    *,
    loss=None,
    num_batches: int | None = None,
    layers: Sequence[str] | None = None,
) -> dict[str, np.ndarray]:
    """Rank-1 stand-in for lambda_min used by the paper authors' code.

    Their code scores neuron `i` by the minimum eigenvalue of a rank-1
    matrix built from the neuron's weight-gradient row
    `v_i = [dL/dW[:, i]; dL/db_i]` (the kernel column and the bias entry;
    the kernel column alone without bias; growth-branch weights are not
    part of it): the matrix `v_i 1^T` has the eigenvalues `sum(v_i)` and 0,
    so the score is `min(0, sum(v_i))`. `L` is the mean loss over the
    analysed samples, as in `splitting_eigenvalues`, and the gradients are
    taken in inference mode. The score is negative (eligible for growth)
    exactly when the row sums to a negative number.

    Args:
        model: A built Keras model with `GrowableDense` layers.
        data: Batches as for `splitting_eigenvalues`.
        loss: A Keras `Loss`, loss name or function; `None` uses the
            model's compiled loss.
        num_batches: Most batches to read from `data` (None: all).
        layers: Names of the growable layers to score (None: all).

    Returns:
        `{layer_name: float64 array (units,)}` of scores, in layer order.

    Raises:
        ValueError: on the same bad input as `splitting_eigenvalues`.
    """
    chosen = capture.select_layers(model, layers)
    capture.resolve_loss(model, loss)  # fails before any data is read
    batches = capture.read_batches(data, num_batches)
    capture.check_labels(model, loss, batches)
    total = sum(batch.size for batch in batches)
    sync_trainer_state(model)
    step = capture.make_step(model, chosen, loss, proxy_terms, ("proxy",))
    sums = {key: np.zeros(layer.units) for key, layer in chosen.items()}
    for index, batch in enumerate(batches):
        terms = capture.run_step(
            step, batch, index, batch.size / total, model
        )
        for name, (row_sums,) in terms.items():
            sums[name] += ops.convert_to_numpy(row_sums)
    return {name: np.minimum(0.0, values) for name, values in sums.items()}
