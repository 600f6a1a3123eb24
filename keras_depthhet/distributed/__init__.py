"""Growth in distributed and multi-worker training.

Growth inside `model.fit` (`GrowthCallback`) works under a TensorFlow
`tf.distribute` strategy and a JAX `keras.distribution`, on one worker or
many. In a multi-worker run the decisions agree by construction: the
chief scores, every worker grows the chief's choice
(`keras_depthhet.distributed.workers`), and only the chief writes files
(`ChiefBackupAndRestore`, the name here of
`keras_depthhet.growth.GrowthBackupAndRestore`). `fit_with_growth` grows
by rebuilding the model between `fit` segments instead.
`resolve_distribution` picks and checks the runtime;
`initialize_multi_host` and `validate_tf_config` prepare multi-worker
runs; `enable_multi_worker_fit`, called by name, fixes Keras's TensorFlow
`fit` for several workers; `vit_layout_map` lays the ViT out for
`keras.distribution.ModelParallel`.
"""

from keras_depthhet.distributed.cluster import (
    initialize_multi_host,
    validate_tf_config,
)
from keras_depthhet.distributed.fit import GrowthRun, fit_with_growth
from keras_depthhet.distributed.layouts import (
    VIT_MODEL_PARALLEL_LAYOUT,
    vit_layout_map,
)
from keras_depthhet.distributed.runtime import (
    DISTRIBUTIONS,
    Runtime,
    check_global_batch,
    check_model_placement,
    model_runtime,
    resolve_distribution,
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
