"""Every page at phone (390 px) and desktop (1280 px) widths, in Chromium, against
``yippiemove serve`` and a real Dovecot (issue 17: "every page usable at 390 px without
hidden information").  Each page goes through tests/web/phone.py (nothing sideways,
nothing past the window's edge, no text clipped) and leaves a screenshot at both widths
(``YIPPIEMOVE_SCREENSHOTS`` when set, else ``$TMPDIR/yippiemove-screenshots``).

- ``test_order_watch_done_at_phone_width``: the customer's first journey on a phone:
  a forgotten password's form and "sent" page, sign up (by mail: the sent and confirm
  pages), the three steps of the order (a source
  with many folders and long names), the job page while it runs and when it is done;
  the destination ends exact (tests/mailcheck.py).
- ``test_every_page_fits``: the rest: logged-out pages and error pages, the transfers
  list with jobs finished, failed, cancelled and running (each tab), the job page in each
  state, the report, the printable receipt, the undo preview, tokens, batch (with
  errors), the domain page, the account and password pages, forgotten password and its
  links, a wizard step with an error, /docs.
- ``test_pages_since_fit``: the pages that landed after the walk above: batches (the
  upload page with "notify end users" ticked, a batch's page while its lines are
  checked, with a bad line, running and done, the list), a staged move's schedule card
  with two passes in its history, the reset form reached from its mail, and the
  operators' console (search, a customer active and suspended, a transfer's report, the
  audit log).
- ``test_failures_and_altered_messages_fit``: the tables only a troubled transfer shows
  (messages not copied, stored altered, the live list of failures), over the FakeService.
"""

from __future__ import annotations

import re
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.sync_api import Browser, Page, expect
from playwright.sync_api import Error as PlaywrightError

from tests.faultproxy import Fault, FaultProxy
from tests.svckit import SmtpSink, assert_exact, smtp_sink
from tests.transfer.test_move import make_message, populate
from tests.web.browser import free_port
from tests.web.phone import DESKTOP, PHONE, assert_fits_both, assert_fits_phone, problems
from tests.web.test_browser import PASSWORD, dovecot_account, fill_account, serve, sign_up, stop
from yippiemove.testing.dovecot import MaildirMessage

__all__ = ["smtp_sink"]  # (the fixture)

pytestmark = pytest.mark.timeout(300)

#: Long names, as customers have them: nested, with spaces, accents and no spaces at all.
LONG_FOLDERS = [
    "Clients/Analytical Engines International Limited/Correspondence 2019-2024",
    "Clients/Analytical Engines International Limited/Invoices and purchase orders",
    "Projects/Difference engine number two — restoration and documentation",
    "Projects/Überweisungsbestätigungen-und-Kontoauszüge-Archiv",
    "Newsletters/averyveryverylongfoldernamewithoutanyspacesatalltobreakon2024",
] + [f"Archive/{year}/Quarterly reports and board minutes {year}" for year in range(2011, 2025)]
SRC_USER = "ada.lovelace-countess@analytical-engines.example.org"
DST_USER = "ada.king-noel@difference-engine-number-two.example.net"


def new_page(browser: Browser, viewport: dict[str, int]) -> Page:
    context = browser.new_context(viewport=viewport)  # type: ignore[arg-type]
    page = context.new_page()
    page.set_default_timeout(30_000)
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.on("dialog", lambda d: d.accept())  # "Cancel this transfer?" -> yes
    page.errors = errors  # type: ignore[attr-defined]
    return page


def many_folders(server: Any, user: str) -> None:
    populate(server, user)
    for k, name in enumerate(LONG_FOLDERS):
        server.deliver(user, name, make_message(5000 + k, size=2000))


def test_order_watch_done_at_phone_width(
    browser: Browser,
    dovecot_factory: Callable[..., Any],
    smtp_sink: SmtpSink,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    server = dovecot_factory(separator="/", users={SRC_USER: "srcpass", DST_USER: "dstpass"})
    many_folders(server, SRC_USER)
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    monkeypatch.setenv("YIPPIEMOVE_SMTP_HOST", "127.0.0.1")
    monkeypatch.setenv("YIPPIEMOVE_SMTP_PORT", str(smtp_sink.port))
    monkeypatch.setenv("YIPPIEMOVE_BASE_URL", base)
    log = tmp_path / "serve.log"
    proc = serve(tmp_path / "data", port, server.ca_file, log)
    page = new_page(browser, PHONE)
    try:
        page.goto(base + "/password/forgot")  # (with mail on: the form, then "sent")
        page.fill("input[name=email]", "nobody@example.org")
        assert_fits_both(page, "journey-00-forgot")
        page.click("button:has-text('Send me a link')")
        page.wait_for_load_state()
        assert_fits_both(page, "journey-00-forgot-sent")
        page.goto(base + "/")
        assert_fits_both(page, "journey-01-home")
        page.click("text=Sign up")
        page.fill("input[name=email]", "ada@example.org")
        page.fill("input[name=password]", PASSWORD)
        page.fill("input[name=password2]", PASSWORD)
        assert_fits_both(page, "journey-02-signup")
        page.click("button:has-text('Create account')")
        expect(page.locator("main")).to_contain_text("ada@example.org")
        assert_fits_both(page, "journey-03-signup-sent")
        mail = smtp_sink.wait_for(lambda m: "ada@example.org" in str(m["To"]))
        link = next(w for w in mail.get_content().split() if "/signup/confirm?token=" in w)
        page.goto(link.strip("<>.,"))
        assert_fits_both(page, "journey-04-signup-confirm")
        page.click("button:has-text('Create my account')")
        page.wait_for_url("**/transfers/new")
        assert_fits_both(page, "journey-05-source")

        fill_account(page, "source", dovecot_account(server, SRC_USER, "srcpass"))
        page.click("button:has-text('Check and continue')")
        page.wait_for_selector("input[name=dest_username]")
        assert_fits_both(page, "journey-06-destination")
        fill_account(page, "dest", dovecot_account(server, DST_USER, "dstpass"))
        page.click("button:has-text('Check and continue')")
        page.wait_for_selector("input[name=folder]")
        assert page.locator("input[name=folder]").count() >= len(LONG_FOLDERS)
        # The counts and destination names are on screen, not in a sideways box.
        row = page.locator("tr", has_text="Überweisungsbestätigungen")
        expect(row).to_contain_text("2.2 KB")
        assert_fits_both(page, "journey-07-folders")
        page.check("[data-staged-toggle]")  # "keep in sync until I switch": its fields
        assert_fits_both(page, "journey-07-folders-staged")
        page.uncheck("[data-staged-toggle]")

        page.click("button:has-text('Start transfer')")
        page.wait_for_url("**/transfers/*")
        assert_fits_phone(page, "journey-08-job-started")
        expect(page.locator("[data-summary] .outcome")).to_contain_text("All done", timeout=60_000)
        expect(page.locator("[data-summary] table.report")).to_contain_text("Überweisungs")
        assert_fits_both(page, "journey-09-job-done")
        assert page.errors == []  # type: ignore[attr-defined]
    except BaseException:
        print(log.read_text()[-5000:])
        raise
    finally:
        page.context.close()
        stop(proc)
    assert_exact(server, SRC_USER, "srcpass", DST_USER, "dstpass")


class Api:
    """The REST API with a token: orders the transfers the list needs, faster than forms."""

    def __init__(self, base: str, token: str) -> None:
        self.client = httpx.Client(
            base_url=base + "/api/v1", headers={"Authorization": f"Bearer {token}"}, timeout=30
        )

    def order(self, source: dict[str, Any], dest: dict[str, Any]) -> str:
        r = self.client.post("/transfers", json={"source": source, "dest": dest})
        assert r.status_code == 201, r.text
        return str(r.json()["id"])

    def wait(self, job_id: str, until: Callable[[dict[str, Any]], bool], timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while True:
            job = self.client.get(f"/transfers/{job_id}").json()
            if until(job):
                return
            assert time.monotonic() < deadline, job
            time.sleep(0.2)


def account(port: int, user: str, password: str, security: str = "starttls") -> dict[str, Any]:
    return {
        "host": "127.0.0.1",
        "port": port,
        "security": security,
        "username": user,
        "password": password,
    }


def test_every_page_fits(
    browser: Browser, dovecot_factory: Callable[..., Any], tmp_path: Path
) -> None:
    users = {SRC_USER: "srcpass", DST_USER: "dstpass", "slow": "slowpass"}
    users |= {f"dst{k}": f"dst{k}pass" for k in range(4)}
    server = dovecot_factory(separator="/", users=users)
    many_folders(server, SRC_USER)
    # ~12 MB through a 200 KB/s link: a minute, running through the walk.
    server.deliver_many(
        "slow", "INBOX", [MaildirMessage(make_message(9000 + k, size=60_000)) for k in range(200)]
    )
    port = free_port()
    log = tmp_path / "serve.log"
    seen: list[str] = []

    def check(page: Page, name: str) -> None:
        """Both widths; gather what does not fit (one report at the end, every page)."""
        for size in (DESKTOP, PHONE):
            page.set_viewport_size(size)  # type: ignore[arg-type]
            from tests.web.phone import screenshot_dir

            page.evaluate("document.fonts.ready")
            page.screenshot(
                path=str(screenshot_dir() / f"{name}-{size['width']}.png"), full_page=True
            )
            seen.extend(f"{name} at {size['width']}: {p}" for p in problems(page))

    with FaultProxy(server.port, lambda _i: [Fault.throttle(200_000)]) as slow_link:
        proc = serve(tmp_path / "data", port, server.ca_file, log)
        base = f"http://127.0.0.1:{port}"
        page = new_page(browser, DESKTOP)
        out = new_page(browser, DESKTOP)  # logged out
        try:
            # Logged out, and the error pages.
            out.goto(base + "/")
            check(out, "out-home")
            out.goto(base + "/login")
            check(out, "out-login")
            out.fill("input[name=email]", "nobody@example.org")
            out.fill("input[name=password]", "not the password")
            out.click("button[type=submit]:has-text('Log in')")
            expect(out.locator(".alert-error, .flash-error, .error").first).to_be_visible()
            check(out, "out-login-failed")
            out.goto(base + "/signup")
            out.fill("input[name=email]", "not-an-address")
            out.fill("input[name=password]", "short")
            out.click("button:has-text('Create account')")
            check(out, "out-signup-errors")
            out.goto(base + "/signup/confirm?token=no-such-token")
            check(out, "out-signup-confirm-invalid")
            out.goto(base + "/oauth/callback?state=nothing&code=nothing")
            check(out, "out-signed-in-error")
            out.goto(base + "/transfers/doesnotexist")
            check(out, "out-not-logged-in")
            out.goto(base + "/password/forgot")
            check(out, "out-forgot")
            out.goto(base + "/password/reset?token=no-such-token")
            check(out, "out-reset-invalid")
            out.goto(base + "/docs")
            out.wait_for_load_state("networkidle")
            check(out, "out-api-docs")

            sign_up(page, base, "grace.brewster.murray.hopper@example.org")
            page.goto(base + "/transfers")
            check(page, "transfers-empty")
            page.goto(base + "/tokens")
            page.fill("input[name=name]", "migration script for the whole of the finance team")
            page.click("button:has-text('Create token')")
            token = page.locator(".token").first.inner_text().strip()
            check(page, "tokens-new")
            api = Api(base, token)

            # Four transfers: finished, failed (a wrong password), running (through a slow
            # link, still running at the end), cancelled while it runs.
            src = account(server.port, SRC_USER, "srcpass")
            slow = account(slow_link.port, "slow", "slowpass", "none")
            done = api.order(src, account(server.port, DST_USER, "dstpass"))
            failed = api.order(src, account(server.port, "dst0", "wrong-password"))
            for job in (done, failed):
                api.wait(job, lambda j: j["status"] in ("done", "failed"), 60)
            running = api.order(slow, account(server.port, "dst1", "dst1pass"))
            cancelled = api.order(slow, account(server.port, "dst2", "dst2pass"))
            page.goto(f"{base}/transfers/{running}")
            expect(page.locator("[data-per-folder] tr[data-folder]")).to_have_count(1)
            check(page, "job-running")
            page.goto(f"{base}/transfers/{cancelled}")
            expect(page.locator("[data-status-badge]")).to_have_text("Running")
            page.click("button:has-text('Cancel transfer')")
            expect(page.locator("[data-status-badge]")).to_have_text("Cancelled")
            expect(page.locator("[data-summary] .outcome")).to_contain_text("Cancelled")
            check(page, "job-cancelled")
            page.goto(f"{base}/transfers/{done}")
            expect(page.locator("[data-summary] .outcome")).to_contain_text("All done")
            check(page, "job-done")
            page.goto(f"{base}/transfers/{failed}")
            expect(page.locator("[data-summary] [data-failure]")).to_be_visible()
            page.click("details.failure-detail summary")
            check(page, "job-failed")

            page.goto(f"{base}/transfers")
            expect(page.locator("tr[data-job] .badge")).to_have_text(
                ["Cancelled", "Running", "Failed", "Finished"]
            )
            check(page, "transfers-all")
            for tab in ("running", "finished", "failed", "cancelled"):
                page.goto(f"{base}/transfers?status={tab}")
                expect(page.locator("tr[data-job]")).to_have_count(1)
                check(page, f"transfers-{tab}")

            page.goto(f"{base}/transfers/{done}/messages")
            check(page, "report-messages")
            page.goto(f"{base}/transfers/{done}/receipt.html")
            check(page, "receipt")
            page.goto(f"{base}/transfers/{done}/undo")
            check(page, "undo-preview")

            page.goto(base + "/transfers/new")
            fill_account(
                page,
                "source",
                {
                    "host": "mail.old.invalid",
                    "port": "993",
                    "security": "tls",
                    "username": SRC_USER,
                    "password": "pw",
                },
            )
            page.click("button:has-text('Check and continue')")
            expect(page.locator("[data-wizard-error]")).to_be_visible()
            check(page, "new-source-error")

            page.goto(base + "/batch")
            check(page, "batch")
            csv = tmp_path / "batch.csv"
            csv.write_text(
                "source_host,source_port,source_security,source_username,source_password,"
                "dest_host,dest_port,dest_security,dest_username,dest_password\n"
                "imap.old.example,99999,tls,b@old.example,pw,imap.new.example,993,tls,"
                "b@new.example,pw\n"
                "imap.old.example,993,tls,c@old.example,,imap.new.example,993,tls,c@new.example,pw\n"
            )
            page.set_input_files("input[type=file]", str(csv))
            page.click("button:has-text('Check the lines and start')")
            page.wait_for_load_state()
            check(page, "batch-errors")
            page.goto(base + "/batch/domain")
            check(page, "domain")
            page.goto(base + "/account/password")
            check(page, "password")
            page.goto(base + "/account")
            check(page, "account")
            page.goto(base + "/account/email/confirm?token=no-such-token")
            check(page, "account-email-confirm-invalid")
            page.goto(base + "/transfers/doesnotexist")
            check(page, "not-found")
            assert page.errors == [] and out.errors == []  # type: ignore[attr-defined]
        except BaseException:
            print(log.read_text()[-5000:])
            raise
        finally:
            page.context.close()
            out.context.close()
            stop(proc)
    assert not seen, "hidden at these widths:\n" + "\n".join(seen)


def batch_line(port: int, src: str, src_pw: str, dst_port: int, dst: str, dst_pw: str) -> str:
    return f"127.0.0.1,{port},none,{src},{src_pw},127.0.0.1,{dst_port},starttls,{dst},{dst_pw}\n"


def sign_up_by_mail(page: Page, base: str, email: str, sink: SmtpSink) -> None:
    """Sign up with the service's mail on: the form, the mailed link, "Create my account"."""
    page.goto(base + "/signup")
    page.fill("input[name=email]", email)
    page.fill("input[name=password]", PASSWORD)
    page.fill("input[name=password2]", PASSWORD)
    page.click("button:has-text('Create account')")
    expect(page.locator("main")).to_contain_text(email)
    mail = sink.wait_for(lambda m: email in str(m["To"]))  # (its first mail)
    link = next(w for w in mail.get_content().split() if "/signup/confirm?token=" in w)
    page.goto(link.strip("<>.,"))
    page.click("button:has-text('Create my account')")
    page.wait_for_url("**/transfers/new")


def test_pages_since_fit(
    browser: Browser,
    dovecot_factory: Callable[..., Any],
    smtp_sink: SmtpSink,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Batches, a staged move's history, the reset form and the operators' console, each
    through :func:`assert_fits_both` (1280 and 390 px, screenshots kept)."""
    # No hyphen or space to break at: the address and the file name must wrap anyway.
    customer = "grace.brewster.murray.hopper.rear.admiral@analyticalenginesinternational.example"
    operator = "operator.on.duty@yippiemove.example.net"
    users = {SRC_USER: "srcpass", DST_USER: "dstpass", "slow": "slowpass"}
    users |= {f"dst{k}": f"dst{k}pass" for k in range(4)}
    server = dovecot_factory(separator="/", users=users)
    many_folders(server, SRC_USER)
    # ~6 MB through a 200 KB/s link: running for the rest of the walk, cancelled at the end.
    server.deliver_many(
        "slow", "INBOX", [MaildirMessage(make_message(9000 + k, size=60_000)) for k in range(100)]
    )
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    monkeypatch.setenv("YIPPIEMOVE_SMTP_HOST", "127.0.0.1")
    monkeypatch.setenv("YIPPIEMOVE_SMTP_PORT", str(smtp_sink.port))
    monkeypatch.setenv("YIPPIEMOVE_BASE_URL", base)
    monkeypatch.setenv("YIPPIEMOVE_STAGED_MIN_INTERVAL", "2")
    monkeypatch.setenv("YIPPIEMOVE_STAGED_POLL_INTERVAL", "0.5")
    log = tmp_path / "serve.log"
    data = tmp_path / "data"
    # The slow line's pre-flight log-in waits 3 s (the batch is seen "checking"); its
    # transfer then crawls.
    stall = [Fault.stall(verb="LOGIN", seconds=3)]
    with FaultProxy(server.port, lambda _i: stall) as slow_link:
        proc = serve(data, port, server.ca_file, log)
        page = new_page(browser, DESKTOP)
        op = new_page(browser, DESKTOP)
        out = new_page(browser, DESKTOP)
        try:
            sign_up_by_mail(page, base, customer, smtp_sink)
            page.goto(base + "/tokens")
            page.fill("input[name=name]", "staged")
            page.click("button:has-text('Create token')")
            api = Api(base, page.locator(".token").first.inner_text().strip())

            # A staged move: the first pass and a top-up in its history, the next one due.
            staged = api.client.post(
                "/transfers",
                json={
                    "source": account(server.port, SRC_USER, "srcpass"),
                    "dest": account(server.port, "dst3", "dst3pass"),
                    "schedule": {"interval": 2},
                },
            )
            assert staged.status_code == 201, staged.text
            staged_id = staged.json()["id"]

            # Batches: the upload page, notify ticked.
            page.goto(base + "/batch")
            page.check("[data-notify-end-users]")
            assert_fits_both(page, "since-batch-upload-notify")
            text = (
                "source_host,source_port,source_security,source_username,source_password,"
                "dest_host,dest_port,dest_security,dest_username,dest_password\n"
                + batch_line(server.port, SRC_USER, "srcpass", server.port, "dst0", "dst0pass")
                + batch_line(slow_link.port, "slow", "slowpass", server.port, "dst1", "dst1pass")
                + batch_line(server.port, SRC_USER, "Not-the-pw", server.port, "dst2", "dst2pass")
            )
            page.set_input_files(
                "input[name=file]",
                {
                    "name": "ExportOfEveryMailboxOfTheFinanceTeamAndTheBoardForTheMove2024.csv",
                    "mimeType": "text/csv",
                    "buffer": text.encode(),
                },
            )
            page.click("button:has-text('Check the lines and start')")
            page.wait_for_url("**/batches/*")
            batch_url = page.url
            state = page.locator("[data-batch-state]")  # (line 1 is the header)
            expect(state).to_have_attribute("data-batch-state", "checking")
            assert_fits_both(page, "since-batch-checking")
            expect(state).to_have_attribute("data-batch-state", "checked", timeout=30_000)
            expect(page.locator("[data-line='4']")).to_have_attribute("data-check", "bad")
            page.click("[data-line='4'] details.failure-detail summary")
            assert_fits_both(page, "since-batch-bad-line")
            slow_link.set_schedule(lambda _i: [Fault.throttle(200_000)])
            page.click("[data-start-good]")
            expect(state).to_have_attribute("data-batch-state", "running")
            expect(page.locator("[data-line='2']")).to_have_attribute("data-check", "started")
            assert_fits_both(page, "since-batch-running")

            # The staged move, two passes ended: the schedule card and its history.  (The
            # page's clock stands still while it is checked: it would reload for the next.)
            staged_page = new_page(browser, DESKTOP)
            staged_page.context.add_cookies(page.context.cookies())
            staged_page.clock.install()
            staged_page.goto(f"{base}/transfers/{staged_id}")
            expect(staged_page.locator("[data-pass='2']")).to_be_visible(timeout=30_000)
            staged_page.clock.pause_at(time.time() + 0.1)
            expect(staged_page.locator("[data-final-pass]")).to_be_visible()
            assert_fits_both(staged_page, "since-staged-history")
            staged_page.context.close()

            # The reset form, from its mail.
            out.goto(base + "/password/forgot")
            out.fill("input[name=email]", customer)
            out.click("button:has-text('Send me a link')")
            expect(out.locator("[data-forgot-sent]")).to_be_visible()
            mail = smtp_sink.wait_for(lambda m: m["To"] == customer and "Reset" in m["Subject"])
            link = re.search(r"(http://\S+/password/reset\?token=[\w-]+)", mail.get_content())
            assert link, mail.get_content()
            out.goto(link.group(1))
            out.fill("input[name=password]", "short")
            out.fill("input[name=password2]", "not the same")
            assert_fits_both(out, "since-reset-form")
            out.click("button:has-text('Set my new password')")
            assert_fits_both(out, "since-reset-form-errors")

            # The operators' console.
            sign_up_by_mail(op, base, operator, smtp_sink)
            made = subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "yippiemove.cli",
                    "user",
                    "set-role",
                    operator,
                    "operator",
                    "--data-dir",
                    str(data),
                ],
                capture_output=True,
                text=True,
                timeout=60,
            )
            assert made.returncode == 0, made.stderr
            op.goto(base + "/operator")
            assert_fits_both(op, "since-operator-console")
            op.fill("[data-customer-search]", "grace.")
            op.click("button:has-text('Search')")
            expect(op.locator("[data-customers] tbody tr")).to_have_count(1)
            assert_fits_both(op, "since-operator-search")
            op.click(f"[data-customers] a:has-text('{customer}')")
            expect(op.locator("[data-active]")).to_be_visible()
            assert_fits_both(op, "since-operator-customer")
            done_job = page.locator("[data-line='2'] a").get_attribute("href")
            slow_job = page.locator("[data-line='3'] a").get_attribute("href")
            assert done_job and slow_job
            op.goto(base + "/operator" + done_job)
            assert_fits_both(op, "since-operator-transfer")
            op.goto(base + "/operator" + slow_job)
            expect(op.locator("[data-cancel]")).to_be_visible()
            assert_fits_both(op, "since-operator-transfer-running")

            # The account page: a new address waiting for its link, a refused deletion.
            try:
                page.goto(base + "/account")
            except PlaywrightError as exc:  # the batch dashboard reloaded itself just then
                if "ERR_ABORTED" not in str(exc):
                    raise
                page.goto(base + "/account")
            page.fill("[data-account] input[name=email]", "g.hopper@" + "navy" * 12 + ".example")
            page.fill("[data-account] input[name=password]", PASSWORD)
            page.click("button:has-text('Change address')")
            expect(page.locator("[data-pending-email]")).to_be_visible()
            page.fill("[data-delete-account] input[name=password]", "not the password")
            page.click("[data-delete-account] button[type=submit]")
            expect(page.locator("[data-delete-account] .error").first).to_be_visible()
            assert_fits_both(page, "since-account-pending-and-errors")

            # The batch done: its slow line cancelled; the list of batches.
            page.goto(base + done_job)
            expect(page.locator("[data-summary] .outcome")).to_contain_text(
                "All done", timeout=60_000
            )
            page.goto(base + slow_job)
            page.click("button:has-text('Cancel transfer')")
            expect(page.locator("[data-status-badge]")).to_have_text("Cancelled")
            page.goto(batch_url)
            expect(state).to_have_attribute("data-batch-state", "done", timeout=30_000)
            assert_fits_both(page, "since-batch-done")
            page.goto(base + "/batches")
            expect(page.locator("[data-batch]")).to_have_count(1)
            assert_fits_both(page, "since-batches")

            op.goto(base + "/operator")
            op.fill("[data-customer-search]", "grace.")
            op.click("button:has-text('Search')")
            op.click(f"[data-customers] a:has-text('{customer}')")
            op.fill("[data-reason]", "chargeback on the card, disputed by the bank on the 3rd")
            op.click("[data-suspend]")
            expect(op.locator("[data-suspended]")).to_be_visible()
            assert_fits_both(op, "since-operator-customer-suspended")
            op.click("[data-console-link]")
            op.click("[data-audit-link]")
            expect(op.locator("[data-audit] tbody tr").first).to_contain_text("suspend")
            assert_fits_both(op, "since-operator-audit")
            errors = [p.errors for p in (page, op, out)]  # type: ignore[attr-defined]
            assert errors == [[], [], []], errors
        except BaseException:
            print(log.read_text()[-5000:])
            raise
        finally:
            for p in (page, op, out):
                p.context.close()
            stop(proc)


def test_failures_and_altered_messages_fit(browser: Browser, tmp_path: Path) -> None:
    """The tables only a troubled transfer shows (messages not copied, stored altered, the
    live list of failures), over the FakeService: long reasons and Message-IDs wrap."""
    from tests.web.demo import DEMO_EMAIL, DEMO_PASSWORD, BackgroundServer, seeded_service
    from yippiemove.web.app import create_app

    fake = seeded_service(tmp_path / "data")
    done = next(j for j in fake.jobs.values() if j.status == "done")
    running = fake.create_transfer(next(iter(fake.users)), done.source, done.dest, None)
    fake.advance(running.id, 0.3)
    reason = "[LIMIT] Message too large for the destination (52 MB): " + "x" * 80
    fake.add_failure(running.id, LONG_FOLDERS[4], 4710, reason)
    fake.add_failure(done.id, LONG_FOLDERS[4], 4711, reason)
    fake.add_altered(done.id, LONG_FOLDERS[3], 4712, "line endings changed to CRLF")
    page = new_page(browser, DESKTOP)
    app = create_app(fake, settings=fake.settings)  # type: ignore[arg-type]
    with BackgroundServer(app, free_port()) as base:
        page.goto(base + "/login")
        page.fill("input[name=email]", DEMO_EMAIL)
        page.fill("input[name=password]", DEMO_PASSWORD)
        page.click("button[type=submit]:has-text('Log in')")
        page.wait_for_url("**/transfers")
        page.goto(f"{base}/transfers/{running.id}")
        expect(page.locator("[data-failures-card]")).to_be_visible()
        assert_fits_both(page, "fake-failures-live")
        page.goto(f"{base}/transfers/{done.id}")
        expect(page.locator("[data-summary] table.failures")).to_contain_text("4711")
        expect(page.locator("[data-summary] table.altered")).to_contain_text("CRLF")
        assert_fits_both(page, "fake-failures-report")
    page.context.close()
