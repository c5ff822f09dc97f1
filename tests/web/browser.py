"""Chromium for the browser tests: Debian's /usr/bin/chromium, never a downloaded one."""

from __future__ import annotations

import os
import shutil
import socket

import pytest
from playwright.sync_api import Browser, Page

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


def new_page(
    browser: Browser, width: int = 1280, height: int = 900, *, accept_dialogs: bool = False
) -> Page:
    """A page in a fresh context of ``width`` x ``height``; 30 s timeouts; the page's
    uncaught script errors gathered in ``page.errors`` (tests assert it stays empty);
    ``accept_dialogs``: confirm() dialogs ("Cancel this transfer?") answered yes."""
    page = browser.new_context(viewport={"width": width, "height": height}).new_page()
    page.set_default_timeout(30_000)
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    if accept_dialogs:
        page.on("dialog", lambda d: d.accept())
    page.errors = errors  # type: ignore[attr-defined]
    return page
