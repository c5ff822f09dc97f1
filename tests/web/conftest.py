"""Fixtures of the web tests: the app over the in-memory FakeService, logged-in clients."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from playwright.sync_api import Browser as Chromium
from playwright.sync_api import sync_playwright

from tests.web.browser import CHROMIUM_ARGS, require_chromium
from tests.web.fakes import FakeService, Settings
from yippiemove.web.app import create_app

_CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')


@pytest.fixture(scope="module")
def browser() -> Iterator[Chromium]:
    """Debian's Chromium through Playwright, one per test module (the browser tests)."""
    path = require_chromium()
    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=path, args=CHROMIUM_ARGS)
        try:
            yield b
        finally:
            b.close()


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings.load(tmp_path / "data")


@pytest.fixture
def fake(settings: Settings) -> FakeService:
    return FakeService(settings)


@pytest.fixture
def app(fake: FakeService, settings: Settings) -> FastAPI:
    app = create_app(fake, settings=settings)  # type: ignore[arg-type]
    app.state.sse_interval = 0.01
    return app


class Browser:
    """A TestClient with a session: sign up / log in and post forms with the CSRF token."""

    def __init__(self, client: TestClient) -> None:
        self.client = client
        self.csrf = ""

    def get(self, url: str, **kw: object):  # type: ignore[no-untyped-def]
        r = self.client.get(url, **kw)  # type: ignore[arg-type]
        m = (
            _CSRF.search(r.text)
            if r.headers.get("content-type", "").startswith("text/html")
            else None
        )
        if m:
            self.csrf = m.group(1)
        return r

    def post(self, url: str, data: dict | list | None = None, *, csrf: bool = True, **kw: object):  # type: ignore[no-untyped-def]
        """POST a form: ``data`` is a dict or (name, value) pairs (repeated names allowed)."""
        if not self.csrf:
            self.get("/login")
        pairs = list(data.items()) if isinstance(data, dict) else list(data or [])
        form: dict[str, list[str]] = {}
        for k, v in pairs:
            form.setdefault(k, []).append(v)
        if csrf and "csrf_token" not in form:
            form["csrf_token"] = [self.csrf]
        r = self.client.post(url, data=form, follow_redirects=False, **kw)  # type: ignore[arg-type]
        m = (
            _CSRF.search(r.text)
            if r.headers.get("content-type", "").startswith("text/html")
            else None
        )
        if m:
            self.csrf = m.group(1)
        return r

    def signup(self, email: str, password: str = "correct horse battery") -> None:
        self.get("/signup")
        r = self.post("/signup", {"email": email, "password": password, "password2": password})
        assert r.status_code == 303, r.text
        self.get("/transfers")


@pytest.fixture
def client(app: FastAPI) -> Iterator[TestClient]:
    with TestClient(app, base_url="http://testserver") as c:
        yield c


def new_browser(app: FastAPI) -> Browser:
    return Browser(TestClient(app, base_url="http://testserver"))


@pytest.fixture
def alice(app: FastAPI) -> Browser:
    b = new_browser(app)
    b.signup("alice@example.org")
    return b


@pytest.fixture
def bob(app: FastAPI) -> Browser:
    b = new_browser(app)
    b.signup("bob@example.org")
    return b
