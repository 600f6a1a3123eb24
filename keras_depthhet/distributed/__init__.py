"""Growth in distributed and multi-worker training.

`GrowthCallback` grows inside `model.fit` under a `tf.distribute` strategy
or a `keras.distribution` (JAX), on one worker or many (the chief decides
and alone writes files); `fit_with_growth` grows by rebuilding the model
between `fit` segments; `resolve_distribution` picks and checks the runtime.
"""

from keras_depthhet.distributed.cluster import (
    initialize_multi_host,
    validate_tf_config,
)
from keras_depthhet.distributed.fit import GrowthRun, fit_with_growth
from keras_depthhet.distributed.runtime import (
    DISTRIBUTIONS,
    VIT_MODEL_PARALLEL_LAYOUT,
    Runtime,
    check_global_batch,
    check_model_placement,
    model_runtime,
    resolve_distribution,
    vit_layout_map,
)
from keras_depthhet.distributed.workers import (
    ChiefBackupAndRestore,
    Workers,
    workers_of,
)
from keras_depthhet.utils.multi_worker import enable_multi_worker_fit

__all__ = [
    "DISTRIBUTIONS",
    "VIT_MODEL_PARALLEL_LAYOUT",
    "ChiefBackupAndRestore",
    "GrowthRun",
    "Runtime",
    "Workers",
    "check_global_batch",
    "check_model_placement",
    "enable_multi_worker_fit",
    "fit_with_growth",
    "initialize_multi_host",
    "model_runtime",
    "resolve_distribution",
    "validate_tf_config",
    "vit_layout_map",
    "workers_of",
]
