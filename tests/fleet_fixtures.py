"""Fixtures of the fleet tests (tests/jobs/test_fleet.py): a :class:`tests.fleet.Fleet`
with PostgreSQL and Redis on a "db" host, Dovecot on the bridge, workers per test.

``fleet`` (module scope) builds the network and the database servers once per test
module; ``fleet_run`` (per test) gives a test a database of its own on that PostgreSQL
(a fresh ``CREATE DATABASE``), an emptied Redis, a Dovecot of its own listening on the
bridge's address as well as on 127.0.0.1 (the source-untouched guard reads its log),
and a control :class:`~yippiemove.service.core.Service` in the test process (workers
not started) through which the test orders transfers; workers are started on the
hosts by the test (:meth:`FleetRun.start_worker`) and all killed at teardown.

Not root, or no iproute2: the tests skip locally but fail in CI (``CI`` set), where
they must run.
"""

from __future__ import annotations

import os
import random
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from tests import mailcheck
from tests.fleet import Fleet, FleetError, Host, Worker, fleet_unavailable
from tests.infra.postgres import PostgresServer
from tests.infra.redis import RedisServer
from tests.svckit import assert_exact
from tests.transfer.test_move import FLAG_SETS, make_message
from yippiemove.service.config import Settings
from yippiemove.service.core import Account, JobView, Service
from yippiemove.service.db import Job
from yippiemove.testing.dovecot import DovecotServer, MaildirMessage

PW = "Fleet-pw-5e1d7a20"
FINAL = ("done", "failed", "cancelled")

#: The workers' settings in the fleet tests: short leases and frequent maintenance, so
#: that a dead host's jobs are taken over within seconds.
WORKER_SETTINGS: dict[str, Any] = {
    # Short enough for the tests, long enough for a supervisor on a loaded 2-core
    # machine to renew in time (3 s: jobs lost their leases with no fault at all).
    "lease_seconds": 6.0,
    "maintenance_interval": 1.0,
    "recovery_interval": 1.0,
    "host_heartbeat_interval": 0.5,
    "progress_interval": 0.2,
    "restart_delay": 0.2,
    "job_kill_grace": 3.0,
    "mailbox_wait_seconds": 1.0,
    "customer_max_running": 0,
    "egress_allow": "10.0.0.0/8",
    "allow_insecure_hosts": True,
}


@dataclass
class FleetServices:
    fleet: Fleet
    db: Host
    workers: list[Host]
    postgres: PostgresServer
    redis: RedisServer
    databases: int = 0


def _need_fleet() -> None:
    why = fleet_unavailable()
    if why:
        if os.environ.get("CI"):
            pytest.fail(f"the fleet tests must run in CI: {why}", pytrace=False)
        pytest.skip(why)


@pytest.fixture(scope="module")
def fleet() -> Iterator[FleetServices]:
    """The network (bridge; hosts db, w1, w2, w3) with PostgreSQL and Redis on db."""
    _need_fleet()
    with Fleet() as net:
        db = net.add_host("db")
        hosts = [net.add_host(f"w{i}") for i in (1, 2, 3)]
        postgres = PostgresServer()
        net.on_close(postgres.stop)
        postgres.start(host=db.address, netns=db.netns)
        redis = RedisServer()
        net.on_close(redis.stop)
        redis.start(host=db.address, netns=db.netns)
        yield FleetServices(net, db, hosts, postgres, redis)


@dataclass
class FleetRun:
    """One test's service on the fleet; see the module docstring."""

    services: FleetServices
    dovecot: DovecotServer
    database_url: str
    service: Service
    user_id: int
    tmp: Path
    jobs: list[str] = field(default_factory=list)

    @property
    def fleet(self) -> Fleet:
        return self.services.fleet

    @property
    def hosts(self) -> list[Host]:
        return self.services.workers

    def start_worker(self, host: Host, workers: int = 2, **settings: Any) -> Worker:
        return self.fleet.start_worker(host, workers, **{**WORKER_SETTINGS, **settings})

    def start_workers(self, hosts: list[Host], workers: int = 2) -> list[Worker]:
        """A worker on each host, all ready (consuming) before the test goes on: jobs
        must not all go to the host that started first."""
        started = [self.start_worker(host, workers) for host in hosts]
        for worker in started:
            worker.wait_ready()
        return started

    # ------------------------------------------------------------------ mail

    def account(self, user: str) -> Account:
        """An account on the test's Dovecot as the hosts see it (the bridge address)."""
        return Account(self.fleet.address, self.dovecot.port, "none", user, PW)

    def mailbox(
        self, user: str, count: int, seed: int, sizes: tuple[int, ...] = (300, 3000, 12000)
    ) -> None:
        """``count`` messages in INBOX and Archive/2019 of ``user`` (flags, keywords,
        INTERNALDATEs of their own)."""
        self.dovecot.add_user(user, PW)
        rng = random.Random(seed)
        start = datetime(2019, 3, 1, 8, 0, 0)
        items = [
            MaildirMessage(
                make_message(seed * 100_000 + i, size=rng.choice(sizes)),
                FLAG_SETS[i % len(FLAG_SETS)],
                start + timedelta(minutes=37 * i + seed),
            )
            for i in range(count)
        ]
        half = count * 2 // 3
        self.dovecot.deliver_many(user, "INBOX", items[:half])
        self.dovecot.deliver_many(user, "Archive/2019", items[half:])

    def pair(self, n: int, count: int = 60, seed: int = 1) -> tuple[str, str]:
        src, dst = f"src{n}", f"dst{n}"
        self.mailbox(src, count, seed + n)
        self.dovecot.add_user(dst, PW)
        return src, dst

    def exact(self, src: str, dst: str) -> None:
        """The destination holds exactly the source's messages (tests/mailcheck.py:
        bytes, flags, INTERNALDATE, with multiplicity)."""
        try:
            assert_exact(self.dovecot, src, PW, dst, PW)
        except AssertionError as exc:
            a = mailcheck.snapshot(self.dovecot.port, src, PW)
            b = mailcheck.snapshot(self.dovecot.port, dst, PW)
            diff = {
                f: (
                    f"{sum((a[f] - b.get(f, Counter())).values())} missing",
                    f"{sum((b.get(f, Counter()) - a[f]).values())} extra",
                    f"of {sum(a[f].values())}",
                )
                for f in a
            }
            raise AssertionError(f"{src} -> {dst}: {exc}: {diff}") from None

    # ------------------------------------------------------------------ jobs

    def submit(self, src: str, dst: str) -> str:
        view = self.service.create_transfer(self.user_id, self.account(src), self.account(dst))
        self.jobs.append(view.id)
        return view.id

    def view(self, job_id: str) -> JobView:
        return self.service.get_transfer(self.user_id, job_id)

    def row(self, job_id: str) -> dict[str, Any]:
        with self.service.db.read() as s:
            job = s.get(Job, job_id)
            assert job is not None
            return {
                "status": job.status,
                "host": job.host,
                "jail": job.jail,
                "lease_owner": job.lease_owner,
                "lease_token": job.lease_token,
                "attempts": job.attempts,
                "error": job.error,
            }

    def wait(self, job_ids: list[str], timeout: float = 120.0) -> dict[str, JobView]:
        """Until every job ended; fails with the workers' logs when one did not."""
        deadline = time.monotonic() + timeout
        while True:
            views = {j: self.view(j) for j in job_ids}
            if all(v.status in FINAL for v in views.values()):
                return views
            if time.monotonic() > deadline:
                left = {
                    j: (v.status, v.progress) for j, v in views.items() if v.status not in FINAL
                }
                raise AssertionError(
                    f"jobs not ended within {timeout} s: {left}\n{self.fleet.worker_logs()}"
                )
            time.sleep(0.1)

    def wait_running(
        self, job_ids: list[str], after: float = 1.5, timeout: float = 90.0
    ) -> dict[str, JobView]:
        """Until every job copies messages (phase ``copying``) or has ended already
        (on a loaded machine one may end first; at least one must copy), then ``after``
        seconds more: mid-transfer.  (Progress counts bytes at folder boundaries, too
        coarse to wait for a share of them.)"""
        deadline = time.monotonic() + timeout
        while True:
            views = {j: self.view(j) for j in job_ids}
            copying = [
                j
                for j, v in views.items()
                if v.status == "running" and v.progress.get("phase") == "copying"
            ]
            ended = [j for j, v in views.items() if v.status in FINAL]
            if copying and len(copying) + len(ended) == len(job_ids):
                time.sleep(after)
                return views
            if len(ended) == len(job_ids):
                raise AssertionError("every job ended before the test could act on them")
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"jobs not copying within {timeout} s: "
                    f"{ {j: (v.status, v.progress) for j, v in views.items()} }\n"
                    f"{self.fleet.worker_logs()}"
                )
            time.sleep(0.05)

    def assert_done(self, views: dict[str, JobView]) -> None:
        bad = {j: (v.status, v.error) for j, v in views.items() if v.status != "done"}
        assert not bad, f"jobs not done: {bad}\n{self.fleet.worker_logs()}"

    def pg_activity(self) -> str:
        """The control database's sessions (who waits for whom), for failure messages."""
        import psycopg

        url = self.database_url.replace("postgresql+psycopg://", "postgresql://")
        try:
            with psycopg.connect(url, connect_timeout=5) as conn:
                rows = conn.execute(
                    "SELECT client_addr, state, wait_event_type, wait_event,"
                    " pg_blocking_pids(pid), left(query, 120) FROM pg_stat_activity"
                    " WHERE datname = current_database() AND pid <> pg_backend_pid()"
                ).fetchall()
        except Exception as exc:
            return f"(pg_stat_activity: {exc})"
        return "pg_stat_activity:\n" + "\n".join(f"  {row}" for row in rows)

    def host_of(self, job_id: str) -> set[str]:
        """Names of the hosts that ran the job: its directory in their data dirs, and
        ``Job.host`` when the service records it."""
        ran = {w.host.name for w in self.fleet.workers if job_id in w.job_dirs()}
        recorded = self.row(job_id)["host"]
        if recorded:
            ran.add(recorded)
        return ran


def _new_database(services: FleetServices) -> str:
    services.databases += 1
    return services.postgres.create_database(f"fleet{services.databases}")


@pytest.fixture
def fleet_run(
    fleet: FleetServices, tmp_path: Path, request: pytest.FixtureRequest
) -> Iterator[FleetRun]:
    import redis

    from tests.conftest import _guard_sources

    database_url = _new_database(fleet)
    redis.Redis.from_url(fleet.redis.url).flushall()
    net = fleet.fleet
    control = tmp_path / "control"
    settings = Settings.load(
        control,
        database_url=database_url,
        queue_url=fleet.redis.url,
        egress_allow="10.0.0.0/8",
        allow_insecure_hosts=True,
        customer_max_running=0,
        customer_max_pending=0,
    )
    service = Service(settings)
    net.configure(
        database_url=database_url,
        queue_url=fleet.redis.url,
        credentials_key_file=settings.credentials_key_file,
        secret_key_file=settings.secret_key_file,
    )
    dovecot = DovecotServer(
        tmp_path / "dovecot", users={}, change_log=True, listen_addresses=[net.address]
    )
    dovecot.start()
    run = FleetRun(
        fleet,
        dovecot,
        database_url,
        service,
        service.create_user("owner@example.org", PW),
        tmp_path,
    )
    try:
        yield run
    finally:
        for host in fleet.workers:
            try:
                host.heal()
                host.unthrottle()
                host.kill_all()
            except FleetError:
                pass
        print(net.worker_logs())  # pytest shows it when the test failed
        net.workers.clear()
        service.close()
        dovecot.stop()
        _guard_sources(request, [dovecot])
