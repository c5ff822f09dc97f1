"""An in-memory mail server behind the engine's Store interface (transfer/store.py).

A faithful, small model of what the engine relies on: folders with UIDVALIDITY and
ascending UIDs, exact bytes, flags, INTERNALDATE, APPENDUID answers (UIDPLUS),
MULTIAPPEND all-or-nothing, ALREADYEXISTS.  It lets engine tests run in milliseconds
without a server; the real-server tests (Dovecot, Cyrus) are what prove exactness.

Every write is counted per account, so a test can check that the source was never
written.  ``alter`` makes the server store some messages changed (as some servers do).
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from yippiemove.imap.client import (
    AppendItem,
    MailboxInfo,
    MessageMeta,
    NamespaceInfo,
    SelectInfo,
    message_id_in,
)
from yippiemove.imap.connection import CommandResult
from yippiemove.imap.errors import CommandError
from yippiemove.imap.protocol import ResponseCode, Tagged, format_uid_set, parse_uid_set
from yippiemove.transfer.model import Endpoint

CAPS = frozenset({"IMAP4REV1", "UIDPLUS", "MULTIAPPEND", "NAMESPACE", "LITERAL+", "STATUS=SIZE"})
PERMANENT = ("\\Seen", "\\Answered", "\\Flagged", "\\Deleted", "\\Draft", "\\*")
_validity = itertools.count(1000)


@dataclass
class Message:
    body: bytes
    flags: tuple[str, ...]
    internaldate: bytes


@dataclass
class Folder:
    uidvalidity: int = field(default_factory=lambda: next(_validity))
    next_uid: int = 1
    messages: dict[int, Message] = field(default_factory=dict)
    attributes: frozenset[str] = frozenset()

    def add(self, msg: Message) -> int:
        uid = self.next_uid
        self.next_uid += 1
        self.messages[uid] = msg
        return uid


@dataclass
class Account:
    folders: dict[str, Folder] = field(default_factory=lambda: {"INBOX": Folder()})
    subscribed: set[str] = field(default_factory=set)
    capabilities: frozenset[str] = CAPS
    #: Commands that changed something (APPEND, STORE, CREATE, SUBSCRIBE).
    writes: int = 0
    #: Applied to every appended body (a server that changes what it stores).
    alter: Callable[[bytes], bytes] | None = None
    #: Message bodies sent out by FETCH.
    bodies_read: int = 0

    def folder(self, name: str) -> Folder:
        return self.folders[name]


class MemoryServer:
    """Accounts by user name; ``factory`` opens a :class:`MemoryStore` for the Mover."""

    def __init__(self) -> None:
        self.accounts: dict[str, Account] = {}
        self.opened = 0

    def account(self, user: str) -> Account:
        return self.accounts.setdefault(user, Account())

    async def factory(self, ep: Endpoint, role: str, on_open: Callable[[], None]) -> MemoryStore:
        on_open()
        self.opened += 1
        store = MemoryStore(self.account(ep.user))
        store.read_only = role == "source"
        return store


def _ok(code: ResponseCode | None = None) -> asyncio.Future[CommandResult]:
    fut: asyncio.Future[CommandResult] = asyncio.get_running_loop().create_future()
    fut.set_result(CommandResult(Tagged("M1", "OK", code, b"done")))
    return fut


def _no(code: str | None, text: bytes) -> Tagged:
    return Tagged("M1", "NO", ResponseCode(code) if code else None, text)


class MemoryStore:
    """One session on a :class:`MemoryServer` account (implements transfer.store.Store)."""

    def __init__(self, account: Account) -> None:
        self.account = account
        self.selected: bytes | None = None
        self._closed = False
        #: Said, not enforced here (the IMAP connection enforces it: imap/commands.py).
        self.read_only = False

    # -- the session
    @property
    def capabilities(self) -> frozenset[str]:
        return self.account.capabilities

    def has(self, cap: str) -> bool:
        return cap.upper() in self.account.capabilities

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def tls(self) -> bool:
        return False

    @property
    def greeted_in(self) -> float | None:
        return 0.0

    def wire_out(self) -> tuple[int, int]:
        return 0, 0  # in memory: everything written is there at once

    def abort(self) -> None:
        self._closed = True

    async def logout(self) -> None:
        self._closed = True

    async def submit_noop(self) -> asyncio.Future[CommandResult]:
        return _ok()

    # -- folders
    def _box(self, raw: bytes) -> Folder:
        name = raw.decode()
        name = "INBOX" if name.upper() == "INBOX" else name
        if name not in self.account.folders:
            raise CommandError("SELECT", _no("NONEXISTENT", b"no such folder"))
        return self.account.folders[name]

    async def namespace(self) -> NamespaceInfo:
        return NamespaceInfo("", "/")

    async def list_folders(self) -> list[MailboxInfo]:
        return [
            MailboxInfo(n.encode(), n, "/", f.attributes)
            for n, f in sorted(self.account.folders.items())
        ]

    async def list_subscribed(self) -> list[MailboxInfo]:
        return [
            MailboxInfo(n.encode(), n, "/", frozenset()) for n in sorted(self.account.subscribed)
        ]

    async def create(self, raw: bytes) -> None:
        self.account.writes += 1
        self.account.folders.setdefault(raw.decode(), Folder())

    async def submit_create(
        self, raw_name: bytes, special_use: str | None = None
    ) -> asyncio.Future[CommandResult]:
        if raw_name.decode() in self.account.folders:
            return _ok(ResponseCode("ALREADYEXISTS"))
        await self.create(raw_name)
        if special_use:
            attrs = frozenset({special_use.upper()})
            self.account.folders[raw_name.decode()].attributes = attrs
        return _ok()

    async def submit_subscribe(self, raw_name: bytes) -> asyncio.Future[CommandResult]:
        self.account.writes += 1
        self.account.subscribed.add(raw_name.decode())
        return _ok()

    def _info(self, box: Folder, readonly: bool) -> SelectInfo:
        return SelectInfo(
            len(box.messages), box.uidvalidity, box.next_uid, PERMANENT[:-1], PERMANENT, readonly
        )

    async def select(self, raw: bytes, *, readonly: bool = False) -> SelectInfo:
        box = self._box(raw)
        self.selected = raw
        return self._info(box, readonly)

    async def select_many(
        self, raws: Sequence[bytes], *, readonly: bool = False
    ) -> dict[bytes, SelectInfo | None]:
        out: dict[bytes, SelectInfo | None] = {}
        for raw in raws:
            try:
                out[raw] = await self.select(raw, readonly=readonly)
            except CommandError:
                out[raw] = None
        return out

    async def status_many(self, raws: Sequence[bytes], items: str) -> dict[bytes, dict[str, int]]:
        return {
            raw: {
                "MESSAGES": len(self._box(raw).messages),
                "SIZE": sum(len(m.body) for m in self._box(raw).messages.values()),
            }
            for raw in raws
        }

    # -- messages
    def _meta(self, uid: int, m: Message, message_id: bool) -> MessageMeta:
        mid = message_id_in(m.body) if message_id else None
        return MessageMeta(uid, len(m.body), m.flags, m.internaldate, mid)

    def _uids(self, uids: str) -> list[int]:
        box = self._box(self.selected or b"INBOX")
        if uids == "1:*":
            return sorted(box.messages)
        return [u for u in parse_uid_set(uids) if u in box.messages]

    async def select_and_list(
        self, raw: bytes, *, readonly: bool = False, message_id: bool = False
    ) -> tuple[SelectInfo, list[MessageMeta]]:
        info = await self.select(raw, readonly=readonly)
        return info, await self.fetch_meta(message_id=message_id)

    async def reselect_and_fetch_meta(
        self, uids: str | None
    ) -> tuple[SelectInfo, list[MessageMeta]]:
        info = await self.select(self.selected or b"INBOX")
        return info, await self.fetch_meta(uids, message_id=False) if uids else []

    async def uid_search(self, criteria: Sequence[bytes | str]) -> list[int]:
        raise NotImplementedError("the memory store has no SEARCH")

    async def fetch_meta(self, uids: str = "1:*", *, message_id: bool = True) -> list[MessageMeta]:
        box = self._box(self.selected or b"INBOX")
        return [self._meta(u, box.messages[u], message_id) for u in self._uids(uids)]

    async def fetch_sizes(self, uids: str = "1:*") -> list[tuple[int, int]]:
        return [(m.uid, m.size) for m in await self.fetch_meta(uids, message_id=False)]

    async def fetch_message_ids(self, uids: Sequence[int]) -> dict[int, bytes | None]:
        if not uids:
            return {}
        metas = await self.fetch_meta(format_uid_set(sorted(uids)))
        return {m.uid: m.message_id for m in metas}

    async def submit_fetch_bodies(
        self, uids: Sequence[int], on_body: Callable[[int, bytes], None]
    ) -> asyncio.Future[CommandResult]:
        box = self._box(self.selected or b"INBOX")
        for uid in uids:
            if uid in box.messages:
                self.account.bodies_read += 1
                on_body(uid, box.messages[uid].body)
        return _ok()

    async def submit_append(
        self, raw_mailbox: bytes, items: Sequence[AppendItem]
    ) -> asyncio.Future[CommandResult]:
        self.account.writes += 1
        box = self._box(raw_mailbox)
        alter = self.account.alter
        uids = [
            box.add(Message(alter(it.body) if alter else it.body, tuple(it.flags), it.internaldate))
            for it in items
        ]
        if "UIDPLUS" not in self.account.capabilities:
            return _ok()
        code = f"{box.uidvalidity} {format_uid_set(uids)}".encode()
        return _ok(ResponseCode("APPENDUID", code))

    async def store_flags(self, uid: int, flags: Sequence[str]) -> None:
        self.account.writes += 1
        box = self._box(self.selected or b"INBOX")
        m = box.messages[uid]
        box.messages[uid] = Message(m.body, tuple(flags), m.internaldate)
