"""Chromium: a staged move with two top-ups and a final pass -> exact with the new mail
picked up (issue 17), against ``yippiemove serve`` and a real Dovecot, at desktop and
phone widths.

The customer orders src -> dst and ticks "Keep in sync until I switch" (the service's
minimum interval is a few seconds here, ``YIPPIEMOVE_STAGED_MIN_INTERVAL``); the job page
shows the schedule and how long the passwords are kept.  The old mailbox receives new
mail after each pass; the service's own scheduler runs the top-ups (the page reloads
when one is due and follows it), each pass's figures appear in the history; "Final pass
now" ends the move, exact, the passwords deleted.  Screenshots go to
``YIPPIEMOVE_SCREENSHOTS`` if set.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Browser, expect

from tests.svckit import assert_exact
from tests.transfer.test_move import make_message, populate
from tests.web.browser import free_port, new_page
from tests.web.phone import assert_fits_phone
from tests.web.test_browser import dovecot_account, fill_account, serve, shot, sign_up, stop

pytestmark = pytest.mark.timeout(300)
#: Seconds between top-ups in this test (the service's minimum, set for it).
INTERVAL = 4


@pytest.mark.source_writes("the old mailbox receives new mail between the passes")
def test_staged_move_two_top_ups_and_a_final_pass_exact_with_new_mail(
    browser: Browser,
    dovecot_factory: Callable[..., Any],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    server = dovecot_factory(separator="/", users={"src": "srcpass", "dst": "dstpass"})
    populate(server, "src")
    monkeypatch.setenv("YIPPIEMOVE_STAGED_MIN_INTERVAL", str(INTERVAL))
    monkeypatch.setenv("YIPPIEMOVE_STAGED_POLL_INTERVAL", "0.5")
    port = free_port()
    log = tmp_path / "serve.log"
    proc = serve(tmp_path / "data", port, server.ca_file, log)
    base = f"http://127.0.0.1:{port}"
    page = new_page(browser, 1280, 900, accept_dialogs=True)
    new = 0
    try:
        sign_up(page, base, "ada@example.org")
        fill_account(page, "source", dovecot_account(server, "src", "srcpass"))
        page.click("button:has-text('Check and continue')")
        page.wait_for_selector("input[name=dest_username]")
        fill_account(page, "dest", dovecot_account(server, "dst", "dstpass"))
        page.click("button:has-text('Check and continue')")
        page.wait_for_selector("input[name=folder]")
        # The order's last step: keep in sync until I switch, top-ups every 6 s.
        fields = page.locator("[data-staged-order] .staged-fields")
        expect(fields).to_be_hidden()
        page.check("[data-staged-toggle]")
        expect(fields).to_be_visible()
        page.select_option("[data-staged-interval]", str(INTERVAL))
        expect(page.locator("[data-staged-order]")).to_contain_text("until the final pass ends")
        shot(page, "staged-01-order")
        page.click("button:has-text('Start transfer')")
        page.wait_for_url("**/transfers/*")
        job_url = page.url

        card = page.locator("[data-staged]")
        expect(card).to_contain_text("Kept in sync until you switch")
        expect(page.locator("[data-pass='1']")).to_be_visible(timeout=60_000)
        expect(page.locator("[data-pass='1']")).to_contain_text("First pass")
        expect(page.locator("[data-staged-credentials]")).to_contain_text(
            "Your passwords are kept, encrypted, until the final pass ends, then deleted."
        )
        expect(card).to_contain_text("Next: top-up")
        shot(page, "staged-02-first-pass")
        # The list says it is kept in sync (its status is the last pass's).
        listing = page.context.new_page()
        listing.goto(base + "/transfers")
        expect(listing.locator("[data-staged-tag]")).to_have_text("kept in sync")
        listing.close()

        # The old mailbox still receives mail: each top-up picks up what came since.
        for n, count in ((2, 2), (3, 1)):
            for k in range(count):
                server.deliver("src", "INBOX", make_message(9500 + 10 * n + k))
            new += count
            # The service's scheduler starts it; the page reloads when due and follows it.
            row = page.locator(f"[data-pass='{n}']")
            expect(row).to_be_visible(timeout=60_000)
            expect(row).to_have_attribute("data-pass-kind", "top-up")
        shot(page, "staged-03-top-ups")

        # The customer switched their MX: the last message, then "Final pass now".
        server.deliver("src", "Sent", make_message(9600))
        new += 1
        page.click("[data-final-pass]")
        page.wait_for_url(job_url)
        expect(page.locator(".flash-ok")).to_contain_text("The final pass is on its way")
        expect(card).to_contain_text("The final pass is done", timeout=60_000)
        expect(page.locator("[data-pass-kind='final']")).to_have_count(1)
        expect(page.locator("[data-staged-credentials]")).to_have_count(0)
        expect(page.locator("[data-final-pass]")).to_have_count(0)
        kinds = page.locator("[data-staged-passes] tbody tr").evaluate_all(
            "rows => rows.map(r => r.dataset.passKind)"
        )
        copied = page.locator("[data-staged-passes] [data-pass-copied]").all_inner_texts()
        assert kinds[0] == "first" and kinds[-1] == "final", kinds
        assert kinds[1:-1].count("top-up") >= 2 and set(kinds[1:-1]) == {"top-up"}, kinds
        # Every new message was copied by a later pass, once (the first pass had none).
        assert sum(int(c.replace(",", "")) for c in copied[1:]) == new, (kinds, copied)
        shot(page, "staged-04-done")
        assert page.errors == []  # type: ignore[attr-defined]

        # At phone width: the schedule and the history stacked, nothing sideways.
        phone = new_page(browser, 390, 844, accept_dialogs=True)
        phone.context.add_cookies(page.context.cookies())
        phone.goto(job_url)
        expect(phone.locator("[data-staged]")).to_contain_text("The final pass is done")
        expect(phone.locator("[data-pass='1'] [data-pass-copied]")).to_be_visible()
        assert_fits_phone(phone, "staged-05")  # nothing sideways or clipped (tests/web/phone.py)
        phone.context.close()
    except BaseException:
        print(log.read_text()[-5000:])
        raise
    finally:
        page.context.close()
        stop(proc)
    assert_exact(server, "src", "srcpass", "dst", "dstpass")
