"""Growth: neuron selection, in-place growth and `GrowthCallback`."""

from keras_depthhet.growth.selection import plan_cost, select_neurons

__all__ = ["plan_cost", "select_neurons"]
