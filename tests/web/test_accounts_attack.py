"""Issue 14, attack class 5 (accounts): a hostile customer against the log-in, sign-up,
session and password rules of the web front door over the REAL service.

* an attacker guessing from many addresses cannot lock the owner out;
* the throttle is in the control database: a restart (or another process) keeps it;
* sign-up says the same for an address with an account and one without, and is
  throttled; the address's owner learns by e-mail what happened;
* a logged-out cookie, and the other sessions after a password change, are refused;
* ``Secure`` cookies over https, and behind a proxy only when told to trust it;
* one password rule (12+ characters, not a common password) in the web and the CLI.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from fastapi import FastAPI
from fastapi.testclient import TestClient

from tests.svckit import SmtpSink
from tests.web.conftest import Browser
from yippiemove.cli import main
from yippiemove.service.config import Settings
from yippiemove.service.core import Service
from yippiemove.web.app import SESSION_COOKIE, create_app

OWNER = "owner@example.org"
OWNER_PW = "owner's long passphrase 42"

_CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')


@pytest.fixture
def services(tmp_path: Path) -> Iterator[Callable[..., Service]]:
    """``services(**settings)``: a real Service over ``tmp_path/data`` (same database
    each call: a second one is the service after a restart, or another process)."""
    made: list[Service] = []

    def make(**overrides: Any) -> Service:
        svc = Service(Settings.load(tmp_path / "data", maintenance_interval=3600.0, **overrides))
        made.append(svc)
        return svc

    yield make
    for svc in made:
        svc.close()


def browser(app: FastAPI, address: str = "198.51.100.7", **kw: Any) -> Browser:
    return Browser(TestClient(app, client=(address, 40000), **kw))


def login(b: Browser, email: str, password: str) -> int:
    b.get("/login")
    return int(b.post("/login", {"email": email, "password": password}).status_code)


def test_guessing_from_many_addresses_does_not_lock_the_owner_out(
    services: Callable[..., Service],
) -> None:
    svc = services()
    svc.create_user(OWNER, OWNER_PW)
    app = create_app(svc)
    refused = 0
    for n in range(6):  # 6 addresses x 10 guesses: over any per-account hard limit
        attacker = browser(app, f"203.0.113.{n + 1}")
        for _ in range(11):
            status = login(attacker, OWNER, "not the password")
            assert status in (400, 429)
            refused += status == 429
    assert refused >= 6  # each guessing address is slowed down...
    owner = browser(app, "198.51.100.7")
    assert login(owner, OWNER, OWNER_PW) == 303  # ...the owner, elsewhere, is not
    assert owner.get("/transfers", follow_redirects=False).status_code == 200


def test_the_throttle_survives_a_restart(services: Callable[..., Service]) -> None:
    svc = services()
    svc.create_user(OWNER, OWNER_PW)
    attacker = browser(create_app(svc), "203.0.113.9")
    for _ in range(10):
        assert login(attacker, OWNER, "not the password") == 400
    assert login(attacker, OWNER, "still not it") == 429
    svc.close()
    # A new service and app on the same control database: a restart, or a second process.
    again = browser(create_app(services()), "203.0.113.9")
    assert login(again, OWNER, "not it either") == 429


def _normal(page: str, *emails: str) -> str:
    for e in emails:
        page = page.replace(e, "EMAIL")
    return _CSRF.sub("CSRF", page)


def test_signup_does_not_say_whether_an_address_has_an_account(
    services: Callable[..., Service],
) -> None:
    sink = SmtpSink()
    sink.controller.start()
    try:
        svc = services(smtp_host="127.0.0.1", smtp_port=sink.port)
        svc.create_user(OWNER, OWNER_PW)
        b = browser(create_app(svc))
        b.get("/signup")
        pw = "a fresh long passphrase"
        existing = b.post("/signup", {"email": OWNER, "password": pw, "password2": pw})
        new = b.post("/signup", {"email": "new@example.org", "password": pw, "password2": pw})
        assert existing.status_code == new.status_code == 200
        assert _normal(existing.text, OWNER) == _normal(new.text, "new@example.org")
        assert existing.headers.get("location") == new.headers.get("location")

        note = sink.wait_for(lambda m: m["To"] == OWNER)
        assert "has one already" in note.get_content()
        assert svc.authenticate(OWNER, OWNER_PW) is not None  # unchanged
        assert svc.authenticate(OWNER, pw) is None
        invite = sink.wait_for(lambda m: m["To"] == "new@example.org")
        link = re.search(r"/signup/confirm\?token=[\w-]+", invite.get_content())
        assert link is not None
        assert svc.authenticate("new@example.org", pw) is None  # not before the link
        page = b.get(link.group(0))
        assert page.status_code == 200
        token = link.group(0).split("token=")[1]
        r = b.post("/signup/confirm", {"token": token})
        assert r.status_code == 303 and r.headers["location"] == "/transfers/new"
        assert svc.authenticate("new@example.org", pw) is not None
        assert b.get(link.group(0)).status_code == 400  # once only
        late = browser(create_app(svc))
        late.get("/signup")
        assert late.post("/signup/confirm", {"token": token}).status_code == 400
    finally:
        sink.controller.stop()


def test_signup_is_throttled_per_address(services: Callable[..., Service]) -> None:
    svc = services()
    app = create_app(svc)
    statuses = []
    for n in range(8):  # a fresh session each time, as a bot would
        b = browser(app, "203.0.113.50")
        b.get("/signup")
        pw = f"a long passphrase number {n}"
        r = b.post("/signup", {"email": f"bot{n}@example.org", "password": pw, "password2": pw})
        statuses.append(r.status_code)
    assert 429 in statuses
    other = browser(app, "198.51.100.60")
    other.get("/signup")
    pw = "someone else entirely"
    r = other.post("/signup", {"email": "me@example.org", "password": pw, "password2": pw})
    assert r.status_code == 303


def test_a_logged_out_cookie_is_refused(services: Callable[..., Service]) -> None:
    svc = services()
    svc.create_user(OWNER, OWNER_PW)
    app = create_app(svc)
    b = browser(app)
    assert login(b, OWNER, OWNER_PW) == 303
    stolen = b.client.cookies.get(SESSION_COOKIE)
    assert stolen
    b.get("/transfers")
    assert b.post("/logout").status_code == 303
    thief = TestClient(app, cookies={SESSION_COOKIE: stolen})
    r = thief.get("/transfers", follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"].startswith("/login")


def test_a_password_change_logs_out_the_other_sessions(
    services: Callable[..., Service],
) -> None:
    svc = services()
    svc.create_user(OWNER, OWNER_PW)
    app = create_app(svc)
    laptop, phone = browser(app), browser(app, "198.51.100.8")
    assert login(laptop, OWNER, OWNER_PW) == 303
    assert login(phone, OWNER, OWNER_PW) == 303
    laptop.get("/account/password")
    new_pw = "a brand new passphrase 7"
    r = laptop.post(
        "/account/password",
        {"current_password": OWNER_PW, "password": new_pw, "password2": new_pw},
    )
    assert r.status_code == 303, r.text
    assert laptop.get("/transfers", follow_redirects=False).status_code == 200  # kept
    r = phone.get("/transfers", follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"].startswith("/login")
    assert svc.authenticate(OWNER, new_pw) is not None
    assert svc.authenticate(OWNER, OWNER_PW) is None


def _cookie(r: Any) -> str:
    return str(r.headers.get("set-cookie", "")).lower()


def test_secure_cookie_over_https_and_behind_a_trusted_proxy_only(
    services: Callable[..., Service], tmp_path: Path
) -> None:
    svc = services()
    app = create_app(svc)
    over_https = TestClient(app, base_url="https://yippiemove.example")
    assert "; secure" in _cookie(over_https.get("/login"))
    plain = TestClient(app)
    assert "; secure" not in _cookie(plain.get("/login"))
    # A proxy's word is not believed unless the operator says so...
    spoofed = TestClient(app, headers={"X-Forwarded-Proto": "https"})
    assert "; secure" not in _cookie(spoofed.get("/login"))
    # ...and is with trust_proxy.
    trusted = create_app(svc, settings=Settings.load(tmp_path / "data", trust_proxy=True))
    proxied = TestClient(trusted, headers={"X-Forwarded-Proto": "https"})
    assert "; secure" in _cookie(proxied.get("/login"))


WEAK = [
    "aaaaaaaaaa",  # 10 identical characters: passed before
    "aaaaaaaaaaaaaaaa",  # long but a repeat
    "password1234",  # a common password
    "qwertyuiopasdf",  # a keyboard row
    "Tr0ub4dor&3",  # 11 characters
]


@pytest.mark.parametrize("weak", WEAK)
def test_weak_passwords_are_refused_on_the_web(services: Callable[..., Service], weak: str) -> None:
    b = browser(create_app(services()))
    b.get("/signup")
    r = b.post("/signup", {"email": "weak@example.org", "password": weak, "password2": weak})
    assert r.status_code == 400
    assert "at least 12 characters" in r.text or "too common" in r.text


@pytest.mark.parametrize("weak", WEAK)
def test_weak_passwords_are_refused_by_the_cli(tmp_path: Path, weak: str) -> None:
    pw = tmp_path / "pw"
    pw.write_text(weak + "\n")
    r = CliRunner().invoke(
        main,
        [
            "user",
            "create",
            "weak@example.org",
            "--password-file",
            str(pw),
            "--data-dir",
            str(tmp_path / "data"),
        ],
    )
    assert r.exit_code != 0
    assert "at least 12 characters" in r.output or "too common" in r.output
    pw.write_text("a good long passphrase\n")
    r = CliRunner().invoke(
        main,
        [
            "user",
            "create",
            "weak@example.org",
            "--password-file",
            str(pw),
            "--data-dir",
            str(tmp_path / "data"),
        ],
    )
    assert r.exit_code == 0, r.output


def test_signups_for_one_address_do_not_flood_its_inbox(
    services: Callable[..., Service],
) -> None:
    sink = SmtpSink()
    sink.controller.start()
    try:
        svc = services(smtp_host="127.0.0.1", smtp_port=sink.port)
        svc.create_user(OWNER, OWNER_PW)
        app = create_app(svc)
        pages = set()
        for n in range(8):  # from 8 addresses: no address is throttled
            b = browser(app, f"203.0.113.{100 + n}")
            b.get("/signup")
            pw = f"a long passphrase number {n}"
            r = b.post("/signup", {"email": OWNER, "password": pw, "password2": pw})
            assert r.status_code == 200
            pages.add(_normal(r.text, OWNER))
        assert len(pages) == 1  # the same answer, mail sent or not
        sink.wait_for(lambda m: m["To"] == OWNER)
        svc.notifier.flush()
        assert 1 <= sum(m["To"] == OWNER for m in sink.messages) <= 3
    finally:
        sink.controller.stop()
