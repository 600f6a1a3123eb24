"""The distributed runtimes, for the experiment scripts and configs.

They are part of the library: `keras_depthhet.distributed`.
"""

from keras_depthhet.distributed import (
    DISTRIBUTIONS,
    VIT_MODEL_PARALLEL_LAYOUT,
    Runtime,
    check_global_batch,
    check_model_placement,
    initialize_multi_host,
    resolve_distribution,
    validate_tf_config,
)

__all__ = [
    "DISTRIBUTIONS",
    "VIT_MODEL_PARALLEL_LAYOUT",
    "Runtime",
    "check_global_batch",
    "check_model_placement",
    "initialize_multi_host",
    "resolve_distribution",
    "validate_tf_config",
]
