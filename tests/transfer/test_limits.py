"""Provider limits respected by real transfers between real Dovecot servers.

A message above the destination's size limit is reported with the reason, never fetched
(Dovecot's own per-session counters ``body_count``/``body_bytes`` in its log say what the
source served), and the rest arrives exact (judged by tests/mailcheck.py).
"""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
import sys
import time
from collections import Counter

from tests import mailcheck
from tests.transfer.test_move import make_message
from yippiemove.transfer import engine
from yippiemove.transfer.model import Endpoint, Options

MiB = 1024 * 1024
_STATS = re.compile(rb"imap\((?P<user>[^)]+)\).*?body_count=(?P<n>\d+) body_bytes=(?P<b>\d+)")


def big_message(i: int, size: int) -> bytes:
    """A message of at least ``size`` bytes with ordinary 78-byte lines."""
    line = b"x" * 76 + b"\r\n"
    return make_message(i, body=line * (size // len(line) + 1))


def fetched_by(server, user: str, offset: int, *, at_least: int, wait: float = 10.0):
    """(messages, bytes) whose bodies ``user``'s sessions fetched since log ``offset``.

    Dovecot logs these counters when a session ends; wait until ``at_least`` messages
    are counted (the mover has exited, but the log line may come a moment later)."""
    deadline = time.monotonic() + wait
    while True:
        data = server.log_path.read_bytes()[offset:]
        n = b = 0
        for m in _STATS.finditer(data):
            if m.group("user").decode() == user:
                n += int(m.group("n"))
                b += int(m.group("b"))
        if n >= at_least or time.monotonic() > deadline:
            return n, b
        time.sleep(0.1)


def log_offset(server) -> int:
    return server.log_path.stat().st_size


def without(snapshot: dict, folder: str, msg) -> dict:
    out = {k: Counter(v) for k, v in snapshot.items()}
    out[folder][msg] -= 1
    out[folder] = +out[folder]
    return out


def the_msg(snapshot: dict, folder: str, size_at_least: int):
    (msg,) = [m for m in snapshot[folder] if m.size >= size_at_least]
    return msg


def test_message_above_the_dest_preset_limit_is_reported_and_never_fetched(dovecot, tmp_path):
    small = [make_message(i, size=300 * i) for i in range(1, 6)]
    for raw in small[:2]:
        dovecot.deliver("src", "INBOX", raw, ("\\Seen",))
    dovecot.deliver("src", "INBOX", big_message(900, 21 * MiB), ("\\Flagged",))
    for raw in small[2:]:
        dovecot.deliver("src", "INBOX", raw)
    dovecot.deliver("src", "Archive", make_message(50, size=100))
    dovecot.deliver("src", "Archive", make_message(51, size=200), ("\\Answered",))
    report = tmp_path / "report.json"
    offset = log_offset(dovecot)

    # iCloud Mail's preset: 20 MB (2**20-byte MB) per message; the server is still ours.
    r = mailcheck.run_move(
        dovecot.port,
        dovecot.port,
        tmp_path,
        "--dest-preset",
        "icloud",
        "--report",
        str(report),
        ca_file=dovecot.ca_file,
    )
    assert r.returncode == 1, r.stderr + r.stdout
    assert "note: messages larger than 20 MB (iCloud Mail's limit)" in r.stdout
    assert "FAILED UID 3" in r.stdout
    rep = json.loads(report.read_text())
    assert rep["presets"]["dest"] == "icloud" and rep["presets"]["source"] == "generic"
    assert rep["totals"]["failed"] == 1 and rep["totals"]["copied"] == 7
    (f,) = rep["failures"]
    assert f["folder"] == "INBOX" and f["uid"] == 3 and f["size"] > 21 * MiB
    assert f["message_id"] == "<msg900@example.org>"
    assert f["reason"] == f"it is larger ({f['size']} bytes) than iCloud Mail's 20 MB limit"

    # The source served the 7 small bodies and not the big one.
    n, fetched = fetched_by(dovecot, "src", offset, at_least=7)
    assert n == 7
    assert fetched < MiB

    src = mailcheck.snapshot(dovecot.port, "src", "srcpass")
    dst = mailcheck.snapshot(dovecot.port, "dst", "dstpass")
    assert dst == without(src, "INBOX", the_msg(src, "INBOX", 21 * MiB))

    # A re-run reports it again, fetches nothing, copies nothing twice.
    offset = log_offset(dovecot)
    r2 = mailcheck.run_move(
        dovecot.port,
        dovecot.port,
        tmp_path,
        "--dest-preset",
        "icloud",
        "--report",
        str(report),
        ca_file=dovecot.ca_file,
    )
    assert r2.returncode == 1, r2.stderr + r2.stdout
    rep2 = json.loads(report.read_text())
    assert rep2["totals"]["failed"] == 1 and rep2["totals"]["copied"] == 0
    assert rep2["totals"]["already_present"] == 7
    time.sleep(0.5)
    assert fetched_by(dovecot, "src", offset, at_least=0, wait=0) == (0, 0)
    assert mailcheck.snapshot(dovecot.port, "dst", "dstpass") == dst


def test_smaller_of_appendlimit_and_option_wins_and_copies_on_dest_are_kept(
    dovecot, dovecot_factory, tmp_path
):
    smalls = [make_message(i, size=100) for i in range(3)]
    mid = make_message(700, size=30_000)  # above the option, below APPENDLIMIT
    huge = make_message(701, size=60_000)  # above both
    for raw in [smalls[0], mid, smalls[1], huge, smalls[2]]:
        dovecot.deliver("src", "INBOX", raw)
    dest = dovecot_factory(
        users={"dst": "dstpass"}, extra_config="imap_capability = +APPENDLIMIT=50000\n"
    )
    # `mid` is already on the destination (copied before the limit existed, say): it
    # must be recognised there, not refused.
    c = mailcheck.connect(dest.port, "dst", "dstpass")
    typ, data = c.append("INBOX", None, None, mid)
    assert typ == "OK", data
    c.logout()

    def ep(server, user, pw):
        return Endpoint("127.0.0.1", server.port, user, "none", pw, allow_insecure_auth=True)

    offset = log_offset(dovecot)
    opts = Options(max_message_size=20_000, max_message_size_label="the test limit")
    mover = engine.Mover(ep(dovecot, "src", "srcpass"), ep(dest, "dst", "dstpass"), options=opts)
    (res,) = asyncio.run(mover.run())

    assert [(f.uid, f.message_id) for f in res.failures] == [(4, "<msg701@example.org>")]
    (f,) = res.failures
    assert f.reason == f"it is larger ({f.size} bytes) than the test limit"
    outcomes = {uid: o for uid, _, o in res.messages}
    assert outcomes == {1: "copied", 2: "present", 3: "copied", 4: "failed", 5: "copied"}
    # Bodies served by the source: the three small ones and `mid` (checked by content).
    n, fetched = fetched_by(dovecot, "src", offset, at_least=4)
    assert n == 4
    assert fetched < 60_000

    dst = mailcheck.snapshot(dest.port, "dst", "dstpass")
    src = mailcheck.snapshot(dovecot.port, "src", "srcpass")
    expected = without(src, "INBOX", the_msg(src, "INBOX", 60_000))
    # `mid` was APPENDed by the test without flags and dates: compare by content there.
    assert sorted(m.sha for m in dst["INBOX"].elements()) == sorted(
        m.sha for m in expected["INBOX"].elements()
    )


def test_appendlimit_alone_still_names_the_server_limit(dovecot, dovecot_factory, tmp_path):
    dovecot.deliver("src", "INBOX", make_message(1, size=100))
    dovecot.deliver("src", "INBOX", make_message(2, size=20_000))
    dest = dovecot_factory(
        users={"dst": "dstpass"}, extra_config="imap_capability = +APPENDLIMIT=10000\n"
    )
    offset = log_offset(dovecot)
    r = mailcheck.run_move(dovecot.port, dest.port, tmp_path, ca_file=dovecot.ca_file)
    assert r.returncode == 1, r.stderr + r.stdout
    assert "than the destination accepts (APPENDLIMIT=10000)" in r.stdout
    assert fetched_by(dovecot, "src", offset, at_least=1)[0] == 1


def test_dest_preset_caps_connections_in_a_dry_run(dovecot, tmp_path):
    for folder in ("INBOX", "A", "B"):
        dovecot.deliver("src", folder, make_message(len(folder), size=10))
    report = tmp_path / "plan.json"
    r = mailcheck.run_move(
        dovecot.port,
        dovecot.port,
        tmp_path,
        "--dry-run",
        "--connections",
        "16",
        "--dest-preset",
        "gmail",
        "--report",
        str(report),
        ca_file=dovecot.ca_file,
    )
    assert r.returncode == 0, r.stderr + r.stdout
    lowered = "connections lowered from 16 to 15: Gmail (the destination) allows 15"
    assert f"note: {lowered}" in r.stdout
    assert "Plan: 3 folders" in r.stdout
    rep = json.loads(report.read_text())
    assert rep["presets"]["dest"] == "gmail"
    assert any(lowered in n for n in rep["presets"]["notes"])
    assert rep["warnings"] == []  # a few bytes: far below Gmail's daily caps
    # Nothing was copied: it was a dry run.
    assert set(mailcheck.snapshot(dovecot.port, "dst", "dstpass")) == {"INBOX"}

    r2 = mailcheck.run_move(
        dovecot.port, dovecot.port, tmp_path, "--dry-run", ca_file=dovecot.ca_file
    )
    assert r2.returncode == 0, r2.stderr
    assert "note:" not in r2.stdout  # a generic server: nothing lowered or limited


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "yippiemove.cli", "move", *args],
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
    )


def test_bare_address_of_an_unknown_domain_is_refused(tmp_path):
    r = _cli("--source", "alice@example.org", "--dest", "imap://u@127.0.0.1:1")
    assert r.returncode == 2
    assert "no preset for example.org; give an imaps://USER@HOST URL" in r.stderr
    assert "Traceback" not in r.stderr


def test_unknown_preset_is_refused(tmp_path):
    r = _cli(
        "--source",
        "imap://u@127.0.0.1:1",
        "--dest",
        "imap://v@127.0.0.1:1",
        "--dest-preset",
        "nope",
    )
    assert r.returncode == 2
    assert "'nope' is not one of" in r.stderr and "gmail" in r.stderr
