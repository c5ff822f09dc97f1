"""Staged moves over the REST API (issue 17): ``schedule`` on ``POST /api/v1/transfers``,
the schedule and each pass's figures on ``GET``, ``POST .../final-pass`` and ``DELETE
.../schedule``; a whole staged move on the real service with job processes and a real
Dovecot (first pass, a top-up picking up new mail, the final pass by API -> exact, the
passwords gone); the refusals (bad schedule, no schedule, another customer's)."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from tests.svckit import assert_exact, make_service
from tests.transfer.test_move import make_message, populate
from yippiemove.service.config import Settings
from yippiemove.service.core import Service
from yippiemove.service.db import Job
from yippiemove.testing.dovecot import DovecotServer
from yippiemove.web.app import create_app

__all__ = ["make_service"]  # (the fixture)

API = "/api/v1"
HOUR = 3600.0


def acc(user: str, port: int = 1143, password: str = "pw-123") -> dict[str, Any]:
    return {
        "host": "127.0.0.1",
        "port": port,
        "security": "starttls",
        "username": user,
        "password": password,
    }


@pytest.fixture
def real(tmp_path: Path) -> Iterator[Service]:
    """A real Service whose jobs are queued but not run (no workers started)."""
    svc = Service(
        Settings.load(tmp_path / "real", maintenance_interval=3600.0, egress_allow="127.0.0.0/8")
    )
    try:
        yield svc
    finally:
        svc.close()


def bearer(svc: Service, email: str) -> dict[str, str]:
    uid = svc.create_user(email, "correct horse battery")
    return {"Authorization": f"Bearer {svc.create_token(uid, 'ci')}"}


def test_a_scheduled_staged_move_shows_its_schedule_and_is_cancelled_by_delete(
    real: Service,
) -> None:
    h = bearer(real, "ada@example.org")
    start, final_at = time.time() + HOUR, time.time() + 5 * HOUR
    body = {
        "source": acc("src"),
        "dest": acc("dst"),
        "schedule": {"interval": 2 * HOUR, "start_at": start, "final_at": final_at},
    }
    with TestClient(create_app(real)) as c:
        r = c.post(f"{API}/transfers", json=body, headers=h)
        assert r.status_code == 201, r.text
        job = r.json()["id"]
        got = c.get(f"{API}/transfers/{job}", headers=h).json()
        sched = got["schedule"]
        assert got["status"] == "queued"
        assert sched["state"] == "scheduled" and sched["next_kind"] == "first"
        assert sched["next_run_at"] == start and sched["final_at"] == final_at
        assert sched["interval"] == 2 * HOUR and sched["passes"] == []
        assert sched["credentials_kept"] is True and sched["credentials_until"] == final_at
        # In the list too; a plain transfer has none.
        plain = c.post(
            f"{API}/transfers", json={"source": acc("a"), "dest": acc("b")}, headers=h
        ).json()["id"]
        listed = {t["id"]: t for t in c.get(f"{API}/transfers", headers=h).json()["transfers"]}
        assert listed[job]["schedule"]["state"] == "scheduled"
        assert listed[plain]["schedule"] is None
        # No schedule: 409 for both; another customer's: 404.
        for verb, path in (("post", "final-pass"), ("delete", "schedule")):
            r = getattr(c, verb)(f"{API}/transfers/{plain}/{path}", headers=h)
            assert r.status_code == 409, r.text
            assert r.json()["code"] == "conflict" and "schedule" in r.json()["message"]
            other = bearer(real, f"eve-{path}@example.org")
            r = getattr(c, verb)(f"{API}/transfers/{job}/{path}", headers=other)
            assert r.status_code == 404, r.text
        # Cancelled before its start: the transfer is cancelled, the passwords deleted.
        r = c.delete(f"{API}/transfers/{job}/schedule", headers=h)
        assert r.status_code == 200, r.text
        out = r.json()
        assert out["status"] == "cancelled" and out["schedule"]["state"] == "cancelled"
        assert out["schedule"]["credentials_kept"] is False and out["can_rerun"] is False
        with real.db.read() as s:
            row = s.get(Job, job)
            assert row is not None and row.credentials is None
        assert c.delete(f"{API}/transfers/{job}/schedule", headers=h).status_code == 409


@pytest.mark.parametrize(
    ("schedule", "status", "field"),
    [
        ({"interval": 60}, 400, "schedule.interval"),  # under the service's minimum
        ({"interval": 0}, 422, "schedule.interval"),
        ({"interval": "hourly"}, 422, "schedule.interval"),
        ({}, 422, "schedule.interval"),
        ({"interval": 3600, "start_at": 1000.0}, 400, "schedule.start_at"),
        ({"interval": 3600, "final_at": 1000.0}, 400, "schedule.final_at"),
        ({"interval": 3600, "when": "soon"}, 422, "schedule.when"),
    ],
)
def test_a_bad_schedule_is_refused_naming_the_field(
    real: Service, schedule: dict[str, Any], status: int, field: str
) -> None:
    h = bearer(real, "ada@example.org")
    body = {"source": acc("src"), "dest": acc("dst"), "schedule": schedule}
    with TestClient(create_app(real)) as c:
        r = c.post(f"{API}/transfers", json=body, headers=h)
        assert r.status_code == status, r.text
        assert field in r.text
        assert c.get(f"{API}/transfers", headers=h).json()["transfers"] == []


def wait_passes(c: TestClient, h: dict[str, str], job: str, n: int) -> dict[str, Any]:
    deadline = time.monotonic() + 90
    while True:
        got = c.get(f"{API}/transfers/{job}", headers=h).json()
        if got["status"] in ("done", "failed", "cancelled") and len(got["schedule"]["passes"]) >= n:
            return got
        assert time.monotonic() < deadline, got["status"]
        time.sleep(0.1)


@pytest.mark.source_writes("the old mailbox receives new mail between the passes")
def test_staged_move_over_rest_first_top_up_and_final_pass_exact(
    make_service: Callable[..., Service], dovecot_factory: Callable[..., DovecotServer]
) -> None:
    server = dovecot_factory(separator="/", users={"src": "srcpass", "dst": "dstpass"})
    populate(server, "src")
    svc = make_service(ca_file=str(server.ca_file), staged_min_interval=60.0)
    svc.start(workers=1)
    h = bearer(svc, "ada@example.org")
    body = {
        "source": acc("src", server.port, "srcpass"),
        "dest": acc("dst", server.port, "dstpass"),
        "schedule": {"interval": HOUR},
    }
    with TestClient(create_app(svc)) as c:
        r = c.post(f"{API}/transfers", json=body, headers={**h, "Idempotency-Key": "stg-1"})
        assert r.status_code == 201, r.text
        job = r.json()["id"]
        # The same key and body: the same answer, nothing more ordered.
        again = c.post(f"{API}/transfers", json=body, headers={**h, "Idempotency-Key": "stg-1"})
        assert again.status_code == 201 and again.json()["id"] == job
        first = wait_passes(c, h, job, 1)
        assert first["status"] == "done" and first["schedule"]["next_kind"] == "top-up"
        copied = first["schedule"]["passes"][0]["copied"]
        assert copied > 0

        server.deliver("src", "INBOX", make_message(8100))
        server.deliver("src", "Sent", make_message(8101))
        assert svc.fire_due_passes(now=time.time() + HOUR + 5) == [job]
        top = wait_passes(c, h, job, 2)
        p = top["schedule"]["passes"][1]
        assert (p["kind"], p["copied"], p["already_present"]) == ("top-up", 2, copied)
        assert top["runs"] == 2 and top["schedule"]["credentials_kept"] is True

        server.deliver("src", "INBOX", make_message(8102))
        r = c.post(f"{API}/transfers/{job}/final-pass", headers=h)
        assert r.status_code == 200, r.text
        final = wait_passes(c, h, job, 3)
        sched = final["schedule"]
        assert sched["state"] == "done" and sched["next_run_at"] is None
        assert [(q["kind"], q["copied"]) for q in sched["passes"]] == [
            ("first", copied),
            ("top-up", 2),
            ("final", 1),
        ]
        assert sched["credentials_kept"] is False and final["can_rerun"] is False
        assert c.post(f"{API}/transfers/{job}/final-pass", headers=h).status_code == 409
    assert_exact(server, "src", "srcpass", "dst", "dstpass")
    with svc.db.read() as s:
        row = s.get(Job, job)
        assert row is not None and row.credentials is None
