"""A control database that stops answering does not hold up a job's watch loop (issue 15,
fencing): the lease renewal runs on a helper thread, so within the lease the supervisor
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
    big_mailbox,
    jail_pid,
    pid_alive,
    wait_progress,
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
    real = store.heartbeat

    def heartbeat(*args: Any, **kwargs: Any) -> Any:
        if hang.is_set():
            release.wait(60)  # the database does not answer
        return real(*args, **kwargs)

    store.heartbeat = heartbeat  # type: ignore[method-assign]
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
