"""Chromium: the folder step's "More options" (issue 17, parity) against ``yippiemove
serve`` and a real Dovecot, at phone (390 px) and desktop widths.

At 390 px the options open without sideways scrolling, and wrong dates are refused
beside their field in words.  At desktop width the customer orders with a date filter,
a rename and "put everything in a folder", sees the table's names and counts after them
("Show the names and counts"), and the transfer ends exact with only the messages the
filter selects, in the renamed folder inside the chosen one.  Screenshots
go to ``YIPPIEMOVE_SCREENSHOTS``, else to the test's tmp directory.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Browser, Page, expect

from tests import mailcheck
from tests.transfer.test_move import make_message
from tests.web.browser import free_port, new_page
from tests.web.test_browser import dovecot_account, fill_account, serve, sign_up, stop

pytestmark = pytest.mark.timeout(300)
OLD = datetime(2015, 3, 3, 12, tzinfo=UTC)
NEW = datetime(2024, 3, 3, 12, tzinfo=UTC)


def shot(page: Page, tmp: Path, name: str) -> None:
    out = Path(os.environ.get("YIPPIEMOVE_SCREENSHOTS") or tmp / "screenshots")
    out.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(out / f"{name}.png"), full_page=True)


def to_folder_step(page: Page, server: Any) -> None:
    fill_account(page, "source", dovecot_account(server, "src", "srcpass"))
    page.click("button:has-text('Check and continue')")
    page.wait_for_selector("input[name=dest_username]")
    fill_account(page, "dest", dovecot_account(server, "dst", "dstpass"))
    page.click("button:has-text('Check and continue')")
    page.wait_for_selector("input[name=folder]")


def received(msg: mailcheck.Msg) -> datetime:
    return datetime.strptime(msg.date, "%d-%b-%Y %H:%M:%S %z")


def test_folder_step_date_filter_rename_under_exact(
    browser: Browser, dovecot_factory: Callable[..., Any], tmp_path: Path
) -> None:
    server = dovecot_factory(separator="/", users={"src": "srcpass", "dst": "dstpass"})
    for folder, first in (("INBOX", 0), ("Work", 10)):
        for i in range(first, first + 4):
            server.deliver("src", folder, make_message(i, size=300), (), OLD if i % 2 else NEW)
    port = free_port()
    log = tmp_path / "serve.log"
    proc = serve(tmp_path / "data", port, server.ca_file, log)
    base = f"http://127.0.0.1:{port}"
    phone = new_page(browser, 390, 844)
    desk = new_page(browser, 1280, 900)
    try:
        # Phone: the options open at 390 px without sideways scrolling; wrong dates are
        # refused beside their field, in words.
        sign_up(phone, base, "ada@example.org")
        to_folder_step(phone, server)
        phone.click("details[data-options] summary")
        phone.fill("[data-option=since]", "2024-06-01")
        phone.fill("[data-option=before]", "2024-01-01")
        assert phone.evaluate("document.documentElement.scrollWidth") <= 390
        shot(phone, tmp_path, "options-01-phone-open")
        phone.click("button:has-text('Start transfer')")
        expect(phone.locator("[data-option-error=before]")).to_contain_text("must be later")
        expect(phone.locator("[data-wizard-error]")).to_have_text(
            "Please correct the options below."
        )
        assert "--since" not in phone.content() and "folders." not in phone.content()
        assert phone.evaluate("document.documentElement.scrollWidth") <= 390
        shot(phone, tmp_path, "options-02-phone-error")

        # Desktop: the order, with a date filter, a rename and a folder for everything.
        desk.context.add_cookies(phone.context.cookies())
        desk.goto(base + "/transfers/new")
        to_folder_step(desk, server)
        desk.click("details[data-options] summary")
        desk.fill("[data-option=since]", "2020-01-01")
        desk.fill("[data-option=rename]", "Work = Projects")
        desk.fill("[data-option=under]", "Imported")
        # The table again, after the options: the names and the counts the transfer uses.
        desk.click("[data-options-preview]")
        work = desk.locator("tr:has(input[name=folder][value=Work])")
        expect(work.locator(".renamed")).to_have_text("→ Imported/Projects")
        expect(work.locator("td.num").first).to_have_text("2")
        expect(work.locator(".why")).to_have_text("your rename Work=Projects; put in Imported")
        expect(desk.locator("[data-option=rename]")).to_have_value("Work = Projects")
        shot(desk, tmp_path, "options-03-desktop-filled")
        desk.click("button:has-text('Start transfer')")
        desk.wait_for_url("**/transfers/*")
        expect(desk.locator("main")).to_contain_text(
            "only mail received on or after 2020-01-01; Work renamed to Projects; "
            "everything put in Imported"
        )
        expect(desk.locator("[data-summary] .outcome")).to_contain_text("All done", timeout=120_000)
        shot(desk, tmp_path, "options-04-desktop-done")
        phone.goto(desk.url)
        expect(phone.locator("[data-summary] .outcome")).to_contain_text("All done")
        assert phone.evaluate("document.documentElement.scrollWidth") <= 390
        shot(phone, tmp_path, "options-05-phone-done")
        assert desk.errors == [] and phone.errors == []  # type: ignore[attr-defined]
    except BaseException:
        print(log.read_text()[-5000:])
        raise
    finally:
        phone.context.close()
        desk.context.close()
        stop(proc)

    src = mailcheck.snapshot(server.port, "src", "srcpass")
    dst = mailcheck.snapshot(server.port, "dst", "dstpass")
    since = datetime(2020, 1, 1, tzinfo=UTC)
    wanted = {
        "INBOX": Counter(m for m in src["INBOX"].elements() if received(m) >= since),
        "Imported/Projects": Counter(m for m in src["Work"].elements() if received(m) >= since),
    }
    assert all(sum(c.values()) == 2 for c in wanted.values())
    assert {f: c for f, c in dst.items() if c} == wanted  # exact: only the filtered ones
