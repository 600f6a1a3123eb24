"""mkdocs hook: the site's formulas become MathML when the site is built.

`pymdownx.arithmatex` (generic mode) leaves each formula as TeX in
`<span class="arithmatex">\\(...\\)</span>` or
`<div class="arithmatex">\\[...\\]</div>`. This hook replaces the TeX with
MathML from `math-core`, which browsers draw natively, so a page shows its
formulas with no script and no font fetched from another host (offline
too). TeX that `math-core` cannot convert fails the build, naming the page.
"""

import html
import re

import math_core
from mkdocs.exceptions import PluginError

_INLINE = re.compile(r'<span class="arithmatex">\\\((.*?)\\\)</span>', re.S)
_BLOCK = re.compile(r'<div class="arithmatex">\\\[(.*?)\\\]</div>', re.S)
_CONVERTER = math_core.LatexToMathML()


def _to_mathml(tex: str, display: bool, page) -> str:
    try:
        return _CONVERTER.convert_with_local_state(
            html.unescape(tex).strip(), displaystyle=display
        )
    except math_core.LatexError as error:
        raise PluginError(
            f"{page.file.src_uri}: cannot render the formula {tex!r}: {error}"
        ) from error


def on_page_content(html_text: str, page, **kwargs) -> str:
    html_text = _BLOCK.sub(
        lambda m: (
            '<div class="arithmatex">'
            + _to_mathml(m.group(1), True, page)
            + "</div>"
        ),
        html_text,
    )
    return _INLINE.sub(
        lambda m: (
            '<span class="arithmatex">'
            + _to_mathml(m.group(1), False, page)
            + "</span>"
        ),
        html_text,
    )
