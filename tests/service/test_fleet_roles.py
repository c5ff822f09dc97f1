"""Worker hosts (issue 15): the registry, duplicate names, the operator's view, host names
in process identities, and recovery that never loses a job (lost queue messages,
expired leases taken over within seconds).  The drain of a real worker process is in
tests/jobs/test_fleet_drain.py."""

from __future__ import annotations

import json
import logging
import signal
import socket
import subprocess
import time

import pytest
from click.testing import CliRunner

from tests.svckit import DST_PW, SRC_PW, account, assert_exact, wait_status
from tests.transfer.test_move import populate
from yippiemove import __version__
from yippiemove.cli import main
from yippiemove.jobs.supervisor import _start_time, identity_dead, kill_stale_jail
from yippiemove.service.core import Account, HostNameTaken
from yippiemove.service.db import Job, WorkerHost
from yippiemove.service.fleet import LostMessages, find_address, process_started_at

OWNER = "owner@example.org"


@pytest.fixture
def server(dovecot_factory):
    return dovecot_factory(users={"src": SRC_PW, "dst": DST_PW, "src2": SRC_PW, "dst2": DST_PW})


@pytest.fixture
def sleeper():
    """A live process of this machine, in its own process group."""
    proc = subprocess.Popen(["sleep", "120"], start_new_session=True)
    yield proc
    if proc.poll() is None:
        proc.kill()
    proc.wait()


def _row(svc, name):
    with svc.db.read() as s:
        return s.get(WorkerHost, name)


def _host(svc, name):
    return next(h for h in svc.hosts() if h["name"] == name)


def test_registry_rows_appear_heartbeat_and_go(make_service):
    svc = make_service(host_name="h1", host_heartbeat_interval=0.2, recovery_interval=0)
    svc.start(3, role="worker")
    view = _host(svc, "h1")
    assert view["state"] == "up" and view["role"] == "worker" and view["capacity"] == 3
    assert view["version"] == __version__ and view["pid"] == svc.agent.pid
    assert view["address"] and view["running"] == [] and not view["draining"]
    first = _row(svc, "h1").heartbeat
    time.sleep(0.7)
    assert _row(svc, "h1").heartbeat > first  # renewed by the heartbeat thread
    svc.stop()
    view = _host(svc, "h1")
    assert view["state"] == "gone" and view["heartbeat_age"] is None
    # Web and API only: no consumers, no host row.
    web = make_service(host_name="web-only")
    web.start(0)
    assert not web.queue.running and web.agent is None
    assert [h["name"] for h in web.hosts()] == ["h1"]


def test_a_second_live_process_with_the_same_host_name_is_refused(make_service, sleeper):
    svc = make_service(host_name="dup", recovery_interval=0)
    address = find_address(svc.settings)
    with svc.db.session() as s:  # another live process of this machine holds the name
        s.add(
            WorkerHost(
                name="dup",
                address=address,
                capacity=2,
                role="worker",
                pid=sleeper.pid,
                started=process_started_at(sleeper.pid),
                heartbeat=time.time(),
            )
        )
    with pytest.raises(HostNameTaken, match=r"another process runs as worker host 'dup' \(pid"):
        svc.start(1)
    assert not svc.queue.running
    # The command line says so and stops (exit status 2), before taking any job.
    handler = signal.getsignal(signal.SIGTERM)
    try:
        r = CliRunner().invoke(
            main,
            ["worker", "--host-name", "dup", "--data-dir", str(svc.settings.data_dir)],
        )
    finally:
        signal.signal(signal.SIGTERM, handler)
    assert r.exit_code == 2, r.output
    assert "another process runs as worker host 'dup'" in r.output
    assert "--host-name" in r.output
    # Once that process is dead the name is free again (a restart after kill -9).
    sleeper.kill()
    sleeper.wait()
    svc.start(1)
    row = _row(svc, "dup")
    assert row.pid == svc.agent.pid and row.capacity == 1
    svc.stop()
    # A fresh row of another address: presumed alive, whatever our pids say.
    with svc.db.session() as s:
        row = s.get(WorkerHost, "dup")
        row.address, row.pid, row.heartbeat = "192.0.2.77", 1, time.time()
    with pytest.raises(HostNameTaken, match=r"192\.0\.2\.77"):
        svc.start(1)


def test_hosts_lists_running_jobs_per_host(make_service):
    svc = make_service(host_name="alpha", recovery_interval=0)
    svc.start(1)
    svc.queue.stop()  # nothing runs here: the rows below say who runs what
    uid = svc.create_user(OWNER, "long enough pass")
    jobs = []
    for n in range(3):
        job = svc.create_transfer(
            uid,
            Account("127.0.0.1", 143, "none", f"s{n}", "pw"),
            Account("127.0.0.1", 143, "none", f"d{n}", "pw"),
        )
        jobs.append(job.id)
    with svc.db.session() as s:
        for job_id, owner in zip(jobs, ("alpha|11|1", "alpha|12|1", "beta|13|1"), strict=True):
            j = s.get(Job, job_id)
            j.status, j.lease_owner, j.lease_expires = "running", owner, time.time() + 30
        s.add(
            WorkerHost(
                name="beta",
                address="10.9.0.2",
                capacity=4,
                role="worker",
                pid=13,
                started=1.0,
                heartbeat=time.time(),
                draining=True,
            )
        )
    data = str(svc.settings.data_dir)
    r = CliRunner().invoke(main, ["hosts", "--data-dir", data])
    assert r.exit_code == 0, r.output
    lines = r.output.splitlines()
    assert lines[0].split() == [
        "HOST",
        "STATE",
        "ROLE",
        "ADDRESS",
        "CAP",
        "RUNNING",
        "VERSION",
        "HEARTBEAT",
    ]
    assert lines[1].split()[:6] == [
        "alpha",
        "up",
        "serve",
        _host(svc, "alpha")["address"],
        "1",
        "2",
    ]
    assert lines[2].split()[:6] == ["beta", "draining", "worker", "10.9.0.2", "4", "1"]
    mine = sorted(jobs[:2])  # started at the same moment: by id
    assert f"alpha: {mine[0]} {mine[1]}" in r.output and f"beta: {jobs[2]}" in r.output
    r = CliRunner().invoke(main, ["hosts", "--json", "--data-dir", data])
    rows = {h["name"]: h for h in json.loads(r.output)}
    assert rows["alpha"]["running"] == mine and rows["beta"]["running"] == jobs[2:]
    assert rows["beta"]["state"] == "draining"
    # Drain and undrain by name; an unknown name is an error.
    r = CliRunner().invoke(main, ["worker", "undrain", "beta", "--data-dir", data])
    assert r.exit_code == 0 and _host(svc, "beta")["state"] == "up"
    r = CliRunner().invoke(main, ["worker", "--data-dir", data, "drain", "beta"])
    assert r.exit_code == 0 and _host(svc, "beta")["state"] == "draining"
    r = CliRunner().invoke(main, ["worker", "drain", "nobody", "--data-dir", data])
    assert r.exit_code == 2 and "no worker host named 'nobody'" in r.output


def test_a_host_never_judges_or_kills_another_hosts_processes(make_service, sleeper):
    """Hosts in network namespaces share one kernel (pids, host name): a job process of
    another host must survive this host's take-over of the job's expired lease (the
    other host is fenced instead).  The old code killed it: it compared the kernel's
    host name."""
    pid = sleeper.pid
    kernel = socket.gethostname()
    other = f"{kernel}|{pid}|{_start_time(pid)}"  # what a host named like the kernel writes
    assert not identity_dead(other, "host-a")
    assert not identity_dead(f"host-b|{pid}|{_start_time(pid)}", "host-a")
    assert not identity_dead(f"host-a|{pid}|{_start_time(pid)}", "host-a")
    assert identity_dead(f"host-a|{pid}|{int(_start_time(pid)) + 1}", "host-a")
    kill_stale_jail(f"host-b|{pid}|{_start_time(pid)}", host="host-a", timeout=1)
    assert sleeper.poll() is None
    svc = make_service(host_name="host-a", recovery_interval=0)
    uid = svc.create_user(OWNER, "long enough pass")
    job = svc.create_transfer(
        uid,
        Account("127.0.0.1", 143, "none", "s", "pw"),
        Account("127.0.0.1", 143, "none", "d", "pw"),
    )
    with svc.db.session() as s:
        j = s.get(Job, job.id)
        j.status, j.lease_owner, j.jail = "running", other, other
        j.lease_expires = time.time() - 1
    assert svc.recover() == [job.id]
    time.sleep(0.3)
    assert sleeper.poll() is None, "another host's job process was killed"


def test_lost_messages_are_found_without_flooding_the_queue(make_service):
    svc = make_service(recovery_interval=0)
    huey = svc.queue.huey
    uid = svc.create_user(OWNER, "long enough pass")
    job = svc.create_transfer(
        uid,
        Account("127.0.0.1", 143, "none", "s", "pw"),
        Account("127.0.0.1", 143, "none", "d", "pw"),
    )
    assert huey.pending_count() == 1
    for _ in range(3):  # its message is there: nothing to do
        assert svc.requeue_lost() == []
    # Nor at a start (hosts of a fleet starting one after the other add no copies).
    assert svc.recover(startup=True) == []
    assert huey.pending_count() == 1
    huey.flush()
    svc.queue.enqueue(job.id, delay=3600)  # waiting legitimately (scheduled)
    for _ in range(3):
        assert svc.requeue_lost() == []
    assert huey.pending_count() + huey.scheduled_count() == 1
    huey.flush()  # lost
    assert svc.requeue_lost() == []  # missing once: maybe held by a worker right now
    assert svc.requeue_lost() == [job.id]  # missing twice: lost
    assert huey.pending_count() == 1
    for _ in range(3):
        assert svc.requeue_lost() == []
    assert huey.pending_count() == 1
    # The queue's server changed (a Redis restart): every missing job at once.
    lost = LostMessages()
    assert lost.lost({"a", "b"}, {"a", "b"}, "run-1") == []
    assert lost.lost({"a", "b"}, {"a"}, "run-2") == ["b"]
    assert lost.lost({"a", "b"}, {"a", "b"}, "run-2") == []
    assert lost.lost({"a"}, None, None) == []  # a queue that cannot tell


def test_a_failed_enqueue_and_a_lost_message_are_run_anyway(make_service, server, monkeypatch):
    """The control database is the truth: a job whose enqueue failed (the queue's server
    away) is accepted, and it runs within seconds like a job whose message was lost."""
    populate(server)
    populate(server, user="src2")
    svc = make_service(ca_file=str(server.ca_file), recovery_interval=0.3)
    svc.start(1)
    uid = svc.create_user(OWNER, "long enough pass")
    real = svc.queue.enqueue

    def down(job_id, delay=0.0):
        raise ConnectionError("Error 111 connecting to queue.internal:6379. Connection refused.")

    monkeypatch.setattr(svc.queue, "enqueue", down)
    job = svc.create_transfer(uid, account(server, "src", SRC_PW), account(server, "dst", DST_PW))
    monkeypatch.setattr(svc.queue, "enqueue", real)
    assert job.status == "queued"
    t0 = time.monotonic()
    assert wait_status(svc, uid, job.id, timeout=60).status == "done"
    assert time.monotonic() - t0 < 30
    assert_exact(server, "src", SRC_PW, "dst", DST_PW)
    # A message lost in transit (accepted, then gone with a restarted Redis).
    monkeypatch.setattr(svc.queue, "enqueue", lambda job_id, delay=0.0: None)
    other = svc.create_transfer(
        uid, account(server, "src2", SRC_PW), account(server, "dst2", DST_PW)
    )
    monkeypatch.setattr(svc.queue, "enqueue", real)
    assert wait_status(svc, uid, other.id, timeout=60).status == "done"
    assert_exact(server, "src2", SRC_PW, "dst2", DST_PW)


def test_an_expired_lease_is_taken_over_within_seconds(make_service, server):
    """A host died elsewhere (its processes cannot be checked from here): its job is
    resumed once its lease expires, within a sweep -- not at the maintenance round."""
    populate(server)
    svc = make_service(
        ca_file=str(server.ca_file), host_name="host-a", lease_seconds=3, recovery_interval=0.5
    )
    uid = svc.create_user(OWNER, "long enough pass")
    job = svc.create_transfer(uid, account(server, "src", SRC_PW), account(server, "dst", DST_PW))
    expires = time.time() + 3
    with svc.db.session() as s:
        j = s.get(Job, job.id)
        j.status, j.lease_owner, j.lease_expires = "running", "host-z|4242|1", expires
        j.started = time.time()
    svc.start(1)  # its message is taken and dropped: the job is not queued
    taken = None
    deadline = time.time() + 30
    while time.time() < deadline:
        with svc.db.read() as s:
            j = s.get(Job, job.id)
            owner, status = j.lease_owner, j.status
        if status != "running" or (owner or "").startswith("host-a|"):
            taken = time.time()
            break
        time.sleep(0.05)
    assert taken is not None, "the expired lease was not taken over"
    assert expires - 0.2 <= taken <= expires + 5, taken - expires  # measured: +0.1 s
    assert wait_status(svc, uid, job.id, timeout=60).status == "done"
    assert_exact(server, "src", SRC_PW, "dst", DST_PW)


def test_a_host_survives_an_unreachable_control_database(make_service, monkeypatch, caplog):
    """Heartbeats and sweeps log and retry; the host goes on when the database is back."""
    caplog.set_level(logging.INFO, logger="yippiemove.fleet")
    svc = make_service(host_name="h2", host_heartbeat_interval=0.1, recovery_interval=0.1)
    svc.start(1)
    real = svc.db.session

    def down():
        raise ConnectionError("connection to server at db.internal failed")

    monkeypatch.setattr(svc.db, "session", down)
    monkeypatch.setattr(svc.db, "read", down)
    time.sleep(0.6)
    assert all(t.is_alive() for t in svc.agent._threads)
    monkeypatch.undo()
    assert svc.db.session == real
    before = _row(svc, "h2").heartbeat
    time.sleep(0.5)
    assert _row(svc, "h2").heartbeat > before and _host(svc, "h2")["state"] == "up"
    beats = [r for r in caplog.records if "heartbeat failed" in r.getMessage()]
    assert len(beats) == 1  # one warning per outage, not one per beat
    assert any("answers again" in r.getMessage() for r in caplog.records)
