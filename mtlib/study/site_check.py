"""The built site in a real browser: headless Chromium (Debian's ``chromium``, driven by
Playwright) opens every page of the site, served on localhost, and reports each problem a
reader would meet:

- a page that does not load (an HTTP error, or a navigation that fails);
- a broken link (to a page or an anchor of the site that does not exist) or a missing image,
  style sheet or script (a request that fails or answers an error);
- a JavaScript console error, or an uncaught exception;
- visible text that holds a Python traceback;
- a site larger than :data:`MAX_BYTES` (what the repository publishes stays small).

Links that leave the site (http(s) to another host, mailto:) are not followed: the machines
that build the site are offline.

Command line: ``python -m mtlib.study.site_check reports/html`` (exit 1 on a problem).
"""
from __future__ import annotations

import argparse
import functools
import html
import http.server
import os
import re
import shutil
import sys
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import unquote, urldefrag, urlparse

CHROMIUM_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync")
TRACEBACK = re.compile(r"Traceback \(most recent call last\)|^-{20,}\n\w+(Error|Exception)\b", re.M)
MAX_BYTES = 15 * 2**20
ANCHOR = re.compile(r"""\b(?:id|name)=["']([^"']+)["']""")


def chromium() -> str:
    """The Chromium executable: $CHROMIUM, or ``chromium`` on the PATH (Debian's package)."""
    found = os.environ.get("CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
    if not found:
        raise FileNotFoundError("no chromium to test the site with: install Debian's `chromium` "
                                "(`make setup` does, as root) or set $CHROMIUM")
    return found


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def do_GET(self):
        if self.path == "/favicon.ico" and not Path(self.directory, "favicon.ico").exists():
            # Chromium asks every http origin for one; a site opened from disk is asked for none
            self.send_response(204)
            self.end_headers()
            return
        super().do_GET()


@contextmanager
def serve(folder: str | Path) -> Iterator[str]:
    """``folder`` served over HTTP on a free port of localhost; yields its base URL."""
    handler = functools.partial(_QuietHandler, directory=str(folder))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()


def _anchors(path: Path) -> set[str]:
    return {html.unescape(name) for name in ANCHOR.findall(path.read_text(errors="replace"))}


def _link_problem(folder: Path, base: str, page: str, href: str) -> str | None:
    """Why ``href`` (absolute, as the browser resolved it on ``page``) is broken, or None."""
    url, fragment = urldefrag(href)
    parsed = urlparse(url)
    if parsed.scheme not in ("http", "https") or not url.startswith(base):
        return None  # leaves the site
    target = folder / unquote(parsed.path[len(urlparse(base).path):])
    if target.is_dir():
        target = target / "index.html"
    if not target.is_file():
        return f"{page}: broken link to {href[len(base):]} (no such file)"
    if fragment and target.suffix == ".html" and unquote(fragment) not in _anchors(target):
        return f"{page}: broken link to {href[len(base):]} (no such anchor)"
    return None


def check_site(folder: str | Path, executable: str | None = None) -> list[str]:
    """Problems (empty list: none) of the site in ``folder``: every ``*.html`` under it is
    opened in headless Chromium (see the module's docstring for what counts)."""
    from playwright.sync_api import Error as PlaywrightError
    from playwright.sync_api import sync_playwright

    folder = Path(folder).resolve()
    pages = sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*.html"))
    if not pages:
        return [f"{folder.name}: no HTML pages"]
    problems: list[str] = []
    size = sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())
    if size > MAX_BYTES:
        problems.append(f"{folder.name}: {size / 2**20:.1f} MB, more than the {MAX_BYTES / 2**20:.0f} MB a site may publish")
    with serve(folder) as base, tempfile.TemporaryDirectory(prefix="mtlib-chromium-") as profile, \
            sync_playwright() as playwright:
        browser = playwright.chromium.launch_persistent_context(
            profile, executable_path=executable or chromium(), headless=True, args=list(CHROMIUM_FLAGS[1:]))
        try:
            page = browser.new_page()
            current = {"name": ""}

            def report(message: str) -> None:
                problems.append(f"{current['name']}: {message}")

            page.on("console", lambda m: report(f"console error: {m.text}") if m.type == "error" else None)
            page.on("pageerror", lambda e: report(f"uncaught exception: {e}"))
            page.on("requestfailed", lambda r: report(f"failed to load {r.url[len(base):]}: {r.failure}")
                    if r.url.startswith(base) else None)
            page.on("response", lambda r: report(f"{r.url[len(base):]} answered {r.status}")
                    if r.url.startswith(base) and r.status >= 400 else None)
            for name in pages:
                current["name"] = name
                try:
                    response = page.goto(base + name, wait_until="load")
                except PlaywrightError as error:
                    report(f"does not load: {error.message.splitlines()[0]}")
                    continue
                if response is None or not response.ok:
                    continue  # the response handler reported it
                links = page.eval_on_selector_all("a[href]", "els => els.map(e => e.href)")
                for href in dict.fromkeys(links):
                    problem = _link_problem(folder, base, name, href)
                    if problem:
                        problems.append(problem)
                broken = page.eval_on_selector_all(
                    "img", "els => els.filter(e => e.complete && e.naturalWidth === 0).map(e => e.src)")
                problems += [f"{name}: missing image {src[len(base):] if src.startswith(base) else src}"
                             for src in broken]
                text = page.inner_text("body")
                found = TRACEBACK.search(text)
                if found:
                    problems.append(f"{name}: visible text holds a Python traceback ({found.group(0)!r})")
        finally:
            browser.close()
    return problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m mtlib.study.site_check", description=__doc__.splitlines()[0])
    parser.add_argument("folder", nargs="?", default="reports/html")
    parser.add_argument("--chromium", help="the browser's executable (default: $CHROMIUM or chromium on the PATH)")
    args = parser.parse_args(argv)
    if not Path(args.folder).is_dir():
        print(f"error: {args.folder}: no such folder", file=sys.stderr)
        return 1
    try:
        problems = check_site(args.folder, args.chromium)
    except FileNotFoundError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    for problem in problems:
        print(f"error: {problem}", file=sys.stderr)
    if not problems:
        print(f"{args.folder}: every page loads, links and images resolve, no console errors or tracebacks")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
