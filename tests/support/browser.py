"""Headless Chromium for the browser tests (the page on loopback and in the containers).

Chromium is Debian's package (``scripts/install-browser.sh``), driven by pip's playwright
without its own browser download. In CI a missing browser fails the test; locally it
skips with the reason.
"""

from __future__ import annotations

import os
import shutil

import pytest

#: Headless, and nothing fetched behind the page's back (updates, sync, QUIC probes), so a
#: test that watches the network sees only what the page itself asks for.
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def chromium_path() -> str:
    """Debian's chromium, or a skip (locally) / failure (in CI) saying how to get it."""
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found:
        return found
    reason = "chromium is not installed; run scripts/install-browser.sh (as root)"
    if os.environ.get("CI", "").lower() in {"1", "true", "yes"}:
        pytest.fail(reason)
    pytest.skip(reason)
