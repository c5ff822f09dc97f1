"""One writer per destination mailbox in the CLI (issue 12): `yippiemove move` runs against
real Dovecot, and the lock module (yippiemove.transfer.locks) on its own."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests import mailcheck
from tests.transfer.test_kill_campaign import slow_link
from tests.transfer.test_move import FLAG_SETS, make_message
from yippiemove.testing.dovecot import MaildirMessage
from yippiemove.transfer import locks
from yippiemove.transfer.locks import Holder, LockHeld, Locks

HOST = socket.gethostname()


def fill(server, n: int = 2000, user: str = "src", *, big: bool = False) -> None:
    """``n`` messages in INBOX and Archive/Old (``big``: up to 60 KB each, so that a run
    lasts long enough for a second one to meet it)."""
    step = 10_000 if big else 3000
    items = [
        MaildirMessage(make_message(i, size=200 + (i % 7) * step), FLAG_SETS[i % 6])
        for i in range(n)
    ]
    server.deliver_many(user, "INBOX", items[: n // 2])
    server.deliver_many(user, "Archive/Old", items[n // 2 :])


def _stored(maildir: Path) -> int:
    return sum(1 for d in maildir.rglob("*") if d.name in ("new", "cur") for _ in d.iterdir())


def cli(
    server,
    tmp_path: Path,
    *,
    state: str = "state.sqlite",
    dest_user: str = "dst",
    dest_host: str = "127.0.0.1",
    source_port: int | None = None,
    extra: tuple[str, ...] = (),
) -> list[str]:
    spw, dpw = tmp_path / "s.pw", tmp_path / "d.pw"
    spw.write_text("srcpass")
    dpw.write_text("dstpass")
    return [
        sys.executable,
        "-m",
        "yippiemove.cli",
        "move",
        "--source",
        f"imap://src@127.0.0.1:{source_port or server.port}",
        "--dest",
        f"imap://{dest_user}@{dest_host}:{server.port}",
        "--source-password-file",
        str(spw),
        "--dest-password-file",
        str(dpw),
        "--ca-file",
        str(server.ca_file),
        "--state",
        str(tmp_path / state),
        "--connections",
        "1",
        "--no-progress",
        *extra,
    ]


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    """The runs' environment: their own user data directory (the mailbox locks live there)."""
    data = tmp_path / "xdg-data"
    data.mkdir()
    return {**os.environ, "XDG_DATA_HOME": str(data)}


def start(args: list[str], env: dict[str, str]) -> subprocess.Popen[str]:
    return subprocess.Popen(
        args,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        text=True,
        env=env,
    )


def wait_copying(p: subprocess.Popen[str], maildir: Path, at_least: int = 50) -> None:
    """Until the run has put ``at_least`` messages into the destination (it is writing)."""
    deadline = time.monotonic() + 60
    while p.poll() is None and time.monotonic() < deadline:
        if maildir.exists() and _stored(maildir) >= at_least:
            return
        time.sleep(0.005)
    if p.poll() is not None:
        pytest.fail(f"the first run ended before the second started: {p.communicate()}")


def assert_exact(server, dst_user: str = "dst", dst_password: str = "dstpass") -> None:
    src = mailcheck.snapshot(server.port, "src", "srcpass")
    dst = mailcheck.snapshot(server.port, dst_user, dst_password)
    for folder, msgs in src.items():
        assert dst.get(folder) == msgs, (
            f"folder {folder!r} differs: {sum(msgs.values())} on the source, "
            f"{sum(dst.get(folder, {}).values())} on the destination"
        )


def test_two_runs_of_one_job_at_once_one_runs_the_other_exits_2_naming_it(dovecot, tmp_path, env):
    fill(dovecot)
    args = cli(dovecot, tmp_path)
    t0 = time.monotonic()
    a, b = start(args, env), start(args, env)
    ended: dict[int, float] = {}
    while len(ended) < 2 and time.monotonic() - t0 < 300:
        for p in (a, b):
            if p.pid not in ended and p.poll() is not None:
                ended[p.pid] = time.monotonic() - t0
        time.sleep(0.01)
    outs = {p.pid: p.communicate(timeout=10) for p in (a, b)}
    codes = sorted((a.returncode, b.returncode))
    assert codes == [0, 2], (codes, outs)
    winner, loser = (a, b) if a.returncode == 0 else (b, a)
    err = outs[loser.pid][1]
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert "already running" in lines[0]
    assert f"pid {winner.pid} on {HOST} since " in lines[0]
    assert "Traceback" not in err
    # At once: refused before it connected, while the other was still copying.
    assert ended[loser.pid] < ended[winner.pid], ended
    assert_exact(dovecot)


@pytest.mark.parametrize("second_host", ["127.0.0.1", "localhost"])
def test_two_runs_with_different_state_files_into_one_mailbox_are_refused(
    dovecot, tmp_path, env, second_host, request
):
    fill(dovecot, big=True)
    # The first run reads its source through a slow link: it is still copying when the
    # second has started, however long a busy machine takes to start a process.
    link = slow_link(dovecot.port, 8_000_000).start()
    request.addfinalizer(lambda: link.__exit__(None, None, None))
    first = start(
        cli(
            dovecot,
            tmp_path,
            state="one.sqlite",
            source_port=link.port,
            extra=("--no-starttls",),  # the proxy reads IMAP in the clear
        ),
        env,
    )
    wait_copying(first, dovecot.maildir("dst"))
    second = subprocess.run(
        cli(dovecot, tmp_path, state="two.sqlite", dest_host=second_host),
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
        env=env,
    )
    assert second.returncode == 2, second.stderr
    lines = [line for line in second.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, second.stderr
    assert "already writing into" in lines[0]
    assert f"pid {first.pid} on {HOST} since " in lines[0]
    assert str(tmp_path / "one.sqlite") in lines[0]
    assert not (tmp_path / "two.sqlite").exists()  # refused before it opened its state
    _out, err = first.communicate(timeout=300)
    assert first.returncode == 0, err
    assert_exact(dovecot)


def test_a_lock_left_by_a_killed_run_does_not_block_a_rerun(dovecot, tmp_path, env):
    fill(dovecot, big=True)
    args = cli(dovecot, tmp_path)
    p = start(args, env)
    wait_copying(p, dovecot.maildir("dst"))
    os.kill(p.pid, signal.SIGKILL)
    p.wait()
    lock_file = tmp_path / "state.sqlite.lock"
    assert Holder.parse(lock_file.read_text()).pid == p.pid  # left behind, naming the dead run
    mailbox_locks = list((Path(env["XDG_DATA_HOME"]) / "yippiemove" / "locks").glob("*.lock"))
    assert mailbox_locks and all(Holder.parse(f.read_text()).pid == p.pid for f in mailbox_locks)
    r = subprocess.run(
        args, capture_output=True, text=True, timeout=300, stdin=subprocess.DEVNULL, env=env
    )
    assert r.returncode == 0, r.stderr
    assert_exact(dovecot)
    # A run that ends removes its lock files.
    assert not lock_file.exists()
    assert not any(f.exists() for f in mailbox_locks)


def test_a_run_into_another_mailbox_on_the_same_server_is_not_blocked(
    dovecot_factory, tmp_path, env
):
    server = dovecot_factory(users={"src": "srcpass", "dst": "dstpass", "dst2": "dstpass"})
    fill(server, big=True)
    first = start(cli(server, tmp_path, state="one.sqlite"), env)
    wait_copying(first, server.maildir("dst"))
    other = subprocess.run(
        cli(server, tmp_path, state="two.sqlite", dest_user="dst2"),
        capture_output=True,
        text=True,
        timeout=300,
        stdin=subprocess.DEVNULL,
        env=env,
    )
    assert other.returncode == 0, other.stderr
    _out, err = first.communicate(timeout=300)
    assert first.returncode == 0, err
    assert_exact(server)
    assert_exact(server, dst_user="dst2")


def test_dry_run_takes_no_lock(dovecot, tmp_path, env):
    fill(dovecot, 20)
    held = Locks()
    held.take([tmp_path / "state.sqlite.lock"], state=None, mailbox=None)
    try:
        r = subprocess.run(
            cli(dovecot, tmp_path, extra=("--dry-run",)),
            capture_output=True,
            text=True,
            timeout=120,
            stdin=subprocess.DEVNULL,
            env=env,
        )
    finally:
        held.release()
    assert r.returncode == 0, r.stderr
    assert not (Path(env["XDG_DATA_HOME"]) / "yippiemove" / "locks").exists()


# ------------------------------------------------------------------ the module on its own


def test_mailbox_keys_meet_through_localhost_and_differ_by_user_and_port():
    a = set(locks.mailbox_keys("LocalHost", 143, "Dst", ["127.0.0.1", "::1"]))
    b = set(locks.mailbox_keys("127.0.0.1", 143, "dst", ["127.0.0.1"]))
    assert a & b
    assert not a & set(locks.mailbox_keys("127.0.0.1", 143, "dst2", ["127.0.0.1"]))
    assert not a & set(locks.mailbox_keys("127.0.0.1", 144, "dst", ["127.0.0.1"]))
    # One spelling per address: IPv4-mapped IPv6 is the IPv4 address.
    assert set(locks.mailbox_keys("x", 143, "dst", ["::ffff:127.0.0.1"])) & b
    # Resolved for real: localhost and 127.0.0.1 share a key.
    assert set(locks.mailbox_keys("localhost", 143, "dst")) & set(
        locks.mailbox_keys("127.0.0.1", 143, "dst")
    )


def test_a_held_lock_names_its_holder_and_is_free_after_release(tmp_path):
    path = tmp_path / "x.lock"
    first = Locks()
    first.take([path], state=tmp_path / "s.sqlite", mailbox="imap://dst@h:1")
    with pytest.raises(LockHeld) as info:
        Locks().take([path], state=None, mailbox=None)
    h = info.value.holder
    assert (h.pid, h.host, h.state) == (os.getpid(), HOST, str(tmp_path / "s.sqlite"))
    assert f"pid {os.getpid()} on {HOST} since " in h.describe()
    first.release()
    assert not path.exists()  # removed by its holder on release
    with Locks() as second:
        second.take([path], state=None, mailbox=None)
        assert Holder.parse(path.read_text()).pid == os.getpid()


def test_all_or_none(tmp_path):
    a, b = tmp_path / "a.lock", tmp_path / "b.lock"
    held = Locks()
    held.take([b], state=None, mailbox=None)
    other = Locks()
    with pytest.raises(LockHeld):
        other.take([a, b], state=None, mailbox=None)
    assert not other.fds
    held.release()
    other.take([a], state=None, mailbox=None)  # a was released again
    other.release()


def test_a_stale_or_garbled_lock_file_does_not_block(tmp_path):
    path = tmp_path / "x.lock"
    path.write_text(json.dumps({"pid": 999999, "host": "gone", "since": 1.0}) + "garbage")
    with Locks() as held:
        held.take([path], state=None, mailbox=None)
        assert Holder.parse(path.read_text()).pid == os.getpid()


def test_a_lock_held_by_a_killed_process_is_free(tmp_path):
    path = tmp_path / "x.lock"
    code = (
        "import sys, time; from pathlib import Path; from yippiemove.transfer.locks import Locks;"
        f"Locks().take([Path({str(path)!r})], state=None, mailbox=None);"
        "print('held', flush=True); time.sleep(60)"
    )
    p = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert p.stdout is not None and p.stdout.readline().strip() == "held"
    with pytest.raises(LockHeld) as info:
        Locks().take([path], state=None, mailbox=None)
    assert info.value.holder.pid == p.pid
    p.kill()
    p.wait()
    with Locks() as held:
        held.take([path], state=None, mailbox=None)
