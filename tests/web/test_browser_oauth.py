"""Issue 16 in Chromium: "Sign in with Google / Microsoft" on both steps of the order,
against ``yippiemove serve`` (the real service, job processes), the test OAuth2 provider
(tests/doubles/oauth2.py, its real sign-in page) and a Dovecot that checks the tokens by
introspection.

1. Google on the source, Microsoft on the destination; the transfer runs on a throttled
   source link that drops every connection after 2.5 MB (so the job reconnects, and each
   new login needs a token; a folder fits in a connection, so each makes progress) while access tokens live 1 s: it survives at least three
   token expiries (refreshes counted at the provider) and ends exact.
2. A second order; mid-transfer the customer's consent is revoked at the provider: the
   job stops clearly ("Sign in again to Google to continue"), the customer signs in again
   from the job page, the same job resumes and ends exact (nothing doubled).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Browser, Page, expect

from tests import mailcheck
from tests.doubles.oauth2 import OAuthServer
from tests.faultproxy import Fault, FaultProxy
from tests.transfer.test_move import make_message
from tests.web.browser import free_port
from tests.web.test_browser import serve, shot, sign_up, stop

pytestmark = pytest.mark.timeout(600)

SRC, DST, DST2 = "src@example.test", "dst@example.test", "dst2@example.test"
USERS = {SRC: "srcpass", DST: "dstpass", DST2: "dst2pass"}
RATE = 1_500_000  # bytes/s each way on the source link
CUT = 2_500_000  # each source connection is dropped after this many bytes to the mover
FOLDERS, PER_FOLDER, SIZE = 6, 40, 30_000  # ~7 MB; a folder (~1.2 MB) fits in a connection


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    p = context.new_page()
    p.set_default_timeout(30_000)
    errors: list[str] = []
    p.on("pageerror", lambda exc: errors.append(str(exc)))
    p.on(
        "console",
        lambda m: (
            errors.append(m.text)
            if m.type == "error" and "Content Security Policy" in m.text
            else None
        ),
    )
    p.on("dialog", lambda d: d.accept())
    p.errors = errors  # type: ignore[attr-defined]
    try:
        yield p
    finally:
        context.close()


def sign_in_with(page: Page, provider: OAuthServer, button: str, address: str) -> None:
    """Press "Sign in with ..." and sign in at the provider's page."""
    page.click(button)
    page.wait_for_url(f"{provider.url}/**")
    page.fill("#email", address)
    page.click("#allow")


def order(page: Page, provider: OAuthServer, base: str, dest: str) -> str:
    """The order with both sides signed in; returns the transfer's id."""
    page.goto(base + "/transfers/new")
    sign_in_with(page, provider, "[data-sign-in=source-google]", SRC)
    expect(page.locator(".acct-summary")).to_contain_text(SRC)
    expect(page.locator(".acct-summary")).to_contain_text("Signed in with Google")
    sign_in_with(page, provider, "[data-sign-in=dest-microsoft]", dest)
    page.wait_for_selector("input[name=folder]")
    expect(page.locator(".summaries")).to_contain_text(dest)
    page.click("button:has-text('Start transfer')")
    page.wait_for_url(lambda url: "/transfers/" in url and not url.endswith("/new"))
    return page.url.rsplit("/", 1)[1]


def exact(port: int, dest: str) -> None:
    src = mailcheck.snapshot(port, SRC, USERS[SRC])
    dst = mailcheck.snapshot(port, dest, USERS[dest])
    for folder, msgs in src.items():
        assert dst.get(folder) == msgs, f"folder {folder!r} differs on {dest}"


def test_sign_in_token_expiries_revoke_and_sign_in_again(
    page: Page,
    oauth_server: OAuthServer,
    dovecot_factory: Callable[..., Any],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    server = dovecot_factory(
        users=dict(USERS), oauth2_introspection_url=oauth_server.introspection_url_with_credentials
    )
    for f in range(FOLDERS):
        first = f * PER_FOLDER
        server.deliver_many(
            SRC, f"Folder{f}", [make_message(i, size=SIZE) for i in range(first, first + 40)]
        )
    providers = tmp_path / "providers.json"
    oauth_server.providers_json(path=providers)
    oauth_server.access_lifetime = 1.0
    with FaultProxy(server.port) as link:
        monkeypatch.setenv("YIPPIEMOVE_OAUTH_PROVIDERS_FILE", str(providers))
        monkeypatch.setenv(
            "YIPPIEMOVE_OAUTH_IMAP",
            f"google=127.0.0.1:{link.port}:none,microsoft=127.0.0.1:{server.port}:starttls",
        )
        port = free_port()
        log = tmp_path / "serve.log"
        proc = serve(tmp_path / "data", port, server.ca_file, log)
        base = f"http://127.0.0.1:{port}"
        try:
            sign_up(page, base, "ada@example.org")
            # 1. Both sides signed in; the transfer outlives several access tokens.
            link.set_schedule(lambda n: [Fault.throttle(RATE), Fault.cut(CUT)], renumber=True)
            before = oauth_server.refreshed
            started = time.monotonic()
            jid = order(page, oauth_server, base, DST)
            shot(page, "oauth-01-running")
            expect(page.locator("[data-summary] .outcome")).to_contain_text(
                "All done", timeout=240_000
            )
            took = time.monotonic() - started
            refreshes = oauth_server.refreshed - before
            assert refreshes >= 3, (refreshes, took, link.connections)
            exact(server.port, DST)
            assert page.locator("[data-forget-sign-in]").count() == 1
            shot(page, "oauth-02-done")
            print(
                f"transfer 1: {took:.1f} s, {link.connections} source connections, "
                f"{refreshes} token refreshes, access tokens live 1 s"
            )

            # 2. Consent revoked mid-transfer: a clear stop, sign in again, resumed, exact.
            jid2 = order(page, oauth_server, base, DST2)
            assert jid2 != jid
            page.wait_for_function(
                "() => Number(document.querySelector('[data-percent]').textContent) > 0",
                timeout=60_000,
            )
            oauth_server.revoke(SRC)
            stopped = page.locator("[data-sign-in-needed]")
            expect(stopped).to_contain_text("Sign in again to Google to continue", timeout=120_000)
            expect(page.locator("[data-status-badge]")).to_have_text("Failed")
            shot(page, "oauth-03-sign-in-again")
            partial = mailcheck.snapshot(server.port, DST2, USERS[DST2])
            copied = sum(sum(c.values()) for c in partial.values())
            total = sum(
                sum(c.values()) for c in mailcheck.snapshot(server.port, SRC, "srcpass").values()
            )
            assert 0 < copied < total, (copied, total)
            page.click("[data-sign-in-again=source]")
            page.wait_for_url(f"{oauth_server.url}/**")
            page.fill("#email", SRC)
            page.click("#allow")
            page.wait_for_url(f"{base}/transfers/{jid2}")
            expect(page.locator(".flash")).to_contain_text("the transfer continues")
            expect(page.locator("[data-summary] .outcome")).to_contain_text(
                "All done", timeout=240_000
            )
            exact(server.port, DST2)
            shot(page, "oauth-04-resumed")
            # The provider's answers (code, state) are not in the service's log.
            text = log.read_text()
            assert "/oauth/callback?(hidden)" in text
            assert "code=" not in text and "state=" not in text
            assert page.errors == []  # type: ignore[attr-defined]
        except BaseException:
            print(log.read_text()[-6000:])
            raise
        finally:
            stop(proc)
