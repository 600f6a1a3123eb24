"""Reproducible speed and accuracy measurements."""
