"""How the growable layers save their pairs. After the variables of the
base layer (`Dense`, `EinsumDense`) come the packed pairs, each round's
indices and the marker `growth_packed`; older files of `GrowableDense`,
without it, hold each round's pair variables in turn.
"""

import numpy as np

from keras_depthhet.layers.growth_pairs import PAIR_SUFFIXES

INDICES_KEY = "growth_{}_indices"
PACKED_KEY = "growth_packed"


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
