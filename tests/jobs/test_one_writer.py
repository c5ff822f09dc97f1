"""One writer per destination mailbox (issue 12): jobs from different sources into one
mailbox run one after the other, across the service's workers, and both end exact.

Real Service + queue + supervisor + jails on a real Dovecot, judged by imaplib.
"""

from __future__ import annotations

import time
from collections import Counter

import pytest

from tests import mailcheck
from tests.svckit import DST_PW, SRC_PW, account, big_mailbox, wait_progress, wait_status
from tests.transfer.test_move import make_message
from yippiemove.service.core import Account
from yippiemove.testing.dovecot import MaildirMessage

OWNER = "owner@example.org"


@pytest.fixture
def server(dovecot_factory):
    return dovecot_factory(users={"src": SRC_PW, "src2": SRC_PW, "dst": DST_PW})


def test_two_sources_into_one_mailbox_run_one_after_the_other(make_service, server):
    """Two workers free, two jobs into the same mailbox (one through ``localhost``,
    another spelling of the same server): the second waits, says for which transfer,
    then runs; the destination holds both sources exactly once."""
    big_mailbox(server)
    server.deliver_many(
        "src2",
        "Other",
        [MaildirMessage(make_message(10_000 + i, size=2000), ()) for i in range(40)],
    )
    server.deliver_many(
        "src2",
        "INBOX",
        [MaildirMessage(make_message(20_000 + i, size=500), ()) for i in range(15)],
    )
    svc = make_service(ca_file=str(server.ca_file), job_connections=1, mailbox_wait_seconds=0.3)
    svc.start(2)
    uid = svc.create_user(OWNER, "long enough pass")
    first = svc.create_transfer(uid, account(server, "src", SRC_PW), account(server, "dst", DST_PW))
    wait_progress(svc, uid, first.id, 0.05)
    second = svc.create_transfer(
        uid,
        account(server, "src2", SRC_PW),
        Account("localhost", server.port, "starttls", "DST", DST_PW),
    )
    # While the first copies, the second stays queued, waiting for it by name.
    deadline = time.monotonic() + 20
    while True:
        view = svc.get_transfer(uid, second.id)
        assert view.status == "queued", view
        if view.progress.get("phase") == "waiting":
            break
        assert time.monotonic() < deadline, view.progress
        time.sleep(0.05)
    assert view.progress["waiting_for"] == first.id
    assert svc.get_transfer(uid, first.id).status == "running"
    a = wait_status(svc, uid, first.id)
    b = wait_status(svc, uid, second.id)
    assert a.status == b.status == "done", (a, b)
    assert b.started is not None and a.finished is not None and b.started >= a.finished
    assert "waiting_for" not in b.progress
    # Both exact: every destination folder is the sum of the two sources, no more.
    src = mailcheck.snapshot(server.port, "src", SRC_PW)
    src2 = mailcheck.snapshot(server.port, "src2", SRC_PW)
    dst = mailcheck.snapshot(server.port, "dst", DST_PW)
    for folder in set(src) | set(src2):
        want = src.get(folder, Counter()) + src2.get(folder, Counter())
        assert dst.get(folder) == want, f"folder {folder!r} differs"


def test_two_names_of_one_server_meet_on_its_address(make_service, server):
    """The lock is keyed by the resolved address too: ``127.1`` (a name that resolves
    to 127.0.0.1 without a name server) and ``127.0.0.1`` are one mailbox, so the second
    order waits for the first, and both end exact."""
    big_mailbox(server)
    server.deliver_many(
        "src2", "INBOX", [MaildirMessage(make_message(20_000 + i, size=500), ()) for i in range(15)]
    )
    svc = make_service(job_connections=1, mailbox_wait_seconds=0.3, allow_insecure_hosts=True)
    svc.start(2)
    uid = svc.create_user(OWNER, "long enough pass")
    first = svc.create_transfer(
        uid,
        account(server, "src", SRC_PW, "none"),
        Account("127.0.0.1", server.port, "none", "dst", DST_PW),
    )
    wait_progress(svc, uid, first.id, 0.05)
    second = svc.create_transfer(
        uid,
        account(server, "src2", SRC_PW, "none"),
        Account("127.1", server.port, "none", "dst", DST_PW),
    )
    deadline = time.monotonic() + 20
    while True:
        view = svc.get_transfer(uid, second.id)
        assert view.status == "queued", view
        if view.progress.get("phase") == "waiting":
            break
        assert time.monotonic() < deadline, view.progress
        time.sleep(0.05)
    assert view.progress["waiting_for"] == first.id
    a = wait_status(svc, uid, first.id)
    b = wait_status(svc, uid, second.id)
    assert a.status == b.status == "done", (a, b)
    assert b.started is not None and a.finished is not None and b.started >= a.finished
    src = mailcheck.snapshot(server.port, "src", SRC_PW)
    src2 = mailcheck.snapshot(server.port, "src2", SRC_PW)
    dst = mailcheck.snapshot(server.port, "dst", DST_PW)
    for folder in set(src) | set(src2):
        want = src.get(folder, Counter()) + src2.get(folder, Counter())
        assert dst.get(folder) == want, f"folder {folder!r} differs"


def test_the_lock_keys_of_two_names_share_the_address() -> None:
    from yippiemove.service.writers import mailbox_keys_of

    a = set(mailbox_keys_of({"host": "127.1", "port": 143, "username": "Dst"}))
    b = set(mailbox_keys_of({"host": "127.0.0.1", "port": 143, "username": "dst"}))
    assert a & b
    assert not a & set(mailbox_keys_of({"host": "127.1", "port": 144, "username": "dst"}))


def test_an_expired_holder_gives_the_mailbox_to_the_next_job(make_service, server):
    """A running job whose lease ran out (its machine died) does not block its mailbox:
    the next job into it takes the lock over, and the old one goes back to the queue."""
    from yippiemove.jobs.vocab import JobStatus
    from yippiemove.service.db import Job
    from yippiemove.service.writers import take_mailbox

    svc = make_service(ca_file=str(server.ca_file))
    uid = svc.create_user(OWNER, "long enough pass")
    a = svc.create_transfer(uid, account(server, "src", SRC_PW), account(server, "dst", DST_PW))
    b = svc.create_transfer(uid, account(server, "src2", SRC_PW), account(server, "dst", DST_PW))
    now = time.time()
    with svc.db.session() as s:
        ja = s.get(Job, a.id)
        assert take_mailbox(s, ja, now) is None
        ja.status, ja.lease_owner, ja.lease_expires = JobStatus.RUNNING, "x|1|1", now + 30
    with svc.db.session() as s:
        assert take_mailbox(s, s.get(Job, b.id), now) == a.id  # held: b waits
    with svc.db.session() as s:
        s.get(Job, a.id).lease_expires = now - 1
    with svc.db.session() as s:
        jb = s.get(Job, b.id)
        assert take_mailbox(s, jb, now) is None  # taken over
        jb.status, jb.lease_owner, jb.lease_expires = JobStatus.RUNNING, "y|2|2", now + 30
    with svc.db.session() as s:
        ja = s.get(Job, a.id)
        assert ja.status == JobStatus.QUEUED and ja.lease_owner is None
        assert ja.progress["phase"] == "resuming"
        assert take_mailbox(s, ja, now) == b.id  # b holds it now


@pytest.mark.parametrize(
    ("one", "other", "same"),
    [
        (("localhost", 143, "Bob"), ("127.0.0.1", 143, "bob"), True),
        (("Mail.Example.COM.", 993, "bob"), ("mail.example.com", 993, "BOB"), True),
        (("::1", 143, "bob"), ("[::1]", 143, "bob"), True),
        (("mail.example.com", 993, "bob"), ("mail.example.com", 143, "bob"), False),
        (("mail.example.com", 993, "bob"), ("mail.example.com", 993, "bobby"), False),
    ],
)
def test_mailbox_identity(one, other, same) -> None:
    from yippiemove.service.writers import mailbox_key

    def key(t):
        return mailbox_key({"host": t[0], "port": t[1], "username": t[2]})

    assert (key(one) == key(other)) is same
