"""The parameter budget of a growth event.

`event_budget` gives the most parameters one event may add: the
callback's `param_budget`, scaled by the learning rate under
`budget_schedule="lr"` (as the paper authors' code does, so that events
late in a decaying schedule add less) and capped by what is still
missing to `target_params`.
"""

import keras
import numpy as np

BUDGET_SCHEDULES = ("constant", "lr")
"""Accepted values of `budget_schedule`."""


def learning_rate(optimizer) -> float:
    """`optimizer`'s current learning rate, as a Python float."""
    return float(keras.ops.convert_to_numpy(optimizer.learning_rate))


def peak_learning_rate(optimizer, initial: float) -> float:
    """The highest rate up to the optimizer's current step.

    For a schedule, its rate sampled at up to 257 evenly spaced steps from
    0 to the current iteration (so a warm-up ramp does not make the rate at
    step 0 the reference); otherwise the larger of `initial` (the rate
    when training began) and the current rate.

    Args:
        optimizer: A Keras optimizer.
        initial: The learning rate when training began.

    Returns:
        The peak rate.
    """
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
    """The most parameters one event may add.

    Args:
        param_budget: The budget of an event at the peak learning rate.
        schedule: `"constant"` (`param_budget` as is) or `"lr"` (scaled
            by the current learning rate over `peak_learning_rate`).
        optimizer: The model's optimizer (needed for `"lr"`).
        initial_lr: The learning rate when training began (for `"lr"`).
        params: The model's parameter count now.
        target_params: Optional model size the event must not exceed.

    Returns:
        The budget, a float (negative or below one neuron's cost means
        no neuron fits).
    """
    budget = float(param_budget)
    if schedule == "lr":
        peak = peak_learning_rate(optimizer, initial_lr)
        budget *= learning_rate(optimizer) / peak
    if target_params is not None:
        budget = min(budget, target_params - params)
    return budget
