"""The docs' code as the doc tests see it: Markdown blocks, API objects.

Conventions, written in the Markdown just before a fenced block (blank
lines may separate them):

- `<!-- no-test: REASON -->` keeps the block from running; the reason is
  required. Every shell block (`bash`, `sh`, `console`) needs one.
- `<!-- test-setup:` on its own line, then Python code, then `-->`: code
  run just before the block, hidden from the reader (for instance small
  stand-ins for a data set the page assumes).

`python` blocks run in order, one namespace per file, so a page's later
blocks use what its earlier ones defined. `text` blocks show output or
formulas and are not code. A block without a language is an error.
"""

from __future__ import annotations

import contextlib
import io
import os
import re
from dataclasses import dataclass
from pathlib import Path

import griffe

from tests.subprocess_utils import REPO_ROOT

RUNNABLE = {"python"}
SHELL = {"bash", "sh", "shell", "console"}
DISPLAY = {"text"}
_FENCE = re.compile(r"^(\s*)(`{3,})\s*([\w+-]*)")
_NO_TEST = re.compile(r"^\s*<!--\s*no-test:(.*?)-->\s*$")
_SETUP_OPEN = re.compile(r"^\s*<!--\s*test-setup:\s*$")
DIRECTIVE = re.compile(r"^::: ([\w.]+)\s*$", re.M)


@dataclass
class Block:
    path: Path
    line: int  # 1-based line of the opening fence
    language: str
    code: str
    skip_reason: str | None  # None: no no-test comment
    setup: str

    @property
    def where(self) -> str:
        return f"{self.path.relative_to(REPO_ROOT)}:{self.line}"


def _comment_before(lines: list[str], index: int) -> tuple[str | None, str]:
    """The no-test reason and the setup code written above line `index`."""
    i = index - 1
    while i >= 0 and not lines[i].strip():
        i -= 1
    if i < 0:
        return None, ""
    match = _NO_TEST.match(lines[i])
    if match:
        return match.group(1).strip(), ""
    if lines[i].strip() == "-->":
        start = i - 1
        while start >= 0 and not _SETUP_OPEN.match(lines[start]):
            if "<!--" in lines[start]:
                return None, ""
            start -= 1
        if start >= 0:
            return None, "\n".join(lines[start + 1 : i]) + "\n"
    return None, ""


def markdown_blocks(path: Path) -> list[Block]:
    """Every fenced code block of a Markdown file, in order."""
    lines = path.read_text().splitlines()
    blocks = []
    index = 0
    while index < len(lines):
        match = _FENCE.match(lines[index])
        if not match:
            index += 1
            continue
        indent, fence, language = match.groups()
        end = index + 1
        closing = re.compile(rf"^{indent}{fence}\s*$")
        while end < len(lines) and not closing.match(lines[end]):
            end += 1
        body = [line[len(indent) :] for line in lines[index + 1 : end]]
        reason, setup = _comment_before(lines, index)
        blocks.append(
            Block(
                path=path,
                line=index + 1,
                language=language.lower(),
                code="\n".join(body) + "\n",
                skip_reason=reason,
                setup=setup,
            )
        )
        index = end + 1
    return blocks


def marking_problems(blocks: list[Block]) -> list[str]:
    """Blocks that neither run nor say why not."""
    problems = []
    for block in blocks:
        if not block.language:
            problems.append(f"{block.where}: a fenced block without language")
        elif block.skip_reason is not None and not block.skip_reason:
            problems.append(f"{block.where}: `no-test:` without a reason")
        elif block.language in SHELL and block.skip_reason is None:
            problems.append(
                f"{block.where}: a {block.language} block needs "
                "`<!-- no-test: reason -->` (shell blocks are not run)"
            )
        elif block.language not in RUNNABLE | SHELL | DISPLAY:
            problems.append(
                f"{block.where}: language {block.language!r} is neither run"
                " nor known"
            )
    return problems


def run_blocks(blocks: list[Block], workdir: Path) -> list[str]:
    """Runs the runnable blocks in order in one namespace, in `workdir`.

    Returns what each block printed (an empty string for blocks that did
    not run).
    """
    namespace: dict = {"__name__": "__doc_example__"}
    printed = []
    cwd = os.getcwd()
    os.chdir(workdir)
    try:
        for block in blocks:
            if block.language not in RUNNABLE or block.skip_reason is not None:
                printed.append("")
                continue
            out = io.StringIO()
            with contextlib.redirect_stdout(out):
                if block.setup:
                    exec(compile(block.setup, block.where, "exec"), namespace)
                # Padded so that tracebacks give the Markdown file's lines.
                code = "\n" * block.line + block.code
                exec(compile(code, str(block.path), "exec"), namespace)
            printed.append(out.getvalue())
    finally:
        os.chdir(cwd)
    return printed


def api_directives() -> list[str]:
    """The `::: path` directives of the API pages, in page order."""
    return [
        target
        for page in sorted((REPO_ROOT / "docs" / "api").glob("*.md"))
        for target in DIRECTIVE.findall(page.read_text())
    ]


def api_objects(root: str) -> list:
    """Griffe objects of the API pages' directives within package `root`."""
    package = griffe.load(
        root, search_paths=[str(REPO_ROOT)], resolve_aliases=True
    )
    found = []
    for target in api_directives():
        head, _, rest = target.partition(".")
        if head == root:
            obj = package[rest] if rest else package
            found.append(obj.final_target if obj.is_alias else obj)
    return found


def shown_objects(root: str) -> list:
    """The directives' objects and the members the API pages show of them.

    mkdocstrings leaves out members without a docstring (Keras overrides
    such as `call`), except a class's `__init__`, whose signature it shows
    as the class's.
    """
    found = []

    def visit(obj):
        found.append(obj)
        if obj.is_class:
            for name, member in obj.members.items():
                member = member.final_target if member.is_alias else member
                shown = name == "__init__" or (
                    not name.startswith("_") and member.docstring
                )
                if shown and (member.is_function or member.is_class):
                    visit(member)

    for obj in api_objects(root):
        visit(obj)
    return found
