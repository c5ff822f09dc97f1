"""Issue 15: worker hosts in network namespaces sharing a Redis queue and a PostgreSQL
control database (tests/fleet.py, tests/fleet_fixtures.py), moving mail from a real
Dovecot reached across their links.  Every test ends with each destination exact
against its source (messages, flags, INTERNALDATE; tests/mailcheck.py) and the source
untouched (the guard of the Dovecot fixture).
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time

import pytest

from tests.fleet import Host
from tests.fleet_fixtures import PW, FleetRun, fleet, fleet_run

__all__ = ["fleet", "fleet_run"]

pytestmark = [pytest.mark.fleet, pytest.mark.timeout(180)]

#: A job of about 1.3 MB behind a 2 Mbit/s link copies for ~8 s: time to act mid-transfer.
SLOW = "2mbit"


def test_two_hosts_share_the_queue(fleet_run: FleetRun) -> None:
    """6 jobs, two worker hosts of 2 workers each: both hosts run some, all exact."""
    run = fleet_run
    w1, w2 = run.hosts[0], run.hosts[1]
    pairs = [run.pair(i, count=40) for i in range(6)]
    for host in (w1, w2):
        host.throttle(SLOW)  # a job takes a second or two: one host cannot take all
    run.start_workers([w1, w2])
    ids = [run.submit(src, dst) for src, dst in pairs]
    run.assert_done(run.wait(ids))
    ran = {j: run.host_of(j) for j in ids}
    hosts = set().union(*ran.values())
    assert {"w1", "w2"} <= hosts, f"not both hosts ran jobs: {ran}\n{run.fleet.worker_logs()}"
    for src, dst in pairs:
        run.exact(src, dst)


BIG = {"count": 90}
LEASE = 6.0  # fleet_fixtures.WORKER_SETTINGS


def _big_pairs(run: FleetRun, n: int) -> list[tuple[str, str]]:
    pairs = []
    for i in range(n):
        src, dst = f"src{i}", f"dst{i}"
        run.mailbox(src, BIG["count"], seed=10 + i, sizes=(3000, 12000, 30000))
        run.dovecot.add_user(dst, PW)
        pairs.append((src, dst))
    return pairs


def _two_hosts_mid_transfer(
    run: FleetRun, jobs: int = 2
) -> tuple[list[tuple[str, str]], list[str]]:
    """Workers on w1 and w2 (two jobs each at a time: a host has room for the other's
    jobs), slow links, ``jobs`` transfers running."""
    w1, w2 = run.hosts[0], run.hosts[1]
    pairs = _big_pairs(run, jobs)
    for host in (w1, w2):
        host.throttle(SLOW)
    run.start_workers([w1, w2], workers=2)
    ids = [run.submit(src, dst) for src, dst in pairs]
    run.wait_running(ids)
    return pairs, ids


def _full_speed(run: FleetRun) -> None:
    """Lift the links' throttle once the test has acted mid-transfer: the rest of the
    transfers (and whatever a stale holder still does) at full speed."""
    for host in run.hosts:
        host.unthrottle()


def _taken_over(run: FleetRun, job_id: str, dead: Host, timeout: float) -> float:
    """Seconds until another host than ``dead`` runs the job (it has the job's
    directory and the job runs or ended)."""
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        others = run.host_of(job_id) - {dead.name}
        if others and run.view(job_id).status in ("running", "done"):
            return time.monotonic() - start
        time.sleep(0.05)
    raise AssertionError(
        f"job {job_id} not taken over within {timeout:.0f} s: {run.row(job_id)}\n"
        f"{run.pg_activity()}\n{run.fleet.worker_logs()}"
    )


def _victim(run: FleetRun, ids: list[str]) -> tuple[Host, list[str]]:
    """The host running the most of ``ids`` now, and those jobs."""
    running = [j for j in ids if run.view(j).status == "running"]
    by_host = {h.name: [j for j in running if h.name in run.host_of(j)] for h in run.hosts[:2]}
    name = max(by_host, key=lambda n: len(by_host[n]))
    assert by_host[name], f"no host runs a job: {by_host}"
    return run.fleet.host(name), by_host[name]


def test_host_killed_mid_transfer_its_jobs_resume_elsewhere(fleet_run: FleetRun) -> None:
    """SIGKILL to every process of a host (worker and job processes) mid-transfer: the
    other host resumes its jobs within lease + 10 s, and every destination is exact."""
    run = fleet_run
    pairs, ids = _two_hosts_mid_transfer(run)
    dead, its_jobs = _victim(run, ids)
    dead.kill_all()
    assert not dead.pids()
    for job_id in its_jobs:
        took = _taken_over(run, job_id, dead, LEASE + 10)
        assert took <= LEASE + 10
    _full_speed(run)
    run.assert_done(run.wait(ids))
    for src, dst in pairs:
        run.exact(src, dst)


def test_partitioned_host_does_not_write_after_takeover(fleet_run: FleetRun) -> None:
    """The link of a host is cut mid-transfer (its processes live on): the other host
    takes its jobs over; healed later, the cut-off host must not write into the
    mailboxes taken from it: every destination exact, before and after the heal."""
    run = fleet_run
    pairs, ids = _two_hosts_mid_transfer(run)
    cut, its_jobs = _victim(run, ids)
    cut.cut()
    for job_id in its_jobs:
        _taken_over(run, job_id, cut, LEASE + 10)
    _full_speed(run)
    run.assert_done(run.wait(ids))
    for src, dst in pairs:
        run.exact(src, dst)
    cut.heal()
    # The stale holder gets its connections back; give it time to do harm.
    time.sleep(LEASE + 2)
    for job_id in ids:
        assert run.view(job_id).status == "done", run.row(job_id)
    for src, dst in pairs:
        run.exact(src, dst)


def _yippiemove(run: FleetRun, *args: str) -> subprocess.CompletedProcess[str]:
    """An operator command against the fleet's control database (from the test
    process, the root namespace)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("YIPPIEMOVE_")}
    env.update(run.fleet.service_env)
    env["YIPPIEMOVE_DATA_DIR"] = str(run.tmp / "operator")
    return subprocess.run(
        [sys.executable, "-m", "yippiemove.cli", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_drain_moves_jobs_to_the_other_host(fleet_run: FleetRun) -> None:
    """`yippiemove worker drain HOST` mid-transfer: that host's running jobs stop and are
    resumed by the other host, exact; the drained host takes no new job."""
    run = fleet_run
    pairs, ids = _two_hosts_mid_transfer(run)
    drained, its_jobs = _victim(run, ids)
    # Slower still while the drain comes in (a CLI start and a heartbeat: seconds on a
    # busy machine), so that its jobs are still mid-way when it does.
    drained.throttle("500kbit")
    done = _yippiemove(run, "worker", "drain", drained.name, "--wait", "--timeout", "60")
    assert done.returncode == 0, done.stderr
    for job_id in its_jobs:
        _taken_over(run, job_id, drained, 30)
    _full_speed(run)
    # A new order after the drain goes to the other host only.
    late_pair = run.pair(9, count=20)
    late = run.submit(*late_pair)
    run.assert_done(run.wait([*ids, late]))
    assert run.host_of(late) and drained.name not in run.host_of(late), run.host_of(late)
    for src, dst in [*pairs, late_pair]:
        run.exact(src, dst)


def test_redis_restart_loses_no_job(fleet_run: FleetRun) -> None:
    """Redis is restarted with its data lost while two jobs run and two wait in its
    queue: the control database is the truth, every job ends done and exact."""
    run = fleet_run
    w1, w2 = run.hosts[0], run.hosts[1]
    pairs = _big_pairs(run, 2) + [run.pair(i, count=30) for i in (2, 3)]
    for host in (w1, w2):
        host.throttle(SLOW)
    run.start_workers([w1, w2], workers=1)
    first = [run.submit(src, dst) for src, dst in pairs[:2]]
    run.wait_running(first, after=0.5)
    later = [run.submit(src, dst) for src, dst in pairs[2:]]
    assert all(run.view(j).status == "queued" for j in later)
    run.services.redis.restart()
    _full_speed(run)
    run.assert_done(run.wait(first + later, timeout=25))
    for src, dst in pairs:
        run.exact(src, dst)


def test_postgres_restart_workers_carry_on(fleet_run: FleetRun) -> None:
    """PostgreSQL restarts (its sessions ended) while jobs run on both hosts: the
    workers reconnect and carry on; every job done and exact."""
    run = fleet_run
    pairs, ids = _two_hosts_mid_transfer(run)
    run.services.postgres.restart()
    _full_speed(run)
    run.assert_done(run.wait(ids, timeout=90))
    for src, dst in pairs:
        run.exact(src, dst)


def test_stale_host_is_fenced(fleet_run: FleetRun) -> None:
    """A host's worker process and its job processes are stopped (SIGSTOP: a paused
    machine) mid-job: its lease runs out and the other host takes the job over; the
    stopped ones continue (SIGCONT) with their connections still open, and nothing is
    doubled: the job process finds its lease token stale before its next destination
    write batch and stops, and so does its supervisor."""
    run = fleet_run
    pairs, ids = _two_hosts_mid_transfer(run)
    stale, its_jobs = _victim(run, ids)
    frozen = stale.pids()
    for pid in frozen:
        os.kill(pid, signal.SIGSTOP)
    try:
        for job_id in its_jobs:
            _taken_over(run, job_id, stale, LEASE + 10)
    finally:
        for pid in frozen:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)
    _full_speed(run)
    run.assert_done(run.wait(ids))
    time.sleep(LEASE + 2)  # what the stale holder might still do
    for job_id in ids:
        assert run.view(job_id).status == "done", run.row(job_id)
    for src, dst in pairs:
        run.exact(src, dst)


HOLDER = """
import sys, time
from yippiemove.service.db import Database, Job
db = Database(sys.argv[1])
with db.session() as s:
    s.get(Job, sys.argv[2], with_for_update=True)
    print("locked", flush=True)
    time.sleep(600)
"""


def test_cut_off_lock_holder_does_not_block_the_fleet(fleet_run: FleetRun) -> None:
    """A host holds a job's row lock in the control database (inside a transaction)
    when its link is cut: PostgreSQL ends that session within seconds, so the other
    hosts' claims and recovery do not wait for it (TCP alone would take hours)."""
    from sqlalchemy import text

    from yippiemove.service.db import Job

    run = fleet_run
    src, dst = run.pair(0, count=5)
    job_id = run.submit(src, dst)  # no worker: it stays queued
    host = run.hosts[2]
    env = {k: v for k, v in os.environ.items() if not k.startswith("YIPPIEMOVE_")}
    log = run.tmp / "holder.log"
    host.run([sys.executable, "-c", HOLDER, run.database_url, job_id], env, log=log)
    deadline = time.monotonic() + 60
    while "locked" not in (log.read_text() if log.exists() else ""):
        assert time.monotonic() < deadline, log.read_text() if log.exists() else "no log"
        time.sleep(0.05)
    host.cut()
    start = time.monotonic()
    with run.service.db.session() as s:
        s.execute(text("SET LOCAL lock_timeout = '20s'"))  # the old code: fails here
        job = s.get(Job, job_id, with_for_update=True)
        assert job is not None
    waited = time.monotonic() - start
    assert waited < 10, f"the row lock of a cut-off host held the others {waited:.1f} s"
