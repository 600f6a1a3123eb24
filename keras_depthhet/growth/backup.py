"""Resuming a grown model from a backup: `GrowthBackupAndRestore`.

Keras's `BackupAndRestore` loads its backup into the freshly built model
of a resumed run, narrower than the grown one backed up; this subclass
regrows it first, from the growth events it keeps beside the backup.
"""

import json
import os

import keras
import numpy as np

from keras_depthhet.growth.callback import GrowthCallback
from keras_depthhet.growth.grow import grow_model
from keras_depthhet.layers.lookup import growable_layer_map
from keras_depthhet.utils.keras_internals import backup_epoch

GROWTH_STATE_FILE = "growth_state.json"
"""The file `GrowthBackupAndRestore` keeps in its `backup_dir`."""


class GrowthBackupAndRestore(keras.callbacks.BackupAndRestore):
    """`BackupAndRestore` that resumes a model grown by `GrowthCallback`.

    At each epoch's end it writes `growth`'s state (`get_state`) to
    `growth_state.json` in `backup_dir`, then backs the model up. When
    training starts it replays on the freshly built model the events of
    the epochs its backup holds, restores `growth`'s state, and then loads
    the backup: a killed run resumes with its grown model, optimizer state
    and `history`, to the result of an uninterrupted run. List it after
    `growth` in `callbacks` (it raises otherwise). In a multi-worker run
    every worker restores from `backup_dir` and only the chief writes it.

    Args:
        backup_dir: As for `keras.callbacks.BackupAndRestore`.
        growth: The `GrowthCallback` of the same `fit`.
        **kwargs: The other arguments of `keras.callbacks.BackupAndRestore`
            (`save_freq`, `double_checkpoint`, `delete_checkpoint`).

    Raises:
        ValueError: if `growth` is not a `GrowthCallback`.

    Examples:
        ```python
        model = vit(image_size=8, patch_size=4, num_channels=1, num_classes=10,
                    dim=16, depth=1, num_heads=2)
        model.compile("adam", keras.losses.SparseCategoricalCrossentropy(True))
        grower = GrowthCallback(interval=1, warmup=1, param_budget=200,
                                layer_threshold=1)
        backup = GrowthBackupAndRestore("backup", grower)
        model.fit(np.random.rand(32, 8, 8, 1), np.random.randint(0, 10, 32),
                  epochs=2, verbose=0, callbacks=[grower, backup])
        len(grower.history)  # 2: a killed run resumes from "backup"
        ```
    """

    def __init__(self, backup_dir, growth, **kwargs):
        if not isinstance(growth, GrowthCallback):
            raise ValueError(
                "Argument `growth` must be the `GrowthCallback` of the same "
                f"`fit`. Received: growth of type {type(growth).__name__}"
            )
        super().__init__(backup_dir, **kwargs)
        self.growth = growth
        growth.backup = self
        self._growth_begins_seen = 0
        self._writes_files = True

    def _state_path(self) -> str:
        return os.path.join(self.backup_dir, GROWTH_STATE_FILE)

    def on_train_begin(self, logs=None):
        growth = self.growth
        if (
            growth.model is not self.model
            or growth.train_begins <= self._growth_begins_seen
        ):
            raise ValueError(
                "List the `GrowthCallback` given as `growth` before "
                "`GrowthBackupAndRestore` in the `callbacks` of the same "
                "`fit`: the model must grow before it is backed up and be "
                "regrown before the backup is loaded. Received: a "
                "`GrowthCallback` that has not started this `fit`"
            )
        self._growth_begins_seen = growth.train_begins
        self._writes_files = growth.writes_files
        self._restore_growth()
        super().on_train_begin(logs)

    def on_epoch_end(self, epoch, logs=None):
        if not self._writes_files:
            return
        # First: a backup killed half-written then holds at most one event
        # too many, which `_restore_growth` leaves out by the backup's epoch.
        os.makedirs(self.backup_dir, exist_ok=True)
        temporary = self._state_path() + ".tmp"
        with open(temporary, "w") as f:
            json.dump(self.growth.get_state(), f)
        os.replace(temporary, self._state_path())
        super().on_epoch_end(epoch, logs)

    def on_train_batch_end(self, batch, logs=None):
        if self._writes_files:
            super().on_train_batch_end(batch, logs)

    def on_train_end(self, logs=None):
        if self._writes_files:
            super().on_train_end(logs)

    def _restore_growth(self) -> None:
        """Regrows the model by the events of the epochs the backup holds,
        which become `growth`'s `history`."""
        saved_epoch = backup_epoch(self)
        if saved_epoch is None or not os.path.exists(self._state_path()):
            return
        with open(self._state_path()) as f:
            state = json.load(f)
        events = [e for e in state["history"] if e["epoch"] <= saved_epoch]
        # The model may hold some already (fit again after an interruption,
        # or loaded from a checkpoint): only the others are replayed.
        done = self._events_in_model(state["history"])
        if done > len(events):
            raise ValueError(
                f"The model has grown past the backup in {self.backup_dir!r}: "
                f"it holds {done} growth events, the backup (to epoch "
                f"{saved_epoch}) {len(events)}. Resume with a model built as "
                "at the start of the run."
            )
        for event in events[done:]:
            grow_model(self.model, event["plan"], scale=self.growth.scale)
        self.growth.set_state({**state, "history": events})
        if self.growth.verbose and events:
            print(
                f"GrowthBackupAndRestore: regrew {len(events)} events (to "
                f"{self.model.count_params():,} parameters) from the backup "
                f"in {self.backup_dir!r}."
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
        for done, event in enumerate([*events, {"plan": {}}]):
            if expected == have:
                return done
            for key, indices in event["plan"].items():
                if len(indices) and key in expected:
                    expected[key].append(sorted(np.asarray(indices).tolist()))
        raise ValueError(
            "The model's growth rounds are not those recorded in "
            f"{self._state_path()!r} (by the run being resumed): resume "
            "with a model built as at the start of that run. Received: a "
            f"model with {sum(map(len, have.values()))} growth rounds."
        )
