"""What the analysis hooks record, per layer and per call of the layer.

A layer may be called at several places in a model (a shared layer). Its
splitting matrix is then the sum over all its calls' tokens (the loss
depends on its weights through every call), so the hooks record each
call, and the terms are computed over the tokens of all calls joined.
"""

from keras import ops


class CallSites:
    """Records of the hooked layers, keyed as the analysis keys them.

    Args:
        layers: `{key: layer}` of the hooked layers.
    """

    def __init__(self, layers: dict):
        self._keys = {id(layer): key for key, layer in layers.items()}
        self._records = {key: [] for key in layers}

    def key(self, layer) -> str:
        return self._keys[id(layer)]

    def record(self, layer, value) -> int:
        """Appends `value` for this call of `layer`; returns the call index."""
        calls = self._records[self.key(layer)]
        calls.append(value)
        return len(calls) - 1

    def by_key(self) -> dict[str, list]:
        """`{key: [value of each call]}`, calls in order."""
        return self._records

    @staticmethod
    def joined(calls: list) -> tuple:
        """`(inputs, z)` of all calls as `(tokens, d)` and `(tokens, n)`."""
        if not calls:
            raise ValueError(
                "A growable layer chosen for analysis is not called when the "
                "model runs, so its neurons cannot be scored; leave it out "
                "of `layers`."
            )
        inputs = [ops.reshape(x, (-1, x.shape[-1])) for x, _ in calls]
        zs = [ops.reshape(z, (-1, z.shape[-1])) for _, z in calls]
        if len(calls) == 1:
            return inputs[0], zs[0]
        return ops.concatenate(inputs), ops.concatenate(zs)
