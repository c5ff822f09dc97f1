"""Undo a transfer: remove from the destination exactly the messages a job appended.

What a job appended is what its state file (transfer/state.py) says it appended: rows
with outcome ``copied`` and a destination UID (from APPENDUID, RFC 4315).  Nothing else
is ever touched: messages that were already there (``present``), messages someone else
added since, messages stored altered (``altered``: the state cannot tell whether the job
appended them or found them), copies without a recorded UID.

Per destination folder, only while its UIDVALIDITY is the one recorded when the job
wrote there: a recreated folder gives UIDs to other messages (RFC 3501 2.3.1.1), so such
a folder is refused, saying why.  The removal is ``UID STORE +FLAGS.SILENT (\\Deleted)``
then ``UID EXPUNGE`` (UIDPLUS, RFC 4315) of exactly those UIDs -- never a plain EXPUNGE,
which would also remove the messages others marked deleted; a server without UIDPLUS is
refused.  A Gmail destination is refused (there an EXPUNGE in a folder removes a label,
not the message: undoing it needs labels the state does not hold).

:func:`preview` opens the destination read-only (EXAMINE; the connection refuses every
verb that could change a mailbox), :func:`apply` opens it for writing.  Neither ever
connects to the source: they are given the destination's endpoint only.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ..imap.client import ImapClient
from ..imap.gmail import CAPABILITY as GMAIL_CAPABILITY
from ..imap.protocol import format_uid_set
from .model import Endpoint, Outcome
from .store import connect_store

__all__ = [
    "UndoError",
    "UndoFolder",
    "UndoPlan",
    "apply",
    "preview",
    "recorded",
    "uid_set",
]

#: UIDs per UID STORE / UID EXPUNGE command (their sets stay well under 8 KB of line).
CHUNK = 500


class UndoError(Exception):
    """The undo cannot run at all (not a state file, another account, no UIDPLUS...)."""


@dataclass
class UndoFolder:
    """One destination folder: what the job appended there, what is still there, what
    was removed, or why it is refused."""

    dest_name: str
    sources: list[str]
    uidvalidity: int | None  # recorded when the job wrote there
    uids: list[int]  # destination UIDs the job appended (recorded)
    current_uidvalidity: int | None = None
    present: int = 0  # of ``uids``, still in the folder now
    removed: int = 0  # removed by :func:`apply`
    removed_uids: list[int] = field(default_factory=list)
    refused: str | None = None

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["recorded"] = len(self.uids)
        del d["uids"]
        return d


@dataclass
class UndoPlan:
    """Per destination folder (by name), what an undo removes; ``applied`` after
    :func:`apply`."""

    dest: str
    folders: list[UndoFolder]
    left_altered: int = 0  # stored altered: left in place (module doc)
    left_without_uid: int = 0  # copied without APPENDUID: left in place
    applied: bool = False

    @property
    def to_remove(self) -> int:
        return sum(f.present for f in self.folders if f.refused is None)

    @property
    def removed(self) -> int:
        return sum(f.removed for f in self.folders)

    @property
    def refused(self) -> int:
        return sum(1 for f in self.folders if f.refused is not None)

    def as_dict(self) -> dict[str, Any]:
        return {
            "dest": self.dest,
            "applied": self.applied,
            "to_remove": self.to_remove,
            "removed": self.removed,
            "folders_refused": self.refused,
            "left_altered": self.left_altered,
            "left_without_uid": self.left_without_uid,
            "folders": [f.as_dict() for f in self.folders],
        }


def uid_set(uids: Iterable[int]) -> str:
    """``1:3,7,9:10``: a UID set of ascending ranges (empty for no UIDs)."""
    unique = sorted(set(uids))
    return format_uid_set(unique) if unique else ""


def recorded(state_path: Path) -> UndoPlan:
    """What the state file says the job appended, per destination folder (no server
    asked).  The file is opened read-only; raises :class:`UndoError`."""
    if not state_path.is_file():
        raise UndoError(f"no state file at {state_path}")
    try:
        db = sqlite3.connect(f"{state_path.resolve().as_uri()}?mode=ro", uri=True)
    except sqlite3.Error as exc:
        raise UndoError(f"cannot open the state file {state_path}: {exc}") from None
    try:
        meta = dict(db.execute("SELECT key, value FROM meta").fetchall())
        rows = db.execute(
            "SELECT f.source_name, f.dest_name, f.dest_uidvalidity, m.dest_uid, m.outcome "
            "FROM messages m JOIN folders f ON f.id = m.folder_id "
            "ORDER BY f.dest_name, f.source_name, m.dest_uid"
        ).fetchall()
    except sqlite3.Error as exc:
        raise UndoError(f"{state_path} is not a yippiemove state file: {exc}") from None
    finally:
        db.close()
    plan = UndoPlan(dest=str(meta.get("dest", "")), folders=[])
    by_name: dict[str, UndoFolder] = {}
    for source, dest, validity, duid, outcome in rows:
        if outcome == Outcome.ALTERED and duid is not None:
            plan.left_altered += 1
            continue
        if outcome != Outcome.COPIED or dest is None:
            continue
        if duid is None:
            plan.left_without_uid += 1
            continue
        f = by_name.get(dest)
        if f is None:
            f = by_name[dest] = UndoFolder(dest, [], validity, [])
            plan.folders.append(f)
        if source not in f.sources:
            f.sources.append(source)
        if f.uidvalidity != validity:  # two source folders merged, the folder recreated
            f.refused = (
                "the job wrote into it under two UIDVALIDITY values (the folder was "
                "recreated during the job): its UIDs cannot be trusted"
            )
        f.uids.append(int(duid))
    return plan


async def _open(ep: Endpoint, *, read_only: bool, timeout: float) -> ImapClient:
    store = await connect_store(
        ep, "destination", connect_timeout=timeout, idle_timeout=timeout, read_only=read_only
    )
    if GMAIL_CAPABILITY in store.capabilities:
        await store.logout()
        raise UndoError(
            "the destination is Gmail: there a message removed from a folder only loses "
            "that label; undo does not support Gmail destinations"
        )
    if not read_only and not store.has("UIDPLUS"):
        await store.logout()
        raise UndoError(
            "the destination server does not support UIDPLUS (RFC 4315): without "
            "UID EXPUNGE it cannot remove exactly the job's messages without also "
            "removing others marked deleted, so nothing was removed"
        )
    return store


def _check_dest(plan: UndoPlan, ep: Endpoint) -> None:
    if plan.dest and plan.dest != ep.label:
        raise UndoError(
            f"this state file is of a transfer into {plan.dest}, not {ep.label}: nothing "
            "was touched"
        )


async def _folders(client: ImapClient) -> dict[str, bytes]:
    return {m.name: m.raw for m in await client.list_mailboxes() if m.selectable}


async def _survey(
    client: ImapClient, f: UndoFolder, raws: dict[str, bytes], *, readonly: bool
) -> list[int]:
    """Select ``f``: its UIDVALIDITY now, and which recorded UIDs are still there (set
    ``refused`` and return none when the folder may not be touched)."""
    raw = raws.get(f.dest_name)
    if raw is None:
        f.refused = "the folder is no longer on the destination"
        return []
    info = await client.select(raw, readonly=readonly)
    f.current_uidvalidity = info.uidvalidity
    if info.uidvalidity != f.uidvalidity:
        f.refused = (
            f"its UIDVALIDITY changed ({f.uidvalidity} when the job wrote there, "
            f"{info.uidvalidity} now): the folder was recreated, so its UIDs now name "
            "other messages"
        )
        return []
    if not readonly and not info.can_store("\\Deleted"):
        f.refused = "the server does not let the \\Deleted flag be set in this folder"
        return []
    there = await _still_there(client, f.uids)
    f.present = len(there)
    return there


async def _still_there(client: ImapClient, uids: Sequence[int]) -> list[int]:
    found: list[int] = []
    ordered = sorted(uids)
    for i in range(0, len(ordered), CHUNK):
        found += await client.uid_search([b"UID", uid_set(ordered[i : i + CHUNK]).encode()])
    return sorted(set(found) & set(uids))  # a server may answer the highest UID for "N:*"


async def preview(state_path: Path, ep: Endpoint, *, timeout: float = 60.0) -> UndoPlan:
    """What an undo would remove, per folder: read-only (EXAMINE), changes nothing."""
    plan = recorded(state_path)
    _check_dest(plan, ep)
    if not plan.folders:
        return plan
    client = await _open(ep, read_only=True, timeout=timeout)
    try:
        raws = await _folders(client)
        for f in plan.folders:
            if f.refused is None:
                await _survey(client, f, raws, readonly=True)
    finally:
        await client.logout()
    return plan


async def apply(state_path: Path, ep: Endpoint, *, timeout: float = 60.0) -> UndoPlan:
    """Remove the job's messages (module doc); the plan says what was removed, per folder."""
    plan = recorded(state_path)
    _check_dest(plan, ep)
    plan.applied = True
    if not plan.folders:
        return plan
    client = await _open(ep, read_only=False, timeout=timeout)
    try:
        raws = await _folders(client)
        for f in plan.folders:
            if f.refused is not None:
                continue
            targets = await _survey(client, f, raws, readonly=False)  # SELECTs it
            for i in range(0, len(targets), CHUNK):
                chunk = uid_set(targets[i : i + CHUNK]).encode()
                await client.conn.execute("UID STORE", chunk, b"+FLAGS.SILENT", b"(\\Deleted)")
                await client.conn.execute("UID EXPUNGE", chunk)
            left = set(await _still_there(client, targets))
            f.removed_uids = [u for u in targets if u not in left]
            f.removed = len(f.removed_uids)
    finally:
        await client.logout()
    return plan


def forget_removed(state_path: Path, plan: UndoPlan) -> None:
    """Drop the state rows of the removed messages: a later run copies them again, and
    no later undo names their (now free) UIDs."""
    removed = {(f.dest_name, u) for f in plan.folders for u in f.removed_uids}
    if not removed:
        return
    db = sqlite3.connect(state_path)
    try:
        with db:
            rows = db.execute(
                "SELECT m.folder_id, m.source_uid, f.dest_name, m.dest_uid FROM messages m "
                "JOIN folders f ON f.id = m.folder_id WHERE m.outcome = ?",
                (str(Outcome.COPIED),),
            ).fetchall()
            gone = [(fid, suid) for fid, suid, dn, du in rows if (dn, du) in removed]
            db.executemany("DELETE FROM messages WHERE folder_id=? AND source_uid=?", gone)
    finally:
        db.close()
