"""Train one experiment: `python -m training.train --config FILE`.

Usage:

    python -m training.train [--config NAME_OR_FILE] [--set key=value ...]
                             [--workdir DIR] [--overwrite]
    python -m training.train --workdir DIR --resume

With no arguments it trains the offline default `digits_tiny` into
`runs/digits_tiny-<time>`. `--set model.architecture_from=RUN_DIR` (with
`growth.enabled=False`) trains the architecture that the finished run in
RUN_DIR grew, freshly initialised: the paper's Table 2 protocol (see
`architecture_model`). The arguments, the config (every value's type
and range, see `training.config.check_config`) and the work directory are
checked before Keras or a backend is imported, so `--help` and these
errors answer at once; the model's arguments, the dataset, the optional
packages and the distribution are checked next, still before the work
directory is created. A failure prints one line on stderr and exits with
status 2, leaving nothing behind.

The work directory holds `run.json`, which marks it as a run of this
command and records its status (`running`, `stopped` with the reason, or
`finished`). `--overwrite` replaces only such a directory, holding only
the files a run writes, and never the current directory, one of its
parents, the home directory or one of its parents.

On one device the run keeps a backup in `DIR/backup` at the end of every
epoch (Keras's `BackupAndRestore`, after `GrowthCallback`, which records
the growth events beside it). `--resume` continues an unfinished run
(stopped, interrupted or killed) from that backup with the config in
`DIR/config.json`: the model is regrown to the backed-up architecture, the
weights, optimizer state and growth history are restored, and training
goes on from the next epoch with the data an uninterrupted run would see,
to the same `metrics.csv`. A finished run is reported as finished; a
directory that is not a run of this command is refused.

With output to a terminal Keras shows a progress bar; otherwise (a log
file, a pipe, CI) one line per epoch. Growth events are printed on lines
of their own, after a blank line, starting with `>>> growth`.

The config's `distribution` chooses the runtime (see
`training.distributed_runtime`). With one device and `"auto"` (or with
`"none"`) the model trains in one `model.fit` with `GrowthCallback`
growing it in place; any other runtime (`"auto"` with several devices
picks TensorFlow's MirroredStrategy or JAX's DataParallel) builds the
model in the runtime's scope and trains with `fit_with_growth`, which
rebuilds the model at each growth event. Both leave the same files.
`"multi_worker_mirrored"` on TensorFlow, asked for by name, also applies
`keras_depthhet.distributed.enable_multi_worker_fit()`, which Keras's
`fit` needs on several workers.
"""

import argparse
import datetime
import functools
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

from training.config import (
    ARCHITECTURE_KEYS,
    ConfigError,
    apply_overrides,
    check_config,
    config_help,
    load_config,
    vit_arguments,
)

DEFAULT_CONFIG = "digits_tiny"
PROGRAM = "training.train"
RUN_FILE = "run.json"
"""The file that marks a directory as a run of `training.train` or
`training.compare`: `{"program", "status", "started", "updated", ...}`."""

RUN_FILES = (
    RUN_FILE,
    "config.json",
    "metrics.csv",
    "growth_events.jsonl",
    "growth_events.json",
    "model.keras",
    "params.png",
    "curves.png",
    "eigenvalues_first_event.png",
    "eigenvalues_last_event.png",
    "summary.json",
    "summary.md",
)
"""Every file a run of `training.train` writes in its work directory."""

METADATA_FILE = "training_metadata.json"  # written by BackupAndRestore
GROWTH_STATE_FILE = "growth_state.json"  # by GrowthBackupAndRestore
BACKUP_FILES = (METADATA_FILE, "latest.weights.h5", GROWTH_STATE_FILE)
"""Every file the run's backup (`GrowthBackupAndRestore`) writes."""


class WorkdirError(ValueError):
    """A work directory cannot be created, replaced or used."""


def user_errors() -> tuple[type[Exception], ...]:
    """Errors of the checking phase that are reported as one line.

    Imports `training.data` (and so TensorFlow): call it only once the
    light checks passed.
    """
    from training.data import DataNotPreparedError, MissingDependencyError

    return (
        ConfigError,
        WorkdirError,
        DataNotPreparedError,
        MissingDependencyError,
        ValueError,
        TypeError,
    )


def default_workdir(name: str) -> Path:
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    return Path("runs") / f"{name}-{stamp}"


# ------------------------------------------------------------ run directory
def read_run_file(workdir: str | Path) -> dict | None:
    """The run's `run.json`, or None when `workdir` has none written by
    `training.train` or `training.compare`."""
    try:
        info = json.loads((Path(workdir) / RUN_FILE).read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(info, dict) or info.get("program") not in (
        PROGRAM,
        "training.compare",
    ):
        return None
    return info


def write_run_file(workdir: Path, program: str, status: str, **fields):
    """Writes `run.json` with `status`, keeping the fields written before
    (a field given as None is removed)."""
    now = datetime.datetime.now().isoformat(timespec="seconds")
    info = read_run_file(workdir) or {"program": program, "started": now}
    info.update(fields, status=status, updated=now)
    info = {key: value for key, value in info.items() if value is not None}
    temporary = workdir / f"{RUN_FILE}.tmp"
    temporary.write_text(json.dumps(info, indent=2) + "\n")
    os.replace(temporary, workdir / RUN_FILE)


def _is_run_entry(entry: Path, program: str) -> bool:
    if entry.is_symlink():
        return False
    # `run.json` and `metrics.csv` are written to `NAME.tmp`, then renamed.
    name = entry.name.removesuffix(".tmp")
    if program == PROGRAM:
        return (name in RUN_FILES and entry.is_file()) or (
            name == "backup"
            and entry.is_dir()
            and all(
                child.is_file()
                and not child.is_symlink()
                and child.name.removesuffix(".tmp") in BACKUP_FILES
                for child in entry.iterdir()
            )
        )
    if name in (RUN_FILE, "comparison.md", "comparison.png"):
        return entry.is_file()
    info = read_run_file(entry) if entry.is_dir() else None
    return (
        info is not None
        and info["program"] == PROGRAM
        and not foreign_entries(entry)
    )


def foreign_entries(workdir: Path) -> list[str]:
    """Names in `workdir` that its run did not write (all of them when it
    has no `run.json`)."""
    info = read_run_file(workdir)
    names = sorted(entry.name for entry in workdir.iterdir())
    if info is None:
        return names
    return [
        name
        for name in names
        if not _is_run_entry(workdir / name, info["program"])
    ]


def _protected(path: Path) -> bool:
    """The current directory, the home directory or a parent of either."""
    path = path.resolve()
    return any(
        path == place or path in place.parents
        for place in (Path.cwd().resolve(), Path.home().resolve())
    )


def check_workdir(
    workdir: str | Path, overwrite: bool, program: str = PROGRAM
) -> None:
    """Checks that `workdir` can be created, or replaced with `overwrite`.

    Writes nothing: whether the directory can be created is probed by
    creating and removing a temporary directory beside it.

    Args:
        workdir: The run directory.
        overwrite: Whether an existing run directory of `program` may be
            replaced.
        program: `"training.train"` or `"training.compare"`.

    Raises:
        WorkdirError: when `workdir` is a file, cannot be created, exists
            without `overwrite`, or exists but is not a run directory of
            `program` holding only its own files.
    """
    workdir = Path(workdir)
    shown = repr(str(workdir))
    if workdir.is_symlink() or (workdir.exists() and not workdir.is_dir()):
        raise WorkdirError(
            f"Work directory {shown} exists and is not a directory; choose "
            "another --workdir."
        )
    if workdir.exists():
        _check_replaceable(workdir, overwrite, program)
        return
    parent = workdir.absolute().parent
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir():
        raise WorkdirError(
            f"Work directory {shown} cannot be created: {str(parent)!r} is "
            "a file."
        )
    try:
        os.rmdir(tempfile.mkdtemp(prefix=".workdir-check-", dir=parent))
    except OSError as error:
        raise WorkdirError(
            f"Work directory {shown} cannot be created in {str(parent)!r}: "
            f"{error.strerror}."
        ) from error


def _check_replaceable(workdir: Path, overwrite: bool, program: str) -> None:
    shown = repr(str(workdir))
    command = f"`python -m {program}`"
    if not overwrite:
        raise WorkdirError(
            f"Work directory {shown} exists; pass --overwrite to replace a "
            f"previous run of {command}, or choose another --workdir."
        )
    if _protected(workdir):
        raise WorkdirError(
            f"--overwrite never deletes the current directory, the home "
            f"directory or a parent of either. Received: --workdir {shown}"
        )
    info = read_run_file(workdir)
    if info is None or info["program"] != program:
        raise WorkdirError(
            f"Work directory {shown} is not a run directory of {command} "
            f"(no {RUN_FILE} of it); --overwrite replaces only those. "
            "Choose another --workdir."
        )
    foreign = foreign_entries(workdir)
    if foreign:
        raise WorkdirError(
            f"Work directory {shown} holds files that {command} did not "
            f"write: {foreign}; --overwrite leaves them alone. Move them "
            "or choose another --workdir."
        )


def check_resumable(workdir: str | Path) -> dict | None:
    """The config of the unfinished run in `workdir`, for `--resume`.

    Returns:
        The run's `config.json`, checked (`check_config`); None when the
        run finished.

    Raises:
        WorkdirError: when `workdir` is not a run directory of
            `training.train` or has no readable config.
        ConfigError: when its config does not pass `check_config`.
    """
    workdir = Path(workdir)
    shown = repr(str(workdir))
    info = read_run_file(workdir) if workdir.is_dir() else None
    if info is None or info["program"] != PROGRAM:
        raise WorkdirError(
            f"--resume continues a run of `python -m {PROGRAM}`; "
            f"{shown} is not one (no {RUN_FILE} of it)."
        )
    if info["status"] == "finished":
        return None
    try:
        config = json.loads((workdir / "config.json").read_text())
    except (OSError, ValueError) as error:
        raise WorkdirError(
            f"Run directory {shown} has no readable config.json, so it "
            f"cannot be resumed: {error}"
        ) from error
    try:
        check_config(config)
    except ConfigError as error:
        raise ConfigError(
            f"The config.json of {shown} does not pass the config check: "
            f"{error}"
        ) from error
    return config


def backed_up_epochs(workdir: str | Path) -> int:
    """Epochs held by the run's backup (`BackupAndRestore` writes the
    count in `backup/training_metadata.json`); 0 without one."""
    path = Path(workdir) / "backup" / METADATA_FILE
    try:
        return int(json.loads(path.read_text())["epoch"])
    except (OSError, ValueError, KeyError, TypeError):
        return 0


def resume_message(workdir: str | Path, epochs: int) -> str:
    """What `--resume` continues: the epochs the backup holds and the
    growth events its state replays."""
    backup = Path(workdir) / "backup"
    done = backed_up_epochs(workdir)
    try:
        state = json.loads((backup / GROWTH_STATE_FILE).read_text())
        grown = [int(event["epoch"]) for event in state["history"]]
    except (OSError, ValueError, KeyError, TypeError):
        grown = []
    replay = (
        f"replaying its {len(grown)} growth event(s) after epoch(s) "
        f"{', '.join(map(str, grown))} first"
        if grown
        else "no growth event to replay"
    )
    return (
        f"Resuming {workdir} after epoch {done} of {epochs} from its "
        f"backup, {replay}."
    )


def remove_run(workdir: Path) -> None:
    """Deletes a run directory that `check_workdir` accepted for
    `--overwrite`: the run's own files, then the empty directory."""
    for entry in workdir.iterdir():
        if entry.is_file():
            entry.unlink()
        elif read_run_file(entry) is not None:
            remove_run(entry)
        else:  # `backup/`, holding only the backup's own files
            for child in entry.iterdir():
                child.unlink()
            entry.rmdir()
    workdir.rmdir()


def create_workdir(workdir: Path, program: str = PROGRAM) -> list[Path]:
    """Replaces a previous run, creates `workdir` and its `run.json`.

    Returns:
        The directories created, innermost first (`workdir` and any
        missing parents), for `discard_workdir`.
    """
    if workdir.exists():
        remove_run(workdir)
    created = [workdir]
    created += [p for p in workdir.parents if not p.exists()]
    try:
        workdir.mkdir(parents=True)
    except OSError as error:
        raise WorkdirError(
            f"Work directory {str(workdir)!r} cannot be created: "
            f"{error.strerror}."
        ) from error
    write_run_file(workdir, program, "running")
    return created


def discard_workdir(created: list[Path]) -> None:
    """Removes a work directory whose run did not get through one epoch:
    the run's files and the directories `create_workdir` made (a directory
    that holds anything else is left)."""
    for entry in created[0].iterdir():
        if not _is_run_entry(entry, PROGRAM):
            continue
        if entry.is_dir():
            shutil.rmtree(entry)
        else:
            entry.unlink()
    for directory in created:
        try:
            directory.rmdir()
        except OSError:
            return


# ------------------------------------------------------------ architecture
def check_architecture_source(config: dict) -> Path | None:
    """The run whose grown architecture `config` trains from scratch.

    Reads no model: checks that `model.architecture_from` is the directory
    of a finished run of `training.train` with a `model.keras`, and that
    the run's blocks are shaped as this config's (`ARCHITECTURE_KEYS`).

    Returns:
        The run directory, or None when `model.architecture_from` is None.

    Raises:
        ConfigError: naming `model.architecture_from` (or the differing
            key) and the value received.
    """
    given = config["model"]["architecture_from"]
    if given is None:
        return None
    run = Path(given)
    expected = (
        "the directory of a finished run of `python -m training.train` "
        "(its run.json, config.json and model.keras)"
    )

    def refuse(why: str) -> ConfigError:
        return ConfigError(
            f"Config value `model.architecture_from` must be {expected}; "
            f"{why}. Received: model.architecture_from={given!r}"
        )

    info = read_run_file(run) if run.is_dir() else None
    if info is None or info["program"] != PROGRAM:
        raise refuse(f"it has no {RUN_FILE} of `training.train`")
    if info["status"] != "finished":
        raise refuse(f"its run is {info['status']}, not finished")
    if not (run / "model.keras").is_file():
        raise refuse("it has no model.keras")
    try:
        source = json.loads((run / "config.json").read_text())["model"]
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise refuse(f"its config.json cannot be read ({error})") from error
    for key in ARCHITECTURE_KEYS:
        value = config["model"][key]
        if source.get(key) != value:
            raise ConfigError(
                f"Config value `model.{key}` must equal that of the run in "
                f"model.architecture_from={given!r} ({source.get(key)!r}): "
                "the discovered blocks are trained as they grew. Received: "
                f"model.{key}={value!r}"
            )
    return run


def architecture_model(config: dict, run: str | Path):
    """A fresh model of `config` with the growth rounds of `run`'s model.

    The blocks' growth rounds (which neurons grew, round by round) are
    read from `run/model.keras` and applied to the model `config`
    describes, whose input stem and head may differ from the run's (say
    8x8 digits in 2x2 patches there, 28x28 MNIST in 7x7 patches here: 16
    tokens both); every weight is then drawn afresh with `config["seed"]`
    (`keras_depthhet.growth.fresh_model`).

    Raises:
        ValueError: if the run's model has other growable layers, or
            layers of other widths, than the model of `config`.
    """
    import keras

    from keras_depthhet.growth import fresh_model, grown_config
    from keras_depthhet.layers import growable_layer_map
    from keras_depthhet.models import vit

    source = keras.saving.load_model(Path(run) / "model.keras", compile=False)
    source_layers = growable_layer_map(source)
    base = vit(**vit_arguments(config["model"]), name=config["name"])
    layers = growable_layer_map(base)
    shapes = {n: (x.input_dim, x.units) for n, x in layers.items()}
    source_shapes = {
        n: (x.input_dim, x.units) for n, x in source_layers.items()
    }
    if shapes != source_shapes:
        differ = sorted(set(shapes.items()) ^ set(source_shapes.items()))
        raise ValueError(
            f"The model in {str(run)!r} has other growable layers (name, "
            "input and output widths) than the config's model, e.g. "
            f"{differ[:2]}. Received: model.architecture_from={str(run)!r}"
        )
    rounds = {n: x.growth_rounds for n, x in source_layers.items()}
    model_config = base.get_config()
    for r in range(max((len(v) for v in rounds.values()), default=0)):
        plan = {n: v[r] for n, v in rounds.items() if len(v) > r}
        model_config = grown_config(model_config, plan)
    del source, base
    return fresh_model(model_config, seed=config["seed"])


# ----------------------------------------------------------------- growth
def _recording_growth_callback(analysis_for, plot_event, **kwargs):
    """A `GrowthCallback` that analyses each event's own batches
    (`analysis_for(epoch)`) and, for the splitting criterion, calls
    `plot_event(epoch, scores, plan, first)` with the eigenvalues and the
    chosen neurons of every event."""
    from keras_depthhet.growth import GrowthCallback

    class RecordingGrowthCallback(GrowthCallback):
        scores = None

        def on_train_begin(self, logs=None):
            super().on_train_begin(logs)
            # A resumed run's history holds the events of the backed-up
            # epochs only; the log may have one more, from after it. The
            # history is complete once every callback has begun (the
            # backup, listed after this callback, restores it), so the log
            # is rewritten at the first epoch's start.
            self._rewrite_log = self.log_path is not None and os.path.exists(
                self.log_path
            )

        def on_epoch_begin(self, epoch, logs=None):
            if getattr(self, "_rewrite_log", False):
                self._rewrite_log = False
                lines = [json.dumps(event) + "\n" for event in self.history]
                Path(self.log_path).write_text("".join(lines))
            super().on_epoch_begin(epoch, logs)

        def compute_scores(self):
            self.scores = super().compute_scores()
            return self.scores

        def plan_growth(self, epoch):
            self.analysis_data = analysis_for(epoch)
            decision = super().plan_growth(epoch)
            if decision is not None and self.criterion == "splitting":
                first = not self.history
                plot_event(epoch, self.scores, decision["plan"], first)
            return decision

    return RecordingGrowthCallback(analysis_data=analysis_for(0), **kwargs)


def _show_grown_sizes(recorder, events) -> None:
    """Rewrites `metrics.csv` with each event epoch's grown size.

    `fit_with_growth` grows between `fit` segments, after the event
    epoch's row was written; in-place growth happens before it. This
    makes the two paths' files alike.
    """
    grown = {event["epoch"]: event["params_after"] for event in events}
    if not grown or not recorder.rows:
        return
    from training.results import write_metrics

    for row in recorder.rows:
        row["num_params"] = grown.get(row["epoch"], row["num_params"])
    write_metrics(recorder.path, recorder.rows)


def _check_last_eval_batch(num_test: int, batch_size: int, runtime) -> None:
    """JAX's `keras.distribution` splits every batch evenly among the
    replicas, the last (partial) evaluation batch included; TensorFlow's
    strategies take uneven batches."""
    last = num_test % batch_size
    if runtime.distribution is not None and last % runtime.num_replicas:
        raise ValueError(
            f"The {num_test} evaluation images in batches of {batch_size} "
            f"end with a batch of {last}, which does not split among the "
            f"{runtime.num_replicas} replicas of "
            f"distribution={runtime.name!r}; choose another "
            "train.batch_size or data.test_fraction. Received: "
            f"train.batch_size={batch_size}"
        )


def load_splits(data: dict, num_classes: int, seed: int):
    """`training.data.load_splits`, imported when first called."""
    from training.data import load_splits as load

    return load(data, num_classes, seed)


class Experiment:
    """A checked experiment: config, data, model and callbacks, ready to fit.

    Building one validates everything (the distribution included) and
    touches no file; `run()` then creates the work directory and trains.
    The config is expected to have passed `training.config.check_config`
    (as `load_config` and `apply_overrides` ensure).

    Args:
        config: A config dict (see `training/configs/common.py`).
        workdir: The run directory to create, or to continue.
        overwrite: Whether an existing run directory (see `check_workdir`)
            may be replaced.
        resume: Whether to continue the unfinished run in `workdir` from
            its backup (see `check_resumable`); `config` must be its
            config. Only on one device (`distribution` `"none"`, or
            `"auto"` with one device).
    """

    def __init__(
        self,
        config: dict,
        workdir: str | Path,
        overwrite=False,
        resume=False,
    ):
        import keras

        from training import recipe
        from training.distributed_runtime import (
            check_global_batch,
            resolve_distribution,
        )

        self.config = config
        self.workdir = Path(workdir)
        self.overwrite = overwrite
        self.resume = resume
        if not resume:
            check_workdir(self.workdir, overwrite)
        self.architecture_source = check_architecture_source(config)
        keras.utils.set_random_seed(config["seed"])
        model_config = config["model"]
        train = config["train"]
        if (
            config["distribution"] == "multi_worker_mirrored"
            and keras.backend.backend() == "tensorflow"
        ):
            from keras_depthhet.distributed import enable_multi_worker_fit

            enable_multi_worker_fit()
        self.runtime = resolve_distribution(config["distribution"])
        if resume and self.distributed:
            raise ValueError(
                "--resume continues runs on one device only: "
                "`fit_with_growth` rebuilds the model at each event, which "
                "Keras's BackupAndRestore does not follow. Received: "
                f"distribution={self.runtime.name!r}"
            )
        self.initial_epoch = backed_up_epochs(self.workdir) if resume else 0
        # The training data are batched by `batch_size`: the global batch.
        check_global_batch(None, train["batch_size"], self.runtime)
        self.splits = load_splits(
            config["data"], model_config["num_classes"], config["seed"]
        )
        _check_last_eval_batch(
            self.splits.num_test, train["batch_size"], self.runtime
        )
        self.steps = recipe.steps_per_epoch(train, self.splits.num_train)
        self.train_data = recipe.train_dataset(
            self.splits, config, self.initial_epoch
        )
        self.eval_data = recipe.eval_dataset(self.splits, config)
        self.growth = self._growth_callback() if self._grows else None
        self._build_model()

    def _build_model(self) -> None:
        import keras

        from keras_depthhet.models import vit
        from training import recipe

        config, train = self.config, self.config["train"]
        with self.runtime.scope():
            if self.architecture_source is None:
                self.model = vit(
                    **vit_arguments(config["model"]), name=config["name"]
                )
            else:
                self.model = architecture_model(
                    config, self.architecture_source
                )
            self.model.compile(
                optimizer=recipe.make_optimizer(train, self.steps),
                loss=recipe.make_loss(train),
                metrics=[
                    keras.metrics.CategoricalAccuracy(name="accuracy"),
                    keras.metrics.TopKCategoricalAccuracy(5, name="top5"),
                ],
            )

    def start_line(self) -> str:
        """What the run trains, printed before its first epoch: the data,
        the model, the growth events, and what Keras's `val_*` are."""
        epochs = self.config["train"]["epochs"]
        events = []
        if self.growth is not None:
            events = [
                e for e in range(1, epochs + 1) if self.growth.is_event_epoch(e)
            ]
        grows = (
            f", growth events after epoch{'s' * (len(events) > 1)} "
            f"{', '.join(map(str, events))}"
            if events
            else ", not growing"
        )
        return (
            f"{self.config['name']}: {self.model.count_params():,} "
            f"parameters{grows}; {epochs} epochs on "
            f"{self.splits.num_train:,} training images. Keras's val_* "
            f"metrics are on the {self.splits.num_test:,} test images (the "
            "table's Top-1 and Top-5)."
        )

    @property
    def distributed(self) -> bool:
        """Whether training goes through `fit_with_growth` (a runtime
        other than `"none"`)."""
        return self.runtime.name != "none"

    @property
    def _grows(self) -> bool:
        return self.config["growth"]["enabled"]

    def _growth_callback(self):
        from training import recipe, results

        options = dict(self.config["growth"])
        del options["enabled"]

        def plot_event(epoch, scores, plan, first):
            paths = ["last"] + (["first"] if first else [])
            for which in paths:
                results.plot_event_eigenvalues(
                    scores,
                    plan,
                    self.workdir / f"eigenvalues_{which}_event.png",
                    run=self.config["name"],
                    epoch=epoch,
                )

        return _recording_growth_callback(
            functools.partial(
                recipe.analysis_dataset, self.splits, self.config
            ),
            plot_event,
            **options,
            seed=self.config["seed"],
            log_path=str(self.workdir / "growth_events.jsonl"),
            verbose=0,
        )

    def run(self) -> dict:
        """Creates (or continues) the work directory, trains, evaluates,
        writes results.

        A new run that fails or is interrupted before its first epoch ends
        leaves no work directory; a later failure leaves the directory
        with `run.json` saying `stopped` and why, and its backup.

        Returns:
            The summary row (see `training.results.summary_row`) with the
            `workdir`, `plots` and `seconds` added.
        """
        from training import results

        start = time.perf_counter()
        metrics = self.workdir / "metrics.csv"
        if self.resume:
            print(
                resume_message(self.workdir, self.config["train"]["epochs"]),
                flush=True,
            )
            created = None
            kept = [
                row
                for row in (
                    results.read_metrics(metrics) if metrics.exists() else []
                )
                if row["epoch"] <= self.initial_epoch
            ]
            write_run_file(
                self.workdir,
                PROGRAM,
                "running",
                resumed_after_epoch=self.initial_epoch,
                reason=None,
            )
        else:
            created = create_workdir(self.workdir)
            kept = []
        recorder = results.MetricsRecorder(metrics, kept)
        print(self.start_line(), flush=True)
        try:
            if created:
                results.write_json(self.workdir / "config.json", self.config)
            row = self._train(recorder)
        except BaseException as error:
            if created and not recorder.rows:
                discard_workdir(created)
            else:
                reason = f"{type(error).__name__}: {error}".strip(": ")
                write_run_file(self.workdir, PROGRAM, "stopped", reason=reason)
            raise
        write_run_file(self.workdir, PROGRAM, "finished")
        row.update(
            workdir=str(self.workdir), seconds=time.perf_counter() - start
        )
        return row

    def _train(self, recorder) -> dict:
        from keras_depthhet.models.flops import count_flops
        from training import results

        base_params = self.model.count_params()
        base_flops = count_flops(self.model)
        log = [] if self.growth is None else [results.GrowthLog(self.growth)]
        with self.runtime.scope():
            if self.distributed:
                self._fit_with_growth([recorder, *log])
            else:
                self._fit_in_place([recorder, self._backup(), *log])
            scores = self.model.evaluate(
                self.eval_data, return_dict=True, verbose=0
            )
        self.model.save(self.workdir / "model.keras")
        events = list(self.growth.history) if self.growth else []
        _show_grown_sizes(recorder, events)
        results.write_json(self.workdir / "growth_events.json", events)
        plots = [self.workdir / "params.png", self.workdir / "curves.png"]
        name = self.config["name"]
        results.plot_params(recorder.rows, events, plots[0], name)
        results.plot_curves(recorder.rows, events, plots[1], name)
        plots += [
            path
            for path in (
                self.workdir / "eigenvalues_first_event.png",
                self.workdir / "eigenvalues_last_event.png",
            )
            if path.exists()
        ]
        row = results.summary_row(
            self.config["name"],
            base_params,
            self.model.count_params(),
            base_flops,
            count_flops(self.model),
            scores,
        )
        row.update(
            distribution=self.runtime.name,
            replicas=self.runtime.num_replicas,
        )
        results.write_summary(self.workdir, row, plots)
        row["plots"] = [str(p) for p in plots]
        return row

    def _backup(self):
        """A backup in `DIR/backup`, every epoch.

        With growth, `GrowthBackupAndRestore` (which regrows the model
        before the backup is loaded), listed after the growth callback (so
        that the model grows before it is saved); without, Keras's
        `BackupAndRestore`. Listed after
        the metrics recorder (so that `metrics.csv` never lacks an epoch
        the backup holds; rows after the backup are dropped on resume).
        Keras deletes it when training ends. With `double_checkpoint` the
        previous epoch's backup is kept beside the new one, so that a run
        killed while writing resumes from that one.
        """
        import keras

        from keras_depthhet.growth import GrowthBackupAndRestore

        directory = str(self.workdir / "backup")
        if self.growth is None:
            return keras.callbacks.BackupAndRestore(
                directory, double_checkpoint=True
            )
        return GrowthBackupAndRestore(
            directory, self.growth, double_checkpoint=True
        )

    def _fit_in_place(self, callbacks) -> None:
        growth = [] if self.growth is None else [self.growth]
        self.model.fit(
            self.train_data,
            epochs=self.config["train"]["epochs"],
            steps_per_epoch=self.steps,
            validation_data=self.eval_data,
            callbacks=growth + callbacks,
            shuffle=False,
            verbose=fit_verbosity(),
        )

    def _fit_with_growth(self, callbacks) -> None:
        from training.distributed import fit_with_growth

        run = fit_with_growth(
            lambda: self.model,
            self.train_data,
            self.eval_data,
            epochs=self.config["train"]["epochs"],
            growth=self.growth,
            distribution=self.runtime,
            callbacks=callbacks,
            steps_per_epoch=self.steps,
            shuffle=False,
            verbose=fit_verbosity(),
        )
        self.model = run.model


def fit_verbosity():
    """Keras's progress bar on a terminal, else one line per epoch."""
    if os.environ.get("CI") or not sys.stdout.isatty():
        return 2
    return "auto"


def parse_args(argv):
    parser = argparse.ArgumentParser(
        prog="python -m training.train",
        description=__doc__.split("\n")[0],
        epilog=config_help(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--config",
        help="config file, or the name of one in training/configs/ "
        f"(default: {DEFAULT_CONFIG})",
    )
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config value, e.g. --set train.epochs=10",
    )
    parser.add_argument(
        "--workdir", help="run directory (default: runs/<name>-<time>)"
    )
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help="replace an existing run directory of this command",
    )
    parser.add_argument(
        "--resume",
        action="store_true",
        help="continue the unfinished run in --workdir from its last "
        "backup, with the run's own config.json",
    )
    return parser.parse_args(argv)


def fail(error: Exception) -> int:
    message = " ".join(str(error).split())
    print(f"error: {message}", file=sys.stderr)
    return 2


def _resume_target(args) -> tuple[dict | None, Path]:
    """The config and work directory of `--resume` (config None: the run
    finished)."""
    given = [
        flag
        for flag, value in (
            ("--config", args.config),
            ("--set", args.set),
            ("--overwrite", args.overwrite),
        )
        if value
    ]
    if given or not args.workdir:
        raise WorkdirError(
            "--resume takes the run's directory, --workdir DIR, and nothing "
            "else: the run continues with its own config.json. Received: "
            f"{' '.join(given) or 'no --workdir'}"
        )
    workdir = Path(args.workdir)
    return check_resumable(workdir), workdir


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        if args.resume:
            config, workdir = _resume_target(args)
            if config is None:
                print(
                    f"Run directory {str(workdir)!r} holds a finished run; "
                    f"nothing to resume. Results: {workdir / 'summary.md'}"
                )
                return 0
        else:
            config = load_config(args.config or DEFAULT_CONFIG)
            config = apply_overrides(config, args.set)
            check_architecture_source(config)
            workdir = Path(args.workdir or default_workdir(config["name"]))
            check_workdir(workdir, args.overwrite)
    except (ConfigError, WorkdirError) as error:
        return fail(error)
    try:
        experiment = Experiment(
            config, workdir, args.overwrite, resume=args.resume
        )
    except user_errors() as error:
        return fail(error)
    try:
        row = experiment.run()
    except BaseException as error:
        status = (read_run_file(workdir) or {}).get("status")
        if status == "stopped" and not experiment.distributed:
            print(
                f"\nThe run stopped ({type(error).__name__}); "
                f"{str(workdir)!r} keeps what it had written. Continue it "
                f"with: python -m training.train --workdir {workdir} --resume",
                file=sys.stderr,
            )
        if isinstance(error, KeyboardInterrupt):
            return 130
        raise
    from training import results

    print(results.markdown_table([row]))
    print(f"Run directory: {row['workdir']}")
    for plot in row["plots"]:
        print(f"Plot: {plot}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
