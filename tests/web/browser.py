"""Chromium for the browser tests: Debian's /usr/bin/chromium, never a downloaded one."""

from __future__ import annotations

import os
import shutil
import socket

import pytest

CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
INSTALL_HINT = "apt-get install chromium (Debian's package; `playwright install` is not used)"


def chromium_path() -> str:
    for cand in (os.environ.get("YIPPIEMOVE_CHROMIUM"), "/usr/bin/chromium"):
        if cand and os.path.exists(cand):
            return cand
    found = shutil.which("chromium")
    if found:
        return found
    raise FileNotFoundError(f"chromium is not installed: {INSTALL_HINT}")


def require_chromium() -> str:
    """The browser's path; in CI (CI=true) a missing browser fails the test, else skips it."""
    try:
        return chromium_path()
    except FileNotFoundError as exc:
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail(str(exc), pytrace=False)
        pytest.skip(str(exc))
        raise  # unreachable


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
