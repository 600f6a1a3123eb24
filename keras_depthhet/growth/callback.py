"""`GrowthCallback`: grow a model with depth heterogeneity inside `fit`."""

import json
import os
import weakref

import keras
import numpy as np

from keras_depthhet import splitting
from keras_depthhet.growth.agreement import chief_decides, join_workers
from keras_depthhet.growth.grow import _optimizer_state, grow_model
from keras_depthhet.growth.recent_batches import RecentBatches
from keras_depthhet.growth.selection import (
    BUDGET_SPLITS,
    CRITERIA,
    default_layer_types,
    select_neurons,
    type_groups,
)
from keras_depthhet.layers.lookup import growable_layer_map
from keras_depthhet.utils.keras_internals import (
    iter_layers,
    quiet_trainer_retracing,
    sync_trainer_state,
)
from keras_depthhet.utils.validation import (
    choice,
    int_at_least,
    positive_number,
)

__all__ = ["BUDGET_SCHEDULES", "GrowthCallback", "log_num_params"]

BUDGET_SCHEDULES = ("constant", "lr")
"""Accepted values of `budget_schedule`."""


def _learning_rate(optimizer) -> float:
    return float(keras.ops.convert_to_numpy(optimizer.learning_rate))


def _peak_learning_rate(optimizer, initial: float) -> float:
    """The highest rate so far: a schedule's, sampled at up to 257 steps
    from 0 to the current one; else the larger of `initial` and now's."""
    current = _learning_rate(optimizer)
    config = optimizer.get_config()["learning_rate"]
    if not isinstance(config, dict):
        return max(initial, current)
    schedule = keras.optimizers.schedules.deserialize(config)
    step = int(keras.ops.convert_to_numpy(optimizer.iterations))
    steps = np.unique(np.linspace(0, step, num=min(step + 1, 257)).round())
    rates = [float(keras.ops.convert_to_numpy(schedule(int(s)))) for s in steps]
    return max(rates + [current])


def _score_summary(values) -> dict:
    values = np.asarray(values)
    return {
        "min": float(values.min()),
        "median": float(np.median(values)),
        "num_negative": int(np.sum(values < 0)),
        "num_neurons": int(values.size),
    }


def _event_line(event: dict) -> str:
    """The line `GrowthCallback(verbose=1)` prints for `event`."""
    if not event["neurons"]:
        return (
            f"GrowthCallback: epoch {event['epoch']}: no neuron eligible "
            f"within budget {event['budget']:,.0f}; no growth."
        )
    line = (
        f"GrowthCallback: epoch {event['epoch']}: grew "
        f"{sum(event['neurons'].values())} neurons in "
        f"{len(event['neurons'])} layers, parameters "
        f"{event['params_before']:,} -> {event['params_after']:,}"
    )
    if "scores" in event:
        lowest = min(s["min"] for s in event["scores"].values())
        line += f", lowest score {lowest:.3g}"
    return line + "."


def log_num_params(model: keras.Model, logs: dict | None) -> None:
    """Sets `logs["num_params"]`, the model's size, for the epoch's logs."""
    if logs is not None:
        logs["num_params"] = int(model.count_params())


class GrowthCallback(keras.callbacks.Callback):
    """Grows the model's growable layers at scheduled epochs.

    An event runs at the end of epoch `e` (from 1) when `e >= warmup` and
    `(e - warmup) % interval == 0`. It scores every neuron (by default the
    minimum eigenvalue of its splitting matrix, on the last batches trained
    on or on `analysis_data`), chooses neurons with `select_neurons` and
    grows them with `grow_model`: the model computes the same function,
    the optimizer keeps its state, and the same `fit` goes on. The defaults
    are the paper's DeiT-S schedule. What would fail at the first event
    (optimizer, loss, `scale`, `analysis_data`) fails at `on_train_begin`.
    In a multi-worker run the chief scores, every worker grows its choice,
    and only the chief writes files.

    Each epoch sets `logs["num_params"]`: list this callback before
    `CSVLogger`, `ModelCheckpoint` and backups. `history` holds one dict
    per event (its `"plan"` names the neurons grown), also appended to
    `log_path` as a JSON line. For backups and early stopping use
    `GrowthBackupAndRestore` (listed after this callback) and
    `GrowthEarlyStopping`, which follow growth.

    The callback follows one model: used in the `fit` of another model,
    it starts afresh (empty `history`, learning rate read anew), as a new
    callback would; `set_state` before a `fit` carries a state over.

    Args:
        interval: Positive integer, epochs between events.
        warmup: Non-negative integer, the epoch after which the first event
            runs (with `warmup=0`, the first follows epoch `interval`).
        param_budget: Positive number, the most parameters one event adds.
        layer_threshold: Non-negative integer, the fewest eligible neurons
            a layer needs to take part in an event.
        scale: Scale factor `s` of the new neuron pairs.
        target_params: Optional positive integer, the model size at which
            growth stops (each budget is capped at the parameters missing).
        analysis_data: Optional data the scores are computed on (anything
            `keras_depthhet.splitting` accepts; multi-worker training needs
            it). `None`: the last `analysis_batches` batches trained on
            before each event, with their sample weights.
        analysis_batches: Positive integer or `None` (all), the number of
            batches used per event.
        criterion: `"splitting"`, `"gradient_proxy"` or `"random"` (see
            `select_neurons`).
        budget_schedule: `"constant"` or `"lr"` (the budget scaled by the
            current over the highest learning rate so far).
        budget_split: `"global"` or `"by_layer_type"` (the budget split
            equally among layer types, see `layer_types`).
        layer_types: For `"by_layer_type"`: `None`, a mapping from layer
            name to type, or a function of a layer returning its type (or
            `None`). By default a layer held as `qkv`, `proj`, `fc1` or
            `fc2` by the ViT blocks, as query, key or value (`"qkv"`) or
            output (`"proj"`) projection by `keras.layers.MultiHeadAttention`,
            or as KerasHub's transformer MLP (`"fc1"`, `"fc2"`) has that
            type; given types override it.
        layers: Optional list of names of the growable layers that
            may grow; `None` means all.
        seed: Seed of `criterion="random"`; event `k` uses `seed + k`.
        log_path: Optional file path for JSON lines, one per event.
        verbose: 0 (silent) or 1 (one line per event).

    Raises:
        ValueError: at construction, for an argument out of its range; at
            `on_train_begin`, for a model without growable layers,
            an optimizer, loss, `scale` or `analysis_data` the first event
            could not use (the error names the argument).

    Examples:
        ```python
        model.fit(x, y, epochs=300, callbacks=[GrowthCallback(interval=30)])
        ```
    """

    def __init__(
        self,
        interval: int = 30,
        warmup: int = 50,
        param_budget: float = 580_000,
        layer_threshold: int = 60,
        scale: float = 0.2,
        target_params: int | None = None,
        analysis_data=None,
        analysis_batches: int | None = 10,
        criterion: str = "splitting",
        budget_schedule: str = "constant",
        budget_split: str = "global",
        layer_types=None,
        layers: list[str] | None = None,
        seed: int | None = None,
        log_path: str | os.PathLike | None = None,
        verbose: int = 1,
    ):
        super().__init__()
        self.interval = int_at_least("interval", interval, 1)
        self.warmup = int_at_least("warmup", warmup, 0)
        self.param_budget = positive_number("param_budget", param_budget)
        self.layer_threshold = int_at_least(
            "layer_threshold", layer_threshold, 0
        )
        self.scale = float(positive_number("scale", scale))
        self.target_params = int_at_least(
            "target_params", target_params, 1, optional=True
        )
        self.criterion = choice("criterion", criterion, CRITERIA)
        self.analysis_data = analysis_data
        self.analysis_batches = int_at_least(
            "analysis_batches", analysis_batches, 1, optional=True
        )
        self._recent = None
        if analysis_data is None and criterion != "random":
            self._recent = RecentBatches(analysis_batches)
        self.budget_schedule = choice(
            "budget_schedule", budget_schedule, BUDGET_SCHEDULES
        )
        self.budget_split = choice("budget_split", budget_split, BUDGET_SPLITS)
        if not (
            layer_types is None
            or callable(layer_types)
            or isinstance(layer_types, dict)
            and all(isinstance(v, str) for v in layer_types.values())
        ):
            raise ValueError(
                "Argument `layer_types` must be None, a dict from layer name "
                "to type (a string) or a function of a layer. Received: "
                f"layer_types={layer_types!r}"
            )
        self.layer_types = layer_types
        if layers is not None and (
            isinstance(layers, str)
            or not all(isinstance(name, str) for name in layers)
            or not layers
        ):
            raise ValueError(
                "Argument `layers` must be None or a non-empty list of layer "
                f"names. Received: layers={layers!r}"
            )
        self.layers = None if layers is None else list(layers)
        self.seed = int_at_least("seed", seed, 0, optional=True)
        self.log_path = None if log_path is None else os.fspath(log_path)
        self.verbose = choice("verbose", verbose, (0, 1))
        self.history = []
        self.backup = None
        self.train_begins = 0
        self._initial_lr = None
        self._workers = None
        self._follows = None  # A weak reference to the model it grew.

    def is_event_epoch(self, epoch: int) -> bool:
        """Whether an event is scheduled after epoch `epoch` (from 1)."""
        return (
            epoch >= self.warmup and (epoch - self.warmup) % self.interval == 0
        )

    def _growable(self) -> dict:
        """The layers that may grow, `{key: layer}` (`growable_layer_map`)."""
        layers = growable_layer_map(self.model)
        if self.layers is not None:
            unknown = [name for name in self.layers if name not in layers]
            if unknown:
                raise ValueError(
                    "Argument `layers` names layers that are not growable "
                    f"layers of the model: {unknown}. Known: {sorted(layers)}"
                )
            layers = {k: v for k, v in layers.items() if k in self.layers}
        return layers

    def _layer_types(self) -> dict[str, str]:
        """`{key: type}` of the growable layers (see `layer_types`)."""
        layers = self._growable()
        parents = [self.model, *iter_layers(self.model)]
        types = default_layer_types(parents, layers)
        given = self.layer_types
        if callable(given):
            for key, layer in layers.items():
                kind = given(layer)
                if kind is not None:
                    types[key] = str(kind)
        elif given is not None:
            unknown = [key for key in given if key not in layers]
            if unknown:
                raise ValueError(
                    "Argument `layer_types` names layers that are not "
                    f"growable layers of the model: {unknown}. Known: "
                    f"{sorted(layers)}"
                )
            types.update(given)
        return types

    def on_train_begin(self, logs=None):
        layers = self._growable()
        if not layers:
            raise ValueError(
                "`GrowthCallback` needs a model with growable layers. Convert "
                "a Keras model with `keras_depthhet.make_growable(model)` "
                "(its Dense layers become `GrowableDense`), or build one with "
                "`GrowableDense` or `keras_depthhet.models.vit`. Received: "
                f"model {self.model.name!r} without any."
            )
        self._start_following(self.model)
        self.train_begins += 1
        self._workers = join_workers(
            self, lambda: self._check_ready(list(layers.values()))
        )
        if self.budget_schedule == "lr" and self._initial_lr is None:
            self._initial_lr = _learning_rate(self.model.optimizer)
        if self._recent is not None:
            self._recent.attach(self.model)
        quiet_trainer_retracing(True)  # Each event retraces them once.

    def _start_following(self, model) -> None:
        """Forgets the history of another model before following `model`."""
        if self._follows is not None and self._follows() is not model:
            if self.verbose and self.history:
                print(
                    f"GrowthCallback: a new model ({model.name!r}); the "
                    f"{len(self.history)} events of the previous one are "
                    "left out of `history`."
                )
            self.history = []
            self._initial_lr = None
        self._follows = weakref.ref(model)

    def on_epoch_begin(self, epoch, logs=None):
        self._follows = weakref.ref(self.model)  # Also after `set_state`.
        if self._recent is not None and self.is_event_epoch(epoch + 1):
            self._recent.start()

    def on_train_end(self, logs=None):
        quiet_trainer_retracing(False)
        if self._recent is not None:
            self._recent.detach()

    def _check_ready(self, layers) -> None:
        """Raises now what would fail at the first event (optimizer state,
        pairs at `scale`, loss, analysis data); the model is not changed."""
        optimizer = getattr(self.model, "optimizer", None)
        if optimizer is not None and optimizer.built:
            _optimizer_state(optimizer)
        for layer in layers:
            layer._check_growable()
            if not layer.built:  # A model without `keras.Input`: at `fit`.
                continue
            kernel, bias = layer._flat_weights()
            layer._pair_values(kernel, bias, np.arange(layer.units), self.scale)
        if self.budget_split == "by_layer_type":
            type_groups(dict.fromkeys(self._growable()), self._layer_types())
        if self.criterion == "random":
            return
        if self.analysis_data is None:
            splitting.loss.resolve_loss(self.model, None)
        else:
            splitting.data.check_analysis_data(
                self.model,
                self.analysis_data,
                "analysis_data",
                self.analysis_batches,
            )

    def get_state(self) -> dict:
        """What a resumed run needs, JSON-serialisable: `"history"` and
        `"initial_lr"` (the rate at the start)."""
        return {"history": list(self.history), "initial_lr": self._initial_lr}

    def set_state(self, state: dict) -> None:
        """Continues from `state`, as `get_state` returned it."""
        self.history = list(state["history"])
        self._initial_lr = state.get("initial_lr")
        self._follows = None  # The state is the next model's.

    @property
    def writes_files(self) -> bool:
        """Whether this worker writes logs and backups (the chief does)."""
        return self._workers is None or self._workers.is_chief

    def compute_scores(self) -> dict[str, np.ndarray]:
        """Per-neuron scores of the growable layers for one event.

        Subclasses may override this (most negative grows first, negative
        is eligible); `criterion="random"` uses only their lengths.

        Returns:
            `{layer_name: 1-D array of length units}` in layer order.
        """
        layers = self._growable()
        names = list(layers)
        if self.criterion == "random":
            return {key: np.zeros(layer.units) for key, layer in layers.items()}
        args = (self.model, self._analysis_batches())
        kwargs = {"num_batches": self.analysis_batches, "layers": names}
        # Errors name what the user passed, not the scoring's own `data`.
        source = (
            "Argument `analysis_data`"
            if self.analysis_data is not None
            else "The training data scored at this event (no "
            "`analysis_data` given)"
        )
        with splitting.data.naming(source):
            if self.criterion == "splitting":
                scores = splitting.splitting_eigenvalues(
                    *args, verbose=0, **kwargs
                )
            else:
                scores = splitting.gradient_proxy(*args, **kwargs)
        return {name: np.asarray(scores[name]) for name in names}

    def _analysis_batches(self):
        """`analysis_data`, or the training batches kept before the event."""
        if self.analysis_data is not None:
            return self.analysis_data
        recent = self._recent
        if (
            recent is None
            or recent.model is not self.model
            or not (recent.started or recent.num_kept)
        ):
            raise ValueError(
                "`GrowthCallback` without `analysis_data` scores neurons on "
                "the training batches it keeps inside `model.fit`; to decide "
                "outside `fit` (e.g. `plan_growth` called directly), pass "
                "`analysis_data`. Received: analysis_data=None"
            )
        return [(b.x, b.y, b.sample_weight) for b in recent.batches()]

    def _budget(self, params: int) -> float:
        """The most parameters the event may add: `param_budget` (under
        `"lr"` times the current over the peak rate), capped at what is
        missing to `target_params`; below one neuron's cost, none fits."""
        budget = float(self.param_budget)
        if self.budget_schedule == "lr":
            optimizer = self.model.optimizer
            if self._initial_lr is None:  # plan_growth called before fit.
                self._initial_lr = _learning_rate(optimizer)
            peak = _peak_learning_rate(optimizer, self._initial_lr)
            budget *= _learning_rate(optimizer) / peak
        if self.target_params is not None:
            budget = min(budget, self.target_params - params)
        return budget

    def plan_growth(self, epoch: int) -> dict | None:
        """Decides the growth event after epoch `epoch`, without growing.

        Scores (`compute_scores`) and selects within the event's budget;
        needs `set_model` and `on_train_begin`.

        Args:
            epoch: The epoch (counting from 1) whose end the event follows.

        Returns:
            `None` when no neuron fits under `target_params`, else a dict:
            `"plan"` (`{layer_name: neuron indices}`, maybe empty),
            `"epoch"`, `"params_before"`, `"budget"`, `"neurons"` (count
            per layer), `"criterion"` and, unless `criterion="random"`,
            `"scores"` (per layer: min, median, number negative, size).

        Examples:
            ```python
            grower.set_model(model)
            grower.on_train_begin()
            decision = grower.plan_growth(epoch=10)
            if decision is not None:
                grow_model(model, decision["plan"], scale=grower.scale)
            ```
        """
        sync_trainer_state(self.model)
        layers = self._growable()
        costs = {key: layer.growth_cost(1) for key, layer in layers.items()}
        params = self.model.count_params()
        cheapest = min(costs.values())
        if params + cheapest > (self.target_params or float("inf")):
            return None
        budget, scores = self._agreed_budget_and_scores(params)
        plan = {}
        if budget >= cheapest:
            seed = None if self.seed is None else self.seed + len(self.history)
            plan = select_neurons(
                scores,
                costs,
                param_budget=budget,
                layer_threshold=self.layer_threshold,
                criterion=self.criterion,
                budget_split=self.budget_split,
                layer_types=self._layer_types()
                if self.budget_split == "by_layer_type"
                else None,
                seed=seed,
            )
        decision = {
            "plan": plan,
            "epoch": int(epoch),
            "params_before": int(params),
            "budget": float(budget),
            "neurons": {name: len(idx) for name, idx in plan.items()},
            "criterion": self.criterion,
        }
        if self.criterion != "random":
            decision["scores"] = {
                name: _score_summary(values) for name, values in scores.items()
            }
        return decision

    def _agreed_budget_and_scores(self, params: int) -> tuple[float, dict]:
        """The event's budget and scores: the chief's, on every worker."""
        workers = self._workers
        if workers is None or workers.is_chief:
            budget, scores = self._budget(params), self.compute_scores()
        else:  # Placeholders for the chief's numbers: no analysis here.
            budget = 0.0
            scores = {k: np.zeros(v.units) for k, v in self._growable().items()}
        if workers is None:
            return budget, scores
        return chief_decides(workers, budget, scores)

    def event_record(self, decision: dict, plan: dict, added: int) -> dict:
        """The event as `history` keeps it: `decision` (`plan_growth`'s,
        without `"plan"`) with the `plan` grown by, `"params_after"`,
        `"params_added"` (`added`) and `"total_grown"` (per layer)."""
        return {
            **decision,
            "plan": {name: [int(i) for i in idx] for name, idx in plan.items()},
            "params_after": int(self.model.count_params()),
            "params_added": int(added),
            "total_grown": {
                key: layer.num_grown for key, layer in self._growable().items()
            },
        }

    def report(self, event: dict) -> None:
        """Adds `event` (`event_record`'s) to `history`; the chief also
        appends it to `log_path` and, with `verbose=1`, prints a line."""
        self.history.append(event)
        self._follows = weakref.ref(self.model)  # Rebuilt by fit_with_growth.
        if not self.writes_files:
            return
        if self.log_path is not None:
            with open(self.log_path, "a") as f:
                f.write(json.dumps(event) + "\n")
        if self.verbose:
            print(_event_line(event))

    def on_epoch_end(self, epoch, logs=None):
        if self._recent is not None:
            self._recent.stop()
        if self.is_event_epoch(epoch + 1):
            decision = self.plan_growth(epoch + 1)
            if decision is not None:
                plan = decision.pop("plan")
                added = grow_model(self.model, plan, scale=self.scale)
                self.report(self.event_record(decision, plan, added))
        log_num_params(self.model, logs)
