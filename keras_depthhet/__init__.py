"""keras-depthhet: grow Vision Transformers with depth heterogeneity.

Importing the package registers its layers with Keras, so `.keras` files of
(grown) models load with `keras.saving.load_model` and no `custom_objects`.
"""

from keras_depthhet import growth, layers, models, splitting
from keras_depthhet.growth import GrowthCallback
from keras_depthhet.layers import GrowableDense

__version__ = "0.1.0"

__all__ = [
    "GrowableDense",
    "GrowthCallback",
    "__version__",
    "growth",
    "layers",
    "models",
    "splitting",
]
