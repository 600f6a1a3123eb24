"""The parameter budget of a growth event: `param_budget`, scaled by the
learning rate under `budget_schedule="lr"` (late events add less), capped
at what is still missing to `target_params`.
"""

import keras
import numpy as np

BUDGET_SCHEDULES = ("constant", "lr")
"""Accepted values of `budget_schedule`."""


def learning_rate(optimizer) -> float:
    """`optimizer`'s current learning rate, as a Python float."""
    return float(keras.ops.convert_to_numpy(optimizer.learning_rate))


def peak_learning_rate(optimizer, initial: float) -> float:
    """The highest rate so far: a schedule's, sampled at up to 257 steps
    from 0 to the current one; else the larger of `initial` and now's."""
    current = learning_rate(optimizer)
    config = optimizer.get_config()["learning_rate"]
    if not isinstance(config, dict):
        return max(initial, current)
    schedule = keras.optimizers.schedules.deserialize(config)
    step = int(keras.ops.convert_to_numpy(optimizer.iterations))
    steps = np.unique(np.linspace(0, step, num=min(step + 1, 257)).round())
    rates = [float(keras.ops.convert_to_numpy(schedule(int(s)))) for s in steps]
    return max(rates + [current])


def event_budget(
    param_budget: float,
    *,
    schedule: str,
    optimizer=None,
    initial_lr: float | None = None,
    params: int,
    target_params: int | None = None,
) -> float:
    """The most parameters one event may add (below one neuron's cost: none
    fits); `"lr"` scales by the current over the peak learning rate."""
    budget = float(param_budget)
    if schedule == "lr":
        peak = peak_learning_rate(optimizer, initial_lr)
        budget *= learning_rate(optimizer) / peak
    if target_params is not None:
        budget = min(budget, target_params - params)
    return budget
