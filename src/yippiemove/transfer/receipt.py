"""The per-message report a person can read, from a job's state file (transfer/state.py)
and its JSON report (transfer/report.py): folders, then messages -- what was copied,
what was already there, what failed and why -- as pages of rows, and as CSV.

The state file is opened read-only.  What comes out: folder names, UIDs, sizes,
Message-IDs, outcomes and the server's words about a failure; never a message body
(the state holds none) and never a secret (it holds none either).  A Message-ID is a
header value: its bytes are shown as text with undecodable bytes replaced, for reading
only (the messages themselves are never decoded).
"""

from __future__ import annotations

import csv
import io
import sqlite3
from collections.abc import Iterator, Mapping
from dataclasses import astuple, dataclass, fields
from pathlib import Path
from typing import Any

__all__ = [
    "OUTCOMES",
    "FolderLine",
    "MessageLine",
    "Receipt",
    "ReceiptError",
    "csv_text",
    "verification_method",
]

_ALTERED = "stored altered by the server: "  # transfer/folder.py ALTERED_PREFIX

#: Outcome -> what a person reads (transfer/model.py Outcome).
OUTCOMES: dict[str, str] = {
    "copied": "Copied",
    "present": "Already there",
    "labelled": "Already there (label added)",
    "altered": "Stored changed by the server",
    "failed": "Failed",
}


class ReceiptError(Exception):
    """Not a readable state file."""


@dataclass(frozen=True, slots=True)
class FolderLine:
    source: str
    dest: str
    messages: int
    copied: int
    present: int
    altered: int
    failed: int
    bytes: int


@dataclass(frozen=True, slots=True)
class MessageLine:
    folder: str
    dest_folder: str
    source_uid: int
    size: int
    message_id: str
    outcome: str
    result: str  # the outcome in words
    dest_uid: int | None
    note: str  # why it failed, or what the server changed

    def as_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


def _text(raw: bytes | str | None) -> str:
    if raw is None:
        return ""
    if isinstance(raw, str):
        return raw
    return raw.decode("utf-8", "replace")


class Receipt:
    """A job's state file, read-only: ``with Receipt(path) as r: r.lines(0, 50)``."""

    _SELECT = (
        "SELECT f.source_name, COALESCE(f.dest_name, ''), m.source_uid, m.size, "
        "m.message_id, m.outcome, m.dest_uid, m.error FROM messages m "
        "JOIN folders f ON f.id = m.folder_id"
    )
    _ORDER = " ORDER BY f.source_name, m.source_uid"

    def __init__(self, path: Path) -> None:
        if not path.is_file():
            raise ReceiptError("no state file yet")
        try:
            self.db = sqlite3.connect(
                f"{path.resolve().as_uri()}?mode=ro", uri=True, timeout=5, check_same_thread=False
            )
            tables = {r[0] for r in self.db.execute("SELECT name FROM sqlite_master")}
        except sqlite3.Error as exc:
            raise ReceiptError(f"the state file cannot be read: {exc}") from None
        #: A state file the job created but wrote no folder into yet: nothing recorded.
        self.empty = not {"messages", "folders"} <= tables

    def __enter__(self) -> Receipt:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def close(self) -> None:
        self.db.close()

    def folders(self) -> list[FolderLine]:
        if self.empty:
            return []
        rows = self.db.execute(
            "SELECT f.source_name, COALESCE(f.dest_name, ''), COUNT(m.source_uid), "
            "SUM(m.outcome = 'copied'), SUM(m.outcome IN ('present', 'labelled')), "
            "SUM(m.outcome = 'altered'), SUM(m.outcome = 'failed'), SUM(m.size) "
            "FROM folders f LEFT JOIN messages m ON m.folder_id = f.id "
            "GROUP BY f.id ORDER BY f.source_name"
        ).fetchall()
        return [FolderLine(r[0], r[1], *(int(x or 0) for x in r[2:])) for r in rows]

    def count(self, outcome: str | None = None) -> int:
        if self.empty:
            return 0
        sql, args = "SELECT COUNT(*) FROM messages", ()
        if outcome:
            sql, args = sql + " WHERE outcome = ?", (outcome,)
        return int(self.db.execute(sql, args).fetchone()[0])

    def lines(
        self, offset: int = 0, limit: int = 100, outcome: str | None = None
    ) -> list[MessageLine]:
        """Messages in folder then UID order, ``limit`` from ``offset``."""
        if self.empty:
            return []
        where, args = ("", ()) if not outcome else (" WHERE m.outcome = ?", (outcome,))
        rows = self.db.execute(
            self._SELECT + where + self._ORDER + " LIMIT ? OFFSET ?",
            (*args, max(0, limit), max(0, offset)),
        )
        return [self._line(r) for r in rows]

    def all_lines(self) -> Iterator[MessageLine]:
        if self.empty:
            return
        for r in self.db.execute(self._SELECT + self._ORDER):
            yield self._line(r)

    @staticmethod
    def _line(r: tuple[Any, ...]) -> MessageLine:
        folder, dest, uid, size, mid, outcome, duid, error = r
        note = _text(error)
        if outcome == "altered" and note.startswith(_ALTERED):
            note = "changed by the server: " + note[len(_ALTERED) :]
        return MessageLine(
            folder,
            dest,
            int(uid),
            int(size),
            _text(mid),
            str(outcome),
            OUTCOMES.get(str(outcome), str(outcome)),
            duid,
            note,
        )


#: A spreadsheet runs a cell starting with one of these as a formula (CSV injection):
#: such a cell gets a leading apostrophe.
_FORMULA = ("=", "+", "-", "@", "\t", "\r")


def _cell(value: object) -> object:
    if isinstance(value, str) and value.startswith(_FORMULA):
        return "'" + value
    return "" if value is None else value


csv_cell = _cell  # the same guard, for the other CSVs (service/receipts.py's ledger)


def csv_text(lines: Iterator[MessageLine], *, chunk: int = 500) -> Iterator[str]:
    """The messages as CSV (a header line, then one line per message), in pieces."""
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow([f.name for f in fields(MessageLine)])
    n = 0
    for line in lines:
        w.writerow([_cell(v) for v in astuple(line)])
        n += 1
        if n % chunk == 0:
            yield buf.getvalue()
            buf.seek(0)
            buf.truncate()
    yield buf.getvalue()


def verification_method(report: Mapping[str, Any] | None) -> str:
    """How the messages were checked on the destination, in words, from the report."""
    if not report:
        return "Not verified yet: the transfer has not finished a run."
    totals = report.get("totals") or {}
    verified = int(totals.get("verified") or 0)
    content = int(totals.get("content_verified") or 0)
    if verified and content >= verified:
        return (
            "Every message was read back from the destination and its bytes compared "
            "with the source's (SHA-256)."
        )
    return (
        "Every message was checked on the destination after copying: found under its "
        "recorded UID with the same size, Message-ID, flags and date (possible "
        "duplicates were told apart by a hash of their bytes)."
    )
