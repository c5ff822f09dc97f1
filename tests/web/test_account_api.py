"""The account lifecycle over REST and the pages (issue 17), on the real Service with an
SMTP sink: hostile cases first (enumeration, reused / expired / foreign links, wrong
passwords), then the journeys (change password, change address, delete)."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator

import pytest
from fastapi.testclient import TestClient

from tests.svckit import SmtpSink, make_service, smtp_sink
from tests.web.conftest import Browser
from yippiemove.service.core import Service
from yippiemove.web.app import create_app

__all__ = ["make_service", "smtp_sink"]

API = "/api/v1"
PW = "correct horse battery"
NEW_PW = "staple orbit lantern 42"
ADA = "ada@example.org"


@pytest.fixture
def svc(make_service: Callable[..., Service], smtp_sink: SmtpSink) -> Service:
    return make_service(smtp_host="127.0.0.1", smtp_port=smtp_sink.port)


@pytest.fixture
def client(svc: Service) -> Iterator[TestClient]:
    with TestClient(create_app(svc), raise_server_exceptions=False) as c:
        yield c


def login(b: Browser, email: str, password: str) -> None:
    b.get("/login")
    r = b.post("/login", {"email": email, "password": password, "next": "/transfers"})
    assert r.status_code == 303, r.text
    b.get("/transfers")


def bearer(svc: Service, uid: int) -> dict[str, str]:
    return {"Authorization": f"Bearer {svc.create_token(uid, 'ci')}"}


def token_in(sink: SmtpSink, to: str, path: str) -> str:
    msg = sink.wait_for(lambda m: m["To"] == to and path in m.get_content())
    found = re.search(re.escape(path) + r"\?token=([\w-]+)", msg.get_content())
    assert found
    return found.group(1)


def test_a_reset_request_answers_the_same_for_any_address(
    svc: Service, client: TestClient, smtp_sink: SmtpSink
) -> None:
    svc.create_user(ADA, PW)
    known = client.post(f"{API}/password-resets", json={"email": ADA})
    unknown = client.post(f"{API}/password-resets", json={"email": "nobody@example.org"})
    assert known.status_code == unknown.status_code == 202
    assert known.json() == unknown.json()
    assert known.headers.keys() == unknown.headers.keys()
    # The pages too: the same page whatever the address.
    b = Browser(client)
    b.get("/password/forgot")
    one = b.post("/password/forgot", {"email": ADA})
    other = b.post("/password/forgot", {"email": "nobody@example.org"})
    assert one.status_code == other.status_code == 200
    strip = re.compile(r'name="csrf_token" value="[^"]*"|ada@example\.org|nobody@example\.org')
    assert strip.sub("", one.text) == strip.sub("", other.text)
    svc.notifier.flush()
    assert [m["To"] for m in smtp_sink.messages] == [ADA, ADA]
    # Throttled per client, whatever the address (5 free, then a wait).
    for _ in range(3):
        client.post(f"{API}/password-resets", json={"email": "x@example.org"})
    r = client.post(f"{API}/password-resets", json={"email": ADA})
    assert r.status_code == 429 and r.json()["code"] == "too_many_requests"


def test_reset_link_reused_expired_or_of_another_kind_says_so(
    svc: Service, client: TestClient, smtp_sink: SmtpSink
) -> None:
    uid = svc.create_user(ADA, PW)
    svc.create_user("bob@example.org", PW)
    h = bearer(svc, uid)
    client.post(f"{API}/password-resets", json={"email": ADA})
    t = token_in(smtp_sink, ADA, "/password/reset")
    b = Browser(client)
    page = b.get(f"/password/reset?token={t}")
    assert page.status_code == 200 and 'data-link-state="valid"' in page.text
    r = b.post("/password/reset", {"token": t, "password": NEW_PW, "password2": NEW_PW})
    assert (r.status_code, r.headers["location"]) == (303, "/login")
    assert svc.authenticate(ADA, NEW_PW) == uid
    assert client.get(f"{API}/account", headers=h).status_code == 200  # tokens kept
    # Reused: refused, saying so; the password stays the one set.
    b.get("/login")  # (a new session after the reset: its CSRF token)
    again = b.post("/password/reset", {"token": t, "password": PW, "password2": PW})
    assert again.status_code == 400 and "was used already" in again.text
    assert "was used already" in b.get(f"/password/reset?token={t}").text
    assert svc.authenticate(ADA, NEW_PW) == uid
    # An address-change link is not a reset link (and sets nothing).
    client.post(
        f"{API}/account/email", json={"email": "ada@new.example", "password": NEW_PW}, headers=h
    )
    e = token_in(smtp_sink, "ada@new.example", "/account/email/confirm")
    r = b.post("/password/reset", {"token": e, "password": PW, "password2": PW})
    assert r.status_code == 400 and "is not valid" in r.text
    # Expired.
    client.post(f"{API}/password-resets", json={"email": "bob@example.org"})
    t2 = token_in(smtp_sink, "bob@example.org", "/password/reset")
    real = svc.auth.clock
    svc.auth.clock = lambda: real() + 3601
    page = b.get(f"/password/reset?token={t2}")
    assert page.status_code == 400 and "is too old" in page.text
    r = b.post("/password/reset", {"token": t2, "password": NEW_PW, "password2": NEW_PW})
    assert r.status_code == 400 and "is too old" in r.text
    assert svc.authenticate("bob@example.org", PW) is not None


def test_change_password_over_rest_needs_the_current_one(svc: Service, client: TestClient) -> None:
    uid = svc.create_user(ADA, PW)
    h = bearer(svc, uid)
    svc.auth.session_save("a-browser", uid, {})
    r = client.put(
        f"{API}/account/password",
        json={"current_password": "nope nope nope", "new_password": NEW_PW},
        headers=h,
    )
    assert r.status_code == 403 and r.json()["code"] == "forbidden", r.text
    assert svc.auth.session_load("a-browser") is not None
    r = client.put(
        f"{API}/account/password", json={"current_password": PW, "new_password": "short"}, headers=h
    )
    assert r.status_code == 400 and "new_password" in r.json()["message"]
    r = client.put(
        f"{API}/account/password", json={"current_password": PW, "new_password": NEW_PW}, headers=h
    )
    assert r.status_code == 204, r.text
    assert svc.authenticate(ADA, NEW_PW) == uid
    assert svc.auth.session_load("a-browser") is None  # web sessions ended
    assert client.get(f"{API}/account", headers=h).json()["email"] == ADA  # token kept


def test_change_address_over_rest_and_confirm_on_the_page(
    svc: Service, client: TestClient, smtp_sink: SmtpSink
) -> None:
    uid = svc.create_user(ADA, PW)
    bob = svc.create_user("bob@example.org", PW)
    h = bearer(svc, uid)
    r = client.post(
        f"{API}/account/email", json={"email": "bob@example.org", "password": PW}, headers=h
    )
    taken = r.json()
    r = client.post(
        f"{API}/account/email", json={"email": "ada@new.example", "password": PW}, headers=h
    )
    assert r.status_code == 202 and r.json() == taken == {"status": "sent"}  # no leak
    got = client.get(f"{API}/account", headers=h).json()
    assert (got["email"], got["pending_email"]) == (ADA, "ada@new.example")
    t = token_in(smtp_sink, "ada@new.example", "/account/email/confirm")
    # Bob, logged in, opens Ada's link: it changes Ada's address (the link is the proof
    # that its reader holds the new mailbox), never Bob's.
    b = Browser(client)
    login(b, "bob@example.org", PW)
    assert b.get(f"/account/email/confirm?token={t}").status_code == 200
    r = b.post("/account/email/confirm", {"token": t})
    assert r.status_code == 303
    assert svc.user_email(bob) == "bob@example.org"
    assert svc.user_email(uid) == "ada@new.example"
    smtp_sink.wait_for(lambda m: m["To"] == ADA and "new address" in m["Subject"])
    again = b.post("/account/email/confirm", {"token": t})
    assert again.status_code == 400 and "was used already" in again.text
    r = client.post(
        f"{API}/account/email", json={"email": "x@y.example", "password": "bad"}, headers=h
    )
    assert r.status_code == 403


def test_delete_account_over_rest(svc: Service, client: TestClient, smtp_sink: SmtpSink) -> None:
    uid = svc.create_user(ADA, PW)
    h = bearer(svc, uid)
    r = client.request("DELETE", f"{API}/account", json={"password": "not it at all"}, headers=h)
    assert r.status_code == 403
    assert svc.user_email(uid) == ADA
    r = client.request("DELETE", f"{API}/account", json={"password": PW}, headers=h)
    assert r.status_code == 204, r.text
    assert client.get(f"{API}/account", headers=h).status_code == 401
    assert svc.authenticate(ADA, PW) is None
    smtp_sink.wait_for(lambda m: m["To"] == ADA and "deleted" in m["Subject"])


def test_delete_account_on_the_page(svc: Service, client: TestClient) -> None:
    uid = svc.create_user(ADA, PW)
    b = Browser(client)
    login(b, ADA, PW)
    page = b.get("/account")
    assert page.status_code == 200 and ADA in page.text
    r = b.post("/account/delete", {"password": PW})  # the box not ticked
    assert r.status_code == 400 and svc.user_email(uid) == ADA
    r = b.post("/account/delete", {"password": "wrong one", "confirm": "yes"})
    assert r.status_code == 403 and "nothing was deleted" in r.text
    r = b.post("/account/delete", {"password": PW, "confirm": "yes"})
    assert (r.status_code, r.headers["location"]) == (303, "/")
    assert "are deleted" in b.get("/").text
    assert b.get("/account", follow_redirects=False).status_code == 303  # to the login
