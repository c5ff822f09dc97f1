"""The per-job state: one small sqlite3 database on local disk.

It is an accelerator and a receipt, never the only record: the engine always checks
the destination too, so a lost or stale state file cannot cause duplicates.

Tables
------
``meta``      key/value: schema version, source and destination identities (no secrets).
``folders``   one row per source folder: its name, UIDVALIDITY, the destination name and
              the destination's UIDVALIDITY when the row was written.
``messages``  one row per source message seen: source UID, size, Message-ID, content
              hash (32 bytes: SHA-256, where a decision compared it -- a possible copy
              found on the destination, a Gmail destination, ``--verify-content``; else
              16 bytes: XXH3-128, see docs/design.md), destination UID (from APPENDUID, RFC 4315) and the outcome
              (``copied``, ``present`` -- found already on the destination --,
              ``labelled`` -- a Gmail destination's message stored from another folder
              got this folder's label --, or ``failed`` with the server's words).
``gmail_messages``  Gmail destination only (transfer/gmail.py): one row per Gmail message
              the mover appended or hashed: X-GM-MSGID, fingerprint, size, INTERNALDATE
              (Unix seconds), the source folder that appended it and where (destination
              folder, UIDVALIDITY, UID).  A re-run knows these messages' content without
              downloading them; All Mail on the destination says whether they still exist.
              (Added after schema 1 shipped; ``CREATE TABLE IF NOT EXISTS`` adds it to
              older files, which stay schema 1.)

Writes are batched (:meth:`State.record` queues, :meth:`State.flush` commits), WAL
journal, ``synchronous=NORMAL``: a crash loses at most the last unflushed batch, which the
destination check recovers.  Message bodies are never written here.

A write that fails for lack of space (``SQLITE_FULL``, ``ENOSPC``; or an I/O error while
the disk is full: sqlite reports a ``-shm`` file it cannot grow that way) raises
:class:`StateError` with ``disk_full`` set and "No space left on device" in its message:
the transfer stops there, nothing in the file is damaged (the failed transaction is rolled
back, its rows stay queued), and a run once space is back resumes exactly.
"""

from __future__ import annotations

import contextlib
import errno
import os
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path

SCHEMA_VERSION = 1

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS folders (
    id INTEGER PRIMARY KEY,
    source_name TEXT NOT NULL UNIQUE,
    source_uidvalidity INTEGER,
    dest_name TEXT,
    dest_uidvalidity INTEGER,
    updated REAL
);
CREATE TABLE IF NOT EXISTS messages (
    folder_id INTEGER NOT NULL REFERENCES folders(id),
    source_uid INTEGER NOT NULL,
    size INTEGER NOT NULL,
    message_id BLOB,
    fingerprint BLOB,
    dest_uid INTEGER,
    outcome TEXT NOT NULL,
    error TEXT,
    PRIMARY KEY (folder_id, source_uid)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS gmail_messages (
    msgid TEXT PRIMARY KEY,
    fingerprint BLOB NOT NULL,
    size INTEGER NOT NULL,
    internaldate INTEGER NOT NULL,
    origin TEXT,
    dest_name TEXT,
    dest_uidvalidity INTEGER,
    dest_uid INTEGER
) WITHOUT ROWID;
"""


class StateError(Exception):
    """The state file cannot be opened or written (disk full, not a state file...).

    ``disk_full``: there was no room to write (nothing is wrong with the file: once space
    is back, a new run resumes); ``reason``: why, in a few words, without the path.
    """

    def __init__(
        self, message: str, *, path: Path | None = None, reason: str = "", disk_full: bool = False
    ) -> None:
        super().__init__(message)
        self.path = path
        self.reason = reason or message
        self.disk_full = disk_full


#: Less free space than this when sqlite reports an I/O error: the disk is full.
_NEARLY_FULL = 1 << 20


def _no_room(directory: Path) -> bool:
    try:
        st = os.statvfs(directory)
    except OSError:
        return False
    free = st.f_bfree if os.geteuid() == 0 else st.f_bavail  # root may use reserved blocks
    return free * st.f_frsize < _NEARLY_FULL


def state_error(path: Path, exc: sqlite3.Error | OSError, *, opening: bool = False) -> StateError:
    """A :class:`StateError` for a failed open or write, saying plainly when the disk is full."""
    if isinstance(exc, OSError):
        full = exc.errno in (errno.ENOSPC, errno.EDQUOT)
        words = exc.strerror or str(exc)
        reason = words
    else:
        name = getattr(exc, "sqlite_errorname", "") or ""
        words = str(exc)
        full = name == "SQLITE_FULL" or (name.startswith("SQLITE_IOERR") and _no_room(path.parent))
        reason = f"{os.strerror(errno.ENOSPC)} ({words})" if full else words
    if full:
        return StateError(
            f"cannot write the job state ({path}): {reason}. Free some space there, then "
            "run the same command again to resume",
            path=path,
            reason=reason,
            disk_full=True,
        )
    verb = "open" if opening else "write"
    return StateError(f"cannot {verb} state file {path}: {words}", path=path, reason=words)


@dataclass(frozen=True, slots=True)
class MessageRow:
    source_uid: int
    size: int
    message_id: bytes | None
    fingerprint: bytes | None
    dest_uid: int | None
    outcome: str
    error: str | None


@dataclass(frozen=True, slots=True)
class GmailRow:
    """A Gmail message the mover appended (origin = its source folder) or hashed."""

    msgid: int  # X-GM-MSGID (64 bits, unsigned: kept as text in the file)
    fingerprint: bytes
    size: int
    instant: int  # INTERNALDATE, Unix seconds
    origin: str | None = None
    dest_name: str | None = None
    dest_uidvalidity: int | None = None
    dest_uid: int | None = None


@dataclass(frozen=True, slots=True)
class FolderRow:
    id: int
    source_name: str
    source_uidvalidity: int | None
    dest_name: str | None
    dest_uidvalidity: int | None


class State:
    """One job's state database.  Not thread-safe; one engine per file."""

    def __init__(self, path: Path, *, flush_rows: int = 2000, flush_seconds: float = 1.0) -> None:
        self.path = path
        db: sqlite3.Connection | None = None
        try:
            path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            db = sqlite3.connect(path, isolation_level=None)
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")
            db.execute("PRAGMA cache_size=-8000")
            db.executescript(_SCHEMA)
            os.chmod(path, 0o600)
        except (sqlite3.DatabaseError, OSError) as exc:
            if db is not None:
                db.close()
            if isinstance(exc, OSError) and exc.errno not in (errno.ENOSPC, errno.EDQUOT):
                raise StateError(f"cannot create state file {path}: {exc.strerror}") from None
            raise state_error(path, exc, opening=True) from None
        self.db = db
        row = self.db.execute("SELECT value FROM meta WHERE key='schema'").fetchone()
        if row is None:
            self._exec("INSERT INTO meta VALUES ('schema', ?)", (str(SCHEMA_VERSION),))
        elif row[0] != str(SCHEMA_VERSION):
            raise StateError(f"state file {path} has schema {row[0]}, expected {SCHEMA_VERSION}")
        self._pending: list[tuple[object, ...]] = []
        self._pending_gmail: list[tuple[object, ...]] = []
        self._flush_rows = flush_rows
        self._flush_seconds = flush_seconds
        self._last_flush = time.monotonic()

    def _exec(self, sql: str, args: tuple[object, ...] = ()) -> sqlite3.Cursor:
        try:
            return self.db.execute(sql, args)
        except sqlite3.OperationalError as exc:
            raise state_error(self.path, exc) from None

    # ------------------------------------------------------------------ meta

    def set_meta(self, key: str, value: str) -> None:
        self._exec("INSERT OR REPLACE INTO meta VALUES (?, ?)", (key, value))

    # ------------------------------------------------------------------ folders

    def folder(self, source_name: str) -> FolderRow | None:
        row = self.db.execute(
            "SELECT id, source_name, source_uidvalidity, dest_name, dest_uidvalidity "
            "FROM folders WHERE source_name=?",
            (source_name,),
        ).fetchone()
        return None if row is None else FolderRow(*row)

    def folders(self) -> list[FolderRow]:
        rows = self.db.execute(
            "SELECT id, source_name, source_uidvalidity, dest_name, dest_uidvalidity "
            "FROM folders ORDER BY source_name"
        ).fetchall()
        return [FolderRow(*r) for r in rows]

    def open_folder(
        self, source_name: str, source_uidvalidity: int, dest_name: str, dest_uidvalidity: int
    ) -> tuple[int, bool]:
        """Register a folder pass; returns (folder id, whether old message rows still apply).

        Old rows are dropped when the source folder was recreated (its UIDVALIDITY
        changed: UIDs mean other messages now, RFC 3501 2.3.1.1); destination UIDs are
        forgotten when the destination folder's UIDVALIDITY changed.
        """
        self.flush()
        old = self.folder(source_name)
        if old is None:
            cur = self._exec(
                "INSERT INTO folders (source_name, source_uidvalidity, dest_name, "
                "dest_uidvalidity, updated) VALUES (?, ?, ?, ?, ?)",
                (source_name, source_uidvalidity, dest_name, dest_uidvalidity, time.time()),
            )
            assert cur.lastrowid is not None
            return cur.lastrowid, False
        valid = True
        self._exec("BEGIN")
        try:
            if old.source_uidvalidity != source_uidvalidity:
                self._exec("DELETE FROM messages WHERE folder_id=?", (old.id,))
                valid = False
            elif old.dest_uidvalidity != dest_uidvalidity or old.dest_name != dest_name:
                self._exec("UPDATE messages SET dest_uid=NULL WHERE folder_id=?", (old.id,))
            self._exec(
                "UPDATE folders SET source_uidvalidity=?, dest_name=?, dest_uidvalidity=?, "
                "updated=? WHERE id=?",
                (source_uidvalidity, dest_name, dest_uidvalidity, time.time(), old.id),
            )
            self._exec("COMMIT")
        except BaseException:
            if self.db.in_transaction:  # sqlite may have rolled back already (disk full)
                self.db.execute("ROLLBACK")
            raise
        return old.id, valid

    # ------------------------------------------------------------------ messages

    def messages(self, folder_id: int) -> dict[int, MessageRow]:
        self.flush()
        rows = self.db.execute(
            "SELECT source_uid, size, message_id, fingerprint, dest_uid, outcome, error "
            "FROM messages WHERE folder_id=?",
            (folder_id,),
        )
        return {r[0]: MessageRow(*r) for r in rows}

    def record(
        self,
        folder_id: int,
        source_uid: int,
        size: int,
        message_id: bytes | None,
        fingerprint: bytes | None,
        dest_uid: int | None,
        outcome: str,
        error: str | None = None,
    ) -> None:
        """Queue one message's outcome; committed in batches."""
        self._pending.append(
            (folder_id, source_uid, size, message_id, fingerprint, dest_uid, outcome, error)
        )
        if (
            len(self._pending) >= self._flush_rows
            or time.monotonic() - self._last_flush > self._flush_seconds
        ):
            self.flush()

    def flush(self) -> None:
        """Commit queued rows in one transaction."""
        self._last_flush = time.monotonic()
        if not self._pending and not self._pending_gmail:
            return
        rows, self._pending = self._pending, []
        grows, self._pending_gmail = self._pending_gmail, []
        try:
            with self.db:
                self.db.execute("BEGIN")
                if rows:
                    self.db.executemany(
                        "INSERT OR REPLACE INTO messages (folder_id, source_uid, size, "
                        "message_id, fingerprint, dest_uid, outcome, error) "
                        "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                        rows,
                    )
                if grows:
                    self.db.executemany(
                        "INSERT OR REPLACE INTO gmail_messages (msgid, fingerprint, size, "
                        "internaldate, origin, dest_name, dest_uidvalidity, dest_uid) "
                        "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                        grows,
                    )
        except sqlite3.OperationalError as exc:
            self._pending = rows + self._pending
            self._pending_gmail = grows + self._pending_gmail
            if self.db.in_transaction:  # a failed COMMIT: the next flush starts afresh
                with contextlib.suppress(sqlite3.Error):
                    self.db.rollback()
            raise state_error(self.path, exc) from None

    # ------------------------------------------------------------------ Gmail destination

    def record_gmail(self, row: GmailRow) -> None:
        """Queue what a Gmail message holds; committed in batches with the messages."""
        self._pending_gmail.append(
            (
                str(row.msgid),
                row.fingerprint,
                row.size,
                row.instant,
                row.origin,
                row.dest_name,
                row.dest_uidvalidity,
                row.dest_uid,
            )
        )
        if (
            len(self._pending) + len(self._pending_gmail) >= self._flush_rows
            or time.monotonic() - self._last_flush > self._flush_seconds
        ):
            self.flush()

    def gmail_rows(self) -> dict[int, GmailRow]:
        """Every recorded Gmail message, by X-GM-MSGID."""
        self.flush()
        rows = self.db.execute(
            "SELECT msgid, fingerprint, size, internaldate, origin, dest_name, "
            "dest_uidvalidity, dest_uid FROM gmail_messages"
        )
        out: dict[int, GmailRow] = {}
        for r in rows:
            try:
                msgid = int(r[0])
            except ValueError:
                continue
            out[msgid] = GmailRow(msgid, bytes(r[1]), *r[2:])
        return out

    def close(self) -> None:
        try:
            self.flush()
        finally:
            self.db.close()
