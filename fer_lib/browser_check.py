"""Open every page of a rendered book in headless Chromium and check what a reader would see.

For each HTML page of the build (served over HTTP from 127.0.0.1: file:// URLs hide some errors):

- the browser console holds no error (``SEVERE`` entries of the browser log);
- every ``<img>`` has loaded and decoded (``complete`` and ``naturalWidth > 0``);
- every internal link (same origin) leads to a file of the build, and its ``#anchor``, if any, is an
  ``id`` (or ``<a name>``) of that page;
- a full-page screenshot goes to the screenshot folder, for a reader to look at.

Exits non-zero with a summary naming every failure. Chromium and its driver come from Debian's
packages (``apt-get install chromium chromium-driver``); external links are counted, never followed
(the machines that build this book have no network).

    python -m fer_lib.browser_check _build/full/_build/html --screenshots _build/full/screenshots
"""
from __future__ import annotations

import argparse
import functools
import http.server
import shutil
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urldefrag, urlsplit

CHROMIUM = Path("/usr/bin/chromium")
MAX_SHOT_HEIGHT = 40_000  # px; a longer page is shot down to here
CHROMEDRIVER = Path("/usr/bin/chromedriver")
#: folders of a Sphinx build that hold assets, not pages
ASSET_FOLDERS = {"_static", "_sources", "_images", "_downloads"}
#: Chromium flags for a closed network: without the last five it keeps retrying update, sync and
#: component servers and floods the log with refused connections
CHROME_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--window-size=1280,1000", "--disable-quic",
                "--no-first-run", "--disable-background-networking", "--disable-component-update", "--disable-sync")


@dataclass
class PageReport:
    page: str
    seconds: float = 0.0
    images: int = 0
    links: int = 0
    external_links: int = 0
    failures: list[str] = field(default_factory=list)


class _Anchors(HTMLParser):
    """The ids (and legacy ``<a name>``) a page defines: what a ``#fragment`` may point at."""

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.found: set[str] = set()

    def handle_starttag(self, tag, attrs):
        for key, value in attrs:
            if value and (key == "id" or (tag == "a" and key == "name")):
                self.found.add(value)


class _Handler(http.server.SimpleHTTPRequestHandler):
    """Serves the build quietly and notes every request it could not answer (``server.errors``): a page's
    request that fails after the browser moved on to the next page never reaches that page's console."""

    def log_message(self, *args):  # one line per request would drown the report
        pass

    def send_error(self, code, message=None, explain=None):
        self.server.errors.append((self.headers.get("Referer") or "", self.path, int(code)))
        super().send_error(code, message, explain)


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request, client_address):
        if not isinstance(sys.exc_info()[1], ConnectionError):  # the browser left before the reply: not an error
            super().handle_error(request, client_address)


def serve(directory: Path) -> tuple[http.server.ThreadingHTTPServer, str]:
    """Serve ``directory`` on a free port of 127.0.0.1 from a daemon thread; returns the server and its URL."""
    server = _Server(("127.0.0.1", 0), functools.partial(_Handler, directory=str(directory)))
    server.errors = []
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_address[1]}/"


def pages(html_dir: Path) -> list[str]:
    """Every HTML page of the build (relative paths, sorted), assets left out."""
    return sorted(str(p.relative_to(html_dir)) for p in html_dir.rglob("*.html")
                  if not ASSET_FOLDERS & set(p.relative_to(html_dir).parts[:-1]))


def browser(user_data_dir: Path):
    """Headless Chromium through Debian's chromedriver (Selenium never downloads a driver when given one)."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in (*CHROME_FLAGS, f"--user-data-dir={user_data_dir}"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    return webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)


# Waits (up to the timeout) for every image to finish loading or fail, then reports each one.
_IMAGES_JS = """
const done = arguments[arguments.length - 1];
const images = Array.from(document.images);
images.forEach(image => { image.loading = "eager"; });
const settled = images.map(image => image.complete ? Promise.resolve() :
    new Promise(resolve => { image.addEventListener("load", resolve); image.addEventListener("error", resolve); }));
const timeout = new Promise(resolve => setTimeout(resolve, arguments[0]));
Promise.race([Promise.all(settled), timeout]).then(() => done(images.map(image =>
    [image.getAttribute("src") || "", image.currentSrc || image.src, image.complete, image.naturalWidth])));
"""
_LINKS_JS = "return Array.from(document.querySelectorAll('a[href]')).map(a => [a.getAttribute('href'), a.href]);"


class Checker:
    """Checks pages of one build in one browser; anchors of each target file are parsed once."""

    def __init__(self, html_dir: Path, driver, base_url: str, screenshots: Path | None = None,
                 image_timeout_s: float = 10.0):
        self.html_dir, self.driver, self.base_url = Path(html_dir), driver, base_url
        self.screenshots, self.image_timeout_s = screenshots, image_timeout_s
        self._anchors: dict[Path, set[str]] = {}
        driver.set_script_timeout(image_timeout_s + 5)

    def anchors(self, path: Path) -> set[str]:
        if path not in self._anchors:
            parser = _Anchors()
            parser.feed(path.read_text(errors="replace"))
            self._anchors[path] = parser.found
        return self._anchors[path]

    def target(self, url: str) -> Path | None:
        """The file of the build an internal URL names (a folder means its index.html), or None."""
        path = unquote(urlsplit(url).path)
        root = urlsplit(self.base_url).path
        relative = path[len(root):] if path.startswith(root) else path.lstrip("/")
        candidate = (self.html_dir / relative).resolve()
        if candidate.is_dir():
            candidate = candidate / "index.html"
        inside = candidate == self.html_dir.resolve() or self.html_dir.resolve() in candidate.parents
        return candidate if inside and candidate.is_file() else None

    def check(self, page: str) -> PageReport:
        report = PageReport(page)
        started = time.perf_counter()
        self.driver.get(self.base_url + page)
        self._console(report)  # page-load errors (a missing script or style) are logged by now
        for src, resolved, complete, width in self.driver.execute_async_script(_IMAGES_JS, 1000 * self.image_timeout_s):
            report.images += 1
            if not complete or not width:
                report.failures.append(f"image not decoded: {src or resolved}")
        for href, resolved in self.driver.execute_script(_LINKS_JS):
            report.links += 1
            if not resolved.startswith(self.base_url):
                report.external_links += 1  # other origins and mailto: not followed (closed network)
                continue
            url, fragment = urldefrag(resolved)
            target = self.target(url)
            if target is None:
                report.failures.append(f"broken link: {href} (no such file in the build)")
            elif fragment and target.suffix == ".html" and unquote(fragment) not in self.anchors(target):
                report.failures.append(f"broken anchor: {href} (no id {unquote(fragment)!r} in {target.name})")
        self._console(report)  # and errors of scripts that ran while the images loaded
        if self.screenshots is not None:
            self._screenshot(page)
        report.seconds = time.perf_counter() - started
        return report

    def _console(self, report: PageReport) -> None:
        for entry in self.driver.get_log("browser"):
            if entry.get("level") == "SEVERE":
                report.failures.append(f"console error: {entry.get('message', '').strip()}")

    def _screenshot(self, page: str) -> None:
        """The whole page: the window is made as tall as the page for the shot, then restored. (DevTools'
        beyond-viewport capture lays the theme's sticky sidebars out wrongly and cuts the article.)"""
        window = self.driver.get_window_size()
        chrome = self.driver.execute_script("return window.outerHeight - window.innerHeight")
        height = self.driver.execute_script("return document.documentElement.scrollHeight")
        self.driver.set_window_size(window["width"], min(height, MAX_SHOT_HEIGHT) + chrome)
        out = self.screenshots / (page.replace("/", "__").removesuffix(".html") + ".png")
        out.parent.mkdir(parents=True, exist_ok=True)
        try:
            self.driver.save_screenshot(str(out))
        finally:
            self.driver.set_window_size(window["width"], window["height"])


def check_site(html_dir: Path, screenshots: Path | None = None, only: list[str] | None = None,
               log=print) -> list[PageReport]:
    """Check every page of ``html_dir`` (or the pages in ``only``); one report per page."""
    html_dir = Path(html_dir)
    if not (html_dir / "index.html").is_file() and not only:
        raise FileNotFoundError(f"{html_dir} holds no index.html: render the book first")
    server, base_url = serve(html_dir)
    profile_dir = Path(tempfile.mkdtemp(prefix="fer-book-chromium-"))  # a fresh profile: no state between runs
    driver = browser(profile_dir)
    try:
        checker = Checker(html_dir, driver, base_url, screenshots)
        reports = []
        for page in only or pages(html_dir):
            report = checker.check(page)
            log(f"{page:<36} {report.seconds:6.2f} s  {report.images:3d} images  {report.links:4d} links"
                f"  {len(report.failures)} failure(s)")
            reports.append(report)
        by_url = {base_url + r.page: r for r in reports}
        for referer, path, code in server.errors:  # each to the page that asked, else to the first page
            report = by_url.get(urldefrag(referer)[0], reports[0])
            report.failures.append(f"request answered {code}: {path}")
        return reports
    finally:
        driver.quit()
        server.shutdown()
        server.server_close()
        shutil.rmtree(profile_dir, ignore_errors=True)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("html_dir", type=Path, help="the built HTML book, e.g. _build/full/_build/html")
    parser.add_argument("--screenshots", type=Path, help="folder for one full-page PNG per page "
                                                         "(default: screenshots/ beside the build's _build folder)")
    args = parser.parse_args(argv)
    for binary in (CHROMIUM, CHROMEDRIVER):
        if not binary.is_file():
            print(f"{binary} is missing: apt-get install chromium chromium-driver", file=sys.stderr)
            return 2
    html_dir = args.html_dir.resolve()
    # _build/<profile>/_build/html -> _build/<profile>/screenshots
    screenshots = args.screenshots or (html_dir.parent.parent / "screenshots")
    if screenshots.exists():
        shutil.rmtree(screenshots)  # no stale shots of pages that no longer exist
    started = time.perf_counter()
    reports = check_site(html_dir, screenshots)
    failures = [(r.page, failure) for r in reports for failure in r.failures]
    print(f"\n{len(reports)} pages, {sum(r.images for r in reports)} images, {sum(r.links for r in reports)} links "
          f"({sum(r.external_links for r in reports)} external, not followed) in {time.perf_counter() - started:.1f} s; "
          f"screenshots in {screenshots}")
    if failures:
        print(f"{len(failures)} failure(s):")
        for page, failure in failures:
            print(f"  {page}: {failure}")
        return 1
    print("no broken images, links or anchors, no console errors")
    return 0


if __name__ == "__main__":
    sys.exit(main())
