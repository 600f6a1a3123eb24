"""Best weights across growth events: `GrowthEarlyStopping`."""

import keras
import numpy as np

from keras_depthhet.layers.lookup import growable_layer_map
from keras_depthhet.utils.validation import positive_number


def grown_weights(
    model: keras.Model, before: list, pairs: dict, values: list, scale: float
) -> list:
    """`values` of the weights `before` growth, for the grown `model`'s
    weights: new pairs zero-sum (function kept), widened ones' old values
    in their first columns. `pairs`: `{id(layer): {suffix: variable}}` then.
    """
    index = {id(v): i for i, v in enumerate(before)}

    def old(variable):
        return np.asarray(values[index[id(variable)]])

    new = {}
    for layer in growable_layer_map(model).values():
        growth = layer._growth
        if not growth or all(id(v) in index for v in growth.values()):
            continue
        saved = {s: old(v) for s, v in pairs.get(id(layer), {}).items()}
        kernel, bias = layer._flat_view(
            old(layer.kernel), old(layer.bias) if layer.use_bias else None
        )
        widened = layer._growth_values(saved, kernel, bias, scale)
        for suffix, variable in growth.items():
            new[id(variable)] = widened[suffix]
    return [
        values[index[id(v)]] if id(v) in index else new[id(v)]
        for v in model.weights
    ]


class GrowthEarlyStopping(keras.callbacks.EarlyStopping):
    """`EarlyStopping` whose best weights follow the model's growth.

    Keras's `EarlyStopping(restore_best_weights=True)` fails to set the
    best epoch's weights back into a model grown since. This subclass maps
    them into the grown model's layout, the neurons grown since getting
    zero-sum pairs, so the restored model computes the best epoch's
    function. It may come before or after `GrowthCallback` in `callbacks`.

    Args:
        scale: Scale of the zero-sum pairs of the neurons grown after the
            best epoch (any scale restores the same function).
        **kwargs: The arguments of `keras.callbacks.EarlyStopping`.

    Examples:
        ```python
        model = keras.Sequential(
            [keras.Input((4,)), GrowableDense(8), keras.layers.Dense(1)])
        model.compile("adam", "mse")
        grower = GrowthCallback(interval=1, warmup=1, param_budget=40,
                                layer_threshold=1)
        stopper = GrowthEarlyStopping(patience=3, restore_best_weights=True)
        model.fit(np.random.rand(32, 4), np.random.rand(32, 1), epochs=3,
                  validation_split=0.25, verbose=0, callbacks=[grower, stopper])
        # The grown model now computes the best epoch's function.
        ```
    """

    def __init__(self, scale: float = 0.2, **kwargs):
        super().__init__(**kwargs)
        self.scale = float(positive_number("scale", scale))
        self._best_variables = None
        self._best_pairs = None

    def on_train_begin(self, logs=None):
        super().on_train_begin(logs)
        self._best_variables = None
        self._best_pairs = None

    def on_epoch_end(self, epoch, logs=None):
        self._follow_growth()
        kept = self.best_weights
        super().on_epoch_end(epoch, logs)
        if self.best_weights is not kept:
            self._remember_layout()

    def on_train_end(self, logs=None):
        self._follow_growth()
        super().on_train_end(logs)

    def _remember_layout(self) -> None:
        self._best_variables = list(self.model.weights)
        self._best_pairs = {
            id(layer): dict(layer._growth)
            for layer in growable_layer_map(self.model).values()
        }

    def _follow_growth(self) -> None:
        """Maps `best_weights` into the model's layout if it has grown."""
        if self.best_weights is None or self._best_variables is None:
            return
        now = list(map(id, self.model.weights))
        if now == list(map(id, self._best_variables)):
            return
        before, pairs = self._best_variables, self._best_pairs
        self.best_weights = grown_weights(
            self.model, before, pairs, self.best_weights, self.scale
        )
        self._remember_layout()
