"""Grow Vision Transformers with depth heterogeneity."""
