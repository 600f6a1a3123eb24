"""The Results page's figure: paired differences of top-1, with 95 % CIs.

Reads the "Paired differences" tables of the seeded replication reports
(`benchmarks/results/replication_mnist_seeded*.md`), recomputes each
mean and Student's t interval from the per-seed differences, checks them
against the table's own figures, and draws one row per difference.

    python -m benchmarks.results_figure [--out docs/assets/results_paired.png]
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path

import numpy as np
from scipy import stats

RESULTS = Path(__file__).resolve().parent / "results"
REPORTS = ("replication_mnist_seeded.md", "replication_mnist_seeded_aegh.md")
DEFAULT_OUT = (
    Path(__file__).resolve().parent.parent
    / "docs"
    / "assets"
    / "results_paired.png"
)
_ARM = re.compile(r"\(([a-h])\)")
# Short names of the arms for the figure, per report: the first report's
# proxy arm summed the bias gradient too; the second's is the authors'.
SHORT = {
    "a": "grown, splitting",
    "b": "uniform",
    "c": "reduced, no growth",
    "d": "grown, random",
    "e": "grown, proxy",
    "f": "a's architecture, from scratch",
    "g": "grown, splitting, by layer type",
    "h": "grown, proxy, by layer type",
}
PROXY = {
    "replication_mnist_seeded.md": "proxy with bias",
    "replication_mnist_seeded_aegh.md": "authors' proxy",
}


def paired_differences(text: str) -> list[dict]:
    """The rows of a report's "Paired differences" table.

    Each row: `label` (e.g. "a - b"), `mean` and `low`/`high` as the table
    prints them, and `per_seed`, the per-seed differences.
    """
    section = text.split("#### Paired differences", 1)[1].lstrip()
    table = section.split("\n\n", 1)[0].splitlines()[2:]  # no header
    rows = []
    for line in table:
        cells = [cell.strip() for cell in line.strip("|").split("|")]
        arms = [_ARM.search(side)[1] for side in cells[0].split(" - ")]
        low, high = (float(v) for v in cells[3].split(" to "))
        rows.append(
            {
                "label": f"{arms[0]} - {arms[1]}",
                "name": cells[0],
                "mean": float(cells[2]),
                "low": low,
                "high": high,
                "per_seed": np.array([float(v) for v in cells[6].split(",")]),
            }
        )
    return rows


def interval(per_seed: np.ndarray) -> tuple[float, float, float]:
    """Mean and Student's t 95 % interval of the per-seed differences."""
    mean = float(per_seed.mean())
    half = float(
        stats.t.ppf(0.975, per_seed.size - 1)
        * per_seed.std(ddof=1)
        / np.sqrt(per_seed.size)
    )
    return mean, mean - half, mean + half


def collect() -> list[dict]:
    """Every difference of the reports, recomputed and checked.

    The per-seed values are printed to 0.1 points, so the recomputed
    figures may differ from the table's by rounding (at most 0.05 points
    on the mean and a little more on the bounds).
    """
    rows = []
    for name in REPORTS:
        for row in paired_differences((RESULTS / name).read_text()):
            mean, low, high = interval(row["per_seed"])
            for ours, theirs in ((mean, "mean"), (low, "low"), (high, "high")):
                if abs(ours - row[theirs]) > 0.1:
                    raise ValueError(
                        f"{name}: {row['name']}: the {theirs} recomputed from "
                        f"the per-seed values is {ours:+.2f}, the table says "
                        f"{row[theirs]:+.2f}"
                    )
            first, second = row["label"].split(" - ")
            short = " - ".join(
                f"({arm}) " + SHORT[arm].replace("proxy", PROXY[name])
                for arm in (first, second)
            )
            rows.append({**row, "seeds": row["per_seed"].size, "short": short})
    return rows


def draw(rows: list[dict], out: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(10, 0.42 * len(rows) + 1.4))
    positions = np.arange(len(rows))[::-1]
    for y, row in zip(positions, rows, strict=True):
        axis.plot([row["low"], row["high"]], [y, y], color="tab:blue", lw=2)
        axis.plot(row["mean"], y, "o", color="tab:blue")
        axis.plot(row["per_seed"], np.full(row["seeds"], y), "|", color="grey")
    axis.axvline(0.0, color="black", lw=0.8)
    axis.set_yticks(
        positions,
        [f"{row['short']}  [{row['seeds']} seeds]" for row in rows],
        fontsize=8,
    )
    axis.set_xlabel(
        "top-1 difference, points (dot: mean, bar: 95 % CI, ticks: seeds)"
    )
    axis.set_title(
        "Paired differences of top-1, MNIST tiny ViT", fontsize=10
    )
    figure.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(out, dpi=100)
    plt.close(figure)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args(argv)
    print(draw(collect(), args.out))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
