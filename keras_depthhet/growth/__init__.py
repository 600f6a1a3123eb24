"""Growth: neuron selection, in-place growth and `GrowthCallback`.

`select_neurons` turns scores into a plan `{layer_name: neuron indices}`,
`plan_cost` prices it, `grow_model` applies it in place (the only code that
changes a model) and `rebuild_optimizer` carries the optimizer's state over.
`rebuild_grown_model` and `grown_config` build the grown model anew, as
distributed training needs. `GrowthCallback` grows on a schedule in `fit`;
`GrowthBackupAndRestore` and `GrowthEarlyStopping` follow its growth.
"""

from keras_depthhet.growth.backup import GrowthBackupAndRestore
from keras_depthhet.growth.callback import GrowthCallback
from keras_depthhet.growth.early_stopping import GrowthEarlyStopping
from keras_depthhet.growth.from_scratch import fresh_model
from keras_depthhet.growth.grow import grow_model, rebuild_optimizer
from keras_depthhet.growth.rebuild import grown_config, rebuild_grown_model
from keras_depthhet.growth.selection import plan_cost, select_neurons

__all__ = [
    "GrowthBackupAndRestore",
    "GrowthCallback",
    "GrowthEarlyStopping",
    "fresh_model",
    "grow_model",
    "grown_config",
    "plan_cost",
    "rebuild_grown_model",
    "rebuild_optimizer",
    "select_neurons",
]
