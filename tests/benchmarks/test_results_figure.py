"""The Results page's figure is drawn from the seeded tables it cites."""

import numpy as np
import pytest
from scipy import stats

from benchmarks import results_figure

HEADER = (
    "| Difference of top-1 (points) | Seeds | Mean | 95 % CI | Half-width "
    "| SD | Per seed |\n|---|---:|---:|---|---:|---:|---|\n"
)
ROW = (
    "| (f) architecture of (a), from scratch - (b) uniform full width | 3 "
    "| +1.00 | {low} to {high} | 0 | 0 | +0.5, +1.0, +1.5 |\n"
)
TABLE = "#### Paired differences\n\n" + HEADER + ROW + "\n#### Next\n"


def test_rows_are_read_with_their_arms_and_seeds():
    half = stats.t.ppf(0.975, 2) * 0.5 / np.sqrt(3)
    text = TABLE.format(low=f"{1 - half:+.2f}", high=f"{1 + half:+.2f}")
    (row,) = results_figure.paired_differences(text)
    assert row["label"] == "f - b"  # not the "(a)" inside the name
    np.testing.assert_array_equal(row["per_seed"], [0.5, 1.0, 1.5])
    mean, low, high = results_figure.interval(row["per_seed"])
    assert mean == pytest.approx(1.0)
    assert (low, high) == pytest.approx((1 - half, 1 + half))


def test_every_committed_difference_recomputes_from_its_seeds():
    rows = results_figure.collect()
    assert len(rows) == 10
    assert {row["label"] for row in rows} >= {"a - b", "a - d", "g - h"}


def test_a_table_that_disagrees_with_its_seeds_is_refused(monkeypatch):
    text = TABLE.format(low="+5.00", high="+6.00")
    monkeypatch.setattr(
        results_figure, "REPORTS", ("replication_mnist_seeded.md",)
    )
    monkeypatch.setattr(
        results_figure.Path, "read_text", lambda self: text, raising=True
    )
    with pytest.raises(ValueError, match="the low recomputed"):
        results_figure.collect()


def test_the_figure_is_written(tmp_path):
    path = results_figure.draw(results_figure.collect(), tmp_path / "f.png")
    assert path.read_bytes().startswith(b"\x89PNG")
