"""The layers' argument checks, defined in `keras_depthhet.utils.validation`.

Kept so that the layer modules' imports hold; new code imports
`keras_depthhet.utils.validation`.
"""

from keras_depthhet.utils.validation import positive_int, rate

__all__ = ["positive_int", "rate"]
