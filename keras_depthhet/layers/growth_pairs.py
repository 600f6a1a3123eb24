"""The +/- neuron pairs of the growable layers (`GrowableDense`,
`GrowableEinsumDense`): values, constraint, regularizer (`saved_growth`
writes and reads them)."""

import keras
import numpy as np
from keras import ops

GROWTH_SCALE = 0.2
"""Default scale factor `s` of a new +/- neuron pair (the docs' Method page)."""

PAIR_SUFFIXES = ("kernel_plus", "kernel_minus", "bias_plus", "bias_minus")
"""The pair variables' names after `growth_`, in the order they are saved."""


def exact_gelu(x):
    """The exact GELU, as Keras's `gelu`; on JAX written with `erf`, which
    XLA's CPU backend runs faster than `jax.nn.gelu`'s `erfc`."""
    if keras.backend.backend() != "jax":
        return ops.gelu(x, approximate=False)
    return 0.5 * x * (1.0 + ops.erf(x * 0.7071067811865476))


def zero_sum_pairs(name, kernel, bias, indices, scale, dtype) -> dict:
    """A round's pairs `+/- scale * (W[:, i], b[i])` as `{suffix: array}`;
    raises if they would not be finite."""
    if not np.all(np.isfinite(kernel[:, indices])) or (
        bias is not None and not np.all(np.isfinite(bias[indices]))
    ):
        raise ValueError(
            f"Layer {name!r} has non-finite kernel or bias weights "
            f"at the neurons to grow ({np.asarray(indices).tolist()}); "
            "a pair initialised from them would not sum to zero. The "
            "weights diverged: check the learning rate and the data."
        )
    plus = (kernel[:, indices] * scale).astype(dtype)
    values = {"kernel_plus": plus, "kernel_minus": -plus}
    if bias is not None:
        plus_bias = (bias[indices] * scale).astype(dtype)
        values.update(bias_plus=plus_bias, bias_minus=-plus_bias)
    if not all(np.all(np.isfinite(v)) for v in values.values()):
        raise ValueError(
            f"Argument `scale` makes the new pairs of layer {name!r} "
            f"overflow {dtype}. Received: scale={scale!r}"
        )
    return values


def concatenate_pairs(first: dict, then: dict) -> dict:
    """Pair values `first` (possibly empty) followed by `then`, per suffix."""
    return {
        s: np.concatenate([first[s], new], axis=-1) if s in first else new
        for s, new in then.items()
    }


def widened_pairs(name, saved, rounds, kernel, bias, scale, dtype) -> dict:
    """Packed pairs of all `rounds`: `saved` (the pairs of some first rounds,
    or None), then `zero_sum_pairs` of `kernel` and `bias`."""
    sizes = np.cumsum([0] + [len(r) for r in rounds])
    width = 0 if not saved else int(np.shape(saved["kernel_plus"])[-1])
    if width not in sizes:
        raise ValueError(
            f"Layer {name!r}: {width} saved growth pairs are not the pairs "
            f"of its first rounds (rounds of {[len(r) for r in rounds]} "
            "neurons)."
        )
    first = int(np.searchsorted(sizes, width))
    values = {s: np.asarray(v) for s, v in (saved or {}).items()}
    if first < len(rounds):
        new = np.concatenate(rounds[first:])
        rest = zero_sum_pairs(name, kernel, bias, new, scale, dtype)
        values = concatenate_pairs(values, rest)
    return {suffix: value.astype(dtype) for suffix, value in values.items()}


class MirroredConstraint(keras.constraints.Constraint):
    """The minus weight's constraint `w -> -c(-w)`: the pair sum stays 0."""

    def __init__(self, constraint):
        self.constraint = constraint

    def __call__(self, w):
        return ops.negative(self.constraint(ops.negative(w)))


class PairSumRegularizer(keras.regularizers.Regularizer):
    """The plus weight's regularizer: the layer's, of the sum `w+ + w-`."""

    def __init__(self, regularizer, partner):
        self.regularizer = regularizer
        self.partner = partner

    def __call__(self, w):
        # Inside a stateless call `partner.value` is the traced value.
        return self.regularizer(w + ops.cast(self.partner.value, w.dtype))


class ArrayInitializer(keras.initializers.Initializer):
    """Initialises a variable to a fixed array (the widened pair values)."""

    def __init__(self, value):
        self.value = np.asarray(value)

    def __call__(self, shape, dtype=None):
        if tuple(shape) != self.value.shape:
            raise ValueError(
                f"Expected shape {self.value.shape}. Received: shape={shape}"
            )
        return ops.cast(ops.convert_to_tensor(self.value), dtype)
