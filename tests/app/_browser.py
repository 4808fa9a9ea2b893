"""Helpers of the browser tier: Debian's Chromium driven through Playwright (software WebGL),
screenshots, pixel counts and waits. The `chromium` and `browser` fixtures live in `conftest.py`;
a browser test module sets `pytestmark = BROWSER_TIER`. Screenshots go to $SCENELAB_SHOTS
(default /tmp/scenelab_shots) for a human to look at."""

from __future__ import annotations

import io
import os
import socket
import time
from pathlib import Path

import numpy as np
import pytest

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--use-gl=swiftshader",
    "--enable-unsafe-swiftshader",
    "--disable-background-networking",
]
VIEWPORT = {"width": 1000, "height": 700}
# Part of the canvas that the GUI panel (right), notifications (top left) and the axes widget
# (bottom left) never cover.
REGION = (slice(160, 640), slice(70, 650))
SHOTS = Path(os.environ.get("SCENELAB_SHOTS", "/tmp/scenelab_shots"))
REPO = Path(__file__).resolve().parents[2]

# Marks of a browser-tier module: selected by `-m browser`, skipped with a reason without Chromium.
BROWSER_TIER = [
    pytest.mark.browser,
    pytest.mark.skipif(
        not CHROMIUM.exists(),
        reason="needs Debian's Chromium at /usr/bin/chromium (apt-get install chromium)",
    ),
]


# ---------------------------------------------------------------------- helpers
def grab(page, name: str | None = None) -> np.ndarray:
    from PIL import Image

    img = np.asarray(Image.open(io.BytesIO(page.screenshot())).convert("RGB"))
    if name is not None:
        SHOTS.mkdir(parents=True, exist_ok=True)
        Image.fromarray(img).save(SHOTS / f"{name}.png")
    return img


def scene_pixels(img: np.ndarray) -> int:
    """Pixels in the free region that differ from the white background."""
    r = img[REGION].astype(int)
    return int(((255 - r).max(-1) > 40).sum())


def red_pixels(img: np.ndarray) -> int:
    r = img[REGION].astype(int)
    return int(((r[..., 0] > 150) & (r[..., 1] < 90) & (r[..., 2] < 90)).sum())


def orange_pixels(img: np.ndarray) -> int:
    """The selection highlight (amber over red)."""
    r = img[REGION].astype(int)
    return int(
        ((r[..., 0] > 200) & (r[..., 1] > 100) & (r[..., 1] < 200) & (r[..., 2] < 100)).sum()
    )


def saturated_pixels(img: np.ndarray) -> int:
    """Strongly coloured pixels (the depth colormap colours the grey floor too)."""
    r = img[REGION].astype(int)
    return int((r.max(-1) - r.min(-1) > 100).sum())


def poll(page, cond, timeout: float = 60.0, what: str = "condition") -> np.ndarray:
    """Screenshot until `cond(img)` holds (splats fade in; messages take a moment).

    The timeout is generous on purpose: software WebGL shares two cores with the other pytest
    worker. Speed is measured by `benchmarks/viewer.py`, not asserted here."""
    t0 = time.monotonic()
    while True:
        img = grab(page)
        if cond(img):
            return img
        if time.monotonic() - t0 > timeout:
            grab(page, "timeout_" + what.replace(" ", "_"))
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.3)


def settle(page, wait: float = 1.5, timeout: float = 10.0) -> np.ndarray:
    """A screenshot once the browser has drawn the latest push: after `wait` seconds, the first
    of two screenshots 0.5 s apart that agree (within 8/255), or the last after `timeout`."""
    time.sleep(wait)
    t0 = time.monotonic()
    last = grab(page)
    while time.monotonic() - t0 < timeout:
        time.sleep(0.5)
        img = grab(page)
        if np.abs(img.astype(int) - last.astype(int)).max() < 8:
            return img
        last = img
    return last


def wait_until(cond, timeout: float = 60.0, what: str = "condition") -> None:
    t0 = time.monotonic()
    while not cond():
        if time.monotonic() - t0 > timeout:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def drag(page, u: float, v: float, half: float) -> None:
    """Drag a square of half-size `half` centred on canvas pixel (u, v)."""
    page.mouse.move(u - half, v - half)
    page.mouse.down()
    page.mouse.move(u, v, steps=4)
    page.mouse.move(u + half, v + half, steps=4)
    page.mouse.up()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


PAGE_TIMEOUT_MS = 120_000  # clicks wait this long for a page busy drawing 10^5 splats in software


def open_page(browser, url: str):
    page = browser.new_page()
    # Software WebGL on two shared cores can keep the page's main thread busy for tens of
    # seconds after a large push; Playwright's 30 s default then fails clicks that would land.
    page.set_default_timeout(PAGE_TIMEOUT_MS)
    page.goto(url)
    return page
