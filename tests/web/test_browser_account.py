"""Chromium: forgot password and delete the account (issue 17), against ``yippiemove
serve`` with its mail going to an SMTP sink, at desktop (1280) and phone (390) widths.

Forgot password -> the mail -> its link -> a new password -> log in with it; the link
opened again says it was used.  Then, on a phone, the account page -> delete (password,
box ticked) -> the home page says so, the goodbye mail arrives, the old password logs in
no more.  Screenshots go to ``YIPPIEMOVE_SCREENSHOTS`` if set.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page, expect

from tests.svckit import SmtpSink, smtp_sink
from tests.web.browser import free_port, new_page
from tests.web.phone import assert_fits_phone
from tests.web.test_browser import serve, shot, stop
from yippiemove.service.config import Settings
from yippiemove.service.core import Service

__all__ = ["smtp_sink"]

pytestmark = pytest.mark.timeout(240)
EMAIL = "ada@example.org"
OLD = "correct horse battery"
NEW = "staple orbit lantern 42"


def log_in(page: Page, base: str, password: str) -> None:
    page.goto(base + "/login")
    page.fill("input[name=email]", EMAIL)
    page.fill("input[name=password]", password)
    page.click("button:has-text('Log in')")


def test_forgot_password_then_delete_the_account(
    browser: Browser,
    smtp_sink: SmtpSink,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    data = tmp_path / "data"
    svc = Service(Settings.load(data))
    try:
        svc.create_user(EMAIL, OLD)
    finally:
        svc.close()
    monkeypatch.setenv("YIPPIEMOVE_SMTP_HOST", "127.0.0.1")
    monkeypatch.setenv("YIPPIEMOVE_SMTP_PORT", str(smtp_sink.port))
    monkeypatch.setenv("YIPPIEMOVE_BASE_URL", base)
    ca = tmp_path / "ca.pem"
    ca.write_text("")
    log = tmp_path / "serve.log"
    proc = serve(data, port, ca, log)
    page = new_page(browser, 1280, 900)
    try:
        # -- forgot password, desktop ---------------------------------------------------
        page.goto(base + "/login")
        page.click("text=Forgot your password?")
        page.wait_for_url("**/password/forgot")
        page.fill("input[name=email]", EMAIL)
        shot(page, "account-01-forgot")
        page.click("button:has-text('Send me a link')")
        expect(page.locator("[data-forgot-sent]")).to_contain_text("Check your e-mail")
        shot(page, "account-02-forgot-sent")
        mail = smtp_sink.wait_for(lambda m: m["To"] == EMAIL and "Reset" in m["Subject"])
        found = re.search(r"(http://\S+/password/reset\?token=[\w-]+)", mail.get_content())
        assert found, mail.get_content()
        link = found.group(1)
        page.goto(link)
        page.fill("input[name=password]", NEW)
        page.fill("input[name=password2]", NEW)
        shot(page, "account-03-reset")
        page.click("button:has-text('Set my new password')")
        page.wait_for_url("**/login")
        expect(page.locator(".flash-ok")).to_contain_text("Your new password is set")
        log_in(page, base, NEW)
        page.wait_for_url("**/transfers")
        shot(page, "account-04-logged-in")
        # The link again: used, said plainly.
        page.goto(link)
        expect(page.locator("[data-link-problem]")).to_have_text(
            "This link was used already: it works once."
        )
        shot(page, "account-05-link-used")
        assert page.errors == []  # type: ignore[attr-defined]

        # -- delete the account, phone --------------------------------------------------
        phone = new_page(browser, 390, 844)
        phone.goto(base + "/password/forgot")
        assert_fits_phone(phone, "account-06-phone-forgot")
        log_in(phone, base, NEW)
        phone.wait_for_url("**/transfers")
        phone.goto(base + "/account")
        expect(phone.locator("[data-account-email]")).to_have_text(EMAIL)
        assert_fits_phone(phone, "account-06-phone-account")
        phone.fill("[data-delete-account] input[name=password]", "not my password at all")
        phone.check("[data-delete-account] input[name=confirm]")
        phone.click("button:has-text('Delete my account')")
        expect(phone.locator("[data-delete-account] .error")).to_contain_text("nothing was deleted")
        assert_fits_phone(phone, "account-07-phone-wrong-password")
        phone.fill("[data-delete-account] input[name=password]", NEW)
        phone.check("[data-delete-account] input[name=confirm]")
        phone.click("button:has-text('Delete my account')")
        phone.wait_for_url(base + "/")
        expect(phone.locator(".flash-ok")).to_contain_text("Your account and all its data")
        assert_fits_phone(phone, "account-08-phone-deleted")
        smtp_sink.wait_for(lambda m: m["To"] == EMAIL and "deleted" in m["Subject"])
        log_in(phone, base, NEW)
        expect(phone.locator(".alert-error")).to_contain_text("Wrong e-mail address or password")
        assert phone.errors == []  # type: ignore[attr-defined]
        phone.context.close()
        # The links' tokens are secrets: never in the server's log (its access lines).
        token = link.rpartition("token=")[2]
        assert token not in log.read_text()
        assert "token=<redacted>" in log.read_text()
    except BaseException:
        print(log.read_text()[-5000:])
        raise
    finally:
        page.context.close()
        stop(proc)
