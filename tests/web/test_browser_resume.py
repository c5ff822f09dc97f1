"""Chromium: wrong password -> new password -> resumed -> exact (issue 17), against
``yippiemove serve`` and a real Dovecot, at desktop and phone widths.

The customer orders src -> dst through the three steps (the accounts pass the check);
the destination's password is changed at the provider before the job logs in, so the job
stops.  The page says so in plain words (the server's text only under "Details"), a
wrong new password is refused on the spot, the right one resumes the same transfer, which
ends exact (tests/mailcheck.py).  Screenshots go to ``YIPPIEMOVE_SCREENSHOTS`` if set.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Browser, expect

from tests.svckit import assert_exact
from tests.transfer.test_move import populate
from tests.web.browser import free_port, new_page
from tests.web.phone import assert_fits_phone
from tests.web.test_browser import dovecot_account, fill_account, serve, shot, sign_up, stop

pytestmark = pytest.mark.timeout(300)
NEW = "Dst-changed-pw-41"


def test_wrong_password_new_password_resumed_exact(
    browser: Browser, dovecot_factory: Callable[..., Any], tmp_path: Path
) -> None:
    server = dovecot_factory(separator="/", users={"src": "srcpass", "dst": "dstpass"})
    populate(server, "src")
    port = free_port()
    log = tmp_path / "serve.log"
    proc = serve(tmp_path / "data", port, server.ca_file, log)
    base = f"http://127.0.0.1:{port}"
    page = new_page(browser, 1280, 900)
    try:
        sign_up(page, base, "ada@example.org")
        fill_account(page, "source", dovecot_account(server, "src", "srcpass"))
        page.click("button:has-text('Check and continue')")
        page.wait_for_selector("input[name=dest_username]")
        fill_account(page, "dest", dovecot_account(server, "dst", "dstpass"))
        page.click("button:has-text('Check and continue')")
        page.wait_for_selector("input[name=folder]")
        # The customer changes the destination's password at the provider meanwhile.
        server.add_user("dst", NEW)
        page.click("button:has-text('Start transfer')")
        page.wait_for_url("**/transfers/*")
        job_url = page.url

        outcome = page.locator("[data-summary] [data-failure]")
        expect(outcome).to_have_attribute("data-failure", "auth", timeout=60_000)
        expect(page.locator("[data-failure-message]")).to_have_text(
            "The destination mailbox refused the user name or password."
        )
        detail = page.locator("[data-failure-detail]")
        expect(detail).to_be_hidden()  # under "Details", closed
        assert "AUTHENTICATIONFAILED" not in page.inner_text("[data-failure-message]")
        page.click("details.failure-detail summary")
        expect(detail).to_contain_text("AUTHENTICATIONFAILED")
        form = page.locator("[data-credentials-form]")
        expect(form).to_contain_text("Destination password for dst at 127.0.0.1")
        shot(page, "resume-01-failed")

        # A wrong new password: refused on the spot, the job stays stopped.
        page.fill("[data-new-password=dest]", "not-it-either")
        page.click("[data-credentials-submit]")
        page.wait_for_url(job_url)
        expect(page.locator(".flash-error")).to_contain_text(
            "The new destination password did not pass the check; nothing was changed. "
            "The destination mailbox refused the user name or password. Details: "
        )
        assert "not-it-either" not in page.content()
        expect(page.locator("[data-status-badge]")).to_have_text("Failed")
        shot(page, "resume-02-refused")

        # The right one: checked, stored, the same transfer continues to the end.
        page.fill("[data-new-password=dest]", NEW)
        page.click("[data-credentials-submit]")
        page.wait_for_url(job_url)
        expect(page.locator(".flash-ok")).to_contain_text("The new password works")
        expect(page.locator("[data-summary] .outcome")).to_contain_text("All done", timeout=120_000)
        expect(page.locator("[data-credentials-form]")).to_have_count(0)
        shot(page, "resume-03-done")
        assert page.errors == []  # type: ignore[attr-defined]

        # At phone width the finished page shows the outcome too.
        phone = new_page(browser, 390, 844)
        phone.context.add_cookies(page.context.cookies())
        phone.goto(job_url)
        expect(phone.locator("[data-summary] .outcome")).to_contain_text("All done")
        assert_fits_phone(phone, "resume-04")  # nothing hidden (tests/web/phone.py)
        phone.context.close()
    except BaseException:
        print(log.read_text()[-5000:])
        raise
    finally:
        page.context.close()
        stop(proc)
    assert_exact(server, "src", "srcpass", "dst", NEW)
