"""How multi-worker runs agree on `GrowthCallback`'s events: settings are
compared at `on_train_begin` (`join_workers`), the chief's budget and scores
reach every worker bit for bit (`chief_decides`, in `utils.workers`)."""

from keras_depthhet.layers.lookup import growable_layer_map
from keras_depthhet.utils.workers import (
    Workers,
    check_same_settings,
    chief_decides,
    workers_of,
)

__all__ = ["chief_decides", "growth_settings", "join_workers"]

_SETTINGS = (
    "interval warmup param_budget layer_threshold scale target_params "
    "criterion budget_schedule budget_split layers seed analysis_batches"
).split()


def growth_settings(callback) -> dict:
    """What every worker's `GrowthCallback` and model must share: the
    deciding arguments, the growable layers and size, the backup kind."""
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
    """Runs this worker's `checks` (a function that raises when it cannot
    train) and, in a multi-worker run, compares their outcome and the
    `growth_settings` with the other workers' (raising on every worker).
    Returns the run's `Workers`, or `None` with one worker."""
    workers = workers_of(callback.model)
    failure = None
    try:
        if checks is not None:
            checks()
    except Exception as error:
        if workers is None:
            raise
        failure = error
    if workers is not None:
        check_same_settings(workers, growth_settings(callback), failure)
    return workers
