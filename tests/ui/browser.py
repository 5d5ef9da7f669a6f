"""Headless Chromium for the UI tests: Debian's ``chromium`` driven by Playwright, never a downloaded browser."""

from __future__ import annotations

import io
import os
import shutil
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
SCREENSHOTS = Path(__file__).resolve().parents[2] / "docs" / "screenshots"


@contextmanager
def chromium() -> Iterator:
    if not CHROMIUM.exists() and not shutil.which("chromium"):
        pytest.fail("Debian's chromium is not installed: apt-get install -y chromium (see .ci/run)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


@contextmanager
def serve_app(app, port: int) -> Iterator[str]:
    """An ASGI app served by uvicorn on loopback in a thread, for as long as the block runs."""
    import uvicorn

    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError(f"uvicorn did not start on 127.0.0.1:{port}")
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)


def screenshot_dir(tmp_path: Path) -> Path:
    """docs/screenshots when HARVEST_UPDATE_SCREENSHOTS is set (``make screenshots``), else a temporary
    folder, so an ordinary test run leaves the committed images alone."""
    return SCREENSHOTS if os.environ.get("HARVEST_UPDATE_SCREENSHOTS") else tmp_path


def screenshot(target, folder: Path, name: str) -> Path:
    """A page or element screenshot, reduced to a 256-colour PNG to keep the repository small."""
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    with Image.open(io.BytesIO(target.screenshot())) as image:
        image.convert("RGB").quantize(colors=256).save(path, optimize=True)
    return path


def looks_like_a_photo(png: bytes) -> bool:
    """A rendered photo has varied pixels; a missing or undecoded image is one flat colour."""
    from PIL import Image, ImageStat

    with Image.open(io.BytesIO(png)) as image:
        return max(ImageStat.Stat(image.convert("RGB")).stddev) > 20
