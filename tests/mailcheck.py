"""An independent view of a mailbox, through the standard library's imaplib.

The mover's own code is not used here, so the tests judge the mover by what a plain
IMAP client sees on the servers: every folder, and per message its exact bytes (hashed),
flags, keywords and INTERNALDATE, counted with multiplicity.
"""

from __future__ import annotations

import hashlib
import imaplib
import re
import subprocess
import sys
from collections import Counter
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path

_LIST = re.compile(rb'\((?P<flags>[^)]*)\) (?:"(?P<sep>[^"]*)"|NIL) (?P<name>.+)\Z')
_ITEM = re.compile(
    rb"UID (?P<uid>\d+)|FLAGS \((?P<flags>[^)]*)\)|INTERNALDATE \"(?P<date>[^\"]+)\"|RFC822\.SIZE (?P<size>\d+)"
)


@dataclass(frozen=True, order=True)
class Msg:
    sha: str
    flags: tuple[str, ...]
    date: str
    size: int


def connect(port: int, user: str, password: str) -> imaplib.IMAP4:
    c = imaplib.IMAP4("127.0.0.1", port)
    c.login(user, password)
    return c


def folders(c: imaplib.IMAP4) -> dict[str, tuple[str, set[str]]]:
    """Raw (mUTF-7) folder name -> (separator, attributes)."""
    typ, data = c.list('""', "*")
    assert typ == "OK", data
    out: dict[str, tuple[str, set[str]]] = {}
    for item in data:
        if isinstance(item, tuple):  # name sent as a literal
            head, lit = item
            m = _LIST.match(head.rstrip() + b" X")
            assert m, head
            out[lit.decode()] = (
                (m.group("sep") or b"").decode(),
                set(m.group("flags").decode().split()),
            )
            continue
        if item is None or item == b")":
            continue
        m = _LIST.match(item)
        assert m, item
        name = m.group("name")
        if name.startswith(b'"'):
            name = name[1:-1].replace(b'\\"', b'"').replace(b"\\\\", b"\\")
        out[name.decode()] = (
            (m.group("sep") or b"").decode(),
            set(m.group("flags").decode().split()),
        )
    return out


def _quote(name: str) -> str:
    return '"' + name.replace("\\", "\\\\").replace('"', '\\"') + '"'


def messages(c: imaplib.IMAP4, folder: str) -> list[tuple[int, Msg, bytes]]:
    """(UID, Msg, raw bytes) of every message in a folder, in UID order."""
    typ, data = c.select(_quote(folder), readonly=True)
    assert typ == "OK", (folder, data)
    typ, data = c.uid("FETCH", "1:*", "(UID FLAGS INTERNALDATE RFC822.SIZE BODY.PEEK[])")
    assert typ == "OK", data
    out: list[tuple[int, Msg, bytes]] = []
    for item in data:
        if not isinstance(item, tuple):
            continue
        head, body = item
        uid = flags = date = size = None
        for m in _ITEM.finditer(head):
            if m.group("uid"):
                uid = int(m.group("uid"))
            elif m.group("flags") is not None:
                flags = tuple(
                    sorted(f for f in m.group("flags").decode().split() if f != "\\Recent")
                )
            elif m.group("date"):
                date = m.group("date").decode()
            elif m.group("size"):
                size = int(m.group("size"))
        assert uid is not None and flags is not None and date and size is not None, head
        out.append((uid, Msg(hashlib.sha256(body).hexdigest(), flags, date, size), body))
    out.sort()
    return out


def snapshot(port: int, user: str, password: str) -> dict[str, Counter[Msg]]:
    """Folder (raw name) -> multiset of messages."""
    c = connect(port, user, password)
    try:
        snap: dict[str, Counter[Msg]] = {}
        for name, (_sep, attrs) in folders(c).items():
            if {a.lower() for a in attrs} & {"\\noselect", "\\nonexistent"}:
                continue
            snap[name] = Counter(m for _, m, _ in messages(c, name))
        return snap
    finally:
        c.logout()


def utc_date(date: str) -> str:
    """An INTERNALDATE as the same instant in UTC, day zero-padded.

    Servers differ in how they show one instant: Dovecot in its own time zone with
    "04-Apr-2004", Cyrus in +0000 with " 4-Apr-2004" (RFC 3501 allows both).
    """
    when = datetime.strptime(date.strip(), "%d-%b-%Y %H:%M:%S %z")
    return when.astimezone(UTC).strftime("%d-%b-%Y %H:%M:%S +0000")


def in_utc(snap: dict[str, Counter[Msg]]) -> dict[str, Counter[Msg]]:
    """A snapshot with every date as :func:`utc_date`, to compare across servers."""
    out: dict[str, Counter[Msg]] = {}
    for folder, msgs in snap.items():
        out[folder] = Counter()
        for m, n in msgs.items():
            out[folder][replace(m, date=utc_date(m.date))] += n
    return out


def everything(snap: dict[str, Counter[Msg]]) -> Counter[Msg]:
    """All messages of all folders of a snapshot, as one multiset."""
    total: Counter[Msg] = Counter()
    for msgs in snap.values():
        total.update(msgs)
    return total


def uids(port: int, user: str, password: str) -> dict[str, list[int]]:
    c = connect(port, user, password)
    try:
        return {
            name: [u for u, _, _ in messages(c, name)]
            for name, (_s, attrs) in folders(c).items()
            if "\\noselect" not in {a.lower() for a in attrs}
        }
    finally:
        c.logout()


def run_move(
    source_port: int,
    dest_port: int,
    tmp: Path,
    *extra: str,
    ca_file: Path | None = None,
    source_user: str = "src",
    dest_user: str = "dst",
    source_password: str = "srcpass",
    dest_password: str = "dstpass",
    timeout: float = 300,
) -> subprocess.CompletedProcess[str]:
    """Run ``yippiemove move`` as a separate process, like a user would."""
    spw = tmp / "source.pw"
    dpw = tmp / "dest.pw"
    spw.write_text(source_password + "\n")
    dpw.write_text(dest_password + "\n")
    args = [
        sys.executable,
        "-m",
        "yippiemove.cli",
        "move",
        "--source",
        f"imap://{source_user}@127.0.0.1:{source_port}",
        "--dest",
        f"imap://{dest_user}@127.0.0.1:{dest_port}",
        "--source-password-file",
        str(spw),
        "--dest-password-file",
        str(dpw),
    ]
    if ca_file is not None:
        args += ["--ca-file", str(ca_file)]
    if "--state" not in extra:
        args += ["--state", str(tmp / "state.sqlite")]
    args += list(extra)
    return subprocess.run(
        args, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL
    )
