"""Browser journey (issue 17): a finished transfer's readable report, then undo preview
and undo from the job page -> the destination back to its state before the job, at
desktop and phone widths (Chromium through Playwright; screenshots kept under
``YIPPIEMOVE_SCREENSHOTS`` when set, else in the test's tmp directory)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page, expect

from tests import mailcheck
from tests.svckit import DST_PW, make_service
from tests.web.browser import free_port
from tests.web.demo import BackgroundServer
from tests.web.test_reports import OWNER, OWNER_PW, _job
from yippiemove.web.app import create_app

__all__ = ["make_service"]  # (the fixture)

pytestmark = pytest.mark.timeout(300)


def _shot(page: Page, tmp: Path, name: str) -> None:
    out = Path(os.environ.get("YIPPIEMOVE_SCREENSHOTS") or tmp / "screenshots")
    out.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(out / f"{name}.png"), full_page=True)


def _fits(page: Page) -> None:
    """Nothing hidden sideways: the page is no wider than the window."""
    wide = page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
    assert wide <= 1, f"{page.url}: {wide} px wider than the window"


@pytest.mark.parametrize("width", [1280, 390])
def test_report_then_undo_in_the_browser(
    browser: Browser, make_service, dovecot_factory, tmp_path: Path, width: int
) -> None:
    server, svc, _uid, jid, before = _job(make_service, dovecot_factory)
    context = browser.new_context(viewport={"width": width, "height": 900})
    page = context.new_page()
    page.set_default_timeout(30_000)
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.on("dialog", lambda d: d.accept())  # "Remove these messages?" -> yes
    with BackgroundServer(create_app(svc), free_port()) as base:
        page.goto(base + "/login")
        page.fill("input[name=email]", OWNER)
        page.fill("input[name=password]", OWNER_PW)
        page.click("button[type=submit]:has-text('Log in')")
        page.goto(f"{base}/transfers/{jid}")
        page.click("[data-messages-link]")
        expect(page.locator("[data-messages] tbody tr")).to_have_count(11)
        expect(page.locator("[data-verification]")).to_contain_text("checked on the destination")
        _fits(page)
        _shot(page, tmp_path, f"report-{width}")

        page.goto(f"{base}/transfers/{jid}/receipt.html")
        expect(page.locator("[data-totals]")).to_contain_text("10 copied, 1 already there")
        _fits(page)
        _shot(page, tmp_path, f"receipt-{width}")

        page.goto(f"{base}/transfers/{jid}")
        page.click("[data-undo-link]")
        expect(page.locator("[data-undo-preview]")).to_contain_text("exactly the 10 messages")
        _fits(page)
        _shot(page, tmp_path, f"undo-preview-{width}")
        page.click("[data-undo-confirm]")
        expect(page.locator("[data-undo-done]")).to_contain_text("10 messages removed")
        _shot(page, tmp_path, f"undo-done-{width}")
    context.close()
    now = mailcheck.snapshot(server.port, "dst", DST_PW)
    for name, msgs in now.items():
        assert msgs == before.get(name, msgs - msgs), name
    assert not errors, errors
