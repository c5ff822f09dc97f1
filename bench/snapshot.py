"""An independent view of a mailbox through the standard library's imaplib.

The same approach as the project's tests/mailcheck.py (copied, not imported, so the
benchmark does not depend on the test tree): per folder, a multiset of
(SHA-256 of the exact bytes, flags + keywords, INTERNALDATE, RFC822.SIZE).  Nothing
of the mover's own code is used.  Bodies are fetched in batches of a few MB so a
large mailbox never sits in memory as a whole.

:func:`compare` explains a difference in a few words (missing folders, missing or
extra messages, changed bytes -- with the X-TUID header mbsync adds recognised --,
lost keywords, changed system flags, changed INTERNALDATEs).
"""

from __future__ import annotations

import hashlib
import imaplib
import re
from collections import Counter
from dataclasses import dataclass, field

__all__ = ["Msg", "Snapshot", "compare", "snapshot"]

_LIST = re.compile(rb'\((?P<flags>[^)]*)\) (?:"(?P<sep>[^"]*)"|NIL) (?P<name>.+)\Z')
_ITEM = re.compile(
    rb"UID (?P<uid>\d+)|FLAGS \((?P<flags>[^)]*)\)|INTERNALDATE \"(?P<date>[^\"]+)\""
    rb"|RFC822\.SIZE (?P<size>\d+)"
)
# a header line mbsync inserts to find its APPENDed messages again
_XTUID = re.compile(rb"^X-TUID: [^\r\n]*\r\n", re.MULTILINE)
_BATCH_BYTES = 8_000_000
_BATCH_COUNT = 500


@dataclass(frozen=True, order=True)
class Msg:
    """One message as a client sees it."""

    sha: str
    flags: tuple[str, ...]
    date: str
    size: int
    #: SHA-256 with an X-TUID header line removed (equal to sha when there is none)
    sha_plain: str = field(default="", compare=False)

    def key(self) -> tuple[str, tuple[str, ...], str, int]:
        return (self.sha, self.flags, self.date, self.size)


@dataclass
class Snapshot:
    """Folder (raw mUTF-7 name) -> multiset of messages, plus totals."""

    folders: dict[str, Counter[tuple[str, tuple[str, ...], str, int]]]
    messages: dict[str, list[Msg]]
    total_messages: int = 0
    total_bytes: int = 0
    largest: int = 0


def _connect(host: str, port: int, user: str, password: str, timeout: float) -> imaplib.IMAP4:
    c = imaplib.IMAP4(host, port, timeout=timeout)
    c.login(user, password)
    return c


def _folders(c: imaplib.IMAP4) -> dict[str, set[str]]:
    """Raw (mUTF-7) folder name -> attributes."""
    typ, data = c.list('""', "*")
    if typ != "OK":
        raise RuntimeError(f"LIST failed: {data!r}")
    out: dict[str, set[str]] = {}
    for item in data:
        if isinstance(item, tuple):  # name sent as a literal
            head, lit = item
            m = _LIST.match(head.rstrip() + b" X")
            if not m:
                raise RuntimeError(f"bad LIST line {head!r}")
            out[lit.decode()] = set(m.group("flags").decode().split())
            continue
        if not isinstance(item, bytes) or item == b")":
            continue
        m = _LIST.match(item)
        if not m:
            raise RuntimeError(f"bad LIST line {item!r}")
        name = m.group("name")
        if name.startswith(b'"'):
            name = name[1:-1].replace(b'\\"', b'"').replace(b"\\\\", b"\\")
        out[name.decode()] = set(m.group("flags").decode().split())
    return out


def _quote(name: str) -> str:
    return '"' + name.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _parse_item(head: bytes) -> tuple[int, tuple[str, ...], str, int]:
    uid = size = None
    flags: tuple[str, ...] | None = None
    date = None
    for m in _ITEM.finditer(head):
        if m.group("uid"):
            uid = int(m.group("uid"))
        elif m.group("flags") is not None:
            flags = tuple(sorted(f for f in m.group("flags").decode().split() if f != "\\Recent"))
        elif m.group("date"):
            date = m.group("date").decode()
        elif m.group("size"):
            size = int(m.group("size"))
    if uid is None or flags is None or date is None or size is None:
        raise RuntimeError(f"incomplete FETCH answer {head[:200]!r}")
    return uid, flags, date, size


def _messages(c: imaplib.IMAP4, folder: str) -> list[Msg]:
    typ, data = c.select(_quote(folder), readonly=True)
    if typ != "OK":
        raise RuntimeError(f"SELECT {folder!r} failed: {data!r}")
    if int(data[0] or 0) == 0:
        return []
    typ, data = c.uid("FETCH", "1:*", "(UID RFC822.SIZE)")
    if typ != "OK":
        raise RuntimeError(f"UID FETCH sizes in {folder!r} failed: {data!r}")
    sizes: list[tuple[int, int]] = []
    for item in data:
        head = item[0] if isinstance(item, tuple) else item
        if isinstance(head, bytes):
            m_uid = re.search(rb"UID (\d+)", head)
            m_size = re.search(rb"RFC822\.SIZE (\d+)", head)
            if m_uid and m_size:
                sizes.append((int(m_uid.group(1)), int(m_size.group(1))))
    sizes.sort()
    out: list[Msg] = []
    batch: list[int] = []
    batch_bytes = 0

    def flush() -> None:
        nonlocal batch, batch_bytes
        if not batch:
            return
        uid_set = ",".join(str(u) for u in batch)
        typ, data = c.uid("FETCH", uid_set, "(UID FLAGS INTERNALDATE RFC822.SIZE BODY.PEEK[])")
        if typ != "OK":
            raise RuntimeError(f"UID FETCH in {folder!r} failed: {data!r}")
        for item in data:
            if not isinstance(item, tuple):
                continue
            head, body = item
            _uid, flags, date, size = _parse_item(head)
            sha = hashlib.sha256(body).hexdigest()
            plain = sha
            if b"X-TUID: " in body[: body.find(b"\r\n\r\n") + 2]:
                end = body.find(b"\r\n\r\n") + 2
                plain = hashlib.sha256(
                    _XTUID.sub(b"", body[:end], count=1) + body[end:]
                ).hexdigest()
            out.append(Msg(sha, flags, date, size, plain))
        batch, batch_bytes = [], 0

    for uid, size in sizes:
        batch.append(uid)
        batch_bytes += size
        if batch_bytes >= _BATCH_BYTES or len(batch) >= _BATCH_COUNT:
            flush()
    flush()
    return out


def snapshot(
    port: int, user: str, password: str, host: str = "127.0.0.1", timeout: float = 600
) -> Snapshot:
    """Every selectable folder of the account, every message's bytes hashed."""
    c = _connect(host, port, user, password, timeout)
    try:
        snap = Snapshot({}, {})
        for name, attrs in sorted(_folders(c).items()):
            if "\\Noselect" in attrs or "\\NonExistent" in attrs:
                continue
            msgs = _messages(c, name)
            snap.messages[name] = msgs
            snap.folders[name] = Counter(m.key() for m in msgs)
            snap.total_messages += len(msgs)
            snap.total_bytes += sum(m.size for m in msgs)
            snap.largest = max([snap.largest, *(m.size for m in msgs)])
        return snap
    finally:
        try:
            c.logout()
        except (OSError, imaplib.IMAP4.error):
            pass


def _system(flags: tuple[str, ...]) -> frozenset[str]:
    return frozenset(f for f in flags if f.startswith("\\"))


def _keywords(flags: tuple[str, ...]) -> frozenset[str]:
    return frozenset(f for f in flags if not f.startswith("\\"))


def _fl(flags: tuple[str, ...]) -> str:
    return "(" + " ".join(flags) + ")"


def compare(source: Snapshot, dest: Snapshot) -> tuple[bool, list[str]]:
    """(exact, reasons).  Exact: every folder holds the same multiset of
    (bytes, flags, keywords, INTERNALDATE, size).  Empty extra destination folders
    are not counted against exactness (a mover may create a parent)."""
    reasons: list[str] = []
    missing_folders = sorted(set(source.folders) - set(dest.folders))
    extra_folders = sorted(n for n in set(dest.folders) - set(source.folders) if dest.folders[n])
    if missing_folders:
        reasons.append(f"{len(missing_folders)} folders missing: {', '.join(missing_folders)}")
    if extra_folders:
        reasons.append(f"{len(extra_folders)} extra non-empty folders: {', '.join(extra_folders)}")
    missing = extra = xtuid = kw_lost = kw_other = sys_diff = date_diff = 0
    examples: dict[str, str] = {}
    for name in sorted(set(source.folders) & set(dest.folders)):
        if source.folders[name] == dest.folders[name]:
            continue
        # Pair messages by content (ignoring an added X-TUID line), then compare the rest.
        by_content: dict[str, list[Msg]] = {}
        for m in dest.messages[name]:
            by_content.setdefault(m.sha_plain, []).append(m)
        for s in source.messages[name]:
            cands = by_content.get(s.sha)
            if not cands:
                missing += 1
                examples.setdefault("missing", f"{name}: {s.size} bytes, {s.date}")
                continue
            # prefer a candidate with the same flags and date
            best = next((d for d in cands if d.flags == s.flags and d.date == s.date), cands[0])
            cands.remove(best)
            if best.sha != s.sha:
                xtuid += 1
            if best.flags != s.flags:
                if _system(best.flags) != _system(s.flags):
                    sys_diff += 1
                    examples.setdefault(
                        "system flags", f"{name}: {_fl(s.flags)} -> {_fl(best.flags)}"
                    )
                if _keywords(best.flags) != _keywords(s.flags):
                    if _keywords(best.flags) < _keywords(s.flags):
                        kw_lost += 1
                    else:
                        kw_other += 1
                    examples.setdefault("keywords", f"{name}: {_fl(s.flags)} -> {_fl(best.flags)}")
            if best.date != s.date:
                date_diff += 1
                examples.setdefault("date", f"{name}: {s.date} -> {best.date}")
        extra += sum(len(v) for v in by_content.values())
    # Messages whose bytes differ in other ways show up as missing + extra.
    if missing:
        reasons.append(f"{missing} messages missing or with changed bytes")
    if extra:
        reasons.append(f"{extra} extra messages on the destination")
    if xtuid:
        reasons.append(f"{xtuid} messages got an X-TUID header (bytes changed)")
    if kw_lost:
        reasons.append(f"{kw_lost} messages lost keywords")
    if kw_other:
        reasons.append(f"{kw_other} messages with different keywords")
    if sys_diff:
        reasons.append(f"{sys_diff} messages with different system flags")
    if date_diff:
        reasons.append(f"{date_diff} messages with a different INTERNALDATE")
    for what, ex in examples.items():
        reasons.append(f"e.g. {what}: {ex}")
    return not reasons, reasons
