"""A full disk under the job state: the transfer stops clearly, and resumes exactly.

The state database's directory is a small tmpfs (``mount -t tmpfs -o size=...``: a real
filesystem that really runs out of space, so sqlite meets a real ENOSPC).  Once the
transfer is under way the test fills what is left with a file; the next state write
fails.  The CLI must stop with exit status 2 and one clear line ("cannot write the job
state ... No space left on device", no traceback), the service's job must end ``failed``
with that error, and nothing may be lost or doubled on the destination.  After the filler
is removed, the same command (or a re-run of the job) completes the transfer exactly.

Mounting needs root: without it the tests skip, saying why, except in CI (``CI`` set),
where they fail.  See docs/faults.md, "Killed processes and a full disk".
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import random
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests import mailcheck
from tests.svckit import (
    DST_PW,
    SRC_PW,
    account,
    assert_exact,
    make_service,  # noqa: F401  (the fixture, as tests/jobs/conftest.py has it)
    wait_progress,
    wait_status,
)
from tests.transfer.test_kill_campaign import by_content
from tests.transfer.test_move import FLAG_SETS, make_message
from yippiemove.testing.dovecot import DovecotServer, MaildirMessage
from yippiemove.transfer.state import State, StateError

OWNER = "owner@example.org"


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Callable[[Path, str], Path]]:
    """``small_disk(directory, size)``: a tmpfs of that size mounted there; unmounted at
    teardown."""
    mounted: list[Path] = []

    def mount(directory: Path, size: str) -> Path:
        why = None
        if os.geteuid() != 0:
            why = "mounting a small tmpfs for the full-disk tests needs root"
        directory.mkdir(parents=True, exist_ok=True)
        if why is None:
            r = subprocess.run(
                ["mount", "-t", "tmpfs", "-o", f"size={size},mode=0700", "tmpfs", str(directory)],
                capture_output=True,
                text=True,
            )
            if r.returncode != 0:
                why = f"cannot mount a tmpfs: {r.stderr.strip()}"
        if why is not None:
            if os.environ.get("CI"):
                pytest.fail(f"{why} (CI must run these tests)", pytrace=False)
            pytest.skip(why)
        mounted.append(directory)
        return directory

    yield mount
    for directory in reversed(mounted):
        if subprocess.run(["umount", str(directory)], capture_output=True).returncode:
            subprocess.run(["umount", "-l", str(directory)], check=True)


def fill(directory: Path) -> Path:
    """Fill the filesystem of ``directory`` to the last byte; returns the filler."""
    filler = directory / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        for chunk in (1 << 16, 4096, 1):
            with contextlib.suppress(OSError):
                while True:
                    os.write(fd, b"\0" * chunk)
    finally:
        os.close(fd)
    with pytest.raises(OSError) as exc:
        (directory / "probe").write_bytes(b"x")
    assert exc.value.errno == errno.ENOSPC
    return filler


def source_mailbox(server: DovecotServer, user: str = "src") -> int:
    """~60 MB in two folders, twins included: time to fill the disk mid-transfer."""
    rng = random.Random(11)
    items = [
        MaildirMessage(
            make_message(i, size=rng.choice((200, 2000, 20000, 200000))), FLAG_SETS[i % 6]
        )
        for i in range(1100)
    ]
    items += items[:20]  # byte-identical twins
    server.deliver_many(user, "INBOX", items[:700])
    server.deliver_many(user, "Archive/2019", items[700:])
    return len(items)


def wait_for_messages(port: int, user: str, password: str, n: int, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while True:
        c = mailcheck.connect(port, user, password)
        try:
            typ, data = c.status("INBOX", "(MESSAGES)")
        finally:
            c.logout()
        assert typ == "OK", data
        if int(data[0].split()[-1].rstrip(b")")) >= n:
            return
        assert time.monotonic() < deadline, f"fewer than {n} messages after {timeout} s"
        time.sleep(0.02)


def assert_nothing_doubled(port: int, src: tuple[str, str], dst: tuple[str, str]) -> int:
    """No destination folder holds a message more often than its source; returns how
    many messages are there."""
    s = by_content(mailcheck.snapshot(port, *src))
    d = by_content(mailcheck.snapshot(port, *dst))
    for folder, have in d.items():
        assert not have - s.get(folder, type(have)()), f"doubled in {folder!r}"
    return sum(sum(c.values()) for c in d.values())


def test_state_file_on_a_full_disk(small_disk, tmp_path):
    """The state layer: a clear error, no damage, its queued rows kept for later."""
    disk = small_disk(tmp_path / "disk", "512k")
    state = State(disk / "state.sqlite", flush_rows=100_000)
    folder, _ = state.open_folder("INBOX", 1, "INBOX", 1)
    for uid in range(1, 201):
        state.record(folder, uid, 100, f"<{uid}@x>".encode(), os.urandom(32), uid, "copied")
    state.flush()
    filler = fill(disk)
    for uid in range(201, 3001):
        state.record(folder, uid, 100, f"<{uid}@x>".encode(), os.urandom(32), uid, "copied")
    with pytest.raises(StateError) as exc:
        state.flush()
    assert exc.value.disk_full
    assert str(exc.value).startswith(f"cannot write the job state ({disk / 'state.sqlite'}): ")
    assert "No space left on device" in str(exc.value)
    assert "\n" not in str(exc.value)
    with pytest.raises(StateError):  # still full: still refused, still clearly
        state.open_folder("Other", 1, "Other", 1)
    # Another reader sees the last good commit.
    con = sqlite3.connect(disk / "state.sqlite")
    assert con.execute("SELECT count(*) FROM messages").fetchone() == (200,)
    con.close()
    filler.unlink()
    state.open_folder("Other", 1, "Other", 1)
    state.close()  # the rows refused before are written now
    con = sqlite3.connect(disk / "state.sqlite")
    assert con.execute("SELECT count(*) FROM messages").fetchone() == (3000,)
    assert con.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    con.close()


def test_state_file_cannot_be_opened_on_a_full_disk(small_disk, tmp_path):
    disk = small_disk(tmp_path / "disk", "256k")
    fill(disk)
    with pytest.raises(StateError) as exc:
        State(disk / "jobs" / "state.sqlite")
    assert exc.value.disk_full and "No space left on device" in str(exc.value)
    (disk / "filler").unlink()
    State(disk / "jobs" / "state.sqlite").close()  # nothing left behind in the way


def test_move_stops_clearly_on_a_full_disk_then_resumes_exactly(dovecot, small_disk, tmp_path):
    total = source_mailbox(dovecot)
    disk = small_disk(tmp_path / "disk", "8m")
    state = disk / "state.sqlite"
    report = tmp_path / "report.json"
    (tmp_path / "pw-src").write_text("srcpass")
    (tmp_path / "pw-dst").write_text("dstpass")
    args = [
        sys.executable,
        "-m",
        "yippiemove.cli",
        "move",
        "--source",
        f"imap://src@127.0.0.1:{dovecot.port}",
        "--dest",
        f"imap://dst@127.0.0.1:{dovecot.port}",
        "--source-password-file",
        str(tmp_path / "pw-src"),
        "--dest-password-file",
        str(tmp_path / "pw-dst"),
        "--no-starttls",
        "--state",
        str(state),
        "--report",
        str(report),
        "--connections",
        "1",
    ]
    p = subprocess.Popen(
        args, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        wait_for_messages(dovecot.port, "dst", "dstpass", 100)
        filler = fill(disk)
        out, err = p.communicate(timeout=120)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    assert p.returncode == 2, err + out
    assert "Traceback" not in err
    last = err.strip().splitlines()[-1]
    assert last.startswith(f"yippiemove: error: cannot write the job state ({state}): "), err
    assert "No space left on device" in last
    assert "run the same command again to resume" in last
    rep = json.loads(report.read_text())
    assert rep["status"] == "aborted" and "No space left on device" in rep["error"]
    # Stopped: some mail there (on a fast machine possibly all of it: the write that
    # failed may be the last one), none doubled; the re-run completes the rest.
    there = assert_nothing_doubled(dovecot.port, ("src", "srcpass"), ("dst", "dstpass"))
    assert 100 <= there <= total

    filler.unlink()  # space is back
    r = subprocess.run(args, capture_output=True, text=True, timeout=300, stdin=subprocess.DEVNULL)
    assert r.returncode == 0, r.stderr
    assert_exact(dovecot, "src", "srcpass", "dst", "dstpass")
    t = json.loads(report.read_text())["totals"]
    assert t["source_count"] == total and t["failed"] == 0
    assert t["copied"] + t["already_present"] == total
    assert t["already_present"] >= there  # what the stopped run copied was not copied again


def test_service_job_on_a_full_disk_fails_clearly_then_a_rerun_completes(
    make_service,  # noqa: F811  (the fixture imported above)
    dovecot_factory,
    small_disk,
):
    server = dovecot_factory(users={"src": SRC_PW, "dst": DST_PW})
    total = source_mailbox(server)
    svc = make_service(ca_file=str(server.ca_file), job_connections=1)
    uid = svc.create_user(OWNER, "long enough pass")
    job = svc.create_transfer(uid, account(server, "src", SRC_PW), account(server, "dst", DST_PW))
    # The job's working directory (state.sqlite, job.log, report.json) on a small disk.
    disk = small_disk(svc.settings.job_dir(job.id), "8m")
    svc.start(1)
    wait_progress(svc, uid, job.id, 0.05)
    filler = fill(disk)
    view = wait_status(svc, uid, job.id)
    assert view.status == "failed", view
    assert view.error.startswith("cannot write the job state on the service's disk: "), view.error
    assert "No space left on device" in view.error
    assert str(disk) not in view.error  # no paths of the service's for the customer
    assert view.attempts == 1  # not restarted: it would only fail again
    there = assert_nothing_doubled(server.port, ("src", SRC_PW), ("dst", DST_PW))
    assert 0 < there <= total  # all of it when the state write that failed was the last

    filler.unlink()  # space is back
    svc.rerun_transfer(uid, job.id)
    view = wait_status(svc, uid, job.id)
    assert view.status == "done" and view.error is None, view
    assert_exact(server, "src", SRC_PW, "dst", DST_PW)
    t = svc.report(uid, job.id)["totals"]
    assert t["source_count"] == total and t["failed"] == 0
    assert t["copied"] + t["already_present"] == total
    svc.stop(timeout=15)  # before the disk is unmounted
