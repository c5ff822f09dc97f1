"""Fencing and checkpoints across two worker "hosts" (issue 15), at the service level.

Two ``yippiemove worker`` processes on this machine (tests/jobs/fencekit.py: each in a
UTS namespace named after it, "alpha" and "beta", with its own data directory) share one
SQLite control database, the key files and a Redis queue.  The job's servers are a real
Dovecot behind proxies: the source's throttled (a slow provider: the job lasts ~15 s),
the destination's recording every command of every client connection.

* **fencing**: alpha's worker process (not its job process) is frozen with SIGSTOP mid
  job; beta takes the job over once the lease has expired; alpha is thawed.  The
  destination must end exact (compared with the source: nothing doubled, nothing
  missing), and alpha's job process must not have written to the destination after its
  lease ran out.  Before fencing (the job process did not know its lease) it went on
  writing next to beta for as long as alpha stayed frozen.
* **checkpoint**: alpha's worker and its job process are killed with SIGKILL mid job;
  beta resumes from the checkpoint in the control database (its progress says so, with
  the messages its state knew) and reads far fewer source bytes than the whole mailbox;
  the destination ends exact.
"""

from __future__ import annotations

import os
import random
import signal
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.jobs.fencekit import RecordingProxy, RedisServer, Worker
from tests.transfer.test_kill_campaign import exactness
from tests.transfer.test_move import make_message
from yippiemove.service.core import Account, Service
from yippiemove.service.db import Job, JobCheckpoint
from yippiemove.testing.dovecot import MaildirMessage

PW = "pw"  # tests/transfer/test_kill_campaign.py's exactness() logs in with it
OWNER = "owner@example.org"
LEASE = 4.0
#: The source's pace per connection (bytes/s): the job lasts ~15 s.
RATE = 400_000

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="unshare --uts needs root")


@pytest.fixture
def server(dovecot_factory):
    return dovecot_factory(users={"src": PW, "dst": PW})


@pytest.fixture
def redis_server(tmp_path) -> Iterator[RedisServer]:
    r = RedisServer(tmp_path / "redis").start()
    yield r
    r.stop()


def load(server: Any, folders: int, per_folder: int, seed: int = 15) -> int:
    """Messages of 10-40 kB in ``folders`` folders; returns the bytes delivered."""
    rng = random.Random(seed)
    total = 0
    n = 0
    for f in range(folders):
        items = []
        for _ in range(per_folder):
            raw = make_message(n, size=rng.choice((10_000, 20_000, 40_000)))
            total += len(raw)
            items.append(MaildirMessage(raw, ()))
            n += 1
        server.deliver_many("src", "INBOX" if f == 0 else f"Folder{f}", items)
    return total


class Fleet:
    """The shared pieces and the two workers."""

    def __init__(self, tmp: Path, make_service: Any, redis_url: str, server: Any) -> None:
        shared = tmp / "shared"
        shared.mkdir()
        self.db_path = shared / "control.sqlite"
        common = {
            "database_url": f"sqlite:///{self.db_path}",
            "queue_url": redis_url,
            "credentials_key_file": shared / "credentials.key",
            "secret_key_file": shared / "session.key",
        }
        # The test's own view of the control database (it runs no jobs).
        self.svc: Service = make_service(
            allow_insecure_hosts=True, ca_file=str(server.ca_file), **common
        )
        env = {f"YIPPIEMOVE_{k.upper()}": str(v) for k, v in common.items()}
        env.update(
            YIPPIEMOVE_LEASE_SECONDS=str(LEASE),
            YIPPIEMOVE_MAINTENANCE_INTERVAL="1",
            YIPPIEMOVE_PROGRESS_INTERVAL="0.2",
            YIPPIEMOVE_JOB_CONNECTIONS="1",
            YIPPIEMOVE_RESTART_DELAY="0.2",
            YIPPIEMOVE_CHECKPOINT_INTERVAL="1",
            YIPPIEMOVE_ALLOW_INSECURE_HOSTS="1",
            YIPPIEMOVE_EGRESS_ALLOW="127.0.0.0/8",
            YIPPIEMOVE_CA_FILE=str(server.ca_file),
        )
        self.workers = {
            name: Worker(name, tmp / name, env, tmp / f"{name}.log") for name in ("alpha", "beta")
        }

    def job(self, job_id: str) -> Job:
        with self.svc.db.read() as s:
            job = s.get(Job, job_id)
            assert job is not None
            s.expunge(job)
            return job

    def wait(self, job_id: str, what: str, cond: Any, timeout: float = 60) -> Job:
        deadline = time.monotonic() + timeout
        while True:
            job = self.job(job_id)
            if cond(job):
                return job
            if time.monotonic() > deadline:
                logs = "\n".join(f"--- {n}\n{w.tail()}" for n, w in self.workers.items())
                raise AssertionError(f"{what}: not within {timeout} s: {job.status} "
                                     f"{job.lease_owner} {job.progress}\n{logs}")  # fmt: skip
            time.sleep(0.05)

    def db_free(self) -> bool:
        """Whether nobody holds the control database's write lock now."""
        db = sqlite3.connect(self.db_path, timeout=0.3)
        try:
            db.execute("BEGIN IMMEDIATE")
            db.rollback()
            return True
        except sqlite3.OperationalError:
            return False
        finally:
            db.close()

    def stop_all(self) -> None:
        for w in self.workers.values():
            w.kill_all()


@pytest.fixture
def fleet(tmp_path, make_service, redis_server, server) -> Iterator[Fleet]:
    f = Fleet(tmp_path, make_service, redis_server.url, server)
    yield f
    f.stop_all()


def _transfer(fleet: Fleet, src_port: int, dst_port: int) -> str:
    uid = fleet.svc.create_user(OWNER, "long enough pass")
    view = fleet.svc.create_transfer(
        uid,
        Account("127.0.0.1", src_port, "none", "src", PW),
        Account("127.0.0.1", dst_port, "none", "dst", PW),
    )
    return view.id


def _owner_is(name: str) -> Any:
    return lambda job: (job.lease_owner or "").startswith(f"{name}|")


def test_a_frozen_worker_host_writes_nothing_after_its_lease(server, fleet):
    total = load(server, folders=3, per_folder=70)
    alpha, beta = fleet.workers["alpha"], fleet.workers["beta"]
    with (
        RecordingProxy(server.port, s2c_rate=RATE) as src,
        RecordingProxy(server.port) as dst,
    ):
        alpha.start()
        job_id = _transfer(fleet, src.port, dst.port)
        fleet.wait(
            job_id,
            "alpha copying",
            lambda j: _owner_is("alpha")(j) and (j.progress or {}).get("bytes_done", 0) > total / 8,
        )
        beta.start()
        # Freeze alpha's worker process (its supervisor and its lease renewals) -- never
        # in the middle of a control database transaction, which would freeze beta too.
        for _ in range(50):
            os.kill(alpha.pid, signal.SIGSTOP)
            if fleet.db_free():
                break
            os.kill(alpha.pid, signal.SIGCONT)
            time.sleep(0.05)
        stopped = time.monotonic()
        expires = fleet.job(job_id).lease_expires  # alpha renews no more
        taken = fleet.wait(job_id, "beta's takeover", _owner_is("beta"), timeout=30)
        took_over = time.monotonic()
        assert expires is not None and time.time() >= expires, "taken over within the lease"
        # Alpha stays frozen while beta copies, then comes back.
        time.sleep(8)
        os.kill(alpha.pid, signal.SIGCONT)
        done = fleet.wait(job_id, "the job's end", lambda j: j.status in ("done", "failed"), 180)
        assert done.status == "done", (done.error, beta.tail())
        conns = dst.snapshot()
    # Alpha's connections to the destination were all opened before the takeover (beta
    # had not run the job yet); none wrote after alpha's lease ran out.
    alphas = [c for c in conns if c.accepted < took_over]
    late = [
        (c.index, round(t - stopped, 2), v)
        for c in alphas
        for t, v in c.writes()
        if t > stopped + LEASE
    ]
    assert alphas and not late, f"alpha wrote after its lease: {late[:10]} ({len(late)})"
    assert exactness(server.port, "src", "dst") is None
    assert taken.lease_token >= 2  # beta's claim has a token of its own
    # Alpha's job process stopped itself at the fence (it did not wait to be killed).
    job_log = (alpha.data_dir / "jobs" / job_id / "job.log").read_text(errors="replace")
    assert "lease expired without a renewal" in job_log, job_log[-2000:]


def test_a_killed_worker_hosts_job_resumes_elsewhere_from_its_checkpoint(server, fleet):
    total = load(server, folders=4, per_folder=50)
    alpha, beta = fleet.workers["alpha"], fleet.workers["beta"]
    with (
        RecordingProxy(server.port, s2c_rate=RATE) as src,
        RecordingProxy(server.port) as dst,
    ):
        alpha.start()
        job_id = _transfer(fleet, src.port, dst.port)

        half = fleet.wait(
            job_id,
            "alpha half way",
            lambda j: (
                _owner_is("alpha")(j) and (j.progress or {}).get("bytes_done", 0) >= total / 2
            ),
            90,
        )
        since = (half.progress or {}).get("updated", time.time())

        def checkpointed(j: Job) -> bool:
            # A checkpoint taken after the state had recorded that half (it is flushed
            # every second; checkpoints follow every second while it changes).
            with fleet.svc.db.read() as s:
                c = s.get(JobCheckpoint, job_id)
                return c is not None and c.taken > since + 1.5 and _owner_is("alpha")(j)

        running = fleet.wait(job_id, "a checkpoint of that", checkpointed, 60)
        jail = int((running.jail or "").split("|")[1])
        alpha.kill_all()
        os.kill(jail, signal.SIGKILL)
        killed = time.monotonic()
        beta.start()
        resumed = fleet.wait(job_id, "beta's takeover", _owner_is("beta"), timeout=30)
        done = fleet.wait(job_id, "the job's end", lambda j: j.status in ("done", "failed"), 180)
        assert done.status == "done", (done.error, beta.tail())
        sources = src.snapshot()
    assert resumed.host == "beta"
    how = (done.progress or {}).get("resumed_from") or {}
    assert how.get("state") == "checkpoint", (how, beta.tail())
    assert how.get("messages_known", 0) >= 50, how
    # Beta read the rest of the source, not all of it again (hashing what is there).
    after = sum(c.s2c_bytes for c in sources if c.accepted > killed)
    print(f"beta read {after} source bytes of {total} ({after / total:.0%})")
    assert after < total * 0.7, f"beta read {after} source bytes of {total}"
    with fleet.svc.db.read() as s:
        assert s.get(JobCheckpoint, job_id) is None  # deleted with the job's end
    assert exactness(server.port, "src", "dst") is None
