"""`benchmarks.train_step_profile`: how XLA ops are put into kinds.

`python -m benchmarks.run_all --quick` runs the profile itself.
"""

import pytest

from benchmarks.train_step_profile import (
    KINDS,
    hlo_ops,
    op_kind,
    timm_table,
    torch_op_kind,
)

HLO = """HloModule jit_train_step

%fused_computation.1 (param_0: f32[4,8], param_1: f32[8,2]) -> f32[4,2] {
  %param_0 = f32[4,8]{1,0} parameter(0)
  %param_1 = f32[8,2]{1,0} parameter(1)
  ROOT %dot.1 = f32[4,2]{1,0} dot(%param_0, %param_1), lhs_contracting_dims={1}, rhs_contracting_dims={0}
}

%fused_computation.2 (param_0.1: f32[4,2]) -> f32[4,2] {
  %param_0.1 = f32[4,2]{1,0} parameter(0)
  ROOT %exp.1 = f32[4,2]{1,0} exponential(%param_0.1)
}

ENTRY %main (x: f32[4,8], w: f32[8,2]) -> f32[4,2] {
  %x = f32[4,8]{1,0} parameter(0)
  %w = f32[8,2]{1,0} parameter(1)
  %ynn_fusion = f32[4,2]{1,0} fusion(%x, %w), kind=kCustom, calls=%fused_computation.1, metadata={op_name="jit(train_step)/jvp(block_0)/block_0_mlp/block_0_mlp_fc1/dot_general"}
  ROOT %exp_fusion = f32[4,2]{1,0} fusion(%ynn_fusion), kind=kLoop, calls=%fused_computation.2, metadata={op_name="jit(train_step)/jvp(block_0)/block_0_attn/exp"}
}
"""  # noqa: E501


def test_hlo_ops_reads_op_names_and_dots_inside_fusions():
    ops = hlo_ops(HLO)
    assert ops["ynn_fusion"] == (
        "jit(train_step)/jvp(block_0)/block_0_mlp/block_0_mlp_fc1/dot_general",
        True,
    )
    assert ops["exp_fusion"][1] is False
    assert set(ops) == {"x", "w", "ynn_fusion", "exp_fusion"}


@pytest.mark.parametrize(
    "op_name, has_dot, kind",
    [
        # JAX names
        ("jit(train_step)/jvp(block_3)/block_3_attn/block_3_attn_qkv/"
         "dot_general", True, "dense matmuls"),
        ("jit(train_step)/transpose(jvp(block_3))/block_3_attn/"
         "vmap(BTNH,BSNH->BNTS)/dot_general", True, "attention matmuls"),
        ("jit(train_step)/jvp(block_3)/block_3_attn/vmap()/reduce_max",
         False, "softmax and attention layout"),
        ("jit(train_step)/jvp(block_3)/block_3_norm1/jit(_var)/div", False,
         "LayerNorm"),
        ("jit(train_step)/jvp(block_3)/block_3_mlp/block_3_mlp_fc1/erfc",
         False, "GELU"),
        ("jit(train_step)/adam_w/mul", False, "AdamW update"),
        # TensorFlow names
        ("gradient_tape/vit/block_3_1/block_3_attn_1/einsum/Einsum_1", True,
         "attention matmuls"),
        ("vit/block_3_1/block_3_attn_1/block_3_attn_qkv_1/Tensordot/MatMul",
         True, "dense matmuls"),
        ("compile_loss/sparse_categorical_crossentropy/SparseSoftmax", False,
         "loss"),
        ("XLA_Args", False, "other"),
    ],
)
def test_op_kind(op_name, has_dot, kind):
    assert kind in KINDS
    assert op_kind(op_name, has_dot) == kind


@pytest.mark.parametrize(
    "names, kind",
    [
        (["aten::mm", "AddmmBackward0",
          "autograd::engine::evaluate_function: AddmmBackward0"],
         "dense matmuls"),
        (["aten::addmm", "aten::linear"], "dense matmuls"),
        (["aten::mkldnn_convolution", "aten::convolution"], "dense matmuls"),
        (["aten::copy_", "aten::native_layer_norm", "aten::layer_norm"],
         "LayerNorm"),
        (["aten::_scaled_dot_product_flash_attention_for_cpu_backward",
          "ScaledDotProductFlashAttentionForCpuBackward0"],
         "attention matmuls"),
        (["aten::cat", "UnbindBackward0"], "softmax and attention layout"),
        (["aten::gelu_backward", "GeluBackward0"], "GELU"),
        (["aten::_log_softmax", "aten::log_softmax",
          "aten::cross_entropy_loss"], "loss"),
        # The optimizer's step claims its matmul-like names too.
        (["aten::mul_", "Optimizer.step#AdamW.step"], "AdamW update"),
        (["aten::addcdiv_", "aten::mm_like", "Optimizer.step#AdamW.step"],
         "AdamW update"),
        (["aten::add"], "other"),
        (["aten::mmap_weights"], "other"),
    ],
)
def test_torch_op_kind(names, kind):
    assert torch_op_kind(names) == kind


def test_timm_table_merges_the_attention_kinds():
    def result(**times):
        return {"times": times, "traced_step_s": 1.0}

    results = {
        "jax": result(**{"dense matmuls": 100.0, "attention matmuls": 30.0,
                         "softmax and attention layout": 20.0, "GELU": 8.0}),
        "tensorflow": result(**{"dense matmuls": 110.0,
                                "attention matmuls": 25.0,
                                "softmax and attention layout": 5.0,
                                "GELU": 4.0}),
        "timm": {**result(**{"dense matmuls": 80.0,
                             "attention matmuls": 40.0, "GELU": 4.0}),
                 "torch": "2.x", "threads": 2, "params": 5},
    }
    rows = {
        line.split(" | ")[0].strip("| "): line.split(" | ")[1:]
        for line in timm_table(results).splitlines()
        if line.startswith("| ")
    }
    attention = rows["attention (matmuls, softmax, layout)"]
    assert attention[:3] == ["50.0", "30.0", "40.0"]
    assert attention[3:] == ["1.25", "0.75 |"]
    assert rows["GELU"][3:] == ["2.00", "1.00 |"]
    assert rows["all ops"][:3] == ["158.0", "144.0", "124.0"]
    assert "attention matmuls" not in rows
    # A kind timm does not have gets no ratio.
    assert rows["LayerNorm"][3:] == ["n/a", "n/a |"]
