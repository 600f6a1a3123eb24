"""count_flops against multiply-adds counted by hand."""

import keras
import numpy as np
import pytest

from keras_depthhet.models.flops import count_flops
from keras_depthhet.models.vit import deit_small, growable_layers, vit


def _vit_flops(size, patch, channels, dim, depth, inner, hidden, classes):
    """Hand count: patch conv, per block qkv/attention/proj/fc1/fc2, head."""
    patches = (size // patch) ** 2
    tokens = patches + 1
    block = (
        tokens * dim * 3 * inner  # qkv
        + 2 * tokens * tokens * inner  # Q K^T and A V
        + tokens * inner * dim  # proj
        + tokens * dim * hidden  # fc1
        + tokens * hidden * dim  # fc2
    )
    return (
        patches * patch * patch * channels * dim
        + depth * block
        + (dim * classes)
    )


@pytest.mark.integration
def test_deit_small_224_is_about_4_6_gflops():
    flops = count_flops(deit_small(num_classes=1000))
    assert flops == _vit_flops(224, 16, 3, 384, 12, 384, 1536, 1000)
    assert round(flops / 1e9, 1) == 4.6


@pytest.mark.integration
def test_reduced_deit_small_is_about_2_3_gflops():
    model = deit_small(num_classes=100, attention_width=0.5, mlp_width=0.5)
    flops = count_flops(model)
    assert flops == _vit_flops(224, 16, 3, 384, 12, 192, 768, 100)
    assert round(flops / 1e9, 1) == 2.3


def test_tiny_vit_exact_count():
    model = vit(
        image_size=8,
        patch_size=4,
        num_channels=1,
        num_classes=10,
        dim=8,
        depth=1,
        num_heads=2,
        attention_width=0.5,
        mlp_width=0.5,
    )
    # 4 patches, 5 tokens, head_dim 2 -> inner 4, hidden 16.
    # patch 4*16*8=512; qkv 5*8*12=480; attn 2*25*4=200; proj 5*4*8=160;
    # fc1 5*8*16=640; fc2 5*16*8=640; head 8*10=80.
    assert count_flops(model) == 512 + 480 + 200 + 160 + 640 + 640 + 80


def test_growth_adds_one_column_per_grown_neuron():
    model = vit(
        image_size=8,
        patch_size=4,
        num_channels=1,
        num_classes=10,
        dim=8,
        depth=1,
        num_heads=2,
    )
    before = count_flops(model)
    qkv, _, fc1, fc2 = growable_layers(model)
    qkv.grow([0, 1, 2])
    fc1.grow([5])
    fc1.grow([5, 6])  # the same neuron twice: two more columns
    fc2.grow([0])
    # 5 tokens: qkv in 8 (3 cols), fc1 in 8 (3 cols), fc2 in 32 (1 col).
    assert count_flops(model) - before == 5 * (8 * 3 + 8 * 3 + 32 * 1)
    images = np.zeros((2, 8, 8, 1), "float32")
    assert model(images).shape == (2, 10)


def test_rejects_non_functional_model():
    class Plain(keras.Model):
        def call(self, x):
            return x

    with pytest.raises(ValueError, match="functional"):
        count_flops(Plain())
    with pytest.raises(ValueError, match="functional"):
        count_flops("model")
