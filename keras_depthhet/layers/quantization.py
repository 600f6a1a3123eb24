"""Int8 quantization of `GrowableDense`'s base kernel, as Keras's `Dense`.

`model.quantize("int8")` replaces the float `kernel` of each
`GrowableDense` by an int8 kernel with one float scale per output neuron
(`kernel_scale`); the base matmul then runs on inputs quantized per token,
exactly as `keras.layers.Dense` computes in int8 mode. The bias and the
growth branch (the neuron pairs) stay in float and trainable. A quantized
layer cannot grow: grow the float model, then quantize.
"""

import numpy as np
from keras import ops
from keras.quantizers import AbsMaxQuantizer, QuantizationConfig

from keras_depthhet.utils.keras_internals import (
    unlocked_state,
    untrack_variable,
)

SUPPORTED_MODES = ("int8",)
"""Quantization modes `GrowableDense` implements (`layer.quantize(mode)`)."""


def int8_matmul(inputs, kernel, kernel_scale, inputs_quantizer):
    """`inputs @ (kernel / kernel_scale)` as `Dense`'s int8 mode computes it.

    The inputs are quantized along their last axis by `inputs_quantizer`
    (None: they stay float, weight-only quantization), multiplied by the
    int8 kernel and de-scaled in the inputs' dtype. The gradient with
    respect to `inputs` uses the dequantized kernel; the int8 kernel and
    its scale get none (they are not trainable).
    """
    dtype = inputs.dtype

    @ops.custom_gradient
    def matmul(inputs, kernel, kernel_scale):
        def grad_fn(*args, upstream=None):
            if upstream is None:
                (upstream,) = args
            float_kernel = ops.divide(ops.cast(kernel, dtype), kernel_scale)
            return ops.matmul(upstream, ops.transpose(float_kernel)), None, None

        output_scale = kernel_scale
        if inputs_quantizer:
            inputs, inputs_scale = inputs_quantizer(inputs, axis=-1)
            output_scale = ops.multiply(output_scale, inputs_scale)
        outputs = ops.cast(ops.matmul(inputs, kernel), dtype)
        return ops.divide(outputs, output_scale), grad_fn

    return matmul(
        inputs,
        ops.convert_to_tensor(kernel),
        ops.cast(kernel_scale, dtype),
    )


class Int8KernelMixin:
    """Int8 storage of a layer's base `kernel`; the rest stays in float.

    Mixed into `GrowableDense`, which provides `kernel`, `units`,
    `input_dim`, `quantization_config` and `_is_quantized`, computes its
    base matmul with `_base_matmul` and calls `_build_int8_kernel` from
    `build` when its dtype policy is quantized. Keras's wrapper of
    `Layer.quantize` checks the arguments and unlocks the layer before
    `quantize` runs; `Layer.__call__` routes a quantized layer's calls to
    `_int8_call`.
    """

    def quantize(self, mode=None, type_check=True, config=None):
        """Quantizes the base kernel to int8, one scale per output neuron.

        The bias and the growth pairs stay in float. Only `"int8"` is
        supported; another mode raises and leaves the layer unchanged.

        Args:
            mode: `"int8"`.
            type_check: Accepted for `Model.quantize`; subclasses that
                compute through `preactivation` quantize too.
            config: Optional `keras.quantizers.Int8QuantizationConfig`
                (weight and input quantizers).
        """
        del type_check
        if mode not in SUPPORTED_MODES:
            policy = self.dtype_policy
            if policy.quantization_mode is not None:
                # Set by Keras's `dtype_policy` setter before calling here.
                self.dtype_policy = policy.get_config()["source_name"]
            self._check_quantization_mode(mode)
        weight_quantizer = QuantizationConfig.weight_quantizer_or_default(
            config, AbsMaxQuantizer(axis=0)
        )
        values, scale = weight_quantizer(self.kernel.value, to_numpy=True)
        self._to_int8(config, values, np.squeeze(np.asarray(scale), axis=0))

    def _check_quantization_mode(self, mode) -> None:
        if mode not in SUPPORTED_MODES:
            raise ValueError(
                f"Layer {self.name!r} ({type(self).__name__}) supports only "
                "int8 quantization of its base kernel. Quantize it with "
                "'int8', or leave it out with `model.quantize(mode, "
                f"filters=...)`. Received: mode={mode!r}"
            )

    def _check_growable(self) -> None:
        """Raises if the layer is quantized: quantize after growth."""
        if self._is_quantized:
            raise ValueError(
                f"Layer {self.name!r} is quantized "
                f"(quantization_mode={self.quantization_mode!r}) and cannot "
                "grow: a new neuron pair would start from the rounded int8 "
                "kernel. Quantize after growth: grow the float model, then "
                "call `model.quantize('int8')`. Received: a growth round "
                f"for the quantized layer {self.name!r}"
            )

    def _to_int8(self, config, values=None, scale=None) -> None:
        """Replaces the float kernel by an int8 one and sets the policy.

        `values` and `scale` None leave the new kernel at zero and its
        scale at one (a weights file is loaded into them next). The new
        variables are made and set before the float kernel is dropped, so
        a failure leaves the layer as it was.
        """
        before = {id(v) for v in self.weights}
        try:
            with unlocked_state(self):
                kernel, kernel_scale = self._add_int8_variables()
                if values is not None:
                    kernel.assign(values)
                    kernel_scale.assign(scale)
        except Exception:
            for variable in self.weights:
                if id(variable) not in before:
                    untrack_variable(self, variable)
            raise
        untrack_variable(self, self.kernel)
        with unlocked_state(self):
            self.kernel = kernel
            self.kernel_scale = kernel_scale
        self.quantization_config = config
        self._set_inputs_quantizer()
        self._is_quantized = True
        if self.dtype_policy.quantization_mode is None:
            self.dtype_policy = f"int8_from_{self.dtype_policy.name}"

    def _build_int8_kernel(self) -> None:
        """Creates the int8 `kernel` and its `kernel_scale` in `build`."""
        self._check_quantization_mode(self.quantization_mode)
        self.kernel, self.kernel_scale = self._add_int8_variables()
        self._set_inputs_quantizer()
        self._is_quantized = True

    def _add_int8_variables(self) -> tuple:
        kernel = self.add_weight(
            name="kernel",
            shape=(self.input_dim, self.units),
            initializer="zeros",
            dtype="int8",
            trainable=False,
        )
        kernel_scale = self.add_weight(
            name="kernel_scale",
            shape=(self.units,),
            initializer="ones",
            trainable=False,
        )
        return kernel, kernel_scale

    def _set_inputs_quantizer(self) -> None:
        self.inputs_quantizer = (
            QuantizationConfig.activation_quantizer_or_default(
                self.quantization_config, AbsMaxQuantizer()
            )
        )

    def _int8_call(self, inputs):
        return self.call(inputs)

    def _base_matmul(self, inputs):
        """`inputs @ W`: the base kernel's part of the pre-activation."""
        if self._is_quantized:
            return int8_matmul(
                inputs, self.kernel, self.kernel_scale, self.inputs_quantizer
            )
        return ops.matmul(inputs, ops.cast(self.kernel, inputs.dtype))

    def _float_kernel(self) -> np.ndarray:
        """The base kernel's float values (dequantized when quantized)."""
        kernel = ops.convert_to_numpy(self.kernel)
        if not self._is_quantized:
            return kernel
        scale = ops.convert_to_numpy(self.kernel_scale)
        return kernel.astype(scale.dtype) / scale


def is_int8_kernel(value) -> bool:
    """Whether a saved kernel (array or h5 dataset) is an int8 kernel."""
    return np.dtype(value.dtype) == np.int8
