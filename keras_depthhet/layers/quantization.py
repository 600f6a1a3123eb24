"""Int8 quantization of `GrowableDense`'s base kernel, as Keras's `Dense`."""

import numpy as np
from keras import ops

SUPPORTED_MODES = ("int8",)


def int8_matmul(inputs, kernel, kernel_scale, inputs_quantizer):
    """`inputs @ (kernel / kernel_scale)` as `Dense`'s int8 mode computes it
    (`inputs_quantizer` None: weight-only)."""
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


class Int8BaseKernel:
    """`GrowableDense`'s overrides of `Dense`'s quantization: int8 only, no
    LoRA with it, and quantized calls go to the layer's own `call`."""

    def quantize(self, mode=None, type_check=True, config=None):
        """`Dense`'s int8 quantization of the kernel (any subclass too); other
        modes, or LoRA, raise and leave the layer unchanged."""
        del type_check
        if mode not in SUPPORTED_MODES or self.lora_enabled:
            policy = self.dtype_policy
            if policy.quantization_mode is not None:
                # Set by Keras's `dtype_policy` setter before calling here.
                self.dtype_policy = policy.get_config()["source_name"]
        check_quantization_mode(self, mode)
        if self.lora_enabled:
            raise ValueError(
                f"Layer {self.name!r} has LoRA enabled and would quantize "
                "its frozen kernel without the LoRA delta. Save and load "
                "the model (which merges the delta into the kernel), then "
                f"quantize. Received: mode={mode!r}"
            )
        super().quantize(mode, type_check=False, config=config)

    def quantized_build(self, kernel_shape, mode, config=None):
        check_quantization_mode(self, mode)
        super().quantized_build(kernel_shape, mode, config)

    def quantized_call(self, *args, **kwargs):
        return self.call(*args, **kwargs)

    def enable_lora(self, rank, *args, **kwargs):
        """`Dense.enable_lora`, refused (`ValueError`) on a quantized layer."""
        if self.quantization_mode is not None:
            raise ValueError(
                f"Layer {self.name!r} is quantized "
                f"(quantization_mode={self.quantization_mode!r}); LoRA is "
                "supported on the float layer only. Received: "
                f"rank={rank!r}"
            )
        super().enable_lora(rank, *args, **kwargs)

    def _check_float_kernel(self) -> None:
        """Raises if the layer is quantized: quantize after growth."""
        if self.quantization_mode is not None:
            raise ValueError(
                f"Layer {self.name!r} is quantized "
                f"(quantization_mode={self.quantization_mode!r}) and cannot "
                "grow: a new neuron pair would start from the rounded int8 "
                "kernel. Quantize after growth: grow the float model, then "
                "call `model.quantize('int8')`. Received: a growth round "
                f"for the quantized layer {self.name!r}"
            )


def check_quantization_mode(layer, mode) -> None:
    """Raises a `ValueError` unless `layer` supports `mode` (int8 only)."""
    if mode not in SUPPORTED_MODES:
        raise ValueError(
            f"Layer {layer.name!r} ({type(layer).__name__}) supports only "
            "int8 quantization of its base kernel. Quantize it with "
            "'int8', or leave it out with `model.quantize(mode, "
            f"filters=...)`. Received: mode={mode!r}"
        )


def float_kernel(layer) -> np.ndarray:
    """A `GrowableDense`'s base kernel in float (dequantized if quantized)."""
    kernel = ops.convert_to_numpy(layer.kernel)
    if layer.quantization_mode is None:
        return kernel
    scale = ops.convert_to_numpy(layer.kernel_scale)
    return kernel.astype(scale.dtype) / scale
