"""Fencing tokens and checkpoints, unit by unit (issue 15): the control database refuses
a stale holder's writes; the job process's write gate; the state a claimed job resumes
from; a corrupt checkpoint is ignored.

The store is the service's real one (SQLite control database); no IMAP server needed.
"""

from __future__ import annotations

import asyncio
import dataclasses
import sqlite3
import time
from pathlib import Path

import pytest

from tests.svckit import DST_PW, SRC_PW
from yippiemove.jobs.checkpoint import (
    CorruptCheckpoint,
    prepare_state,
    restore,
    signature,
    take,
)
from yippiemove.jobs.fence import LeaseGate, LeaseLost, lease_line, read_first_line
from yippiemove.jobs.ports import Claim
from yippiemove.jobs.vocab import JobStatus
from yippiemove.service.core import Account
from yippiemove.service.db import Job, JobCheckpoint

OWNER = "owner@example.org"


def _job(svc):
    uid = svc.create_user(OWNER, "long enough pass")
    view = svc.create_transfer(
        uid,
        Account("127.0.0.1", 1, "starttls", "src", SRC_PW),
        Account("127.0.0.1", 1, "starttls", "dst", DST_PW),
    )
    return view.id


def _requeue_expired(svc, job_id: str) -> None:
    """What Service.recover does to a job whose lease expired."""
    with svc.db.session() as s:
        job = s.get(Job, job_id)
        job.status = JobStatus.QUEUED
        job.lease_owner = None
        job.lease_expires = None


def _state(path: Path, rows: int) -> None:
    db = sqlite3.connect(path)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("CREATE TABLE IF NOT EXISTS messages (folder_id, source_uid, outcome)")
    db.executemany("INSERT INTO messages VALUES (1, ?, 'copied')", [(i,) for i in range(rows)])
    db.commit()
    db.close()


def _count(path: Path) -> int:
    db = sqlite3.connect(path)
    try:
        return db.execute("SELECT count(*) FROM messages").fetchone()[0]
    finally:
        db.close()


def test_token_mismatch_refuses_every_write_of_a_stale_holder(make_service):
    """Holder A's lease expired and B claimed the job (token +1): A's heartbeat, jail
    bookkeeping, checkpoint, requeue and finish are all refused; B's go through.  The
    same owner string with the old token is refused too (a restarted worker)."""
    svc = make_service(host_name="alpha")
    store = svc.supervisor.store
    job_id = _job(svc)
    a = store.claim(job_id, "alpha|1|1", 30, 10)
    assert isinstance(a, Claim) and a.token == 1 and a.last_host is None
    with svc.db.read() as s:
        assert s.get(Job, job_id).host == "alpha"
    _requeue_expired(svc, job_id)
    store.settings.host_name = "beta"
    b = store.claim(job_id, "beta|2|2", 30, 10)
    assert isinstance(b, Claim) and b.token == 2 and b.last_host == "alpha"
    ckpt = take_of(make_state_dir(svc), 10)

    progress = lambda attempts: {"phase": "copying"}  # noqa: E731
    assert store.heartbeat(job_id, "alpha|1|1", 1, 30, progress) == (False, False)
    assert store.heartbeat(job_id, "beta|2|2", 1, 30, progress) == (False, False)
    assert store.jail_started(job_id, "alpha|1|1", 1, "alpha|9|9") is False
    assert store.save_checkpoint(job_id, "alpha|1|1", 1, ckpt) is False
    assert store.requeue(job_id, "alpha|1|1", 1, None) is False
    assert store.finish(job_id, "alpha|1|1", 1, JobStatus.DONE, None, lambda p: p, None) is None
    with svc.db.read() as s:
        job = s.get(Job, job_id)
        assert job.status == JobStatus.RUNNING and job.lease_owner == "beta|2|2"
        assert s.get(JobCheckpoint, job_id) is None

    assert store.heartbeat(job_id, "beta|2|2", 2, 30, progress) == (True, False)
    assert store.jail_started(job_id, "beta|2|2", 2, "beta|9|9") is True
    assert store.save_checkpoint(job_id, "beta|2|2", 2, ckpt) is True
    loaded = store.load_checkpoint(job_id)
    assert loaded is not None and loaded.token == 2 and loaded.sha256 == ckpt.sha256
    # The job ends: its checkpoint goes with it.
    assert store.finish(job_id, "beta|2|2", 2, JobStatus.DONE, None, lambda p: p, None) == OWNER
    with svc.db.read() as s:
        assert s.get(JobCheckpoint, job_id) is None


def test_recover_does_not_take_over_a_lease_renewed_meanwhile(make_service):
    """Service.recover read the job as expired; the holder renews before the takeover's
    transaction: the takeover is skipped (same owner, same token, no longer expired)."""
    svc = make_service(host_name="beta")
    store = svc.supervisor.store
    job_id = _job(svc)
    owner = "elsewhere.example|4242|1"
    claim = store.claim(job_id, owner, 30, 10)
    assert isinstance(claim, Claim)
    with svc.db.session() as s:
        s.get(Job, job_id).lease_expires = time.time() - 1
    real_session = svc.db.session
    renewed = False

    def session_after_renewal():
        nonlocal renewed
        if not renewed:
            renewed = True
            assert store.heartbeat(job_id, owner, claim.token, 30, lambda a: {})[0]
        return real_session()

    svc.db.session = session_after_renewal  # type: ignore[method-assign]
    try:
        assert svc.recover() == []
    finally:
        svc.db.session = real_session  # type: ignore[method-assign]
    with svc.db.read() as s:
        job = s.get(Job, job_id)
        assert job.status == JobStatus.RUNNING and job.lease_owner == owner


def make_state_dir(svc) -> Path:
    d = svc.settings.jobs_dir / "probe"
    d.mkdir(parents=True, exist_ok=True)
    _state(d / "state.sqlite", 10)
    return d


def take_of(workdir: Path, max_bytes: int = 1 << 30):
    ckpt = take(workdir / "state.sqlite", host="alpha", max_bytes=1 << 30)
    assert ckpt is not None
    return ckpt


def test_checkpoint_round_trip_while_the_state_is_open(tmp_path):
    """A checkpoint of a WAL state file that a writer holds open (rows only in the WAL)
    restores to the same rows; too big a file is not checkpointed."""
    jobs = tmp_path / "jobs"
    src = jobs / "a"
    src.mkdir(parents=True)
    path = src / "state.sqlite"
    _state(path, 5)
    writer = sqlite3.connect(path)
    writer.execute("PRAGMA wal_autocheckpoint=0")
    writer.executemany("INSERT INTO messages VALUES (1, ?, 'copied')", [(i,) for i in range(50)])
    writer.commit()
    assert (src / "state.sqlite-wal").stat().st_size > 0
    before = signature(path)
    ckpt = take(path, host="alpha", max_bytes=1 << 30)
    writer.close()
    assert ckpt is not None and ckpt.host == "alpha" and len(ckpt.data) < ckpt.size
    assert before is not None
    dst = jobs / "b"
    dst.mkdir()
    restore(dst, ckpt)
    assert _count(dst / "state.sqlite") == 55
    assert take(path, host="alpha", max_bytes=100) is None
    assert [p.name for p in jobs.iterdir() if p.name.startswith(".ckpt")] == []


def test_restore_picks_local_or_checkpoint_by_the_rule(tmp_path):
    """Last ran here and a local file exists: the local file (the checkpoint is not even
    read).  Last ran elsewhere: the checkpoint replaces the stale local file (its WAL
    removed).  No checkpoint: what is local, or empty."""
    other = tmp_path / "jobs" / "other"
    other.mkdir(parents=True)
    _state(other / "state.sqlite", 30)
    ckpt = take(other / "state.sqlite", host="beta", max_bytes=1 << 30)
    assert ckpt is not None
    work = tmp_path / "jobs" / "job"
    work.mkdir()
    _state(work / "state.sqlite", 3)
    (work / "state.sqlite-wal").write_bytes(b"stale wal of the old file")

    def must_not_load():
        raise AssertionError("the checkpoint is not needed")

    p = prepare_state(work, host="alpha", last_host="alpha", load=must_not_load)
    assert (p.source, p.messages) == ("local", 3)

    p = prepare_state(work, host="alpha", last_host="beta", load=lambda: ckpt)
    assert (p.source, p.messages, p.host) == ("checkpoint", 30, "beta")
    wal = work / "state.sqlite-wal"
    assert not wal.exists() or b"stale" not in wal.read_bytes()
    assert _count(work / "state.sqlite") == 30

    p = prepare_state(work, host="alpha", last_host="beta", load=lambda: None)
    assert p.source == "local"
    empty = tmp_path / "jobs" / "new"
    empty.mkdir()
    p = prepare_state(empty, host="alpha", last_host="beta", load=lambda: None)
    assert p.source == "empty" and not (empty / "state.sqlite").exists()
    # Ran here before but the local file is gone (the disk was replaced): the checkpoint.
    p = prepare_state(empty, host="alpha", last_host="alpha", load=lambda: ckpt)
    assert p.source == "checkpoint"


@pytest.mark.parametrize(
    "damage",
    [
        lambda c: dataclasses.replace(c, data=c.data[:-7]),
        lambda c: dataclasses.replace(c, data=b"not zlib at all"),
        lambda c: dataclasses.replace(c, sha256="0" * 64),
        lambda c: dataclasses.replace(c, size=c.size - 1),
    ],
    ids=["truncated", "garbage", "wrong-sha256", "wrong-size"],
)
def test_corrupt_checkpoint_is_ignored(tmp_path, damage, caplog):
    """A damaged checkpoint never replaces anything: the local file (or nothing) stays,
    with a log line; the destination check makes an empty state safe."""
    other = tmp_path / "jobs" / "other"
    other.mkdir(parents=True)
    _state(other / "state.sqlite", 30)
    good = take(other / "state.sqlite", host="beta", max_bytes=1 << 30)
    assert good is not None
    bad = damage(good)
    work = tmp_path / "jobs" / "job"
    work.mkdir()
    with pytest.raises(CorruptCheckpoint):
        restore(work, bad)
    assert list(work.iterdir()) == []
    p = prepare_state(work, host="alpha", last_host="beta", load=lambda: bad)
    assert p.source == "empty"
    assert "checkpoint of job ignored" in caplog.text
    _state(work / "state.sqlite", 4)
    p = prepare_state(work, host="alpha", last_host="beta", load=lambda: bad)
    assert (p.source, p.messages) == ("local", 4)


def test_write_gate_within_past_and_renewed(monkeypatch):
    """Within the lease the gate returns at once; past it without a renewal it raises
    LeaseLost after its wait; a renewal arriving during the wait lets the write go."""

    async def scenario() -> None:
        gate = LeaseGate(wait=0.3)
        with pytest.raises(LeaseLost):  # no lease line yet: no write
            await gate()
        gate.feed(lease_line(time.monotonic() + 5, 7)[:10])
        assert not gate.valid()
        gate.feed(lease_line(time.monotonic() + 5, 7)[10:])
        assert gate.valid()
        await gate()
        gate.feed(lease_line(time.monotonic() - 1, 7))  # older: the later one is kept
        assert gate.valid()
        gate.deadline = time.monotonic() - 0.01
        t0 = time.monotonic()
        with pytest.raises(LeaseLost):
            await gate()
        assert 0.25 < time.monotonic() - t0 < 2
        # A renewal during the wait: the write goes on.
        gate.deadline = time.monotonic() - 0.01
        loop = asyncio.get_running_loop()
        loop.call_later(0.1, gate.feed, lease_line(time.monotonic() + 5, 7))
        await gate()
        gate.feed(lease_line(time.monotonic() + 50, 8))  # another claim's token: ignored
        assert gate.deadline < time.monotonic() + 10

    asyncio.run(scenario())


def test_lease_lines_carry_the_progress_pace_the_supervisor_asks_for():
    """Issue 18: with many jobs the supervisor asks each to report less often."""
    gate = LeaseGate()
    gate.feed(lease_line(time.monotonic() + 5, 7))
    assert gate.progress_every is None  # the spec's interval
    gate.feed(lease_line(time.monotonic() + 5, 7, 4.25))
    assert gate.progress_every == 4.25
    for bogus in (b'"x"', b"0", b"-3", b"1e9", b"null"):
        gate.feed(b'{"lease_until": 1e12, "token": 7, "progress_every": ' + bogus + b"}\n")
        assert gate.progress_every == 4.25, bogus
    assert b"progress_every" not in lease_line(1.0, 7)


def test_first_line_read_keeps_what_follows(tmp_path):
    import os

    r, w = os.pipe()
    os.write(w, b'{"spec": 1}\n' + lease_line(12.5, 3))
    os.close(w)
    line, rest = read_first_line(r)
    os.close(r)
    assert line == b'{"spec": 1}' and rest == lease_line(12.5, 3)


def _spec(server, fence_wait: float) -> bytes:
    import json

    spec = {
        "job_id": "fenced",
        "source": {"host": "127.0.0.1", "port": server.port, "security": "starttls",
                   "username": "src", "password": SRC_PW},
        "dest": {"host": "127.0.0.1", "port": server.port, "security": "starttls",
                 "username": "dst", "password": DST_PW},
        "ca_file": str(server.ca_file),
        "progress_interval": 0.05,
        "egress": {"allow": "127.0.0.0/8"},
        "fence": {"wait": fence_wait},
    }  # fmt: skip
    return json.dumps(spec).encode() + b"\n"


def _run_jail(work: Path, stdin: bytes, keep_open: bool) -> tuple[int, list[dict], str]:
    import json
    import os
    import subprocess

    from tests.jobs.test_jail import JAIL

    work.mkdir(mode=0o700)
    proc = subprocess.Popen(
        [*JAIL, "--parent", str(os.getpid())],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        cwd=work,
    )
    assert proc.stdin is not None
    proc.stdin.write(stdin)
    proc.stdin.flush()
    if not keep_open:
        proc.stdin.close()
    out, err = proc.communicate(timeout=120) if not keep_open else _wait_open(proc)
    lines = [json.loads(x) for x in out.decode().splitlines()]
    return proc.returncode, lines, err.decode()


def _wait_open(proc) -> tuple[bytes, bytes]:
    """Wait for the job with its stdin still open (more lease lines could come)."""
    out, err = proc.stdout.read(), proc.stderr.read()
    proc.wait(60)
    proc.stdin.close()
    return out, err


def test_job_past_its_lease_writes_nothing_and_says_lease_lost(dovecot_factory, tmp_path):
    """A fenced job whose lease line is already past (no renewal comes): it stops before
    its first write to the destination -- no folder created, no message appended --
    with the result ``lease_lost`` (transient: not the servers' fault), state flushed."""
    from tests import mailcheck
    from tests.transfer.test_move import populate

    server = dovecot_factory(users={"src": SRC_PW, "dst": DST_PW})
    populate(server)
    before = mailcheck.snapshot(server.port, "dst", DST_PW)
    stale = lease_line(time.monotonic() - 1, 3)
    t0 = time.monotonic()
    rc, lines, err = _run_jail(tmp_path / "job", _spec(server, 0.5) + stale, keep_open=True)
    result = lines[-1]
    assert result["type"] == "result" and result.get("lease_lost") is True, (result, err)
    assert rc == 2 and result["transient"] is True
    assert "lease expired without a renewal" in result["error"]
    assert time.monotonic() - t0 < 60
    assert mailcheck.snapshot(server.port, "dst", DST_PW) == before
    assert (tmp_path / "job" / "state.sqlite").exists()


def test_job_within_its_lease_runs_to_the_end(dovecot_factory, tmp_path):
    """The same job with a lease line far ahead and stdin kept open: done and exact."""
    from tests.svckit import assert_exact
    from tests.transfer.test_move import populate

    server = dovecot_factory(users={"src": SRC_PW, "dst": DST_PW})
    populate(server)
    good = lease_line(time.monotonic() + 300, 3)
    rc, lines, err = _run_jail(tmp_path / "job", _spec(server, 0.5) + good, keep_open=True)
    assert rc == 0 and lines[-1]["status"] == "done", err
    assert_exact(server, "src", SRC_PW, "dst", DST_PW)


@pytest.mark.parametrize(
    ("verb", "gated"),
    [
        ("APPEND", True),
        ("UID STORE", True),
        ("STORE", True),
        ("CREATE", True),
        ("SUBSCRIBE", True),
        ("UID COPY", True),
        ("EXPUNGE", True),
        ("uid  expunge", True),
        ("SOMETHING NEW", True),  # an allow-list: a verb nobody thought of is a write
        ("SELECT", False),
        ("EXAMINE", False),
        ("UID FETCH", False),
        ("LIST", False),
        ("NOOP", False),
        ("LOGIN", False),
    ],
)
def test_which_commands_pass_the_write_gate(verb, gated):
    from yippiemove.imap.commands import changes_mailbox

    assert changes_mailbox(verb) is gated


def _watch(gate: LeaseGate, seconds: float) -> list[float]:
    """Arm a LeaseWatchdog on ``gate`` for ``seconds``: when it fired (monotonic)."""
    from yippiemove.jobs.fence import LeaseWatchdog

    fired: list[float] = []
    dog = LeaseWatchdog(gate, lambda: fired.append(time.monotonic()))
    dog.arm()
    time.sleep(seconds)
    dog.stop()
    return fired


def test_lease_watchdog_fires_at_the_deadline_plus_the_gates_wait():
    """No renewal: it fires once, when the gate would refuse (deadline + wait, never
    earlier than wait after arming: the loop reads queued lease lines meanwhile)."""
    gate = LeaseGate(wait=0.3)
    t0 = time.monotonic()
    gate.feed(lease_line(t0 + 0.2, 1))
    fired = _watch(gate, 1.2)
    assert len(fired) == 1 and 0.45 <= fired[0] - t0 < 0.9, [f - t0 for f in fired]

    late = LeaseGate(wait=0.3)
    late.feed(lease_line(time.monotonic() - 10, 1))  # read late: long past
    t1 = time.monotonic()
    fired = _watch(late, 0.8)
    assert len(fired) == 1 and fired[0] - t1 >= 0.28


def test_lease_watchdog_keeps_quiet_while_renewed_before_a_deadline_and_after_stop():
    gate = LeaseGate(wait=0.2)
    gate.feed(lease_line(time.monotonic() + 0.2, 1))
    fired: list[float] = []
    from yippiemove.jobs.fence import LeaseWatchdog

    dog = LeaseWatchdog(gate, lambda: fired.append(time.monotonic()))
    dog.arm()
    for _ in range(10):  # renewals every 0.1 s, for a second
        time.sleep(0.1)
        gate.feed(lease_line(time.monotonic() + 0.2, 1))
    dog.stop()
    time.sleep(0.6)  # the lease runs out after stop(): nothing
    assert fired == []
    # No deadline yet (no lease line): nothing is written, nothing to stop.
    assert _watch(LeaseGate(wait=0.1), 0.4) == []


def test_lease_watchdog_without_grace_once_stdin_is_closed():
    gate = LeaseGate(wait=5.0)
    gate.feed(lease_line(time.monotonic() + 0.2, 1))
    gate.eof = True  # the supervisor is gone: no renewal can come
    t0 = time.monotonic()
    fired = _watch(gate, 0.8)
    assert len(fired) == 1 and fired[0] - t0 < 0.6
