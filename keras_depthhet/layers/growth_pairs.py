"""The +/- neuron pairs of `GrowableDense`: values, constraint, regularizer.

A growth round gives each chosen neuron `i` a pair `w+ = s * W[:, i]`,
`b+ = s * b[i]`, `w- = -w+`, `b- = -b+`, whose sum passes through the exact
GELU (`exact_gelu`). The pair's sum is zero at growth, and the layer's
constraints and regularizers are applied to the pair so that it stays so.
"""

import keras
import numpy as np
from keras import ops

GROWTH_SCALE = 0.2
"""Default scale factor `s` of a new +/- neuron pair (the docs' Method page)."""

PAIR_SUFFIXES = ("kernel_plus", "kernel_minus", "bias_plus", "bias_minus")
"""The pair variables' names after `growth_`, in the order they are saved."""


def exact_gelu(x):
    """The exact GELU, `x / 2 * (1 + erf(x / sqrt(2)))`.

    Keras's `gelu` (`approximate=False`, as `keras.activations.gelu` and
    the `"gelu"` activation compute it) and PyTorch's exact GELU (timm's
    DeiT) compute this function. On JAX, `jax.nn.gelu` writes it with
    `erfc`, which XLA's CPU backend runs more slowly than `erf` (the
    GELU row of `benchmarks/train_step_profile.py`, before and after, in
    `docs/benchmarks.md`). So on JAX it is written with `erf`, as PyTorch
    writes it; elsewhere it is Keras's `gelu`.

    Args:
        x: A tensor.

    Returns:
        `GELU(x)`, elementwise, in `x`'s dtype.

    Example:

    >>> float(exact_gelu(keras.ops.convert_to_tensor(0.0)))
    0.0
    """
    if keras.backend.backend() != "jax":
        return ops.gelu(x, approximate=False)
    return 0.5 * x * (1.0 + ops.erf(x * 0.7071067811865476))


def zero_sum_pairs(name, kernel, bias, indices, scale, dtype) -> dict:
    """A round's initial pair values: `+/- scale * (W[:, i], b[i])`.

    Args:
        name: The layer's name, for messages.
        kernel: The base kernel, a `(input_dim, units)` NumPy array.
        bias: The base bias, a `(units,)` array, or None without bias.
        indices: The round's neuron indices.
        scale: The scale factor `s`.
        dtype: The variables' dtype.

    Returns:
        `{suffix: array}` for the `PAIR_SUFFIXES` (the kernel ones only
        without bias), each with one column per index.

    Raises:
        ValueError: if the kernel or bias is not finite at `indices` (a
            pair made from them would not sum to zero), or if `scale`
            makes a value overflow `dtype`.
    """
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
        suffix: np.concatenate([first[suffix], new], axis=-1)
        if suffix in first
        else new
        for suffix, new in then.items()
    }


def widened_pairs(name, saved, rounds, kernel, bias, scale, dtype) -> dict:
    """Pair values of all `rounds`: `saved` first, then zero-sum pairs.

    `saved` (`{suffix: array}`, or None or empty for none) holds the pairs
    of the first rounds, e.g. the variables' values before a round was
    added, or a file saved before later rounds; the rounds after it start
    as zero-sum pairs of `kernel` and `bias` (`zero_sum_pairs`), as a
    growth starts them, so the layer computes what the saved pairs did.

    Args:
        name: The layer's name, for messages.
        saved: The pairs of the first rounds, packed.
        rounds: The layer's rounds, each an array of neuron indices.
        kernel: The base kernel, a NumPy array.
        bias: The base bias, or None.
        scale: The scale factor of the new pairs.
        dtype: The variables' dtype.

    Returns:
        `{suffix: array}` of all rounds' pairs, packed, in `dtype`.

    Raises:
        ValueError: if `saved` is not the pairs of a number of first rounds.
    """
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
    """The minus weight's constraint: `w -> -c(-w)` for the layer's `c`.

    A pair starts as `w- = -w+`; constraining `w+` by `c` and `w-` by its
    mirror keeps `w+ + w- = c(w+) - c(w+) = 0`, so no constraint can break
    function preservation, and the pair stays a +/- pair.
    """

    def __init__(self, constraint):
        self.constraint = constraint

    def __call__(self, w):
        return ops.negative(self.constraint(ops.negative(w)))


class PairSumRegularizer(keras.regularizers.Regularizer):
    """The plus weight's regularizer: the layer's `r` of `w+ + w-`.

    Only the pair's sum enters the layer's output, so it is the sum that
    is regularized, as the weight of one neuron; it is zero at growth, so
    growth does not change the regularized loss. The minus weight carries
    no regularizer of its own.
    """

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
