"""keras-depthhet: grow Vision Transformers with depth heterogeneity.

Training starts from a narrow model; at growth events during an ordinary
`model.fit`, the neurons whose splitting matrix has the most negative
eigenvalue each receive a pair of new neurons that leaves the network's
function unchanged, so different neurons end up with different depth.

- `keras_depthhet.layers`: `GrowableDense`, the growable drop-in for
  `keras.layers.Dense`, and the ViT/DeiT building blocks.
- `keras_depthhet.models`: ViT and DeiT builders made of growable layers,
  and tools that work on any such model.
- `keras_depthhet.splitting`: the score of every neuron (its splitting
  eigenvalue, or the authors' gradient proxy).
- `keras_depthhet.growth`: selection of neurons, growth in place or by
  rebuilding, and `GrowthCallback`, which runs both inside `model.fit`.

`GrowableDense` and `GrowthCallback` are also available from the package
itself. Importing the package registers its layers with Keras, so
`.keras` files of (grown) models load with `keras.saving.load_model` and
no `custom_objects`.
"""

from keras_depthhet import growth, layers, models, splitting
from keras_depthhet.growth import GrowthCallback
from keras_depthhet.layers import GrowableDense

__version__ = "0.1.0"
"""The version of the package."""

__all__ = [
    "GrowableDense",
    "GrowthCallback",
    "__version__",
    "growth",
    "layers",
    "models",
    "splitting",
]
