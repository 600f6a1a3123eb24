"""Growth: neuron selection, in-place growth and `GrowthCallback`."""

from keras_depthhet.growth.callback import GrowthCallback
from keras_depthhet.growth.grow import grow_model, rebuild_optimizer
from keras_depthhet.growth.rebuild import grown_config, rebuild_grown_model
from keras_depthhet.growth.selection import plan_cost, select_neurons

__all__ = [
    "GrowthCallback",
    "grow_model",
    "grown_config",
    "plan_cost",
    "rebuild_grown_model",
    "rebuild_optimizer",
    "select_neurons",
]
