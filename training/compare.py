"""Growth versus its uniform counterpart: `python -m training.compare`.

Usage:

    python -m training.compare [--config NAME_OR_FILE] [--set key=value ...]
                               [--workdir DIR] [--overwrite]

Trains the config (growing from the reduced model) and its uniform
counterpart (full widths, no growth; `configs.common.uniform_counterpart`)
on the same data with the same seed and the same overrides, one after the
other, into `DIR/<name>` and `DIR/<name>_uniform`; then prints and saves
`DIR/comparison.md`, a table shaped like the paper's Table 1, and
`DIR/comparison.png`, the two runs' test accuracy and parameters against
epochs on the same axes, and lists the plots. With no arguments it
compares on the offline default `digits_tiny` (see
`docs/guides/reproducing.md` for the measured time).

As with `training.train`, the arguments, the config and the work
directory are checked before Keras is imported; `--overwrite` replaces
only a previous comparison directory (its `run.json` says
`training.compare`) that holds nothing but the comparison's files; a
failure before the first epoch ends leaves no directory behind.
"""

import argparse
import datetime
import sys
import time
from pathlib import Path

from training.config import (
    ConfigError,
    apply_overrides,
    config_help,
    load_config,
)
from training.configs.common import uniform_counterpart
from training.train import (
    DEFAULT_CONFIG,
    RUN_FILE,
    Experiment,
    WorkdirError,
    check_workdir,
    create_workdir,
    discard_workdir,
    fail,
    user_errors,
    write_run_file,
)

PROGRAM = "training.compare"


def comparison_markdown(rows: list[dict]) -> str:
    """The comparison table and figure and, below them, each run's plots."""
    from training import results

    text = "# Depth-heterogeneous growth vs uniform\n\n"
    text += results.markdown_table(rows) + "\n"
    text += "![comparison](comparison.png)\n\n"
    for row in rows:
        text += f"## {row['name']}\n\n"
        for plot in row["plots"]:
            text += (
                f"![{Path(plot).stem}]({Path(plot).relative_to(row['root'])})\n"
            )
        text += "\n"
    return text


def prepare(
    config: dict, workdir: str | Path, overwrite: bool = False
) -> list[Experiment]:
    """Checks `config` and its uniform counterpart; writes nothing.

    Args:
        config: The growing experiment's config.
        workdir: Parent directory of the two runs and `comparison.md`.
        overwrite: Whether an existing `workdir` may be replaced.

    Returns:
        The two experiments, grown first, run into `workdir/<name>`.
    """
    workdir = Path(workdir)
    check_comparison(config, workdir, overwrite)
    configs = [config, uniform_counterpart(config)]
    return [Experiment(c, workdir / c["name"], overwrite=True) for c in configs]


def check_comparison(config: dict, workdir: Path, overwrite: bool) -> None:
    """The checks that need no backend: a growing config, a usable
    `workdir` (see `training.train.check_workdir`)."""
    if not config["growth"]["enabled"]:
        raise ConfigError(
            "training.compare needs a growing config (growth.enabled=True); "
            "the uniform run is derived from it."
        )
    check_workdir(workdir, overwrite, PROGRAM)


def compare(experiments: list[Experiment], workdir: str | Path):
    """Runs the prepared experiments; writes `workdir/comparison.md` and
    `workdir/comparison.png`.

    Returns:
        The summary rows (grown first) and the path of `comparison.md`.
    """
    from training import results

    workdir = Path(workdir)
    created = create_workdir(workdir, PROGRAM)
    rows = []
    try:
        for experiment in experiments:
            row = experiment.run()
            row["root"] = str(workdir)
            rows.append(row)
    except BaseException:
        if [entry.name for entry in workdir.iterdir()] == [RUN_FILE]:
            discard_workdir(created)
        else:
            write_run_file(workdir, PROGRAM, "stopped")
        raise
    results.plot_comparison(
        [
            (
                row["name"],
                results.read_metrics(Path(row["workdir"]) / "metrics.csv"),
                experiment.growth.history if experiment.growth else [],
            )
            for row, experiment in zip(rows, experiments, strict=True)
        ],
        workdir / "comparison.png",
    )
    path = workdir / "comparison.md"
    path.write_text(comparison_markdown(rows))
    write_run_file(workdir, PROGRAM, "finished")
    return rows, path


def parse_args(argv):
    parser = argparse.ArgumentParser(
        prog="python -m training.compare",
        description=__doc__.split("\n")[0],
        epilog=config_help(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--config",
        default=DEFAULT_CONFIG,
        help="the growing config: a file or a name in training/configs/ "
        f"(default: {DEFAULT_CONFIG})",
    )
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config value in both runs",
    )
    parser.add_argument(
        "--workdir",
        help="parent directory (default: runs/compare-<name>-<time>)",
    )
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help="replace an existing comparison directory of this command",
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    start = time.perf_counter()
    try:
        config = apply_overrides(load_config(args.config), args.set)
        stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
        default = Path("runs") / f"compare-{config['name']}-{stamp}"
        workdir = Path(args.workdir or default)
        check_comparison(config, workdir, args.overwrite)
    except (ConfigError, WorkdirError) as error:
        return fail(error)
    try:
        experiments = prepare(config, workdir, args.overwrite)
    except user_errors() as error:
        return fail(error)
    from training import results

    rows, path = compare(experiments, workdir)
    print()
    print(results.markdown_table(rows))
    print(f"Comparison: {path}")
    print(f"Plot (comparison): {path.parent / 'comparison.png'}")
    for row in rows:
        for plot in row["plots"]:
            print(f"Plot ({row['name']}): {plot}")
    print(f"Total time: {time.perf_counter() - start:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
