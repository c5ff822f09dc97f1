"""`yippiemove move` end to end against real Dovecot servers, judged by imaplib."""

from __future__ import annotations

import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest
import xxhash

from tests import mailcheck
from yippiemove.imap import utf7

NESTED = "Archive/2019/Q1/Deep"
FOLDERS = ["INBOX", NESTED, "Entwürfe", "😀 Emoji", "R&D", "Sent"]
EMPTY = "Empty/Still empty"


def make_message(i: int, *, msgid: str | None = "auto", body: bytes = b"", size: int = 0) -> bytes:
    headers = [
        f"From: Sender {i} <sender{i}@example.org>",
        "To: Receiver <rcpt@example.net>",
        f"Subject: Test message {i} =?utf-8?q?=C3=A4?=",
        f"Date: Mon, {1 + i % 28} Jan 2018 10:{i % 60:02d}:00 +0100",
    ]
    if msgid == "auto":
        headers.append(f"Message-ID: <msg{i}@example.org>")
    elif msgid is not None:
        headers.append(f"Message-ID: {msgid}")
    text = body or (f"Hello {i}\r\n".encode() + b"x" * size)
    return "\r\n".join(headers).encode() + b"\r\n\r\n" + text + b"\r\n"


FLAG_SETS = [
    (),
    ("\\Seen",),
    ("\\Seen", "\\Answered"),
    ("\\Flagged", "$Forwarded"),
    ("\\Draft", "$label1", "NonJunk"),
    ("\\Seen", "\\Deleted"),
]


def populate(server, user: str = "src") -> None:
    rng = random.Random(7)
    n = 0
    for folder in FOLDERS:
        items = []
        for _ in range(8):
            n += 1
            flags = FLAG_SETS[n % len(FLAG_SETS)]
            when = datetime(2001 + n % 25, 1 + n % 12, 1 + n % 28, n % 24, n % 60, 7, tzinfo=UTC)
            items.append((make_message(n, size=rng.randrange(0, 3000)), flags, when))
        for raw, flags, when in items:
            server.deliver(user, folder, raw, flags, when)
    # Multiplicity: byte-identical twins, one Message-ID shared by different messages,
    # no Message-ID at all.
    twin = make_message(1000)
    server.deliver(user, "INBOX", twin, ("\\Seen",), datetime(2010, 5, 5, tzinfo=UTC))
    server.deliver(user, "INBOX", twin, ("\\Seen",), datetime(2010, 5, 5, tzinfo=UTC))
    server.deliver(user, "INBOX", make_message(1001, msgid="<same@x>", body=b"one"))
    server.deliver(user, "INBOX", make_message(1002, msgid="<same@x>", body=b"two"))
    server.deliver(user, "INBOX", make_message(1003, msgid=None))
    server.deliver(user, "INBOX", make_message(1004, msgid=None))
    # An empty nested folder.
    server.deliver_many(user, EMPTY, [])


def add_timezone_messages(port: int) -> None:
    """APPEND with explicit zones, so INTERNALDATEs carry offsets other than +0000."""
    c = mailcheck.connect(port, "src", "srcpass")
    for k, zone in enumerate((timedelta(hours=5, minutes=30), timedelta(hours=-8))):
        when = datetime(2019, 3, 10, 23, 59, 59, tzinfo=timezone(zone))
        date = when.strftime('"%d-%b-%Y %H:%M:%S %z"')
        typ, data = c.append("INBOX", "(\\Seen)", date, make_message(2000 + k))
        assert typ == "OK", data
    c.logout()


def mapped(snapshot: dict, name_map: dict[str, str]) -> dict:
    return {name_map.get(k, k): v for k, v in snapshot.items()}


def enc(name: str) -> str:
    return utf7.encode(name).decode()


def assert_exact(
    server_src, server_dst, *, src_user="src", dst_user="dst", name_map=None, dst_password="dstpass"
):
    src = mailcheck.snapshot(server_src.port, src_user, "srcpass")
    dst = mailcheck.snapshot(server_dst.port, dst_user, dst_password)
    src = mapped(src, name_map or {})
    assert set(src) <= set(dst), f"missing folders: {set(src) - set(dst)}"
    for folder, msgs in src.items():
        assert dst[folder] == msgs, f"folder {folder!r} differs"
    return src, dst


def move(server, tmp_path, *extra, dest=None, **kw):
    dest = dest or server
    return mailcheck.run_move(
        server.port, dest.port, tmp_path, *extra, ca_file=server.ca_file, **kw
    )


@pytest.mark.source_writes("its setup APPENDs messages with explicit zones to the source over IMAP")
def test_exact_copy_then_idempotent_rerun(dovecot, tmp_path):
    populate(dovecot)
    add_timezone_messages(dovecot.port)
    report = tmp_path / "report.json"
    r = move(dovecot, tmp_path, "--report", str(report))
    assert r.returncode == 0, r.stderr + r.stdout
    src, dst = assert_exact(dovecot, dovecot)
    # Every folder made it, the empty nested one included, non-ASCII names encoded right.
    for name in [*FOLDERS, EMPTY]:
        assert enc(name) in dst, name
    assert dst[enc(EMPTY)] == Counter()
    assert sum(src["INBOX"].values()) == 8 + 6 + 2
    # Zones: the source and destination name the same instants.
    rep = json.loads(report.read_text())
    assert rep["status"] == "done"
    total = sum(sum(v.values()) for v in src.values())
    assert rep["totals"]["source_count"] == total
    assert rep["totals"]["copied"] == total
    assert rep["totals"]["failed"] == 0
    inbox = next(f for f in rep["folders"] if f["source"] == "INBOX")
    assert {m["outcome"] for m in inbox["messages"]} == {"copied"}
    assert len({m["dest_uid"] for m in inbox["messages"]}) == len(inbox["messages"])

    before = mailcheck.uids(dovecot.port, "dst", "dstpass")
    r2 = move(dovecot, tmp_path, "--report", str(report))
    assert r2.returncode == 0, r2.stderr
    rep2 = json.loads(report.read_text())
    assert rep2["totals"]["copied"] == 0
    assert rep2["totals"]["already_present"] == total
    # Nothing changed on the destination: same UIDs, same messages.
    assert mailcheck.uids(dovecot.port, "dst", "dstpass") == before
    assert_exact(dovecot, dovecot)


def test_state_file_deleted_then_rerun_adds_nothing(dovecot, tmp_path):
    populate(dovecot)
    r = move(dovecot, tmp_path)
    assert r.returncode == 0, r.stderr
    (tmp_path / "state.sqlite").unlink()
    for extra in ("state.sqlite-wal", "state.sqlite-shm"):
        (tmp_path / extra).unlink(missing_ok=True)
    before = mailcheck.uids(dovecot.port, "dst", "dstpass")
    r2 = move(dovecot, tmp_path, "--report", str(tmp_path / "r.json"))
    assert r2.returncode == 0, r2.stderr
    assert mailcheck.uids(dovecot.port, "dst", "dstpass") == before
    rep = json.loads((tmp_path / "r.json").read_text())
    assert rep["totals"]["copied"] == 0
    assert_exact(dovecot, dovecot)
    # Found again by content: those decisions compared SHA-256s, which the state keeps.
    db = sqlite3.connect(tmp_path / "state.sqlite")
    present = db.execute("SELECT fingerprint FROM messages WHERE outcome = 'present'").fetchall()
    db.close()
    assert present and all(len(f) == 32 for (f,) in present)


def test_partial_destination_is_completed_with_multiplicity(dovecot, tmp_path):
    """A destination already holding some copies (as after a crash) gets only the rest."""
    populate(dovecot)
    twin = make_message(1000)
    # One of the two twins is already there, plus a different message sharing a Message-ID.
    dovecot.deliver("dst", "INBOX", twin, ("\\Seen",), datetime(2010, 5, 5, tzinfo=UTC))
    dovecot.deliver("dst", "INBOX", make_message(1001, msgid="<same@x>", body=b"one"))
    r = move(dovecot, tmp_path)
    assert r.returncode == 0, r.stderr
    src = mailcheck.snapshot(dovecot.port, "src", "srcpass")
    dst = mailcheck.snapshot(dovecot.port, "dst", "dstpass")
    assert dst["INBOX"] == src["INBOX"]


def test_new_source_mail_is_copied_on_rerun(dovecot, tmp_path):
    populate(dovecot)
    assert move(dovecot, tmp_path).returncode == 0
    dovecot.deliver("src", "INBOX", make_message(5000), ("\\Flagged",))
    dovecot.deliver("src", NESTED, make_message(5001))
    r = move(dovecot, tmp_path, "--report", str(tmp_path / "r.json"))
    assert r.returncode == 0, r.stderr
    rep = json.loads((tmp_path / "r.json").read_text())
    assert rep["totals"]["copied"] == 2
    assert_exact(dovecot, dovecot)


def test_slash_source_to_dot_destination(dovecot, dovecot_dot, tmp_path):
    populate(dovecot)
    r = move(dovecot, tmp_path, dest=dovecot_dot)
    assert r.returncode == 0, r.stderr + r.stdout
    names = {name: name.replace("/", ".") for name in [enc(f) for f in [*FOLDERS, EMPTY]]}
    _src, dst = assert_exact(dovecot, dovecot_dot, name_map=names)
    assert enc("Archive.2019.Q1.Deep") in dst
    # Parents exist as a hierarchy on the "." server.
    c = mailcheck.connect(dovecot_dot.port, "dst", "dstpass")
    listed = mailcheck.folders(c)
    c.logout()
    assert listed[enc("Archive.2019.Q1.Deep")][0] == "."


def test_folder_and_exclude_select_folders(dovecot, tmp_path):
    populate(dovecot)
    r = move(
        dovecot,
        tmp_path,
        "--folder",
        "Archive",
        "--folder",
        "INBOX",
        "--exclude",
        "Archive/2019/Q1/Deep",
    )
    assert r.returncode == 0, r.stderr
    dst = mailcheck.snapshot(dovecot.port, "dst", "dstpass")
    assert sum(dst["INBOX"].values()) == 14
    assert enc(NESTED) not in dst
    assert enc("Entwürfe") not in dst


def test_unknown_folder_is_a_clear_error(dovecot, tmp_path):
    populate(dovecot)
    r = move(dovecot, tmp_path, "--folder", "Nope")
    assert r.returncode == 2
    assert "no source folder matches --folder 'Nope'" in r.stderr
    assert mailcheck.snapshot(dovecot.port, "dst", "dstpass").get("INBOX", Counter()) == Counter()


def test_dry_run_changes_nothing(dovecot, tmp_path):
    populate(dovecot)
    before = mailcheck.uids(dovecot.port, "dst", "dstpass")
    r = move(dovecot, tmp_path, "--dry-run")
    assert r.returncode == 0, r.stderr
    assert "Archive/2019/Q1/Deep -> Archive/2019/Q1/Deep [new]: 8 messages" in r.stdout
    assert "Plan: 7 folders" in r.stdout
    assert mailcheck.uids(dovecot.port, "dst", "dstpass") == before
    assert not (tmp_path / "state.sqlite").exists()


def test_state_file_contents(dovecot, tmp_path):
    populate(dovecot)
    assert move(dovecot, tmp_path).returncode == 0
    db = sqlite3.connect(tmp_path / "state.sqlite")
    folders = dict(db.execute("SELECT source_name, source_uidvalidity FROM folders"))
    assert set(folders) >= set(FOLDERS)
    rows = db.execute(
        "SELECT m.source_uid, m.size, m.fingerprint, m.dest_uid, m.outcome FROM messages m "
        "JOIN folders f ON f.id = m.folder_id WHERE f.source_name = 'INBOX'"
    ).fetchall()
    assert len(rows) == 14
    assert all(r[4] == "copied" and r[3] and r[1] > 0 for r in rows)
    # The content hash of a plain copy is the XXH3-128 of the source's exact bytes
    # (SHA-256 only where a decision compares it: docs/design.md "Content hashes").
    c = mailcheck.connect(dovecot.port, "src", "srcpass")
    bodies = {uid: body for uid, _, body in mailcheck.messages(c, "INBOX")}
    c.logout()
    assert {r[0]: r[2] for r in rows} == {
        uid: xxhash.xxh3_128_digest(body) for uid, body in bodies.items()
    }
    # No message bodies and no passwords are stored.
    raw = (tmp_path / "state.sqlite").read_bytes()
    assert b"srcpass" not in raw and b"dstpass" not in raw
    assert b"Hello 1\r\n" not in raw


def test_corpus_arrives_byte_exact(dovecot, tmp_path, corpus_dir):
    files = sorted(p for p in corpus_dir.iterdir() if p.suffix == ".eml")
    assert len(files) > 50
    for p in files:
        dovecot.deliver("src", "Corpus", p.read_bytes(), ("\\Seen",))
    report = tmp_path / "r.json"
    r = move(dovecot, tmp_path, "--report", str(report))
    rep = json.loads(report.read_text())
    failed = {f["uid"]: f["reason"] for f in rep["failures"]}
    assert r.returncode == (1 if failed else 0), r.stderr
    c = mailcheck.connect(dovecot.port, "src", "srcpass")
    src = mailcheck.messages(c, "Corpus")
    c.logout()
    c = mailcheck.connect(dovecot.port, "dst", "dstpass")
    dst = mailcheck.messages(c, "Corpus")
    c.logout()
    assert len(src) == len(files)
    # Every message arrived with the bytes the source serves, or was reported with a reason.
    want = Counter(m for uid, m, _ in src if uid not in failed)
    assert Counter(m for _, m, _ in dst) == want
    for reason in failed.values():
        assert "destination refused it" in reason


def _stored(maildir: Path) -> int:
    """Messages in a Maildir++ tree (every folder's new/ and cur/)."""
    return sum(1 for d in maildir.rglob("*") if d.name in ("new", "cur") for _ in d.iterdir())


def test_kill_9_at_several_points_then_rerun_is_exact(dovecot, tmp_path):
    rng = random.Random(42)
    items = [
        (make_message(i, size=rng.choice((200, 2000, 20000, 200000))), FLAG_SETS[i % 6], None)
        for i in range(1500)
    ]
    from yippiemove.testing.dovecot import MaildirMessage

    dovecot.deliver_many("src", "INBOX", [MaildirMessage(r, f) for r, f, _ in items[:900]])
    dovecot.deliver_many("src", "Big/Folder", [MaildirMessage(r, f) for r, f, _ in items[900:]])
    spw, dpw = tmp_path / "s.pw", tmp_path / "d.pw"
    spw.write_text("srcpass")
    dpw.write_text("dstpass")
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
        str(spw),
        "--dest-password-file",
        str(dpw),
        "--ca-file",
        str(dovecot.ca_file),
        "--state",
        str(tmp_path / "state.sqlite"),
        "--connections",
        "1",
    ]
    kills = 0
    # Killed at points of the copy (messages in the destination's Maildir), not after
    # fixed delays: on a quiet machine the whole copy takes well under a second.
    dst_mail = dovecot.maildir("dst")
    for point in (150, 450, 750, 1050, 1350):
        p = subprocess.Popen(
            args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL
        )
        deadline = time.monotonic() + 60
        while p.poll() is None and time.monotonic() < deadline:
            if _stored(dst_mail) >= point:
                break
            time.sleep(0.002)
        if p.poll() is None:
            os.kill(p.pid, signal.SIGKILL)
            kills += 1
        p.wait()
    assert kills >= 2, "the transfer finished too fast to be interrupted"
    r = subprocess.run(args, capture_output=True, text=True, timeout=300, stdin=subprocess.DEVNULL)
    assert r.returncode == 0, r.stderr
    assert_exact(dovecot, dovecot)


@pytest.mark.parametrize(
    ("case", "expect"),
    [
        ("wrong-password", "refused the login for 'src'"),
        ("closed-port", "cannot connect to 127.0.0.1"),
        ("bad-certificate", "certificate verification failed"),
        ("bad-url", "is not a valid host name"),
        ("password-in-url", "do not put the password in the URL"),
        ("no-password", "no password for the source account"),
    ],
)
def test_bad_inputs_exit_2_with_a_clear_message(dovecot, tmp_path, case, expect):
    populate(dovecot)
    import socket

    spw, dpw = tmp_path / "s.pw", tmp_path / "d.pw"
    spw.write_text("wrong" if case == "wrong-password" else "srcpass")
    dpw.write_text("dstpass")
    src = f"imap://src@127.0.0.1:{dovecot.port}"
    dst = f"imap://dst@127.0.0.1:{dovecot.port}"
    extra = ["--ca-file", str(dovecot.ca_file)]
    pwargs = ["--source-password-file", str(spw), "--dest-password-file", str(dpw)]
    if case == "closed-port":
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
        s.close()
        src = f"imap://src@127.0.0.1:{port}"
    elif case == "bad-certificate":
        src = f"imaps://src@127.0.0.1:{dovecot.tls_port}"
        extra = []
    elif case == "bad-url":
        src = "imap://src@bad_host!:143"
    elif case == "password-in-url":
        src = f"imap://src:secret@127.0.0.1:{dovecot.port}"
    elif case == "no-password":
        pwargs = ["--dest-password-file", str(dpw)]
    env = {k: v for k, v in os.environ.items() if not k.startswith("YIPPIEMOVE_")}
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "yippiemove.cli",
            "move",
            "--source",
            src,
            "--dest",
            dst,
            "--state",
            str(tmp_path / "st.sqlite"),
            *pwargs,
            *extra,
        ],
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
        env=env,
    )
    assert r.returncode == 2, (r.stdout, r.stderr)
    assert expect in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert "srcpass" not in r.stderr and "secret" not in r.stderr
    assert "Traceback" not in r.stderr


def test_password_from_environment_and_imaps(dovecot, tmp_path):
    populate(dovecot)
    env = dict(os.environ, YIPPIEMOVE_SOURCE_PASSWORD="srcpass", YIPPIEMOVE_DEST_PASSWORD="dstpass")
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "yippiemove.cli",
            "move",
            "--source",
            f"imaps://src@127.0.0.1:{dovecot.tls_port}",
            "--dest",
            f"imap://dst@127.0.0.1:{dovecot.port}",
            "--ca-file",
            str(dovecot.ca_file),
            "--state",
            str(tmp_path / "st.sqlite"),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        stdin=subprocess.DEVNULL,
        env=env,
    )
    assert r.returncode == 0, r.stderr
    assert_exact(dovecot, dovecot)


def test_destination_without_literal_plus_or_multiappend(dovecot, dovecot_factory, tmp_path):
    """Synchronizing literals and one APPEND per message still give an exact copy."""
    populate(dovecot)
    plain = dovecot_factory(
        users={"dst": "dstpass"},
        extra_config="imap_capability = IMAP4rev1 SASL-IR ID ENABLE IDLE NAMESPACE UIDPLUS CHILDREN\n",
    )
    c = mailcheck.connect(plain.port, "dst", "dstpass")
    caps = set(c.capabilities)
    c.logout()
    assert "LITERAL+" not in caps and "MULTIAPPEND" not in caps, caps
    r = mailcheck.run_move(
        dovecot.port,
        plain.port,
        tmp_path,
        "--report",
        str(tmp_path / "r.json"),
        ca_file=dovecot.ca_file,
    )
    assert r.returncode == 0, r.stderr
    assert_exact(dovecot, plain)


def test_sync_literals_of_every_size_into_a_destination_without_literal_plus(
    dovecot, dovecot_factory, tmp_path
):
    """Synchronizing literals from a few bytes to over a megabyte (written in slices
    after the ``+``), several folder workers, one APPEND per message: exact, and a
    second run copies nothing."""
    from yippiemove.testing.dovecot import MaildirMessage

    rng = random.Random(13)
    sizes = [0, 10, 4000, 70_000, 300_000, 1_300_000]
    for folder in ("INBOX", "Archive"):
        dovecot.deliver_many(
            "src",
            folder,
            [
                MaildirMessage(make_message(i, size=rng.choice(sizes)), ("\\Seen", "$label1"))
                for i in range(60)
            ],
        )
    plain = dovecot_factory(
        users={"dst": "dstpass"},
        extra_config="imap_capability = IMAP4rev1 SASL-IR ID ENABLE IDLE NAMESPACE UIDPLUS\n",
    )
    for _ in range(2):
        r = mailcheck.run_move(
            dovecot.port, plain.port, tmp_path, "--connections=2", ca_file=dovecot.ca_file
        )
        assert r.returncode == 0, r.stderr
        assert_exact(dovecot, plain)
    assert "120 already there" in r.stdout + r.stderr, r.stdout + r.stderr


def test_subscriptions_are_carried(dovecot, tmp_path):
    populate(dovecot)
    c = mailcheck.connect(dovecot.port, "src", "srcpass")
    c.unsubscribe(enc("R&D"))
    _typ, subs = c.lsub('""', "*")
    c.logout()
    src_subs = {line.rsplit(b" ", 1)[-1].strip(b'"').decode() for line in subs if line}
    assert enc("R&D") not in src_subs and "Sent" in src_subs
    assert move(dovecot, tmp_path).returncode == 0
    c = mailcheck.connect(dovecot.port, "dst", "dstpass")
    _typ, subs = c.lsub('""', "*")
    c.logout()
    dst_subs = {line.rsplit(b" ", 1)[-1].strip(b'"').decode() for line in subs if line}
    assert "Sent" in dst_subs and enc(NESTED) in dst_subs
    assert enc("R&D") not in dst_subs


def test_ctrl_c_stops_cleanly_and_resumes(dovecot, tmp_path):
    from yippiemove.testing.dovecot import MaildirMessage

    rng = random.Random(5)
    dovecot.deliver_many(
        "src",
        "INBOX",
        [
            MaildirMessage(make_message(i, size=rng.choice((500, 50000, 300000))))
            for i in range(1200)
        ],
    )
    spw, dpw = tmp_path / "s.pw", tmp_path / "d.pw"
    spw.write_text("srcpass")
    dpw.write_text("dstpass")
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
        str(spw),
        "--dest-password-file",
        str(dpw),
        "--ca-file",
        str(dovecot.ca_file),
        "--state",
        str(tmp_path / "state.sqlite"),
        "--report",
        str(tmp_path / "r.json"),
        "--connections",
        "1",
    ]
    p = subprocess.Popen(
        args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, stdin=subprocess.DEVNULL
    )
    # Interrupted once copying is well under way (the destination's Maildir has 500 of
    # the 1,200 messages: Dovecot writes them before the mover reads its answer, and up
    # to three APPEND groups are in flight), not after a fixed time: the copy can take
    # well under a second here.
    dst_mail = dovecot.maildir("dst")
    deadline = time.monotonic() + 60
    while p.poll() is None and time.monotonic() < deadline:
        stored = sum(1 for d in ("new", "cur") for _ in (dst_mail / d).glob("*"))
        if stored >= 500:
            break
        time.sleep(0.005)
    p.send_signal(signal.SIGINT)
    _out, err = p.communicate(timeout=60)
    if p.returncode == 0:
        pytest.fail("the transfer finished before it could be interrupted")
    assert p.returncode == 2, err
    assert "interrupted; run the same command again to resume" in err
    assert "Traceback" not in err
    rep = json.loads((tmp_path / "r.json").read_text())
    assert rep["status"] == "aborted"
    assert 0 < rep["progress"]["messages_done"] < 1200
    r = subprocess.run(args, capture_output=True, text=True, timeout=300, stdin=subprocess.DEVNULL)
    assert r.returncode == 0, r.stderr
    assert_exact(dovecot, dovecot)


def test_folder_name_the_destination_refuses_is_mapped_and_reported(
    dovecot, dovecot_factory, tmp_path
):
    """Dovecot's fs layout refuses a folder called "tmp" (a Maildir subdirectory name)."""
    src = dovecot_factory(separator=".", users={"src": "srcpass"})
    src.deliver("src", "tmp", make_message(1), ("\\Seen",))
    src.deliver("src", "INBOX", make_message(2))
    report = tmp_path / "r.json"
    r = mailcheck.run_move(
        src.port, dovecot.port, tmp_path, "--report", str(report), ca_file=src.ca_file
    )
    assert r.returncode == 0, r.stderr + r.stdout
    rep = json.loads(report.read_text())
    plan = {f["source"]: f for f in rep["plan"]["folders"]}
    assert plan["tmp"]["dest"] == "tmp_"
    assert any("refused the name 'tmp'" in why for why in plan["tmp"]["reasons"])
    dst = mailcheck.snapshot(dovecot.port, "dst", "dstpass")
    srcsnap = mailcheck.snapshot(src.port, "src", "srcpass")
    assert dst["tmp_"] == srcsnap["tmp"]


@pytest.mark.source_writes("the test deletes a source folder after the planning")
def test_source_folder_deleted_after_planning_is_reported(dovecot, tmp_path, monkeypatch):
    """A folder that vanishes mid-run fails alone; the other folders are copied."""
    populate(dovecot)
    import asyncio

    from yippiemove.transfer import engine
    from yippiemove.transfer.model import Endpoint, Options

    original = engine.Mover.make_plan

    async def plan_then_delete(self, src, dst):
        plan = await original(self, src, dst)
        c = mailcheck.connect(dovecot.port, "src", "srcpass")
        assert c.delete(enc("R&D"))[0] == "OK"
        c.logout()
        return plan

    monkeypatch.setattr(engine.Mover, "make_plan", plan_then_delete)

    def ep(user, pw):
        return Endpoint("127.0.0.1", dovecot.port, user, "none", pw, allow_insecure_auth=True)

    mover = engine.Mover(ep("src", "srcpass"), ep("dst", "dstpass"), options=Options())
    results = asyncio.run(mover.run())
    by = {r.source: r for r in results}
    assert "cannot be opened" in by["R&D"].error
    assert by["R&D"].failed == 8
    assert by["INBOX"].error is None and by["INBOX"].copied == 14


@pytest.mark.parametrize("how", ["appendlimit", "quota"])
def test_messages_the_destination_refuses_are_reported_and_the_rest_goes_on(
    dovecot, dovecot_factory, tmp_path, how
):
    small = [make_message(i, size=100) for i in range(5)]
    big = [make_message(100 + i, size=20000) for i in range(2)]
    for raw in small[:3] + big[:1] + small[3:] + big[1:]:
        dovecot.deliver("src", "INBOX", raw)
    if how == "appendlimit":
        dest = dovecot_factory(
            users={"dst": "dstpass"}, extra_config="imap_capability = +APPENDLIMIT=10000\n"
        )
    else:
        dest = dovecot_factory(users={"dst": "dstpass"}, max_message_size=10000)
    report = tmp_path / "r.json"
    r = mailcheck.run_move(
        dovecot.port, dest.port, tmp_path, "--report", str(report), ca_file=dovecot.ca_file
    )
    assert r.returncode == 1, r.stderr + r.stdout
    rep = json.loads(report.read_text())
    assert rep["totals"]["failed"] == 2
    assert rep["totals"]["copied"] == 5
    for f in rep["failures"]:
        assert f["size"] > 10000
        assert f["message_id"].startswith("<msg10")
        assert ("APPENDLIMIT=10000" if how == "appendlimit" else "destination refused it") in f[
            "reason"
        ]
    assert "FAILED UID" in r.stdout
    dst = mailcheck.snapshot(dest.port, "dst", "dstpass")
    assert sum(dst["INBOX"].values()) == 5
    # A re-run retries only the refused ones, and still copies nothing twice.
    r2 = mailcheck.run_move(
        dovecot.port, dest.port, tmp_path, "--report", str(report), ca_file=dovecot.ca_file
    )
    assert r2.returncode == 1
    assert json.loads(report.read_text())["totals"]["copied"] == 0
    assert sum(mailcheck.snapshot(dest.port, "dst", "dstpass")["INBOX"].values()) == 5
