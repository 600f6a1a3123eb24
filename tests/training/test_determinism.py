"""The main job is reproducible: same seed, same backend, same numbers."""

import pytest

from training import compare, train

pytestmark = pytest.mark.integration

TINY = [
    "--set",
    "distribution='none'",
    "--set",
    "train.epochs=3",
    "--set",
    "train.steps_per_epoch=2",
    "--set",
    "model.depth=1",
    "--set",
    "growth.warmup=1",
    "--set",
    "growth.interval=2",
    "--set",
    "growth.layer_threshold=0",
    "--set",
    "growth.analysis_batches=1",
]
"""`training.compare` on three short epochs of a one-block ViT, growth
events after epochs 1 and 3."""

RECORDS = ("metrics.csv", "growth_events.json", "summary.json")
"""Per-run files that hold every figure of the comparison table: the
per-epoch metrics, the neurons each event chose, the final row."""


def _records(workdir):
    return {
        (run, name): (workdir / run / name).read_bytes()
        for run in ("digits_tiny", "digits_tiny_uniform")
        for name in RECORDS
    }


def _compare(workdir, seed):
    argv = ["--workdir", str(workdir), "--set", f"seed={seed}", *TINY]
    assert compare.main(argv) == 0
    return _records(workdir)


@pytest.mark.slow
def test_the_same_seed_gives_the_same_comparison(tmp_path, capsys):
    first = _compare(tmp_path / "first", 3)
    second = _compare(tmp_path / "second", 3)
    assert b'"params_added"' in first["digits_tiny", "growth_events.json"]
    for key, data in first.items():
        assert second[key] == data, key
    # The seed reaches the numbers: the growing run under another one
    # (`training.train`, the comparison's first half) differs.
    other = tmp_path / "other"
    argv = ["--workdir", str(other), "--set", "seed=4", *TINY]
    assert train.main(argv) == 0
    metrics = (other / "metrics.csv").read_bytes()
    assert metrics.count(b"\n") == first["digits_tiny", "metrics.csv"].count(
        b"\n"
    )
    assert metrics != first["digits_tiny", "metrics.csv"]
    capsys.readouterr()
