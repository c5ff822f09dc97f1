"""The account lifecycle (issue 17, service/account.py) on the real service: forgot
password (one answer for every address, single-use expiring links, throttled), change of
address (confirmed by the new address, the old one told), delete (jobs stopped, nothing
of the customer left in the data directory or the control database)."""

from __future__ import annotations

import re
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from tests.faultproxy import Fault, FaultProxy
from tests.svckit import (
    DST_PW,
    SRC_PW,
    SmtpSink,
    account,
    big_mailbox,
    files_containing,
    jail_pid,
    pid_alive,
    wait_progress,
    wait_status,
)
from tests.transfer.test_move import populate
from yippiemove.service.account import LinkRefused
from yippiemove.service.core import Account, Service, ServiceError, TooManyAttempts, WrongPassword
from yippiemove.service.db import (
    AuditEntry,
    Base,
    DomainCredential,
    IdempotencyKey,
    OAuthSignIn,
    User,
)
from yippiemove.testing.dovecot import DovecotServer

PW = "correct horse battery"
NEW_PW = "staple orbit lantern 42"
ADA = "ada@example.org"


@pytest.fixture
def svc(make_service: Callable[..., Service], smtp_sink: SmtpSink) -> Service:
    return make_service(smtp_host="127.0.0.1", smtp_port=smtp_sink.port)


def link(sink: SmtpSink, to: str, path: str) -> str:
    msg = sink.wait_for(lambda m: m["To"] == to and path in m.get_content())
    found = re.search(re.escape(path) + r"\?token=([\w-]+)", msg.get_content())
    assert found, msg.get_content()
    return found.group(1)


def mails_to(sink: SmtpSink, to: str) -> list[Any]:
    return [m for m in sink.messages if m["To"] == to]


# -- forgot password ---------------------------------------------------------------------


def test_reset_answers_the_same_for_every_address_and_mails_only_an_account(
    svc: Service, smtp_sink: SmtpSink
) -> None:
    svc.create_user(ADA, PW)
    times: dict[str, list[float]] = {ADA: [], "nobody@example.org": []}
    for i in range(6):
        for email in times:
            t = time.perf_counter()
            assert svc.request_password_reset(email, client=f"10.0.0.{i}") is None
            times[email].append(time.perf_counter() - t)
    svc.notifier.flush()
    assert len(mails_to(smtp_sink, ADA)) == 3  # then the per-address budget
    assert mails_to(smtp_sink, "nobody@example.org") == []
    # Roughly the same time (no enumeration by timing): medians within 50 ms.
    a, b = (statistics.median(v) for v in times.values())
    assert abs(a - b) < 0.05, times


def test_a_reset_link_works_once_ends_sessions_and_keeps_api_tokens(
    svc: Service, smtp_sink: SmtpSink
) -> None:
    uid = svc.create_user(ADA, PW)
    token = svc.create_token(uid, "script")
    svc.auth.session_save("browser-1", uid, {})
    svc.request_password_reset(ADA.upper(), client="10.0.0.1")
    t = link(smtp_sink, ADA, "/password/reset")
    assert svc.link_state(t, "reset") == "valid"
    with pytest.raises(ServiceError, match="password"):
        svc.reset_password(t, "short")  # refused: the link still works
    assert svc.link_state(t, "reset") == "valid"
    assert svc.reset_password(t, NEW_PW) == uid
    assert svc.authenticate(ADA, PW) is None
    assert svc.authenticate(ADA, NEW_PW) == uid
    assert svc.auth.session_load("browser-1") is None
    assert svc.user_for_token(token) == uid
    smtp_sink.wait_for(lambda m: m["To"] == ADA and "was changed" in m["Subject"])
    # Used: says so, and changes nothing.
    assert svc.link_state(t, "reset") == "used"
    with pytest.raises(LinkRefused) as refused:
        svc.reset_password(t, "another fine password 7")
    assert refused.value.state == "used"
    assert svc.authenticate(ADA, NEW_PW) == uid


def test_an_expired_or_foreign_link_is_refused(svc: Service, smtp_sink: SmtpSink) -> None:
    uid = svc.create_user(ADA, PW)
    svc.request_password_reset(ADA, client="10.0.0.1")
    t = link(smtp_sink, ADA, "/password/reset")
    # An address-change link is not a reset link (nor the other way round).
    svc.request_email_change(uid, PW, "ada@new.example", client="10.0.0.1")
    e = link(smtp_sink, "ada@new.example", "/account/email/confirm")
    assert svc.link_state(e, "reset") == "unknown"
    with pytest.raises(LinkRefused, match="unknown"):
        svc.reset_password(e, NEW_PW)
    with pytest.raises(LinkRefused, match="unknown"):
        svc.confirm_email_change(t)
    with pytest.raises(LinkRefused, match="unknown"):
        svc.reset_password("x" * 43, NEW_PW)
    # An hour later the reset link has expired (the address link lasts a day).
    real = svc.auth.clock
    svc.auth.clock = lambda: real() + svc.settings.password_reset_seconds + 1
    assert svc.link_state(t, "reset") == "expired"
    with pytest.raises(LinkRefused, match="expired"):
        svc.reset_password(t, NEW_PW)
    assert svc.authenticate(ADA, PW) == uid
    assert svc.confirm_email_change(e) == uid
    # Pruning forgets expired links.
    svc.auth.clock = lambda: real() + svc.settings.email_change_seconds + 1
    assert svc.prune_account_links() == 2


def test_reset_requests_are_throttled_per_client(svc: Service) -> None:
    svc.create_user(ADA, PW)
    for _ in range(5):
        svc.request_password_reset("nobody@example.org", client="10.9.9.9")
    with pytest.raises(TooManyAttempts):
        svc.request_password_reset(ADA, client="10.9.9.9")
    with pytest.raises(TooManyAttempts):  # the same answer for an unknown address
        svc.request_password_reset("nobody@example.org", client="10.9.9.9")
    svc.request_password_reset(ADA, client="10.1.1.1")  # another client is not held up


# -- change e-mail / password ------------------------------------------------------------


def test_change_address_confirmed_by_the_new_one_old_one_told(
    svc: Service, smtp_sink: SmtpSink
) -> None:
    uid = svc.create_user(ADA, PW)
    svc.create_user("bob@example.org", PW)
    with pytest.raises(WrongPassword):
        svc.request_email_change(uid, "not my password", "ada@new.example", client="c")
    # Another account's address: the same answer, a note to that address, no link.
    assert svc.request_email_change(uid, PW, "BOB@example.org", client="c") == "sent"
    note = smtp_sink.wait_for(lambda m: m["To"] == "bob@example.org")
    assert "has an account already" in note.get_content()
    assert "token=" not in note.get_content()
    assert svc.account_info(uid)["pending_email"] is None

    svc.request_password_reset(ADA, client="c")
    reset = link(smtp_sink, ADA, "/password/reset")
    assert svc.request_email_change(uid, PW, "ada@new.example", client="c") == "sent"
    t = link(smtp_sink, "ada@new.example", "/account/email/confirm")
    info = svc.account_info(uid)
    assert info["email"] == ADA and info["pending_email"] == "ada@new.example"
    assert svc.authenticate(ADA, PW) == uid  # the old address stays until confirmed
    assert svc.confirm_email_change(t) == uid
    assert svc.account_info(uid)["email"] == "ada@new.example"
    assert svc.authenticate("ada@new.example", PW) == uid
    assert svc.authenticate(ADA, PW) is None
    told = smtp_sink.wait_for(lambda m: m["To"] == ADA and "new address" in m["Subject"])
    assert "ada@new.example" in told.get_content()
    with pytest.raises(LinkRefused, match="used"):
        svc.confirm_email_change(t)
    # A reset link mailed to the old address works no more.
    with pytest.raises(LinkRefused, match="used"):
        svc.reset_password(reset, NEW_PW)


def test_an_address_taken_before_confirmation_is_refused(svc: Service, smtp_sink: SmtpSink) -> None:
    uid = svc.create_user(ADA, PW)
    svc.request_email_change(uid, PW, "x@new.example", client="c")
    t = link(smtp_sink, "x@new.example", "/account/email/confirm")
    svc.create_user("x@new.example", PW)
    with pytest.raises(LinkRefused, match="taken"):
        svc.confirm_email_change(t)
    assert svc.account_info(uid)["email"] == ADA


def test_change_password_needs_the_current_one_and_ends_other_sessions(svc: Service) -> None:
    uid = svc.create_user(ADA, PW)
    svc.auth.session_save("mine", uid, {})
    svc.auth.session_save("other", uid, {})
    with pytest.raises(WrongPassword):
        svc.change_password_checked(uid, "wrong one", NEW_PW, client="c")
    assert svc.auth.session_load("other") is not None
    svc.change_password_checked(uid, PW, NEW_PW, client="c", keep="mine")
    assert svc.auth.session_load("other") is None
    assert svc.auth.session_load("mine") is not None
    assert svc.authenticate(ADA, NEW_PW) == uid


# -- delete ------------------------------------------------------------------------------


def test_delete_account_stops_jobs_and_leaves_nothing_of_the_customer(
    make_service: Callable[..., Service],
    smtp_sink: SmtpSink,
    dovecot_factory: Callable[..., DovecotServer],
    tmp_path: Path,
) -> None:
    server = dovecot_factory(
        separator="/",
        users={
            "src": SRC_PW,
            "dst": DST_PW,
            "big": SRC_PW,
            "bigdst": DST_PW,
            "o": "o-pw-1",
            "o2": "o-pw-1",
        },
    )
    populate(server, "src")
    big_mailbox(server, "big", count=1200)
    svc = make_service(smtp_host="127.0.0.1", smtp_port=smtp_sink.port, ca_file=str(server.ca_file))
    svc.start(workers=2)
    uid = svc.create_user(ADA, PW)
    other = svc.create_user("bob@example.org", PW)
    svc.create_token(uid, "script")
    svc.auth.session_save("ada-browser", uid, {"csrf": "x"})
    svc.auth.login_failed("10.0.0.1", ADA)
    svc.request_password_reset(ADA, client="10.0.0.1")
    svc.request_email_change(uid, PW, "ada@pending.example", client="10.0.0.1")
    with svc.db.session() as s:  # a domain credential, a sign-in, an idempotency key
        s.add(
            DomainCredential(
                id="c" * 32,
                user_id=uid,
                kind="service_account",
                provider="google",
                principal=ADA,
                domain="example.org",
                secret=svc.box.encrypt({"k": SRC_PW}),
            )
        )
        s.add(
            OAuthSignIn(
                id="s" * 32,
                state_hash="0" * 64,
                user_id=uid,
                provider="google",
                purpose="api",
                redirect_uri="http://x/cb",
                address=ADA,
                expires=time.time() + 600,
            )
        )
        s.add(
            IdempotencyKey(
                user_id=uid,
                key="k1",
                body_hash="0" * 64,
                status_code=201,
                response={"email": ADA},
            )
        )
    done = svc.create_transfer(uid, account(server, "src", SRC_PW), account(server, "dst", DST_PW))
    wait_status(svc, uid, done.id, ("done",))
    # An operator acted on the customer: the audit log keeps the actions, not the address.
    op = svc.create_user("op@example.org", PW)
    svc.set_role("op@example.org", "operator")
    svc.op_suspend(op, uid, "checking a complaint")
    svc.op_unsuspend(op, uid)
    svc.op_report(op, done.id)
    with pytest.raises(WrongPassword):
        svc.delete_account(uid, "not it", client="10.0.0.2")
    assert svc.get_transfer(uid, done.id).status == "done"
    assert (svc.settings.job_dir(done.id) / "report.json").exists()
    # The running job's destination is behind a slow link, so it is still running when
    # the account goes, however fast the machine is.
    with FaultProxy(server.port, lambda _n: [Fault.throttle(1_000_000)]) as slow:
        running = svc.create_transfer(
            uid,
            account(server, "big", SRC_PW),
            Account("127.0.0.1", slow.port, "none", "bigdst", DST_PW),
        )
        bobs = svc.create_transfer(
            other, account(server, "o", "o-pw-1"), account(server, "o2", "o-pw-1")
        )
        wait_progress(svc, uid, running.id, 0.02)
        pid = jail_pid(svc, running.id)
        assert pid is not None and pid_alive(pid)

        svc.delete_account(uid, PW, client="10.0.0.2")

    assert not pid_alive(pid)  # the job process was stopped first
    with svc.db.read() as s:
        assert s.get(User, uid) is None
        for table in Base.metadata.sorted_tables:
            if "user_id" in table.c:
                n = s.execute(table.select().where(table.c.user_id == uid)).all()
                assert n == [], table.name
    for job_id in (done.id, running.id):
        assert not svc.settings.job_dir(job_id).exists()
    goodbye = smtp_sink.wait_for(lambda m: m["To"] == ADA and "deleted" in m["Subject"])
    assert "Goodbye" in goodbye.get_content()
    with svc.db.read() as s:
        audit = list(s.scalars(select(AuditEntry).order_by(AuditEntry.id)))
    actions = [(a.action, a.target_id) for a in audit]
    assert actions[-3:] == [
        ("suspend", str(uid)),
        ("unsuspend", str(uid)),
        ("read_report", "(deleted)"),
    ]
    assert all(a.operator_email == "op@example.org" for a in audit[-3:])
    # Bob's account and transfer are untouched.
    assert svc.user_email(other) == "bob@example.org"
    assert svc.get_transfer(other, bobs.id).id == bobs.id

    svc.stop(timeout=15)
    svc.db.checkpoint()
    data = svc.settings.data_dir
    for needle in (ADA, "ada@pending.example", SRC_PW, DST_PW):
        assert files_containing(data, needle.encode()) == [], needle
    # Job ids are random, not the customer's; the queue's messages may still name them,
    # the control database and the job directories do not.
    for job_id in (done.id, running.id):
        hits = files_containing(data, job_id.encode())
        assert [p for p in hits if not p.name.startswith("queue.sqlite")] == [], job_id


def test_job_directories_of_deleted_jobs_are_purged_on_other_hosts(
    make_service: Callable[..., Service],
) -> None:
    """A worker host that ran a deleted account's job removes its directory in its
    maintenance round: only directories named like a job, with no job row, and old."""
    import os
    import uuid

    from yippiemove.service.account import ORPHAN_AGE, purge_orphan_job_dirs
    from yippiemove.service.db import Job

    svc = make_service()
    uid = svc.create_user(ADA, PW)
    kept = uuid.uuid4().hex
    with svc.db.session() as s:
        s.add(Job(id=kept, user_id=uid, status="done", source={}, dest={}, progress={}))
    orphan, fresh = uuid.uuid4().hex, uuid.uuid4().hex
    jobs = svc.settings.jobs_dir
    for name in (kept, orphan, fresh, "not-a-job"):
        (jobs / name).mkdir()
        (jobs / name / "state.sqlite").write_bytes(b"x")
    old = time.time() - ORPHAN_AGE - 5
    for name in (kept, orphan, "not-a-job"):
        os.utime(jobs / name, (old, old))
    assert purge_orphan_job_dirs(svc.settings, svc.db) == 1
    assert sorted(p.name for p in jobs.iterdir() if p.is_dir()) == sorted(
        [kept, fresh, "not-a-job"]
    )
