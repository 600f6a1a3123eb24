"""`plot_negative_eigenvalues` writes the paper's Figure 2 as a PNG."""

import sys

import numpy as np
import pytest

from training.eigenvalue_plot import (
    Y_LABEL,
    layer_type,
    negative_eigenvalues_figure,
    plot_negative_eigenvalues,
)

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@pytest.fixture
def eigenvalues(rng):
    return {f"block_0_{t}": rng.normal(size=12) for t in ("qkv", "mlp_fc1")}


def _panels(figure) -> dict:
    """Visible axes by layer name (the first line of their titles)."""
    return {
        ax.get_title().split("\n")[0]: ax
        for ax in figure.axes
        if ax.get_visible()
    }


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
    figure = negative_eigenvalues_figure(
        eigenvalues, layer="block_0_qkv", other=later
    )
    first, last = _panels(figure).values()
    assert first.get_title().startswith("block_0_qkv: first event")
    # Two moments of one layer: one vertical scale, down to the lowest.
    assert first.get_ylim() == last.get_ylim()
    assert first.get_ylim()[0] < later["block_0_qkv"].min() < 0


def test_all_layers_and_returned_pairs(tmp_path, eigenvalues, rng):
    pairs = {n: (v, rng.normal(size=(12, 4))) for n, v in eigenvalues.items()}
    path = plot_negative_eigenvalues(pairs, tmp_path / "all.png")
    assert path.read_bytes()[:8] == PNG_SIGNATURE


def _vit_scores(rng, depth=3):
    scores = {}
    for block in range(depth):
        for kind, units in (("attn_qkv", 24), ("attn_proj", 8)):
            # Deeper blocks are steeper, so each panel has its own minimum.
            values = rng.normal(size=units) * (block + 1)
            scores[f"block_{block}_{kind}"] = values
    return scores


def test_words_title_chosen_marks_and_a_scale_per_layer_type(rng):
    scores = _vit_scores(rng)
    chosen = {"block_1_attn_qkv": [int(np.argmin(scores["block_1_attn_qkv"]))]}
    chosen["block_2_attn_proj"] = np.argsort(scores["block_2_attn_proj"])[:2]
    figure = negative_eigenvalues_figure(
        scores, chosen=chosen, title="digits_tiny: event after epoch 8"
    )
    assert figure._suptitle.get_text() == "digits_tiny: event after epoch 8"
    panels = _panels(figure)
    assert list(panels) == list(scores)
    for name, ax in panels.items():
        assert ax.get_xlabel() == "neuron index"
        count = int(np.sum(scores[name] < 0))
        marked = len(chosen.get(name, []))
        assert ax.get_title().split("\n")[1] == (
            f"{count} of {scores[name].size} negative, {marked} chosen"
        )
        # The chosen neurons carry a marker at their eigenvalue.
        points = [c.get_offsets() for c in ax.collections]
        if marked:
            (offsets,) = points
            np.testing.assert_array_equal(offsets[:, 0], chosen[name])
            np.testing.assert_allclose(
                offsets[:, 1], scores[name][chosen[name]]
            )
        else:
            assert not points
    labels = {ax.get_ylabel() for ax in panels.values()} - {""}
    assert labels == {Y_LABEL}
    assert "lambda" not in Y_LABEL and "min(" not in Y_LABEL
    legend_texts = [t.get_text() for t in figure.legends[0].get_texts()]
    assert legend_texts == ["chosen for growth"]
    for kind in ("qkv", "proj"):
        group = [ax for name, ax in panels.items() if layer_type(name) == kind]
        assert len({ax.get_ylim() for ax in group}) == 1
        lowest = min(v.min() for n, v in scores.items() if n.endswith(kind))
        assert group[0].get_ylim()[0] == pytest.approx(lowest * 1.08)
    # The two types are laid out in two columns.
    columns = {
        layer_type(name): ax.get_subplotspec().colspan.start
        for name, ax in panels.items()
    }
    assert columns == {"qkv": 0, "proj": 1}


def test_bad_input(tmp_path, eigenvalues):
    with pytest.raises(ValueError, match="Missing: \\['fc9'\\]"):
        plot_negative_eigenvalues(eigenvalues, tmp_path / "x.png", layer="fc9")
    with pytest.raises(ValueError, match="1-D arrays"):
        plot_negative_eigenvalues({"a": np.zeros((2, 2))}, tmp_path / "x.png")
    with pytest.raises(ValueError, match="`labels`"):
        plot_negative_eigenvalues(
            eigenvalues, tmp_path / "x.png", other=eigenvalues, labels=["a"]
        )
    with pytest.raises(ValueError, match="`chosen` must give indices"):
        plot_negative_eigenvalues(
            eigenvalues, tmp_path / "x.png", chosen={"block_0_qkv": [12]}
        )
    with pytest.raises(ValueError, match="`chosen` must be a dict"):
        plot_negative_eigenvalues(eigenvalues, tmp_path / "x.png", chosen=[1])


def test_clear_error_without_matplotlib(tmp_path, eigenvalues, monkeypatch):
    for name in list(sys.modules):
        if name == "matplotlib" or name.startswith("matplotlib."):
            monkeypatch.setitem(sys.modules, name, None)
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    with pytest.raises(ImportError, match="pip install matplotlib"):
        plot_negative_eigenvalues(eigenvalues, tmp_path / "x.png")
