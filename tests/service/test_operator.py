"""Operators (issue 17, service/operator.py): a role made by the command line only, an
audit row in the transaction of every action, and suspension: log-in and tokens refused,
running jobs cancelled (their passwords wiped), queued ones held until unsuspended."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from sqlalchemy import select

from tests.faultproxy import Fault, FaultProxy
from tests.svckit import DST_PW, SRC_PW, account, wait_status
from tests.transfer.test_move import make_message
from yippiemove.cli import main
from yippiemove.service.config import Settings
from yippiemove.service.core import Account, Conflict, NotFound, Service, Suspended
from yippiemove.service.db import AuditEntry, Job
from yippiemove.testing.dovecot import MaildirMessage

PW = "long enough pass"


def _audit(svc: Service) -> list[AuditEntry]:
    with svc.db.read() as s:
        return list(s.scalars(select(AuditEntry).order_by(AuditEntry.id)))


def _operator(svc: Service, email: str = "op@example.org") -> int:
    svc.create_user(email, PW)
    return svc.set_role(email, "operator")


def test_the_command_line_makes_an_operator_and_it_is_audited(tmp_path: Path) -> None:
    data = tmp_path / "data"
    svc = Service(Settings.load(data, maintenance_interval=3600.0))
    try:
        cust = svc.create_user("cust@example.org", PW)
        uid = svc.create_user("Boss@example.org", PW)
        assert not svc.is_operator(uid)
        with pytest.raises(NotFound):  # a customer is no operator: the console's 404
            svc.op_customers(cust)
    finally:
        svc.close()
    r = CliRunner().invoke(
        main, ["user", "set-role", "boss@example.org", "operator", "--data-dir", str(data)]
    )
    assert r.exit_code == 0, r.output
    assert "is now: operator" in r.output
    r = CliRunner().invoke(
        main, ["user", "set-role", "nobody@example.org", "operator", "--data-dir", str(data)]
    )
    assert r.exit_code != 0 and "no customer" in r.output
    svc = Service(Settings.load(data, maintenance_interval=3600.0))
    try:
        assert svc.is_operator(uid) and not svc.is_operator(cust)
        emails = [c["email"] for c in svc.op_customers(uid, "")]
        assert emails == ["boss@example.org", "cust@example.org"]
        assert [c["email"] for c in svc.op_customers(uid, "CUST")] == ["cust@example.org"]
        assert svc.op_customers(uid, "%") == []  # a LIKE wildcard is a plain character
        (row,) = _audit(svc)
        assert (row.operator_id, row.action, row.target_kind, row.target_id) == (
            None,
            "set_role",
            "customer",
            str(uid),
        )
        assert row.detail == {
            "email": "boss@example.org",
            "role": "operator",
            "before": "customer",
            "by": "cli",
        }
    finally:
        svc.close()


def test_cancel_and_requeue_any_job_each_with_its_audit_row(make_service: Any) -> None:
    svc = make_service()  # no workers: jobs stay queued
    op = _operator(svc)
    alice = svc.create_user("alice@example.org", PW)
    bob = svc.create_user("bob@example.org", PW)
    a = svc.create_transfer(
        alice,
        Account("127.0.0.1", 1143, "starttls", "a", SRC_PW),
        Account("127.0.0.1", 1143, "starttls", "b", DST_PW),
    )
    b = svc.create_transfer(
        bob,
        Account("127.0.0.1", 1143, "starttls", "c", SRC_PW),
        Account("127.0.0.1", 1143, "starttls", "d", DST_PW),
    )
    jobs = svc.op_jobs(op)
    assert {j["id"] for j in jobs} == {a.id, b.id}  # every customer's
    assert {j["email"] for j in jobs} == {"alice@example.org", "bob@example.org"}
    assert SRC_PW not in repr(jobs) and DST_PW not in repr(jobs)
    for customer in (alice, bob):  # a customer reaches nothing of the console
        for call in (
            lambda c=customer: svc.op_jobs(c),
            lambda c=customer: svc.op_cancel(c, a.id),
            lambda c=customer: svc.op_suspend(c, bob, "x"),
            lambda c=customer: svc.audit_log(c),
        ):
            with pytest.raises(NotFound):
                call()
    assert _audit(svc)[-1].action == "set_role"

    assert svc.op_cancel(op, a.id, "looks like abuse")["status"] == "cancelled"
    row = _audit(svc)[-1]
    assert (row.operator_id, row.action, row.target_id) == (op, "cancel", a.id)
    assert row.detail == {"before": "queued", "reason": "looks like abuse"}
    # A refused action leaves no audit row (the row is in the action's transaction).
    n = len(_audit(svc))
    with pytest.raises(Conflict):
        svc.op_cancel(op, a.id)
    assert len(_audit(svc)) == n

    view = svc.op_requeue(op, a.id)
    assert (view["status"], view["runs"]) == ("queued", 2)
    row = _audit(svc)[-1]
    assert (row.action, row.target_id, row.detail) == ("requeue", a.id, {"before": "cancelled"})
    assert svc.get_transfer(alice, a.id).status == "queued"
    with svc.db.session() as s:  # a running job is not requeued
        s.get(Job, b.id).status = "running"
    with pytest.raises(Conflict):
        svc.op_requeue(op, b.id)
    assert len(_audit(svc)) == n + 1


def test_suspend_cancels_running_holds_queued_refuses_login_and_tokens(
    make_service: Any, dovecot_factory: Any
) -> None:
    """A customer with one job running (through a slow link) and one queued behind it:
    suspended, the running one is cancelled within seconds and its passwords are
    wiped; the queued one is never started; log-in and tokens are refused.
    Unsuspended, they log in again and the held job runs to the end."""
    server = dovecot_factory(users={"src": SRC_PW, "dst": DST_PW, "src2": SRC_PW, "dst2": DST_PW})
    server.deliver_many(
        "src", "INBOX", [MaildirMessage(make_message(i, size=20_000)) for i in range(60)]
    )
    server.deliver_many("src2", "INBOX", [MaildirMessage(make_message(i)) for i in range(3)])
    svc = make_service(ca_file=str(server.ca_file), job_connections=1)
    svc.start(1)  # one worker: the second job waits in the queue
    op = _operator(svc)
    cust = svc.create_user("cust@example.org", PW)
    token = svc.create_token(cust, "script")
    with FaultProxy(server.port, lambda _n: [Fault.throttle(100_000)]) as slow:
        running = svc.create_transfer(
            cust,
            account(server, "src", SRC_PW),
            Account("127.0.0.1", slow.port, "none", "dst", DST_PW),
        )
        queued = svc.create_transfer(
            cust, account(server, "src2", SRC_PW), account(server, "dst2", DST_PW)
        )
        deadline = time.monotonic() + 30
        while svc.get_transfer(cust, running.id).progress.get("messages_done", 0) < 1:
            assert time.monotonic() < deadline, svc.get_transfer(cust, running.id)
            time.sleep(0.05)
        assert svc.get_transfer(cust, queued.id).status == "queued"

        svc.auth.session_save("sid-of-cust", cust, {})
        t0 = time.monotonic()
        out = svc.op_suspend(op, cust, "  chargeback\n fraud  ")
        assert out["suspended"] and out["suspended_reason"] == "chargeback fraud"
        assert svc.auth.session_load("sid-of-cust") is None  # logged out everywhere
        with pytest.raises(Suspended):
            svc.authenticate("cust@example.org", PW)
        assert svc.authenticate("cust@example.org", "wrong password") is None  # says nothing
        with pytest.raises(Suspended):
            svc.user_for_token(token)
        view = wait_status(svc, cust, running.id, timeout=30)
        assert view.status == "cancelled" and time.monotonic() - t0 < 15
    with svc.db.read() as s:
        assert s.get(Job, running.id).credentials is None  # wiped, not kept for re-runs
        assert s.get(Job, queued.id).credentials is not None
    # The queued job: its queue message was taken by the worker and let go; not started.
    deadline = time.monotonic() + 10
    while queued.id in svc.queue.waiting_ids():
        assert time.monotonic() < deadline
        time.sleep(0.05)
    time.sleep(0.5)
    held = svc.get_transfer(cust, queued.id)
    assert (held.status, held.started, held.progress["phase"]) == ("queued", None, "held")
    assert svc.op_queue(op)["held"] == 1
    # The recovery sweeps leave held jobs alone (a job missing from the queue at two
    # sweeps in a row is enqueued again: not a held one).
    assert svc.requeue_lost() == [] and svc.requeue_lost() == []
    (row,) = [e for e in _audit(svc) if e.action == "suspend"]
    assert row.detail == {
        "email": "cust@example.org",
        "reason": "chargeback fraud",
        "cancelled": [running.id],
        "held": [queued.id],
    }

    svc.op_unsuspend(op, cust)
    assert svc.authenticate("cust@example.org", PW) == cust
    assert svc.user_for_token(token) == cust
    assert wait_status(svc, cust, queued.id, timeout=60).status == "done"
    (row,) = [e for e in _audit(svc) if e.action == "unsuspend"]
    assert row.detail == {"email": "cust@example.org", "requeued": [queued.id]}
    with pytest.raises(Conflict):
        svc.op_unsuspend(op, cust)
    with pytest.raises(Conflict):  # no operator suspends themselves
        svc.op_suspend(op, op, "oops")


def test_a_job_cancelled_by_suspension_whose_host_died_is_not_run_later(
    make_service: Any,
) -> None:
    """Suspended while its host was dead: the job's cancel is asked, the recovery puts it
    back in the queue; the next claim ends it (cancelled, passwords wiped) instead of
    holding it, so unsuspending does not run it."""
    svc = make_service()
    op = _operator(svc)
    cust = svc.create_user("cust@example.org", PW)
    job = svc.create_transfer(
        cust,
        Account("127.0.0.1", 1143, "starttls", "a", SRC_PW),
        Account("127.0.0.1", 1143, "starttls", "b", DST_PW),
    )
    with svc.db.session() as s:
        row = s.get(Job, job.id)
        row.status = "running"
        row.lease_owner = "gone-host|1|1"
        row.lease_expires = time.time() - 60
    svc.op_suspend(op, cust, "fraud")
    assert svc.recover() == [job.id]
    assert svc.get_transfer(cust, job.id).status == "queued"
    assert svc.supervisor.store.claim(job.id, "here|2|2", 30.0, 5) is None
    view = svc.get_transfer(cust, job.id)
    assert (view.status, view.started) == ("cancelled", None)
    with svc.db.read() as s:
        assert s.get(Job, job.id).credentials is None
    svc.op_unsuspend(op, cust)
    assert svc.get_transfer(cust, job.id).status == "cancelled"
