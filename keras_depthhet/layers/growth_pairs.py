"""The +/- neuron pairs of `GrowableDense`: values, constraint, regularizer,
and how they are saved. After `Dense`'s variables come the packed pairs, each
round's indices and the marker `growth_packed`; older files, without it, hold
each round's pair variables in turn.
"""

import keras
import numpy as np
from keras import ops

GROWTH_SCALE = 0.2
"""Default scale factor `s` of a new +/- neuron pair (the docs' Method page)."""

PAIR_SUFFIXES = ("kernel_plus", "kernel_minus", "bias_plus", "bias_minus")
"""The pair variables' names after `growth_`, in the order they are saved."""

INDICES_KEY = "growth_{}_indices"
PACKED_KEY = "growth_packed"


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


def save_growth(store, first_key: int, variables: list, rounds: list) -> None:
    """Writes the pair variables from numbered key `first_key` on, then
    the rounds' indices and the packed marker."""
    for i, variable in enumerate(variables, start=first_key):
        store[str(i)] = variable
    for r, indices in enumerate(rounds):
        store[INDICES_KEY.format(r)] = indices
    store[PACKED_KEY] = np.asarray(1, dtype="int64")


def check_saved_base(name, store, kernel_shape, use_bias, quantized) -> tuple:
    """`(num_base, int8_file)`: the number of the file's base variables and
    whether its kernel is int8; raises if they do not fit the layer."""
    numbered = [key for key in store.keys() if key.isdigit()]
    int8_file = bool(numbered) and np.dtype(store["0"].dtype) == np.int8
    if quantized and numbered and not int8_file:
        raise ValueError(
            f"Layer {name!r} is quantized, but the saved weights hold a "
            "float kernel. Load them into the float model, then call "
            "`model.quantize('int8')`."
        )
    if numbered and tuple(store["0"].shape) != tuple(kernel_shape):
        raise ValueError(
            f"Layer {name!r} has a kernel of shape {tuple(kernel_shape)}, "
            f"but the saved kernel has shape {tuple(store['0'].shape)}."
        )
    num_base = 1 + int(use_bias) + int(int8_file)
    if len(numbered) < num_base:
        raise ValueError(
            f"Layer {name!r} expected at least {num_base} variables, but "
            f"the saved weights hold {len(numbered)}."
        )
    return num_base, int8_file


def read_growth(name: str, store, num_base: int, use_bias: bool) -> tuple:
    """`(pairs, recorded, sizes)`: the saved pairs packed, the indices the
    file records per round, and each saved round's size."""
    suffixes = [s for s in PAIR_SUFFIXES if use_bias or s[0] == "k"]
    count = len([key for key in store.keys() if key.isdigit()])
    arrays = [np.asarray(store[str(i)]) for i in range(num_base, count)]
    recorded = []
    while INDICES_KEY.format(len(recorded)) in store.keys():
        recorded.append(np.asarray(store[INDICES_KEY.format(len(recorded))]))
    if PACKED_KEY in store.keys():
        if len(arrays) != (len(suffixes) if recorded else 0):
            raise ValueError(
                f"Layer {name!r} expected {num_base} variables plus "
                f"{len(suffixes)} growth variables, but the saved weights "
                f"hold {count} variables."
            )
        sizes = [r.size for r in recorded]
        if arrays and arrays[0].shape[-1] != sum(sizes):
            raise ValueError(
                f"Layer {name!r}: the saved growth pairs ("
                f"{arrays[0].shape[-1]}) are not those of the saved "
                f"rounds ({sizes} neurons)."
            )
        pairs = dict(zip(suffixes, arrays, strict=True)) if arrays else {}
        return pairs, recorded, sizes
    n = len(suffixes)
    num_rounds, remainder = divmod(len(arrays), n)
    if remainder:
        raise ValueError(
            f"Layer {name!r} expected {num_base} variables plus {n} per "
            f"growth round, but the saved weights hold {count} variables."
        )
    sizes = [first.shape[-1] for first in arrays[::n]]
    saved = suffixes if arrays else []
    pairs = {s: np.concatenate(arrays[j::n], -1) for j, s in enumerate(saved)}
    return pairs, recorded[:num_rounds], sizes


def check_saved_rounds(name: str, rounds: list, recorded: list, sizes: list):
    """Raises unless the saved rounds are the first of the layer's `rounds`
    (older files may record fewer rounds' indices than they hold)."""
    if len(sizes) > len(rounds):
        raise ValueError(
            f"Layer {name!r} has {len(rounds)} growth rounds but the saved "
            f"weights hold {len(sizes)}: they come from a model grown "
            "further than this one. Load the grown model's `.keras` file "
            "with `keras.saving.load_model`, or, to resume training after "
            "growth, list `keras_depthhet.GrowthCallback` before "
            "`keras_depthhet.growth.GrowthBackupAndRestore` (not Keras's "
            "`BackupAndRestore`), which regrows the model before the "
            "backup is loaded."
        )
    for r, size in enumerate(sizes):
        expected = rounds[r]
        saved = recorded[r] if r < len(recorded) else None
        if size != expected.size or (
            saved is not None and not np.array_equal(saved, expected)
        ):
            raise ValueError(
                f"Layer {name!r}: growth round {r} of the saved weights grew "
                f"other neurons than this layer's round {r} "
                f"({expected.tolist()}); the file comes from another growth "
                "history."
            )
