"""Layers: `GrowableDense` and the ViT/DeiT building blocks."""

from keras_depthhet.layers.growable_dense import GrowableDense

__all__ = ["GrowableDense"]
