"""`yippiemove move` out of, into and between Gmail accounts (issue 5, Gmail part 2).

There is no Gmail here: the Gmail side is the double (tests.doubles.gmail, fixture
``gmail``), whose seeding/inspection API is the judge of what Gmail holds (one message
per X-GM-MSGID, its labels, flags, INTERNALDATE and bytes).  The Dovecot side is judged
by tests/mailcheck.py (imaplib), as in the other transfer tests.

What the mover must do (policy/gmail.py, docs/gmail.md):
- out of Gmail: a message arrives once per label (one copy per folder on a folder
  server), never from All Mail, Important or Starred; archived messages (no label that
  is a folder) arrive in Archive; Spam and Trash in the destination's Junk and Trash;
- into Gmail: a message that several source folders hold is ONE Gmail message with one
  label per folder; re-runs and crashes do not make a second one.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import signal
import subprocess
import sys
import threading
from collections import Counter
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest

from tests import mailcheck
from tests.doubles.gmail import GmailServer
from yippiemove.imap.client import AppendItem, MessageMeta, append_result
from yippiemove.imap.connection import ImapConnection
from yippiemove.transfer.engine import Mover, fingerprint
from yippiemove.transfer.gmail import GmailDest
from yippiemove.transfer.model import Endpoint, Options
from yippiemove.transfer.state import State
from yippiemove.transfer.store import GmailStore

SRC = "src@gmail.test"
DST = "dst@gmail.test"
WHEN = datetime(2021, 3, 4, 5, 6, 7, tzinfo=UTC)
PACIFIC = timezone(timedelta(hours=-8))


def msg(n: int, *, size: int = 0, msgid: str | None = "auto") -> bytes:
    head = [f"From: Sender {n} <s{n}@example.org>", f"Subject: message {n}"]
    if msgid == "auto":
        head.append(f"Message-ID: <m{n}@example.org>")
    elif msgid is not None:
        head.append(f"Message-ID: {msgid}")
    return "\r\n".join(head).encode() + b"\r\n\r\n" + f"body {n}\r\n".encode() + b"y" * size


def sha(raw: bytes) -> str:
    return hashlib.sha256(raw).hexdigest()


def utc(when: datetime) -> str:
    return when.astimezone(UTC).strftime("%d-%b-%Y %H:%M:%S +0000")


def make_dst_specials(dovecot) -> None:
    """Dovecot's usual special folders (its configuration marks them \\Sent, \\Junk...)."""
    for name in ("Sent", "Drafts", "Junk", "Trash"):
        dovecot.deliver_many("dst", name, [])


def gmail_move(source_port: int, dest_port: int, tmp: Path, *extra: str, **kw):
    kw.setdefault("timeout", 120)
    return mailcheck.run_move(source_port, dest_port, tmp, "--no-starttls", *extra, **kw)


def report_of(path: Path) -> dict:
    return json.loads(path.read_text())


# ============================================================================ Gmail -> folders

# (raw, labels, flags, INTERNALDATE, the Dovecot folders it must arrive in)
OUT_OF_GMAIL = [
    (msg(1), {"\\Inbox", "Work", "Travel"}, {"\\Seen"}, WHEN, ["INBOX", "Work", "Travel"]),
    (msg(2), set(), set(), WHEN, ["Archive"]),  # archived: in All Mail only
    (msg(3, size=9000), {"\\Sent"}, {"\\Seen"}, WHEN.astimezone(PACIFIC), ["Sent"]),
    (msg(4), {"\\Starred", "Work/2024"}, set(), WHEN, ["Work/2024"]),  # \Flagged
    (msg(5), {"\\Spam"}, set(), WHEN, ["Junk"]),
    (msg(6), {"\\Trash", "Work"}, {"\\Seen"}, WHEN, ["Trash"]),  # Trash hides it elsewhere
    (msg(7), {"\\Important"}, {"\\Seen", "$Custom"}, WHEN, ["Archive"]),  # a view only
    (msg(8), {"\\Starred"}, {"\\Answered"}, WHEN, ["Archive"]),  # starred and archived
    (msg(9), {"\\Important", "\\Inbox"}, set(), WHEN, ["INBOX"]),
    (msg(10), {"\\Draft"}, {"\\Draft"}, WHEN, ["Drafts"]),
    (msg(11, msgid=None), {"Travel", "Work/2024"}, set(), WHEN, ["Travel", "Work/2024"]),
]


def seed_out(gmail: GmailServer) -> None:
    for raw, labels, flags, when, _ in OUT_OF_GMAIL:
        gmail.add_message(SRC, raw, labels, flags, when)


def expected_out(excluded: set[str] = frozenset()) -> dict[str, Counter[mailcheck.Msg]]:
    want: dict[str, Counter[mailcheck.Msg]] = {}
    for raw, labels, flags, when, folders in OUT_OF_GMAIL:
        fl = set(flags) | ({"\\Flagged"} if "\\Starred" in labels else set())
        m = mailcheck.Msg(sha(raw), tuple(sorted(fl)), utc(when), len(raw))
        for f in folders:
            if f not in excluded:
                want.setdefault(f, Counter())[m] += 1
    return want


def test_gmail_to_folders_copies_once_per_label_and_archives(dovecot, gmail, tmp_path):
    seed_out(gmail)
    make_dst_specials(dovecot)
    plan_file = tmp_path / "plan.json"
    dry = gmail_move(
        gmail.port,
        dovecot.port,
        tmp_path,
        "--dry-run",
        "--report",
        str(plan_file),
        source_user="src%40gmail.test",
    )
    assert dry.returncode == 0, dry.stdout + dry.stderr
    # The plan says what happens: views skipped with their reasons, the archive and its count.
    assert "skipped [Gmail]/All Mail: Gmail's \\All folder" in dry.stdout
    assert "skipped [Gmail]/Important: Gmail's \\Important folder" in dry.stdout
    assert "skipped [Gmail]/Starred: Gmail's \\Flagged folder (Starred)" in dry.stdout
    assert "[Gmail]/All Mail (archived messages only) -> Archive [new]: 3 messages" in dry.stdout
    plan = report_of(plan_file)["plan"]
    assert plan["gmail"]["source"] is True and plan["gmail"]["dest"] is False
    assert plan["gmail"]["archive"] == {
        "source": "[Gmail]/All Mail",
        "dest": "Archive",
        "messages": 3,
    }
    assert set(plan["gmail"]["views_skipped"]) == {
        "[Gmail]/All Mail",
        "[Gmail]/Important",
        "[Gmail]/Starred",
    }
    by_src = {f["source"]: f for f in plan["folders"]}
    assert by_src["[Gmail]/All Mail"]["archived_only"] is True
    assert by_src["[Gmail]/Spam"]["dest"] == "Junk" and by_src["[Gmail]/Trash"]["dest"] == "Trash"
    assert plan["total_messages"] == sum(len(x[4]) for x in OUT_OF_GMAIL)
    assert mailcheck.snapshot(dovecot.port, "dst", "dstpass") == {
        n: Counter() for n in ("INBOX", "Sent", "Drafts", "Junk", "Trash")
    }, "a dry run changed the destination"

    report = tmp_path / "report.json"
    r = gmail_move(
        gmail.port,
        dovecot.port,
        tmp_path,
        "--report",
        str(report),
        source_user="src%40gmail.test",
    )
    assert r.returncode == 0, r.stdout + r.stderr
    assert gmail.unsupported() == []
    got = mailcheck.in_utc(mailcheck.snapshot(dovecot.port, "dst", "dstpass"))
    assert got == expected_out()  # every folder, bytes, flags, dates, multiplicity
    assert not any("All Mail" in f or "Important" in f or "Starred" in f for f in got)
    rep = report_of(report)
    assert rep["totals"]["copied"] == sum(len(x[4]) for x in OUT_OF_GMAIL)
    assert rep["totals"]["failed"] == 0

    # A re-run copies nothing and changes nothing.
    before = mailcheck.uids(dovecot.port, "dst", "dstpass")
    r2 = gmail_move(
        gmail.port,
        dovecot.port,
        tmp_path,
        "--report",
        str(report),
        source_user="src%40gmail.test",
    )
    assert r2.returncode == 0, r2.stdout + r2.stderr
    assert report_of(report)["totals"]["copied"] == 0
    assert mailcheck.uids(dovecot.port, "dst", "dstpass") == before


def test_gmail_source_exclude_a_label_and_the_archive(dovecot, gmail, tmp_path):
    """--exclude Travel: a message with other labels still arrives in those folders; a
    message whose only label is Travel is not copied (it is in a folder the user left
    out, not archived).  --exclude Archive leaves archived mail out."""
    seed_out(gmail)
    only_travel = msg(99)
    gmail.add_message(SRC, only_travel, {"Travel"}, (), WHEN)
    make_dst_specials(dovecot)
    r = gmail_move(
        gmail.port,
        dovecot.port,
        tmp_path,
        "--exclude",
        "Travel",
        "--exclude",
        "Archive",
        source_user="src%40gmail.test",
    )
    assert r.returncode == 0, r.stdout + r.stderr
    got = mailcheck.in_utc(mailcheck.snapshot(dovecot.port, "dst", "dstpass"))
    assert got == expected_out(excluded={"Travel", "Archive"})
    everything = {m.sha for msgs in got.values() for m in msgs}
    assert sha(only_travel) not in everything


def test_gmail_source_folder_option_and_rename_of_the_archive(dovecot, gmail, tmp_path):
    """--folder INBOX alone: no archive.  --folder Archive --rename Archive=Old/Archived:
    only the archive, under the new name (folder rules apply to it)."""
    seed_out(gmail)
    r = gmail_move(
        gmail.port, dovecot.port, tmp_path, "--folder", "INBOX", source_user="src%40gmail.test"
    )
    assert r.returncode == 0, r.stdout + r.stderr
    got = mailcheck.in_utc(mailcheck.snapshot(dovecot.port, "dst", "dstpass"))
    assert set(got) == {"INBOX"} and got["INBOX"] == expected_out()["INBOX"]

    r = gmail_move(
        gmail.port,
        dovecot.port,
        tmp_path,
        "--folder",
        "Archive",
        "--rename",
        "Archive=Old/Archived",
        source_user="src%40gmail.test",
    )
    assert r.returncode == 0, r.stdout + r.stderr
    got = mailcheck.in_utc(mailcheck.snapshot(dovecot.port, "dst", "dstpass"))
    assert got["Old/Archived"] == expected_out()["Archive"]
    assert "Archive" not in got


def test_gmail_source_archive_goes_to_the_destinations_archive_folder(
    dovecot_factory, gmail, tmp_path
):
    """A destination with a \\Archive folder (SPECIAL-USE) gets the archived messages
    there, whatever its name."""
    d = dovecot_factory(
        users={"dst": "dstpass"}, special_use={"Archives": "\\Archive", "Junk": "\\Junk"}
    )
    d.deliver_many("dst", "Archives", [])
    seed_out(gmail)
    r = gmail_move(gmail.port, d.port, tmp_path, "--dry-run", source_user="src%40gmail.test")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "[Gmail]/All Mail (archived messages only) -> Archives: 3 messages" in r.stdout
    assert "'Archives' is the destination's \\Archive folder (by SPECIAL-USE)" in r.stdout
    r = gmail_move(gmail.port, d.port, tmp_path, source_user="src%40gmail.test")
    assert r.returncode == 0, r.stdout + r.stderr
    got = mailcheck.in_utc(mailcheck.snapshot(d.port, "dst", "dstpass"))
    assert got["Archives"] == expected_out()["Archive"]
    assert "Archive" not in got


@pytest.mark.parametrize(
    ("option", "archive"),
    [
        (("--exclude", "[Gmail]/All Mail"), False),  # as the service names it
        (("--folder", "[Gmail]/All Mail"), True),
        (("--folder", "Archive"), True),
        (("--folder", "INBOX", "--exclude", "Archive"), False),
    ],
)
def test_gmail_source_the_archive_by_either_name(dovecot, gmail, tmp_path, option, archive):
    seed_out(gmail)
    plan_file = tmp_path / "plan.json"
    r = gmail_move(
        gmail.port,
        dovecot.port,
        tmp_path,
        "--dry-run",
        "--report",
        str(plan_file),
        *option,
        source_user="src%40gmail.test",
    )
    assert r.returncode == 0, r.stdout + r.stderr
    plan = report_of(plan_file)["plan"]
    assert any(f["archived_only"] for f in plan["folders"]) is archive
    assert (plan["gmail"]["archive"] is not None) is archive
    skipped = {s["folder"]: s["why"] for s in plan["skipped"]}
    # The views are skipped for what they are, whatever the options.
    assert skipped["[Gmail]/All Mail"].startswith("Gmail's \\All folder")
    if not archive:
        assert skipped["Archive (archived messages)"] == "excluded by --folder/--exclude"


def test_gmail_source_label_named_archive_is_merged_with_archived_mail(dovecot, gmail, tmp_path):
    gmail.add_message(SRC, msg(1), {"Archive"}, {"\\Seen"}, WHEN)
    gmail.add_message(SRC, msg(2), (), (), WHEN)
    gmail.add_message(SRC, msg(3), {"\\Inbox"}, (), WHEN)
    r = gmail_move(gmail.port, dovecot.port, tmp_path, source_user="src%40gmail.test")
    assert r.returncode == 0, r.stdout + r.stderr
    got = mailcheck.snapshot(dovecot.port, "dst", "dstpass")
    assert {m.sha for m in got["Archive"]} == {sha(msg(1)), sha(msg(2))}
    assert {m.sha for m in got["INBOX"]} == {sha(msg(3))}
    assert sum(sum(c.values()) for c in got.values()) == 3


# ============================================================================ folders -> Gmail


def seed_in(dovecot) -> dict[str, list[tuple[bytes, tuple[str, ...], datetime]]]:
    """Source folders on Dovecot, with messages shared between folders."""
    shared = msg(100)  # INBOX and Work: one Gmail message, labels \Inbox and Work
    three = msg(101, size=5000)  # INBOX, Work, Projects/2024
    twin = msg(102)  # twice in INBOX (two messages), once in Work
    trashed = msg(103)  # INBOX and Trash: two Gmail messages (Trash hides a message)
    nomid = msg(104, msgid=None)  # no Message-ID, in Work and Projects/2024
    later = msg(100)  # same bytes as `shared` but another date: another message
    differ = msg(108)  # INBOX says read, Projects/2024 unread: one Gmail message, one say
    folders = {
        "INBOX": [
            (shared, ("\\Seen",), WHEN),
            (three, ("\\Seen", "\\Flagged"), WHEN),
            (twin, (), WHEN),
            (twin, (), WHEN),
            (trashed, ("\\Seen",), WHEN),
            (msg(105), ("\\Answered",), WHEN.astimezone(PACIFIC)),
            (differ, ("\\Seen",), WHEN),
        ],
        "Work": [
            (shared, ("\\Seen",), WHEN),
            (three, ("\\Seen", "\\Flagged"), WHEN),
            (twin, (), WHEN),
            (nomid, ("$Custom",), WHEN),
            (later, ("\\Seen",), WHEN + timedelta(days=1)),
        ],
        "Projects/2024": [
            (three, ("\\Seen", "\\Flagged"), WHEN),
            (nomid, ("$Custom",), WHEN),
            (msg(106), (), WHEN),
            (differ, (), WHEN),
        ],
        "Trash": [(trashed, ("\\Seen",), WHEN)],
        "Sent": [(msg(107), ("\\Seen",), WHEN)],
    }
    for folder, items in folders.items():
        for raw, flags, when in items:
            dovecot.deliver("src", folder, raw, flags, when)
    return folders


def expected_gmail(folders) -> Counter:
    """(sha, labels, INTERNALDATE) of the Gmail messages the seed must give."""
    label = {"INBOX": "\\Inbox", "Trash": "\\Trash", "Sent": "\\Sent"}
    # key -> per folder count
    per: dict[tuple[str, str], Counter] = {}
    flags_of: dict[tuple[str, str], frozenset[str]] = {}
    for folder, items in folders.items():
        for raw, flags, when in items:
            key = (sha(raw), utc(when))
            # Trash never shares a Gmail message: a separate key space.
            k = (key, folder == "Trash")
            per.setdefault(k, Counter())[label.get(folder, folder)] += 1
            flags_of[k] = frozenset(flags)
    out: Counter = Counter()
    for (key, _trash), counts in per.items():
        for i in range(max(counts.values())):
            labels = frozenset(lb for lb, n in counts.items() if n > i)
            flags = flags_of[(key, _trash)]
            if "\\Flagged" in flags:
                labels |= {"\\Starred"}
            out[(key[0], labels, key[1])] += 1
    return out


def check_labels(gmail: GmailServer, folders) -> int:
    """Gmail holds each message (bytes and date) as often as the source folder holding it
    most often, and each folder's label is on as many of those as the folder holds; which
    copy carries which label may differ.  Returns the number of Gmail messages."""
    label = {"INBOX": "\\Inbox"}
    want: dict[tuple[str, str], Counter] = {}
    for folder, items in folders.items():
        for raw, _flags, when in items:
            want.setdefault((sha(raw), utc(when)), Counter())[label.get(folder, folder)] += 1
    got: dict[tuple[str, str], list[frozenset[str]]] = {}
    for m in gmail.messages(DST):
        got.setdefault((sha(m.raw), utc(m.internaldate)), []).append(m.labels)
    assert set(got) == set(want)
    for key, counts in want.items():
        assert len(got[key]) == max(counts.values()), key
        assert Counter(lb for labels in got[key] for lb in labels) == counts, key
    return sum(len(v) for v in got.values())


def gmail_contents(gmail: GmailServer, user: str = DST) -> Counter:
    return Counter(
        (sha(m.raw), frozenset(m.labels), utc(m.internaldate)) for m in gmail.messages(user)
    )


def appends(gmail: GmailServer) -> int:
    return sum(1 for r in gmail.command_log if r.command == "APPEND" and r.status == "OK")


def test_folders_to_gmail_store_a_message_once_with_its_labels(dovecot, gmail, tmp_path):
    folders = seed_in(dovecot)
    plan_file = tmp_path / "plan.json"
    dry = gmail_move(
        dovecot.port,
        gmail.port,
        tmp_path,
        "--dry-run",
        "--report",
        str(plan_file),
        dest_user="dst%40gmail.test",
    )
    assert dry.returncode == 0, dry.stdout + dry.stderr
    assert "Gmail destination: a message in several folders is stored once" in dry.stdout
    g = report_of(plan_file)["plan"]["gmail"]
    assert g["dest"] is True and g["source"] is False
    assert g["appended_folders"] == ["Trash"]
    assert set(g["shared_folders"]) == {"INBOX", "Work", "Projects/2024", "Sent"}
    # Gmail messages with labels of several folders: shared (INBOX, Work), three (INBOX,
    # Work, Projects/2024), one of the twins (INBOX twice, Work once), nomid (2 folders).
    assert g["in_several_folders"] == 5  # and differ (INBOX, Projects/2024)
    assert g["labels_instead_of_copies"] == 1 + 2 + 1 + 1 + 1
    assert gmail.messages(DST) == []

    report = tmp_path / "report.json"
    r = gmail_move(
        dovecot.port, gmail.port, tmp_path, "--report", str(report), dest_user="dst%40gmail.test"
    )
    assert r.returncode == 0, r.stdout + r.stderr
    assert gmail.unsupported() == []
    want = expected_gmail(folders)
    assert gmail_contents(gmail) == want
    assert appends(gmail) == sum(want.values())  # one APPEND per Gmail message
    stored = {m.msgid: m for m in gmail.messages(DST)}
    one = [m for m in stored.values() if m.raw == msg(100) and m.internaldate == WHEN]
    assert len(one) == 1 and one[0].labels == {"\\Inbox", "Work"}
    assert one[0].flags == {"\\Seen"}
    trash = [m for m in stored.values() if m.raw == msg(103)]
    assert sorted(sorted(m.labels) for m in trash) == [["\\Inbox"], ["\\Trash"]]
    # Flags belong to the Gmail message: the folder that appended it gave them.
    [d] = [m for m in stored.values() if m.raw == msg(108)]
    assert d.labels == {"\\Inbox", "Projects/2024"} and d.flags in ({"\\Seen"}, set())
    rep = report_of(report)
    assert rep["totals"]["labelled"] == 6
    assert rep["totals"]["failed"] == 0
    assert rep["totals"]["verified"] == sum(len(v) for v in folders.values())
    # Each source folder, as Gmail shows it through IMAP, has its messages.
    for folder, dest in (("Work", "Work"), ("Projects/2024", "Projects/2024")):
        snap = mailcheck.snapshot(gmail.port, DST, "dstpass")
        assert sorted(m.sha for m in snap[dest].elements()) == sorted(
            sha(raw) for raw, _f, _w in folders[folder]
        )

    # A re-run appends nothing, labels nothing, and keeps the flags as they are.
    n = appends(gmail)
    r2 = gmail_move(
        dovecot.port, gmail.port, tmp_path, "--report", str(report), dest_user="dst%40gmail.test"
    )
    assert r2.returncode == 0, r2.stdout + r2.stderr
    rep2 = report_of(report)
    assert rep2["totals"]["copied"] == 0 and rep2["totals"]["labelled"] == 0
    assert sum(f["flags_fixed"] for f in rep2["folders"]) == 0
    assert appends(gmail) == n
    assert gmail_contents(gmail) == want
    assert gmail.message(DST, d.msgid).flags == d.flags  # not set back and forth

    # Without the state file: the destination is the truth, still nothing new.
    (tmp_path / "state.sqlite").unlink()
    r3 = gmail_move(dovecot.port, gmail.port, tmp_path, dest_user="dst%40gmail.test")
    assert r3.returncode == 0, r3.stdout + r3.stderr
    assert appends(gmail) == n
    assert gmail_contents(gmail) == want
    assert gmail.message(DST, d.msgid).flags == d.flags


def test_folders_to_gmail_random_overlap_with_four_workers(dovecot, gmail, tmp_path):
    """Ten folders drawing from one pool of messages (some twice in a folder), copied by
    four workers at once: every Gmail message as often as the folder holding it most
    often, with the labels of exactly the folders holding it; a re-run adds nothing."""
    import random

    rng = random.Random(5)
    pool = [
        (msg(500 + i, size=rng.randrange(0, 4000)), WHEN + timedelta(hours=i)) for i in range(60)
    ]
    folders: dict[str, list[tuple[bytes, tuple[str, ...], datetime]]] = {}
    for f in range(10):
        name = "INBOX" if f == 0 else f"Folder {f}"
        items = [pool[rng.randrange(len(pool))] for _ in range(25)]
        folders[name] = [(raw, ("\\Seen",), when) for raw, when in items]
        for raw, flags, when in folders[name]:
            dovecot.deliver("src", name, raw, flags, when)
    r = gmail_move(
        dovecot.port, gmail.port, tmp_path, "--connections", "4", dest_user="dst%40gmail.test"
    )
    assert r.returncode == 0, r.stdout + r.stderr
    n = check_labels(gmail, folders)
    assert appends(gmail) == n
    r2 = gmail_move(
        dovecot.port, gmail.port, tmp_path, "--connections", "4", dest_user="dst%40gmail.test"
    )
    assert r2.returncode == 0, r2.stdout + r2.stderr
    assert appends(gmail) == n
    assert check_labels(gmail, folders) == n


def test_folders_to_gmail_state_records_the_gmail_messages(dovecot, gmail, tmp_path):
    folders = seed_in(dovecot)
    r = gmail_move(dovecot.port, gmail.port, tmp_path, dest_user="dst%40gmail.test")
    assert r.returncode == 0, r.stdout + r.stderr
    state = State(tmp_path / "state.sqlite")
    try:
        rows = state.gmail_rows()
    finally:
        state.close()
    stored = {m.msgid: m for m in gmail.messages(DST)}
    appended = {m for m, row in rows.items() if row.origin is not None}
    # Every Gmail message, by X-GM-MSGID, except Trash's: it never shares, so it is not
    # looked up (and not recorded).
    assert appended == {i for i, m in stored.items() if "\\Trash" not in m.labels}
    for msgid, row in rows.items():
        assert row.fingerprint == fingerprint(stored[msgid].raw)
        assert row.instant == int(stored[msgid].internaldate.timestamp())
        assert row.dest_name in folders or row.dest_name == "[Gmail]/Sent Mail"
    # No bodies in the state file.
    data = (tmp_path / "state.sqlite").read_bytes()
    assert b"body 100" not in data


def _move_args(src_port: int, dst_port: int, tmp: Path, **kw: str) -> list[str]:
    """The arguments mailcheck.run_move uses, for a process the test controls."""
    (tmp / "source.pw").write_text("srcpass\n")
    (tmp / "dest.pw").write_text("dstpass\n")
    return [
        sys.executable,
        "-m",
        "yippiemove.cli",
        "move",
        "--source",
        f"imap://{kw.get('source_user', 'src')}@127.0.0.1:{src_port}",
        "--dest",
        f"imap://{kw.get('dest_user', 'dst')}@127.0.0.1:{dst_port}",
        "--source-password-file",
        str(tmp / "source.pw"),
        "--dest-password-file",
        str(tmp / "dest.pw"),
        "--state",
        str(tmp / "state.sqlite"),
        "--no-starttls",
    ]


def test_folders_to_gmail_crash_between_append_and_label(dovecot, tmp_path):
    """The CLI is killed (SIGKILL) the moment it sends its first label (UID COPY): the
    APPENDs are done, the labels are not.  The re-run makes no second message and adds
    every label."""
    folders = seed_in(dovecot)
    proc: list[subprocess.Popen[bytes]] = []
    killed = threading.Event()

    def hook(user: str | None, command: str) -> str | None:
        if user == DST and command == "UID COPY" and not killed.is_set():
            killed.set()
            os.kill(proc[0].pid, signal.SIGKILL)
            return "NO [UNAVAILABLE] the client is gone (test)"
        return None

    with GmailServer(users={DST: "dstpass"}, command_hook=hook) as gmail:
        args = _move_args(dovecot.port, gmail.port, tmp_path, dest_user="dst%40gmail.test")
        proc.append(subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE))
        out, err = proc[0].communicate(timeout=120)
        assert killed.is_set(), out + err
        assert proc[0].returncode == -signal.SIGKILL
        # Crashed: some message is stored with fewer labels than it needs.
        want = expected_gmail(folders)
        assert gmail_contents(gmail) != want
        before = appends(gmail)

        gmail.command_hook = None
        r = mailcheck.run_move(
            dovecot.port, gmail.port, tmp_path, "--no-starttls", dest_user="dst%40gmail.test"
        )
        assert r.returncode == 0, r.stdout + r.stderr
        # Every label, and no message twice: as many Gmail messages as APPENDs overall.
        assert gmail_contents(gmail) == want
        assert len(gmail.messages(DST)) == sum(want.values()) == appends(gmail)
        assert appends(gmail) >= before
        assert not gmail.internal_errors


def test_gmail_to_gmail_keeps_labels_one_message_each(gmail, tmp_path):
    seed_out(gmail)
    r = gmail_move(
        gmail.port,
        gmail.port,
        tmp_path,
        source_user="src%40gmail.test",
        dest_user="dst%40gmail.test",
    )
    assert r.returncode == 0, r.stdout + r.stderr
    assert gmail.unsupported() == []
    src = {m.raw: m for m in gmail.messages(SRC)}
    dst = gmail.messages(DST)
    assert len(dst) == len(src)  # one message each
    for m in dst:
        s = src[m.raw]
        # \Important is Gmail's own: not a folder, not carried over.  A message in
        # Trash (or Spam) shows in no other folder, so its other labels cannot be seen.
        want = s.labels - {"\\Important"}
        if "\\Trash" in want:
            want = {lb for lb in want if lb in ("\\Trash", "\\Starred")}
        assert m.labels == want, (s.labels, m.labels)
        assert m.flags == s.flags and m.internaldate == s.internaldate
    # Archived mail is archived again (no label), not in a label "Archive".
    assert "Archive" not in gmail.folders(DST)
    n = appends(gmail)
    r2 = gmail_move(
        gmail.port,
        gmail.port,
        tmp_path,
        source_user="src%40gmail.test",
        dest_user="dst%40gmail.test",
    )
    assert r2.returncode == 0, r2.stdout + r2.stderr
    assert appends(gmail) == n
    assert len(gmail.messages(DST)) == len(src)


def test_folders_to_gmail_exclude_a_folder(dovecot, gmail, tmp_path):
    folders = seed_in(dovecot)
    r = gmail_move(
        dovecot.port, gmail.port, tmp_path, "--exclude", "Work", dest_user="dst%40gmail.test"
    )
    assert r.returncode == 0, r.stdout + r.stderr
    del folders["Work"]
    assert gmail_contents(gmail) == expected_gmail(folders)
    assert "Work" not in gmail.folders(DST)


# ============================================================================ the engine


def _endpoint(port: int, user: str, password: str) -> Endpoint:
    return Endpoint("127.0.0.1", port, user, "none", password, allow_insecure_auth=True)


def test_an_owner_that_fails_its_append_leaves_no_duplicate(dovecot, tmp_path):
    """The first APPEND of the run is refused as temporary ([UNAVAILABLE]): that pass is
    retried, and the other folder's pass, which deferred to it (or not, by timing),
    labels or appends the message itself.  One Gmail message with both labels."""
    raw = msg(200)
    for folder in ("INBOX", "Work"):
        dovecot.deliver("src", folder, raw, ("\\Seen",), WHEN)
    failed = threading.Event()

    def hook(user: str | None, command: str) -> str | None:
        if command == "APPEND" and not failed.is_set():
            failed.set()
            return "NO [UNAVAILABLE] Temporary System Error (test)"
        return None

    with GmailServer(users={DST: "dstpass"}, command_hook=hook) as gmail:
        mover = Mover(
            _endpoint(dovecot.port, "src", "srcpass"),
            _endpoint(gmail.port, DST, "dstpass"),
            state=State(tmp_path / "s.sqlite"),
            options=Options(retries=3, max_backoff=0.2),
        )
        results = asyncio.run(mover.run())
        assert failed.is_set()
        assert [m.labels for m in gmail.messages(DST)] == [{"\\Inbox", "Work"}]
        assert sum(r.copied + r.labelled + r.present for r in results) == 2
        assert not gmail.internal_errors


def test_label_instead_keeps_multiplicity_and_skips_its_own_folder() -> None:
    """The registry's choice (transfer/gmail.py), without a server."""

    async def go() -> None:
        gd = GmailDest(b"[Gmail]/All Mail", None)
        from yippiemove.transfer.gmail import DestPass

        inbox = DestPass("INBOX", b"INBOX", "INBOX")
        work = DestPass("Work", b"Work", "Work")
        gd.passes = {"INBOX": inbox, "Work": work}
        date = b"04-Mar-2021 05:06:07 +0000"
        fpr = fingerprint(b"x")

        def meta(uid: int) -> MessageMeta:
            return MessageMeta(uid, 1, (), date, None)

        # INBOX holds it twice: both are appended (its own reservation is in INBOX).
        assert not gd.label_instead("INBOX", meta(1), fpr)
        assert not gd.label_instead("INBOX", meta(2), fpr)
        # Work holds it three times: two are labelled (one Gmail message each), the
        # third must be appended.
        assert gd.label_instead("Work", meta(1), fpr)
        assert gd.label_instead("Work", meta(2), fpr)
        assert not gd.label_instead("Work", meta(3), fpr)
        assert [s for _m, s in work.deferred] == [s for _m, s in inbox.reserved]
        # Another date is another message.
        assert not gd.label_instead("Work", meta(4), fingerprint(b"y"))
        other = MessageMeta(5, 1, (), b"05-Mar-2021 05:06:07 +0000", None)
        assert not gd.label_instead("Work", other, fpr)
        # A failed owner is dropped: nobody waits for ever.
        gd.end(inbox)
        assert work.deferred and all(s.failed for _m, s in work.deferred)

    asyncio.run(go())


async def _client(gmail: GmailServer, user: str, password: str) -> GmailStore:
    conn = await ImapConnection.open("127.0.0.1", gmail.port, security="none")
    await conn.login(user, password, allow_insecure=True)
    return GmailStore(conn)


@pytest.mark.parametrize("how", ["published", "landed", "lost"])
def test_a_deferred_message_is_labelled_or_handed_back(gmail, how):
    """Pass INBOX reserves a message and pass Work defers to it.  "published": INBOX's
    APPEND is done and published, Work copies the message from INBOX.  Else INBOX's pass
    fails before it heard the APPEND's answer: the message was stored ("landed") or not
    ("lost"); Work looks for it in All Mail by size, date and hash and labels it, or hands
    it back to be appended."""
    raw = msg(300)
    date = b"04-Mar-2021 05:06:07 +0000"
    m = MessageMeta(7, len(raw), ("\\Seen",), date, b"<m300@example.org>")
    gmail.create_label(DST, "Work")
    # Same size and date, other bytes: found by the search, refused by the hash.
    gmail.add_message(DST, msg(301, size=len(raw) - len(msg(301))), {"\\Inbox"}, (), WHEN)

    async def go() -> None:
        dst = await _client(gmail, DST, "dstpass")
        try:
            gd = GmailDest(b"[Gmail]/All Mail", None)
            await dst.select(b"INBOX")
            inbox = await gd.prepare(dst, "INBOX", b"INBOX", "INBOX", [m])
            await dst.select(b"Work")
            work = await gd.prepare(dst, "Work", b"Work", "Work", [m])
            assert not gd.label_instead("INBOX", m, fingerprint(raw))  # INBOX appends it
            assert gd.label_instead("Work", m, fingerprint(raw))  # Work waits for that
            if how != "lost":
                item = AppendItem(raw, ("\\Seen",), date)
                au = append_result(await (await dst.submit_append(b"INBOX", [item])))
                assert au is not None
            if how == "published":
                dinfo = await dst.select(b"INBOX")
                await gd.publish(dst, inbox, dinfo, {7: au.uids[0]}, {7: "copied"})
                await dst.select(b"Work")
            else:
                gd.end(inbox)  # INBOX's pass failed before it heard the answer
            claim: dict[int, int] = {}
            done: list[int] = []
            left = await gd.label(dst, work, claim, lambda mm, f, duid: done.append(duid))
            assert dst.selected == b"Work"
            if how == "lost":
                assert left == [m] and done == [] and claim == {}
            else:
                assert left == [] and done == [claim[7]]
                assert claim[7] in gmail.folder_uids(DST, "Work")
        finally:
            await dst.logout()

    asyncio.run(go())
    copy = [g for g in gmail.messages(DST) if g.raw == raw]
    assert [g.labels for g in copy] == ([] if how == "lost" else [{"\\Inbox", "Work"}])
    searched = any(r.command == "UID SEARCH" for r in gmail.command_log)
    assert searched is (how != "published")  # the fallback only when needed


def test_rerun_after_the_message_was_deleted_on_gmail_copies_it_once_again(
    dovecot, gmail, tmp_path
):
    """The state says where a message is; the destination says whether it still is.  A
    message deleted on Gmail (in Trash now) is stored again, once, with its labels."""
    raw = msg(400)
    for folder in ("INBOX", "Work"):
        dovecot.deliver("src", folder, raw, ("\\Seen",), WHEN)
    dovecot.deliver("src", "INBOX", msg(401), (), WHEN)
    r = gmail_move(dovecot.port, gmail.port, tmp_path, dest_user="dst%40gmail.test")
    assert r.returncode == 0, r.stdout + r.stderr
    [gone] = [g for g in gmail.messages(DST) if g.raw == raw]
    c = mailcheck.connect(gmail.port, DST, "dstpass")
    c.select('"[Gmail]/All Mail"')
    typ, data = c.uid("SEARCH", "X-GM-MSGID", str(gone.msgid))
    assert typ == "OK" and data[0], data
    c.uid("STORE", data[0].decode(), "+FLAGS", "(\\Deleted)")  # auto-expunge: to Trash
    c.logout()
    assert "\\Trash" in gmail.message(DST, gone.msgid).labels  # hidden from other folders

    r = gmail_move(dovecot.port, gmail.port, tmp_path, dest_user="dst%40gmail.test")
    assert r.returncode == 0, r.stdout + r.stderr
    again = [g for g in gmail.messages(DST) if g.raw == raw and "\\Trash" not in g.labels]
    assert [g.labels for g in again] == [{"\\Inbox", "Work"}]
    assert len(gmail.messages(DST)) == 3  # the one in Trash, the new one, msg(401)


def test_into_gmail_one_append_per_message_without_multiappend(dovecot, gmail, tmp_path):
    """Gmail has no MULTIAPPEND and only LITERAL-: the mover sends one APPEND per message
    with a synchronizing literal, and the double refuses none of its commands."""
    n = 600
    dovecot.deliver_many("src", "INBOX", [msg(1000 + i, size=i * 7) for i in range(n)])
    r = gmail_move(dovecot.port, gmail.port, tmp_path, dest_user="dst%40gmail.test")
    assert r.returncode == 0, r.stdout + r.stderr
    assert gmail.unsupported() == []
    assert appends(gmail) == n
    assert sorted(sha(m.raw) for m in gmail.messages(DST)) == sorted(
        sha(msg(1000 + i, size=i * 7)) for i in range(n)
    )


@pytest.mark.xfail(
    strict=False,
    reason="known race left (about 1 run in 20 with both cores busy, was 4 in 10 before "
    "GmailDest._reserve_leftovers): an APPEND whose answer a BYE cut off is stored by the "
    "server only after another folder's pass searched All Mail for it; that pass appends "
    "its own copy, the cut pass's re-run finds the late copy already in its folder: one "
    "copy per label. Needs the search to wait until the cut session is gone.",
)
@pytest.mark.parametrize(("verb", "nth"), [("APPEND", 2), ("APPEND", 3), ("UID FETCH", 2)])
def test_into_gmail_sessions_ended_mid_pass_leave_one_message_per_key(
    dovecot, gmail, tmp_path, verb, nth
):
    """Two workers; every destination session ends with ``* BYE`` at its n-th APPEND or
    UID FETCH (what Microsoft's servers do when a session outlives its OAuth2 token,
    issue 16): a pass dies after some of its APPENDs were stored but before it could
    publish them.  Failed on the old code: the other folder's pass, not knowing of
    them, appended a second copy (INBOX's copy and Work's instead of one message with
    both labels), and a BYE during the X-GM-MSGID fetch raised UnboundLocalError.  Now
    such keys are looked for in All Mail before a pass appends them."""
    from tests.faultproxy import Fault, FaultProxy

    folders = seed_in(dovecot)
    bye = Fault.bye(verb, "Session invalidated - AccessTokenExpired", nth=nth)
    src = _endpoint(dovecot.port, "src", "srcpass")
    state = State(tmp_path / "state.sqlite")
    # The first six sessions (the two workers' first three each) end so; the later ones
    # are spared: a folder that could never get past its BYE would be given up.
    with FaultProxy(gmail.port, lambda n: [bye] if n < 6 else []) as pd:
        options = Options(connections=2, far_connections=2, max_backoff=0.5)
        mover = Mover(src, _endpoint(pd.port, DST, "dstpass"), state=state, options=options)
        try:
            results = asyncio.run(asyncio.wait_for(mover.run(), timeout=120))
        finally:
            state.close()
        assert pd.kinds()["bye"] >= 2
    assert sum(r.failed for r in results) == 0
    assert gmail.unsupported() == []
    assert gmail_contents(gmail) == expected_gmail(folders)
