"""A scripted IMAP4rev1 server whose quirks (issue 13) are switched on by the test.

Real servers differ in ways all allowed by the RFCs, and the mover must be exact on every
one of them.  This double plays each difference on demand, on a plain mailbox store
(folders of messages with UID, flags, INTERNALDATE and exact bytes)::

    q = Quirks(fetch_spelling="quoted", literal_plus=False, inbox_dot=True)
    with QuirkyServer(users={"user": "pass"}, quirks=q) as srv:
        srv.add_message("user", "INBOX", raw, flags=("\\\\Seen", "$Label1"))
        ... imaplib.IMAP4(srv.host, srv.port) or `yippiemove move --no-starttls` ...
        assert srv.messages("user", "INBOX")[0].raw == raw

Every switch of :class:`Quirks` is documented there; with the defaults the double is an
ordinary modern server (LITERAL+, MULTIAPPEND, UIDPLUS, NAMESPACE, SPECIAL-USE, "/").

The wire (command reader, literals, tokenizer, FETCH sections, SEARCH, the server thread)
is tests/doubles/imapwire.py, shared with the Gmail double.  Sessions of one user share
the store (under one lock) and see each other's changes as EXISTS/EXPUNGE after each
command, as RFC 3501 7.4.1 allows.  Not served: TLS, COMPRESS, CONDSTORE/QRESYNC, MOVE,
ENVELOPE/BODYSTRUCTURE and MIME part sections (answered BAD).
"""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import re
import threading
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

from tests.doubles import imapwire
from tests.doubles.imapwire import AUTH, AUTHED, NONAUTH, SEL, SELECTED, Bad, Command, Lit, No

__all__ = ["FETCH_SPELLINGS", "Quirks", "QuirkyServer", "Snapshot", "StoredMessage"]

FETCH_SPELLINGS = ("plain", "quoted", "lower", "mixed", "peek", "rfc822")
_BASE_FLAGS = ("\\Answered", "\\Flagged", "\\Deleted", "\\Seen", "\\Draft")
_SPECIAL_USES = ("\\All", "\\Archive", "\\Drafts", "\\Flagged", "\\Junk", "\\Sent", "\\Trash")
_BAD_LOGIN = "[AUTHENTICATIONFAILED] Authentication failed."
_UIDVALIDITIES = itertools.count(1_700_000_000)


class FrozenMap(Mapping[Any, Any]):
    """A read-only, hashable mapping (a snapshot must be both comparable and hashable)."""

    __slots__ = ("_d", "_h")

    def __init__(self, items: Iterable[tuple[Any, Any]]) -> None:
        self._d = dict(items)
        self._h: int | None = None

    def __getitem__(self, key: Any) -> Any:
        return self._d[key]

    def __iter__(self) -> Iterator[Any]:
        return iter(self._d)

    def __len__(self) -> int:
        return len(self._d)

    def __hash__(self) -> int:
        if self._h is None:
            self._h = hash(frozenset(self._d.items()))
        return self._h

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Mapping) and self._d == dict(other.items())

    def __repr__(self) -> str:
        return f"FrozenMap({self._d!r})"


# folder -> (UIDVALIDITY, UID -> (flags, SHA-256 hex of the bytes)): the shape of the
# source-untouched guard's Snapshot (tests/source_guard.py on branch fin12), hashable.
Snapshot = Mapping[str, tuple[int | None, Mapping[int, tuple[frozenset[str], str]]]]


@dataclass(frozen=True, slots=True)
class Quirks:
    """Which server behaviours to play; the defaults are an ordinary modern server.

    * ``fetch_spelling``: how a FETCH answer names the section asked for: ``"plain"``
      ``BODY[HEADER.FIELDS (MESSAGE-ID)]``; ``"quoted"`` ``BODY[HEADER.FIELDS
      ("MESSAGE-ID")]``; ``"lower"`` ``body[header.fields (message-id)]``; ``"mixed"``
      ``Body[Header.Fields ("Message-Id")]``; ``"peek"`` echoes ``BODY.PEEK[...]``;
      ``"rfc822"`` answers ``BODY.PEEK[]``/``[HEADER]``/``[TEXT]`` as ``RFC822``/
      ``RFC822.HEADER``/``RFC822.TEXT``.
    * ``store_lf``: APPEND stores CRLF line ends as bare LF.
    * ``replace_8bit_headers``: APPEND replaces 8-bit bytes of the header by ``?``.
    * ``literal_plus``: advertise LITERAL+ and take ``{n+}``; False: ``{n+}`` answers BAD.
    * ``multiappend`` / ``uidplus`` / ``namespace`` / ``special_use``: advertise and serve
      MULTIAPPEND (RFC 3502), UIDPLUS (APPENDUID/COPYUID, UID EXPUNGE), NAMESPACE,
      SPECIAL-USE with LIST-EXTENDED (attributes in LIST, ``RETURN (SPECIAL-USE)``); off:
      not advertised, the verb/extra arguments answer BAD, no response codes.
    * ``utf8_accept``: advertise UTF8=ACCEPT; after ``ENABLE UTF8=ACCEPT`` names are raw
      UTF-8 both ways (and ``refuse_chars`` no longer applies to that session).
    * ``inbox_dot``: personal namespace ``INBOX.`` with separator ``.``: every folder is
      ``INBOX.<name>``; CREATE outside it answers ``NO [CANNOT]``.
    * ``separator``: the hierarchy separator otherwise.
    * ``refuse_chars``: CREATE/RENAME of a name with one of these characters answers
      ``NO [CANNOT]`` (in sessions that did not enable UTF8=ACCEPT).
    * ``permanentflags_star``: False: PERMANENTFLAGS lacks ``\\*`` (and lists no keywords),
      yet keywords are stored all the same.
    * ``sync_literal_delay``: seconds before each ``+`` continuation.
    """

    fetch_spelling: str = "plain"
    store_lf: bool = False
    replace_8bit_headers: bool = False
    literal_plus: bool = True
    multiappend: bool = True
    uidplus: bool = True
    namespace: bool = True
    special_use: bool = True
    utf8_accept: bool = False
    inbox_dot: bool = False
    separator: str = "/"
    refuse_chars: str = ""
    permanentflags_star: bool = True
    sync_literal_delay: float = 0.0

    def __post_init__(self) -> None:
        if self.fetch_spelling not in FETCH_SPELLINGS:
            raise ValueError(f"fetch_spelling must be one of {FETCH_SPELLINGS}")
        if len(self.separator) != 1:
            raise ValueError("separator must be one character")

    @property
    def sep(self) -> str:
        return "." if self.inbox_dot else self.separator

    def capabilities(self) -> str:
        caps = ["IMAP4rev1", "AUTH=PLAIN", "ID", "ENABLE", "IDLE", "UNSELECT"]
        caps += ["LITERAL+"] if self.literal_plus else []
        caps += ["MULTIAPPEND"] if self.multiappend else []
        caps += ["UIDPLUS"] if self.uidplus else []
        caps += ["NAMESPACE"] if self.namespace else []
        caps += ["SPECIAL-USE", "LIST-EXTENDED"] if self.special_use else []
        caps += ["UTF8=ACCEPT"] if self.utf8_accept else []
        return " ".join(caps)

    def stored(self, raw: bytes) -> bytes:
        """What APPEND keeps of ``raw``."""
        if self.replace_8bit_headers:
            head = imapwire.header_block(raw)
            raw = bytes(b if b < 0x80 else 0x3F for b in head) + raw[len(head) :]
        if self.store_lf:
            raw = raw.replace(b"\r\n", b"\n")
        return raw


@dataclass(frozen=True, slots=True)
class StoredMessage:
    uid: int
    flags: frozenset[str]
    internaldate: datetime
    raw: bytes


@dataclass(eq=False, slots=True)
class _Msg:
    uid: int
    flags: set[str]
    internaldate: datetime
    raw: bytes


@dataclass(eq=False, slots=True)
class _Folder:
    name: str
    uidvalidity: int = field(default_factory=lambda: next(_UIDVALIDITIES))
    uidnext: int = 1
    msgs: dict[int, _Msg] = field(default_factory=dict)  # by UID, in UID order
    subscribed: bool = True
    special_use: str | None = None

    def add(self, raw: bytes, flags: Iterable[str], when: datetime) -> _Msg:
        msg = _Msg(self.uidnext, set(flags) - {"\\Recent"}, when, raw)
        self.msgs[msg.uid] = msg
        self.uidnext += 1
        return msg

    def keywords(self) -> list[str]:
        return sorted({f for m in self.msgs.values() for f in m.flags if f[:1] != "\\"})


@dataclass(eq=False, slots=True)
class _Account:
    password: str
    folders: dict[str, _Folder] = field(default_factory=lambda: {"INBOX": _Folder("INBOX")})
    commands: list[bytes] = field(default_factory=list)


def _canonical(name: str, quirks: Quirks) -> str:
    """INBOX is case-insensitive (RFC 3501 5.1), also as the ``INBOX.`` prefix."""
    head, sep, rest = name.partition(quirks.sep)
    if head.upper() == "INBOX":
        return "INBOX" + sep + rest
    return name


# ---------------------------------------------------------------------------- session


class _Session(imapwire.WireSession):
    greeting = b"* OK [CAPABILITY IMAP4rev1] quirky test server ready\r\n"

    def __init__(
        self, server: QuirkyServer, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        super().__init__(reader, writer)
        self.server = server
        self.q = server.quirks
        self.nonsync_max = None if self.q.literal_plus else 0
        self.user: str | None = None
        self.folder: _Folder | None = None
        self.readonly = False
        self.seq: list[int] = []  # UIDs of the selected folder as this client knows them
        self.utf8 = False

    @property
    def account(self) -> _Account:
        assert self.user is not None
        return self.server._accounts[self.user]

    async def continuation(self) -> None:
        if self.q.sync_literal_delay > 0:
            await asyncio.sleep(self.q.sync_literal_delay)
        await super().continuation()

    def nonsync_refusal(self, n: int) -> str:
        return "Could not parse command: non-synchronizing literal (no LITERAL+ here)"

    async def dispatch(self, cmd: Command) -> None:
        entry = _COMMANDS.get(cmd.name)
        if self.user is not None:
            with self.server._lock:
                self.account.commands.append(cmd.line[len(cmd.tag) + 1 :])
        if entry is None or (cmd.name == "NAMESPACE" and not self.q.namespace):
            self.answer(cmd.tag, cmd.name, f"BAD Unknown command {cmd.name}")
            return
        handler, states = entry
        if self.state not in states:
            self.answer(cmd.tag, cmd.name, f"BAD {cmd.name} not allowed in this state")
            return
        await self.execute(cmd, handler)

    def internal_error(self, cmd: Command, exc: Exception) -> str:
        self.server.internal_errors.append(f"{cmd.name}: {exc!r}")
        return f"BAD [SERVERBUG] internal error in the quirky double: {exc!r}"

    def sync(self, *, expunges: bool) -> None:
        folder = self.folder
        if folder is None:
            return
        with self.server._lock:
            if folder is not self.account.folders.get(folder.name):  # deleted/renamed away
                return
            if expunges:
                gone = [i for i, uid in enumerate(self.seq) if uid not in folder.msgs]
                for i in reversed(gone):
                    self.seq.pop(i)
                    self.send(b"* %d EXPUNGE\r\n" % (i + 1))
            high = self.seq[-1] if self.seq else 0
            new = [u for u in folder.msgs if u > high]
            if new:
                self.seq += new
                self.send(b"* %d EXISTS\r\n" % len(self.seq))

    def unselect(self) -> None:
        self.folder = None
        self.seq = []
        if self.state == SELECTED:
            self.state = AUTH

    def targets(self, spec: object, uid: bool) -> list[tuple[int, _Msg]]:
        folder = self.folder
        assert folder is not None
        if uid:
            sset = imapwire.SeqSet(spec, self.seq[-1] if self.seq else 0)
            picked = [(i + 1, u) for i, u in enumerate(self.seq) if u in sset]
        else:
            sset = imapwire.SeqSet(spec, len(self.seq))
            picked = [(i + 1, self.seq[i]) for i in range(len(self.seq)) if i + 1 in sset]
        return [(n, folder.msgs[u]) for n, u in picked if u in folder.msgs]

    # ---- names

    def decode_name(self, tok: object) -> str:
        return _canonical(imapwire.mailbox_name(tok, self.utf8), self.q)

    def encode_name(self, name: str) -> bytes:
        return imapwire.quoted(imapwire.mailbox_wire(name, self.utf8))

    def need_folder(self, tok: object) -> _Folder:
        name = self.decode_name(tok)
        folder = self.account.folders.get(name)
        if folder is None:
            raise No(f"[NONEXISTENT] Mailbox doesn't exist: {name}")
        return folder

    def target_folder(self, tok: object) -> _Folder:
        """The folder APPEND or COPY puts messages in (RFC 3501: TRYCREATE when missing)."""
        name = self.decode_name(tok)
        folder = self.account.folders.get(name)
        if folder is None:
            raise No(f"[TRYCREATE] Mailbox doesn't exist: {name}")
        return folder

    def check_new_name(self, name: str) -> None:
        q = self.q
        if q.inbox_dot and not name.startswith("INBOX."):
            raise No("[CANNOT] Invalid mailbox name: folders live under INBOX.")
        if not name or name.endswith(q.sep) or (q.sep * 2) in name:
            raise No(f"[CANNOT] Invalid mailbox name: {name}")
        if not self.utf8:
            refused = sorted({c for c in name if c in q.refuse_chars})
            if refused:
                raise No(f"[CANNOT] Invalid characters in mailbox name: {''.join(refused)}")
        if name in self.account.folders:
            raise No(f"[ALREADYEXISTS] Mailbox already exists: {name}")

    def flags_out(self, msg: _Msg) -> bytes:
        return b"(" + " ".join(sorted(msg.flags)).encode("utf-8") + b")"


# ---------------------------------------------------------------------------- verbs

_Args = list[Any]


async def _capability(s: _Session, cmd: Command, args: _Args) -> str:
    s.send(b"* CAPABILITY " + s.q.capabilities().encode() + b"\r\n")
    return "OK Capability completed."


async def _noop(s: _Session, cmd: Command, args: _Args) -> str:
    return f"OK {cmd.name.capitalize()} completed."


async def _logout(s: _Session, cmd: Command, args: _Args) -> str:
    s.send(b"* BYE Logging out\r\n")
    s.unselect()
    s.state = imapwire.LOGOUT
    return "OK Logout completed."


async def _id(s: _Session, cmd: Command, args: _Args) -> str:
    s.send(b'* ID ("name" "quirky" "vendor" "yippiemove tests")\r\n')
    return "OK ID completed."


def _login_as(s: _Session, verb: str, user: str, password: str) -> str:
    with s.server._lock:
        acct = s.server._accounts.get(user)
        if acct is None or acct.password != password:
            raise No(_BAD_LOGIN)
        s.user = user
        acct.commands.append(verb.encode())  # never the credentials
    s.state = AUTH
    return f"OK [CAPABILITY {s.q.capabilities()}] Logged in"


async def _login(s: _Session, cmd: Command, args: _Args) -> str:
    if len(args) != 2 or not all(isinstance(a, str | bytes) for a in args):
        raise Bad("LOGIN needs a user name and a password")
    user, password = (a.encode("latin-1") if isinstance(a, str) else bytes(a) for a in args)
    return _login_as(
        s, "LOGIN", user.decode("utf-8", "replace"), password.decode("utf-8", "replace")
    )


async def _authenticate(s: _Session, cmd: Command, args: _Args) -> str:
    user, password = await imapwire.plain_credentials(s, args, _BAD_LOGIN)
    return _login_as(s, "AUTHENTICATE PLAIN", user, password)


async def _enable(s: _Session, cmd: Command, args: _Args) -> str:
    enabled = []
    for a in args:
        if isinstance(a, str) and a.upper() == "UTF8=ACCEPT" and s.q.utf8_accept:
            s.utf8 = True
            enabled.append("UTF8=ACCEPT")
    s.send(("* ENABLED" + "".join(" " + e for e in enabled) + "\r\n").encode())
    return "OK Enabled."


async def _namespace(s: _Session, cmd: Command, args: _Args) -> str:
    prefix = "INBOX." if s.q.inbox_dot else ""
    s.send(f'* NAMESPACE (("{prefix}" "{s.q.sep}")) NIL NIL\r\n'.encode())
    return "OK Namespace completed."


async def _select(s: _Session, cmd: Command, args: _Args) -> str:
    if len(args) != 1:
        raise Bad(f"{cmd.name} needs a mailbox")
    s.unselect()
    with s.server._lock:
        folder = s.need_folder(args[0])
        s.folder = folder
        s.seq = list(folder.msgs)
        s.state = SELECTED
        s.readonly = cmd.name == "EXAMINE"
        flags = " ".join((*_BASE_FLAGS, *folder.keywords()))
        if s.readonly:
            permanent = ""
        elif s.q.permanentflags_star:
            permanent = flags + " \\*"
        else:
            permanent = " ".join(_BASE_FLAGS)
        s.send(
            f"* FLAGS ({flags})\r\n* OK [PERMANENTFLAGS ({permanent})] Flags permitted.\r\n"
            f"* {len(s.seq)} EXISTS\r\n* 0 RECENT\r\n"
            f"* OK [UIDVALIDITY {folder.uidvalidity}] UIDs valid\r\n"
            f"* OK [UIDNEXT {folder.uidnext}] Predicted next UID\r\n".encode()
        )
    return f"OK [{'READ-ONLY' if s.readonly else 'READ-WRITE'}] {cmd.name.capitalize()} completed."


async def _close(s: _Session, cmd: Command, args: _Args) -> str:
    if cmd.name == "CLOSE" and not s.readonly and s.folder is not None:
        with s.server._lock:
            _expunge_in(s.folder, None)
    s.unselect()
    return f"OK {cmd.name.capitalize()} completed."


def _expunge_in(folder: _Folder, only: set[int] | None) -> None:
    for uid in [u for u, m in folder.msgs.items() if "\\Deleted" in m.flags]:
        if only is None or uid in only:
            del folder.msgs[uid]


async def _expunge(s: _Session, cmd: Command, args: _Args) -> str:
    if cmd.name == "UID EXPUNGE" and not s.q.uidplus:
        raise Bad("Unknown command UID EXPUNGE (no UIDPLUS here)")
    if s.readonly:
        raise No("[READ-ONLY] Mailbox is read-only")
    assert s.folder is not None
    with s.server._lock:
        only = None
        if cmd.name == "UID EXPUNGE":
            if len(args) != 1:
                raise Bad("UID EXPUNGE needs a UID set")
            only = {m.uid for _, m in s.targets(args[0], uid=True)}
        _expunge_in(s.folder, only)
    return "OK Expunge completed."


async def _create(s: _Session, cmd: Command, args: _Args) -> str:
    if len(args) != 1:
        raise Bad("CREATE needs a mailbox")
    name = s.decode_name(args[0])
    if name.endswith(s.q.sep):
        name = name[:-1]
    with s.server._lock:
        s.check_new_name(name)
        s.account.folders[name] = _Folder(name)
    return "OK Create completed."


async def _delete(s: _Session, cmd: Command, args: _Args) -> str:
    if len(args) != 1:
        raise Bad("DELETE needs a mailbox")
    with s.server._lock:
        folder = s.need_folder(args[0])
        if folder.name == "INBOX":
            raise No("[CANNOT] INBOX can't be deleted.")
        del s.account.folders[folder.name]
        if s.folder is folder:
            s.unselect()
    return "OK Delete completed."


async def _rename(s: _Session, cmd: Command, args: _Args) -> str:
    if len(args) != 2:
        raise Bad("RENAME needs two mailboxes")
    new = s.decode_name(args[1])
    sep = s.q.sep
    with s.server._lock:
        folder = s.need_folder(args[0])
        if folder.name == "INBOX":
            raise No("[CANNOT] Renaming INBOX is not served by the quirky double")
        s.check_new_name(new)
        folders = s.account.folders
        old = folder.name
        for name in [n for n in folders if n == old or n.startswith(old + sep)]:
            moved = folders.pop(name)
            moved.name = new + name[len(old) :]
            folders[moved.name] = moved
    return "OK Rename completed."


async def _subscribe(s: _Session, cmd: Command, args: _Args) -> str:
    if len(args) != 1:
        raise Bad(f"{cmd.name} needs a mailbox")
    with s.server._lock:
        s.need_folder(args[0]).subscribed = cmd.name == "SUBSCRIBE"
    return f"OK {cmd.name.capitalize()} completed."


def _status_of(folder: _Folder, items: object) -> bytes:
    if not isinstance(items, list):
        raise Bad("STATUS needs a list of items")
    out = []
    for it in items:
        up = str(it).upper()
        values = {
            "MESSAGES": len(folder.msgs),
            "RECENT": 0,
            "UIDNEXT": folder.uidnext,
            "UIDVALIDITY": folder.uidvalidity,
            "UNSEEN": sum("\\Seen" not in m.flags for m in folder.msgs.values()),
        }
        if up not in values:
            raise Bad(f"unknown STATUS item {up[:20]}")
        out.append(f"{up} {values[up]}")
    return ("(" + " ".join(out) + ")").encode()


async def _status(s: _Session, cmd: Command, args: _Args) -> str:
    if len(args) != 2:
        raise Bad("STATUS needs a mailbox and a list of items")
    with s.server._lock:
        folder = s.need_folder(args[0])
        s.send(b"* STATUS " + s.encode_name(folder.name) + b" " + _status_of(folder, args[1]))
        s.send(b"\r\n")
    return "OK Status completed."


async def _list(s: _Session, cmd: Command, args: _Args) -> str:
    q = s.q
    args = list(args)
    select: set[str] = set()
    returns: set[str] = set()
    if args and isinstance(args[0], list):
        if not q.special_use:
            raise Bad("LIST selection options need LIST-EXTENDED (not here)")
        select = {str(o).upper() for o in args.pop(0)}
        if select - {"SUBSCRIBED", "SPECIAL-USE", "RECURSIVEMATCH"}:
            raise Bad(f"unsupported LIST selection {sorted(select)}")
    if len(args) == 4 and str(args[2]).upper() == "RETURN":
        if not q.special_use:
            raise Bad("LIST RETURN options need LIST-EXTENDED (not here)")
        returns = {str(o).upper() for o in (args[3] if isinstance(args[3], list) else [])}
        if returns - {"SUBSCRIBED", "CHILDREN", "SPECIAL-USE"}:
            raise Bad(f"unsupported LIST return options {sorted(returns)}")
        args = args[:2]
    if len(args) != 2:
        raise Bad(f"{cmd.name} needs a reference and a pattern")
    ref, pat = (a.encode("latin-1") if isinstance(a, str) else bytes(a) for a in args)
    verb = cmd.name.encode()
    sep = q.sep.encode()
    if pat == b"":
        s.send(b"* " + verb + b' (\\Noselect) "' + sep + b'" ""\r\n')
        return f"OK {cmd.name} completed."
    regex = imapwire.pattern(ref + pat, sep)
    inbox = re.compile(regex.pattern, re.I | re.S)
    subscribed_only = cmd.name == "LSUB" or "SUBSCRIBED" in select
    with s.server._lock:
        folders = s.account.folders
        for name, folder in folders.items():
            wire = imapwire.mailbox_wire(name, s.utf8)
            if not regex.match(wire) and not (name == "INBOX" and inbox.match(b"INBOX")):
                continue
            if subscribed_only and not folder.subscribed:
                continue
            if "SPECIAL-USE" in select and folder.special_use is None:
                continue
            attrs = []
            children = any(n.startswith(name + q.sep) for n in folders)
            attrs.append("\\HasChildren" if children else "\\HasNoChildren")
            if q.special_use and folder.special_use:
                attrs.append(folder.special_use)
            if folder.subscribed and ("SUBSCRIBED" in returns or "SUBSCRIBED" in select):
                attrs.append("\\Subscribed")
            line = f'* {cmd.name} ({" ".join(attrs)}) "{q.sep}" '.encode()
            s.send(line + s.encode_name(name) + b"\r\n")
    return f"OK {cmd.name} completed."


async def _append(s: _Session, cmd: Command, args: _Args) -> str:
    if len(args) < 2:
        raise Bad("APPEND needs a mailbox and a message literal")
    batch: list[tuple[list[str], datetime | None, bytes]] = []
    flags: list[str] = []
    when: datetime | None = None
    for extra in args[1:]:
        if isinstance(extra, Lit):
            batch.append((flags, when, bytes(extra)))
            flags, when = [], None
        elif isinstance(extra, list):
            flags = imapwire.flag_list(extra)
        elif isinstance(extra, bytes):
            when = imapwire.parse_date_time(extra.decode("latin-1"))
        else:
            raise Bad(f"unexpected APPEND argument {extra!r:.40}")
    if not batch or flags or when is not None:
        raise Bad("APPEND needs a message literal last")
    if len(batch) > 1 and not s.q.multiappend:
        raise Bad("one message per APPEND (no MULTIAPPEND here)")
    with s.server._lock:
        folder = s.target_folder(args[0])
        now = datetime.now(UTC).replace(microsecond=0)
        uids = [folder.add(s.q.stored(raw), f, w or now).uid for f, w, raw in batch]
    if not s.q.uidplus:
        return "OK Append completed."
    return f"OK [APPENDUID {folder.uidvalidity} {imapwire.uid_list(uids)}] Append completed."


def _item_name(it: imapwire.FetchItem, spelling: str) -> bytes:
    """The FETCH answer's name for a section item, spelt as the quirk says."""
    if not it.out.startswith(b"BODY["):
        return it.out  # RFC822, RFC822.HEADER, RFC822.TEXT asked as such
    peek = not it.sets_seen
    if spelling == "rfc822" and peek and it.origin is None and it.section in ("", "HEADER", "TEXT"):
        return b"RFC822" + (b"." + it.section.encode() if it.section else b"")
    verb = "BODY.PEEK" if spelling == "peek" and peek else "BODY"
    section = it.section
    fields = [f.decode("latin-1") for f in it.fields]
    if spelling == "mixed":
        verb = verb.title()
        section = section.title()
        fields = ["-".join(p.capitalize() for p in f.split("-")) for f in fields]
    if spelling in ("quoted", "mixed"):
        fields = [f'"{f}"' for f in fields]
    text = f"{verb}[{section}{' (' + ' '.join(fields) + ')' if fields else ''}]"
    if it.origin is not None:
        text += f"<{it.origin}>"
    return (text.lower() if spelling == "lower" else text).encode("latin-1")


async def _fetch(s: _Session, cmd: Command, args: _Args) -> str:
    uid = cmd.name == "UID FETCH"
    if len(args) != 2:
        raise Bad("FETCH needs a set and items")
    items = imapwire.fetch_items(args[1], (), "the quirky double")
    if uid and not any(it.kind == "UID" for it in items):
        items.insert(0, imapwire.FetchItem("UID"))
    spelling = s.q.fetch_spelling
    with s.server._lock:
        targets = s.targets(args[0], uid)
        for n, msg in targets:
            parts: list[bytes] = []
            if any(it.sets_seen for it in items) and not s.readonly and "\\Seen" not in msg.flags:
                msg.flags.add("\\Seen")
                if not any(it.kind == "FLAGS" for it in items):
                    parts.append(b"FLAGS " + s.flags_out(msg))
            for it in items:
                if it.kind == "UID":
                    parts.append(b"UID %d" % msg.uid)
                elif it.kind == "FLAGS":
                    parts.append(b"FLAGS " + s.flags_out(msg))
                elif it.kind == "INTERNALDATE":
                    parts.append(b'INTERNALDATE "' + imapwire.format_date(msg.internaldate) + b'"')
                elif it.kind == "RFC822.SIZE":
                    parts.append(b"RFC822.SIZE %d" % len(msg.raw))
                else:
                    data = imapwire.section_bytes(it, msg.raw)
                    parts.append(_item_name(it, spelling) + b" {%d}\r\n" % len(data) + data)
            s.send(b"* %d FETCH (" % n + b" ".join(parts) + b")\r\n")
    return "OK Fetch completed."


async def _store(s: _Session, cmd: Command, args: _Args) -> str:
    uid = cmd.name == "UID STORE"
    if s.readonly:
        raise No("[READ-ONLY] Mailbox is read-only")
    if len(args) != 3 or not isinstance(args[1], str):
        raise Bad("STORE needs a set, an item and a value")
    item = args[1].upper()
    silent = item.endswith(".SILENT")
    base = item.removesuffix(".SILENT")
    mode = base[0] if base[:1] in ("+", "-") else "="
    if base.lstrip("+-") != "FLAGS":
        raise Bad(f"unknown STORE item {item[:30]}")
    values = set(imapwire.flag_list(args[2]))
    with s.server._lock:
        for n, msg in s.targets(args[0], uid):
            if mode == "=":
                msg.flags = set(values)
            elif mode == "+":
                msg.flags |= values
            else:
                msg.flags -= values
            if not silent:
                extra = b" UID %d" % msg.uid if uid else b""
                s.send(b"* %d FETCH (FLAGS " % n + s.flags_out(msg) + extra + b")\r\n")
    return "OK Store completed."


async def _copy(s: _Session, cmd: Command, args: _Args) -> str:
    uid = cmd.name == "UID COPY"
    if len(args) != 2:
        raise Bad("COPY needs a set and a mailbox")
    with s.server._lock:
        target = s.target_folder(args[1])
        pairs = [
            (m.uid, target.add(m.raw, m.flags, m.internaldate).uid)
            for _, m in s.targets(args[0], uid)
        ]
    if not s.q.uidplus or not pairs:
        return "OK Copy completed."
    src = imapwire.uid_list([a for a, _ in pairs])
    dst = imapwire.uid_list([b for _, b in pairs])
    return f"OK [COPYUID {target.uidvalidity} {src} {dst}] Copy completed."


async def _search(s: _Session, cmd: Command, args: _Args) -> str:
    uid = cmd.name == "UID SEARCH"
    args = list(args)
    if len(args) >= 2 and str(args[0]).upper() == "CHARSET":
        charset = args[1].decode("latin-1") if isinstance(args[1], bytes) else str(args[1])
        if charset.upper() not in ("UTF-8", "US-ASCII"):
            raise No("[BADCHARSET (UTF-8 US-ASCII)] Unsupported charset")
        args = args[2:]
    assert s.folder is not None
    with s.server._lock:
        pred = imapwire.Search(args, len(s.seq), s.seq[-1] if s.seq else 0).all()
        hits = [
            u if uid else i + 1
            for i, u in enumerate(s.seq)
            if u in s.folder.msgs and pred(i + 1, u, s.folder.msgs[u])
        ]
    s.send(b"* SEARCH" + b"".join(b" %d" % h for h in hits) + b"\r\n")
    return "OK Search completed."


async def _idle(s: _Session, cmd: Command, args: _Args) -> str:
    return await imapwire.idle(s, "OK Idle completed.")


_ANY = frozenset((NONAUTH, AUTH, SELECTED))
_COMMANDS: dict[str, tuple[imapwire.Handler, frozenset[int]]] = {
    "CAPABILITY": (_capability, _ANY),
    "NOOP": (_noop, _ANY),
    "LOGOUT": (_logout, _ANY),
    "ID": (_id, _ANY),
    "LOGIN": (_login, frozenset((NONAUTH,))),
    "AUTHENTICATE": (_authenticate, frozenset((NONAUTH,))),
    "ENABLE": (_enable, frozenset((AUTH,))),
    "NAMESPACE": (_namespace, AUTHED),
    "SELECT": (_select, AUTHED),
    "EXAMINE": (_select, AUTHED),
    "CREATE": (_create, AUTHED),
    "DELETE": (_delete, AUTHED),
    "RENAME": (_rename, AUTHED),
    "SUBSCRIBE": (_subscribe, AUTHED),
    "UNSUBSCRIBE": (_subscribe, AUTHED),
    "LIST": (_list, AUTHED),
    "LSUB": (_list, AUTHED),
    "STATUS": (_status, AUTHED),
    "APPEND": (_append, AUTHED),
    "IDLE": (_idle, AUTHED),
    "CHECK": (_noop, SEL),
    "CLOSE": (_close, SEL),
    "UNSELECT": (_close, SEL),
    "EXPUNGE": (_expunge, SEL),
    "UID EXPUNGE": (_expunge, SEL),
    "FETCH": (_fetch, SEL),
    "UID FETCH": (_fetch, SEL),
    "STORE": (_store, SEL),
    "UID STORE": (_store, SEL),
    "COPY": (_copy, SEL),
    "UID COPY": (_copy, SEL),
    "SEARCH": (_search, SEL),
    "UID SEARCH": (_search, SEL),
}


# ---------------------------------------------------------------------------- server


class QuirkyServer(imapwire.ThreadedServer):
    """The quirk-switchable IMAP double on 127.0.0.1 (a free port unless ``port``)."""

    label = "the quirky double"

    def __init__(
        self,
        users: Mapping[str, str] | None = None,
        *,
        quirks: Quirks | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        super().__init__(host, port)
        self.quirks = quirks or Quirks()
        self._lock = threading.RLock()
        self._accounts: dict[str, _Account] = {}
        self.internal_errors: list[str] = []
        for user, password in (users or {}).items():
            self.add_user(user, password)

    def session(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> _Session:
        return _Session(self, reader, writer)

    # ---- seeding and inspection (thread-safe)

    def add_user(self, user: str, password: str) -> None:
        with self._lock:
            if user in self._accounts:
                raise ValueError(f"user {user!r} exists")
            self._accounts[user] = _Account(password)

    def _account(self, user: str) -> _Account:
        acct = self._accounts.get(user)
        if acct is None:
            raise KeyError(f"no user {user!r} in the quirky double")
        return acct

    def _full_name(self, name: str) -> str:
        """A folder's full name: with ``inbox_dot``, "Sent" means "INBOX.Sent"."""
        name = _canonical(name, self.quirks)
        if self.quirks.inbox_dot and name != "INBOX" and not name.startswith("INBOX."):
            return "INBOX." + name
        return name

    def _folder(self, user: str, name: str) -> _Folder:
        folder = self._account(user).folders.get(self._full_name(name))
        if folder is None:
            raise KeyError(f"no folder {name!r} for {user!r}")
        return folder

    def create_folder(self, user: str, name: str, special_use: str | None = None) -> str:
        """Create a folder (a Unicode name; under ``INBOX.`` when ``inbox_dot``), with a
        special-use attribute such as ``"\\\\Sent"``; returns its full name."""
        if special_use is not None and special_use not in _SPECIAL_USES:
            raise ValueError(f"special_use must be one of {_SPECIAL_USES}")
        full = self._full_name(name)
        with self._lock:
            folders = self._account(user).folders
            folder = folders.setdefault(full, _Folder(full))
            folder.special_use = special_use
        return full

    def add_message(
        self,
        user: str,
        folder: str,
        raw: bytes,
        flags: Iterable[str] = (),
        internaldate: datetime | None = None,
    ) -> int:
        """Store a message as delivered (APPEND's quirks not applied); returns its UID.
        The folder is created when missing."""
        if internaldate is not None and internaldate.tzinfo is None:
            raise ValueError("internaldate needs a time zone")
        when = internaldate or datetime.now(UTC).replace(microsecond=0)
        with self._lock:
            full = self.create_folder(user, folder) if folder != "INBOX" else "INBOX"
            target = self._account(user).folders[full]
            return target.add(bytes(raw), flags, when).uid

    def folders(self, user: str) -> list[str]:
        with self._lock:
            return list(self._account(user).folders)

    def messages(self, user: str, folder: str) -> list[StoredMessage]:
        with self._lock:
            return [
                StoredMessage(m.uid, frozenset(m.flags), m.internaldate, m.raw)
                for m in self._folder(user, folder).msgs.values()
            ]

    def uidvalidity(self, user: str, folder: str) -> int:
        with self._lock:
            return self._folder(user, folder).uidvalidity

    def snapshot(self, user: str) -> Snapshot:
        """Everything a client could change in an account, as a comparable and hashable
        mapping: folder -> (UIDVALIDITY, UID -> (flags, SHA-256 hex of the bytes))."""
        with self._lock:
            return FrozenMap(
                (
                    name,
                    (
                        f.uidvalidity,
                        FrozenMap(
                            (m.uid, (frozenset(m.flags), hashlib.sha256(m.raw).hexdigest()))
                            for m in f.msgs.values()
                        ),
                    ),
                )
                for name, f in self._account(user).folders.items()
            )

    def commands(self, user: str) -> list[bytes]:
        """Command lines that user's sessions sent (tag and literals stripped; LOGIN's
        arguments never kept), in order."""
        with self._lock:
            return list(self._account(user).commands)

    def with_quirks(self, **changes: Any) -> Quirks:
        """Change quirks of a running server (sessions opened from now on see them)."""
        self.quirks = replace(self.quirks, **changes)
        return self.quirks

    def __repr__(self) -> str:
        where = f"{self.host}:{self._port}" if self._port else "stopped"
        return f"<QuirkyServer {where} {self.quirks}>"
