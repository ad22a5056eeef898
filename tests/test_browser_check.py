"""The browser check on a tiny synthetic site: it must find exactly the broken image and the broken anchor."""
from __future__ import annotations

import struct
import zlib

import pytest

from fer_lib import browser_check


def png(width: int = 2, height: int = 2) -> bytes:
    """A valid grey PNG, written by hand (no imaging library needed)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    rows = b"".join(b"\x00" + b"\x80" * width for _ in range(height))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b""))


@pytest.fixture
def site(tmp_path):
    """index.html: a good image, a broken one (served, but not an image), good links and anchors, one link to
    an id page.html lacks, an external link; page.html in a folder; an asset folder that is not a page. Each
    page names an icon: without one the browser asks for /favicon.ico, a 404 the check would rightly report."""
    (tmp_path / "_images").mkdir()
    (tmp_path / "_images" / "good.png").write_bytes(png())
    (tmp_path / "_images" / "broken.png").write_bytes(b"this is not a PNG")
    (tmp_path / "_static").mkdir()
    (tmp_path / "_static" / "not-a-page.html").write_text("<html></html>")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "page.html").write_text(
        '<html><head><link rel="icon" href="../_images/good.png"></head><body><h1 id="top">Page</h1><a name="legacy">old-style anchor</a>'
        '<a href="../index.html#figure">back to the figure</a></body></html>')
    (tmp_path / "index.html").write_text(
        '<html><head><link rel="icon" href="_images/good.png"></head><body>'
        '<p id="figure"><img src="_images/good.png"><img src="_images/broken.png"></p>'
        '<a href="sub/page.html">page</a> <a href="sub/page.html#top">its title</a> '
        '<a href="sub/page.html#legacy">a named anchor</a> <a href="#figure">here</a> '
        '<a href="sub/page.html#nowhere">a missing anchor</a> <a href="https://example.invalid/">outside</a>'
        '</body></html>')
    return tmp_path


def test_pages_and_targets_without_a_browser(site):
    assert browser_check.pages(site) == ["index.html", "sub/page.html"]
    checker = browser_check.Checker.__new__(browser_check.Checker)  # target() and anchors() need no browser
    checker.html_dir, checker.base_url, checker._anchors = site, "http://127.0.0.1:1/", {}
    assert checker.target("http://127.0.0.1:1/sub/page.html") == (site / "sub" / "page.html").resolve()
    assert checker.target("http://127.0.0.1:1/sub/") is None  # a folder without index.html
    (site / "sub" / "index.html").write_text("<html></html>")
    assert checker.target("http://127.0.0.1:1/sub/") == (site / "sub" / "index.html").resolve()
    assert checker.target("http://127.0.0.1:1/missing.html") is None
    assert checker.target("http://127.0.0.1:1/../../etc/passwd") is None  # nothing outside the build
    assert {"top", "legacy"} <= checker.anchors(site / "sub" / "page.html")


@pytest.mark.skipif(not (browser_check.CHROMIUM.is_file() and browser_check.CHROMEDRIVER.is_file()),
                    reason="needs Debian's chromium and chromium-driver (apt-get install chromium chromium-driver)")
def test_finds_exactly_the_broken_image_and_anchor(site, tmp_path_factory):
    shots = tmp_path_factory.mktemp("shots")
    reports = {r.page: r for r in browser_check.check_site(site, screenshots=shots, log=lambda line: None)}
    assert set(reports) == {"index.html", "sub/page.html"}
    index = reports["index.html"]
    assert index.images == 2 and index.external_links == 1
    assert index.links == 6
    assert sorted(index.failures) == ["broken anchor: sub/page.html#nowhere (no id 'nowhere' in page.html)",
                                      "image not decoded: _images/broken.png"]
    assert reports["sub/page.html"].failures == []
    assert sorted(p.name for p in shots.iterdir()) == ["index.png", "sub__page.png"]
    assert all(p.read_bytes().startswith(b"\x89PNG") for p in shots.iterdir())


@pytest.mark.skipif(not (browser_check.CHROMIUM.is_file() and browser_check.CHROMEDRIVER.is_file()),
                    reason="needs Debian's chromium and chromium-driver (apt-get install chromium chromium-driver)")
def test_a_missing_file_is_reported_by_the_server_and_the_console(tmp_path):
    (tmp_path / "icon.png").write_bytes(png())
    (tmp_path / "index.html").write_text('<html><head><link rel="icon" href="icon.png"></head><body>'
                                         '<img src="missing.png"></body></html>')
    [report] = browser_check.check_site(tmp_path, log=lambda line: None)
    assert "image not decoded: missing.png" in report.failures
    assert "request answered 404: /missing.png" in report.failures
    assert any(f.startswith("console error:") and "404" in f for f in report.failures)
    assert len(report.failures) == 3
