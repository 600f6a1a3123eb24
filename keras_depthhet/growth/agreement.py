"""How the workers of a multi-worker run agree on `GrowthCallback`'s events.

At `on_train_begin` every worker compares its growth settings and its
model with the others' (`join_workers`); at an event the chief's budget
and scores reach every worker bit for bit (`chief_decides`), so that the
same pure selection runs on the same numbers everywhere. The collectives
themselves are `keras_depthhet.utils.workers`.
"""

from keras_depthhet.layers.lookup import growable_layer_map
from keras_depthhet.utils.workers import (
    Workers,
    check_same_settings,
    chief_decides,
    workers_of,
)

__all__ = ["chief_decides", "growth_settings", "join_workers"]

_SETTINGS = (
    "interval",
    "warmup",
    "param_budget",
    "layer_threshold",
    "scale",
    "target_params",
    "criterion",
    "budget_schedule",
    "budget_split",
    "layers",
    "seed",
    "analysis_batches",
)


def growth_settings(callback) -> dict:
    """What every worker's `GrowthCallback` and model must share.

    The callback's arguments that decide growth (not `log_path` or
    `verbose`), whether it scores `analysis_data`, the growable layers of
    its model with their widths and growth so far, the model's size, and
    the kind of backup linked to it (`GrowthBackupAndRestore`), if any.
    """
    settings = {name: getattr(callback, name) for name in _SETTINGS}
    settings["analysis_data"] = callback.analysis_data is not None
    settings["architecture"] = {
        key: [layer.units, [r.tolist() for r in layer.growth_rounds]]
        for key, layer in growable_layer_map(callback.model).items()
    }
    settings["num_params"] = int(callback.model.count_params())
    backup = callback.backup
    settings["backup"] = None if backup is None else type(backup).__name__
    return settings


def join_workers(callback, checks=None) -> Workers | None:
    """Checks a `GrowthCallback` against the other workers of its run.

    Called by `GrowthCallback.on_train_begin`: runs this worker's own
    `checks`, then, in a multi-worker run, compares the outcome and the
    `growth_settings` with the other workers' (`check_same_settings`).

    Args:
        callback: The `GrowthCallback`, with its model set.
        checks: Optional function of no arguments that raises when this
            worker cannot train.

    Returns:
        The run's `Workers`, or `None` in a one-worker run.

    Raises:
        ValueError: on every worker, if a worker's checks failed or the
            workers' settings differ.
    """
    workers = workers_of(callback.model)
    if workers is None:
        if checks is not None:
            checks()
        return None
    failure = None
    try:
        if checks is not None:
            checks()
    except Exception as error:
        failure = error
    check_same_settings(workers, growth_settings(callback), failure)
    return workers
