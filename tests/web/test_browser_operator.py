"""Browser journey (issue 17): an operator suspends a customer, at desktop and phone
widths (Chromium through Playwright; screenshots kept under ``YIPPIEMOVE_SCREENSHOTS``
when set, else in the test's tmp directory).

The operator finds the customer by address, sees their transfers (one done, one
queued), reads the done one's report (read-only), suspends them with a reason: the
queued transfer is held, the audit log says who did what, and the customer's log-in is
refused with a clear message.  Unsuspended, they log in again."""

from __future__ import annotations

from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page, expect

from tests.svckit import DST_PW, SRC_PW, make_service
from tests.web.browser import free_port
from tests.web.demo import BackgroundServer
from tests.web.phone import assert_fits
from tests.web.test_reports import OWNER, OWNER_PW, _job
from yippiemove.service.core import Account
from yippiemove.web.app import create_app

__all__ = ["make_service"]  # (the fixture)

pytestmark = pytest.mark.timeout(300)

OP = "op@example.org"
OP_PW = "operator password"


def _log_in(page: Page, base: str, email: str, password: str) -> None:
    page.goto(base + "/login")
    page.fill("input[name=email]", email)
    page.fill("input[name=password]", password)
    page.click("button[type=submit]:has-text('Log in')")


@pytest.mark.parametrize("width", [1280, 390])
def test_operator_suspends_a_customer(
    browser: Browser, make_service, dovecot_factory, tmp_path: Path, width: int
) -> None:
    _server, svc, owner, done_id, _before = _job(make_service, dovecot_factory)
    svc.stop(timeout=15)  # no worker: the next transfer stays queued
    queued = svc.create_transfer(
        owner,
        Account("127.0.0.1", 1, "starttls", "later", SRC_PW),
        Account("127.0.0.1", 1, "starttls", "later-dst", DST_PW),
    )
    svc.create_user(OP, OP_PW)
    svc.set_role(OP, "operator")
    errors: list[str] = []
    contexts = []

    def new_page() -> Page:
        context = browser.new_context(viewport={"width": width, "height": 900})
        contexts.append(context)
        page = context.new_page()
        page.set_default_timeout(30_000)
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        # (The 404 and 403 this journey goes through on purpose are not script errors.)
        page.on(
            "console",
            lambda m: (
                errors.append(m.text)
                if m.type == "error" and not m.text.startswith("Failed to load resource")
                else None
            ),
        )
        return page

    with BackgroundServer(create_app(svc), free_port()) as base:
        customer = new_page()
        _log_in(customer, base, OWNER, OWNER_PW)
        expect(customer).to_have_url(f"{base}/transfers")
        customer.goto(base + "/operator")  # a customer: the page does not exist
        expect(customer.locator("h1")).to_contain_text("Not found")

        page = new_page()
        _log_in(page, base, OP, OP_PW)
        page.goto(base + "/operator")
        expect(page.locator("[data-queue]")).to_contain_text("1 queued")
        page.fill("[data-customer-search]", "owner@")
        page.click("button:has-text('Search')")
        expect(page.locator("[data-customers] tbody tr")).to_have_count(1)
        assert_fits(page, f"operator-console-{width}")

        page.click(f"[data-customers] a:has-text('{OWNER}')")
        expect(page.locator("[data-operator-jobs] tbody tr")).to_have_count(2)
        expect(page.locator("[data-active]")).to_be_visible()
        page.click(f"[data-job='{done_id}'] a:has-text('Open')")
        expect(page.locator("[data-messages] tbody tr")).to_have_count(11)
        expect(page.locator("[data-verification]")).to_contain_text("checked on the destination")
        assert_fits(page, f"operator-report-{width}")
        assert SRC_PW not in page.content() and DST_PW not in page.content()

        page.go_back()
        page.fill("[data-reason]", "chargeback on the card")
        page.click("[data-suspend]")
        expect(page.locator("[data-suspended]")).to_be_visible()
        expect(page.locator("[data-suspended-reason]")).to_contain_text("chargeback on the card")
        expect(page.locator(f"[data-job='{queued.id}'] [data-held]")).to_be_visible()
        assert_fits(page, f"operator-suspended-{width}")

        page.click("[data-console-link]")
        page.click("[data-audit-link]")
        rows = page.locator("[data-audit] tbody tr")
        expect(rows.first).to_contain_text("suspend")
        expect(rows.first).to_contain_text("chargeback on the card")
        expect(page.locator("[data-action=read_report]")).to_have_count(1)
        assert_fits(page, f"operator-audit-{width}")

        # The customer was logged out, and cannot log in again: said plainly.
        customer.goto(base + "/transfers")
        expect(customer).to_have_url(f"{base}/login?next=/transfers")
        _log_in(customer, base, OWNER, OWNER_PW)
        expect(customer.locator("[role=alert]")).to_contain_text("This account is suspended")
        assert_fits(customer, f"customer-suspended-{width}")

        page.goto(f"{base}/operator/customers/{owner}")
        page.click("[data-unsuspend]")
        expect(page.locator("[data-active]")).to_be_visible()
        _log_in(customer, base, OWNER, OWNER_PW)
        expect(customer).to_have_url(f"{base}/transfers")
    for context in contexts:
        context.close()
    assert not errors, errors
    assert svc.get_transfer(owner, queued.id).status == "queued"
