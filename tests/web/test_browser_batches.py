"""Chromium: a batch of users with one bad line caught by pre-flight (issue 17), against
``yippiemove serve`` and a real Dovecot, at desktop and phone widths.

The customer uploads a CSV of three mailboxes whose third line has a wrong source
password.  The batch page shows the pre-flight, then line 3 as bad (the side and the
plain reason) and nothing started; "Start the 2 good lines" starts the others, which end
exact; the results CSV says what happened to each line; the corrected line, uploaded
again, starts by itself and ends exact.  At 390 px every page fits
(tests/web/phone.py: nothing sideways, clipped or broken).  Screenshots go to ``YIPPIEMOVE_SCREENSHOTS`` if set.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Browser, Page, expect

from tests.svckit import assert_exact
from tests.transfer.test_move import populate
from tests.web.browser import free_port, new_page
from tests.web.phone import assert_fits_phone
from tests.web.test_browser import serve, shot, sign_up, stop

pytestmark = pytest.mark.timeout(300)


def row(server: Any, src: str, src_pw: str, dst: str, dst_pw: str) -> str:
    at = f"127.0.0.1,{server.port},starttls"
    return f"{at},{src},{src_pw},{at},{dst},{dst_pw}\n"


def upload(page: Page, base: str, name: str, text: str) -> None:
    page.goto(base + "/batch")
    page.set_input_files(
        "input[name=file]", {"name": name, "mimeType": "text/csv", "buffer": text.encode()}
    )
    page.click("button:has-text('Check the lines and start')")
    page.wait_for_url("**/batches/*")


def test_a_batch_with_one_bad_line_caught_by_preflight(
    browser: Browser, dovecot_factory: Callable[..., Any], tmp_path: Path
) -> None:
    users = {f"user{i}": f"pw-src-{i}" for i in (1, 2, 3)}
    users.update({f"new{i}": f"pw-dst-{i}" for i in (1, 2, 3)})
    server = dovecot_factory(separator="/", users=users)
    for i in (1, 2, 3):
        populate(server, f"user{i}")
    port = free_port()
    log = tmp_path / "serve.log"
    proc = serve(tmp_path / "data", port, server.ca_file, log)
    base = f"http://127.0.0.1:{port}"
    page = new_page(browser, 1280, 900)
    phone: Page | None = None
    try:
        sign_up(page, base, "ada@example.org")
        text = (
            row(server, "user1", "pw-src-1", "new1", "pw-dst-1")
            + row(server, "user2", "pw-src-2", "new2", "pw-dst-2")
            + row(server, "user3", "Not-the-pw-3", "new3", "pw-dst-3")
        )
        upload(page, base, "example-org.csv", text)
        batch_url = page.url
        state = page.locator("[data-batch-state]")
        expect(state).to_have_attribute("data-batch-state", "checked", timeout=60_000)
        bad = page.locator("[data-line='3']")
        expect(bad).to_have_attribute("data-check", "bad")
        expect(bad.locator("[data-problem]")).to_have_text(
            "The source mailbox refused the user name or password."
        )
        expect(bad.locator("[data-problem-detail]")).to_be_hidden()  # under "Details"
        for n in (1, 2):
            expect(page.locator(f"[data-line='{n}']")).to_have_attribute("data-check", "ok")
        expect(page.locator("[data-preflight-done]")).to_contain_text(
            "1 line did not pass the check"
        )
        expect(page.locator("[data-preflight-done]")).to_contain_text("Nothing was started")
        assert "Not-the-pw-3" not in page.content()
        shot(page, "batch-01-preflight")

        phone = new_page(browser, 390, 844)
        phone.context.add_cookies(page.context.cookies())
        phone.goto(batch_url)
        expect(phone.locator("[data-line='3'] [data-problem]")).to_contain_text("refused the user")
        assert_fits_phone(phone, "batch-02-preflight")

        # Nothing started: the customer's transfer list is empty.
        page.goto(base + "/transfers")
        expect(page.locator("[data-job]")).to_have_count(0)

        page.goto(batch_url)
        page.click("[data-start-good]")
        expect(page.locator(".flash-ok")).to_contain_text("2 transfers started")
        expect(state).to_have_attribute("data-batch-state", "done", timeout=120_000)
        expect(page.locator("[data-total-done]")).to_have_text("2")
        expect(page.locator("[data-line='3']")).to_have_attribute("data-check", "bad")
        shot(page, "batch-03-done")

        r = page.request.get(batch_url + "/results.csv")
        assert r.ok and r.headers["content-type"].startswith("text/csv")
        rows = list(csv.DictReader(io.StringIO(r.text())))
        assert [(x["line"], x["preflight"], x["status"]) for x in rows] == [
            ("1", "ok", "done"),
            ("2", "ok", "done"),
            ("3", "bad", "not started"),
        ]
        assert "Not-the-pw-3" not in r.text()

        phone.goto(batch_url)
        assert_fits_phone(phone, "batch-04-done")
        phone.goto(base + "/batches")
        expect(phone.locator("[data-batch]")).to_have_count(1)
        assert_fits_phone(phone, "batch-05-list")

        # The corrected line, uploaded again: every line passes, it starts by itself.
        upload(page, base, "fix.csv", row(server, "user3", "pw-src-3", "new3", "pw-dst-3"))
        expect(state).to_have_attribute("data-batch-state", "done", timeout=120_000)
        expect(page.locator("[data-total-done]")).to_have_text("1")
        shot(page, "batch-06-fixed")
        page.goto(base + "/batches")
        expect(page.locator("[data-batch]")).to_have_count(2)
        shot(page, "batch-07-list")
        assert page.errors == [] and phone.errors == []  # type: ignore[attr-defined]
    except BaseException:
        print(log.read_text()[-5000:])
        raise
    finally:
        if phone is not None:
            phone.context.close()
        page.context.close()
        stop(proc)
    for i in (1, 2, 3):
        assert_exact(server, f"user{i}", f"pw-src-{i}", f"new{i}", f"pw-dst-{i}")
