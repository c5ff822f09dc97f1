"""Issue 17's rough edges, in Chromium over the fake service (fast): the new-token page
shows a token once and a reload makes none; ``/docs`` shows the REST API with every file
from this server under its CSP; the "on its way" banner goes when the job ends."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page, Request, expect

from tests.web.browser import free_port
from tests.web.demo import BackgroundServer
from tests.web.fakes import FakeService, Settings
from tests.web.test_browser import order, page, sign_up  # noqa: F401  (fixtures)

pytestmark = pytest.mark.timeout(120)

GMAIL = {"preset": "gmail", "username": "ada@gmail.com", "password": "pw"}
FASTMAIL = {"preset": "fastmail", "username": "ada@fastmail.com", "password": "pw"}


def test_reloading_the_new_token_page_makes_no_token(page: Page, tmp_path: Path) -> None:  # noqa: F811
    from yippiemove.web.app import create_app

    fake = FakeService(Settings.load(tmp_path / "data"))
    with BackgroundServer(create_app(fake, settings=fake.settings), free_port()) as base:
        sign_up(page, base, "ada@example.org")
        page.goto(base + "/tokens")
        page.fill("input[name=name]", "script")
        page.click("button:has-text('Create token')")
        token = page.locator("#new-token").inner_text()
        assert token.startswith("ym_") and len(fake.tokens) == 1
        page.reload()
        page.wait_for_load_state()
        expect(page.locator("#new-token")).to_have_count(0)
        assert token not in page.content()
        page.go_back()  # the form page before: nothing is sent again either
        page.reload()
        assert len(fake.tokens) == 1
        assert page.errors == []  # type: ignore[attr-defined]


def test_docs_page_shows_the_api_from_this_server_only(page: Page, tmp_path: Path) -> None:  # noqa: F811
    from yippiemove.web.app import create_app

    fake = FakeService(Settings.load(tmp_path / "data"))
    requested: list[str] = []

    def on_request(req: Request) -> None:
        requested.append(req.url)

    page.on("request", on_request)
    with BackgroundServer(create_app(fake, settings=fake.settings), free_port()) as base:
        r = page.goto(base + "/docs")
        assert r is not None and r.status == 200
        assert "script-src 'self'" in r.headers["content-security-policy"]
        expect(page.locator(".opblock").first).to_be_visible()
        spec = page.request.get(base + "/openapi.json").json()
        operations = sum(len(ops) for ops in spec["paths"].values())
        page.wait_for_function(
            "n => new Set([...document.querySelectorAll('.opblock')].map("
            "b => b.querySelector('.opblock-summary-method').textContent + ' ' +"
            " b.querySelector('.opblock-summary-path').textContent)).size === n",
            arg=operations,
        )  # each operation (some are under two tags)
        expect(page.locator(".info .title")).to_contain_text("yippiemove")
        assert page.errors == []  # type: ignore[attr-defined]  (a CSP violation is one)
    assert requested and all(u.startswith(base) or u.startswith("data:") for u in requested)


def test_on_its_way_banner_goes_when_the_job_ends(page: Page, tmp_path: Path) -> None:  # noqa: F811
    from yippiemove.web.app import create_app

    fake = FakeService(Settings.load(tmp_path / "data"), job_seconds=2)
    with BackgroundServer(create_app(fake, settings=fake.settings), free_port()) as base:
        sign_up(page, base, "ada@example.org")
        order(page, base, GMAIL, FASTMAIL)
        banner = page.locator(".flash", has_text="on its way")
        expect(banner).to_be_visible()
        expect(page.locator("[data-status-badge]")).to_have_text("Finished", timeout=20_000)
        expect(banner).to_have_count(0)  # live, without a reload
        url = page.url
        page.goto(base + "/transfers")
        page.goto(url)
        expect(page.locator(".flash", has_text="on its way")).to_have_count(0)
        assert re.search(r"/transfers/\w+", url)
        assert page.errors == []  # type: ignore[attr-defined]


def test_the_browsers_time_zone_is_kept_for_the_mails(browser: Browser, tmp_path: Path) -> None:
    """Sign-up and log-in send the browser's zone (app.js); the service keeps it for the
    times in the customer's mails (an unknown name is ignored)."""
    from yippiemove.service.core import Service
    from yippiemove.service.db import User
    from yippiemove.web.app import create_app

    svc = Service(Settings.load(tmp_path / "real", maintenance_interval=3600.0))
    context = browser.new_context(timezone_id="Asia/Tokyo")
    try:
        page = context.new_page()
        with BackgroundServer(create_app(svc), free_port()) as base:
            sign_up(page, base, "ada@example.org")
            with svc.db.read() as s:
                (user,) = s.query(User).all()
                assert user.timezone == "Asia/Tokyo"
            assert not svc.set_timezone(user.id, "Mars/Olympus_Mons")
            assert not svc.set_timezone(user.id, "../../etc/passwd")
            with svc.db.read() as s:
                assert s.get(User, user.id).timezone == "Asia/Tokyo"
    finally:
        context.close()
        svc.close()
