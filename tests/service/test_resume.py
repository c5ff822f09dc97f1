"""New passwords for a stopped transfer over the REST API (issue 17), on the real service
with job processes and a real Dovecot: a wrong destination password stops the job with a
plain message (the raw server text only as ``detail``); a wrong new password is refused
on the spot and nothing is stored; the right one resumes the same job, which ends exact
(tests/mailcheck.py) with nothing copied twice."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from tests import mailcheck
from tests.svckit import account, assert_exact, big_mailbox, wait_progress, wait_status
from tests.transfer.test_move import populate
from yippiemove.service.core import Account, Conflict, CredentialsRefused, Service, ServiceError
from yippiemove.service.db import Job
from yippiemove.testing.dovecot import DovecotServer
from yippiemove.web.app import create_app

API = "/api/v1"
WRONG = "Wrong-pw-5d1c"
NEW = "Dst-new-pw-93ab"


def acc(server: DovecotServer, user: str, password: str) -> dict[str, Any]:
    return {
        "host": "127.0.0.1",
        "port": server.port,
        "security": "starttls",
        "username": user,
        "password": password,
    }


def blob(svc: Service, job_id: str) -> bytes | None:
    with svc.db.read() as s:
        job = s.get(Job, job_id)
        assert job is not None
        return job.credentials


def test_wrong_destination_password_then_a_new_one_over_rest(
    make_service: Callable[..., Service],
    dovecot_factory: Callable[..., DovecotServer],
    tmp_path: Path,
) -> None:
    server = dovecot_factory(separator="/", users={"src": "srcpass", "dst": "dstpass"})
    populate(server, "src")
    svc = make_service(ca_file=str(server.ca_file))
    svc.start(workers=1)
    uid = svc.create_user("ada@example.org", "correct horse battery")
    h = {"Authorization": f"Bearer {svc.create_token(uid, 'ci')}"}
    with TestClient(create_app(svc)) as c:
        # The REST order does not check accounts: the wrong password stops the job.
        r = c.post(
            f"{API}/transfers",
            json={"source": acc(server, "src", "srcpass"), "dest": acc(server, "dst", WRONG)},
            headers=h,
        )
        assert r.status_code == 201, r.text
        jid = r.json()["id"]
        wait_status(svc, uid, jid, ("failed",), timeout=60)
        view = c.get(f"{API}/transfers/{jid}", headers=h).json()
        failure = view["failure"]
        assert failure["kind"] == "auth" and failure["side"] == "dest", failure
        assert failure["message"] == "The destination mailbox refused the user name or password."
        assert "password again" in failure["next_step"]
        assert "AUTHENTICATIONFAILED" in failure["detail"]  # the server's words, as detail
        assert "AUTHENTICATIONFAILED" not in failure["message"] + failure["next_step"]
        assert view["credential_sides"] == ["source", "dest"]
        assert WRONG not in r.text + c.get(f"{API}/transfers/{jid}", headers=h).text

        # A wrong new password: refused on the spot, nothing stored, the job stays failed.
        before = blob(svc, jid)
        r = c.put(
            f"{API}/transfers/{jid}/credentials",
            json={"dest": {"password": "still-wrong-77"}},
            headers=h,
        )
        assert r.status_code == 422, r.text
        assert r.json() == {
            "error": "The new destination password did not pass the check; nothing was "
            "changed. The destination mailbox refused the user name or password.",
            "kind": "auth",
            "detail": r.json()["detail"],
        }
        assert "AUTHENTICATIONFAILED" in r.json()["detail"]
        assert "still-wrong-77" not in r.text
        assert blob(svc, jid) == before
        assert c.get(f"{API}/transfers/{jid}", headers=h).json()["status"] == "failed"

        # Bodies that name no side, an unknown side, another customer's job.
        assert c.put(f"{API}/transfers/{jid}/credentials", json={}, headers=h).status_code == 400
        r = c.put(
            f"{API}/transfers/{jid}/credentials", json={"other": {"password": "x"}}, headers=h
        )
        assert r.status_code == 422
        bob = svc.create_user("bob@example.org", "correct horse battery")
        hb = {"Authorization": f"Bearer {svc.create_token(bob, 'ci')}"}
        r = c.put(
            f"{API}/transfers/{jid}/credentials", json={"dest": {"password": NEW}}, headers=hb
        )
        assert r.status_code == 404 and r.json() == {"error": "no such transfer"}

        # The customer changed the password at the provider meanwhile: the new one works.
        server.add_user("dst", NEW)
        r = c.put(f"{API}/transfers/{jid}/credentials", json={"dest": {"password": NEW}}, headers=h)
        assert r.status_code == 200, r.text
        assert r.json()["id"] == jid and r.json()["status"] in ("queued", "running")
        assert r.json()["runs"] == 2 and r.json()["failure"] is None
        done = wait_status(svc, uid, jid, timeout=120)
        assert done.status == "done", done.error
        # Running or done: no new password now.
        r = c.put(f"{API}/transfers/{jid}/credentials", json={"dest": {"password": NEW}}, headers=h)
        assert r.status_code == 409
    assert_exact(server, "src", "srcpass", "dst", NEW)


def test_a_cancelled_transfer_resumes_with_a_new_password_and_copies_nothing_twice(
    make_service: Callable[..., Service],
    dovecot_factory: Callable[..., DovecotServer],
) -> None:
    """Cancelled mid-way, the destination's password changed, the new one given through
    the service: the same job resumes from its state (what was copied is not copied
    again) and ends exact."""
    server = dovecot_factory(separator="/", users={"src": "srcpass", "dst": "dstpass"})
    big_mailbox(server, "src", count=1200)
    svc = make_service(ca_file=str(server.ca_file), job_connections=1)
    svc.start(workers=1)
    uid = svc.create_user("ada@example.org", "correct horse battery")
    view = svc.create_transfer(
        uid, account(server, "src", "srcpass"), account(server, "dst", "dstpass")
    )
    wait_progress(svc, uid, view.id, 0.3)
    svc.cancel_transfer(uid, view.id)
    wait_status(svc, uid, view.id, ("cancelled",), timeout=60)
    copied = sum(
        sum(c.values()) for c in mailcheck.snapshot(server.port, "dst", "dstpass").values()
    )
    assert copied > 0
    server.add_user("dst", NEW)
    with pytest.raises(CredentialsRefused):
        asyncio.run(svc.update_credentials(uid, view.id, {"dest": "dstpass"}))
    resumed = asyncio.run(svc.update_credentials(uid, view.id, {"dest": NEW}))
    assert resumed.status == "queued" and resumed.runs == 2
    done = wait_status(svc, uid, view.id, timeout=180)
    assert done.status == "done", done.error
    assert_exact(server, "src", "srcpass", "dst", NEW)
    report = svc.report(uid, view.id)
    assert report["totals"]["already_present"] >= copied  # resumed, not copied again


def test_what_cannot_take_a_new_password(make_service: Callable[..., Service]) -> None:
    """Refused before any check: a queued job, a side that signs in with OAuth2 (sign in
    again instead), one side only when the stored passwords were deleted; nothing stored."""
    svc = make_service()
    uid = svc.create_user("ada@example.org", "correct horse battery")
    src = Account("127.0.0.1", 1143, "starttls", "src", "srcpass")
    dst = Account("127.0.0.1", 1143, "starttls", "dst", "dstpass")
    jid = svc.create_transfer(uid, src, dst).id

    def update(passwords: dict[str, str]) -> str:
        with pytest.raises(Conflict) as exc:
            asyncio.run(svc.update_credentials(uid, jid, passwords))
        return str(exc.value)

    assert "this one is queued" in update({"dest": NEW})
    with svc.db.session() as s:
        job = s.get(Job, jid)
        assert job is not None
        job.status = "failed"
        job.error = "NO [AUTHENTICATIONFAILED] Authentication failed."
        job.dest = dict(job.dest, oauth_provider="google")
    view = svc.get_transfer(uid, jid)
    assert view.credential_sides == ["source"] and view.failure is not None
    assert view.failure["kind"] == "auth" and view.failure["side"] is None
    assert "sign in again instead" in update({"dest": NEW})
    with svc.db.session() as s:
        job = s.get(Job, jid)
        assert job is not None
        job.dest = {k: v for k, v in job.dest.items() if k != "oauth_provider"}
        job.credentials = None
    assert "give the passwords of both accounts" in update({"dest": NEW})
    assert blob(svc, jid) is None
    with pytest.raises(ServiceError, match="unknown side"):
        asyncio.run(svc.update_credentials(uid, jid, {"elsewhere": NEW}))
