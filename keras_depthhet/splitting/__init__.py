"""Splitting analysis: which neurons would gain most from extra depth.

`splitting_eigenvalues` computes each neuron's `lambda_min` (see the Method
page), `gradient_proxy` the rank-1 score of the paper authors' code, and
`plot_negative_eigenvalues` draws the paper's Figure 2. The analysis reads
a model and never changes it.
"""

from keras_depthhet.splitting.eigenvalues import (
    DEFAULT_MEMORY_BUDGET,
    METHODS,
    splitting_eigenvalues,
)
from keras_depthhet.splitting.plot import plot_negative_eigenvalues
from keras_depthhet.splitting.proxy import gradient_proxy

__all__ = [
    "DEFAULT_MEMORY_BUDGET",
    "METHODS",
    "gradient_proxy",
    "plot_negative_eigenvalues",
    "splitting_eigenvalues",
]
