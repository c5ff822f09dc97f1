"""`yippiemove undo` end to end on a real Dovecot, judged by imaplib (tests/mailcheck.py):
exactly the messages the job appended are removed, nothing else; a recreated folder is
refused; the dry run changes nothing; a server without UIDPLUS is refused."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

import pytest

from tests import mailcheck
from yippiemove.imap import utf7
from yippiemove.transfer import undo
from yippiemove.transfer.model import Endpoint

from .test_move import make_message, populate


def _undo(port: int, tmp: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    pw = tmp / "undo.pw"
    pw.write_text("dstpass\n")
    args = [
        sys.executable, "-m", "yippiemove.cli", "undo",
        "--state", str(tmp / "state.sqlite"),
        "--dest", f"imap://dst@127.0.0.1:{port}",
        "--dest-password-file", str(pw),
        "--no-starttls", "--allow-insecure-auth",
        *extra,
    ]  # fmt: skip
    return subprocess.run(args, capture_output=True, text=True, timeout=120)


def _moved(dovecot, tmp: Path) -> dict[str, Counter[mailcheck.Msg]]:
    """A job copies src into a destination that already had mail; the destination's
    snapshot before the job."""
    populate(dovecot)
    twin = make_message(1000)  # src has it twice: one is already there, one is copied
    when = datetime(2010, 5, 5, tzinfo=UTC)
    dovecot.deliver("dst", "INBOX", twin, ("\\Seen",), when)
    dovecot.deliver("dst", "INBOX", make_message(7001, body=b"mine"), (), when)
    dovecot.deliver("dst", "Kept", make_message(7002, body=b"kept"), ("\\Flagged",), when)
    before = mailcheck.snapshot(dovecot.port, "dst", "dstpass")
    r = mailcheck.run_move(dovecot.port, dovecot.port, tmp, "--no-starttls",
                           "--allow-insecure-auth")  # fmt: skip
    assert r.returncode == 0, r.stderr
    return before


def test_undo_removes_exactly_what_the_job_appended(dovecot, tmp_path):
    before = _moved(dovecot, tmp_path)
    after_job = mailcheck.snapshot(dovecot.port, "dst", "dstpass")
    appended = sum(mailcheck.everything(after_job).values()) - sum(
        mailcheck.everything(before).values()
    )
    assert appended > 40

    # The dry run (the default) says how many per folder and changes nothing.
    dry = _undo(dovecot.port, tmp_path, "--report", str(tmp_path / "dry.json"))
    assert dry.returncode == 0, dry.stderr
    assert "nothing was changed" in dry.stdout
    assert mailcheck.snapshot(dovecot.port, "dst", "dstpass") == after_job
    report = json.loads((tmp_path / "dry.json").read_text())
    assert report["applied"] is False and report["to_remove"] == appended
    per_folder = {f["dest_name"]: f["present"] for f in report["folders"]}
    for name, msgs in after_job.items():
        added = sum(msgs.values()) - sum(before.get(name, Counter()).values())
        assert per_folder.get(utf7.decode(name.encode()), 0) == added, name

    # After the job, someone else adds mail and marks one of their messages deleted
    # (a plain EXPUNGE would remove it too).
    c = mailcheck.connect(dovecot.port, "dst", "dstpass")
    extra = make_message(7003, body=b"later")
    assert c.append("INBOX", "(\\Seen)", None, extra)[0] == "OK"
    c.select("Kept")
    assert c.uid("STORE", "1:*", "+FLAGS", "(\\Deleted)")[0] == "OK"
    c.select("INBOX")  # where the undo works: "mine", there before the job
    typ, found = c.uid("SEARCH", "BODY", "mine")
    assert typ == "OK" and len(found[0].split()) == 1, found
    assert c.uid("STORE", found[0], "+FLAGS", "(\\Deleted)")[0] == "OK"
    c.logout()
    expected = mailcheck.snapshot(dovecot.port, "dst", "dstpass")

    done = _undo(dovecot.port, tmp_path, "--apply", "--report", str(tmp_path / "undo.json"))
    assert done.returncode == 0, done.stderr
    report = json.loads((tmp_path / "undo.json").read_text())
    assert report["applied"] is True and report["removed"] == appended
    now = mailcheck.snapshot(dovecot.port, "dst", "dstpass")
    # Back to the state before the job, plus the later mail (the folders the job created
    # stay, empty), the message marked deleted by someone else still there.
    assert now["Kept"] == expected["Kept"]  # untouched by the job, and by the undo
    for name, msgs in now.items():
        if name in ("Kept", "INBOX"):
            continue
        assert msgs == before.get(name, Counter()), name
    # INBOX: what was there before the job ("mine" now marked deleted by its owner, not
    # expunged), plus the later message.
    kept = expected["INBOX"] - after_job["INBOX"]  # the later message, "mine" re-flagged
    gone = after_job["INBOX"] - expected["INBOX"]  # "mine" as it was
    assert now["INBOX"] == before["INBOX"] - gone + kept
    assert sum(kept.values()) == 2 and sum(gone.values()) == 1

    # Once more: nothing left to remove (the state forgot what was removed).
    again = _undo(dovecot.port, tmp_path, "--apply")
    assert again.returncode == 0, again.stderr
    assert mailcheck.snapshot(dovecot.port, "dst", "dstpass") == now


def test_undo_refuses_a_recreated_folder(dovecot, tmp_path):
    before = _moved(dovecot, tmp_path)
    c = mailcheck.connect(dovecot.port, "dst", "dstpass")
    assert c.delete('"R&-D"')[0] == "OK"
    assert c.create('"R&-D"')[0] == "OK"
    for i in range(3):  # new messages under the same UIDs the job's had
        assert c.append('"R&-D"', None, None, make_message(8000 + i))[0] == "OK"
    c.logout()
    recreated = mailcheck.snapshot(dovecot.port, "dst", "dstpass")["R&-D"]

    done = _undo(dovecot.port, tmp_path, "--apply")
    assert done.returncode == 1, done.stdout + done.stderr
    assert "R&D: refused, nothing removed: its UIDVALIDITY changed" in done.stdout
    now = mailcheck.snapshot(dovecot.port, "dst", "dstpass")
    assert now["R&-D"] == recreated
    assert now["INBOX"] == before["INBOX"]


def test_undo_of_another_account_is_refused(dovecot, tmp_path):
    _moved(dovecot, tmp_path)
    ep = Endpoint("127.0.0.1", dovecot.port, "src", "none", "srcpass", allow_insecure_auth=True)
    with pytest.raises(undo.UndoError, match="not imap://src@"):
        asyncio.run(undo.apply(tmp_path / "state.sqlite", ep))


def test_uid_set():
    assert undo.uid_set([5, 1, 2, 3, 9, 10, 3]) == "1:3,5,9:10"
    assert undo.uid_set([]) == ""


def test_undo_without_uidplus_is_refused(tmp_path):
    """No UID EXPUNGE: removing only the job's messages is impossible; nothing is sent."""
    from tests.doubles.quirky import Quirks, QuirkyServer
    from yippiemove.transfer.state import State

    with QuirkyServer(users={"dst": "dstpass"}, quirks=Quirks(uidplus=False)) as srv:
        ep = Endpoint("127.0.0.1", srv.port, "dst", "none", "dstpass", allow_insecure_auth=True)
        state = State(tmp_path / "state.sqlite")
        state.set_meta("dest", ep.label)
        fid, _ = state.open_folder("INBOX", 1, "INBOX", 1)
        state.record(fid, 1, 10, None, None, 1, "copied")
        state.close()
        with pytest.raises(undo.UndoError, match="does not support UIDPLUS"):
            asyncio.run(undo.apply(tmp_path / "state.sqlite", ep))
