"""A control database that stops answering does not hold up a job's watch loop (issue 15,
fencing): the lease renewal runs on the heartbeats' writer thread (jobs/heartbeats.py), so within the lease the supervisor
still kills its job process (it cannot prove the lease is its own), and the job process
has stopped writing at its own deadline before that.

Before: the renewal ran in the watch loop itself; a database call that blocks (a
partition: the TCP timeout) blocked the loop, and the job process went on writing to the
destination for as long as the call hung, past the lease another host could take over.
"""

from __future__ import annotations

import threading
import time
from typing import Any

from tests.svckit import (
    DST_PW,
    SRC_PW,
    account,
    assert_exact,
    big_mailbox,
    jail_pid,
    pid_alive,
    wait_progress,
    wait_status,
)
from tests.transfer.test_kill_campaign import slow_link
from yippiemove.service.core import Account

LEASE = 3.0


def test_a_hung_database_does_not_hold_the_watch_loop(make_service, dovecot_factory):
    server = dovecot_factory(users={"src": SRC_PW, "dst": DST_PW})
    big_mailbox(server)
    svc = make_service(ca_file=str(server.ca_file), lease_seconds=LEASE, job_connections=1)
    store = svc.supervisor.store
    hang, release = threading.Event(), threading.Event()
    real = store.heartbeat_many

    def heartbeat(*args: Any, **kwargs: Any) -> Any:
        if hang.is_set():
            release.wait(60)  # the database does not answer
        return real(*args, **kwargs)

    store.heartbeat_many = heartbeat  # type: ignore[method-assign]
    svc.start(1)
    with slow_link(server.port, 2_000_000) as link:  # the job lasts ~45 s
        uid = svc.create_user("owner@example.org", "long enough pass")
        job = svc.create_transfer(
            uid,
            Account("127.0.0.1", link.port, "none", "src", SRC_PW),
            account(server, "dst", DST_PW),
        )
        wait_progress(svc, uid, job.id, 0.02)
        pid = jail_pid(svc, job.id)
        assert pid is not None
        hang.set()
        hung = time.monotonic()
        try:
            while pid_alive(pid) and time.monotonic() - hung < 20:
                time.sleep(0.05)
            gone_after = time.monotonic() - hung
            alive = pid_alive(pid)
        finally:
            release.set()
    assert not alive, "the job process ran on while the database hung"
    # Killed when the last renewal is 80% of the lease old: within the lease.
    assert gone_after < LEASE + 1.0, gone_after


def _lapse_renewals(store: Any, seconds: float) -> threading.Event:
    """Every renewal fails (the database is locked or away) for ``seconds`` once the
    returned event is set: the supervisor cannot prove its lease and kills its job."""
    start = threading.Event()
    real = store.heartbeat_many
    until: list[float] = []

    def heartbeat(*args: Any, **kwargs: Any) -> Any:
        if start.is_set():
            if not until:
                until.append(time.monotonic() + seconds)
            if time.monotonic() < until[0]:
                raise RuntimeError("database is locked")
        return real(*args, **kwargs)

    store.heartbeat_many = heartbeat  # type: ignore[method-assign]
    return start


def _lapsed_job_ends_exact(make_service, dovecot_factory, *, requeue_fails: bool) -> None:
    server = dovecot_factory(users={"src": SRC_PW, "dst": DST_PW})
    big_mailbox(server, count=400)
    svc = make_service(
        ca_file=str(server.ca_file),
        lease_seconds=LEASE,
        job_connections=1,
        recovery_interval=0.5,
    )
    store = svc.supervisor.store
    lapse = _lapse_renewals(store, LEASE * 1.5)
    if requeue_fails:  # the give-back fails too: the recovery sweep must find the job
        real_requeue = store.requeue

        def requeue(*args: Any, **kwargs: Any) -> Any:
            if lapse.is_set():
                raise RuntimeError("database is locked")
            return real_requeue(*args, **kwargs)

        store.requeue = requeue  # type: ignore[method-assign]
    svc.start(1)
    with slow_link(server.port, 2_000_000) as link:
        uid = svc.create_user("owner@example.org", "long enough pass")
        job = svc.create_transfer(
            uid,
            Account("127.0.0.1", link.port, "none", "src", SRC_PW),
            account(server, "dst", DST_PW),
        )
        wait_progress(svc, uid, job.id, 0.05)
        pid = jail_pid(svc, job.id)
        lapse.set()
        wait_gone_pid = time.monotonic() + 20
        while pid is not None and pid_alive(pid) and time.monotonic() < wait_gone_pid:
            time.sleep(0.05)
        assert pid is None or not pid_alive(pid), "the job process outlived its lease"
        if requeue_fails:
            time.sleep(LEASE * 1.5)
            lapse.clear()
        view = wait_status(svc, uid, job.id, timeout=120)
    assert view.status == "done", (view.status, view.error)
    assert_exact(server, "src", SRC_PW, "dst", DST_PW)


def test_a_job_whose_lease_lapsed_is_given_back_and_ends_exact(make_service, dovecot_factory):
    """Renewals fail for a while (SQLite's 'database is locked' under 500 jobs, a
    PostgreSQL restart): the supervisor kills its job process within the lease, then
    puts the job back in the queue; it is resumed and ends exact.  Before, it stayed
    ``running`` for good: its lease named this living process, which the recovery
    never takes over from."""
    _lapsed_job_ends_exact(make_service, dovecot_factory, requeue_fails=False)


def test_a_lapsed_job_that_could_not_be_given_back_is_recovered(make_service, dovecot_factory):
    """The same, and the give-back fails as well: the recovery sweep takes over a job
    whose lease expired and that no worker of this process supervises any more."""
    _lapsed_job_ends_exact(make_service, dovecot_factory, requeue_fails=True)
