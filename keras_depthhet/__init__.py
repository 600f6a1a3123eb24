"""keras-depthhet: grow Vision Transformers with depth heterogeneity.

At growth events during an ordinary `model.fit`, the neurons whose
splitting matrix has the most negative eigenvalue each receive a pair of
new neurons that leaves the network's function unchanged, so neurons end
up with different depths.

- `keras_depthhet.layers`: `GrowableDense`, `GrowableEinsumDense` and the
  ViT/DeiT blocks.
- `keras_depthhet.models`: ViT and DeiT builders, and model tools.
- `keras_depthhet.splitting`: the score of every neuron.
- `keras_depthhet.growth`: selection, growth and `GrowthCallback`.

Importing the package registers its layers with Keras, so `.keras` files
of grown models load with `keras.saving.load_model`.
"""

from keras_depthhet import growth, layers, models, splitting
from keras_depthhet.growth import GrowthCallback
from keras_depthhet.layers import GrowableDense, GrowableEinsumDense
from keras_depthhet.models.convert import make_growable

__version__ = "0.1.0"
"""The version of the package."""

__all__ = [
    "GrowableDense",
    "GrowableEinsumDense",
    "GrowthCallback",
    "__version__",
    "growth",
    "layers",
    "make_growable",
    "models",
    "splitting",
]
