"""`benchmarks.train_step_profile`: how XLA ops are put into kinds.

`python -m benchmarks.run_all --quick` runs the profile itself.
"""

import pytest

from benchmarks.train_step_profile import KINDS, hlo_ops, op_kind

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
