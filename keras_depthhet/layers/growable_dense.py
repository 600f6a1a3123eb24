"""`GrowableDense`: a Dense layer whose output neurons can be given depth."""

from collections.abc import Callable, Sequence

import keras
import numpy as np
from keras import ops

from keras_depthhet.layers.quantization import Int8KernelMixin, is_int8_kernel
from keras_depthhet.layers.validation import positive_int
from keras_depthhet.utils.keras_internals import (
    is_compiled_trace,
    unlocked_state,
    untrack_variable,
)

GROWTH_SCALE = 0.2
"""Default scale factor `s` of a new +/- neuron pair (the docs' Method page)."""

_GROWTH_SUFFIXES = ("kernel_plus", "kernel_minus", "bias_plus", "bias_minus")

_INDICES_KEY = "growth_{}_indices"
"""Saved-weights key of round `r`'s neuron indices (beside Keras's "0", "1")."""

_PACKED_KEY = "growth_packed"
"""Saved-weights key marking one packed pair of variables for all rounds.

Files without it were saved before packing, with four variables per round
(`growth_{r}_kernel_plus`, ...); they still load.
"""


def _validate_indices(indices, units: int) -> np.ndarray:
    """Checks one round's neuron indices; returns them as an int64 array."""
    array = np.asarray(indices)
    if array.ndim != 1:
        raise ValueError(
            "Argument `indices` must be one-dimensional. "
            f"Received: indices with shape {array.shape}"
        )
    if array.size == 0:
        raise ValueError(
            "Argument `indices` must name at least one neuron. "
            f"Received: indices={indices!r}"
        )
    if array.dtype == bool or not np.issubdtype(array.dtype, np.integer):
        raise ValueError(
            "Argument `indices` must contain integers. "
            f"Received: indices={indices!r} (dtype {array.dtype})"
        )
    array = array.astype(np.int64)
    bad = array[(array < 0) | (array >= units)]
    if bad.size:
        raise ValueError(
            f"Argument `indices` must lie in [0, {units}) (units={units}). "
            f"Received out-of-range values: {bad.tolist()}"
        )
    values, counts = np.unique(array, return_counts=True)
    if np.any(counts > 1):
        raise ValueError(
            "Argument `indices` must not repeat a neuron within one round. "
            f"Received duplicates: {values[counts > 1].tolist()}"
        )
    return array


def _validate_scale(scale) -> float:
    if isinstance(scale, bool) or not isinstance(
        scale, (int, float, np.integer, np.floating)
    ):
        raise ValueError(
            f"Argument `scale` must be a positive number. Received: "
            f"scale={scale!r}"
        )
    if not np.isfinite(scale) or scale <= 0:
        raise ValueError(
            "Argument `scale` must be a positive, finite number. "
            f"Received: scale={scale!r}"
        )
    return float(scale)


def exact_gelu(x):
    """The exact GELU, `x / 2 * (1 + erf(x / sqrt(2)))`.

    Keras's `gelu` (`approximate=False`, as `keras.activations.gelu` and
    the `"gelu"` activation compute it) and PyTorch's exact GELU (timm's
    DeiT) compute this function. On JAX, `jax.nn.gelu` writes it with
    `erfc`, which XLA's CPU backend runs more slowly than `erf` (the
    GELU row of `benchmarks/train_step_profile.py`, before and after, in
    `docs/benchmarks.md`). So on JAX it is written with `erf`, as PyTorch
    writes it;
    elsewhere it is Keras's `gelu`.
    """
    if keras.backend.backend() != "jax":
        return ops.gelu(x, approximate=False)
    return 0.5 * x * (1.0 + ops.erf(x * 0.7071067811865476))


class _MirroredConstraint(keras.constraints.Constraint):
    """The minus weight's constraint: `w -> -c(-w)` for the layer's `c`.

    A pair starts as `w- = -w+`; constraining `w+` by `c` and `w-` by its
    mirror keeps `w+ + w- = c(w+) - c(w+) = 0`, so no constraint can break
    function preservation, and the pair stays a +/- pair.
    """

    def __init__(self, constraint):
        self.constraint = constraint

    def __call__(self, w):
        return ops.negative(self.constraint(ops.negative(w)))


class _PairSumRegularizer(keras.regularizers.Regularizer):
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


@keras.saving.register_keras_serializable(package="keras_depthhet")
class GrowableDense(Int8KernelMixin, keras.layers.Layer):
    """Densely-connected layer whose output neurons can be given extra depth.

    Before any growth this is `keras.layers.Dense`: the same `kernel` and
    `bias` weights and the same output, for inputs of any rank `(..., d)`.
    `grow(indices)` then adds, for each chosen output neuron `i`, a pair of
    new neurons `a+ = x w+ + b+` and `a- = x w- + b-`, initialised to
    `+/- scale * (W[:, i], b[i])`, whose sum passes through the exact GELU
    and is added, with a skip connection, to neuron `i`'s pre-activation:

    `z'_i = z_i + sum over rounds [GELU(a+ + a-) + a+ + a-]`.

    At initialisation `a+ + a- = 0`, so the layer computes exactly the same
    function as before; training then moves the pair apart. A neuron may be
    chosen in several rounds, so different neurons of one layer end up with
    different depth. All rounds of a layer run in one matmul of the summed
    `w+ + w-` columns and one segment sum back onto the chosen neurons, so
    the added cost is proportional to the number of grown neurons.

    The pairs of all rounds are packed into one set of variables,
    `growth_kernel_plus` and `growth_kernel_minus` of shape
    `(input_dim, K)` and `growth_bias_plus` and `growth_bias_minus` of
    shape `(K,)` for the layer's `K = num_grown` pairs, round after round
    (round `r` holds the columns from `sum(len(rounds[:r]))` on). Each
    growth round replaces them by wider variables holding the old values
    and the new pairs, so a layer grown in many rounds has as many
    variables, and trains and compiles as fast, as one grown once by the
    same neurons. Constraints and regularizers
    treat each pair as the one neuron it is, so that growth never changes
    the function or the regularized loss: the kernel (bias) constraint `c`
    constrains `w+` and its mirror `w -> -c(-w)` constrains `w-` (so
    `w+ + w-` stays zero at growth whatever `c` is), and the kernel (bias)
    regularizer applies to the sum `w+ + w-` (zero at growth), not to `w+`
    and `w-` separately.
    The rounds are part of the config (`growth_rounds`), so
    `from_config(get_config())` and `.keras` files rebuild a grown layer.
    A weights file saved before later growth rounds (e.g. the best epoch
    of `ModelCheckpoint(save_weights_only=True)`) loads into the grown
    layer: the rounds it lacks start as zero-sum pairs of its kernel, so
    the layer computes what the saved one did.

    Grow a layer that a model has already used in `fit`, `predict` or
    `evaluate` with `keras_depthhet.growth.grow_model`, not `grow`: the
    model's compiled functions and optimizer must be remade too (`grow`
    refuses, saying so).

    `model.quantize("int8")` (or `layer.quantize("int8")`) stores the base
    kernel in int8 with one scale per output neuron (`kernel_scale`) and
    computes `x W` as `keras.layers.Dense` does in int8 mode; the bias and
    the growth pairs stay in float and trainable. Other modes raise a
    `ValueError` and leave the layer unchanged. A quantized layer cannot
    grow: quantize after growth. A quantized layer round-trips through
    `get_config`/`from_config`, `.keras` files and weights files.

    Args:
        units: Positive integer, the number of output neurons.
        activation: Activation applied to the (grown) pre-activation.
            `None` means linear.
        use_bias: Whether the layer (and its growth pairs) use a bias.
        kernel_initializer: Initializer of `kernel`.
        bias_initializer: Initializer of `bias`.
        kernel_regularizer: Regularizer of `kernel` and growth kernels.
        bias_regularizer: Regularizer of `bias` and growth biases.
        activity_regularizer: Regularizer of the layer's output.
        kernel_constraint: Constraint of `kernel` and growth kernels.
        bias_constraint: Constraint of `bias` and growth biases.
        growth_rounds: Optional list of rounds, each a list of distinct
            neuron indices; used when rebuilding a grown layer from its
            config (growth weights then start at zero until loaded).
        quantization_config: Optional
            `keras.quantizers.Int8QuantizationConfig` of a quantized layer
            (set by `quantize`; used when it is rebuilt from its config).
        **kwargs: Base layer keyword arguments (`name`, `dtype`, ...).

    Input shape:
        N-D tensor `(..., input_dim)`.

    Output shape:
        N-D tensor `(..., units)`.

    Example:

    ```python
    layer = GrowableDense(8, activation="gelu")
    x = np.random.rand(4, 16).astype("float32")
    before = layer(x)
    layer.grow([0, 3, 5])  # 102 = 3 neurons * 2 * (16 + 1) parameters
    np.allclose(before, layer(x), atol=1e-6)  # True: function preserved
    ```
    """

    def __init__(
        self,
        units: int,
        activation=None,
        use_bias: bool = True,
        kernel_initializer="glorot_uniform",
        bias_initializer="zeros",
        kernel_regularizer=None,
        bias_regularizer=None,
        activity_regularizer=None,
        kernel_constraint=None,
        bias_constraint=None,
        growth_rounds: Sequence[Sequence[int]] | None = None,
        quantization_config=None,
        **kwargs,
    ):
        super().__init__(activity_regularizer=activity_regularizer, **kwargs)
        self.units = positive_int("units", units)
        self.activation = keras.activations.get(activation)
        self.use_bias = bool(use_bias)
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.bias_initializer = keras.initializers.get(bias_initializer)
        self.kernel_regularizer = keras.regularizers.get(kernel_regularizer)
        self.bias_regularizer = keras.regularizers.get(bias_regularizer)
        self.kernel_constraint = keras.constraints.get(kernel_constraint)
        self.bias_constraint = keras.constraints.get(bias_constraint)
        self._rounds = [
            _validate_indices(r, self.units) for r in (growth_rounds or [])
        ]
        self._growth = {}
        self._targets = None
        self._analysis_hook = None
        self._traced = False
        self.quantization_config = quantization_config
        self._is_quantized = False
        self.input_spec = keras.layers.InputSpec(min_ndim=2)
        self.supports_masking = True

    # ------------------------------------------------------------------ build
    def build(self, input_shape):
        input_dim = input_shape[-1]
        if input_dim is None:
            raise ValueError(
                "The last dimension of the input to `GrowableDense` must be "
                f"known. Received: input_shape={input_shape}"
            )
        self.input_dim = int(input_dim)
        if self.quantization_mode is not None:
            self._build_int8_kernel()
        else:
            self.kernel = self.add_weight(
                name="kernel",
                shape=(self.input_dim, self.units),
                initializer=self.kernel_initializer,
                regularizer=self.kernel_regularizer,
                constraint=self.kernel_constraint,
            )
        if self.use_bias:
            self.bias = self.add_weight(
                name="bias",
                shape=(self.units,),
                initializer=self.bias_initializer,
                regularizer=self.bias_regularizer,
                constraint=self.bias_constraint,
            )
        else:
            self.bias = None
        if self._rounds:
            self._growth = self._add_growth_variables(self.num_grown, None)
        self._update_targets()
        self.input_spec = keras.layers.InputSpec(
            min_ndim=2, axes={-1: self.input_dim}
        )

    def _add_growth_variables(self, k: int, values) -> dict:
        """Creates the packed variables of `k` pairs; `values` None: zeros."""
        shapes = {
            "kernel_plus": (self.input_dim, k),
            "kernel_minus": (self.input_dim, k),
            "bias_plus": (k,),
            "bias_minus": (k,),
        }
        created = {}
        for suffix in _GROWTH_SUFFIXES:
            if suffix.startswith("bias") and not self.use_bias:
                continue
            if values is None:
                initializer = "zeros"
            else:
                initializer = _ArrayInitializer(values[suffix])
            created[suffix] = self.add_weight(
                name=f"growth_{suffix}",
                shape=shapes[suffix],
                initializer=initializer,
            )
        for part in ("kernel", "bias"):
            if f"{part}_plus" not in created:
                continue
            plus, minus = created[f"{part}_plus"], created[f"{part}_minus"]
            regularizer = getattr(self, f"{part}_regularizer")
            constraint = getattr(self, f"{part}_constraint")
            if regularizer is not None:
                plus.regularizer = _PairSumRegularizer(regularizer, minus)
            if constraint is not None:
                plus.constraint = constraint
                minus.constraint = _MirroredConstraint(constraint)
        return created

    def _growth_values(self, saved, kernel, bias, scale) -> dict:
        """Values of the packed variables: `saved`, then zero-sum pairs.

        `saved` (`{suffix: array}` or None) holds the pairs of the first
        rounds, e.g. the variables' values before a round was added or a
        file saved before later rounds; the rounds after it start as
        zero-sum pairs of `kernel` and `bias`, as `grow` starts them, so
        the layer computes what the saved pairs computed.
        """
        sizes = np.cumsum([0] + [len(r) for r in self._rounds])
        width = 0 if not saved else int(np.shape(saved["kernel_plus"])[-1])
        if width not in sizes:
            raise ValueError(
                f"Layer {self.name!r}: {width} saved growth pairs are not "
                f"the pairs of its first rounds (rounds of "
                f"{[len(r) for r in self._rounds]} neurons)."
            )
        first = int(np.searchsorted(sizes, width))
        values = {s: np.asarray(v) for s, v in (saved or {}).items()}
        if first < len(self._rounds):
            rest = self._zero_sum_pairs(
                kernel, bias, np.concatenate(self._rounds[first:]), scale
            )
            values = {
                suffix: np.concatenate([values[suffix], new], axis=-1)
                if suffix in values
                else new
                for suffix, new in rest.items()
            }
        return {
            suffix: value.astype(self.variable_dtype)
            for suffix, value in values.items()
        }

    def _assign_growth(self, values: dict) -> None:
        """Assigns packed values (`_growth_values`) to the variables."""
        for suffix, variable in self._growth.items():
            variable.assign(values[suffix])

    def _round_columns(self, r: int) -> slice:
        """The columns of round `r`'s pairs in the packed variables."""
        start = sum(len(indices) for indices in self._rounds[:r])
        return slice(start, start + len(self._rounds[r]))

    def _pair_values(self, kernel, bias, indices, scale) -> dict:
        """A new round's initial values: `+/- scale * (W[:, i], b[i])`.

        Raises if the layer is quantized (quantize after growth), or if a
        value overflows the variables' dtype (a huge `scale`), naming
        non-finite weights as weights.
        """
        self._check_growable()
        return self._zero_sum_pairs(kernel, bias, indices, scale)

    def _zero_sum_pairs(self, kernel, bias, indices, scale) -> dict:
        """`_pair_values` without the quantization check."""
        if not np.all(np.isfinite(kernel[:, indices])) or (
            bias is not None and not np.all(np.isfinite(bias[indices]))
        ):
            raise ValueError(
                f"Layer {self.name!r} has non-finite kernel or bias weights "
                f"at the neurons to grow ({np.asarray(indices).tolist()}); "
                "a pair initialised from them would not sum to zero. The "
                "weights diverged: check the learning rate and the data."
            )
        plus = (kernel[:, indices] * scale).astype(self.variable_dtype)
        values = {"kernel_plus": plus, "kernel_minus": -plus}
        if bias is not None:
            plus_bias = (bias[indices] * scale).astype(self.variable_dtype)
            values.update(bias_plus=plus_bias, bias_minus=-plus_bias)
        if not all(np.all(np.isfinite(v)) for v in values.values()):
            raise ValueError(
                f"Argument `scale` makes the new pairs of layer "
                f"{self.name!r} overflow {self.variable_dtype}. "
                f"Received: scale={scale!r}"
            )
        return values

    def _update_targets(self):
        """Caches the neuron fed by each of the K pairs, all rounds in order."""
        if self._rounds:
            self._targets = np.concatenate(self._rounds).astype("int32")
        else:
            self._targets = None

    # ----------------------------------------------------------------- growth
    @property
    def growth_rounds(self) -> list[np.ndarray]:
        """The rounds grown so far, each an int64 array of neuron indices."""
        return [r.copy() for r in self._rounds]

    @property
    def num_grown(self) -> int:
        """Total number of +/- pairs added over all rounds."""
        return int(sum(len(r) for r in self._rounds))

    def growth_cost(self, num_neurons: int = 1) -> int:
        """Parameters added by growing `num_neurons` neurons (one round)."""
        if not self.built:
            raise ValueError(
                f"Layer '{self.name}' is not built yet; its input size, and so "
                "the cost of growth, is unknown. Call it on an input first."
            )
        return 2 * (self.input_dim + int(self.use_bias)) * int(num_neurons)

    def grow(self, indices, scale: float = 0.2) -> int:
        """Adds one growth round at the output neurons `indices`.

        Each chosen neuron `i` gets a pair of neurons initialised to
        `w+ = scale * W[:, i]`, `b+ = scale * b[i]`, `w- = -w+`, `b- = -b+`;
        the layer's function is unchanged. The layer must be built.

        Args:
            indices: Distinct integer indices in `[0, units)`, at least one.
            scale: Positive, finite scale factor of the new pair.

        Returns:
            The number of parameters added: `2 * (input_dim + 1) * k` for
            `k` neurons (`2 * input_dim * k` without bias).

        Raises:
            ValueError: if the layer is unbuilt, an argument is invalid, or
                a compiled function (of `fit`, `predict`, `evaluate`, a
                `jax.jit` or `tf.function`) has already traced the layer:
                that function would keep the old weights, so grow through
                the model with `keras_depthhet.growth.grow_model`, which
                remakes it; or if the layer is quantized (quantize after
                growth). The layer is then left unchanged.
        """
        self._check_growable()
        if self._traced:
            raise ValueError(
                f"Layer {self.name!r} has been traced into a compiled "
                "function (by `fit`, `predict`, `evaluate`, `train_on_batch`"
                ", a `jax.jit` or a `tf.function`), which would keep using "
                "its weights from before growth: the new neurons would be "
                "ignored (silently, on TensorFlow) and the optimizer would "
                "not know them. Grow it through its model instead: "
                "`keras_depthhet.growth.grow_model(model, "
                f"{{{self.name!r}: indices}})`, which also remakes the "
                "model's compiled functions and optimizer state. "
                f"Received: layer.grow({indices!r}) on a traced layer"
            )
        return self._grow(indices, scale)

    def _grow(self, indices, scale: float = 0.2) -> int:
        """`grow` without the traced-layer check (for `grow_model`)."""
        self._check_growable()
        if not self.built:
            raise ValueError(
                f"Layer '{self.name}' must be built before `grow()` is "
                "called (call it on an input, or build the model). "
                f"Received: layer.built={self.built}"
            )
        indices = _validate_indices(indices, self.units)
        scale = _validate_scale(scale)
        values = self._pair_values(
            ops.convert_to_numpy(self.kernel),
            ops.convert_to_numpy(self.bias) if self.use_bias else None,
            indices,
            scale,
        )
        old = self._growth
        values = {
            suffix: np.concatenate(
                [ops.convert_to_numpy(old[suffix]), new], axis=-1
            )
            if suffix in old
            else new
            for suffix, new in values.items()
        }
        before = list(self.weights)
        try:
            with unlocked_state(self):
                created = self._add_growth_variables(
                    self.num_grown + len(indices), values
                )
        except Exception:
            for variable in self.weights:
                if not any(variable is v for v in before):
                    untrack_variable(self, variable)
            raise
        with unlocked_state(self):
            for variable in old.values():
                untrack_variable(self, variable)
        self._growth = created
        self._rounds.append(indices)
        self._update_targets()
        return self.growth_cost(len(indices))

    # ------------------------------------------------------------------ call
    def _growth_branch(self, inputs):
        """Sum over rounds of GELU(a+ + a-) + (a+ + a-), per output neuron.

        The K pairs of all rounds run as one matmul; their results go back
        onto their neurons with one segment sum over the K axis (a scatter-
        add of K values per token), never a dense units-by-K projection.
        """
        growth = self._growth
        kernel = growth["kernel_plus"] + growth["kernel_minus"]
        pair_sum = ops.matmul(inputs, ops.cast(kernel, inputs.dtype))
        if self.use_bias:
            bias = growth["bias_plus"] + growth["bias_minus"]
            pair_sum = pair_sum + ops.cast(bias, inputs.dtype)
        branch = exact_gelu(pair_sum) + pair_sum
        per_neuron = ops.segment_sum(
            ops.moveaxis(branch, -1, 0), self._targets, num_segments=self.units
        )
        return ops.moveaxis(per_neuron, 0, -1)

    def preactivation(self, inputs):
        """The grown pre-activation `z'` (before the layer's activation)."""
        z = self._base_matmul(inputs)
        if self.use_bias:
            z = z + ops.cast(self.bias, inputs.dtype)
        if self._targets is not None:
            z = z + self._growth_branch(inputs)
        return z

    def call(self, inputs):
        if self._analysis_hook is None and is_compiled_trace(inputs):
            self._traced = True
        z = self.preactivation(inputs)
        if self.activation is keras.activations.gelu:
            outputs = exact_gelu(z)  # The same function, faster on JAX.
        else:
            outputs = self.activation(z) if self.activation is not None else z
        if self._analysis_hook is not None:
            outputs = self._analysis_hook(self, inputs, z, outputs)
        return outputs

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[:-1]) + (self.units,)

    def set_analysis_hook(self, hook: Callable | None) -> None:
        """Installs `hook(layer, inputs, preactivation, outputs) -> outputs`.

        Analysis code (the splitting module) uses it to read a layer's input
        and pre-activation and to take gradients with respect to its output;
        the hook must return a tensor equal to `outputs`. `None` removes it.
        """
        self._analysis_hook = hook

    # ---------------------------------------------------------------- saving
    def _base_variables(self) -> list:
        variables = [self.kernel]
        if self.use_bias:
            variables.append(self.bias)
        if self._is_quantized:
            variables.append(self.kernel_scale)
        return variables

    def _variables_in_order(self) -> list:
        """Saved order: `kernel`, `bias`, `kernel_scale`, then the pairs'.

        Listed by role, not as Keras tracks them: quantization replaces the
        kernel by a non-trainable one, which moves it in the tracked lists.
        """
        variables = self._base_variables()
        variables.extend(
            self._growth[suffix]
            for suffix in _GROWTH_SUFFIXES
            if suffix in self._growth
        )
        return variables

    def save_own_variables(self, store):
        """Saves the variables by role and each round's indices.

        The order is `kernel`, `bias`, `kernel_scale` (when quantized; as
        `Dense` saves them), then the packed `growth_kernel_plus`,
        `growth_kernel_minus`, `growth_bias_plus` and `growth_bias_minus`.
        """
        for i, variable in enumerate(self._variables_in_order()):
            store[str(i)] = variable
        for r, indices in enumerate(self._rounds):
            store[_INDICES_KEY.format(r)] = indices
        store[_PACKED_KEY] = np.asarray(1, dtype="int64")

    def _saved_growth(self, store, numbered, num_base) -> tuple:
        """The file's growth pairs (packed), recorded indices, round sizes.

        Reads both layouts: one packed set of variables (files with
        `_PACKED_KEY`) and the per-round variables of older files.
        """
        suffixes = [
            s for s in _GROWTH_SUFFIXES if self.use_bias or s[0] == "k"
        ]
        arrays = [
            np.asarray(store[str(i)]) for i in range(num_base, len(numbered))
        ]
        recorded = []
        while _INDICES_KEY.format(len(recorded)) in store.keys():
            key = _INDICES_KEY.format(len(recorded))
            recorded.append(np.asarray(store[key]))
        if _PACKED_KEY in store.keys():
            if len(arrays) != (len(suffixes) if recorded else 0):
                raise ValueError(
                    f"Layer {self.name!r} expected {num_base} variables plus "
                    f"{len(suffixes)} growth variables, but the saved weights "
                    f"hold {len(numbered)} variables."
                )
            sizes = [r.size for r in recorded]
            packed = dict(zip(suffixes, arrays, strict=True)) if arrays else {}
            if arrays and arrays[0].shape[-1] != sum(sizes):
                raise ValueError(
                    f"Layer {self.name!r}: the saved growth pairs ("
                    f"{arrays[0].shape[-1]}) are not those of the saved "
                    f"rounds ({sizes} neurons)."
                )
            return packed, recorded, sizes
        num_rounds, remainder = divmod(len(arrays), len(suffixes))
        if remainder:
            raise ValueError(
                f"Layer {self.name!r} expected {num_base} variables plus "
                f"{len(suffixes)} per growth round, but the saved weights "
                f"hold {len(numbered)} variables."
            )
        per_round = [
            arrays[r * len(suffixes) : (r + 1) * len(suffixes)]
            for r in range(num_rounds)
        ]
        sizes = [round_arrays[0].shape[-1] for round_arrays in per_round]
        packed = {
            suffix: np.concatenate([a[j] for a in per_round], axis=-1)
            for j, suffix in enumerate(suffixes)
        } if per_round else {}
        return packed, recorded[:num_rounds], sizes

    def load_own_variables(self, store):
        """Loads saved variables; a file of fewer rounds loads too.

        The file's rounds must be the first rounds of this layer (same
        neurons, checked where the file records them); rounds the file
        lacks are set to zero-sum pairs of the loaded kernel, so the layer
        computes what the saved layer computed. A file with more rounds
        than the layer is refused: grow the model first (a `.keras` file
        of a grown model rebuilds it with `keras.saving.load_model`).
        Files saved with one set of variables per round (before the pairs
        were packed) load too.

        A file with an int8 kernel quantizes a float layer before loading
        (default input quantizer); a float file is refused by a quantized
        layer: load it, then quantize.
        """
        numbered = [key for key in store.keys() if key.isdigit()]
        int8_file = bool(numbered) and is_int8_kernel(store["0"])
        if self._is_quantized and numbered and not int8_file:
            raise ValueError(
                f"Layer {self.name!r} is quantized, but the saved weights "
                "hold a float kernel. Load them into the float model, then "
                "call `model.quantize('int8')`."
            )
        if numbered and tuple(store["0"].shape) != tuple(self.kernel.shape):
            raise ValueError(
                f"Layer {self.name!r} has a kernel of shape "
                f"{tuple(self.kernel.shape)}, but the saved kernel has shape "
                f"{tuple(store['0'].shape)}."
            )
        num_base = 1 + int(self.use_bias) + int(int8_file)
        if len(numbered) < num_base:
            raise ValueError(
                f"Layer {self.name!r} expected at least {num_base} "
                f"variables, but the saved weights hold {len(numbered)}."
            )
        saved, recorded, sizes = self._saved_growth(store, numbered, num_base)
        if len(sizes) > len(self._rounds):
            raise ValueError(
                f"Layer {self.name!r} has {len(self._rounds)} growth rounds "
                f"but the saved weights hold {len(sizes)}: they come from "
                "a model grown further than this one. Load the grown "
                "model's `.keras` file with `keras.saving.load_model`, or, "
                "to resume training after growth, list "
                "`keras_depthhet.GrowthCallback` before "
                "`keras.callbacks.BackupAndRestore` so that it regrows the "
                "model before the backup is loaded."
            )
        for r, size in enumerate(sizes):
            expected = self._rounds[r]
            saved_indices = recorded[r] if r < len(recorded) else None
            if size != expected.size or (
                saved_indices is not None
                and not np.array_equal(saved_indices, expected)
            ):
                raise ValueError(
                    f"Layer {self.name!r}: growth round {r} of the saved "
                    f"weights grew other neurons than this layer's round "
                    f"{r} ({expected.tolist()}); the file comes from "
                    "another growth history."
                )
        if int8_file and not self._is_quantized:
            # A composite layer rebuilds its children from its own config,
            # which does not record a child's quantized dtype policy: the
            # file is what says that this layer was quantized.
            self._to_int8(self.quantization_config)
        for i, variable in enumerate(self._base_variables()):
            variable.assign(store[str(i)])
        if self._growth:
            kernel = self._float_kernel()
            bias = ops.convert_to_numpy(self.bias) if self.use_bias else None
            self._assign_growth(
                self._growth_values(saved, kernel, bias, GROWTH_SCALE)
            )

    # ---------------------------------------------------------------- config
    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "units": self.units,
                "activation": keras.activations.serialize(self.activation),
                "use_bias": self.use_bias,
                "kernel_initializer": keras.initializers.serialize(
                    self.kernel_initializer
                ),
                "bias_initializer": keras.initializers.serialize(
                    self.bias_initializer
                ),
                "kernel_regularizer": keras.regularizers.serialize(
                    self.kernel_regularizer
                ),
                "bias_regularizer": keras.regularizers.serialize(
                    self.bias_regularizer
                ),
                "kernel_constraint": keras.constraints.serialize(
                    self.kernel_constraint
                ),
                "bias_constraint": keras.constraints.serialize(
                    self.bias_constraint
                ),
                "growth_rounds": [r.tolist() for r in self._rounds],
                "quantization_config": keras.saving.serialize_keras_object(
                    self.quantization_config
                ),
            }
        )
        return config

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        config["quantization_config"] = keras.saving.deserialize_keras_object(
            config.get("quantization_config")
        )
        return super().from_config(config)


class _ArrayInitializer(keras.initializers.Initializer):
    """Initialises a variable to a fixed array (used only inside `grow`)."""

    def __init__(self, value):
        self.value = np.asarray(value)

    def __call__(self, shape, dtype=None):
        if tuple(shape) != self.value.shape:
            raise ValueError(
                f"Expected shape {self.value.shape}. Received: shape={shape}"
            )
        return ops.cast(ops.convert_to_tensor(self.value), dtype)
