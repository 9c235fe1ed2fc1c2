"""Browser-test helpers: Debian's headless Chromium driven by Playwright (no browser download),
and where the screenshots go."""

from __future__ import annotations

import os
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]
CHROMIUM = Path(os.environ.get("FEDRISK_CHROMIUM", "/usr/bin/chromium"))
"""The system browser tests/support/ensure_chromium.sh installs."""

ARTIFACTS = Path(os.environ.get("FEDRISK_TEST_ARTIFACTS", REPO / "test-artifacts"))
"""Where browser tests save screenshots (a folder of their own per module)."""

CHROMIUM_ARGS = (
    "--no-sandbox",  # root in a container has no user namespace for the sandbox
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    # no calls home: this machine's closed network refuses them, many at a time
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
)


class ArtifactNotice(UserWarning):
    """Says where a test saved files for people to look at (shown in pytest's summary)."""


def require_chromium() -> None:
    """Skip (fail under CI=true) when the system Chromium or Playwright is missing."""
    reason = None
    if not CHROMIUM.exists():
        reason = f"{CHROMIUM} not found (run tests/support/ensure_chromium.sh)"
    else:
        try:
            import playwright.sync_api  # noqa: F401
        except ImportError:
            reason = "playwright is not installed (pip install -e '.[dev]')"
    if reason is not None:
        if os.environ.get("CI") == "true":
            pytest.fail(reason)
        pytest.skip(reason)


@contextmanager
def chromium() -> Iterator[Any]:
    """A headless Chromium (Playwright ``Browser``) from the system binary, closed afterwards."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as driver:
        browser = driver.chromium.launch(
            executable_path=str(CHROMIUM), headless=True, args=list(CHROMIUM_ARGS)
        )
        try:
            yield browser
        finally:
            browser.close()


def screenshot_dir(name: str) -> Path:
    """A fresh folder for one module's screenshots; its path is printed in pytest's summary."""
    folder = ARTIFACTS / name
    folder.mkdir(parents=True, exist_ok=True)
    for old in folder.glob("*.png"):
        old.unlink()
    warnings.warn(f"screenshots of {name} are saved under {folder}", ArtifactNotice, stacklevel=2)
    return folder
