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
"""

import argparse
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


class Experiment:
    """A checked experiment: config, data, model and callbacks, ready to fit.

    Building one validates everything and touches no file; `run()` then
    creates the work directory and trains.

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
        self.splits = load_splits(
            config["data"], model_config["num_classes"], config["seed"]
        )
        self.model = vit(**model_config, name=config["name"])
        train = config["train"]
        self.steps = recipe.steps_per_epoch(train, self.splits.num_train)
        self.train_data = recipe.train_dataset(self.splits, config)
        self.eval_data = recipe.eval_dataset(self.splits, config)
        self.growth = self._growth_callback() if self._grows else None
        self.model.compile(
            optimizer=recipe.make_optimizer(train, self.steps),
            loss=recipe.make_loss(train),
            metrics=[
                keras.metrics.CategoricalAccuracy(name="accuracy"),
                keras.metrics.TopKCategoricalAccuracy(5, name="top5"),
            ],
        )

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
        callbacks = [c for c in (self.growth, recorder) if c is not None]
        self.model.fit(
            self.train_data,
            epochs=self.config["train"]["epochs"],
            steps_per_epoch=self.steps,
            validation_data=self.eval_data,
            callbacks=callbacks,
            shuffle=False,
            verbose=2 if os.environ.get("CI") else "auto",
        )
        scores = self.model.evaluate(
            self.eval_data, return_dict=True, verbose=0
        )
        self.model.save(self.workdir / "model.keras")
        events = list(self.growth.history) if self.growth else []
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
        results.write_summary(self.workdir, row, plots)
        row.update(
            workdir=str(self.workdir),
            plots=[str(p) for p in plots],
            seconds=time.perf_counter() - start,
        )
        return row


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
