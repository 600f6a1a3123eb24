"""`fit_with_growth` for the experiment scripts.

The rebuild loop is part of the library: `keras_depthhet.distributed`.
"""

from keras_depthhet.distributed import GrowthRun, fit_with_growth

__all__ = ["GrowthRun", "fit_with_growth"]
