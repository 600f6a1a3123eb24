"""Growth versus its uniform counterpart: `python -m training.compare`.

Usage:

    python -m training.compare [--config NAME_OR_FILE] [--set key=value ...]
                               [--workdir DIR] [--overwrite]

Trains the config (growing from the reduced model) and its uniform
counterpart (full widths, no growth; `configs.common.uniform_counterpart`)
on the same data with the same seed and the same overrides, one after the
other, into `DIR/<name>` and `DIR/<name>_uniform`; then prints and saves
`DIR/comparison.md`, a table shaped like the paper's Table 1, and lists the
plots. With no arguments it compares on the offline default `digits_tiny`
(about four minutes on 2 CPU cores).
"""

import argparse
import datetime
import shutil
import sys
import time
from pathlib import Path

from training import results
from training.config import apply_overrides, load_config
from training.configs.common import uniform_counterpart
from training.train import (
    DEFAULT_CONFIG,
    USER_ERRORS,
    Experiment,
    check_workdir,
    fail,
)


def comparison_markdown(rows: list[dict]) -> str:
    """The comparison table and, below it, each run's plots."""
    text = "# Depth-heterogeneous growth vs uniform\n\n"
    text += results.markdown_table(rows) + "\n"
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
    check_workdir(workdir, overwrite)
    if not config["growth"]["enabled"]:
        raise ValueError(
            "training.compare needs a growing config (growth.enabled=True); "
            "the uniform run is derived from it."
        )
    configs = [config, uniform_counterpart(config)]
    return [Experiment(c, workdir / c["name"], overwrite=True) for c in configs]


def compare(experiments: list[Experiment], workdir: str | Path):
    """Runs the prepared experiments; writes `workdir/comparison.md`.

    Returns:
        The summary rows (grown first) and the path of `comparison.md`.
    """
    workdir = Path(workdir)
    if workdir.exists():
        shutil.rmtree(workdir)
    rows = []
    for experiment in experiments:
        row = experiment.run()
        row["root"] = str(workdir)
        rows.append(row)
    path = workdir / "comparison.md"
    path.write_text(comparison_markdown(rows))
    return rows, path


def parse_args(argv):
    parser = argparse.ArgumentParser(
        prog="python -m training.compare", description=__doc__.split("\n")[0]
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
        "--overwrite", action="store_true", help="replace an existing workdir"
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
        experiments = prepare(config, workdir, args.overwrite)
    except USER_ERRORS as error:
        return fail(error)
    rows, path = compare(experiments, workdir)
    print()
    print(results.markdown_table(rows))
    print(f"Comparison: {path}")
    for row in rows:
        for plot in row["plots"]:
            print(f"Plot ({row['name']}): {plot}")
    print(f"Total time: {time.perf_counter() - start:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
