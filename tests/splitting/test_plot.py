"""`plot_negative_eigenvalues` writes the paper's Figure 2 as a PNG."""

import sys

import numpy as np
import pytest

from keras_depthhet.splitting import plot_negative_eigenvalues

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@pytest.fixture
def eigenvalues(rng):
    return {f"block_0_{t}": rng.normal(size=12) for t in ("qkv", "mlp_fc1")}


def test_one_layer_two_moments(tmp_path, eigenvalues, rng):
    later = {name: v - 1.0 for name, v in eigenvalues.items()}
    path = plot_negative_eigenvalues(
        eigenvalues,
        tmp_path / "fig2.png",
        layer="block_0_qkv",
        other=later,
        title="Figure 2",
    )
    assert path.read_bytes()[:8] == PNG_SIGNATURE


def test_all_layers_and_returned_pairs(tmp_path, eigenvalues, rng):
    pairs = {n: (v, rng.normal(size=(12, 4))) for n, v in eigenvalues.items()}
    path = plot_negative_eigenvalues(pairs, tmp_path / "all.png")
    assert path.read_bytes()[:8] == PNG_SIGNATURE


def test_bad_input(tmp_path, eigenvalues):
    with pytest.raises(ValueError, match="Missing: \\['fc9'\\]"):
        plot_negative_eigenvalues(eigenvalues, tmp_path / "x.png", layer="fc9")
    with pytest.raises(ValueError, match="1-D arrays"):
        plot_negative_eigenvalues({"a": np.zeros((2, 2))}, tmp_path / "x.png")
    with pytest.raises(ValueError, match="`labels`"):
        plot_negative_eigenvalues(
            eigenvalues, tmp_path / "x.png", other=eigenvalues, labels=["a"]
        )


def test_clear_error_without_matplotlib(tmp_path, eigenvalues, monkeypatch):
    for name in list(sys.modules):
        if name == "matplotlib" or name.startswith("matplotlib."):
            monkeypatch.setitem(sys.modules, name, None)
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    with pytest.raises(ImportError, match="pip install matplotlib"):
        plot_negative_eigenvalues(eigenvalues, tmp_path / "x.png")
