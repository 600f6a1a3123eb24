"""Splitting analysis: which neurons would gain most from extra depth.

`splitting_eigenvalues` computes each neuron's `lambda_min` (see the Method
page), and `gradient_proxy` the rank-1 score of the paper authors' code. The
analysis reads a model and never changes it (`training.eigenvalue_plot`
draws the paper's Figure 2 from the scores).
"""

from keras_depthhet.splitting.eigen import (
    DEFAULT_MEMORY_BUDGET,
    METHODS,
    splitting_eigenvalues,
)
from keras_depthhet.splitting.proxy import gradient_proxy

__all__ = [
    "DEFAULT_MEMORY_BUDGET",
    "METHODS",
    "gradient_proxy",
    "splitting_eigenvalues",
]
