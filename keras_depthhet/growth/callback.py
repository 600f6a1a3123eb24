"""`GrowthCallback`: grow a model with depth heterogeneity inside `fit`."""

import json
import numbers
import os

import keras
import numpy as np

from keras_depthhet.growth.grow import _optimizer_state, grow_model
from keras_depthhet.growth.recent_batches import RecentBatches
from keras_depthhet.growth.selection import (
    BUDGET_SPLITS,
    CRITERIA,
    select_neurons,
)
from keras_depthhet.models.vit import growable_layer_map
from keras_depthhet.utils.keras_internals import (
    sibling_callbacks,
    sync_trainer_state,
)

BUDGET_SCHEDULES = ("constant", "lr")
"""Accepted values of `budget_schedule`."""

GROWTH_STATE_FILE = "growth_state.json"
"""File `GrowthCallback` keeps in a `BackupAndRestore` backup directory."""


def _int_at_least(name, value, low):
    if (
        isinstance(value, bool)
        or not isinstance(value, numbers.Integral)
        or value < low
    ):
        kind = "a positive" if low == 1 else "a non-negative"
        raise ValueError(
            f"Argument `{name}` must be {kind} integer. "
            f"Received: {name}={value!r}"
        )
    return int(value)


def _positive_number(name, value):
    if (
        isinstance(value, bool)
        or not isinstance(value, numbers.Real)
        or not np.isfinite(value)
        or value <= 0
    ):
        raise ValueError(
            f"Argument `{name}` must be a positive number. "
            f"Received: {name}={value!r}"
        )
    return value


def _choice(name, value, choices):
    if value not in choices:
        raise ValueError(
            f"Argument `{name}` must be one of {list(choices)}. "
            f"Received: {name}={value!r}"
        )
    return value


def _learning_rate(optimizer) -> float:
    return float(keras.ops.convert_to_numpy(optimizer.learning_rate))


def _peak_learning_rate(optimizer, initial: float) -> float:
    """The highest rate up to the optimizer's current step.

    For a schedule, its rate sampled at up to 257 evenly spaced steps from
    0 to the current iteration (so a warm-up ramp does not make the rate at
    step 0 the reference); otherwise the larger of `initial` (the rate
    when training began) and the current rate.
    """
    current = _learning_rate(optimizer)
    config = optimizer.get_config()["learning_rate"]
    if not isinstance(config, dict):
        return max(initial, current)
    schedule = keras.optimizers.schedules.deserialize(config)
    step = int(keras.ops.convert_to_numpy(optimizer.iterations))
    steps = np.unique(np.linspace(0, step, num=min(step + 1, 257)).round())
    rates = [float(keras.ops.convert_to_numpy(schedule(int(s)))) for s in steps]
    return max(rates + [current])


def _summary(values: np.ndarray) -> dict:
    return {
        "min": float(values.min()),
        "median": float(np.median(values)),
        "num_negative": int(np.sum(values < 0)),
        "num_neurons": int(values.size),
    }


def log_num_params(model: keras.Model, logs: dict | None) -> None:
    """Sets `logs["num_params"]`, the model's size, for the epoch's logs."""
    if logs is not None:
        logs["num_params"] = int(model.count_params())


class GrowthCallback(keras.callbacks.Callback):
    """Grows the model's `GrowableDense` layers at scheduled epochs.

    A growth event runs at the end of epoch `e` (counting from 1) when
    `e >= warmup` and `(e - warmup) % interval == 0`. It scores every
    neuron (by default the minimum eigenvalue of its splitting matrix,
    computed by `keras_depthhet.splitting` on the last training batches
    before the event, or on `analysis_data`), chooses
    neurons with `select_neurons` and grows them in place with
    `grow_model`: the model computes the same function, the optimizer keeps
    its state, and training continues in the same `fit` call. The defaults
    are the paper's DeiT-S schedule (warm-up 50, every 30 epochs, 580,000
    parameters per event, layer threshold 60).

    With `target_params`, an event's budget is capped at the parameters
    still missing, and no event runs once no neuron fits under the target,
    so the model never exceeds it. With `budget_schedule="lr"` the budget
    is scaled by the current learning rate over the highest rate so far (of
    a schedule, sampled from step 0 to the current step; else the rate when
    training began, or a later higher one), so that, as in the paper
    authors' code, events late in a decaying schedule add less. Using the
    peak rather than the first rate keeps a warm-up ramp (e.g. the DeiT
    recipe's 1e-6 start) from inflating the budget.

    `plan_growth` makes an event's decision alone, without growing (what
    `keras_depthhet.distributed.fit_with_growth` uses to rebuild instead).
    In a multi-worker run (TensorFlow `MultiWorkerMirroredStrategy`,
    multi-process JAX) the chief alone scores and every worker grows the
    chief's choice; workers started with different settings fail at
    `on_train_begin`, and only the chief writes `log_path` and the growth
    state of a backup (`keras_depthhet.distributed.ChiefBackupAndRestore`).

    Every epoch the callback sets `logs["num_params"]`; list it before
    `CSVLogger`, `TensorBoard`, `ModelCheckpoint` and `BackupAndRestore`
    so that they see this value and the grown model of the same epoch.
    `history` holds one dict per event (its `"plan"` names the neurons
    grown); with `log_path` each event is also appended to that file as a
    JSON line.

    Other callbacks of the same `fit` are taken into account:
    `keras.callbacks.BackupAndRestore` must come after this callback,
    which then regrows a freshly built model to the backup's architecture
    before the backup is loaded (so a killed run resumes with its grown
    model, optimizer state and `history`), and `EarlyStopping(
    restore_best_weights=True)` restores its best weights into the grown
    model, new pairs summing to zero (the best epoch's function). A
    weights file saved before an event (`ModelCheckpoint(
    save_weights_only=True)`) loads into the grown model the same way.

    Whatever would fail at the first event fails at `on_train_begin`
    instead: an optimizer whose state cannot be carried over, an
    unsupported loss, a `scale` whose pairs overflow the weights' dtype,
    and `analysis_data` that does not fit the model (wrong input shape,
    non-finite targets, labels outside the classes of a sparse loss).

    Args:
        interval: Positive integer, epochs between events.
        warmup: Non-negative integer, the epoch after which the first
            event runs (with `warmup=0`, the first event follows epoch
            `interval`).
        param_budget: Positive number, the most parameters one event adds.
        layer_threshold: Non-negative integer, the fewest eligible neurons
            a layer needs to take part in an event.
        scale: Scale factor `s` of the new neuron pairs.
        target_params: Optional positive integer, the model size at which
            growth stops.
        analysis_data: Optional data the scores are computed on (anything
            `keras_depthhet.splitting` accepts, e.g. a `tf.data.Dataset` or
            an `(x, y)` tuple). `None` (the default): the last
            `analysis_batches` batches `fit` trained on in the epoch before
            each event, with their sample weights, as the train step
            received them (under `MirroredStrategy` or `DataParallel` the
            global batches, so every replica decides alike). They are kept
            only in that epoch; other epochs run Keras's own train step
            untouched. Multi-worker training needs `analysis_data` (the
            chief's decides).
        analysis_batches: Positive integer or `None` (all), the number of
            batches used per event.
        criterion: `"splitting"`, `"gradient_proxy"` or `"random"` (see
            `select_neurons`).
        budget_schedule: `"constant"` or `"lr"`.
        budget_split: `"global"` or `"by_layer_type"`.
        layers: Optional list of names of the `GrowableDense` layers that
            may grow; `None` means all.
        seed: Seed of `criterion="random"`; event `k` uses `seed + k`.
        log_path: Optional file path for JSON lines, one per event.
        verbose: 0 (silent) or 1 (one line per event).

    Example:

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
        layers: list[str] | None = None,
        seed: int | None = None,
        log_path: str | os.PathLike | None = None,
        verbose: int = 1,
    ):
        super().__init__()
        self.interval = _int_at_least("interval", interval, 1)
        self.warmup = _int_at_least("warmup", warmup, 0)
        self.param_budget = _positive_number("param_budget", param_budget)
        self.layer_threshold = _int_at_least(
            "layer_threshold", layer_threshold, 0
        )
        self.scale = float(_positive_number("scale", scale))
        if target_params is not None:
            target_params = _int_at_least("target_params", target_params, 1)
        self.target_params = target_params
        self.criterion = _choice("criterion", criterion, CRITERIA)
        self.analysis_data = analysis_data
        if analysis_batches is not None:
            analysis_batches = _int_at_least(
                "analysis_batches", analysis_batches, 1
            )
        self.analysis_batches = analysis_batches
        self._recent = None
        if analysis_data is None and criterion != "random":
            self._recent = RecentBatches(analysis_batches)
        self.budget_schedule = _choice(
            "budget_schedule", budget_schedule, BUDGET_SCHEDULES
        )
        self.budget_split = _choice("budget_split", budget_split, BUDGET_SPLITS)
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
        if seed is not None:
            seed = _int_at_least("seed", seed, 0)
        self.seed = seed
        self.log_path = None if log_path is None else os.fspath(log_path)
        self.verbose = _choice("verbose", verbose, (0, 1))
        self.history = []
        self._initial_lr = None
        self._backup = None
        self._early_stopping = []
        self._workers = None

    # ------------------------------------------------------------ schedule
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
                    "Argument `layers` names layers that are not GrowableDense "
                    f"layers of the model: {unknown}. Known: {sorted(layers)}"
                )
            layers = {k: v for k, v in layers.items() if k in self.layers}
        return layers

    def on_train_begin(self, logs=None):
        layers = self._growable()
        if not layers:
            raise ValueError(
                "`GrowthCallback` needs a model with GrowableDense layers "
                "(e.g. built with `keras_depthhet.models.vit`). Received: "
                f"model {self.model.name!r} without any."
            )
        siblings = sibling_callbacks(self) or []
        self._backup = self._backup_callback(siblings)
        self._early_stopping = [
            c for c in siblings if isinstance(c, keras.callbacks.EarlyStopping)
        ]
        from keras_depthhet.distributed.workers import join_workers

        self._workers = join_workers(
            self, self._backup, lambda: self._check_ready(list(layers.values()))
        )
        if self._backup is not None:
            self._restore_growth()
        if self.budget_schedule == "lr" and self._initial_lr is None:
            self._initial_lr = _learning_rate(self.model.optimizer)
        if self._recent is not None:
            self._recent.attach(self.model)

    def on_epoch_begin(self, epoch, logs=None):
        if self._recent is not None and self.is_event_epoch(epoch + 1):
            self._recent.start()

    def on_train_end(self, logs=None):
        if self._recent is not None:
            self._recent.detach()

    def _backup_callback(self, siblings):
        """The `BackupAndRestore` of this `fit`, which must come after us."""
        backups = [
            (i, c)
            for i, c in enumerate(siblings)
            if isinstance(c, keras.callbacks.BackupAndRestore)
        ]
        if not backups:
            return None
        position = next(i for i, c in enumerate(siblings) if c is self)
        if backups[0][0] < position:
            raise ValueError(
                "List `GrowthCallback` before `BackupAndRestore` in "
                "`callbacks`: at the end of an epoch the model must grow "
                "before it is backed up, and when training resumes it must "
                "be regrown before the backup is loaded. Received: "
                f"callbacks={[type(c).__name__ for c in siblings]}"
            )
        return backups[0][1]

    def _check_ready(self, layers) -> None:
        """Fails now on what would fail at the first event.

        Checks that the optimizer's state can be carried over growth, that
        a pair at `scale` fits the weights' dtype, and, for the scored
        criteria, the loss and the analysis data (one batch is read and
        run). The model is not changed.
        """
        optimizer = getattr(self.model, "optimizer", None)
        if optimizer is not None and optimizer.built:
            _optimizer_state(optimizer)
        for layer in layers:
            layer._check_growable()
            kernel = keras.ops.convert_to_numpy(layer.kernel)
            bias = (
                keras.ops.convert_to_numpy(layer.bias)
                if layer.use_bias
                else None
            )
            layer._pair_values(kernel, bias, np.arange(layer.units), self.scale)
        if self.criterion != "random":
            from keras_depthhet.splitting import capture

            if self.analysis_data is None:
                capture.resolve_loss(self.model, None)
            else:
                capture.check_analysis_data(
                    self.model,
                    self.analysis_data,
                    "analysis_data",
                    self.analysis_batches,
                )

    # -------------------------------------------------------------- backup
    def _state_path(self) -> str:
        return os.path.join(self._backup.backup_dir, GROWTH_STATE_FILE)

    def _save_growth_state(self) -> None:
        """Writes the events so far beside the `BackupAndRestore` backup."""
        os.makedirs(self._backup.backup_dir, exist_ok=True)
        state = {"history": self.history, "initial_lr": self._initial_lr}
        temporary = self._state_path() + ".tmp"
        with open(temporary, "w") as f:
            json.dump(state, f)
        os.replace(temporary, self._state_path())

    def _restore_growth(self) -> None:
        """Regrows the model to the architecture of the last backup.

        The backup records the completed epochs it holds; the events of
        those epochs are replayed in order (`grow_model`, zero-sum pairs),
        so that `BackupAndRestore` then loads weights and optimizer slots
        into a model of the same shape, and `history` continues.
        """
        if not os.path.exists(self._state_path()):
            return
        with open(self._state_path()) as f:
            state = json.load(f)
        metadata = os.path.join(
            self._backup.backup_dir, "training_metadata.json"
        )
        if not os.path.exists(metadata):
            return
        with open(metadata) as f:
            saved_epoch = int(json.load(f)["epoch"])
        events = [e for e in state["history"] if e["epoch"] <= saved_epoch]
        # The model may already hold some of these events: the same model
        # object fit again after an interruption, or a model loaded from a
        # checkpoint. Only the events it lacks are replayed.
        done = self._events_in_model(state["history"])
        if done > len(events):
            raise ValueError(
                "The model has grown past the backup in "
                f"{self._backup.backup_dir!r}: it holds {done} growth events "
                f"and the backup ends after epoch {saved_epoch}, with "
                f"{len(events)}. Resume with a model built as at the start "
                "of the run; `BackupAndRestore` then loads the backup into it."
            )
        for event in events[done:]:
            grow_model(self.model, event["plan"], scale=self.scale)
        self.history = events
        self._initial_lr = state.get("initial_lr")
        if self.verbose and events:
            print(
                f"GrowthCallback: regrew {len(events)} events (to "
                f"{self.model.count_params():,} parameters) from the backup "
                f"in {self._backup.backup_dir!r}."
            )

    def _events_in_model(self, events) -> int:
        """How many of `events`, from the first, the model's growth rounds
        are; raises where they are none of those prefixes."""
        layers = growable_layer_map(self.model)
        have = {
            k: [sorted(np.asarray(r).tolist()) for r in layer.growth_rounds]
            for k, layer in layers.items()
        }
        expected = {k: [] for k in layers}
        for done in range(len(events) + 1):
            if expected == have:
                return done
            if done < len(events):
                for key, indices in events[done]["plan"].items():
                    if len(indices) and key in expected:
                        expected[key].append(
                            sorted(np.asarray(indices).tolist())
                        )
        raise ValueError(
            "The model's growth rounds are not those recorded in "
            f"{self._state_path()!r} (by the GrowthCallback of the run "
            "being resumed): resume with a model built as at the start of "
            "that run. Received: a model with "
            f"{sum(map(len, have.values()))} growth rounds in its layers."
        )

    # -------------------------------------------------------------- scores
    def compute_scores(self) -> dict[str, np.ndarray]:
        """Per-neuron scores of the growable layers for one event.

        Subclasses may override this to supply other scores (most negative
        grows first, negative means eligible). `criterion="random"` uses
        only the scores' lengths.

        Returns:
            `{layer_name: 1-D array of length units}` in layer order.
        """
        layers = self._growable()
        names = list(layers)
        if self.criterion == "random":
            return {key: np.zeros(layer.units) for key, layer in layers.items()}
        from keras_depthhet import splitting

        data = self._analysis_batches()
        if self.criterion == "splitting":
            scores = splitting.splitting_eigenvalues(
                self.model,
                data,
                num_batches=self.analysis_batches,
                layers=names,
                verbose=0,
            )
        else:
            scores = splitting.gradient_proxy(
                self.model,
                data,
                num_batches=self.analysis_batches,
                layers=names,
            )
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
        return [(b.x, b.y, b.sample_weight) for b in self._recent.batches()]

    # --------------------------------------------------------------- event
    def _budget(self, params: int) -> float:
        budget = float(self.param_budget)
        if self.budget_schedule == "lr":
            optimizer = self.model.optimizer
            if self._initial_lr is None:  # plan_growth before any fit
                self._initial_lr = _learning_rate(optimizer)
            peak = _peak_learning_rate(optimizer, self._initial_lr)
            budget *= _learning_rate(optimizer) / peak
        if self.target_params is not None:
            budget = min(budget, self.target_params - params)
        return budget

    def _target_reached(self, params: int, costs: dict) -> bool:
        return (
            self.target_params is not None
            and params + min(costs.values()) > self.target_params
        )

    def plan_growth(self, epoch: int) -> dict | None:
        """Decides the growth event after epoch `epoch`, without growing.

        Scores the neurons of the current model (`compute_scores`) and
        selects them with `select_neurons` within this event's budget
        (`param_budget`, scaled by the learning rate with
        `budget_schedule="lr"`, capped by `target_params`; event `k` uses
        seed `seed + k`). The model is left untouched: `on_epoch_end`
        grows it in place with `grow_model`, `fit_with_growth` rebuilds it
        with `rebuild_grown_model`. The callback must have a model
        (`set_model`) and have seen `on_train_begin`.

        Args:
            epoch: The epoch (counting from 1) whose end the event follows.

        Returns:
            `None` when no neuron fits under `target_params` (no event),
            else a dict with `"plan"` (`{layer_name: neuron indices}`,
            empty when nothing is eligible within the budget) and the
            event's fields known before growth: `"epoch"`,
            `"params_before"`, `"budget"`, `"neurons"` (count per layer),
            `"criterion"` and, unless `criterion="random"`, `"scores"`
            (per layer: min, median, number negative, number of neurons).

        Example:

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
        if self._target_reached(params, costs):
            return None
        budget, scores = self._agreed_budget_and_scores(params)
        plan = {}
        if budget >= min(costs.values()):
            seed = None if self.seed is None else self.seed + len(self.history)
            plan = select_neurons(
                scores,
                costs,
                param_budget=budget,
                layer_threshold=self.layer_threshold,
                criterion=self.criterion,
                budget_split=self.budget_split,
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
                name: _summary(np.asarray(values))
                for name, values in scores.items()
            }
        return decision

    def _agreed_budget_and_scores(self, params: int) -> tuple[float, dict]:
        """The event's budget and scores; in a multi-worker run, the
        chief's on every worker (`keras_depthhet.distributed.workers`)."""
        workers = self._workers
        if workers is None or workers.is_chief:
            budget, scores = self._budget(params), self.compute_scores()
        else:  # Placeholders for the chief's numbers: no analysis here.
            budget = 0.0
            scores = {k: np.zeros(v.units) for k, v in self._growable().items()}
        if workers is None:
            return budget, scores
        from keras_depthhet.distributed.workers import chief_decides

        return chief_decides(workers, budget, scores)

    def _grow(self, epoch: int) -> dict | None:
        decision = self.plan_growth(epoch)
        if decision is None:
            return None
        plan = decision.pop("plan")
        before = list(self.model.weights)
        pairs = {
            id(layer): dict(layer._growth)
            for layer in self._growable().values()
        }
        added = grow_model(self.model, plan, scale=self.scale)
        for callback in self._early_stopping:
            if getattr(callback, "best_weights", None) is not None:
                callback.best_weights = self._grown_weights(
                    before, pairs, callback.best_weights
                )
        return self._event(decision, plan, added)

    def _event(self, decision: dict, plan: dict, added: int) -> dict:
        """The record of an event: `decision` completed once grown by
        `plan` (in place, or by `fit_with_growth`'s rebuild)."""
        return {
            **decision,
            "plan": {name: [int(i) for i in idx] for name, idx in plan.items()},
            "params_after": int(self.model.count_params()),
            "params_added": int(added),
            "total_grown": {
                key: layer.num_grown for key, layer in self._growable().items()
            },
        }

    def _grown_weights(self, before: list, pairs: dict, values: list) -> list:
        """`values` of the weights `before` growth, as the grown model's.

        New pairs get zero-sum values from the kernel and bias in `values`
        (as `grow` initialises them), so the result computes what `values`
        computed before growth: what `EarlyStopping` restores. `pairs`
        holds each layer's growth variables before growth
        (`{id(layer): {suffix: variable}}`), which a grown layer's wider
        ones replace: their values in `values` fill the first columns.
        """
        index = {id(v): i for i, v in enumerate(before)}
        new = {}
        for layer in self._growable().values():
            growth = layer._growth
            if not growth or all(id(v) in index for v in growth.values()):
                continue
            saved = {
                suffix: np.asarray(values[index[id(variable)]])
                for suffix, variable in pairs.get(id(layer), {}).items()
            }
            bias = values[index[id(layer.bias)]] if layer.use_bias else None
            widened = layer._growth_values(
                saved,
                np.asarray(values[index[id(layer.kernel)]]),
                None if bias is None else np.asarray(bias),
                self.scale,
            )
            for suffix, variable in growth.items():
                new[id(variable)] = widened[suffix]
        return [
            values[index[id(v)]] if id(v) in index else new[id(v)]
            for v in self.model.weights
        ]

    def _writes_files(self) -> bool:
        """Whether this worker writes logs and backups (the chief does)."""
        return self._workers is None or self._workers.is_chief

    def _report(self, event: dict) -> None:
        self.history.append(event)
        if not self._writes_files():
            return
        if self.log_path is not None:
            with open(self.log_path, "a") as f:
                f.write(json.dumps(event) + "\n")
        if not self.verbose:
            return
        epoch = event["epoch"]
        if not event["neurons"]:
            print(
                f"GrowthCallback: epoch {epoch}: no neuron eligible within "
                f"budget {event['budget']:,.0f}; no growth."
            )
            return
        line = (
            f"GrowthCallback: epoch {epoch}: grew "
            f"{sum(event['neurons'].values())} neurons in "
            f"{len(event['neurons'])} layers, parameters "
            f"{event['params_before']:,} -> {event['params_after']:,}"
        )
        if "scores" in event:
            lowest = min(s["min"] for s in event["scores"].values())
            line += f", lowest score {lowest:.3g}"
        print(line + ".")

    def on_epoch_end(self, epoch, logs=None):
        if self._recent is not None:
            self._recent.stop()
        if self.is_event_epoch(epoch + 1):
            event = self._grow(epoch + 1)
            if event is not None:
                self._report(event)
                if self._backup is not None and self._writes_files():
                    self._save_growth_state()
        log_num_params(self.model, logs)
