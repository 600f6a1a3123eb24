"""How `GrowableDense` saves its growth pairs, and reads both file layouts.

Beside Keras's numbered variables ("0", "1", ... as `Dense` saves them:
`kernel`, `bias`, `kernel_scale` when quantized), a layer saves its packed
pair variables (`PAIR_SUFFIXES` order), each round's neuron indices under
`growth_{r}_indices` and the marker `growth_packed`. Files without the
marker were saved before the pairs were packed, with four variables per
round (`growth_{r}_kernel_plus`, ...); they still load, packed on reading.
"""

import numpy as np

from keras_depthhet.layers.growth_pairs import PAIR_SUFFIXES
from keras_depthhet.layers.quantization import is_int8_kernel

INDICES_KEY = "growth_{}_indices"
"""Saved-weights key of round `r`'s neuron indices."""

PACKED_KEY = "growth_packed"
"""Saved-weights key marking one packed set of pair variables."""


def save_growth(store, first_key: int, variables: list, rounds: list) -> None:
    """Writes the pair variables from key `first_key` on, and the rounds.

    Args:
        store: The weights store `save_own_variables` received.
        first_key: The first free numbered key (after the base variables).
        variables: The packed pair variables, in `PAIR_SUFFIXES` order.
        rounds: The layer's rounds, each an array of neuron indices.
    """
    for i, variable in enumerate(variables, start=first_key):
        store[str(i)] = variable
    for r, indices in enumerate(rounds):
        store[INDICES_KEY.format(r)] = indices
    store[PACKED_KEY] = np.asarray(1, dtype="int64")


def check_saved_base(name, store, kernel_shape, use_bias, quantized) -> tuple:
    """Checks the file's base variables; returns their number and if int8.

    Args:
        name: The layer's name, for messages.
        store: The weights store `load_own_variables` received.
        kernel_shape: The layer's kernel shape.
        use_bias: Whether the layer has a bias.
        quantized: Whether the layer is quantized.

    Returns:
        `(num_base, int8_file)`: the number of numbered base variables
        (`kernel`, `bias`, `kernel_scale` in an int8 file) and whether the
        file's kernel is int8.

    Raises:
        ValueError: if a quantized layer receives a float kernel, the
            kernel's shape differs, or variables are missing.
    """
    numbered = [key for key in store.keys() if key.isdigit()]
    int8_file = bool(numbered) and is_int8_kernel(store["0"])
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
    """The file's pairs (packed), recorded round indices and round sizes.

    Args:
        name: The layer's name, for messages.
        store: The weights store `load_own_variables` received.
        num_base: The number of base variables before the pairs.
        use_bias: Whether the layer has biases (and so bias pairs).

    Returns:
        `(pairs, recorded, sizes)`: `{suffix: array}` of all saved rounds
        packed (empty when none), the indices the file records per round,
        and each saved round's number of neurons.

    Raises:
        ValueError: if the numbered variables or their widths do not fit
            the layout.
    """
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
    num_rounds, remainder = divmod(len(arrays), len(suffixes))
    if remainder:
        raise ValueError(
            f"Layer {name!r} expected {num_base} variables plus "
            f"{len(suffixes)} per growth round, but the saved weights "
            f"hold {count} variables."
        )
    per_round = [
        arrays[r * len(suffixes) : (r + 1) * len(suffixes)]
        for r in range(num_rounds)
    ]
    sizes = [round_arrays[0].shape[-1] for round_arrays in per_round]
    pairs = (
        {
            suffix: np.concatenate([a[j] for a in per_round], axis=-1)
            for j, suffix in enumerate(suffixes)
        }
        if per_round
        else {}
    )
    return pairs, recorded[:num_rounds], sizes


def check_saved_rounds(name: str, rounds: list, recorded: list, sizes: list):
    """Raises unless the saved rounds are the first rounds of `rounds`.

    Args:
        name: The layer's name, for messages.
        rounds: The layer's rounds, each an array of neuron indices.
        recorded: The indices the file records per round (older files may
            record fewer rounds than they hold).
        sizes: Each saved round's number of neurons.

    Raises:
        ValueError: if the file holds more rounds than the layer, or a
            round of other neurons.
    """
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
