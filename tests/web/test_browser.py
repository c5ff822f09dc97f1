"""Browser tests: Playwright driving Debian's chromium (/usr/bin/chromium) through the pages.

- ``test_ui_with_the_fake``: the pages over the FakeService (fast, no mail server): the
  provider cards, the three steps, live progress without a reload, the report, cancel, and
  no console error (a CSP violation would be one).
- ``test_end_to_end_with_the_real_service``: ``yippiemove serve`` (the real service, job
  processes and this web app) and a real Dovecot: sign up, order src -> dst through the
  three steps, watch it reach 100 % and the report appear, order another (a big mailbox)
  and cancel it, run it again to completion; the destination is checked with
  tests/mailcheck.py (imaplib, independent of the mover).  Finally the service is stopped
  (SIGTERM) while a job runs and its page streams progress: it must exit promptly.

Without chromium these tests skip, except in CI (``CI=true``) where they fail.
Set ``YIPPIEMOVE_SCREENSHOTS=DIR`` to keep screenshots of the real run.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.sync_api import Browser, ConsoleMessage, Page, expect

from tests import mailcheck
from tests.web.browser import free_port
from tests.web.demo import BackgroundServer
from tests.web.fakes import FakeService, Settings

pytestmark = pytest.mark.timeout(600)
ROOT = Path(__file__).resolve().parents[2]
PASSWORD = "correct horse battery"


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    p = context.new_page()
    p.set_default_timeout(30_000)
    errors: list[str] = []

    def on_console(msg: ConsoleMessage) -> None:
        # A form answered 400/413 on purpose is logged as a failed load: not an error here.
        expected = msg.text.startswith(
            "Failed to load resource: the server responded with a status of 4"
        )
        if msg.type == "error" and not expected:
            errors.append(msg.text)

    p.on("console", on_console)
    p.on("pageerror", lambda exc: errors.append(str(exc)))
    p.on("dialog", lambda d: d.accept())  # "Cancel this transfer?" -> yes
    p.errors = errors  # type: ignore[attr-defined]
    try:
        yield p
    finally:
        context.close()


# -- steps as a customer takes them ---------------------------------------------------------


def sign_up(page: Page, base: str, email: str) -> None:
    page.goto(base + "/")
    page.click("text=Sign up")
    page.fill("input[name=email]", email)
    page.fill("input[name=password]", PASSWORD)
    page.fill("input[name=password2]", PASSWORD)
    page.click("button:has-text('Create account')")
    page.wait_for_url("**/transfers/new")


def pick(page: Page, role: str, preset: str) -> None:
    page.click(f"label.provider:has(input[name={role}_preset][value={preset}])")


def fill_account(page: Page, role: str, account: dict[str, str]) -> None:
    pick(page, role, account.get("preset", "other"))
    if account.get("preset", "other") == "other":
        page.fill(f"input[name={role}_host]", account["host"])
        page.select_option(f"select[name={role}_security]", account["security"])
        page.fill(f"input[name={role}_port]", account["port"])
    page.fill(f"input[name={role}_username]", account["username"])
    page.fill(f"input[name={role}_password]", account["password"])


def order(page: Page, base: str, source: dict[str, str], dest: dict[str, str]) -> str:
    """The three steps; returns the new transfer's id."""
    page.goto(base + "/transfers/new")
    fill_account(page, "source", source)
    page.click("button:has-text('Check and continue')")
    page.wait_for_selector("input[name=dest_username]")
    fill_account(page, "dest", dest)
    page.click("button:has-text('Check and continue')")
    page.wait_for_selector("input[name=folder]")
    page.click("button:has-text('Start transfer')")
    page.wait_for_url(lambda url: "/transfers/" in url and not url.endswith("/new"))
    return page.url.rsplit("/", 1)[1]


def percent(page: Page) -> int:
    return int(page.inner_text("[data-percent]"))


def shot(page: Page, name: str) -> None:
    out = os.environ.get("YIPPIEMOVE_SCREENSHOTS")
    if out:
        Path(out).mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(Path(out) / f"{name}.png"), full_page=True)


# -- over the fake ------------------------------------------------------------------------


def test_ui_with_the_fake(page: Page, tmp_path: Path) -> None:
    from yippiemove.web.app import create_app

    fake = FakeService(Settings.load(tmp_path / "data"), job_seconds=6)
    app = create_app(fake, settings=fake.settings)  # type: ignore[arg-type]
    with BackgroundServer(app, free_port()) as base:
        sign_up(page, base, "ada@example.org")
        expect(page.locator(".flash")).to_contain_text("Welcome")

        # Step 1: a failing check says why, and keeps what was typed.
        fill_account(
            page,
            "source",
            {
                "host": "mail.old.invalid",
                "port": "993",
                "security": "tls",
                "username": "ada",
                "password": "pw",
            },
        )
        page.click("button:has-text('Check and continue')")
        expect(page.locator("[data-wizard-error]")).to_contain_text(
            "We could not use the source mailbox: host 'mail.old.invalid' not found"
        )
        expect(page.locator("input[name=source_host]")).to_have_value("mail.old.invalid")
        # A provider card hides the server fields and shows the provider's advice.
        pick(page, "source", "gmail")
        expect(page.locator("[data-server-for=source]")).to_be_hidden()
        expect(page.locator("[data-hint-for=source]")).to_contain_text("app password")
        page.fill("input[name=source_username]", "ada@gmail.com")
        page.fill("input[name=source_password]", "pw")
        page.click("button:has-text('Check and continue')")
        expect(page.locator(".acct-summary")).to_contain_text("ada@gmail.com")
        expect(page.locator(".acct-summary")).to_contain_text("8 folders · 5,877 messages")

        # Step 2, then 3: the folder list, the defaults, the running total.
        fill_account(
            page, "dest", {"preset": "fastmail", "username": "ada@fastmail.com", "password": "pw"}
        )
        page.click("button:has-text('Check and continue')")
        boxes = page.locator("input[name=folder]")
        expect(boxes).to_have_count(8)
        expect(page.locator("[data-selection-total]")).to_contain_text("6 of 8 folders")
        page.click("button:has-text('Select none')")
        expect(page.locator("[data-selection-total]")).to_contain_text("0 of 8 folders")
        page.click("button:has-text('Default selection')")
        page.click("label:has-text('Archive/2019')")
        expect(page.locator("[data-selection-total]")).to_contain_text("5 of 8 folders")
        page.click("button:has-text('Start transfer')")
        page.wait_for_url("**/transfers/*")
        job_id = page.url.rsplit("/", 1)[1]
        assert fake.created[-1][3] == {"include": [], "exclude": ["Archive/2019", "Spam", "Trash"]}

        # Live progress, with no reload: a marker set now must survive until the end.
        page.evaluate("window.__sameDocument = true")
        page.wait_for_function(
            "() => Number(document.querySelector('[data-percent]').textContent) > 0"
        )
        expect(page.locator("[data-status-badge]")).to_have_text("Running")
        page.wait_for_function(
            "() => document.querySelector('[data-rate-graph] .line').getAttribute('d').length > 20"
        )
        assert page.locator("[data-per-folder] tr").count() == 5
        # A throttled job says until when (the job process's Progress.throttled_until).
        fake.jobs[job_id].throttled_until = time.time() + 600
        expect(page.locator("[data-phase]")).to_contain_text("throttled by the server until")
        fake.jobs[job_id].throttled_until = None
        expect(page.locator("[data-phase]")).not_to_contain_text("throttled")
        expect(page.locator("[data-summary] .outcome")).to_contain_text(
            "Finished, with 1 message", timeout=60_000
        )
        assert percent(page) == 100
        assert page.evaluate("window.__sameDocument") is True
        expect(page.locator("[data-status-badge]")).to_have_text("Finished")
        expect(page.locator("[data-summary]")).to_contain_text("Message too large")
        expect(page.locator("a:has-text('Download the receipt')")).to_be_visible()
        expect(page.locator("[data-cancel-form]")).to_be_hidden()
        expect(page.locator("[data-rerun-form]")).to_be_visible()
        expect(page.locator("[data-failures-card]")).to_be_hidden()  # the report lists it

        # Another one, cancelled.
        other = order(
            page,
            base,
            {
                "host": "imap.old.example",
                "port": "993",
                "security": "tls",
                "username": "bo",
                "password": "pw",
            },
            {"preset": "icloud", "username": "bo@icloud.com", "password": "pw"},
        )
        assert other != job_id
        page.click("button:has-text('Cancel transfer')")
        expect(page.locator("[data-status-badge]")).to_have_text("Cancelled")
        expect(page.locator(".flash")).to_contain_text("The transfer is cancelled")

        page.goto(base + "/transfers?status=cancelled")
        expect(page.locator("tr[data-job]")).to_have_count(1)
        page.goto(base + "/transfers?status=finished")
        expect(page.locator(f"tr[data-job='{job_id}']")).to_have_count(1)
        assert page.errors == []  # type: ignore[attr-defined]


# -- over the real service, with `yippiemove serve` and Dovecot -------------------------------


def serve(
    data: Path, port: int, ca_file: Path, log: Path, extra_env: dict[str, str] | None = None
) -> subprocess.Popen[bytes]:
    """``yippiemove serve`` on ``port``; ``extra_env``: more settings (e.g. billing's)."""
    env = dict(
        os.environ,
        YIPPIEMOVE_PROGRESS_INTERVAL="0.2",
        YIPPIEMOVE_JOB_CONNECTIONS="1",
        YIPPIEMOVE_RESTART_DELAY="0.2",
    )
    env.update(extra_env or {})
    env.pop("YIPPIEMOVE_DATA_DIR", None)
    with open(log, "ab") as out:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "yippiemove.cli",
                "serve",
                "--data-dir",
                str(data),
                "--port",
                str(port),
                "--workers",
                "2",
                "--ca-file",
                str(ca_file),
            ],
            cwd=ROOT,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    deadline = time.monotonic() + 60
    while True:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                return proc
        except httpx.HTTPError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            stop(proc)
            raise AssertionError("yippiemove serve did not come up:\n" + log.read_text()[-3000:])
        time.sleep(0.1)


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)  # the group this test started
            proc.wait()


def dovecot_account(server: Any, user: str, password: str) -> dict[str, str]:
    return {
        "host": "127.0.0.1",
        "port": str(server.port),
        "security": "starttls",
        "username": user,
        "password": password,
    }


def same_or_fewer(src: dict[str, Counter[Any]], dst: dict[str, Counter[Any]]) -> None:
    """Every destination message is one of the source's (no duplicates, nothing foreign)."""
    for folder, msgs in dst.items():
        assert not (msgs - src.get(folder, Counter())), f"{folder}: not from the source"


def test_end_to_end_with_the_real_service(
    page: Page, dovecot_factory: Callable[..., Any], tmp_path: Path
) -> None:
    from tests.svckit import big_mailbox
    from tests.transfer.test_move import populate

    server = dovecot_factory(
        separator="/",
        users={
            "src": "srcpass",
            "dst": "dstpass",
            "big": "bigpass",
            "dst2": "dst2pass",
            "dst3": "dst3pass",
        },
    )
    populate(server, "src")
    big_mailbox(server, "big", count=4000)  # long enough that Cancel lands mid-transfer
    port = free_port()
    log = tmp_path / "serve.log"
    proc = serve(tmp_path / "data", port, server.ca_file, log)
    base = f"http://127.0.0.1:{port}"
    try:
        sign_up(page, base, "ada@example.org")
        shot(page, "real-01-new")

        # 1. src -> dst through the three steps; watch it to 100 % and the report.
        fill_account(page, "source", dovecot_account(server, "src", "srcpass"))
        page.click("button:has-text('Check and continue')")
        expect(page.locator(".acct-summary")).to_contain_text("messages")
        fill_account(page, "dest", dovecot_account(server, "dst", "dstpass"))
        page.click("button:has-text('Check and continue')")
        page.wait_for_selector("input[name=folder]")
        shot(page, "real-02-folders")
        names = page.locator("input[name=folder]").evaluate_all("els => els.map(e => e.value)")
        assert {"INBOX", "Archive/2019/Q1/Deep", "Entwürfe", "😀 Emoji", "R&D", "Sent"} <= set(
            names
        )
        assert page.locator("input[name=folder]:not(:checked)").count() == 0
        page.click("button:has-text('Start transfer')")
        page.wait_for_url("**/transfers/*")
        page.evaluate("window.__sameDocument = true")
        expect(page.locator("[data-summary] .outcome")).to_contain_text("All done", timeout=120_000)
        assert percent(page) == 100
        assert page.evaluate("window.__sameDocument") is True
        expect(page.locator("[data-status-badge]")).to_have_text("Finished")
        expect(page.locator("[data-summary] table.report")).to_contain_text("Entwürfe")
        expect(page.locator("a:has-text('Download the receipt')")).to_be_visible()
        shot(page, "real-03-done")
        receipt = page.request.get(page.url + "/receipt")
        assert receipt.ok and receipt.body().startswith(b"SQLite format 3")

        src = mailcheck.snapshot(server.port, "src", "srcpass")
        dst = mailcheck.snapshot(server.port, "dst", "dstpass")
        for folder, msgs in src.items():
            assert dst.get(folder) == msgs, f"folder {folder!r} differs"

        # 2. A big one, cancelled while it runs; nothing doubled, then run again to the end.
        big_id = order(
            page,
            base,
            dovecot_account(server, "big", "bigpass"),
            dovecot_account(server, "dst2", "dst2pass"),
        )
        page.wait_for_function(
            "() => Number(document.querySelector('[data-percent]').textContent) > 0",
            timeout=60_000,
        )
        shot(page, "real-04-running")
        page.click("button:has-text('Cancel transfer')")
        expect(page.locator("[data-status-badge]")).to_have_text("Cancelled", timeout=60_000)
        expect(page.locator("[data-summary] .outcome")).to_contain_text("Cancelled")
        # The folders it had not finished say so (issue 17), none "done" with 0 / N.
        expect(page.locator("[data-per-folder] .st-text-interrupted")).not_to_have_count(0)
        shot(page, "real-05-cancelled")
        big = mailcheck.snapshot(server.port, "big", "bigpass")
        partial = mailcheck.snapshot(server.port, "dst2", "dst2pass")
        same_or_fewer(big, partial)
        assert sum(sum(c.values()) for c in partial.values()) < sum(
            sum(c.values()) for c in big.values()
        )
        page.goto(base + "/transfers?status=cancelled")
        expect(page.locator(f"tr[data-job='{big_id}']")).to_have_count(1)

        page.goto(f"{base}/transfers/{big_id}")
        page.click("button:has-text('Run again')")
        expect(page.locator("[data-summary] .outcome")).to_contain_text("All done", timeout=300_000)
        shot(page, "real-06-rerun-done")
        final = mailcheck.snapshot(server.port, "dst2", "dst2pass")
        for folder, msgs in big.items():
            assert final.get(folder) == msgs, f"folder {folder!r} differs after the re-run"
        assert page.errors == []  # type: ignore[attr-defined]

        # 3. The service stops cleanly (SIGTERM) while a job runs and its page is live.
        order(
            page,
            base,
            dovecot_account(server, "big", "bigpass"),
            dovecot_account(server, "dst3", "dst3pass"),
        )
        page.wait_for_function(
            "() => Number(document.querySelector('[data-percent]').textContent) > 0",
            timeout=60_000,
        )
        started = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0, log.read_text()[-3000:]
        assert time.monotonic() - started < 20
        # The page notices the lost stream and says so -- unless the transfer happened to
        # finish before the signal (the live indicator is then hidden for good).
        page.wait_for_function(
            "() => { const el = document.querySelector('[data-live]');"
            " return el.hidden || el.textContent.trim() === 'reconnecting'; }",
            timeout=10_000,
        )
    except BaseException:
        print(log.read_text()[-5000:])
        raise
    finally:
        stop(proc)


def test_missing_chromium_fails_in_ci_and_skips_elsewhere(monkeypatch: pytest.MonkeyPatch) -> None:
    import tests.web.browser as b

    monkeypatch.setattr(b.os.path, "exists", lambda p: False)
    monkeypatch.setattr(b.shutil, "which", lambda name: None)
    monkeypatch.delenv("YIPPIEMOVE_CHROMIUM", raising=False)
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="chromium is not installed"):
        b.require_chromium()
    monkeypatch.delenv("CI")
    with pytest.raises(pytest.skip.Exception):
        b.require_chromium()
