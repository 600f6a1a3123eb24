"""The docs' formulas become MathML when the site is built.

`tools/mkdocs_math.py` is the mkdocs hook that does it; the browser check
(`tools/check_docs_site.py`) sees the result on every page.
"""

import importlib.util
from types import SimpleNamespace

import pytest
from mkdocs.exceptions import PluginError

from tests.subprocess_utils import REPO_ROOT


def _hook():
    path = REPO_ROOT / "tools" / "mkdocs_math.py"
    spec = importlib.util.spec_from_file_location("mkdocs_math", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


PAGE = SimpleNamespace(file=SimpleNamespace(src_uri="method.md"))


def test_inline_and_display_formulas_become_mathml():
    html = (
        '<p>score <span class="arithmatex">\\(\\lambda_{\\min}(S_i) &lt; 0'
        "\\)</span></p>"
        '<div class="arithmatex">\\[\nS_i = \\sum_{b,t} g_{b,t,i}\\,'
        "\\tilde x_{b,t}\\tilde x_{b,t}^\\top\n\\]</div>"
    )
    out = _hook().on_page_content(html, page=PAGE)
    assert "\\(" not in out and "\\[" not in out and "\\lambda" not in out
    assert out.count("<math") == 2
    assert '<math display="block">' in out
    assert "<mi>λ</mi>" in out and "<mo>&lt;</mo>" in out
    assert "∑" in out


def test_text_without_formulas_is_unchanged():
    html = "<p>No formula here: <code>\\(x\\)</code> stays code.</p>"
    assert _hook().on_page_content(html, page=PAGE) == html


def test_a_formula_that_cannot_be_rendered_fails_the_build():
    html = '<span class="arithmatex">\\(\\notacommand{x}\\)</span>'
    with pytest.raises(PluginError, match="method.md"):
        _hook().on_page_content(html, page=PAGE)
