"""Chromium (Playwright, Debian's chromium): Back and reload on the last step of the web
order never start a second transfer (issue 12), over the real Service and a real Dovecot.

Skips without chromium, except in CI (see tests/web/browser.py).
"""

from __future__ import annotations

from pathlib import Path

import pytest
from playwright.sync_api import Browser, expect
from playwright.sync_api import Error as PlaywrightError

from tests.transfer.test_move import make_message
from tests.web.browser import free_port
from tests.web.demo import BackgroundServer
from tests.web.test_browser import order, sign_up
from yippiemove.service.config import Settings
from yippiemove.service.core import Service
from yippiemove.service.db import Job
from yippiemove.testing.dovecot import DovecotServer
from yippiemove.web.app import create_app

pytestmark = pytest.mark.timeout(300)


def test_back_and_reload_on_the_last_step_start_one_transfer(
    browser: Browser, dovecot: DovecotServer, tmp_path: Path
) -> None:
    dovecot.deliver_many("src", "INBOX", [make_message(i) for i in range(3)])
    svc = Service(  # no workers: the transfer stays queued, as a slow start would
        Settings.load(tmp_path / "svc", ca_file=str(dovecot.ca_file), maintenance_interval=3600.0)
    )
    src = {"host": "127.0.0.1", "port": str(dovecot.port), "security": "starttls"}
    context = browser.new_context()
    page = context.new_page()
    page.set_default_timeout(30_000)
    try:
        with BackgroundServer(create_app(svc), free_port()) as base:
            sign_up(page, base, "ada@example.org")
            jid = order(
                page,
                base,
                dict(src, username="src", password="srcpass"),
                dict(src, username="dst", password="dstpass"),
            )
            page.reload()  # the job page: a GET, nothing happens
            # Back to the folder step, and Start again (re-sending the form if asked).
            # The step was a POST answer, never cached (no-store): Chromium shows
            # ERR_CACHE_MISS ("Confirm form resubmission"); a reload re-sends the step's
            # POST and the folder step is back, with its Start button.
            try:
                page.go_back()
            except PlaywrightError as exc:
                assert "ERR_CACHE_MISS" in str(exc)
            for attempt in range(3):
                try:
                    page.reload()
                    break
                except PlaywrightError:  # the error page is swapped in meanwhile
                    if attempt == 2:
                        raise
                    page.wait_for_timeout(300)
            expect(page.locator("input[name=folder]").first).to_be_visible()
            page.click("button:has-text('Start transfer')")
            page.wait_for_url(f"**/transfers/{jid}")
            expect(page.locator(".flash")).to_contain_text("This transfer is already running")
            page.reload()  # the redirect's target: a GET again
            with svc.db.read() as s:
                assert [j.id for j in s.query(Job).all()] == [jid]
    finally:
        context.close()
        svc.close()
