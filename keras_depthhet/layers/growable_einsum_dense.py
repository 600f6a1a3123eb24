"""`GrowableEinsumDense`: an EinsumDense layer whose output units can be
given depth, as the neurons of `GrowableDense`."""

import math
import re
from collections.abc import Sequence

import keras
import numpy as np
from keras import ops

from keras_depthhet.layers.growable_dense import GrowablePairs
from keras_depthhet.layers.growth_pairs import exact_gelu
from keras_depthhet.layers.saved_growth import check_saved_base

_EQUATION = re.compile(
    r"^(\.\.\.)?([a-zA-Z]+),([a-zA-Z]+)->(\.\.\.)?([a-zA-Z]+)$"
)


def _cannot_grow(equation, reason: str):
    return ValueError(
        f"`GrowableEinsumDense` cannot grow the equation {equation!r}: "
        f"{reason}. It grows the dense-like equations of "
        "`keras.layers.MultiHeadAttention`, such as 'abc,cde->abde' or "
        "'abcd,cde->abe': the input's trailing axes are contracted with the "
        "kernel's leading axes, in order, and the output is the input's "
        "leading axes followed by the kernel's other axes. Received: "
        f"equation={equation!r}"
    )


def dense_like_axes(equation) -> tuple[int, int, bool]:
    """`(contracted, free, ellipsis)` of a dense-like einsum `equation`.

    `contracted` is the number of the input's trailing axes summed with the
    kernel's leading axes, `free` the number of the kernel's other axes
    (the output's trailing ones), `ellipsis` whether the leading axes are
    written `...`. Raises a `ValueError` for any other equation.
    """
    if not isinstance(equation, str):
        raise ValueError(
            "Argument `equation` must be an einsum string such as "
            f"'abc,cde->abde'. Received: equation={equation!r}"
        )
    match = _EQUATION.match(equation)
    if match is None:
        raise _cannot_grow(
            equation, "it is not of the form 'X,Y->Z' or '...X,Y->...Z'"
        )
    in_dots, inputs, kernel, out_dots, outputs = match.groups()
    if bool(in_dots) != bool(out_dots):
        raise _cannot_grow(equation, "only one side has an ellipsis")
    for spec in (inputs, kernel, outputs):
        if len(set(spec)) != len(spec):
            raise _cannot_grow(equation, f"{spec!r} repeats an axis")
    m = len(set(inputs) & set(kernel))
    lead, contracted, free = inputs[: len(inputs) - m], kernel[:m], kernel[m:]
    if m == 0 or inputs[len(inputs) - m :] != contracted:
        raise _cannot_grow(
            equation,
            "the kernel's leading axes are not the input's trailing axes "
            "in the same order",
        )
    if not free or outputs != lead + free:
        raise _cannot_grow(
            equation,
            "the output is not the input's leading axes followed by the "
            "kernel's free axes",
        )
    if not lead and not in_dots:
        raise _cannot_grow(equation, "the input has no batch axis")
    return m, len(free), bool(in_dots)


@keras.saving.register_keras_serializable(package="keras_depthhet")
class GrowableEinsumDense(GrowablePairs, keras.layers.EinsumDense):
    """EinsumDense layer whose output units can be given extra depth.

    A `keras.layers.EinsumDense` subclass with the same weights and output
    until it grows, for the dense-like equations that
    `keras.layers.MultiHeadAttention` uses and any of their form: the
    input's `m` trailing axes are contracted with the kernel's `m` leading
    axes, in order, and the output is the input's leading axes followed by
    the kernel's free axes, e.g. `"abc,cde->abde"` (query, key and value
    projections), `"abcd,cde->abe"` (output projection), `"ab,bc->ac"` or
    `"...b,bc->...c"`.

    The layer is a `GrowableDense` on flat views: the contracted axes form
    `input_dim`, the kernel's free axes the `units` (for the query
    projection `heads * head_dim`), numbered in row-major order. The flat
    kernel `(input_dim, units)` is the kernel reshaped and the flat bias
    `(units,)` the bias broadcast over the free axes. `grow(indices)` gives
    each chosen unit `i` a pair `a+ = x w+ + b+`, `a- = x w- + b-` of the
    flat input `x`, initialised to `+/- scale * (W[:, i], b[i])`:

    `z'_i = z_i + sum over rounds [GELU(a+ + a-) + a+ + a-]`.

    As `a+ + a- = 0` at growth, the function is unchanged. The pairs have a
    bias per unit when the layer has one (`bias_axes` not None), also when
    `bias_axes` covers only some free axes. They are packed as in
    `GrowableDense`, whose kernel and bias constraints and regularizers
    apply the same way to the flat pair weights.

    Once a model has used the layer in `fit`, `predict` or `evaluate`, grow
    it with `keras_depthhet.growth.grow_model` (`grow` refuses). The layer
    cannot be quantized or LoRA-enabled.

    Args:
        equation: A dense-like einsum equation, as described above.
        output_shape: The output shape without the batch axis (and without
            the axes of the ellipsis), as in `EinsumDense`; the sizes of the
            kernel's free axes must be given.
        activation: Activation of the (grown) pre-activation; `None`: linear.
        bias_axes: `None` (no bias) or a string of the kernel's free axes
            that the bias varies along.
        kernel_initializer: Initializer of `kernel`.
        bias_initializer: Initializer of `bias`.
        kernel_regularizer: Regularizer of `kernel` and growth kernels.
        bias_regularizer: Regularizer of `bias` and growth biases.
        kernel_constraint: Constraint of `kernel` and growth kernels.
        bias_constraint: Constraint of `bias` and growth biases.
        growth_rounds: Optional list of rounds, each a list of distinct flat
            unit indices, to rebuild a grown layer from its config (its
            pairs start at zero until loaded).
        lora_rank: Must be `None`: a LoRA-enabled layer cannot grow.
        lora_alpha: Ignored without `lora_rank`.
        quantization_config: Must be `None`: a quantized layer cannot grow.
        **kwargs: Base layer keyword arguments (`name`, `dtype`,
            `activity_regularizer`, ...).

    Input shape:
        N-D tensor `(batch, ..., *contracted)`: the leading axes of the
        equation's input, then the contracted axes.

    Output shape:
        N-D tensor `(batch, ..., *free)`: the same leading axes, then the
        kernel's free axes.

    Examples:
        ```python
        layer = GrowableEinsumDense(
            "abc,cde->abde", output_shape=(None, 2, 4), bias_axes="de")
        x = np.random.rand(3, 5, 16).astype("float32")
        before = layer(x)  # (3, 5, 2, 4): 8 units of 16 inputs
        layer.grow([0, 5])  # 68 = 2 units * 2 * (16 + 1) parameters
        np.allclose(before, layer(x), atol=1e-6)  # True: function preserved
        ```

    Raises:
        ValueError: if the equation is not dense-like (naming it),
            `bias_axes` names an axis other than the kernel's free ones,
            `output_shape` does not give the free axes' sizes,
            `growth_rounds` holds invalid indices, or LoRA or quantization
            is asked for.
    """

    def __init__(
        self,
        equation: str,
        output_shape,
        activation=None,
        bias_axes: str | None = None,
        kernel_initializer="glorot_uniform",
        bias_initializer="zeros",
        kernel_regularizer=None,
        bias_regularizer=None,
        kernel_constraint=None,
        bias_constraint=None,
        growth_rounds: Sequence[Sequence[int]] | None = None,
        lora_rank: int | None = None,
        lora_alpha: float | None = None,
        quantization_config=None,
        **kwargs,
    ):
        contracted, free, ellipsis = dense_like_axes(equation)
        outputs = equation.split("->")[1].lstrip(".")
        if bias_axes is not None and (
            not isinstance(bias_axes, str)
            or not bias_axes
            or len(set(bias_axes)) != len(bias_axes)
            or not set(bias_axes) <= set(outputs[-free:])
        ):
            raise ValueError(
                "Argument `bias_axes` must be None or distinct axes among "
                "the kernel's free axes "
                f"{outputs[-free:]!r} of the equation {equation!r}; a bias "
                "along other axes is not a bias per unit. Received: "
                f"bias_axes={bias_axes!r}"
            )
        if isinstance(output_shape, (int, np.integer)):
            partial = (output_shape,)
        elif isinstance(output_shape, (list, tuple)):
            partial = tuple(output_shape)
        else:
            partial = ()
        expected = len(outputs) - (0 if ellipsis else 1)
        free_shape = partial[len(partial) - free :]
        if len(partial) != expected or not all(
            isinstance(n, (int, np.integer))
            and not isinstance(n, bool)
            and n > 0
            for n in free_shape
        ):
            raise ValueError(
                f"Argument `output_shape` of the equation {equation!r} must "
                f"give {expected} output sizes (the batch axis excluded), "
                f"the last {free} of them (the kernel's free axes) positive "
                f"integers. Received: output_shape={output_shape!r}"
            )
        if lora_rank is not None:
            raise _not_supported(
                kwargs.get("name"), "LoRA-enabled", "lora_rank", lora_rank
            )
        if quantization_config is not None:
            raise _not_supported(
                kwargs.get("name"),
                "quantized",
                "quantization_config",
                quantization_config,
            )
        super().__init__(
            equation,
            output_shape,
            activation=activation,
            bias_axes=bias_axes,
            kernel_initializer=kernel_initializer,
            bias_initializer=bias_initializer,
            kernel_regularizer=kernel_regularizer,
            bias_regularizer=bias_regularizer,
            kernel_constraint=kernel_constraint,
            bias_constraint=bias_constraint,
            **kwargs,
        )
        self._contracted = contracted
        self._free_shape = tuple(int(n) for n in free_shape)
        self.units = math.prod(self._free_shape)
        self.use_bias = bias_axes is not None
        self._init_growth(growth_rounds, self.units)

    def build(self, input_shape):
        m = self._contracted
        axes = tuple(input_shape[len(input_shape) - m :])
        if len(input_shape) <= m or any(n is None for n in axes):
            raise ValueError(
                f"Layer {self.name!r}: the input's last {m} axes (contracted "
                f"by {self.equation!r}) must be known, after a batch axis. "
                f"Received: input_shape={input_shape}"
            )
        self.input_dim = math.prod(int(n) for n in axes)
        super().build(input_shape)
        self._build_growth()

    def compute_output_shape(self, input_shape):
        """The input's leading axes (known sizes kept, where `EinsumDense`
        gives those of `output_shape`), then the free axes."""
        super().compute_output_shape(input_shape)  # Keras's own checks.
        lead = tuple(input_shape[: len(input_shape) - self._contracted])
        return lead + self._free_shape

    def quantized_build(self, kernel_shape, mode, config=None):
        raise _not_supported(self.name, "quantized", "mode", mode)

    def quantize(self, mode=None, type_check=True, config=None):
        """Refused: a quantized layer cannot grow (`ValueError`)."""
        raise _not_supported(self.name, "quantized", "mode", mode)

    def enable_lora(self, rank, *args, **kwargs):
        """Refused: a LoRA-enabled layer cannot grow (`ValueError`)."""
        raise _not_supported(self.name, "LoRA-enabled", "rank", rank)

    def _flat_view(self, kernel, bias) -> tuple:
        """The flat kernel `(input_dim, units)` and bias `(units,)` (or
        None) of arrays shaped as the layer's `kernel` and `bias`."""
        kernel = np.reshape(np.asarray(kernel), (self.input_dim, self.units))
        if bias is None:
            return kernel, None
        bias = np.broadcast_to(np.asarray(bias), self._free_shape)
        return kernel, np.reshape(bias, (self.units,)).copy()

    def _flat_weights(self) -> tuple[np.ndarray, np.ndarray | None]:
        """The kernel reshaped to `(input_dim, units)` and the bias broadcast
        over the free axes, flattened to `(units,)` (None without bias), as
        NumPy arrays."""
        bias = None if self.bias is None else ops.convert_to_numpy(self.bias)
        return self._flat_view(ops.convert_to_numpy(self.kernel), bias)

    def _leading_shape(self, inputs) -> tuple:
        return tuple(ops.shape(inputs)[: len(inputs.shape) - self._contracted])

    def _flat_inputs(self, inputs):
        """`inputs` with the contracted axes flattened: `(..., input_dim)`."""
        if self._contracted == 1:
            return inputs
        return ops.reshape(
            inputs, (*self._leading_shape(inputs), self.input_dim)
        )

    def preactivation(self, inputs, flat_inputs=None):
        """The grown pre-activation `z'` (before the layer's activation), in
        the output's shape."""
        z = ops.einsum(
            self.equation, inputs, ops.cast(self.kernel, inputs.dtype)
        )
        if self.bias is not None:
            z = z + ops.cast(self.bias, inputs.dtype)
        if self._targets is not None:
            if flat_inputs is None:
                flat_inputs = self._flat_inputs(inputs)
            branch = self._growth_branch(flat_inputs)
            if len(self._free_shape) > 1:
                branch = ops.reshape(branch, ops.shape(z))
            z = z + branch
        return z

    def call(self, inputs, training=None):
        self._note_trace(inputs)
        grown = self._targets is not None
        hooked = self._analysis_hook is not None
        flat_inputs = self._flat_inputs(inputs) if grown or hooked else None
        z = self.preactivation(inputs, flat_inputs)
        if self.activation is keras.activations.gelu:
            outputs = exact_gelu(z)  # The same function, faster on JAX.
        else:
            outputs = self.activation(z) if self.activation is not None else z
        if hooked:
            flat = (*self._leading_shape(inputs), self.units)
            returned = self._analysis_hook(
                self,
                flat_inputs,
                ops.reshape(z, flat),
                ops.reshape(outputs, flat),
            )
            outputs = ops.reshape(returned, ops.shape(outputs))
        return outputs

    def save_own_variables(self, store):
        """Saves the kernel and bias as `EinsumDense` does, then the packed
        pairs and each round's unit indices."""
        super().save_own_variables(store)
        self._save_pairs(store, 1 + int(self.use_bias))

    def load_own_variables(self, store):
        """Loads saved variables; a file of this layer's first rounds loads,
        the rounds it lacks starting as zero-sum pairs; a file of other or
        more rounds is refused."""
        num_base, _ = check_saved_base(
            self.name, store, self.kernel.shape, self.use_bias, False
        )
        saved = self._read_pairs(store, num_base)
        variables = [self._kernel] + ([self.bias] if self.use_bias else [])
        for i, variable in enumerate(variables):
            variable.assign(store[str(i)])
        self._load_pairs(saved)


def _not_supported(name, kind: str, argument: str, received) -> ValueError:
    layer = "`GrowableEinsumDense`"
    if name is not None:
        layer = f"Layer {name!r} ({layer})"
    return ValueError(
        f"{layer} cannot be {kind}: its units must stay able to grow. Leave "
        "it out (e.g. `model.quantize(mode, filters=...)`) or use a "
        "`keras.layers.EinsumDense`. Received: "
        f"{argument}={received!r}"
    )
