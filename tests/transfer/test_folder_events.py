"""Source folders that change under the mover (issue 6, "Big and broken mail"): deleted
or renamed during a transfer, and recreated between two runs (a new UIDVALIDITY).

The deletions and renames are real: a second IMAP session (stdlib imaplib) does them
while ``yippiemove move`` (the CLI, a separate process) runs, timed by watching the
destination fill up.  Dovecot ends the mover's session on a folder deleted or renamed
under it (``* BYE Mailbox was deleted under us``); the mover reconnects, cannot open the
folder any more, reports that folder as failed with the reason, copies the rest exactly
and exits with status 1.  The judge is tests/mailcheck.py.
"""

from __future__ import annotations

import imaplib
import json
import subprocess
import sys
import threading
import time
from collections import Counter
from datetime import UTC, datetime, timedelta

import pytest

from tests import mailcheck
from tests.faultproxy import Fault, FaultProxy
from tests.transfer.test_move import make_message
from yippiemove.testing.dovecot import MaildirMessage

BIG = "Big"
BIG_COUNT = 2500  # ~20 kB each: a few seconds of copying, time enough to act meanwhile
SMALL = {"INBOX": 4, "Victim": 12, "Zeta": 6}


def load(server) -> None:
    when = datetime(2020, 2, 2, tzinfo=UTC)
    server.deliver_many(
        "src",
        BIG,
        [
            MaildirMessage(make_message(i, size=20_000), ("\\Seen",), when + timedelta(minutes=i))
            for i in range(BIG_COUNT)
        ],
    )
    n = 10_000
    for folder, count in SMALL.items():
        items = []
        for _ in range(count):
            n += 1
            items.append(MaildirMessage(make_message(n, size=n % 700), ("\\Flagged",), when))
        server.deliver_many("src", folder, items)


def cli_args(server, tmp_path, source_port: int | None = None) -> list[str]:
    (tmp_path / "pw").write_text("srcpass\n")
    (tmp_path / "dpw").write_text("dstpass\n")
    return [
        sys.executable,
        "-m",
        "yippiemove.cli",
        "move",
        "--source",
        f"imap://src@127.0.0.1:{source_port or server.port}",
        "--dest",
        f"imap://dst@127.0.0.1:{server.port}",
        "--source-password-file",
        str(tmp_path / "pw"),
        "--dest-password-file",
        str(tmp_path / "dpw"),
        "--no-starttls",
        "--connections",
        "1",  # one folder at a time: Big first (the largest), then the small ones
        "--state",
        str(tmp_path / "state.sqlite"),
        "--report",
        str(tmp_path / "report.json"),
    ]


class WhenCopying:
    """Runs ``action`` on a second source session as soon as the destination's copy of
    BIG holds at least ``at_least`` messages (polled with STATUS)."""

    def __init__(self, server, at_least: int, action) -> None:
        self.server = server
        self.at_least = at_least
        self.action = action
        self.dest_count_then: int | None = None
        self.error: BaseException | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)

    def _watch(self) -> None:
        try:
            dst = mailcheck.connect(self.server.port, "dst", "dstpass")
            # Logged in before the watch: the action then follows the count at once (a
            # login takes longer than the mover needs for hundreds of small messages).
            src = mailcheck.connect(self.server.port, "src", "srcpass")
            try:
                while not self._stop.is_set():
                    typ, data = dst.status(BIG, "(MESSAGES)")
                    if typ == "OK":
                        count = int(data[0].rsplit(b"MESSAGES ", 1)[1].rstrip(b")"))
                        if count >= self.at_least:
                            self.action(src)
                            self.dest_count_then = count
                            return
                    time.sleep(0.005)
            finally:
                dst.logout()
                src.logout()
        except BaseException as exc:  # reported by the test
            self.error = exc

    def __enter__(self) -> WhenCopying:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(30)


def delete(name: str):
    def act(c: imaplib.IMAP4) -> None:
        typ, data = c.delete(name)
        assert typ == "OK", data

    return act


def rename(old: str, new: str):
    def act(c: imaplib.IMAP4) -> None:
        typ, data = c.rename(old, f'"{new}"')
        assert typ == "OK", data

    return act


def report(tmp_path) -> dict:
    return json.loads((tmp_path / "report.json").read_text())


def folder(rep: dict, name: str) -> dict:
    (f,) = [f for f in rep["folders"] if f["source"] == name]
    return f


CANNOT_OPEN = "the source folder cannot be opened (deleted or renamed?): "


@pytest.mark.source_writes("the test deletes or renames a source folder during the transfer")
@pytest.mark.parametrize("how", ["delete", "rename"])
@pytest.mark.parametrize("which", ["another folder", "the folder being copied"])
def test_source_folder_deleted_or_renamed_during_the_transfer(
    dovecot, tmp_path, how, which, request
):
    load(dovecot)
    before = mailcheck.snapshot(dovecot.port, "src", "srcpass")
    victim = "Victim" if which == "another folder" else BIG
    new_name = f"{victim} renamed"
    action = delete(victim) if how == "delete" else rename(victim, new_name)
    # Act once Big's copy has begun: for "another folder" Victim's turn is still to
    # come; for Big itself, its copy is then under way (a few hundred of 2500 there).
    at_least = 1 if victim != BIG else 300
    # Big's source read through a link of 16 MB/s (~3 s for its 50 MB): on a busy machine
    # the reads could otherwise be done (buffered ahead of slow writes) before the
    # action, and there would be nothing left to fail.
    rate = 16_000_000 if victim == BIG else None
    proxy = FaultProxy(dovecot.port, lambda _n: [Fault.throttle(rate)] if rate else [])
    proxy.__enter__()  # open for the re-run too (same source URL)
    request.addfinalizer(lambda: proxy.__exit__(None, None, None))
    args = cli_args(dovecot, tmp_path, source_port=proxy.port)
    with WhenCopying(dovecot, at_least, action) as watch:
        r = subprocess.run(args, capture_output=True, text=True, timeout=300, stdin=subprocess.DEVNULL)
    assert watch.error is None, watch.error
    assert watch.dest_count_then is not None, "the action never ran"
    assert watch.dest_count_then < BIG_COUNT, "Big was copied before the action ran"

    assert r.returncode == 1, r.stdout + r.stderr
    rep = report(tmp_path)
    assert rep["status"] == "done"
    gone = folder(rep, victim)
    assert gone["error"].startswith(CANNOT_OPEN), gone
    assert "Mailbox doesn't exist" in gone["error"]
    assert gone["failed"] == sum(before[victim].values())
    assert f"FAILED FOLDER: {CANNOT_OPEN}" in r.stdout
    assert rep["totals"]["folders_failed"] == 1
    # Every other folder is exact.
    dst = mailcheck.snapshot(dovecot.port, "dst", "dstpass")
    for name, msgs in before.items():
        if name != victim:
            assert dst[name] == msgs, name
            assert folder(rep, name)["error"] is None
    # What reached the destination's folder before the source's went: each message of
    # the source at most once, nothing else.
    assert not dst[victim] - before[victim]
    if victim == BIG:
        assert 0 < sum(dst[BIG].values()) < BIG_COUNT
    else:
        assert dst[victim] == Counter()  # created during the planning, never filled

    # A re-run: the folder is gone from the plan; a renamed one is copied under its new
    # name; nothing else changes.
    r2 = subprocess.run(args, capture_output=True, text=True, timeout=300, stdin=subprocess.DEVNULL)
    assert r2.returncode == 0, r2.stdout + r2.stderr
    rep2 = report(tmp_path)
    names = {f["source"] for f in rep2["folders"]}
    assert victim not in names
    dst2 = mailcheck.snapshot(dovecot.port, "dst", "dstpass")
    if how == "rename":
        assert new_name in names
        assert dst2[new_name] == before[victim]
        assert rep2["totals"]["copied"] == sum(before[victim].values())
        # (the destination keeps its partial copy under the old name: the mover never
        # deletes on the destination; docs/faults.md)
        dst2.pop(new_name)
    else:
        assert rep2["totals"]["copied"] == 0
    assert dst2 == dst


# --------------------------------------------------------------------------- UIDVALIDITY

RECREATED = "Recreated"


def recreated_mail() -> list[MaildirMessage]:
    """Messages whose UIDs, in reverse order, land on messages of the same size with
    other bytes and other flags: were the old UIDs trusted under the new UIDVALIDITY,
    flags would be set on the wrong messages (and same-size messages taken as copied)."""
    when = datetime(2016, 7, 7, tzinfo=UTC)
    out = [
        # two twins (byte-identical), flags differ
        MaildirMessage(make_message(1, msgid=None, body=b"twin"), ("\\Seen",), when),
        MaildirMessage(make_message(1, msgid=None, body=b"twin"), ("\\Flagged",), when),
        # one Message-ID, same size, different bytes
        MaildirMessage(make_message(2, msgid="<same@x>", body=b"AAAA"), ("\\Answered",), when),
        MaildirMessage(make_message(2, msgid="<same@x>", body=b"BBBB"), ("$label1",), when),
        # no Message-ID, same size, different bytes
        MaildirMessage(make_message(3, msgid=None, body=b"CCCC"), (), when),
        MaildirMessage(make_message(3, msgid=None, body=b"DDDD"), ("\\Draft",), when),
    ]
    sizes = [len(m.raw) for m in out]
    assert sizes == sizes[::-1]  # mirrored positions: same size...
    assert len({m.raw for m in out}) == len(out) - 1  # ...other bytes (but the twins)
    # ordinary messages around them (sizes all different)
    out = [
        MaildirMessage(make_message(10 + i, size=100 * i), ("\\Seen",), when) for i in range(3)
    ] + out
    out += [MaildirMessage(make_message(20 + i, size=101 * i + 7), (), when) for i in range(3)]
    return out


def uidvalidity(server, user: str, name: str) -> int:
    c = mailcheck.connect(server.port, user, server.users[user])
    try:
        typ, data = c.status(name, "(UIDVALIDITY)")
        assert typ == "OK", data
        return int(data[0].rsplit(b"UIDVALIDITY ", 1)[1].rstrip(b")"))
    finally:
        c.logout()


def move(server, tmp_path):
    r = mailcheck.run_move(
        server.port,
        server.port,
        tmp_path,
        "--no-starttls",
        "--report",
        str(tmp_path / "report.json"),
    )
    return r, report(tmp_path)


def recreate(server, user: str, mail: list[MaildirMessage]) -> None:
    c = mailcheck.connect(server.port, user, server.users[user])
    typ, data = c.delete(RECREATED)
    assert typ == "OK", data
    c.logout()
    server.deliver_many(user, RECREATED, mail)


@pytest.mark.source_writes("the test recreates a source folder between runs")
@pytest.mark.parametrize("change", ["same messages", "one gone, one new"])
def test_source_folder_recreated_between_runs(dovecot, tmp_path, change):
    mail = recreated_mail()
    dovecot.deliver_many("src", RECREATED, mail)
    dovecot.deliver_many("src", "INBOX", [MaildirMessage(make_message(99))])
    r, _rep = move(dovecot, tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    first = mailcheck.snapshot(dovecot.port, "dst", "dstpass")
    assert first == mailcheck.snapshot(dovecot.port, "src", "srcpass")
    old = uidvalidity(dovecot, "src", RECREATED)
    old_uids = mailcheck.uids(dovecot.port, "dst", "dstpass")

    # Deleted and made again, the messages in reverse order: a new UIDVALIDITY, and
    # every UID now names another message (same sizes at the mirrored UIDs).
    again = mail[::-1]
    new_msg = MaildirMessage(make_message(77, size=1234), ("\\Seen",))
    if change == "one gone, one new":
        gone = again.pop(0)
        again.append(new_msg)
    recreate(dovecot, "src", again)
    new = uidvalidity(dovecot, "src", RECREATED)
    assert new != old
    src = mailcheck.snapshot(dovecot.port, "src", "srcpass")

    r2, rep2 = move(dovecot, tmp_path)
    assert r2.returncode == 0, r2.stdout + r2.stderr
    f = folder(rep2, RECREATED)
    assert f["source_uidvalidity"] == new
    # said so, in the report and on the console
    (note,) = [n for n in f["notes"] if "recreated" in n]
    assert f"UIDVALIDITY {old} -> {new}" in note, note
    assert note in r2.stdout
    dst = mailcheck.snapshot(dovecot.port, "dst", "dstpass")
    dst_uids = mailcheck.uids(dovecot.port, "dst", "dstpass")
    if change == "same messages":
        # Everything was found on the destination by content: nothing appended, no
        # flags moved to the wrong message.
        assert (f["copied"], f["already_present"]) == (0, len(mail))
        assert dst_uids == old_uids
        assert dst == src == first
    else:
        assert (f["copied"], f["already_present"]) == (1, len(mail) - 1)
        # The new one was appended; the one gone from the source stays (the mover never
        # deletes); nothing is there twice.
        assert dst_uids[RECREATED][: len(mail)] == old_uids[RECREATED]
        assert len(dst_uids[RECREATED]) == len(mail) + 1
        extra = dst[RECREATED] - src[RECREATED]
        assert sum(extra.values()) == 1
        (left,) = extra
        assert left.size == len(gone.raw)
        assert not src[RECREATED] - dst[RECREATED]

    # A third run knows the new UIDVALIDITY: no note, nothing copied.
    r3, rep3 = move(dovecot, tmp_path)
    assert r3.returncode == 0, r3.stdout + r3.stderr
    f3 = folder(rep3, RECREATED)
    assert f3["copied"] == 0 and not any("recreated" in n for n in f3["notes"])
    assert mailcheck.uids(dovecot.port, "dst", "dstpass") == dst_uids


def test_destination_folder_recreated_between_runs(dovecot, tmp_path):
    """The destination's folder deleted and filled again with the same messages (say,
    restored from a backup): the state's destination UIDs are forgotten, the messages
    are found by content, nothing is appended."""
    mail = recreated_mail()
    dovecot.deliver_many("src", RECREATED, mail)
    r, _rep = move(dovecot, tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    old = uidvalidity(dovecot, "dst", RECREATED)
    c = mailcheck.connect(dovecot.port, "dst", "dstpass")
    restored = [
        MaildirMessage(raw, m.flags, datetime.strptime(m.date, "%d-%b-%Y %H:%M:%S %z"))
        for _uid, m, raw in reversed(mailcheck.messages(c, RECREATED))
    ]
    c.logout()
    recreate(dovecot, "dst", restored)
    new = uidvalidity(dovecot, "dst", RECREATED)
    assert new != old
    before = mailcheck.uids(dovecot.port, "dst", "dstpass")

    r2, rep2 = move(dovecot, tmp_path)
    assert r2.returncode == 0, r2.stdout + r2.stderr
    f = folder(rep2, RECREATED)
    assert (f["copied"], f["already_present"]) == (0, len(mail))
    (note,) = [n for n in f["notes"] if "recreated" in n]
    assert f"UIDVALIDITY {old} -> {new}" in note and "destination" in note, note
    assert mailcheck.uids(dovecot.port, "dst", "dstpass") == before
    assert mailcheck.snapshot(dovecot.port, "dst", "dstpass") == mailcheck.snapshot(
        dovecot.port, "src", "srcpass"
    )
