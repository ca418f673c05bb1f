"""Open a report in headless Chromium (Playwright + the system browser) and report what happened.

Used by the browser test, by benchmarks/map.py (time to interactive) and by docs/make_screenshot.py,
so the README's screenshot is what the test sees. Needs `playwright` (the `test` extra) and a
Chromium binary: /usr/bin/chromium (Debian package `chromium`) unless CURATE_CHROMIUM says otherwise.
"""

from __future__ import annotations

import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path


def find_chromium() -> str | None:
    for cand in (os.environ.get("CURATE_CHROMIUM"), "/usr/bin/chromium", shutil.which("chromium"),
                 shutil.which("chromium-browser"), shutil.which("google-chrome")):
        if cand and Path(cand).is_file():
            return cand
    return None


@dataclass
class PageCheck:
    console_errors: list[str] = field(default_factory=list)
    page_errors: list[str] = field(default_factory=list)
    network: list[str] = field(default_factory=list)  # any request that is not file:, data: or blob:
    dialogs: list[str] = field(default_factory=list)
    ready_ms: float = 0.0  # navigation start -> map drawn and interactive
    gallery_thumbs: dict[str, int] = field(default_factory=dict)  # section id -> loaded <img> count
    hover_text: str = ""
    broken_images: int = 0
    picked: list[str] = field(default_factory=list)  # paths shown after clicking the hovered point


def check_report(
    html: str | Path,
    *,
    screenshot: str | Path | None = None,
    hover_row: int | None = 0,
    viewport: tuple[int, int] = (1400, 1000),
    full_page: bool = False,
    timeout_ms: int = 60_000,
) -> PageCheck:
    """Load the report from file://, wait until the map is drawn, hover one point, optionally save a
    screenshot. Raises RuntimeError when no Chromium is installed."""
    from playwright.sync_api import sync_playwright

    exe = find_chromium()
    if exe is None:
        raise RuntimeError("no Chromium found: install the Debian package 'chromium' or set CURATE_CHROMIUM")
    res = PageCheck()
    url = Path(html).resolve().as_uri()
    with sync_playwright() as pw:
        browser = pw.chromium.launch(
            executable_path=exe, args=["--use-gl=angle", "--use-angle=swiftshader", "--enable-unsafe-swiftshader"]
        )
        try:
            page = browser.new_page(viewport={"width": viewport[0], "height": viewport[1]})
            page.on("console", lambda m: res.console_errors.append(m.text) if m.type == "error" else None)
            page.on("pageerror", lambda e: res.page_errors.append(str(e)))
            page.on("request", lambda r: None if r.url.split(":", 1)[0] in ("file", "data", "blob")
                    else res.network.append(r.url))
            page.on("dialog", lambda d: (res.dialogs.append(d.message), d.dismiss()))
            start = time.perf_counter()
            page.goto(url)
            _poll(page, "!!(window.curateReport && window.curateReport.ready)", timeout_ms)
            res.ready_ms = (time.perf_counter() - start) * 1000
            # lazy images below the fold: load them all, then count those that decoded
            page.evaluate("document.querySelectorAll('img[loading=lazy]').forEach(i => i.loading = 'eager')")
            _poll(page, "Array.from(document.images).every(i => i.complete)", timeout_ms)
            res.gallery_thumbs = page.evaluate(
                "Object.fromEntries(Array.from(document.querySelectorAll('section.card')).map(s => "
                "[s.id, Array.from(s.querySelectorAll('.gallery img, .groups img')).filter(i => i.naturalWidth > 0)"
                ".length]))"
            )
            res.broken_images = page.evaluate("Array.from(document.images).filter(i => !i.naturalWidth).length")
            if hover_row is not None:
                page.locator("#map").scroll_into_view_if_needed()
                pos = page.evaluate(f"window.curateReport.scatterplot.getScreenPosition({int(hover_row)})")
                box = page.locator("#map-canvas").bounding_box()
                assert box is not None
                page.mouse.move(box["x"] + pos[0], box["y"] + pos[1])
                page.wait_for_selector("#hover-card:not([hidden])", timeout=10_000)
                res.hover_text = page.inner_text("#hover-card")
            if screenshot is not None:
                Path(screenshot).parent.mkdir(parents=True, exist_ok=True)
                if not full_page and hover_row is None:
                    page.evaluate("window.scrollTo(0, 0)")
                page.screenshot(path=str(screenshot), full_page=full_page)
            if hover_row is not None:  # a click: the point and its neighbours appear below the map
                page.evaluate(f"window.curateReport.scatterplot.select([{int(hover_row)}])")
                _poll(page, "!document.getElementById('picked').hidden", 10_000)
                res.picked = page.evaluate("Array.from(document.querySelectorAll('#picked-tiles .tile'), t => t.title)")
        finally:
            browser.close()
    return res


def _poll(page, expression: str, timeout_ms: int) -> None:  # noqa: ANN001 - a playwright Page
    """Wait until `expression` is true. Not page.wait_for_function: that evaluates a string inside
    the page, which the report's Content-Security-Policy (no 'unsafe-eval') rightly refuses."""
    deadline = time.perf_counter() + timeout_ms / 1000
    while not page.evaluate(expression):
        if time.perf_counter() > deadline:
            raise TimeoutError(f"the report did not reach {expression!r} within {timeout_ms} ms")
        page.wait_for_timeout(25)
