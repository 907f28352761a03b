"""The built book, opened page by page in headless Chromium (run by `make test` after the book build).

Each page of the table of contents is served from a local HTTP server and loaded in Debian's `chromium`. A page
fails on a broken image, an error output in a notebook cell, an internal link to a missing page or anchor, math
left untypeset (MathJax must come from the book itself), or any request that leaves the local server (the book
must read well offline). Full-page screenshots go to `_build/screenshots/` for a human to look at.

The folder of HTML comes from `BOOK_HTML` (default: the smoke build, `_build/smoke/book/_build/html`).
"""
import functools
import http.server
import os
import re
import threading
from pathlib import Path
from urllib.parse import unquote, urlparse

import pytest

from lib.paths import ROOT

pytestmark = pytest.mark.browser

HTML = Path(os.environ.get("BOOK_HTML", ROOT / "_build" / "smoke" / "book" / "_build" / "html"))
SHOTS = ROOT / "_build" / "screenshots"
SKIP_PAGES = {"genindex.html", "search.html"}


def pages() -> list[Path]:
    if not HTML.is_dir():
        return []
    return sorted(p for p in HTML.rglob("*.html")
                  if not any(part.startswith("_") for part in p.relative_to(HTML).parts) and p.name not in SKIP_PAGES
                  and "http-equiv=\"refresh\"" not in p.read_text(errors="replace")[:2000].lower())  # redirect stubs


@pytest.fixture(scope="module")
def server():
    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):
            pass

    handler = functools.partial(Quiet, directory=str(HTML))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}/"
    httpd.shutdown()


@pytest.fixture(scope="module")
def browser():
    from _browser import Browser, chromium_binary

    binary = chromium_binary()
    if binary is None:
        pytest.fail("chromium is not installed: run `apt-get install -y chromium` (or `make chromium`)")
    b = Browser(binary)
    yield b
    b.close()


@functools.lru_cache(maxsize=None)
def anchors(path: Path) -> frozenset:
    return frozenset(re.findall(r'\sid="([^"]+)"', path.read_text(errors="replace")))


def broken_links(links: list[str], base: str) -> list[str]:
    bad = []
    for link in links:
        if not link.startswith(base):
            continue  # external links are not followed (the book is read offline)
        u = urlparse(link)
        rel = unquote(u.path[len(urlparse(base).path):]) or "index.html"
        target = HTML / rel
        if target.is_dir():
            target = target / "index.html"
        if not target.exists():
            bad.append(link)
        elif u.fragment and target.suffix == ".html" and unquote(u.fragment) not in anchors(target):
            bad.append(link)
    return bad


def test_book_was_built():
    assert HTML.is_dir(), f"no built book at {HTML}: build it first (make test builds the smoke book)"
    assert (HTML / "index.html").exists() or (HTML / "book" / "intro.html").exists()
    assert len(pages()) >= 5


def test_every_page_reads_well_offline(server, browser):
    SHOTS.mkdir(parents=True, exist_ok=True)
    problems = {}
    for page in pages():
        rel = page.relative_to(HTML).as_posix()
        shot = SHOTS / (rel.replace("/", "__").removesuffix(".html") + ".png")
        r = browser.visit(server + rel, screenshot=shot)
        issues = []
        if r["broken_images"]:
            issues.append(f"broken images {r['broken_images'][:3]}")
        if r["errors"]:
            issues.append(f"error outputs {r['errors'][:2]}")
        if bad := broken_links(r["links"], server):
            issues.append(f"broken internal links {bad[:3]}")
        if r["math"] and (r["rendered"] == 0 or r["raw_math"]):
            issues.append(f"math not typeset ({r['math']} math elements, {r['rendered']} rendered)")
        if outside := [u for u in r["requests"] if not u.startswith((server, "data:", "blob:", "about:"))]:
            issues.append(f"requests outside the book {sorted(set(outside))[:3]}")
        assert shot.stat().st_size > 1000, f"{rel}: empty screenshot"
        if issues:
            problems[rel] = issues
    assert not problems, "\n".join(f"{p}: {'; '.join(i)}" for p, i in problems.items())


def test_link_check_can_fail(tmp_path, server):
    """The link checker flags a missing page and a missing anchor (guards against a check that passes anything)."""
    first = pages()[0].relative_to(HTML).as_posix()
    assert broken_links([server + first], server) == []
    assert broken_links([server + "no-such-page.html"], server)
    assert broken_links([server + first + "#no-such-anchor-xyz"], server)


def test_each_chapter_page_offers_its_executed_notebook_with_one_parameters_view():
    """The page's .ipynb download exists and holds the run's parameters (so it re-executes as run); the page itself
    shows the validated parameters once (the raw parameters cells are removed from the page, not from the file)."""
    import json

    notebook_pages = [p for p in pages() if (HTML / "_sources" / p.relative_to(HTML).with_suffix(".ipynb")).exists()]
    assert len(notebook_pages) >= 5
    for page in notebook_pages:
        rel = page.relative_to(HTML)
        html = page.read_text(errors="replace")
        assert f"_sources/{rel.name.removesuffix('.html')}.ipynb" in html or ".ipynb" in html
        nb = json.loads((HTML / "_sources" / rel.with_suffix(".ipynb")).read_text())
        tagged = [c for c in nb["cells"] if "injected-parameters" in c.get("metadata", {}).get("tags", [])]
        assert tagged and "remove-cell" in tagged[0]["metadata"]["tags"], rel
        assert "injected-parameters" not in html and "params = {}  # dict" not in html, rel
