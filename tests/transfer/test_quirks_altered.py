"""Issue 13, bug 2: a destination that changes bytes when it stores them (the quirk
server's ``store_lf`` and ``replace_8bit_headers``), end to end with `yippiemove move`.

Dovecot is the source.  Every message is on the destination as the server stores it
(``Quirks.stored``: the judge here is the quirk server's own store, byte for byte), the
run says "stored, altered by the server (what changed)" and exits 0; a re-run with the
state, without it, and after ``kill -9`` appends nothing.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from tests.doubles.quirky import QuirkyServer
from tests.transfer import test_quirks
from tests.transfer.test_cross_server import load_dovecot, message
from tests.transfer.test_quirks import QPW, dovecot_mail, move, ok, report

quirky = test_quirks.quirky  # the fixture

LF = "line endings CRLF -> LF"
Q8 = "8-bit header bytes replaced by '?'"


def stored_all(srv: QuirkyServer, user: str = "dst") -> Counter[bytes]:
    return Counter(m.raw for f in srv.folders(user) for m in srv.messages(user, f))


def expected(srv: QuirkyServer, mail: list) -> Counter[bytes]:
    return Counter(srv.quirks.stored(raw) for _, raw, _, _ in mail)


def appends(srv: QuirkyServer, user: str = "dst") -> int:
    return sum(1 for c in srv.commands(user) if c.upper().startswith(b"APPEND"))


def altered_kinds(rep: dict[str, Any]) -> Counter[str]:
    return Counter(a["what"] for a in rep["altered_messages"])


def has_8bit_header(raw: bytes) -> bool:
    return not raw.split(b"\r\n\r\n", 1)[0].isascii()


@pytest.mark.parametrize(
    "quirks",
    [
        {"store_lf": True},
        {"replace_8bit_headers": True},
        {"store_lf": True, "replace_8bit_headers": True},
        {"store_lf": True, "uidplus": False, "multiappend": False},
    ],
    ids=["lf", "8bit", "both", "lf-no-uidplus"],
)
def test_altered_by_the_server_then_reruns_append_nothing(dovecot, quirky, tmp_path, quirks):
    mail = dovecot_mail()
    load_dovecot(dovecot, mail)
    srv = quirky(**quirks)
    r = move(dovecot.port, srv.port, tmp_path, dst_pw=QPW)
    ok(r)  # exit 0: every message is there
    want = expected(srv, mail)
    assert stored_all(srv) == want
    rep = report(tmp_path)
    t = rep["totals"]
    assert t["failed"] == 0 and t["copied"] == len(mail)
    eight = sum(1 for _, raw, _, _ in mail if has_8bit_header(raw))
    if quirks.get("store_lf") and not quirks.get("replace_8bit_headers"):
        assert altered_kinds(rep) == {LF: len(mail)}
    elif quirks == {"replace_8bit_headers": True}:
        assert altered_kinds(rep) == {Q8: eight} and t["verified"] == len(mail) - eight
    else:
        assert altered_kinds(rep) == {LF: len(mail) - eight, f"{Q8}, {LF}": eight}
    assert t["altered"] == sum(altered_kinds(rep).values())
    assert "ALTERED" in r.stdout and "stored, altered by the server" in r.stdout
    assert "FAILED" not in r.stdout
    n = appends(srv)

    for keep_state in (True, False, False):
        if not keep_state:
            (tmp_path / "state.sqlite").unlink()
        r = move(dovecot.port, srv.port, tmp_path, dst_pw=QPW)
        ok(r)
        assert appends(srv) == n  # no re-run appends anything
        assert stored_all(srv) == want
        rep2 = report(tmp_path)
        t2 = rep2["totals"]
        assert (t2["copied"], t2["already_present"], t2["failed"]) == (0, len(mail), 0)
        assert altered_kinds(rep2) == altered_kinds(rep)


def move_args(src_port: int, dst_port: int, tmp: Path) -> list[str]:
    (tmp / "s.pw").write_text("srcpass\n")
    (tmp / "d.pw").write_text(QPW + "\n")
    return [
        sys.executable,
        "-m",
        "yippiemove.cli",
        "move",
        "--source",
        f"imap://src@127.0.0.1:{src_port}",
        "--dest",
        f"imap://dst@127.0.0.1:{dst_port}",
        "--source-password-file",
        str(tmp / "s.pw"),
        "--dest-password-file",
        str(tmp / "d.pw"),
        "--no-starttls",
        "--state",
        str(tmp / "state.sqlite"),
        "--report",
        str(tmp / "report.json"),
    ]


@pytest.mark.parametrize("keep_state", [True, False], ids=["state", "no-state"])
def test_kill_9_mid_run_then_rerun_appends_no_second_copy(dovecot, quirky, tmp_path, keep_state):
    """Killed mid-copy (some rows committed as "copied", the rest lost), then run again
    with that state file or without one: every message once, reported altered."""
    mail = dovecot_mail()
    day = mail[-1][3]
    mail += [("INBOX", message(2000 + i), (), day) for i in range(80)]
    load_dovecot(dovecot, mail)
    # One message per APPEND, each waiting 30 ms for its continuation: a slow copy.
    srv = quirky(store_lf=True, literal_plus=False, multiappend=False, sync_literal_delay=0.03)
    args = move_args(dovecot.port, srv.port, tmp_path)
    p = subprocess.Popen(
        args, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    deadline = time.monotonic() + 60
    try:
        # past the state's first commit (every second) and well before the end
        while sum(stored_all(srv).values()) < 60 and time.monotonic() < deadline:
            if p.poll() is not None:
                break
            time.sleep(0.01)
    finally:
        if p.poll() is None:
            os.kill(p.pid, signal.SIGKILL)
        p.wait()
    assert p.returncode == -signal.SIGKILL, "the run ended before it was killed"
    there = sum(stored_all(srv).values())
    assert 0 < there < len(mail)
    db = sqlite3.connect(tmp_path / "state.sqlite", isolation_level=None)
    rows = dict(db.execute("SELECT outcome, count(*) FROM messages GROUP BY outcome").fetchall())
    # some committed as the copy wrote them ("copied": never judged by the verify)
    assert rows.get("copied", 0) > 5, rows
    # and, as when the kill comes between two commits, the latest rows lost
    db.execute(
        "DELETE FROM messages WHERE outcome='copied' AND source_uid IN (SELECT source_uid "
        "FROM messages WHERE outcome='copied' ORDER BY source_uid DESC LIMIT 5)"
    )
    db.close()
    if not keep_state:
        (tmp_path / "state.sqlite").unlink()
    ok(move(dovecot.port, srv.port, tmp_path, dst_pw=QPW))
    assert stored_all(srv) == expected(srv, mail)  # every message once
    rep = report(tmp_path)
    t = rep["totals"]
    assert t["failed"] == 0 and t["copied"] == len(mail) - there
    assert t["already_present"] == there
    assert altered_kinds(rep) == {LF: len(mail)}
