"""Checking the rendered page in a real browser: headless Chromium loads index.html from disk,
counts the images that decoded and takes a screenshot (`--check_browser true`)."""

from __future__ import annotations

import html
import os
import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

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

# Injected into a copy of the page only (the report itself carries no script): after load, the body
# records how many <img> there are and how many decoded to a non-empty picture.
_IMAGE_PROBE = (
    "<script>window.addEventListener('load',function(){var im=Array.prototype.slice.call("
    "document.images);document.body.setAttribute('data-images',im.length);"
    "document.body.setAttribute('data-images-loaded',im.filter(function(i){"
    "return i.complete&&i.naturalWidth>0;}).length);"
    "document.body.setAttribute('data-broken',im.filter(function(i){return !(i.complete&&"
    "i.naturalWidth>0);}).map(function(i){return i.alt;}).join('|'));});</script>"
)


def find_chromium() -> str | None:
    """Path of a Chromium/Chrome binary, or None."""
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        path = shutil.which(name)
        if path:
            return path
    return None


@dataclass
class BrowserCheck:
    """What headless Chromium saw: image counts, broken image alts, screenshot path."""

    images: int
    images_loaded: int
    broken: list[str]
    sections: int
    screenshot: Path | None

    @property
    def ok(self) -> bool:
        return self.images > 0 and self.images == self.images_loaded


def check_in_browser(
    index_html: str | os.PathLike,
    screenshot: str | os.PathLike | None = None,
    chromium: str | None = None,
    timeout: float = 120.0,
    window_size: str = "1280,2400",
) -> BrowserCheck:
    """Load the report from disk in headless Chromium, count images that decoded, take a screenshot."""
    index_html = Path(index_html).resolve()
    chromium = chromium or find_chromium()
    if chromium is None:
        raise FileNotFoundError(
            "No Chromium found; install Debian's `chromium` (apt-get install -y chromium)."
        )
    with tempfile.TemporaryDirectory(prefix="vitrobust-chromium-") as tmp:
        # The probe copy sits beside index.html so that relative image paths resolve the same way.
        probe = index_html.with_name(f".probe-{os.getpid()}-{index_html.name}")
        probe.write_text(
            index_html.read_text(encoding="utf-8").replace("</body>", _IMAGE_PROBE + "</body>"),
            encoding="utf-8",
        )
        try:
            base = [chromium, *CHROMIUM_FLAGS, f"--user-data-dir={tmp}/profile"]
            dom = subprocess.run(
                [*base, "--virtual-time-budget=10000", "--dump-dom", probe.as_uri()],
                capture_output=True,
                text=True,
                timeout=timeout,
                check=False,
            )
        finally:
            probe.unlink(missing_ok=True)
        match = re.search(r"<body[^>]*>", dom.stdout)
        if dom.returncode != 0 or match is None:
            raise RuntimeError(
                f"Chromium could not render {index_html} (exit {dom.returncode}): "
                f"{dom.stderr[-2000:]}"
            )
        attrs = dict(re.findall(r'([\w-]+)="([^"]*)"', match.group(0)))
        shot_path = None
        if screenshot is not None:
            shot_path = Path(screenshot).resolve()
            shot_path.parent.mkdir(parents=True, exist_ok=True)
            subprocess.run(
                [
                    *base[:-1],
                    f"--user-data-dir={tmp}/profile-shot",
                    f"--window-size={window_size}",
                    f"--screenshot={shot_path}",
                    index_html.as_uri(),
                ],
                capture_output=True,
                timeout=timeout,
                check=False,
            )
            if not shot_path.is_file() or shot_path.stat().st_size == 0:
                raise RuntimeError(f"Chromium wrote no screenshot to {shot_path}.")
    broken = [b for b in html.unescape(attrs.get("data-broken", "")).split("|") if b]
    return BrowserCheck(
        images=int(attrs.get("data-images", 0)),
        images_loaded=int(attrs.get("data-images-loaded", 0)),
        broken=broken,
        sections=dom.stdout.count("<section "),
        screenshot=shot_path,
    )


__all__ = ["CHROMIUM_FLAGS", "BrowserCheck", "check_in_browser", "find_chromium"]
