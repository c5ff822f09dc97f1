"""A Redis queue that goes away and comes back empty (issue 15): no job is lost.

The control database is the truth.  While Redis is down an order is still accepted (its
enqueue is logged and left to the recovery sweep); the queue consumers survive the
outage; after Redis restarts without persistence (every message gone, a new run_id) the
sweep enqueues the queued jobs again, and every job ends exact.

A small stand-in for the fleet's Redis fixture (tests/infra/redis.py of the fleet-db
part): Debian's redis-server on a free port, no persistence.
"""

from __future__ import annotations

import shutil
import subprocess
import time
from pathlib import Path

import pytest

from tests.svckit import DST_PW, SRC_PW, account, assert_exact, free_port, wait_status
from tests.transfer.test_move import populate

OWNER = "owner@example.org"


class Redis:
    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        args = ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1"]
        args += ["--save", "", "--appendonly", "no", "--dir", str(self.workdir)]
        self.proc = subprocess.Popen(
            args,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        import redis

        deadline = time.monotonic() + 10
        while True:
            try:
                redis.Redis(port=self.port).ping()
                return
            except redis.ConnectionError:
                assert time.monotonic() < deadline, "redis-server did not start"
                time.sleep(0.05)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


@pytest.fixture
def redis_server(tmp_path):
    if shutil.which("redis-server") is None:
        pytest.fail("redis-server is not installed (scripts/test installs it)")
    server = Redis(tmp_path)
    server.start()
    yield server
    server.stop()


def test_redis_restart_loses_no_job(make_service, dovecot_factory, redis_server):
    users = {f"{side}{n}": pw for n in range(3) for side, pw in (("src", SRC_PW), ("dst", DST_PW))}
    server = dovecot_factory(users=users)
    for n in range(3):
        populate(server, user=f"src{n}")
    svc = make_service(
        ca_file=str(server.ca_file), queue_url=redis_server.url, recovery_interval=0.5
    )
    svc.start(1)
    uid = svc.create_user(OWNER, "long enough pass")

    def order(n):
        return svc.create_transfer(
            uid, account(server, f"src{n}", SRC_PW), account(server, f"dst{n}", DST_PW)
        )

    first = order(0)
    assert wait_status(svc, uid, first.id, timeout=60).status == "done"
    # Redis is down: an order is still accepted; the consumers keep going.
    redis_server.stop()
    during = order(1)
    assert during.status == "queued"
    time.sleep(2)
    assert svc.queue.running
    # A message in the queue when Redis dies is gone with it (no persistence).
    redis_server.start()
    svc.queue.stop()
    queued = order(2)
    assert svc.queue.pending() == 1
    redis_server.stop()
    redis_server.start()
    assert svc.queue.pending() == 0
    svc.queue.start(1, svc.supervisor.run_job)
    t0 = time.monotonic()
    for job in (during, queued):
        assert wait_status(svc, uid, job.id, timeout=60).status == "done"
    assert time.monotonic() - t0 < 45
    for n in range(3):
        assert_exact(server, f"src{n}", SRC_PW, f"dst{n}", DST_PW)
