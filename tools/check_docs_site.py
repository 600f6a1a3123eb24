"""Checks the documentation site as a reader's browser shows it.

Builds the site with `mkdocs build --strict`, serves it on 127.0.0.1 and
opens every page (the home page, the GrowthCallback guide and every API
page among them) in headless Chromium, driven by Playwright. A page fails
when:

- a formula is left as TeX: `\\(`, `\\[`, `$$` or a TeX command such as
  `\\lambda` in the text outside code, or an `arithmatex` element without a
  drawn `<math>` element;
- an image is broken (not loaded, or `naturalWidth` 0);
- the page asks for anything from another host than 127.0.0.1 (every
  request is recorded, and those to other hosts are blocked and listed);
- a script on the page raises;
- the text, code included, shows a machine-specific absolute path
  (`/home/...`, ...);
- at 1280 px a table needs horizontal scrolling (a long code line may
  scroll in its block);
- a code block wraps its lines (`white-space` other than `pre`), which
  splits commands and tokens across lines;
- an interpreter prompt (`>>>`) shows outside code: a docstring example
  rendered as prose;
- the Markdown swallowed a `<word>` as an HTML tag (an element the
  browser does not know, such as `<wnid>`);
- a formula is drawn in a fallback font: none of the math fonts the
  stylesheet names for `math` is available to the browser.

Then the home page and the GrowthCallback guide are opened from disk
(`file://`): each must show the note that search needs the site served,
and every link of theirs to a page of the site must open that page (not a
folder listing).

A full-page screenshot of every page, 1280 px wide, goes to the folder
printed at the start (`--out`, by default a new temporary folder).

    python tools/check_docs_site.py [--out DIR] [--site DIR] [--no-build]

Exit status 0 when every page passes, 1 when a check fails. Where Chromium
or Playwright is missing the script prints why and exits 0 (skipped),
unless `--require-browser` is given, when it exits 2.
"""

from __future__ import annotations

import argparse
import functools
import http.server
import importlib.util
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
from pathlib import Path
from urllib.parse import urlsplit

REPO_ROOT = Path(__file__).resolve().parent.parent
WIDTH = 1280
HEIGHT = 900
# The pages that must exist, besides every page under api/.
REQUIRED_PAGES = ("index.html", "guides/growth-callback/index.html")
CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
)
CHROMIUM_CANDIDATES = ("chromium", "chromium-browser", "google-chrome")
RAW_TEX = re.compile(r"\\[()\[\]]|\$\$|\\[A-Za-z]{2,}")
ABSOLUTE_PATH = re.compile(r"(?<![\w.:/])/(?:home|work|Users|root|mnt)/\S+")

# Runs in the page: what a reader sees of its formulas, images and widths.
INSPECT_PAGE = """() => {
  const main = document.querySelector("article") || document.body;
  const clone = main.cloneNode(true);
  clone.querySelectorAll("pre, code, script, style, math, .headerlink")
       .forEach((node) => node.remove());
  const drawn = (node) => {
    const box = node.getBoundingClientRect();
    return box.width > 0 && box.height > 0;
  };
  const formulas = [...main.querySelectorAll(".arithmatex")];
  const undrawn = formulas.filter((node) => {
    const math = node.querySelector("math");
    return !math || !drawn(math);
  }).map((node) => node.textContent.trim().slice(0, 80));
  const broken = [...document.images]
    .filter((img) => !img.complete || img.naturalWidth === 0)
    .map((img) => img.currentSrc || img.src);
  const label = (node) => {
    const row = node.querySelector("tr");
    const text = (row || node).textContent.replace(/\\s+/g, " ").trim();
    return text.slice(0, 70);
  };
  // Material scrolls wide tables in a wrapper (code blocks may scroll).
  const wide = [...main.querySelectorAll(".md-typeset__scrollwrap")]
    .filter((node) => node.scrollWidth > node.clientWidth + 1)
    .map((node) => `table ${node.scrollWidth}px in ${node.clientWidth}px: ` +
         label(node));
  const wrapping = [...main.querySelectorAll("pre > code")]
    .filter((node) => getComputedStyle(node).whiteSpace !== "pre")
    .map((node) => node.textContent.trim().split("\\n")[0].slice(0, 70));
  const unknown = [...main.querySelectorAll("*")]
    .filter((node) => node instanceof HTMLUnknownElement &&
            !node.tagName.includes("-") && !node.closest("math, svg"))
    .map((node) => `<${node.tagName.toLowerCase()}>`);
  // The first font of the list for `math` that the machine has: a font
  // that is present changes the width of a text against both fallbacks.
  let mathFont = null;
  const probe = main.querySelector("math");
  if (probe) {
    const context = document.createElement("canvas").getContext("2d");
    const width = (font) => {
      context.font = `40px ${font}`;
      return context.measureText("z\u2032 \u03c3\u2033 \u2211 mwMW").width;
    };
    const families = getComputedStyle(probe).fontFamily.split(",")
      .map((name) => name.trim().replace(/^["']|["']$/g, ""))
      .filter((name) => name !== "math");
    mathFont = families.find((name) => ["monospace", "serif"].some(
      (base) => width(`"${name}", ${base}`) !== width(base))) || null;
  }
  return {text: clone.textContent, all_text: main.textContent,
          formulas: formulas.length, undrawn, broken, wide, wrapping,
          unknown: [...new Set(unknown)], mathFont,
          prompts: clone.textContent.includes(">>>") ||
            main.querySelector("blockquote blockquote") !== null};
}"""


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


def find_chromium(explicit: str | None) -> str | None:
    if explicit:
        return explicit if Path(explicit).exists() else None
    for name in CHROMIUM_CANDIDATES:
        path = shutil.which(name)
        if path:
            return path
    return None


def build_site(site: Path) -> None:
    print(f"building the site into {site}", flush=True)
    subprocess.run(
        [
            sys.executable,
            "-m",
            "mkdocs",
            "build",
            "--strict",
            "--quiet",
            "--site-dir",
            str(site),
        ],
        cwd=REPO_ROOT,
        check=True,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
    )


def site_pages(site: Path) -> list[str]:
    """Every page of the built site, as paths relative to its root."""
    pages = sorted(
        str(path.relative_to(site))
        for path in site.rglob("index.html")
        if "assets" not in path.relative_to(site).parts
    )
    api = [page for page in pages if page.startswith("api/")]
    missing = [page for page in REQUIRED_PAGES if page not in pages]
    if missing or not api:
        raise SystemExit(
            f"the built site lacks {missing or 'any API page'} under {site}"
        )
    return pages


def check_page(page, url: str, shot: Path) -> tuple[int, list[str]]:
    """Opens one page; returns its number of formulas and its problems."""
    page.goto(url, wait_until="networkidle")
    page.evaluate("document.fonts.ready.then(() => true)")
    found = page.evaluate(INSPECT_PAGE)
    page.screenshot(path=str(shot), full_page=True)
    problems = []
    for match in sorted(set(RAW_TEX.findall(found["text"]))):
        problems.append(f"raw TeX in the text: {match!r}")
    problems += [f"formula not drawn: {tex!r}" for tex in found["undrawn"]]
    problems += [f"broken image: {src}" for src in found["broken"]]
    problems += [
        f"machine-specific path in the text: {path}"
        for path in sorted(set(ABSOLUTE_PATH.findall(found["all_text"])))
    ]
    problems += [
        f"needs horizontal scrolling: {item}" for item in found["wide"]
    ]
    problems += [
        f"code block wraps its lines: {first!r}" for first in found["wrapping"]
    ]
    if found["prompts"]:
        problems.append("'>>>' outside code: an example rendered as prose")
    problems += [
        f"{tag} swallowed as an HTML tag" for tag in found["unknown"]
    ]
    if found["formulas"] and found["mathFont"] is None:
        problems.append("formulas in a fallback font: no listed math font")
    return found["formulas"], problems


# Runs in a page opened from disk: its note, and its links into the site.
INSPECT_FILE_PAGE = """() => ({
  notice: !!document.querySelector(".file-pages-notice"),
  links: [...document.querySelectorAll("a[href]")]
    .map((link) => link.href)
    .filter((href) => href.startsWith("file:"))
    .map((href) => href.split("#")[0]),
})"""


def check_from_disk(page, site: Path) -> list[str]:
    """Opens `REQUIRED_PAGES` from disk; returns the problems found."""
    problems = []
    targets = set()
    for name in REQUIRED_PAGES:
        page.goto((site / name).resolve().as_uri())
        found = page.evaluate(INSPECT_FILE_PAGE)
        if not found["notice"]:
            problems.append(f"{name}: no note that search needs a server")
        targets.update(found["links"])
    for url in sorted(targets):
        if not url.endswith(".html"):
            problems.append(f"link opens a folder, not a page: {url}")
            continue
        page.goto(url)
        if page.evaluate("() => !document.querySelector('article h1')"):
            problems.append(f"link opens no page: {url}")
    print(
        f"{'FAIL' if problems else 'ok':4}  from disk: "
        f"{len(REQUIRED_PAGES)} pages, {len(targets)} links into the site",
        flush=True,
    )
    for problem in problems:
        print(f"      {problem}")
    return problems


def run_checks(site: Path, out: Path, chromium: str) -> int:
    from playwright.sync_api import sync_playwright

    pages = site_pages(site)
    handler = functools.partial(_QuietHandler, directory=str(site))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    origin = f"http://127.0.0.1:{server.server_address[1]}"
    print(f"serving {site} at {origin}", flush=True)

    requests: list[tuple[str, str]] = []
    current = {"page": ""}
    page_errors: list[tuple[str, str]] = []

    def route(route):
        url = route.request.url
        if url.startswith("file:"):  # The pages opened from disk.
            route.continue_()
            return
        requests.append((current["page"], url))
        if urlsplit(url).hostname == "127.0.0.1":
            route.continue_()
        else:
            route.abort()

    failures = 0
    with tempfile.TemporaryDirectory(prefix="chromium-profile-") as profile:
        with sync_playwright() as playwright:
            context = playwright.chromium.launch_persistent_context(
                profile,
                executable_path=chromium,
                headless=True,
                args=list(CHROMIUM_FLAGS),
                viewport={"width": WIDTH, "height": HEIGHT},
                service_workers="block",
            )
            context.route("**/*", route)
            browser_page = context.new_page()
            browser_page.on(
                "pageerror",
                lambda error: page_errors.append((current["page"], str(error))),
            )
            for name in pages:
                current["page"] = name
                shot = out / (
                    name.replace("/index.html", "")
                    .replace("/", "_")
                    .replace("index.html", "home")
                    + ".png"
                )
                formulas, problems = check_page(
                    browser_page, f"{origin}/{name}", shot
                )
                problems += [
                    f"request to another host: {url}"
                    for page, url in requests
                    if page == name and urlsplit(url).hostname != "127.0.0.1"
                ]
                problems += [
                    f"script error: {error}"
                    for page, error in page_errors
                    if page == name
                ]
                status = "FAIL" if problems else "ok"
                print(
                    f"{status:4}  {name}  ({shot.name}, {formulas} formulas)",
                    flush=True,
                )
                for problem in problems:
                    print(f"      {problem}")
                failures += bool(problems)
            current["page"] = "file://"
            failures += bool(check_from_disk(browser_page, site))
            context.close()
    server.shutdown()
    local = sum(urlsplit(url).hostname == "127.0.0.1" for _, url in requests)
    print(
        f"{len(pages)} pages, {len(requests)} requests "
        f"({len(requests) - local} to other hosts), {failures} failing; "
        f"screenshots in {out}"
    )
    return 1 if failures else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--out", type=Path, help="folder for the screenshots (default: new)"
    )
    parser.add_argument("--site", type=Path, help="folder of the built site")
    parser.add_argument(
        "--no-build", action="store_true", help="use the site already in --site"
    )
    parser.add_argument("--chromium", help="the Chromium executable")
    parser.add_argument(
        "--require-browser",
        action="store_true",
        help="fail (exit 2) instead of skipping when no browser can run",
    )
    args = parser.parse_args(argv)

    chromium = find_chromium(args.chromium)
    reason = None
    if chromium is None:
        reason = "no Chromium executable found (apt-get install chromium)"
    elif importlib.util.find_spec("playwright") is None:
        reason = "Playwright for Python is missing (pip install -e .[docs])"
    if reason:
        print(f"check_docs_site: skipped: {reason}")
        return 2 if args.require_browser else 0
    if args.no_build and args.site is None:
        parser.error("--no-build needs --site")

    out = args.out or Path(tempfile.mkdtemp(prefix="docs-screenshots-"))
    out.mkdir(parents=True, exist_ok=True)
    print(f"screenshots go to {out}", flush=True)
    if args.site is None:
        with tempfile.TemporaryDirectory(prefix="docs-site-") as site:
            build_site(Path(site))
            return run_checks(Path(site), out, chromium)
    if not args.no_build:
        build_site(args.site)
    return run_checks(args.site, out, chromium)


if __name__ == "__main__":
    sys.exit(main())
