"""Train one experiment: `python -m training.train --config FILE`.

Usage:

    python -m training.train [--config NAME_OR_FILE] [--set key=value ...]
                             [--workdir DIR] [--overwrite]

With no arguments it trains the offline default `digits_tiny` into
`runs/digits_tiny-<time>`. Everything that can be checked before
training (config file and keys, the model's arguments, the dataset, the
optional packages, the work directory) is checked before the work
directory is created; a failure then prints one line on stderr and exits
with status 2.

The config's `distribution` chooses the runtime (see
`training.distributed_runtime`). With one device and `"auto"` (or with
`"none"`) the model trains in one `model.fit` with `GrowthCallback`
growing it in place; any other runtime (`"auto"` with several devices
picks TensorFlow's MirroredStrategy or JAX's DataParallel) builds the
model in the runtime's scope and trains with `fit_with_growth`, which
rebuilds the model at each growth event. Both leave the same files.
"""

import argparse
import csv
import dataclasses
import datetime
import os
import shutil
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402

from keras_depthhet.models import vit  # noqa: E402
from keras_depthhet.models.flops import count_flops  # noqa: E402
from training import recipe, results  # noqa: E402
from training.config import ConfigError, apply_overrides, load_config  # noqa: E402
from training.data import (  # noqa: E402
    DataNotPreparedError,
    MissingDependencyError,
    load_splits,
)
from training.distributed import fit_with_growth  # noqa: E402
from training.distributed_runtime import (  # noqa: E402
    check_global_batch,
    resolve_distribution,
)

DEFAULT_CONFIG = "digits_tiny"
USER_ERRORS = (
    ConfigError,
    DataNotPreparedError,
    MissingDependencyError,
    FileExistsError,
    ValueError,
    TypeError,
)
"""Errors of the checking phase that are reported as one line."""


def default_workdir(name: str) -> Path:
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    return Path("runs") / f"{name}-{stamp}"


def check_workdir(workdir: Path, overwrite: bool) -> None:
    if workdir.exists() and not overwrite:
        raise FileExistsError(
            f"Work directory {str(workdir)!r} exists; pass --overwrite to "
            "replace it or choose another --workdir."
        )


def _score_recording_callback_class():
    from keras_depthhet.growth import GrowthCallback

    class ScoreRecordingGrowthCallback(GrowthCallback):
        """`GrowthCallback` that keeps the first and latest event's scores.

        Its history holds only score summaries; the Figure-2 plots need the
        per-neuron eigenvalues of the first and the last event.
        """

        first_scores = None
        last_scores = None

        def compute_scores(self):
            scores = super().compute_scores()
            if self.first_scores is None:
                self.first_scores = scores
            self.last_scores = scores
            return scores

    return ScoreRecordingGrowthCallback


def _show_grown_sizes(recorder: results.MetricsRecorder, events) -> None:
    """Rewrites `metrics.csv` with each event epoch's grown size.

    `fit_with_growth` grows between `fit` segments, after the event
    epoch's row was written; in-place growth happens before it. This
    makes the two paths' files alike.
    """
    grown = {event["epoch"]: event["params_after"] for event in events}
    if not grown or not recorder.rows:
        return
    for row in recorder.rows:
        row["num_params"] = grown.get(row["epoch"], row["num_params"])
    columns = list(dict.fromkeys(k for r in recorder.rows for k in r))
    with recorder.path.open("w", newline="") as file:
        writer = csv.DictWriter(file, columns)
        writer.writeheader()
        writer.writerows(recorder.rows)


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


class Experiment:
    """A checked experiment: config, data, model and callbacks, ready to fit.

    Building one validates everything (the distribution included) and
    touches no file; `run()` then creates the work directory and trains.

    Args:
        config: A config dict (see `training/configs/common.py`).
        workdir: The run directory to create.
        overwrite: Whether an existing `workdir` may be replaced.
    """

    def __init__(self, config: dict, workdir: str | Path, overwrite=False):
        self.config = config
        self.workdir = Path(workdir)
        self.overwrite = overwrite
        check_workdir(self.workdir, overwrite)
        keras.utils.set_random_seed(config["seed"])
        model_config = config["model"]
        train = config["train"]
        self.runtime = resolve_distribution(config["distribution"])
        # The training data are batched by `batch_size`: the global batch.
        check_global_batch(None, train["batch_size"], self.runtime)
        self.splits = load_splits(
            config["data"], model_config["num_classes"], config["seed"]
        )
        _check_last_eval_batch(
            self.splits.num_test, train["batch_size"], self.runtime
        )
        self.steps = recipe.steps_per_epoch(train, self.splits.num_train)
        self.train_data = recipe.train_dataset(self.splits, config)
        self.eval_data = recipe.eval_dataset(self.splits, config)
        self.growth = self._growth_callback() if self._grows else None
        with self.runtime.scope():
            self.model = vit(**model_config, name=config["name"])
            self.model.compile(
                optimizer=recipe.make_optimizer(train, self.steps),
                loss=recipe.make_loss(train),
                metrics=[
                    keras.metrics.CategoricalAccuracy(name="accuracy"),
                    keras.metrics.TopKCategoricalAccuracy(5, name="top5"),
                ],
            )

    @property
    def distributed(self) -> bool:
        """Whether training goes through `fit_with_growth` (a runtime
        other than `"none"`)."""
        return self.runtime.name != "none"

    @property
    def _grows(self) -> bool:
        return bool(self.config["growth"]["enabled"])

    def _growth_callback(self):
        callback_class = _score_recording_callback_class()
        options = dict(self.config["growth"])
        del options["enabled"]
        # Splitting analysis sees un-mixed training images, so that the
        # loss whose curvature is measured is the plain classification loss.
        shuffled = self.splits.train.shuffle(
            min(self.splits.num_train, 10_000), seed=self.config["seed"]
        )
        analysis = recipe.eval_dataset(
            dataclasses.replace(
                self.splits, test=shuffled, num_test=self.splits.num_train
            ),
            self.config,
        )
        return callback_class(
            **options,
            analysis_data=analysis,
            seed=self.config["seed"],
            log_path=str(self.workdir / "growth_events.jsonl"),
            verbose=1,
        )

    def run(self) -> dict:
        """Creates the work directory, trains, evaluates, writes results.

        Returns:
            The summary row (see `training.results.summary_row`) with the
            `workdir`, `plots` and `seconds` added.
        """
        start = time.perf_counter()
        if self.workdir.exists():
            shutil.rmtree(self.workdir)
        self.workdir.mkdir(parents=True)
        results.write_json(self.workdir / "config.json", self.config)
        base_params = self.model.count_params()
        base_flops = count_flops(self.model)
        recorder = results.MetricsRecorder(self.workdir / "metrics.csv")
        with self.runtime.scope():
            if self.distributed:
                self._fit_with_growth(recorder)
            else:
                self._fit_in_place(recorder)
            scores = self.model.evaluate(
                self.eval_data, return_dict=True, verbose=0
            )
        self.model.save(self.workdir / "model.keras")
        events = list(self.growth.history) if self.growth else []
        _show_grown_sizes(recorder, events)
        results.write_json(self.workdir / "growth_events.json", events)
        plots = [self.workdir / "params.png", self.workdir / "curves.png"]
        results.plot_params(recorder.rows, events, plots[0])
        results.plot_curves(recorder.rows, events, plots[1])
        plots += results.plot_event_eigenvalues(
            getattr(self.growth, "first_scores", None),
            getattr(self.growth, "last_scores", None),
            self.workdir,
        )
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
        row.update(
            workdir=str(self.workdir),
            plots=[str(p) for p in plots],
            seconds=time.perf_counter() - start,
        )
        return row

    def _fit_in_place(self, recorder) -> None:
        callbacks = [c for c in (self.growth, recorder) if c is not None]
        self.model.fit(
            self.train_data,
            epochs=self.config["train"]["epochs"],
            steps_per_epoch=self.steps,
            validation_data=self.eval_data,
            callbacks=callbacks,
            shuffle=False,
            verbose=_fit_verbosity(),
        )

    def _fit_with_growth(self, recorder) -> None:
        run = fit_with_growth(
            lambda: self.model,
            self.train_data,
            self.eval_data,
            epochs=self.config["train"]["epochs"],
            growth=self.growth,
            distribution=self.runtime,
            callbacks=[recorder],
            steps_per_epoch=self.steps,
            shuffle=False,
            verbose=_fit_verbosity(),
        )
        self.model = run.model


def _fit_verbosity():
    return 2 if os.environ.get("CI") else "auto"


def parse_args(argv):
    parser = argparse.ArgumentParser(
        prog="python -m training.train", description=__doc__.split("\n")[0]
    )
    parser.add_argument(
        "--config",
        default=DEFAULT_CONFIG,
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
        help="replace an existing work directory",
    )
    return parser.parse_args(argv)


def fail(error: Exception) -> int:
    message = " ".join(str(error).split())
    print(f"error: {message}", file=sys.stderr)
    return 2


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        config = apply_overrides(load_config(args.config), args.set)
        workdir = args.workdir or default_workdir(config["name"])
        experiment = Experiment(config, workdir, args.overwrite)
    except USER_ERRORS as error:
        return fail(error)
    row = experiment.run()
    print(results.markdown_table([row]))
    print(f"Run directory: {row['workdir']}")
    for plot in row["plots"]:
        print(f"Plot: {plot}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
