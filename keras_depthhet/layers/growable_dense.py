"""`GrowableDense`: a Dense layer whose output neurons can be given depth."""

from collections.abc import Callable, Sequence

import keras
import numpy as np
from keras import ops

from keras_depthhet.layers.growth_pairs import (
    GROWTH_SCALE,
    PAIR_SUFFIXES,
    ArrayInitializer,
    MirroredConstraint,
    PairSumRegularizer,
    concatenate_pairs,
    exact_gelu,
    widened_pairs,
    zero_sum_pairs,
)
from keras_depthhet.layers.quantization import (
    Int8BaseKernel,
    float_kernel,
    int8_matmul,
)
from keras_depthhet.layers.saved_growth import (
    check_saved_base,
    check_saved_rounds,
    read_growth,
    save_growth,
)
from keras_depthhet.utils.keras_internals import (
    is_compiled_trace,
    unlocked_state,
    untrack_variable,
)
from keras_depthhet.utils.validation import (
    distinct_indices,
    positive_int,
    positive_number,
)


class GrowablePairs:
    """The +/- neuron pairs of a growable layer, shared by `GrowableDense`
    and `GrowableEinsumDense`.

    The host layer is a Dense on flat views: it sets `units`, `input_dim`
    (in `build`) and `use_bias`, and gives its float kernel
    `(input_dim, units)` and bias `(units,)` by `_flat_weights()`. The
    pairs of all rounds are packed into `growth_kernel_plus`,
    `growth_kernel_minus` `(input_dim, K)` and `growth_bias_plus`,
    `growth_bias_minus` `(K,)`; `_growth_branch` adds them to the flat
    pre-activation with one matmul. The host calls `_init_growth` in its
    constructor, `_build_growth` at the end of `build` and `_note_trace`
    in `call`.
    """

    def _init_growth(self, growth_rounds, units: int) -> None:
        """Checks and keeps the config's rounds (before any variable)."""
        self._rounds = [
            distinct_indices("growth_rounds", r, units)
            for r in (growth_rounds or [])
        ]
        self._growth = {}
        self._targets = None
        self._analysis_hook = None
        self._traced = False

    def _build_growth(self) -> None:
        """Creates the config's pairs (at zero until loaded)."""
        if self._rounds:
            self._growth = self._add_growth_variables(self.num_grown, None)
        self._update_targets()

    def _flat_weights(self) -> tuple[np.ndarray, np.ndarray | None]:
        """The float kernel `(input_dim, units)` and the bias `(units,)`,
        or None without bias, as NumPy arrays."""
        raise NotImplementedError

    def _flat_view(self, kernel, bias) -> tuple:
        """The flat kernel `(input_dim, units)` and bias `(units,)` (or
        None) of arrays shaped as the layer's `kernel` and `bias`."""
        return np.asarray(kernel), None if bias is None else np.asarray(bias)

    def _check_growable(self) -> None:
        """Raises if the layer cannot grow now (the host's own reasons)."""

    def _add_growth_variables(self, k: int, values) -> dict:
        """Creates the packed variables of `k` pairs; `values` None: zeros."""
        created = {}
        with unlocked_state(self):  # `Dense.build` locks it after LoRA.
            for part in ("kernel", "bias")[: 1 + self.use_bias]:
                shape = (self.input_dim, k) if part == "kernel" else (k,)
                for suffix in (f"{part}_plus", f"{part}_minus"):
                    created[suffix] = self.add_weight(
                        name=f"growth_{suffix}",
                        shape=shape,
                        initializer="zeros"
                        if values is None
                        else ArrayInitializer(values[suffix]),
                    )
                plus, minus = created[f"{part}_plus"], created[f"{part}_minus"]
                regularizer = getattr(self, f"{part}_regularizer")
                constraint = getattr(self, f"{part}_constraint")
                if regularizer is not None:
                    plus.regularizer = PairSumRegularizer(regularizer, minus)
                if constraint is not None:
                    plus.constraint = constraint
                    minus.constraint = MirroredConstraint(constraint)
        return created

    def _growth_values(self, saved, kernel, bias, scale) -> dict:
        """Packed values: `saved` first rounds, then zero-sum pairs."""
        args = (kernel, bias, scale, self.variable_dtype)
        return widened_pairs(self.name, saved, self._rounds, *args)

    def _assign_growth(self, values: dict) -> None:
        for suffix, variable in self._growth.items():
            variable.assign(values[suffix])

    def _round_columns(self, r: int) -> slice:
        """The columns of round `r`'s pairs in the packed variables."""
        start = sum(len(indices) for indices in self._rounds[:r])
        return slice(start, start + len(self._rounds[r]))

    def _pair_values(self, kernel, bias, indices, scale) -> dict:
        """A new round's values (`zero_sum_pairs`) from the flat `kernel`
        and `bias`, if the layer can grow."""
        self._check_growable()
        return zero_sum_pairs(
            self.name, kernel, bias, indices, scale, self.variable_dtype
        )

    def _update_targets(self):
        """Caches the neuron fed by each of the K pairs, all rounds in order."""
        self._targets = None
        if self._rounds:
            self._targets = np.concatenate(self._rounds).astype("int32")

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

        Each chosen neuron `i` gets a pair `w+ = scale * W[:, i]`,
        `b+ = scale * b[i]`, `w- = -w+`, `b- = -b+`; the function is
        unchanged.

        Args:
            indices: Distinct integer indices in `[0, units)`, at least one.
            scale: Positive, finite scale factor of the new pair.

        Returns:
            The number of parameters added: `2 * (input_dim + 1) * k` for
            `k` neurons (`2 * input_dim * k` without bias).

        Raises:
            ValueError: if the layer is unbuilt, quantized or LoRA-enabled,
                an argument is invalid, or a compiled function (`fit`,
                `predict`, `jax.jit`, ...) has traced the layer (grow it
                with `keras_depthhet.growth.grow_model`). The layer is then
                unchanged.
        """
        self._check_growable()
        if self._traced:
            raise ValueError(
                f"Layer {self.name!r} has been traced into a compiled "
                "function (by `fit`, `predict`, `evaluate`, a `jax.jit` or a "
                "`tf.function`), which would ignore the new neurons. Grow "
                "it through its model instead: `keras_depthhet.growth."
                f"grow_model(model, {{{self.name!r}: indices}})`, which also "
                "remakes the compiled functions and optimizer state. "
                f"Received: layer.grow({indices!r}) on a traced layer"
            )
        return self._grow(indices, scale)

    def _grow(self, indices, scale: float = GROWTH_SCALE) -> int:
        """`grow` without the traced-layer check (for `grow_model`)."""
        self._check_growable()
        if not self.built:
            raise ValueError(
                f"Layer '{self.name}' must be built before `grow()` is "
                "called (call it on an input, or build the model). "
                f"Received: layer.built={self.built}"
            )
        indices = distinct_indices("indices", indices, self.units)
        scale = float(positive_number("scale", scale))
        new = self._pair_values(*self._flat_weights(), indices, scale)
        old = self._growth
        values = concatenate_pairs(
            {s: ops.convert_to_numpy(v) for s, v in old.items()}, new
        )
        before = list(self.weights)
        try:
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

    def _growth_branch(self, inputs):
        """Sum of GELU(a+ + a-) + (a+ + a-) per neuron of the flat inputs
        `(..., input_dim)`, as `(..., units)`: one matmul, then one segment
        sum onto the neurons (no dense units-by-K projection)."""
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

    def _note_trace(self, inputs) -> None:
        """Marks the layer traced when a compiled function (not the
        splitting analysis) calls it: `grow` then refuses."""
        if self._analysis_hook is None and is_compiled_trace(inputs):
            self._traced = True

    def set_analysis_hook(self, hook: Callable | None) -> None:
        """Installs `hook(layer, inputs, preactivation, outputs) -> outputs`,
        which must return a tensor equal to `outputs` (for the splitting
        module's analysis); `None` removes it. The tensors are the flat
        views: `(..., input_dim)` and `(..., units)`."""
        self._analysis_hook = hook

    def _save_pairs(self, store, first_key: int) -> None:
        """Writes the packed pairs from numbered key `first_key` on, then
        each round's neuron indices."""
        pairs = [self._growth[s] for s in PAIR_SUFFIXES if s in self._growth]
        save_growth(store, first_key, pairs, self._rounds)

    def _read_pairs(self, store, num_base: int) -> dict:
        """The saved pairs packed (raises unless the saved rounds are this
        layer's first rounds)."""
        saved, recorded, sizes = read_growth(
            self.name, store, num_base, self.use_bias
        )
        check_saved_rounds(self.name, self._rounds, recorded, sizes)
        return saved

    def _load_pairs(self, saved: dict) -> None:
        """Assigns `saved` pairs, the later rounds as zero-sum pairs of the
        loaded weights."""
        if self._growth:
            kernel, bias = self._flat_weights()
            self._assign_growth(
                self._growth_values(saved, kernel, bias, GROWTH_SCALE)
            )

    def get_config(self):
        return {
            **super().get_config(),
            "growth_rounds": [r.tolist() for r in self._rounds],
        }


@keras.saving.register_keras_serializable(package="keras_depthhet")
class GrowableDense(Int8BaseKernel, GrowablePairs, keras.layers.Dense):
    """Densely-connected layer whose output neurons can be given extra depth.

    A `keras.layers.Dense` subclass with the same weights and output until
    it grows, for inputs of any rank `(..., d)`. `grow(indices)` gives each
    chosen output neuron `i` a pair of neurons `a+ = x w+ + b+` and
    `a- = x w- + b-`, initialised to `+/- scale * (W[:, i], b[i])` and
    added to its pre-activation through the exact GELU with a skip
    connection:

    `z'_i = z_i + sum over rounds [GELU(a+ + a-) + a+ + a-]`.

    As `a+ + a- = 0` at growth, the function is unchanged; training moves
    the pair apart. A neuron may grow in several rounds, so neurons end up
    with different depths. The pairs of all rounds are packed into
    `growth_kernel_plus`, `growth_kernel_minus` `(input_dim, K)` and
    `growth_bias_plus`, `growth_bias_minus` `(K,)`, `K = num_grown`, and
    cost one matmul. The kernel (bias) constraint `c` applies to `w+` and
    its mirror `w -> -c(-w)` to `w-`, the regularizer to `w+ + w-`. The
    rounds are part of the config, so `from_config` and `.keras` files
    rebuild a grown layer; a weights file saved before later rounds loads
    too, those rounds starting as zero-sum pairs.

    Once a model has used the layer in `fit`, `predict` or `evaluate`, grow
    it with `keras_depthhet.growth.grow_model` (`grow` refuses).

    `quantize("int8")` stores the base kernel in int8 with one scale per
    output neuron and computes `x W` as `Dense` does; the bias and pairs
    stay float. Other modes raise a `ValueError`. LoRA works as in `Dense`
    on a float layer. A quantized or LoRA-enabled layer cannot grow: grow
    first.

    Args:
        units: Positive integer, the number of output neurons.
        activation: Activation of the (grown) pre-activation; `None`: linear.
        use_bias: Whether the layer (and its growth pairs) use a bias.
        kernel_initializer: Initializer of `kernel`.
        bias_initializer: Initializer of `bias`.
        kernel_regularizer: Regularizer of `kernel` and growth kernels.
        bias_regularizer: Regularizer of `bias` and growth biases.
        activity_regularizer: Regularizer of the layer's output.
        kernel_constraint: Constraint of `kernel` and growth kernels.
        bias_constraint: Constraint of `bias` and growth biases.
        growth_rounds: Optional list of rounds, each a list of distinct
            neuron indices, to rebuild a grown layer from its config (its
            pairs start at zero until loaded).
        lora_rank: Optional LoRA rank, as in `keras.layers.Dense`.
        lora_alpha: Optional LoRA scale numerator, as in `Dense`.
        quantization_config: Optional `Int8QuantizationConfig` of a
            quantized layer (set by `quantize`).
        **kwargs: Base layer keyword arguments (`name`, `dtype`, ...).

    Input shape:
        N-D tensor `(..., input_dim)`.

    Output shape:
        N-D tensor `(..., units)`.

    Examples:
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
        lora_rank: int | None = None,
        lora_alpha: float | None = None,
        quantization_config=None,
        **kwargs,
    ):
        units = positive_int("units", units)
        self._init_growth(growth_rounds, units)
        super().__init__(
            units,
            activation=activation,
            use_bias=bool(use_bias),
            kernel_initializer=kernel_initializer,
            bias_initializer=bias_initializer,
            kernel_regularizer=kernel_regularizer,
            bias_regularizer=bias_regularizer,
            activity_regularizer=activity_regularizer,
            kernel_constraint=kernel_constraint,
            bias_constraint=bias_constraint,
            lora_rank=lora_rank,
            lora_alpha=lora_alpha,
            quantization_config=quantization_config,
            **kwargs,
        )

    def build(self, input_shape):
        if input_shape[-1] is None:
            raise ValueError(
                "The last dimension of the input to `GrowableDense` must be "
                f"known. Received: input_shape={input_shape}"
            )
        self.input_dim = int(input_shape[-1])
        super().build(input_shape)
        self._build_growth()

    def _flat_weights(self) -> tuple[np.ndarray, np.ndarray | None]:
        """The float kernel `(input_dim, units)` (dequantized if quantized)
        and the bias `(units,)`, or None without bias, as NumPy arrays."""
        bias = ops.convert_to_numpy(self.bias) if self.use_bias else None
        return float_kernel(self), bias

    def _check_growable(self) -> None:
        """Raises if the layer is quantized or LoRA-enabled: grow first."""
        self._check_float_kernel()
        if self.lora_enabled:
            raise ValueError(
                f"Layer {self.name!r} has LoRA enabled (lora_rank="
                f"{self.lora_rank}) and cannot grow: its kernel is frozen. "
                "Grow the model, then enable LoRA. Received: a growth round "
                f"for the LoRA-enabled layer {self.name!r}"
            )

    def preactivation(self, inputs):
        """The grown pre-activation `z'` (before the layer's activation)."""
        if self.quantization_mode is None:
            z = ops.matmul(inputs, ops.cast(self.kernel, inputs.dtype))
        else:
            z = int8_matmul(
                inputs, self.kernel, self.kernel_scale, self.inputs_quantizer
            )
        if self.use_bias:
            z = z + ops.cast(self.bias, inputs.dtype)
        if self._targets is not None:
            z = z + self._growth_branch(inputs)
        return z

    def call(self, inputs):
        self._note_trace(inputs)
        z = self.preactivation(inputs)
        if self.activation is keras.activations.gelu:
            outputs = exact_gelu(z)  # The same function, faster on JAX.
        else:
            outputs = self.activation(z) if self.activation is not None else z
        if self._analysis_hook is not None:
            outputs = self._analysis_hook(self, inputs, z, outputs)
        return outputs

    def save_own_variables(self, store):
        """Saves the variables as `Dense` does (LoRA delta merged), then the
        packed pairs and each round's neuron indices."""
        super().save_own_variables(store)
        first = 1 + int(self.use_bias) + int(self.quantization_mode is not None)
        self._save_pairs(store, first)

    def load_own_variables(self, store):
        """Loads saved variables, also of the older per-round layout.

        A file of this layer's first rounds loads, the rounds it lacks
        starting as zero-sum pairs; a file of other or more rounds is
        refused. An int8 file quantizes a float layer first; a quantized
        layer refuses a float file (load it, then quantize).
        """
        quantized = self.quantization_mode is not None
        num_base, int8_file = check_saved_base(
            self.name, store, self.kernel.shape, self.use_bias, quantized
        )
        saved = self._read_pairs(store, num_base)
        if int8_file and not quantized:
            # A composite layer's config does not say that a child is; files do.
            self.quantize("int8", config=self.quantization_config)
        base = {str(i): store[str(i)] for i in range(num_base)}
        if self.lora_enabled:
            # `Dense` loads the (merged) kernel under LoRA and resets it.
            super().load_own_variables(base)
        else:
            variables = [self.kernel] + [self.bias] * self.use_bias
            if int8_file:
                variables.append(self.kernel_scale)
            for key, variable in zip(base, variables, strict=True):
                variable.assign(base[key])
        self._load_pairs(saved)
