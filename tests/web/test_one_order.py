"""One order, one transfer (issue 12), over the REAL Service: the same order posted ten
times at once, an API client retrying with an Idempotency-Key, a reload of the token
page, and the last step of the web order sent twice (a reload or Back)."""

from __future__ import annotations

import re
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from tests.transfer.test_move import make_message
from tests.web.conftest import Browser
from tests.web.htmlform import form_fields, with_values
from yippiemove.service.config import Settings
from yippiemove.service.core import Service
from yippiemove.service.db import Job
from yippiemove.testing.dovecot import DovecotServer
from yippiemove.web.app import create_app

API = "/api/v1"


@pytest.fixture
def real(tmp_path: Path) -> Iterator[Service]:
    """A real Service whose jobs are queued but not run (no workers started)."""
    svc = Service(Settings.load(tmp_path / "real", maintenance_interval=3600.0))
    try:
        yield svc
    finally:
        svc.close()


@pytest.fixture
def real_app(real: Service) -> FastAPI:
    return create_app(real)


def acc(user: str, host: str = "127.0.0.1", password: str = "pw-123") -> dict[str, Any]:
    return {
        "host": host,
        "port": 1143,
        "security": "starttls",
        "username": user,
        "password": password,
    }


def jobs_in_db(svc: Service) -> list[str]:
    with svc.db.read() as s:
        return [j.id for j in s.query(Job).all()]


def test_ten_identical_posts_at_once_make_one_transfer(real: Service, real_app: FastAPI) -> None:
    uid = real.create_user("alice@example.org", "alice password")
    headers = {"Authorization": f"Bearer {real.create_token(uid, 'ci')}"}
    body = {"source": acc("src"), "dest": acc("dst")}
    answers: list[Any] = [None] * 10
    start = threading.Barrier(10)

    with TestClient(real_app) as c:

        def post(i: int) -> None:
            start.wait()
            answers[i] = c.post(f"{API}/transfers", json=body, headers=headers)

        threads = [threading.Thread(target=post, args=(i,)) for i in range(10)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        codes = sorted(r.status_code for r in answers)
        assert codes == [201] + [409] * 9, [r.text for r in answers]
        (jid,) = jobs_in_db(real)
        assert {r.json()["id"] for r in answers} == {jid}  # every answer names it
        for r in answers:
            assert r.headers["location"] == f"{API}/transfers/{jid}"
            if r.status_code == 409:
                assert jid in r.json()["error"]
        # Another source into the same destination is another order (it waits when run);
        # the same pair spelled otherwise (host, user name case) is the same order.
        r = c.post(
            f"{API}/transfers",
            json={"source": acc("SRC", host="localhost"), "dest": acc("dst")},
            headers=headers,
        )
        assert r.status_code == 409 and r.json()["id"] == jid
        r = c.post(
            f"{API}/transfers", json={"source": acc("src2"), "dest": acc("dst")}, headers=headers
        )
        assert r.status_code == 201
        # Once the first ended, the pair can be ordered again.
        real.cancel_transfer(uid, jid)
        r = c.post(f"{API}/transfers", json=body, headers=headers)
        assert r.status_code == 201 and r.json()["id"] != jid
        # ... and the cancelled one cannot be re-run while the new one is queued.
        r = c.post(f"{API}/transfers/{jid}/rerun", headers=headers)
        assert r.status_code == 409 and r.json()["id"] == r.json()["id"] != jid, r.text


def test_idempotency_key(real: Service, real_app: FastAPI) -> None:
    uid = real.create_user("alice@example.org", "alice password")
    other = real.create_user("bob@example.org", "bob password!")
    ha = {"Authorization": f"Bearer {real.create_token(uid, 'ci')}", "Idempotency-Key": "k-1"}
    hb = {"Authorization": f"Bearer {real.create_token(other, 'ci')}", "Idempotency-Key": "k-1"}
    body = {"source": acc("src"), "dest": acc("dst")}
    with TestClient(real_app) as c:
        first = c.post(f"{API}/transfers", json=body, headers=ha)
        assert first.status_code == 201, first.text
        jid = first.json()["id"]
        # The same key and body: the first answer again, nothing new.
        again = c.post(f"{API}/transfers", json=body, headers=ha)
        assert (again.status_code, again.json()) == (201, first.json())
        assert again.headers["location"] == first.headers["location"]
        # Still the same answer when the job has moved on meanwhile.
        real.cancel_transfer(uid, jid)
        again = c.post(f"{API}/transfers", json=body, headers=ha)
        assert (again.status_code, again.json()) == (201, first.json())
        assert jobs_in_db(real) == [jid]
        # The same key with another body: 422 naming the key.
        changed = {"source": acc("src"), "dest": acc("dst", password="other-pw")}
        r = c.post(f"{API}/transfers", json=changed, headers=ha)
        assert r.status_code == 422 and "k-1" in r.json()["error"], r.text
        # Keys are per customer.
        r = c.post(f"{API}/transfers", json=body, headers=hb)
        assert r.status_code == 201 and r.json()["id"] != jid
        # A refused body is not remembered: the key can be used with a corrected one.
        hc = dict(ha, **{"Idempotency-Key": "k-2"})
        bad = {"source": acc("src"), "dest": acc("src")}
        assert c.post(f"{API}/transfers", json=bad, headers=hc).status_code == 400
        r = c.post(f"{API}/transfers", json={"source": acc("a"), "dest": acc("b")}, headers=hc)
        assert r.status_code == 201
        # Documented.
        op = c.get("/openapi.json").json()["paths"][f"{API}/transfers"]["post"]
        assert any(p["name"] == "Idempotency-Key" for p in op["parameters"])
        assert "409" in op["responses"] and "id" in str(op["responses"]["409"])


def test_a_reload_of_the_token_page_shows_no_token_and_creates_none(
    real: Service, real_app: FastAPI
) -> None:
    b = Browser(TestClient(real_app))
    b.signup("ada@example.org")
    b.get("/tokens")
    r = b.post("/tokens", {"name": "script"})
    assert r.status_code == 303 and r.headers["location"] == "/tokens"  # POST/redirect/GET
    page = b.get("/tokens")
    token = re.search(r'id="new-token">([^<]+)<', page.text).group(1)  # type: ignore[union-attr]
    assert real.user_for_token(token) is not None
    assert token not in r.headers["location"]
    reload = b.get("/tokens").text  # a reload shows it no more and creates nothing
    assert token not in reload and "new-token" not in reload
    uid = real.authenticate("ada@example.org", "correct horse battery")
    assert uid is not None and len(real.list_tokens(uid)) == 1


@pytest.fixture
def mailbox(dovecot: DovecotServer) -> DovecotServer:
    dovecot.deliver_many("src", "INBOX", [make_message(i) for i in range(5)])
    return dovecot


def test_the_last_order_step_sent_twice_makes_one_transfer(
    mailbox: DovecotServer, tmp_path: Path
) -> None:
    svc = Service(
        Settings.load(tmp_path / "svc", ca_file=str(mailbox.ca_file), maintenance_interval=3600.0)
    )
    try:
        b = Browser(TestClient(create_app(svc)))
        b.signup("ada@example.org")
        page = b.get("/transfers/new").text
        src = {
            "source_preset": "other",
            "source_host": "127.0.0.1",
            "source_port": str(mailbox.port),
            "source_security": "starttls",
            "source_username": "src",
            "source_password": "srcpass",
        }
        dst = {
            "dest_preset": "other",
            "dest_host": "127.0.0.1",
            "dest_port": str(mailbox.port),
            "dest_security": "starttls",
            "dest_username": "dst",
            "dest_password": "dstpass",
        }
        fields = with_values(form_fields(page, "/transfers/new"), **src, action="check_source")
        r = b.post("/transfers/new", fields)
        fields = with_values(form_fields(r.text, "/transfers/new"), **dst, action="check_dest")
        r = b.post("/transfers/new", fields)
        assert r.status_code == 200, r.text
        last = with_values(form_fields(r.text, "/transfers/new"), action="start")
        first = b.post("/transfers/new", last)
        assert first.status_code == 303
        b.get(first.headers["location"])
        second = b.post("/transfers/new", last)  # a reload, or Back and Start again
        assert second.status_code == 303
        assert second.headers["location"] == first.headers["location"]
        page = b.get(second.headers["location"]).text
        assert "This transfer is already running" in page
        assert len(jobs_in_db(svc)) == 1
    finally:
        svc.close()


def test_a_waiting_transfer_names_the_one_it_waits_for(real: Service, real_app: FastAPI) -> None:
    b = Browser(TestClient(real_app))
    b.signup("ada@example.org")
    uid = real.authenticate("ada@example.org", "correct horse battery")
    assert uid is not None
    from yippiemove.service.core import Account

    first = real.create_transfer(
        uid,
        Account("127.0.0.1", 1143, "starttls", "a", "pw"),
        Account("127.0.0.1", 1143, "starttls", "d", "pw"),
    )
    second = real.create_transfer(
        uid,
        Account("127.0.0.1", 1143, "starttls", "b", "pw"),
        Account("127.0.0.1", 1143, "starttls", "d", "pw"),
    )
    with real.db.session() as s:  # as the claim leaves it (tests/jobs/test_one_writer.py)
        job = s.get(Job, second.id)
        job.progress = dict(job.progress, phase="waiting", waiting_for=first.id)
    page = b.get(f"/transfers/{second.id}").text
    assert f'Waiting for transfer <a href="/transfers/{first.id}">{first.id}</a>' in page
    assert "into the same mailbox" in page


def test_an_idempotency_key_expires_after_24_hours(real: Service, real_app: FastAPI) -> None:
    """Stripe's rule: a key is remembered 24 hours; then it is a new request (a new job),
    and the expired rows are purged when new keys come (no sleeping: the clock moves)."""
    from sqlalchemy import select

    from yippiemove.service.core import IDEMPOTENCY_TTL
    from yippiemove.service.db import IdempotencyKey

    now = [1_000_000.0]
    real.clock = lambda: now[0]
    uid = real.create_user("alice@example.org", "alice password")
    h = {"Authorization": f"Bearer {real.create_token(uid, 'ci')}", "Idempotency-Key": "k-1"}
    body = {"source": acc("src"), "dest": acc("dst")}
    with TestClient(real_app) as c:
        first = c.post(f"{API}/transfers", json=body, headers=h)
        assert first.status_code == 201, first.text
        jid = first.json()["id"]
        real.cancel_transfer(uid, jid)  # so that the pair may be ordered again
        now[0] += IDEMPOTENCY_TTL - 1  # still remembered just before 24 hours
        again = c.post(f"{API}/transfers", json=body, headers=h)
        assert (again.status_code, again.json()) == (201, first.json())
        now[0] += 1  # 24 hours after the first use: a new request, a new job
        later = c.post(f"{API}/transfers", json=body, headers=h)
        assert later.status_code == 201 and later.json()["id"] != jid, later.text
        assert sorted(jobs_in_db(real)) == sorted([jid, later.json()["id"]])
        # ... remembered again from now on, with its new answer
        again = c.post(f"{API}/transfers", json=body, headers=h)
        assert again.json() == later.json()
        # Expired keys of anyone are purged by a new key (bounded work per request).
        real.cancel_transfer(uid, later.json()["id"])
        for i in range(3):
            r = c.post(
                f"{API}/transfers",
                json={"source": acc(f"s{i}"), "dest": acc(f"d{i}")},
                headers=dict(h, **{"Idempotency-Key": f"old-{i}"}),
            )
            assert r.status_code == 201
        now[0] += IDEMPOTENCY_TTL
        r = c.post(
            f"{API}/transfers",
            json={"source": acc("s9"), "dest": acc("d9")},
            headers=dict(h, **{"Idempotency-Key": "fresh"}),
        )
        assert r.status_code == 201
    with real.db.session() as s:
        keys = sorted(k for (k,) in s.execute(select(IdempotencyKey.key)))
    assert keys == ["fresh"]
