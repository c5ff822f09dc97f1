"""Typed IMAP operations on top of :class:`ImapConnection`: the vocabulary the engine uses.

Each method says the IMAP verb it sends; results are frozen dataclasses named after the
RFC concept.  Mailbox names travel as the server's raw bytes (``raw``) so a source folder
is always addressed exactly as the server spelled it, plus a decoded ``name`` (modified
UTF-7, RFC 3501 5.1.3) for people and for mapping.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from . import utf7
from .commands import CommandResult
from .connection import ImapConnection
from .errors import CommandError
from .protocol import (
    MAX_NUMBER,
    AppendUid,
    FetchRun,
    Literal,
    ProtocolError,
    Untagged,
    brief,
    fetch_key,
    format_uid_set,
    quote,
)

__all__ = [
    "AppendItem",
    "ImapClient",
    "MailboxInfo",
    "MessageMeta",
    "NamespaceInfo",
    "SelectInfo",
    "decode_mailbox",
]

#: The FETCH items of a metadata listing (no body: cheap).
META_ITEMS = b"(UID RFC822.SIZE FLAGS INTERNALDATE BODY.PEEK[HEADER.FIELDS (MESSAGE-ID)])"
META_ITEMS_LIGHT = b"(UID RFC822.SIZE FLAGS INTERNALDATE)"
#: Where the answer to BODY.PEEK[HEADER.FIELDS (MESSAGE-ID)] is: FETCH items are keyed by
#: meaning (protocol.fetch_key), however the server spells the section it echoes.
META_KEY_MSGID = fetch_key("BODY.PEEK[HEADER.FIELDS (MESSAGE-ID)]")
#: ... and the answer to BODY.PEEK[] (RFC822 too).
BODY_KEY = fetch_key("BODY.PEEK[]")


@dataclass(frozen=True, slots=True)
class MailboxInfo:
    """One LIST answer (RFC 3501 7.2.2)."""

    raw: bytes
    name: str
    separator: str | None
    flags: frozenset[str]

    @property
    def selectable(self) -> bool:
        return not ({"\\NOSELECT", "\\NONEXISTENT"} & self.flags)

    @property
    def special_use(self) -> frozenset[str]:
        """RFC 6154 attributes (\\Sent, \\Trash...), upper-cased."""
        return self.flags & {
            "\\ALL",
            "\\ARCHIVE",
            "\\DRAFTS",
            "\\FLAGGED",
            "\\JUNK",
            "\\SENT",
            "\\TRASH",
        }


@dataclass(frozen=True, slots=True)
class NamespaceInfo:
    """The personal namespace (RFC 2342): prefix and hierarchy separator."""

    prefix: str
    separator: str | None


_SYSTEM_FLAGS = frozenset(("\\SEEN", "\\ANSWERED", "\\FLAGGED", "\\DELETED", "\\DRAFT"))


@dataclass(frozen=True, slots=True)
class SelectInfo:
    exists: int
    uidvalidity: int
    uidnext: int | None
    flags: tuple[str, ...]
    permanent_flags: tuple[str, ...]
    read_only: bool

    def can_store(self, flag: str) -> bool:
        """Whether a flag or keyword is kept permanently (RFC 3501 7.1, PERMANENTFLAGS)."""
        up = flag.upper()
        if up == "\\RECENT":
            return False  # set by the server only (RFC 3501 2.3.2)
        perm = {f.upper() for f in self.permanent_flags}
        if not perm:
            # Neither PERMANENTFLAGS nor FLAGS were sent: assume the system flags work.
            return up in _SYSTEM_FLAGS
        if up in perm:
            return True
        return not flag.startswith("\\") and "\\*" in perm


@dataclass(frozen=True, slots=True)
class MessageMeta:
    """What a metadata listing says about one message."""

    uid: int
    size: int
    flags: tuple[str, ...]
    internaldate: bytes
    message_id: bytes | None


@dataclass(frozen=True, slots=True)
class AppendItem:
    """One message for APPEND: exact bytes, flags and INTERNALDATE (RFC 3501 6.3.11)."""

    body: bytes
    flags: tuple[str, ...]
    internaldate: bytes | None


def parse_number(tok: object, what: str, *, low: int = 0, high: int = MAX_NUMBER) -> int:
    """A number the server sent (atom, quoted or code argument): digits only, in range;
    anything else is the server's fault (ProtocolError), never a ValueError/TypeError.
    (``int()`` alone would take " 7", "1_0", a list's TypeError, or 2**70.)"""
    raw = tok.encode("latin-1") if isinstance(tok, str) else tok
    if isinstance(raw, bytes | bytearray) and 0 < len(raw) <= 20 and raw.isdigit():
        n = int(raw)
        if low <= n <= high:
            return n
    raise ProtocolError(f"malformed {what}: {brief(tok, 40)}")


def _select_info(res: CommandResult) -> SelectInfo:
    exists = 0
    uidvalidity = 0
    uidnext: int | None = None
    flags: tuple[str, ...] = ()
    perm: tuple[str, ...] | None = None
    for u in res.untagged:
        if u.kind == "EXISTS" and u.number is not None:
            exists = parse_number(str(u.number), "EXISTS count")
        elif u.kind == "FLAGS" and u.data and isinstance(u.data[0], list):
            flags = tuple(f for f in u.data[0] if isinstance(f, str))
        elif u.kind == "OK" and u.code is not None:
            name = u.code.name
            if name == "UIDVALIDITY":
                uidvalidity = parse_number(u.code.args, "UIDVALIDITY code")
            elif name == "UIDNEXT":
                uidnext = parse_number(u.code.args, "UIDNEXT code")
            if name == "PERMANENTFLAGS":
                toks = u.code.tokens()
                if toks and isinstance(toks[0], list):
                    perm = tuple(f for f in toks[0] if isinstance(f, str))
    read_only = res.tagged.code is not None and res.tagged.code.name == "READ-ONLY"
    # RFC 3501 7.1: without PERMANENTFLAGS, all FLAGS can be changed permanently.
    return SelectInfo(
        exists, uidvalidity, uidnext, flags, perm if perm is not None else flags, read_only
    )


class _MetaCollector:
    """FETCH handler of a metadata listing: per response, or a whole run at once."""

    __slots__ = ("out",)

    def __init__(self, out: list[MessageMeta]) -> None:
        self.out = out

    def __call__(self, u: Untagged) -> None:
        if u.kind == "FETCH":
            item = u.data[0]
            if "UID" in item and "RFC822.SIZE" in item:
                self.out.append(parse_meta(item))

    def on_run(self, run: FetchRun) -> None:
        if run.shape != "meta":
            for u in run.untagged():
                self(u)
            return
        append = self.out.append
        for _n, uid, size, raw_flags, date in run.rows:
            append(MessageMeta(uid, size, _flags_of(raw_flags), date, None))


def _meta_collector(out: list[MessageMeta]) -> _MetaCollector:
    return _MetaCollector(out)


#: Raw flag lists of metadata runs -> the tuple parse_meta would make (bounded).
_RAW_FLAGS: dict[bytes, tuple[str, ...]] = {}


def _flags_of(raw: bytes) -> tuple[str, ...]:
    known = _RAW_FLAGS.get(raw)
    if known is not None:
        return known
    flags = _shared_flags(
        tuple(
            f
            for f in (a.decode("latin-1") for a in raw.split())  # ASCII spaces, as _flat_list
            if f.upper() != "\\RECENT"
        )
    )
    if len(_RAW_FLAGS) < _FLAG_TUPLES_MAX:
        _RAW_FLAGS[bytes(raw)] = flags
    return flags


def decode_mailbox(raw: bytes) -> str:
    """A mailbox name as people read it; raw UTF-8 (RFC 6855) and junk are tolerated."""
    try:
        return utf7.decode(raw)
    except utf7.Utf7Error:
        return raw.decode("utf-8", "replace")


def _as_bytes(tok: object) -> bytes:
    if isinstance(tok, bytes):
        return tok
    if isinstance(tok, bytearray):  # a literal of BIG_LITERAL bytes or more
        return bytes(tok)
    if isinstance(tok, str):
        return tok.encode("latin-1")
    raise ProtocolError(f"expected a string, got {brief(tok)}")


def _separator(tok: object) -> str | None:
    """A hierarchy separator from LIST or NAMESPACE: NIL or one ASCII character (``""``,
    which some servers send for a flat namespace, counts as NIL)."""
    if tok is None:
        return None
    raw = _as_bytes(tok)
    if not raw:
        return None
    if len(raw) != 1 or not raw.isascii():
        raise ProtocolError(f"malformed hierarchy separator: {brief(raw)}")
    return raw.decode("ascii")


def message_id_of(header_block: bytes | None) -> bytes | None:
    """The Message-ID field value from a HEADER.FIELDS (MESSAGE-ID) answer, unfolded."""
    if not header_block:
        return None
    header_block = bytes(header_block)  # hashable even when the parser gave a bytearray
    _, sep, value = header_block.partition(b":")
    if not sep:
        return None
    value = b" ".join(value.split())
    return value or None


def message_id_in(body: bytes) -> bytes | None:
    """The Message-ID field of a message's header block, unfolded (for reports)."""
    end = body.find(b"\r\n\r\n")
    head = body[: end if end >= 0 else 65536]
    lower = head.lower()
    pos = 0 if lower.startswith(b"message-id:") else lower.find(b"\nmessage-id:")
    if pos < 0:
        return None
    if pos:
        pos += 1
    stop = pos
    while True:
        nl = head.find(b"\n", stop)
        if nl < 0 or head[nl + 1 : nl + 2] not in (b" ", b"\t"):
            line = head[pos : nl if nl >= 0 else len(head)]
            break
        stop = nl + 1
    return message_id_of(line)


#: Flag lists repeat from message to message (``\Seen``, ``\Seen \Answered``...): a
#: listing shares one tuple per distinct list (the saving: docs/performance.md item 24).
#: Bounded: lists beyond the first 4096 distinct
#: ones are simply not shared.
_FLAG_TUPLES: dict[tuple[str, ...], tuple[str, ...]] = {}
_FLAG_TUPLES_MAX = 4096


def _shared_flags(flags: tuple[str, ...]) -> tuple[str, ...]:
    known = _FLAG_TUPLES.get(flags)
    if known is not None:
        return known
    if len(_FLAG_TUPLES) < _FLAG_TUPLES_MAX:
        _FLAG_TUPLES[flags] = flags
    return flags


def parse_meta(item: dict[str, object]) -> MessageMeta:
    try:
        uid_tok = item["UID"]
        size_tok = item["RFC822.SIZE"]
        flags_tok = item["FLAGS"]
        date = item["INTERNALDATE"]
    except KeyError as exc:
        raise ProtocolError(f"incomplete FETCH answer: no {exc}") from None
    uid = parse_number(uid_tok, "UID", low=1)
    # RFC822.SIZE is a number64 in IMAP4rev2; what sqlite can store is the bound here.
    size = parse_number(size_tok, "RFC822.SIZE", high=2**63 - 1)
    if not isinstance(flags_tok, list) or not isinstance(date, bytes):
        raise ProtocolError("malformed FLAGS or INTERNALDATE in FETCH answer")
    flags = _shared_flags(
        tuple(f for f in flags_tok if isinstance(f, str) and f.upper() != "\\RECENT")
    )
    hdr = item.get(META_KEY_MSGID)
    return MessageMeta(
        uid, size, flags, date, message_id_of(hdr if isinstance(hdr, (bytes, bytearray)) else None)
    )


class _BodyCollector:
    """FETCH handler of ``UID FETCH (UID BODY.PEEK[])``: per response or a whole run."""

    __slots__ = ("on_body",)

    def __init__(self, on_body: Callable[[int, bytes], None]) -> None:
        self.on_body = on_body

    def __call__(self, u: Untagged) -> None:
        if u.kind == "FETCH":
            item = u.data[0]
            body = item.get(BODY_KEY)
            uid = item.get("UID")
            if isinstance(body, (bytes, bytearray)) and uid is not None:
                self.on_body(parse_number(uid, "UID", low=1), body)

    def on_run(self, run: FetchRun) -> None:
        if run.shape != "body":
            for u in run.untagged():
                self(u)
            return
        on_body = self.on_body
        for _n, uid, body in run.rows:
            on_body(uid, body)


class ImapClient:
    """IMAP verbs over one connection.  Pipelining is used where the engine asks for it."""

    def __init__(self, conn: ImapConnection) -> None:
        self.conn = conn
        self.selected: bytes | None = None

    @property
    def capabilities(self) -> frozenset[str]:
        return self.conn.capabilities

    def has(self, cap: str) -> bool:
        return cap.upper() in self.conn.capabilities

    # ---------------------------------------------------------------- mailboxes

    async def namespace(self) -> NamespaceInfo:
        """Personal namespace from NAMESPACE (RFC 2342), else LIST "" "" for the separator."""
        if self.has("NAMESPACE"):
            res = await self.conn.execute("NAMESPACE")
            for u in res.untagged:
                if u.kind == "NAMESPACE" and u.data and isinstance(u.data[0], list) and u.data[0]:
                    first = u.data[0][0]
                    if isinstance(first, list) and len(first) >= 2:
                        prefix = decode_mailbox(_as_bytes(first[0]))
                        return NamespaceInfo(prefix, _separator(first[1]))
        res = await self.conn.execute("LIST", b'""', b'""')
        for u in res.untagged:
            if u.kind == "LIST" and len(u.data) >= 2:
                return NamespaceInfo("", _separator(u.data[1]))
        return NamespaceInfo("", None)

    async def list_mailboxes(
        self, subscribed: bool = False, *, special_use: bool = False
    ) -> list[MailboxInfo]:
        """Every mailbox (LIST "" "*"), or the subscribed ones (LSUB).

        ``special_use`` asks for RFC 6154 attributes explicitly (``RETURN (SPECIAL-USE)``,
        LIST-EXTENDED, RFC 5258), for servers that leave them out of a plain LIST.
        """
        verb = "LSUB" if subscribed else "LIST"
        extra = (b"RETURN", b"(SPECIAL-USE)") if special_use and not subscribed else ()
        res = await self.conn.execute(verb, b'""', b'"*"', *extra)
        out: list[MailboxInfo] = []
        for u in res.untagged:
            if u.kind != verb or len(u.data) < 3 or not isinstance(u.data[0], list):
                continue
            flags = frozenset(f.upper() for f in u.data[0] if isinstance(f, str))
            raw = _as_bytes(u.data[2])
            out.append(MailboxInfo(raw, decode_mailbox(raw), _separator(u.data[1]), flags))
        return out

    async def create(self, raw: bytes) -> None:
        try:
            await self.conn.execute("CREATE", quote(raw))
        except CommandError as exc:
            # Created meanwhile (another connection, or a parent-creating server)?
            if exc.response.code is not None and exc.response.code.name == "ALREADYEXISTS":
                return
            raise

    async def submit_create(
        self, raw_name: bytes, special_use: str | None = None
    ) -> asyncio.Future[CommandResult]:
        """Pipeline ``CREATE name``, with RFC 6154's ``(USE (\\Sent))`` parameter when
        ``special_use`` names an attribute (servers with CREATE-SPECIAL-USE).  The result
        is not checked: a NO [ALREADYEXISTS] or [USEATTR] is the caller's to judge."""
        use = (b"(USE (" + special_use.encode("ascii") + b"))",) if special_use else ()
        return await self.conn.submit("CREATE", quote(raw_name), *use)

    async def submit_subscribe(self, raw_name: bytes) -> asyncio.Future[CommandResult]:
        """Pipeline ``SUBSCRIBE name`` (RFC 3501 6.3.6); the result is not checked."""
        return await self.conn.submit("SUBSCRIBE", quote(raw_name))

    async def submit_noop(self) -> asyncio.Future[CommandResult]:
        """Pipeline a ``NOOP`` (e.g. to time a round trip); the result is not checked."""
        return await self.conn.submit("NOOP")

    async def select(self, raw: bytes, *, readonly: bool = False) -> SelectInfo:
        """SELECT (or EXAMINE, which never changes \\Seen or \\Recent: RFC 3501 6.3.2)."""
        res = await self.conn.execute("EXAMINE" if readonly else "SELECT", quote(raw))
        self.selected = raw
        return _select_info(res)

    async def select_many(
        self, raws: Sequence[bytes], *, readonly: bool = False
    ) -> dict[bytes, SelectInfo | None]:
        """SELECT (or EXAMINE) several mailboxes, pipelined, for what each answer says
        (FLAGS, PERMANENTFLAGS...); None for a mailbox the server refused.  The last one
        stays selected."""
        verb = "EXAMINE" if readonly else "SELECT"
        futs = [(raw, await self.conn.submit(verb, quote(raw))) for raw in raws]
        out: dict[bytes, SelectInfo | None] = {}
        for raw, fut in futs:
            res = await fut
            out[raw] = _select_info(res) if res.tagged.ok else None
        if futs:  # a refused SELECT leaves nothing selected (RFC 3501 6.3.1)
            self.selected = futs[-1][0] if out[futs[-1][0]] is not None else None
        return out

    async def uid_search(self, criteria: Sequence[bytes | str]) -> list[int]:
        """``UID SEARCH criteria`` in the selected mailbox: matching UIDs, ascending."""
        found: set[int] = set()

        def on(u: Untagged) -> None:
            if u.kind == "SEARCH":
                for tok in u.data:
                    found.add(parse_number(tok, "UID in SEARCH answer", low=1))

        await self.conn.execute("UID SEARCH", *criteria, on_untagged=on)
        return sorted(found)

    async def select_and_list(
        self, raw: bytes, *, readonly: bool = False, message_id: bool = False
    ) -> tuple[SelectInfo, list[MessageMeta]]:
        """SELECT/EXAMINE and list every message's metadata, pipelined: one round trip."""
        out: list[MessageMeta] = []
        sel = await self.conn.submit("EXAMINE" if readonly else "SELECT", quote(raw))
        fetch = await self.conn.submit(
            "UID FETCH",
            "1:*",
            META_ITEMS if message_id else META_ITEMS_LIGHT,
            on_untagged=_meta_collector(out),
        )
        sres = await sel
        fres = await fetch
        if not sres.tagged.ok:
            raise CommandError("EXAMINE" if readonly else "SELECT", sres.tagged)
        self.selected = raw
        info = _select_info(sres)
        if not fres.tagged.ok and info.exists:
            raise CommandError("UID FETCH", fres.tagged)
        out.sort(key=lambda m: m.uid)
        return info, out

    async def reselect_and_fetch_meta(
        self, uids: str | None
    ) -> tuple[SelectInfo, list[MessageMeta]]:
        """SELECT the selected folder again (a fresh view) and list the metadata of
        ``uids`` (none: just the SELECT), pipelined: one round trip."""
        raw = self.selected or b"INBOX"
        out: list[MessageMeta] = []
        sel = await self.conn.submit("SELECT", quote(raw))
        fetch = None
        if uids:
            fetch = await self.conn.submit(
                "UID FETCH", uids, META_ITEMS_LIGHT, on_untagged=_meta_collector(out)
            )
        sres = await sel
        if not sres.tagged.ok:
            if fetch is not None:
                await fetch
            raise CommandError("SELECT", sres.tagged)
        self.selected = raw
        if fetch is not None:
            fres = await fetch
            if not fres.tagged.ok:
                raise CommandError("UID FETCH", fres.tagged)
        out.sort(key=lambda m: m.uid)
        return _select_info(sres), out

    async def status_many(self, raws: Sequence[bytes], items: str) -> dict[bytes, dict[str, int]]:
        """STATUS of many mailboxes, pipelined; answers are matched by mailbox name."""
        out: dict[bytes, dict[str, int]] = {}

        def on(u: Untagged) -> None:
            if u.kind == "STATUS" and len(u.data) >= 2 and isinstance(u.data[1], list):
                vals = u.data[1]
                entry: dict[str, int] = {}
                for k in range(0, len(vals) - 1, 2):
                    try:
                        entry[str(vals[k]).upper()] = int(vals[k + 1])
                    except (TypeError, ValueError):
                        continue
                out[_as_bytes(u.data[0])] = entry

        futs = [
            await self.conn.submit("STATUS", quote(raw), items.encode(), on_untagged=on)
            for raw in raws
        ]
        for f in futs:
            res = await f
            if not res.tagged.ok:
                raise CommandError("STATUS", res.tagged)
        return out

    async def mailbox_id(self, raw: bytes = b"INBOX") -> str | None:
        """A server-wide unique identity of mailbox ``raw``, or None when the server
        offers none: RFC 8474's MAILBOXID (servers with OBJECTID: Cyrus), else Dovecot's
        ``STATUS (X-GUID)`` (not advertised: a BAD means "none").  Gmail is not asked
        (it has neither).  Read-only: a STATUS."""
        if self.has("OBJECTID"):
            item = "MAILBOXID"
        elif self.has("X-GM-EXT-1"):
            return None
        else:
            item = "X-GUID"
        found: list[str] = []

        def on(u: Untagged) -> None:
            if u.kind == "STATUS" and len(u.data) >= 2 and isinstance(u.data[1], list):
                vals = u.data[1]
                for k in range(0, len(vals) - 1, 2):
                    if str(vals[k]).upper() == item:
                        v = vals[k + 1]
                        if isinstance(v, list) and v:  # MAILBOXID (id)
                            v = v[0]
                        if isinstance(v, (bytes, bytearray, str)):
                            text = v.decode("latin-1") if not isinstance(v, str) else v
                            if text and text.upper() != "NIL":
                                found.append(text)

        res = await self.conn.execute(
            "STATUS", quote(raw), f"({item})".encode(), on_untagged=on, check=False
        )
        if not res.tagged.ok or len(found) != 1:
            return None
        return f"{item} {found[0]}"

    # ---------------------------------------------------------------- messages

    async def fetch_meta(self, uids: str = "1:*", *, message_id: bool = True) -> list[MessageMeta]:
        """UID, size, flags, INTERNALDATE and (optionally) Message-ID of messages; no bodies."""
        out: list[MessageMeta] = []
        items = META_ITEMS if message_id else META_ITEMS_LIGHT
        await self.conn.execute("UID FETCH", uids, items, on_untagged=_meta_collector(out))
        out.sort(key=lambda m: m.uid)
        return out

    async def fetch_message_ids(self, uids: Sequence[int]) -> dict[int, bytes | None]:
        """Message-ID of some messages, by UID (pipelined in chunks: command lines stay short)."""
        out: dict[int, bytes | None] = {}

        def on(u: Untagged) -> None:
            if u.kind == "FETCH":
                item = u.data[0]
                hdr = item.get(META_KEY_MSGID)
                uid = item.get("UID")
                if uid is not None:
                    out[parse_number(uid, "UID", low=1)] = message_id_of(
                        hdr if isinstance(hdr, (bytes, bytearray)) else None
                    )

        futs = []
        ordered = sorted(uids)
        for i in range(0, len(ordered), 2000):
            futs.append(
                await self.conn.submit(
                    "UID FETCH",
                    format_uid_set(ordered[i : i + 2000]),
                    b"(UID BODY.PEEK[HEADER.FIELDS (MESSAGE-ID)])",
                    on_untagged=on,
                )
            )
        for f in futs:
            res = await f
            if not res.tagged.ok:
                raise CommandError("UID FETCH", res.tagged)
        return out

    async def fetch_sizes(self, uids: str = "1:*") -> list[tuple[int, int]]:
        """(UID, RFC822.SIZE) of messages: the cheapest listing."""
        out: list[tuple[int, int]] = []

        def on(u: Untagged) -> None:
            if u.kind == "FETCH":
                item = u.data[0]
                if "UID" in item and "RFC822.SIZE" in item:  # else: a flag update
                    out.append(
                        (
                            parse_number(item["UID"], "UID", low=1),
                            parse_number(item["RFC822.SIZE"], "RFC822.SIZE", high=2**63 - 1),
                        )
                    )

        await self.conn.execute("UID FETCH", uids, b"(UID RFC822.SIZE)", on_untagged=on)
        return out

    async def submit_fetch_bodies(
        self, uids: Sequence[int], on_body: Callable[[int, bytes], None]
    ) -> asyncio.Future[CommandResult]:
        """Pipeline ``UID FETCH uids (UID BODY.PEEK[])``; ``on_body(uid, bytes)`` per message."""

        return await self.conn.submit(
            "UID FETCH",
            format_uid_set(list(uids)),
            b"(UID BODY.PEEK[])",
            on_untagged=_BodyCollector(on_body),
        )

    async def submit_append(
        self, raw_mailbox: bytes, items: Sequence[AppendItem]
    ) -> asyncio.Future[CommandResult]:
        """Pipeline one APPEND; several messages in one command need MULTIAPPEND (RFC 3502)."""
        if len(items) > 1 and not self.has("MULTIAPPEND"):
            raise ValueError("several messages in one APPEND need MULTIAPPEND")
        args: list[bytes | Literal] = [quote(raw_mailbox)]
        for it in items:
            args.append(b"(" + " ".join(it.flags).encode("ascii") + b")")
            if it.internaldate:
                args.append(b'"' + it.internaldate + b'"')
            args.append(Literal(it.body))
        return await self.conn.submit("APPEND", *args)

    async def store_flags(self, uid: int, flags: Sequence[str]) -> None:
        """Set a message's flags to exactly ``flags`` (UID STORE FLAGS.SILENT)."""
        await self.conn.execute(
            "UID STORE", str(uid), b"FLAGS.SILENT", b"(" + " ".join(flags).encode("ascii") + b")"
        )

    async def logout(self) -> None:
        await self.conn.logout()


def append_result(res: CommandResult) -> AppendUid | None:
    """The APPENDUID of a completed APPEND, or None without UIDPLUS."""
    if not res.tagged.ok:
        raise CommandError("APPEND", res.tagged)
    return res.tagged.appenduid()
