"""Screenshots of every page, for a person to look at (not a test).

    .venv/bin/python -m tests.web.demo --port 8765 &
    .venv/bin/python -m tests.web.screenshots http://127.0.0.1:8765 /tmp/yippiemove-shots

Uses Debian's /usr/bin/chromium through Playwright.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

from playwright.sync_api import Page, sync_playwright

from tests.web.browser import CHROMIUM_ARGS, chromium_path

EMAIL = "demo@example.org"
PASSWORD = "demo-password-1"


def shoot(page: Page, out: Path, name: str, full: bool = True) -> None:
    path = out / f"{name}.png"
    page.screenshot(path=str(path), full_page=full)
    print(path)


def main(base: str, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=chromium_path(), args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1280, "height": 860})
        page.goto(base + "/")
        shoot(page, out, "01-home")
        page.goto(base + "/signup")
        shoot(page, out, "02-signup")
        page.goto(base + "/login")
        page.fill("input[name=email]", EMAIL)
        page.fill("input[name=password]", "wrong password")
        page.click("button[type=submit]")
        shoot(page, out, "03-login-failed")
        page.fill("input[name=password]", PASSWORD)
        page.click("button[type=submit]")
        page.wait_for_url("**/transfers")
        shoot(page, out, "04-transfers")
        page.goto(base + "/transfers/new")
        shoot(page, out, "05-new-source")
        page.click("label.provider:has(input[name=source_preset][value=other])")
        page.fill("input[name=source_host]", "mail.old.invalid")
        page.fill("input[name=source_username]", "ada@old.example")
        page.fill("input[name=source_password]", "secret")
        page.click("button[value=check_source]")
        page.wait_for_load_state()
        shoot(page, out, "06-new-source-error")
        page.fill("input[name=source_host]", "imap.old.example")
        page.fill("input[name=source_password]", "secret")
        page.click("button[value=check_source]")
        page.wait_for_selector("input[name=dest_username]")
        page.click("label.provider:has(input[name=dest_preset][value=fastmail])")
        shoot(page, out, "07-new-dest")
        page.fill("input[name=dest_username]", "ada@fastmail.com")
        page.fill("input[name=dest_password]", "app-password")
        page.click("button[value=check_dest]")
        page.wait_for_selector("input[name=folder]")
        shoot(page, out, "08-new-folders")
        page.click("button[value=start]")
        page.wait_for_url("**/transfers/*")
        time.sleep(1)
        shoot(page, out, "09-job-starting")
        time.sleep(14)
        shoot(page, out, "10-job-running")
        page.wait_for_selector("[data-summary] .summary", timeout=120_000)
        time.sleep(0.5)
        shoot(page, out, "11-job-done")
        page.goto(base + "/transfers?status=failed")
        shoot(page, out, "12-transfers-failed")
        page.click("a.btn:has-text('Open')")
        page.wait_for_load_state()
        shoot(page, out, "13-job-failed")
        page.goto(base + "/tokens")
        page.fill("input[name=name]", "migration script")
        page.click("button:has-text('Create token')")
        page.wait_for_load_state()
        shoot(page, out, "14-tokens")
        page.goto(base + "/batch")
        shoot(page, out, "15-batch")
        bad = out / "batch.csv"
        bad.write_text(
            "source_host,source_port,source_security,source_username,source_password,"
            "dest_host,dest_port,dest_security,dest_username,dest_password\n"
            "imap.old.example,993,tls,a@old.example,pw,imap.new.example,993,tls,a@new.example,pw\n"
            "imap.old.example,99999,tls,b@old.example,pw,imap.new.example,993,tls,b@new.example,pw\n"
            "imap.old.example,993,tls,c@old.example,,imap.new.example,993,tls,c@new.example,pw\n"
        )
        page.set_input_files("input[type=file]", str(bad))
        page.click("button:has-text('Check the lines and start')")
        page.wait_for_load_state()
        shoot(page, out, "16-batch-errors")
        page.goto(base + "/transfers/doesnotexist")
        shoot(page, out, "17-not-found")
        page.set_viewport_size({"width": 390, "height": 844})
        page.goto(base + "/transfers")
        shoot(page, out, "18-mobile-transfers")
        browser.close()


if __name__ == "__main__":
    main(sys.argv[1], Path(sys.argv[2]))
