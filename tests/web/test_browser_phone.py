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
- ``test_failures_and_altered_messages_fit``: the tables only a troubled transfer shows
  (messages not copied, stored altered, the live list of failures), over the FakeService.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.sync_api import Browser, Page, expect

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
