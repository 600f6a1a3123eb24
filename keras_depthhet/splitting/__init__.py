"""Splitting analysis: which neurons would gain most from extra depth.

`splitting_eigenvalues` computes the smallest eigenvalue `lambda_min` of
every neuron's splitting matrix (defined on the Method page of the
documentation), `gradient_proxy` the rank-1 score of the paper authors'
code, and `plot_negative_eigenvalues` draws the paper's Figure 2. The
analysis reads a model and never changes it; `METHODS` and
`DEFAULT_MEMORY_BUDGET` are the accepted solvers and the default memory
limit of `splitting_eigenvalues`.
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
