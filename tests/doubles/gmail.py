"""A Gmail IMAP test double: one label store per account, folders as views of it.

There is no Gmail in the test environment, so this module emulates the *observable* IMAP
behaviour of Gmail, as documented by Google and seen in public transcripts (every
behaviour and its source is listed in ``docs/gmail.md``; nothing here was checked against
the real service)::

    with GmailServer(users={"me@gmail.test": "secret"}) as gmail:
        msgid = gmail.add_message("me@gmail.test", raw, labels={"\\\\Inbox", "Work"})
        imap = imaplib.IMAP4("127.0.0.1", gmail.port)
        ...
        assert gmail.messages("me@gmail.test")[0].labels == {"\\\\Inbox", "Work", "Travel"}

Theory of operation
-------------------
*Store.*  Each account holds its messages once (:class:`_Message`: X-GM-MSGID, X-GM-THRID,
exact bytes, INTERNALDATE, flags and a set of labels).  System labels are spelled as Gmail
spells them in ``X-GM-LABELS``: ``\\Inbox``, ``\\Sent``, ``\\Draft``, ``\\Important``,
``\\Starred``, ``\\Spam``, ``\\Trash``; every other label is a user label, a Unicode name
whose hierarchy separator is ``/``.  ``\\Starred`` is not stored: it *is* the ``\\Flagged``
flag.

*Folders are views.*  A folder (:class:`_View`) is a predicate over the store plus its own
UIDVALIDITY and UID counter: ``INBOX`` shows ``\\Inbox``, a user-label folder shows its
label, ``[Gmail]/All Mail`` every message that is not in Spam or Trash, ``[Gmail]/Starred``
the ``\\Flagged`` ones, and so on (``_SYSTEM_FOLDERS``).  Spam and Trash hide a message from
every other view.  Whenever a message changes, every view is re-evaluated for it
(:meth:`_Account.reindex`): a message entering a view gets that view's next UID, one
leaving it loses its UID.  So a message with three labels has one X-GM-MSGID and a UID in
each of the three folders and in All Mail.  IMAP verbs on a folder act on labels:
``APPEND``/``COPY`` into a folder add its label (no second message), ``EXPUNGE`` removes it
(from Trash and Spam it deletes the message), ``STORE +X-GM-LABELS`` adds labels.

*Server.*  An asyncio server on 127.0.0.1 in a background thread, so synchronous tests and
a CLI in a subprocess can use it.  One :class:`_Session` per connection reads commands in
order (pipelined commands are answered in order), with synchronizing literals (``+ go
ahead``) and LITERAL- non-synchronizing literals of up to 4096 bytes (RFC 7888).  Each
session keeps its own view of the selected folder's sequence numbers and reports other
sessions' changes as ``EXISTS``/``EXPUNGE`` where RFC 3501 7.4.1 allows them.  The store is
shared by the loop thread and the test thread under one lock; handlers never hold it across
an ``await``.

*Quirks* that are Gmail's but get in the way of ordinary tests are off unless asked for in
the constructor: Message-ID de-duplication on APPEND, the connection limit, daily bandwidth
caps, ``[THROTTLED]`` hints and a hook that answers any command in place of the double.

*OAuth2* (issue 16), when given a test provider (``oauth_server=``): ``AUTHENTICATE
XOAUTH2`` and ``OAUTHBEARER``, tokens checked by the provider's introspection, and
optionally Microsoft's ``* BYE`` when a session's token expires (``bye_on_expiry``).

Not emulated: TLS (plain text on loopback only), COMPRESS, QRESYNC, ENVELOPE and
BODYSTRUCTURE, MIME part sections; they answer ``BAD`` with a text that says so.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import bisect
import collections
import hashlib
import itertools
import json
import logging
import re
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from tests.doubles import imapwire
from tests.doubles.imapwire import ANY as _ANY
from tests.doubles.imapwire import AUTH as _AUTH
from tests.doubles.imapwire import AUTHED as _AUTHED
from tests.doubles.imapwire import LOGOUT as _LOGOUT
from tests.doubles.imapwire import MAX_LITERAL as _MAX_LITERAL
from tests.doubles.imapwire import NONAUTH as _NONAUTH
from tests.doubles.imapwire import SEL as _SEL
from tests.doubles.imapwire import SELECTED as _SELECTED
from tests.doubles.imapwire import SYSTEM_FLAGS as _SYSTEM_FLAGS
from tests.doubles.imapwire import Bad as _Bad
from tests.doubles.imapwire import Command as _Command
from tests.doubles.imapwire import FetchItem as _FetchItem
from tests.doubles.imapwire import Lit as _Lit
from tests.doubles.imapwire import No as _No
from tests.doubles.imapwire import SeqSet as _SeqSet
from tests.doubles.imapwire import astring as _astring
from tests.doubles.imapwire import flag_list as _flag_list
from tests.doubles.imapwire import format_date as _format_date
from tests.doubles.imapwire import header_value as _header_value
from tests.doubles.imapwire import parse_date_time as _parse_date_time
from tests.doubles.imapwire import pattern as _pattern
from tests.doubles.imapwire import quoted as _quoted
from tests.doubles.imapwire import section_bytes as _section_bytes
from tests.doubles.imapwire import uid_list as _uid_list

__all__ = [
    "APPENDLIMIT",
    "DRAFT",
    "IMPORTANT",
    "INBOX",
    "SENT",
    "SPAM",
    "STARRED",
    "SYSTEM_LABELS",
    "TRASH",
    "CommandRecord",
    "GmailMessage",
    "GmailServer",
]

log = logging.getLogger(__name__)

# ---------------------------------------------------------------------------- constants

INBOX = "\\Inbox"
SENT = "\\Sent"
DRAFT = "\\Draft"
IMPORTANT = "\\Important"
STARRED = "\\Starred"
SPAM = "\\Spam"
TRASH = "\\Trash"
SYSTEM_LABELS = frozenset((INBOX, SENT, DRAFT, IMPORTANT, STARRED, SPAM, TRASH))
_ALL = ""  # the key of [Gmail]/All Mail: no label, every message not in Spam or Trash
_SYSTEM_BY_LOWER = {s.lower(): s for s in SYSTEM_LABELS} | {"\\drafts": DRAFT}

#: Gmail's APPENDLIMIT (bytes), as advertised in its CAPABILITY answer.
APPENDLIMIT = 35651584
#: Largest non-synchronizing literal a LITERAL- server takes (RFC 7888 section 5).
LITERAL_MINUS_MAX = 4096
#: Largest literal of any other command (a defence, not a Gmail number).

_PRE_AUTH_CAPS = (
    "IMAP4rev1 UNSELECT IDLE NAMESPACE QUOTA ID XLIST CHILDREN X-GM-EXT-1 XYZZY SASL-IR AUTH=PLAIN"
)
_POST_AUTH_CAPS = (
    "IMAP4rev1 UNSELECT IDLE NAMESPACE QUOTA ID XLIST CHILDREN X-GM-EXT-1 UIDPLUS ENABLE MOVE "
    "CONDSTORE ESEARCH UTF8=ACCEPT LIST-EXTENDED LIST-STATUS LITERAL- SPECIAL-USE"
)
_TOO_BIG = "[TOOBIG] Message too large. https://support.google.com/mail/answer/6584#limit"
_TOO_MANY = "[ALERT] Too many simultaneous connections. (Failure)"
_OVERQUOTA = "[OVERQUOTA] Account exceeded command or bandwidth limits. (Failure)"
_BAD_LOGIN = "[AUTHENTICATIONFAILED] Invalid credentials (Failure)"
_UNAVAILABLE = "[UNAVAILABLE] Temporary System Error"
#: Gmail's IMAP scope: a token without it is refused.
GMAIL_SCOPE = "https://mail.google.com/"
#: The SASL error challenge Gmail sends before its NO when an OAuth2 token is refused
#: (XOAUTH2: Google's "XOAUTH2 protocol" page; OAUTHBEARER: RFC 7628 3.2.2's shape).
_XOAUTH2_ERROR = {"status": "401", "schemes": "bearer mac", "scope": GMAIL_SCOPE}
_OAUTHBEARER_ERROR = {"status": "invalid_token", "schemes": "bearer", "scope": GMAIL_SCOPE}
#: What Microsoft's IMAP servers say when a session's access token runs out.
BYE_TOKEN_EXPIRED = b"* BYE Session invalidated - AccessTokenExpired\r\n"
_BAD_STATE = "Command received in Invalid state."
_QUOTA_KB = 15 * 1024 * 1024  # 15 GB of free storage, in the QUOTA command's units (KiB)

#: (folder name under the system prefix, label key, RFC 6154 attribute, XLIST attribute)
_SYSTEM_FOLDERS = (
    ("All Mail", _ALL, "\\All", "\\AllMail"),
    ("Drafts", DRAFT, "\\Drafts", "\\Drafts"),
    ("Important", IMPORTANT, "\\Important", "\\Important"),
    ("Sent Mail", SENT, "\\Sent", "\\Sent"),
    ("Spam", SPAM, "\\Junk", "\\Spam"),
    ("Starred", STARRED, "\\Flagged", "\\Starred"),
    ("Trash", TRASH, "\\Trash", "\\Trash"),
)

_GM_ITEMS = ("X-GM-MSGID", "X-GM-THRID", "X-GM-LABELS", "MODSEQ")
_BASE_FLAGS = ("\\Answered", "\\Flagged", "\\Draft", "\\Deleted", "\\Seen")
_GMAIL_KEYWORDS = ("$NotPhishing", "$Phishing")
_MSGID_BASE = 0x18E0_0000_0000_0000  # X-GM-MSGIDs are 64-bit numbers of this magnitude
_MSGID_STEP = 0x1_0001


# ---------------------------------------------------------------------------- public data


@dataclass(frozen=True, slots=True)
class GmailMessage:
    """A snapshot of one stored message, as the web interface would see it.

    ``labels`` are the message's labels as ``X-GM-LABELS`` spells them in All Mail
    (``\\Inbox``, ``\\Starred`` when flagged, user labels as Unicode names); ``flags`` are
    its IMAP flags and keywords (``\\Deleted`` is per folder in Gmail and not included).
    """

    msgid: int
    thrid: int
    labels: frozenset[str]
    flags: frozenset[str]
    internaldate: datetime
    raw: bytes


@dataclass(frozen=True, slots=True)
class CommandRecord:
    """One command the double answered (no arguments: they may hold secrets)."""

    user: str | None
    command: str
    status: str  # OK, NO or BAD
    text: str  # the tagged answer's text for NO and BAD, "" for OK


# ---------------------------------------------------------------------------- helpers


_ANGLE_ID = re.compile(rb"<[^<>\s]+>")

# ---------------------------------------------------------------------------- store


@dataclass(eq=False, slots=True)
class _Message:
    msgid: int
    thrid: int
    raw: bytes
    internaldate: datetime
    labels: set[str]  # never STARRED: that is the \Flagged flag
    flags: set[str]  # never \Deleted (per folder) or \Recent
    modseq: int
    message_id: bytes | None

    def visible_labels(self) -> set[str]:
        return self.labels | ({STARRED} if "\\Flagged" in self.flags else set())

    @property
    def hidden(self) -> bool:
        return TRASH in self.labels or SPAM in self.labels


@dataclass(eq=False, slots=True)
class _View:
    name: str  # "INBOX", "Work/2024", "[Gmail]/All Mail"
    key: str  # the label it shows, _ALL for All Mail, STARRED for the starred view
    special_use: str | None
    xlist: str | None
    uidvalidity: int
    uidnext: int = 1
    uids: list[int] = field(default_factory=list)
    msgid_of: dict[int, int] = field(default_factory=dict)  # uid -> msgid
    uid_of: dict[int, int] = field(default_factory=dict)  # msgid -> uid
    deleted: set[int] = field(default_factory=set)  # msgids marked \Deleted in this folder
    subscribed: bool = True

    def add(self, msgid: int) -> int:
        uid = self.uidnext
        self.uidnext += 1
        self.uids.append(uid)
        self.msgid_of[uid] = msgid
        self.uid_of[msgid] = uid
        return uid

    def remove(self, msgid: int) -> None:
        uid = self.uid_of.pop(msgid)
        del self.msgid_of[uid]
        i = bisect.bisect_left(self.uids, uid)
        del self.uids[i]
        self.deleted.discard(msgid)


class _Account:
    """One user's store and folders.  Every method expects the server lock to be held."""

    def __init__(self, email: str, password: str, prefix: str, msgids: Iterator[int]) -> None:
        self.email = email
        self.password = password
        self.prefix = prefix
        self._msgids = msgids
        self._uidvalidity = itertools.count(1)
        self.views: dict[str, _View] = {}
        self.messages: dict[int, _Message] = {}
        self.by_message_id: dict[bytes, list[int]] = collections.defaultdict(list)
        self.modseq = 1
        self.connections = 0
        self.down = 0
        self.up = 0
        self._new_view("INBOX", INBOX, None, "\\Inbox")
        for name, key, use, xlist in _SYSTEM_FOLDERS:
            self._new_view(f"{prefix}/{name}", key, use, xlist)

    def _new_view(self, name: str, key: str, use: str | None, xlist: str | None) -> _View:
        view = _View(name, key, use, xlist, next(self._uidvalidity))
        self.views[name] = view
        return view

    # ---- names

    def view(self, name: str) -> _View | None:
        if name.upper() == "INBOX":
            return self.views["INBOX"]
        return self.views.get(name)

    def is_system_name(self, name: str) -> bool:
        return name == self.prefix or name.startswith(self.prefix + "/")

    def check_label_name(self, name: str) -> None:
        if (
            not name
            or name.startswith("/")
            or name.endswith("/")
            or "//" in name
            or name.startswith("\\")
            or name.upper() == "INBOX"
            or self.is_system_name(name)
        ):
            raise _No(f"[CANNOT] Invalid folder: {name} (Failure)")

    def create_label(self, name: str) -> _View:
        """Create a user label (and its missing parents: every Gmail label is selectable)."""
        self.check_label_name(name)
        parts = name.split("/")
        view = None
        for i in range(1, len(parts) + 1):
            sub = "/".join(parts[:i])
            view = self.views.get(sub) or self._new_view(sub, sub, None, None)
        assert view is not None
        return view

    def delete_label(self, view: _View) -> None:
        for msgid in list(view.uid_of):
            msg = self.messages[msgid]
            msg.labels.discard(view.key)
            self.touch(msg)
        del self.views[view.name]

    def rename_label(self, view: _View, new: str) -> None:
        self.check_label_name(new)
        if self.view(new) is not None:
            raise _No(f"[ALREADYEXISTS] Duplicate folder name {new} (Failure)")
        olds = [v for n, v in self.views.items() if n == view.name or n.startswith(view.name + "/")]
        for old in olds:
            name = new + old.name[len(view.name) :]
            moved = self.create_label(name)
            moved.subscribed = old.subscribed
            for msgid in list(old.uid_of):
                msg = self.messages[msgid]
                msg.labels.discard(old.key)
                msg.labels.add(moved.key)
                self.touch(msg)
            del self.views[old.name]

    def folder_names(self) -> list[str]:
        """Every name LIST shows: INBOX first, then the rest sorted, "[Gmail]" included."""
        return ["INBOX", *sorted([*(n for n in self.views if n != "INBOX"), self.prefix])]

    # ---- membership

    def in_view(self, view: _View, msg: _Message) -> bool:
        key = view.key
        if key == TRASH:
            return TRASH in msg.labels
        if key == SPAM:
            return SPAM in msg.labels and TRASH not in msg.labels
        if msg.hidden:
            return False
        if key == _ALL:
            return True
        if key == STARRED:
            return "\\Flagged" in msg.flags
        return key in msg.labels

    def reindex(self, msg: _Message) -> None:
        for view in self.views.values():
            present = self.in_view(view, msg)
            mapped = msg.msgid in view.uid_of
            if present and not mapped:
                view.add(msg.msgid)
            elif mapped and not present:
                view.remove(msg.msgid)

    def touch(self, msg: _Message) -> None:
        self.modseq += 1
        msg.modseq = self.modseq
        self.reindex(msg)

    # ---- messages

    def add(
        self,
        raw: bytes,
        labels: Iterable[str],
        flags: Iterable[str],
        internaldate: datetime,
        thrid: int | None = None,
    ) -> _Message:
        msgid = next(self._msgids)
        message_id = _header_value(raw, b"message-id") or None
        if thrid is None:
            thrid = self._thread_of(raw) or msgid
        msg = _Message(msgid, thrid, raw, internaldate, set(), set(), 0, message_id)
        for label in labels:
            if label == STARRED:
                msg.flags.add("\\Flagged")
            else:
                msg.labels.add(label)
        msg.flags.update(flags)
        self.messages[msgid] = msg
        if message_id:
            self.by_message_id[message_id].append(msgid)
        self.touch(msg)
        return msg

    def _thread_of(self, raw: bytes) -> int | None:
        refs = b" ".join(
            v for v in (_header_value(raw, b"in-reply-to"), _header_value(raw, b"references")) if v
        )
        for ref in _ANGLE_ID.findall(refs):
            for msgid in self.by_message_id.get(ref, ()):
                return self.messages[msgid].thrid
        return None

    def delete_forever(self, msg: _Message) -> None:
        for view in self.views.values():
            if msg.msgid in view.uid_of:
                view.remove(msg.msgid)
        del self.messages[msg.msgid]
        if msg.message_id:
            ids = self.by_message_id[msg.message_id]
            ids.remove(msg.msgid)
            if not ids:
                del self.by_message_id[msg.message_id]
        self.modseq += 1

    def add_to(self, view: _View, msg: _Message) -> None:
        """COPY or APPEND into ``view``: give the message the folder's label."""
        if view.key == TRASH:
            msg.labels.add(TRASH)
            msg.labels.discard(SPAM)
        elif view.key == SPAM:
            msg.labels.add(SPAM)
        else:
            msg.labels.discard(TRASH)
            msg.labels.discard(SPAM)
            if view.key == STARRED:
                msg.flags.add("\\Flagged")
            elif view.key != _ALL:
                msg.labels.add(view.key)
        self.touch(msg)

    def move_out(self, view: _View, msg: _Message) -> None:
        """The source half of MOVE: take the folder's label away (All Mail keeps it)."""
        if view.key == STARRED:
            msg.flags.discard("\\Flagged")
        elif view.key != _ALL:
            msg.labels.discard(view.key)
        self.touch(msg)

    def expunge_from(self, view: _View, msg: _Message, behavior: str) -> None:
        """EXPUNGE of a \\Deleted message from ``view`` (Gmail's IMAP settings semantics)."""
        view.deleted.discard(msg.msgid)
        if view.key in (TRASH, SPAM):
            self.delete_forever(msg)
            return
        if view.key == _ALL:
            if behavior == "delete":
                self.delete_forever(msg)
            else:
                msg.labels.add(TRASH)
                self.touch(msg)
            return
        if view.key == STARRED:
            msg.flags.discard("\\Flagged")
        else:
            msg.labels.discard(view.key)
        if not msg.visible_labels():  # expunged from the last visible folder
            if behavior == "trash":
                msg.labels.add(TRASH)
            elif behavior == "delete":
                self.delete_forever(msg)
                return
        self.touch(msg)

    def keywords(self) -> list[str]:
        kws = {f for m in self.messages.values() for f in m.flags if not f.startswith("\\")}
        return sorted(kws - set(_GMAIL_KEYWORDS))

    def snapshot(self, msg: _Message) -> GmailMessage:
        return GmailMessage(
            msg.msgid,
            msg.thrid,
            frozenset(msg.visible_labels()),
            frozenset(msg.flags),
            msg.internaldate,
            msg.raw,
        )


# ---------------------------------------------------------------------------- commands


class _Session(imapwire.WireSession):
    """One client connection: the IMAP state machine (RFC 3501 3)."""

    greeting = b"* OK Gimap ready for requests from 127.0.0.1 yippiemove-double\r\n"
    line_too_long = b"* BYE [TOOBIG] Command line too long (Failure)\r\n"
    nonsync_max = LITERAL_MINUS_MAX

    def __init__(
        self, server: GmailServer, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        super().__init__(reader, writer)
        self.server = server
        self.account: _Account | None = None
        self.view: _View | None = None
        self.readonly = False
        self.seq: list[int] = []  # UIDs of the selected folder as this client knows them
        self.seq_msgid: dict[int, int] = {}  # uid -> msgid, for those
        self.uid_high = 0
        self.utf8 = False
        self.condstore = False
        self.counted = False
        self.token_expires: float | None = None  # logged in with an OAuth2 token: its exp

    def release(self) -> None:
        """No longer count this connection against the account's limit."""
        with self.server._lock:
            if self.counted and self.account is not None:
                self.account.connections -= 1
                self.counted = False

    def nonsync_refusal(self, n: int) -> str:
        return (
            "[TOOBIG] Non-synchronizing literal larger than 4096 bytes "
            "(this server has LITERAL-, not LITERAL+)"
        )

    def refuse_literal(self, name: str, n: int) -> str | None:
        limit = self.server.append_limit
        if name == "APPEND" and self.state != _NONAUTH and limit is not None and n > limit:
            return "BAD " + _TOO_BIG
        if n > _MAX_LITERAL:
            return "BAD [TOOBIG] Literal too large for the Gmail double"
        return None

    def answer(self, tag: str, name: str, response: str) -> None:
        status, _, text = response.partition(" ")
        if status == "OK" and self.server.throttled:
            response += " [THROTTLED]"
        self.server._record(  # first: a client that has the answer finds it logged
            CommandRecord(
                self.account.email if self.account else None,
                name,
                status,
                "" if status == "OK" else text,
            )
        )
        self.send(f"{tag} {response}\r\n".encode("utf-8", "replace"))

    async def dispatch(self, cmd: _Command) -> None:
        if (
            self.server.bye_on_expiry
            and self.token_expires is not None
            and time.time() >= self.token_expires
        ):
            # like Microsoft's servers: the session ends with its token, the command unanswered
            self.send(BYE_TOKEN_EXPIRED)
            self.state = _LOGOUT
            self.release()
            return
        entry = _COMMANDS.get(cmd.name)
        if entry is None:
            self.answer(
                cmd.tag,
                cmd.name,
                f"BAD Unknown command {cmd.name} (not implemented by the Gmail double)",
            )
            return
        handler, states = entry
        if self.state not in states:
            self.answer(cmd.tag, cmd.name, "BAD " + _BAD_STATE)
            return
        hook = self.server.command_hook
        if hook is not None:
            canned = hook(self.account.email if self.account else None, cmd.name)
            if canned is not None:
                self.answer(cmd.tag, cmd.name, canned)
                return
        await self.execute(cmd, handler)

    def internal_error(self, cmd: _Command, exc: Exception) -> str:
        log.exception("Gmail double: internal error in %s", cmd.name)
        self.server._internal_error(f"{cmd.name}: {exc!r}")
        return f"BAD [SERVERBUG] Internal error in the Gmail double: {exc!r}"

    # ---- selected-folder bookkeeping

    def sync(self, *, expunges: bool) -> None:
        """Tell the client what changed in its folder (RFC 3501 7.4.1: no EXPUNGE sometimes)."""
        view = self.view
        if view is None:
            return
        with self.server._lock:
            if expunges:
                gone = [i for i, uid in enumerate(self.seq) if uid not in view.msgid_of]
                for i in reversed(gone):
                    uid = self.seq.pop(i)
                    self.seq_msgid.pop(uid, None)
                    self.send(b"* %d EXPUNGE\r\n" % (i + 1))
            start = bisect.bisect_right(view.uids, self.uid_high)
            new = view.uids[start:]
            for uid in new:
                self.seq.append(uid)
                self.seq_msgid[uid] = view.msgid_of[uid]
            if new:
                self.uid_high = new[-1]
                self.send(b"* %d EXISTS\r\n" % len(self.seq))

    def select_view(self, view: _View) -> None:
        self.view = view
        self.seq = list(view.uids)
        self.seq_msgid = {uid: view.msgid_of[uid] for uid in self.seq}
        self.uid_high = view.uids[-1] if view.uids else 0

    def unselect(self) -> None:
        self.view = None
        self.seq = []
        self.seq_msgid = {}
        self.uid_high = 0
        if self.state == _SELECTED:
            self.state = _AUTH

    def targets(self, spec: object, uid: bool) -> list[tuple[int, int, _Message]]:
        """(sequence number, UID, message) of the selected messages a set names."""
        acct = self.account
        assert acct is not None
        if uid:
            sset = _SeqSet(spec, self.seq[-1] if self.seq else 0)
            picked = [(i + 1, u) for i, u in enumerate(self.seq) if u in sset]
        else:
            sset = _SeqSet(spec, len(self.seq))
            picked = [(i + 1, self.seq[i]) for i in range(len(self.seq)) if i + 1 in sset]
        out = []
        for n, u in picked:
            msg = acct.messages.get(self.seq_msgid[u])
            if msg is not None:
                out.append((n, u, msg))
        return out

    # ---- names

    def decode_name(self, tok: object) -> str:
        return imapwire.mailbox_name(tok, self.utf8, lenient=True)

    def encode_name(self, name: str) -> bytes:
        return imapwire.mailbox_wire(name, self.utf8)

    def label_out(self, label: str) -> bytes:
        if label in SYSTEM_LABELS:
            return _quoted(label.encode("ascii"))
        return _astring(self.encode_name(label))

    def labels_out(self, msg: _Message) -> bytes:
        labels = msg.visible_labels()
        view = self.view
        if view is not None and self.server.omit_selected_label:
            labels.discard(view.key)
        return b"(" + b" ".join(sorted(self.label_out(lb) for lb in labels)) + b")"

    def flags_out(self, msg: _Message) -> bytes:
        flags = sorted(msg.flags)
        if self.view is not None and msg.msgid in self.view.deleted:
            flags.append("\\Deleted")
        return b"(" + " ".join(flags).encode("utf-8") + b")"

    def account_or_fail(self) -> _Account:
        assert self.account is not None
        return self.account

    def need_view(self, tok: object) -> tuple[str, _View]:
        acct = self.account_or_fail()
        name = self.decode_name(tok)
        view = acct.view(name)
        if view is None:
            raise _No(f"[NONEXISTENT] Unknown Mailbox: {name} (Failure)")
        return name, view


# ---------------------------------------------------------------------------- handlers


async def _cmd_capability(s: _Session, cmd: _Command, args: list[Any]) -> str:
    s.send(b"* CAPABILITY " + s.server.capabilities(s.state != _NONAUTH).encode() + b"\r\n")
    return "OK Thats all she wrote!" if s.state == _NONAUTH else "OK Success"


async def _cmd_noop(s: _Session, cmd: _Command, args: list[Any]) -> str:
    return "OK Success"


async def _cmd_xyzzy(s: _Session, cmd: _Command, args: list[Any]) -> str:
    s.send(b"* OK Nothing happens.\r\n")
    return "OK Success"


async def _cmd_logout(s: _Session, cmd: _Command, args: list[Any]) -> str:
    s.send(b"* BYE LOGOUT Requested\r\n")
    s.unselect()
    s.state = _LOGOUT
    s.release()  # before the answer: a client that saw it may log in again at once
    return "OK 73 good day (Success)"


async def _cmd_id(s: _Session, cmd: _Command, args: list[Any]) -> str:
    s.send(
        b'* ID ("name" "GImap" "vendor" "Google, Inc." "support-url" '
        b'"https://support.google.com/mail" "remote-host" "127.0.0.1")\r\n'
    )
    return "OK Success"


async def _cmd_login(s: _Session, cmd: _Command, args: list[Any]) -> str:
    if len(args) != 2 or not all(isinstance(a, str | bytes) for a in args):
        raise _Bad("Could not parse command: LOGIN needs a user name and a password")
    user, password = (a.encode("latin-1") if isinstance(a, str) else a for a in args)
    return s.server._login(s, user.decode("utf-8", "replace"), password.decode("utf-8", "replace"))


async def _cmd_authenticate(s: _Session, cmd: _Command, args: list[Any]) -> str:
    mechanism = args[0].upper() if args and isinstance(args[0], str) else ""
    if mechanism in s.server.oauth_mechanisms and s.server.oauth_introspection_url:
        return await _oauth2_authenticate(s, mechanism, args)
    user, password = await imapwire.plain_credentials(s, args, _BAD_LOGIN)
    return s.server._login(s, user, password)


def _sasl_fields(mechanism: str, decoded: bytes) -> tuple[str, str] | None:
    """(user, bearer token) of an XOAUTH2 or OAUTHBEARER (RFC 7628 3.1) initial response."""
    if mechanism == "XOAUTH2":
        # user=USER ^A auth=Bearer TOKEN ^A ^A
        parts = decoded.split(b"\x01")
        fields = dict(p.split(b"=", 1) for p in parts if b"=" in p)
        user = fields.get(b"user")
    else:
        # gs2-header "n,a=USER," ^A key=value ^A ... ^A ^A
        gs2, _, rest = decoded.partition(b"\x01")
        m = re.fullmatch(rb"[ny],(?:a=([^,]*))?,", gs2)
        if m is None:
            return None
        user = m.group(1)
        fields = dict(p.split(b"=", 1) for p in rest.split(b"\x01") if b"=" in p)
    auth = fields.get(b"auth", b"")
    scheme, _, token = auth.partition(b" ")
    if user is None or scheme.lower() != b"bearer" or not token:
        return None
    user = user.replace(b"=2C", b",").replace(b"=3D", b"=")  # RFC 5801 saslname
    return user.decode("utf-8", "replace"), token.decode("ascii", "replace")


async def _oauth2_authenticate(s: _Session, mechanism: str, args: list[Any]) -> str:
    """AUTHENTICATE XOAUTH2 / OAUTHBEARER: the token is checked by introspection at the
    test provider.  A refused token gets an error challenge first ("+ BASE64(JSON)"); the
    client answers it (anything: an empty line, "AQ==") and then gets the NO."""
    if len(args) > 1:
        raw = args[1].encode("latin-1") if isinstance(args[1], str) else bytes(args[1])
    else:
        s.send(b"+ \r\n")
        await s.flush()
        line = await s.readline()
        if line is None:
            s.state = _LOGOUT
            raise _Bad("Connection closed during AUTHENTICATE")
        raw = line
    if raw.strip() == b"*":
        raise _Bad("AUTHENTICATE cancelled")
    try:
        parsed = _sasl_fields(mechanism, base64.b64decode(raw, validate=True))
    except (binascii.Error, ValueError):
        parsed = None
    if parsed is None:
        raise _Bad("Invalid SASL argument. (Failure)")
    user, token = parsed
    server = s.server
    info = await asyncio.to_thread(server._introspect, token)
    if info is None:  # the provider is down: a temporary failure, no error challenge
        raise _No(_UNAVAILABLE)
    expires = server._token_valid_for(user, info)
    if expires is None:
        error = _XOAUTH2_ERROR if mechanism == "XOAUTH2" else _OAUTHBEARER_ERROR
        s.send(b"+ " + base64.b64encode(json.dumps(error).encode()) + b"\r\n")
        await s.flush()
        reply = await s.readline()
        if reply is None:
            s.state = _LOGOUT
            raise _Bad("Connection closed during AUTHENTICATE")
        if reply.strip() == b"*":
            raise _Bad("AUTHENTICATE cancelled")
        raise _No(_BAD_LOGIN)
    answer = server._login(s, user, None)
    s.token_expires = expires
    return answer


async def _cmd_enable(s: _Session, cmd: _Command, args: list[Any]) -> str:
    enabled = []
    for a in args:
        if isinstance(a, str) and a.upper() in ("CONDSTORE", "UTF8=ACCEPT"):
            enabled.append(a.upper())
            if a.upper() == "CONDSTORE":
                s.condstore = True
            else:
                s.utf8 = True
    s.send(b"* ENABLED" + b"".join(b" " + e.encode() for e in enabled) + b"\r\n")
    return "OK Success"


async def _cmd_namespace(s: _Session, cmd: _Command, args: list[Any]) -> str:
    s.send(b'* NAMESPACE (("" "/")) NIL NIL\r\n')
    return "OK Success"


async def _cmd_select(s: _Session, cmd: _Command, args: list[Any]) -> str:
    readonly = cmd.name == "EXAMINE"
    if not args:
        raise _Bad(f"Could not parse command: {cmd.name} needs a mailbox")
    if len(args) > 1:
        params = args[1] if isinstance(args[1], list) else []
        if [p.upper() for p in params if isinstance(p, str)] == ["CONDSTORE"]:
            s.condstore = True
        else:
            raise _Bad(f"Could not parse command: unsupported {cmd.name} parameters")
    s.unselect()
    acct = s.account_or_fail()
    with s.server._lock:
        name = s.decode_name(args[0])
        view = acct.view(name)
        if view is None:
            raise _No(
                f"[NONEXISTENT] Unknown Mailbox: {name} (now in authenticated state) (Failure)"
            )
        s.select_view(view)
        s.state = _SELECTED
        s.readonly = readonly
        flags = " ".join((*_BASE_FLAGS, *_GMAIL_KEYWORDS, *acct.keywords()))
        highest = max((acct.messages[m].modseq for m in view.uid_of), default=acct.modseq)
        s.send(
            f"* FLAGS ({flags})\r\n".encode()
            + (
                b"* OK [PERMANENTFLAGS ()] Flags permitted.\r\n"
                if readonly
                else f"* OK [PERMANENTFLAGS ({flags} \\*)] Flags permitted.\r\n".encode()
            )
            + f"* OK [UIDVALIDITY {view.uidvalidity}] UIDs valid.\r\n".encode()
            + f"* {len(s.seq)} EXISTS\r\n* 0 RECENT\r\n".encode()
            + f"* OK [UIDNEXT {view.uidnext}] Predicted next UID.\r\n".encode()
            + f"* OK [HIGHESTMODSEQ {highest}]\r\n".encode()
        )
        shown = s.encode_name(view.name).decode("utf-8")
    mode = "READ-ONLY" if readonly else "READ-WRITE"
    return f"OK [{mode}] {shown} selected. (Success)"


async def _cmd_create(s: _Session, cmd: _Command, args: list[Any]) -> str:
    if len(args) != 1:
        raise _Bad("Could not parse command: CREATE needs a mailbox")
    acct = s.account_or_fail()
    name = s.decode_name(args[0]).rstrip("/")
    with s.server._lock:
        if acct.view(name) is not None or name == acct.prefix:
            raise _No(f"[ALREADYEXISTS] Duplicate folder name {name} (Failure)")
        acct.create_label(name)
    return "OK Success"


async def _cmd_delete(s: _Session, cmd: _Command, args: list[Any]) -> str:
    if len(args) != 1:
        raise _Bad("Could not parse command: DELETE needs a mailbox")
    acct = s.account_or_fail()
    name = s.decode_name(args[0])
    with s.server._lock:
        view = acct.view(name)
        if view is None:
            raise _No(f"[NONEXISTENT] No folder {name} (Failure)")
        if view.key in SYSTEM_LABELS or view.key == _ALL:
            raise _No(f"[CANNOT] Cannot delete system folder {name} (Failure)")
        if s.view is view:
            s.unselect()
        acct.delete_label(view)
    return "OK Success"


async def _cmd_rename(s: _Session, cmd: _Command, args: list[Any]) -> str:
    if len(args) != 2:
        raise _Bad("Could not parse command: RENAME needs two mailboxes")
    acct = s.account_or_fail()
    old, new = s.decode_name(args[0]), s.decode_name(args[1]).rstrip("/")
    with s.server._lock:
        view = acct.view(old)
        if view is None:
            raise _No(f"[NONEXISTENT] No folder {old} (Failure)")
        if view.key in SYSTEM_LABELS or view.key == _ALL:
            raise _No(f"[CANNOT] Cannot rename system folder {old} (Failure)")
        if s.view is not None and (s.view.name == old or s.view.name.startswith(old + "/")):
            s.unselect()
        acct.rename_label(view, new)
    return "OK Success"


async def _cmd_subscribe(s: _Session, cmd: _Command, args: list[Any]) -> str:
    if len(args) != 1:
        raise _Bad(f"Could not parse command: {cmd.name} needs a mailbox")
    with s.server._lock:
        _name, view = s.need_view(args[0])
        view.subscribed = cmd.name == "SUBSCRIBE"
    return "OK Success"


def _status_items(
    s: _Session, view: _View, items: list[Any]
) -> bytes:  # the parenthesised STATUS answer
    acct = s.account_or_fail()
    out = []
    for it in items:
        if not isinstance(it, str):
            raise _Bad("Could not parse command: bad STATUS item")
        up = it.upper()
        if up == "MESSAGES":
            value = len(view.uids)
        elif up == "RECENT":
            value = 0
        elif up == "UIDNEXT":
            value = view.uidnext
        elif up == "UIDVALIDITY":
            value = view.uidvalidity
        elif up == "UNSEEN":
            value = sum("\\Seen" not in acct.messages[m].flags for m in view.uid_of)
        elif up == "HIGHESTMODSEQ":
            value = max((acct.messages[m].modseq for m in view.uid_of), default=acct.modseq)
        else:
            raise _Bad(
                f"Could not parse command: unknown STATUS item {up[:20]} "
                "(Gmail offers MESSAGES RECENT UIDNEXT UIDVALIDITY UNSEEN HIGHESTMODSEQ)"
            )
        out.append(f"{up} {value}")
    return ("(" + " ".join(out) + ")").encode()


async def _cmd_status(s: _Session, cmd: _Command, args: list[Any]) -> str:
    if len(args) != 2 or not isinstance(args[1], list):
        raise _Bad("Could not parse command: STATUS needs a mailbox and a list of items")
    with s.server._lock:
        _name, view = s.need_view(args[0])
        s.send(
            b"* STATUS "
            + _quoted(s.encode_name(view.name))
            + b" "
            + _status_items(s, view, args[1])
            + b"\r\n"
        )
    return "OK Success"


async def _cmd_list(s: _Session, cmd: _Command, args: list[Any]) -> str:
    acct = s.account_or_fail()
    args = list(args)
    select_opts: set[str] = set()
    if args and isinstance(args[0], list):
        select_opts = {str(o).upper() for o in args.pop(0)}
        unknown = select_opts - {"SUBSCRIBED", "SPECIAL-USE", "REMOTE", "RECURSIVEMATCH"}
        if unknown:
            raise _Bad(f"Could not parse command: unsupported LIST selection {sorted(unknown)}")
    return_opts: set[str] = set()
    status_items: list[Any] | None = None
    if len(args) >= 4 and isinstance(args[-2], str) and args[-2].upper() == "RETURN":
        opts = args[-1] if isinstance(args[-1], list) else []
        args = args[:-2]
        i = 0
        while i < len(opts):
            o = str(opts[i]).upper()
            if o == "STATUS" and i + 1 < len(opts) and isinstance(opts[i + 1], list):
                status_items = opts[i + 1]
                i += 2
                continue
            if o not in ("SUBSCRIBED", "CHILDREN", "SPECIAL-USE"):
                raise _Bad(f"Could not parse command: unsupported LIST return option {o[:20]}")
            return_opts.add(o)
            i += 1
    if len(args) != 2:
        raise _Bad("Could not parse command: LIST needs a reference and a pattern")
    ref = args[0].encode("latin-1") if isinstance(args[0], str) else args[0]
    pats = args[1] if isinstance(args[1], list) else [args[1]]
    patterns = [
        ref + (p.encode("latin-1") if isinstance(p, str) else bytes(p))
        for p in pats
        if isinstance(p, str | bytes)
    ]
    verb = cmd.name.encode()
    lsub = cmd.name == "LSUB"
    if patterns == [b""] or (not patterns and not pats):
        s.send(b"* " + verb + b' (\\Noselect) "/" ""\r\n')
        return "OK Success"
    regexes = [_pattern(p) for p in patterns]
    with s.server._lock:
        names = acct.folder_names()
        for name in names:
            wire = s.encode_name(name)
            ok = any(r.match(wire) for r in regexes)
            if name == "INBOX" and not ok:  # INBOX is case-insensitive (RFC 3501 5.1)
                ok = any(re.compile(r.pattern, re.I | re.S).match(b"INBOX") for r in regexes)
            if not ok:
                continue
            view = acct.views.get(name)
            subscribed = view is not None and view.subscribed
            if (lsub or "SUBSCRIBED" in select_opts) and not subscribed:
                continue
            if "SPECIAL-USE" in select_opts and (view is None or not view.special_use):
                continue
            attrs: list[str] = []
            children = any(n.startswith(name + "/") for n in names)
            if view is None:
                attrs.append("\\Noselect")
            attrs.append("\\HasChildren" if children else "\\HasNoChildren")
            if cmd.name == "XLIST":
                if view is not None and view.xlist:
                    attrs.append(view.xlist)
                if name == "INBOX":
                    wire = b"Inbox"
            elif view is not None and view.special_use:
                attrs.append(view.special_use)
            if ("SUBSCRIBED" in return_opts or "SUBSCRIBED" in select_opts) and subscribed:
                attrs.append("\\Subscribed")
            if view is not None:
                attrs = sorted(attrs)
            s.send(
                b"* "
                + verb
                + b" ("
                + " ".join(attrs).encode()
                + b') "/" '
                + _quoted(wire)
                + b"\r\n"
            )
            if status_items is not None and view is not None:
                s.send(
                    b"* STATUS "
                    + _quoted(wire)
                    + b" "
                    + _status_items(s, view, status_items)
                    + b"\r\n"
                )
    return "OK Success"


async def _cmd_quota(s: _Session, cmd: _Command, args: list[Any]) -> str:
    acct = s.account_or_fail()
    with s.server._lock:
        used = sum(len(m.raw) for m in acct.messages.values()) // 1024
    if cmd.name == "GETQUOTAROOT":
        if len(args) != 1:
            raise _Bad("Could not parse command: GETQUOTAROOT needs a mailbox")
        name = s.decode_name(args[0])
        s.send(b"* QUOTAROOT " + _quoted(s.encode_name(name)) + b' ""\r\n')
    s.send(f'* QUOTA "" (STORAGE {used} {_QUOTA_KB})\r\n'.encode())
    return "OK Success"


async def _cmd_append(s: _Session, cmd: _Command, args: list[Any]) -> str:
    if len(args) < 2 or not isinstance(args[-1], _Lit):
        raise _Bad("Could not parse command: APPEND needs a mailbox and a message literal")
    raw = bytes(args[-1])
    flags: list[str] = []
    when: datetime | None = None
    for extra in args[1:-1]:
        if isinstance(extra, list):
            flags = _flag_list(extra)
        elif isinstance(extra, bytes):
            when = _parse_date_time(extra.decode("latin-1"))
        else:
            raise _Bad(
                f"Could not parse command: unexpected APPEND argument {extra!r:.40} "
                "(one message per APPEND: this server has no MULTIAPPEND)"
            )
    server = s.server
    if server.append_limit is not None and len(raw) > server.append_limit:
        raise _Bad(_TOO_BIG)
    acct = s.account_or_fail()
    with server._lock:
        name = s.decode_name(args[0])
        view = acct.view(name)
        if view is None:
            if name == acct.prefix:
                raise _No(f"[CANNOT] Cannot append to {name} (Failure)")
            raise _No(f"[TRYCREATE] No folder {name} (Failure)")
        if server.upload_limit is not None and acct.up + len(raw) > server.upload_limit:
            raise _No(_OVERQUOTA)
        acct.up += len(raw)
        existing = None
        if server.dedupe_message_id:
            mid = _header_value(raw, b"message-id")
            ids = acct.by_message_id.get(mid, []) if mid else []
            existing = acct.messages[ids[0]] if ids else None
        if existing is not None:
            msg = existing
        else:
            keep = [f for f in flags if f != "\\Deleted"]
            msg = acct.add(raw, (), keep, when or datetime.now(UTC).replace(microsecond=0))
        acct.add_to(view, msg)
        if "\\Deleted" in flags and existing is None:
            view.deleted.add(msg.msgid)
        uid = view.uid_of.get(msg.msgid, 0)
    return f"OK [APPENDUID {view.uidvalidity} {uid}] (Success)"


async def _cmd_idle(s: _Session, cmd: _Command, args: list[Any]) -> str:
    return await imapwire.idle(s, "OK IDLE terminated (Success)")


async def _cmd_check(s: _Session, cmd: _Command, args: list[Any]) -> str:
    return "OK Success"


async def _cmd_close(s: _Session, cmd: _Command, args: list[Any]) -> str:
    view = s.view
    acct = s.account_or_fail()
    if view is not None and cmd.name == "CLOSE" and not s.readonly:
        with s.server._lock:
            for msgid in list(view.deleted):
                msg = acct.messages.get(msgid)
                if msg is not None:
                    acct.expunge_from(view, msg, s.server.expunge_behavior)
    s.unselect()
    return "OK Returned to authenticated state. (Success)"


async def _cmd_expunge(s: _Session, cmd: _Command, args: list[Any]) -> str:
    if s.readonly:
        raise _No("[READ-ONLY] Mailbox is read-only (Failure)")
    view = s.view
    assert view is not None
    acct = s.account_or_fail()
    with s.server._lock:
        chosen: set[int] | None = None
        if cmd.name == "UID EXPUNGE":
            if len(args) != 1:
                raise _Bad("Could not parse command: UID EXPUNGE needs a UID set")
            chosen = {m.msgid for _, _, m in s.targets(args[0], uid=True)}
        for msgid in list(view.deleted):
            if chosen is not None and msgid not in chosen:
                continue
            msg = acct.messages.get(msgid)
            if msg is not None:
                acct.expunge_from(view, msg, s.server.expunge_behavior)
    return "OK Success"


async def _cmd_fetch(s: _Session, cmd: _Command, args: list[Any]) -> str:
    uid = cmd.name == "UID FETCH"
    if len(args) not in (2, 3):
        raise _Bad("Could not parse command: FETCH needs a set and items")
    items = imapwire.fetch_items(args[1], _GM_ITEMS, "the Gmail double")
    changed_since: int | None = None
    if len(args) == 3:
        mods = args[2] if isinstance(args[2], list) else []
        if len(mods) == 2 and str(mods[0]).upper() == "CHANGEDSINCE" and str(mods[1]).isdigit():
            changed_since = int(mods[1])
        else:
            raise _Bad("Could not parse command: unsupported FETCH modifier")
    kinds = {it.kind for it in items}
    if uid and "UID" not in kinds:
        items.insert(0, _FetchItem("UID"))
    elif "UID" in kinds:
        items.sort(key=lambda it: it.kind != "UID")
    if changed_since is not None and "MODSEQ" not in kinds:
        items.append(_FetchItem("MODSEQ"))
    # Literal-valued items last: naive clients read the items before the first literal.
    items.sort(key=lambda it: it.kind == "BODY")
    server = s.server
    acct = s.account_or_fail()
    view = s.view
    assert view is not None
    wants_body = any(it.kind == "BODY" for it in items)
    with server._lock:
        targets = s.targets(args[0], uid)
        if changed_since is not None:
            targets = [t for t in targets if t[2].modseq > changed_since]
        if wants_body and server.download_limit is not None and acct.down >= server.download_limit:
            raise _No(_OVERQUOTA)
    for n, u, msg in targets:
        parts: list[bytes] = []
        literal_parts: list[tuple[bytes, bytes]] = []
        with server._lock:
            if msg.msgid not in acct.messages:
                continue  # deleted forever meanwhile; the EXPUNGE comes later
            sets_seen = any(it.sets_seen for it in items) and not s.readonly
            if sets_seen and "\\Seen" not in msg.flags:
                msg.flags.add("\\Seen")
                acct.touch(msg)
                if not any(it.kind == "FLAGS" for it in items):
                    items = [*items[:1], _FetchItem("FLAGS"), *items[1:]]
            for it in items:
                if it.kind == "UID":
                    parts.append(b"UID %d" % u)
                elif it.kind == "FLAGS":
                    parts.append(b"FLAGS " + s.flags_out(msg))
                elif it.kind == "INTERNALDATE":
                    parts.append(b'INTERNALDATE "' + _format_date(msg.internaldate) + b'"')
                elif it.kind == "RFC822.SIZE":
                    parts.append(b"RFC822.SIZE %d" % len(msg.raw))
                elif it.kind == "X-GM-MSGID":
                    parts.append(b"X-GM-MSGID %d" % msg.msgid)
                elif it.kind == "X-GM-THRID":
                    parts.append(b"X-GM-THRID %d" % msg.thrid)
                elif it.kind == "X-GM-LABELS":
                    parts.append(b"X-GM-LABELS " + s.labels_out(msg))
                elif it.kind == "MODSEQ":
                    parts.append(b"MODSEQ (%d)" % msg.modseq)
                else:
                    data = _section_bytes(it, msg.raw)
                    literal_parts.append((it.out, data))
                    if it.section == "" and it.origin is None:
                        acct.down += len(data)
        head = b"* %d FETCH (" % n + b" ".join(parts)
        if not literal_parts:
            s.send(head + b")\r\n")
            continue
        for i, (name, data) in enumerate(literal_parts):
            sep = b" " if (parts or i) else b""
            s.send(head + sep + name + b" {%d}\r\n" % len(data))
            s.send(data)
            head = b""
        s.send(b")\r\n")
        transport = s.writer.transport
        if transport.get_write_buffer_size() > 1 << 20:
            await s.flush()
    return "OK Success"


def _store_labels(s: _Session, tok: object) -> list[str]:
    items = tok if isinstance(tok, list) else [tok]
    acct = s.account_or_fail()
    out: list[str] = []
    for it in items:
        if isinstance(it, str) and it.startswith("\\"):
            text = it
        elif isinstance(it, str | bytes):
            text = s.decode_name(it)
        else:
            raise _Bad("Could not parse command: bad label")
        if text.startswith("\\"):
            label = _SYSTEM_BY_LOWER.get(text.lower())
            if label is None:
                raise _Bad(f"Could not parse command: unknown system label {text[:30]}")
            out.append(label)
        elif text.upper() == "INBOX":
            out.append(INBOX)
        else:
            acct.check_label_name(text)
            out.append(text)
    return out


async def _cmd_store(s: _Session, cmd: _Command, args: list[Any]) -> str:
    uid = cmd.name == "UID STORE"
    if s.readonly:
        raise _No("[READ-ONLY] Mailbox is read-only (Failure)")
    args = list(args)
    unchanged_since: int | None = None
    if len(args) == 4 and isinstance(args[1], list):
        mods = args.pop(1)
        if len(mods) == 2 and str(mods[0]).upper() == "UNCHANGEDSINCE" and str(mods[1]).isdigit():
            unchanged_since = int(mods[1])
        else:
            raise _Bad("Could not parse command: unsupported STORE modifier")
    if len(args) != 3 or not isinstance(args[1], str):
        raise _Bad("Could not parse command: STORE needs a set, an item and a value")
    item = args[1].upper()
    silent = item.endswith(".SILENT")
    base = item.removesuffix(".SILENT")
    mode = base[0] if base[:1] in ("+", "-") else "="
    what = base.lstrip("+-")
    if what not in ("FLAGS", "X-GM-LABELS"):
        raise _Bad(f"Could not parse command: unknown STORE item {item[:30]}")
    server = s.server
    acct = s.account_or_fail()
    view = s.view
    assert view is not None
    modified: list[int] = []
    with server._lock:
        values = _flag_list(args[2]) if what == "FLAGS" else _store_labels(s, args[2])
        targets = s.targets(args[0], uid)
        expunge_now: list[_Message] = []
        for n, u, msg in targets:
            if unchanged_since is not None and msg.modseq > unchanged_since:
                modified.append(u if uid else n)
                continue
            if what == "FLAGS":
                was_deleted = msg.msgid in view.deleted
                new = set(values)
                current = set(msg.flags) | ({"\\Deleted"} if was_deleted else set())
                result = new if mode == "=" else current | new if mode == "+" else current - new
                msg.flags = {f for f in result if f != "\\Deleted"}
                if "\\Deleted" in result:
                    view.deleted.add(msg.msgid)
                    if not was_deleted and server.auto_expunge:
                        expunge_now.append(msg)
                else:
                    view.deleted.discard(msg.msgid)
            else:
                for label in values:
                    if label not in SYSTEM_LABELS and label not in acct.views:
                        acct.create_label(label)
                new = set(values)
                current = msg.visible_labels()
                result = new if mode == "=" else current | new if mode == "+" else current - new
                starred = STARRED in result
                msg.labels = result - {STARRED}
                if starred:
                    msg.flags.add("\\Flagged")
                else:
                    msg.flags.discard("\\Flagged")
            acct.touch(msg)
            if not silent or (s.condstore and unchanged_since is not None):
                parts = [
                    b"X-GM-LABELS " + s.labels_out(msg)
                    if what == "X-GM-LABELS"
                    else b"FLAGS " + s.flags_out(msg)
                ]
                if uid:
                    parts.append(b"UID %d" % u)
                if s.condstore:
                    parts.append(b"MODSEQ (%d)" % msg.modseq)
                s.send(b"* %d FETCH (" % n + b" ".join(parts) + b")\r\n")
        for msg in expunge_now:
            if msg.msgid in acct.messages and msg.msgid in view.uid_of:
                acct.expunge_from(view, msg, server.expunge_behavior)
    if modified:
        return f"OK [MODIFIED {_uid_list(modified)}] Conditional STORE failed (Success)"
    return "OK Success"


async def _cmd_copy(s: _Session, cmd: _Command, args: list[Any]) -> str:
    uid = cmd.name.startswith("UID ")
    move = cmd.name.endswith("MOVE")
    if len(args) != 2:
        raise _Bad(f"Could not parse command: {cmd.name} needs a set and a mailbox")
    if move and s.readonly:
        raise _No("[READ-ONLY] Mailbox is read-only (Failure)")
    acct = s.account_or_fail()
    source = s.view
    assert source is not None
    with s.server._lock:
        name = s.decode_name(args[1])
        target = acct.view(name)
        if target is None:
            raise _No(f"[TRYCREATE] No folder {name} (Failure)")
        targets = s.targets(args[0], uid)
        src_uids: list[int] = []
        dst_uids: list[int] = []
        for _n, u, msg in targets:
            if target is not source:
                acct.add_to(target, msg)
            if msg.msgid in target.uid_of:
                src_uids.append(u)
                dst_uids.append(target.uid_of[msg.msgid])
        code = (
            f"[COPYUID {target.uidvalidity} {_uid_list(src_uids)} {_uid_list(dst_uids)}] "
            if src_uids
            else ""
        )
        if move:
            if code:
                s.send(f"* OK {code}(Success)\r\n".encode())
            if target is not source:
                for _n, _u, msg in targets:
                    if msg.msgid in acct.messages:
                        acct.move_out(source, msg)
            return "OK Success"
    return f"OK {code}(Success)"


class _Search(imapwire.Search):
    """SEARCH criteria with Gmail's X-GM-MSGID/THRID/LABELS/RAW and MODSEQ."""

    def __init__(self, s: _Session, toks: list[Any]) -> None:
        super().__init__(toks, len(s.seq), s.seq[-1] if s.seq else 0)
        self.s = s

    def sub(self, toks: list[Any]) -> _Search:
        return _Search(self.s, toks)

    def has_flag(self, m: Any, name: str) -> bool:
        if name == "\\Deleted":
            view = self.s.view
            return view is not None and m.msgid in view.deleted
        return name in m.flags

    def extra_key(self, up: str) -> imapwire.Predicate | None:
        if up == "X-GM-MSGID":
            value = self.number()
            return lambda n, u, m: m.msgid == value
        if up == "X-GM-THRID":
            value = self.number()
            return lambda n, u, m: m.thrid == value
        if up == "X-GM-LABELS":
            label = _store_labels(self.s, self.next())[0]
            return lambda n, u, m: label in m.visible_labels()
        if up == "X-GM-RAW":
            return _gm_raw(self.string().decode("utf-8", "replace"))
        if up == "MODSEQ":
            value = self.number()
            return lambda n, u, m: m.modseq >= value
        return None


def _gm_raw(query: str) -> Callable[[int, int, _Message], bool]:
    """A minimal X-GM-RAW: rfc822msgid:, label:, in:, is:, from:/to:/subject:, words, -neg."""
    preds: list[Callable[[int, int, _Message], bool]] = []
    for term in re.findall(r'-?(?:\w+:)?(?:"[^"]*"|\S+)', query):
        neg = term.startswith("-")
        term = term.lstrip("-")
        op, sep, value = term.partition(":")
        if not sep or not re.fullmatch(r"\w+", op):
            op, value = "", term
        value = value.strip('"')
        low = value.lower()
        op = op.lower()
        pred: Callable[[int, int, _Message], bool]
        if op == "rfc822msgid":
            want = (value if value.startswith("<") else f"<{value}>").encode()
            pred = lambda n, u, m, w=want: m.message_id == w  # noqa: E731
        elif op in ("label", "in"):
            system = {
                "inbox": INBOX,
                "sent": SENT,
                "drafts": DRAFT,
                "draft": DRAFT,
                "important": IMPORTANT,
                "starred": STARRED,
                "spam": SPAM,
                "trash": TRASH,
            }
            if low in ("anywhere", "all"):
                pred = lambda n, u, m: True  # noqa: E731
            else:
                label = system.get(low, value)
                pred = lambda n, u, m, lb=label: lb in m.visible_labels()  # noqa: E731
        elif op == "is":
            table = {
                "starred": lambda m: "\\Flagged" in m.flags,
                "unread": lambda m: "\\Seen" not in m.flags,
                "read": lambda m: "\\Seen" in m.flags,
                "important": lambda m: IMPORTANT in m.labels,
            }
            check = table.get(low)
            if check is None:
                raise _Bad(f"Could not parse command: X-GM-RAW is:{value[:20]} not supported")
            pred = lambda n, u, m, c=check: c(m)  # noqa: E731
        elif op in ("from", "to", "cc", "subject"):
            pred = imapwire.Search.header(op.encode(), value.encode())
        elif op == "":
            needle = value.encode("utf-8").lower()
            pred = lambda n, u, m, x=needle: x in m.raw.lower()  # noqa: E731
        else:
            raise _Bad(f"Could not parse command: X-GM-RAW operator {op[:20]}: not supported")
        preds.append((lambda n, u, m, p=pred: not p(n, u, m)) if neg else pred)
    return lambda n, u, m: all(p(n, u, m) for p in preds)


async def _cmd_search(s: _Session, cmd: _Command, args: list[Any]) -> str:
    uid = cmd.name == "UID SEARCH"
    args = list(args)
    returns: list[str] | None = None
    if len(args) >= 2 and isinstance(args[0], str) and args[0].upper() == "RETURN":
        opts = args[1] if isinstance(args[1], list) else []
        returns = [str(o).upper() for o in opts] or ["ALL"]
        bad = set(returns) - {"MIN", "MAX", "COUNT", "ALL"}
        if bad:
            raise _Bad(f"Could not parse command: unsupported SEARCH RETURN {sorted(bad)}")
        args = args[2:]
    if len(args) >= 2 and isinstance(args[0], str) and args[0].upper() == "CHARSET":
        charset = args[1].decode("latin-1") if isinstance(args[1], bytes) else str(args[1])
        if charset.upper() not in ("UTF-8", "US-ASCII"):
            raise _No("[BADCHARSET (UTF-8 US-ASCII)] Unsupported charset (Failure)")
        args = args[2:]
    acct = s.account_or_fail()
    with s.server._lock:
        pred = _Search(s, args).all()
        hits = []
        for i, u in enumerate(s.seq):
            msg = acct.messages.get(s.seq_msgid[u])
            if msg is not None and pred(i + 1, u, msg):
                hits.append(u if uid else i + 1)
    if returns is None:
        s.send(b"* SEARCH" + b"".join(b" %d" % h for h in hits) + b"\r\n")
        return "OK Success"
    out = f'* ESEARCH (TAG "{cmd.tag}")' + (" UID" if uid else "")
    if hits:
        if "MIN" in returns:
            out += f" MIN {min(hits)}"
        if "MAX" in returns:
            out += f" MAX {max(hits)}"
    if "COUNT" in returns:
        out += f" COUNT {len(hits)}"
    if "ALL" in returns and hits:
        out += f" ALL {_uid_list(sorted(hits))}"
    s.send(out.encode() + b"\r\n")
    return "OK Success"


async def _cmd_compress(s: _Session, cmd: _Command, args: list[Any]) -> str:
    raise _Bad("Unknown command COMPRESS (COMPRESS=DEFLATE is not emulated by the Gmail double)")


_Handler = Callable[[_Session, _Command, list[Any]], Any]
_COMMANDS: dict[str, tuple[_Handler, frozenset[int]]] = {
    "CAPABILITY": (_cmd_capability, _ANY),
    "NOOP": (_cmd_noop, _ANY),
    "LOGOUT": (_cmd_logout, _ANY),
    "ID": (_cmd_id, _ANY),
    "XYZZY": (_cmd_xyzzy, _ANY),
    "LOGIN": (_cmd_login, frozenset((_NONAUTH,))),
    "AUTHENTICATE": (_cmd_authenticate, frozenset((_NONAUTH,))),
    "ENABLE": (_cmd_enable, frozenset((_AUTH,))),  # RFC 5161 3
    "NAMESPACE": (_cmd_namespace, _AUTHED),
    "SELECT": (_cmd_select, _AUTHED),
    "EXAMINE": (_cmd_select, _AUTHED),
    "CREATE": (_cmd_create, _AUTHED),
    "DELETE": (_cmd_delete, _AUTHED),
    "RENAME": (_cmd_rename, _AUTHED),
    "SUBSCRIBE": (_cmd_subscribe, _AUTHED),
    "UNSUBSCRIBE": (_cmd_subscribe, _AUTHED),
    "LIST": (_cmd_list, _AUTHED),
    "LSUB": (_cmd_list, _AUTHED),
    "XLIST": (_cmd_list, _AUTHED),
    "STATUS": (_cmd_status, _AUTHED),
    "APPEND": (_cmd_append, _AUTHED),
    "IDLE": (_cmd_idle, _AUTHED),
    "GETQUOTAROOT": (_cmd_quota, _AUTHED),
    "GETQUOTA": (_cmd_quota, _AUTHED),
    "COMPRESS": (_cmd_compress, _AUTHED),
    "CHECK": (_cmd_check, _SEL),
    "CLOSE": (_cmd_close, _SEL),
    "UNSELECT": (_cmd_close, _SEL),
    "EXPUNGE": (_cmd_expunge, _SEL),
    "UID EXPUNGE": (_cmd_expunge, _SEL),
    "FETCH": (_cmd_fetch, _SEL),
    "UID FETCH": (_cmd_fetch, _SEL),
    "STORE": (_cmd_store, _SEL),
    "UID STORE": (_cmd_store, _SEL),
    "COPY": (_cmd_copy, _SEL),
    "UID COPY": (_cmd_copy, _SEL),
    "MOVE": (_cmd_copy, _SEL),
    "UID MOVE": (_cmd_copy, _SEL),
    "SEARCH": (_cmd_search, _SEL),
    "UID SEARCH": (_cmd_search, _SEL),
}


# ---------------------------------------------------------------------------- server


class GmailServer(imapwire.ThreadedServer):
    """A Gmail IMAP double on 127.0.0.1 (free port), served from a background thread.

    ``users`` maps an account (any string, usually an e-mail address) to its password.
    Gmail's behaviour that is always there is on; the quirks that make ordinary tests
    awkward are opt-in:

    * ``append_limit``: APPEND larger than this answers ``BAD [TOOBIG] Message too large.
      https://support.google.com/mail/answer/6584#limit`` before the literal is sent
      (Gmail's APPENDLIMIT, 35651584 bytes, by default; None: no limit);
    * ``dedupe_message_id``: APPEND of a message whose Message-ID is already in the account
      labels the existing message instead of storing a second one;
    * ``max_connections``: LOGIN/AUTHENTICATE beyond this many open authenticated
      connections of one account answers ``NO [ALERT] Too many simultaneous connections.
      (Failure)`` (Gmail: 15);
    * ``download_limit`` / ``upload_limit``: bytes per account (message bodies served /
      appended) after which FETCH of a body / APPEND answers ``NO [OVERQUOTA] Account
      exceeded command or bandwidth limits. (Failure)``; :meth:`reset_bandwidth` starts a
      new "day";
    * ``throttled``: every OK answer ends with ``[THROTTLED]``, as Gmail does when it
      slows a client down;
    * ``command_hook(user, command)``: called before each command; a returned string such
      as ``"NO [UNAVAILABLE] Temporary System Error"`` is the answer instead;
    * ``omit_selected_label``: FETCH X-GM-LABELS leaves out the label of the selected
      folder (as observed on Gmail; True by default);
    * ``auto_expunge`` / ``expunge_behavior``: Gmail's IMAP settings (default: on,
      ``"archive"``; also ``"trash"`` and ``"delete"``);
    * ``system_prefix``: ``"[Gmail]"`` or ``"[Google Mail]"`` (some countries);
    * ``oauth_server`` (a :class:`tests.doubles.oauth2.OAuthServer`) or
      ``oauth_introspection_url`` (RFC 7662, credentials in the URL): OAuth2 logins, as
      Gmail has them: ``AUTH=XOAUTH2 AUTH=OAUTHBEARER`` are advertised (``oauth_mechanisms``
      chooses which: ``("XOAUTH2",)`` is what Microsoft's servers offer) and a token is
      good when the provider's introspection says it is active, for this user (its
      ``email``, or an application token whose ``app_domain`` is the user's domain) and
      with ``oauth_scope`` (Gmail's ``https://mail.google.com/``; None: any).  Refused:
      an error challenge ``+ BASE64({"status":"401",...})``, then ``NO
      [AUTHENTICATIONFAILED] Invalid credentials (Failure)``; provider unreachable: ``NO
      [UNAVAILABLE] Temporary System Error`` at once.  Passwords keep working;
    * ``bye_on_expiry``: a session logged in with a token ends with ``* BYE Session
      invalidated - AccessTokenExpired`` at its first command after the token expired
      (Microsoft's servers do this; Gmail keeps such sessions).
    """

    def __init__(
        self,
        users: Mapping[str, str] | None = None,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        append_limit: int | None = APPENDLIMIT,
        dedupe_message_id: bool = False,
        max_connections: int | None = None,
        download_limit: int | None = None,
        upload_limit: int | None = None,
        throttled: bool = False,
        command_hook: Callable[[str | None, str], str | None] | None = None,
        omit_selected_label: bool = True,
        auto_expunge: bool = True,
        expunge_behavior: str = "archive",
        system_prefix: str = "[Gmail]",
        oauth_server: Any = None,
        oauth_introspection_url: str | None = None,
        oauth_mechanisms: Iterable[str] = ("XOAUTH2", "OAUTHBEARER"),
        oauth_scope: str | None = GMAIL_SCOPE,
        bye_on_expiry: bool = False,
    ) -> None:
        if expunge_behavior not in ("archive", "trash", "delete"):
            raise ValueError(f"unknown expunge_behavior {expunge_behavior!r}")
        super().__init__(host, port)
        if oauth_server is not None and oauth_introspection_url is None:
            oauth_introspection_url = oauth_server.introspection_url_with_credentials
        self.oauth_introspection_url = oauth_introspection_url
        self.oauth_mechanisms = tuple(m.upper() for m in oauth_mechanisms)
        if not set(self.oauth_mechanisms) <= {"XOAUTH2", "OAUTHBEARER"}:
            raise ValueError(f"oauth_mechanisms: unknown {self.oauth_mechanisms!r}")
        self.oauth_scope = oauth_scope
        self.bye_on_expiry = bye_on_expiry
        self.append_limit = append_limit
        self.dedupe_message_id = dedupe_message_id
        self.max_connections = max_connections
        self.download_limit = download_limit
        self.upload_limit = upload_limit
        self.throttled = throttled
        self.command_hook = command_hook
        self.omit_selected_label = omit_selected_label
        self.auto_expunge = auto_expunge
        self.expunge_behavior = expunge_behavior
        self.system_prefix = system_prefix
        self._lock = threading.RLock()
        self._msgids = itertools.count(_MSGID_BASE, _MSGID_STEP)
        self._accounts: dict[str, _Account] = {}
        self._log: collections.deque[CommandRecord] = collections.deque(maxlen=100_000)
        self.internal_errors: list[str] = []
        for user, password in (users or {}).items():
            self.add_user(user, password)

    label = "the Gmail double"

    def session(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> _Session:
        return _Session(self, reader, writer)

    # ---- protocol helpers used by sessions

    def capabilities(self, authenticated: bool) -> str:
        if not authenticated:
            if self.oauth_introspection_url:
                # Gmail: "... SASL-IR AUTH=XOAUTH2 AUTH=PLAIN AUTH=PLAIN-CLIENTTOKEN
                # AUTH=OAUTHBEARER"
                pre, _, _ = _PRE_AUTH_CAPS.partition(" AUTH=PLAIN")
                auth = [f"AUTH={m}" for m in ("XOAUTH2",) if m in self.oauth_mechanisms]
                auth.append("AUTH=PLAIN")
                auth += [f"AUTH={m}" for m in ("OAUTHBEARER",) if m in self.oauth_mechanisms]
                return " ".join([pre, *auth])
            return _PRE_AUTH_CAPS
        caps = _POST_AUTH_CAPS
        if self.append_limit is not None:
            caps += f" APPENDLIMIT={self.append_limit}"
        return caps

    def _login(self, s: _Session, user: str, password: str | None) -> str:
        """Log the session in; ``password`` None: an OAuth2 token already checked."""
        with self._lock:
            acct = self._find(user)
            if acct is None or (password is not None and acct.password != password):
                raise _No(_BAD_LOGIN)
            if self.max_connections is not None and acct.connections >= self.max_connections:
                raise _No(_TOO_MANY)
            acct.connections += 1
            s.counted = True
            s.account = acct
            s.state = _AUTH
        s.send(b"* CAPABILITY " + self.capabilities(True).encode() + b"\r\n")
        return f"OK {acct.email} authenticated (Success)"

    def _introspect(self, token: str) -> dict[str, Any] | None:
        """POST the token to the provider's introspection endpoint (RFC 7662); runs in a
        worker thread, not on the event loop.  None: the provider could not be asked."""
        assert self.oauth_introspection_url is not None
        parts = urllib.parse.urlsplit(self.oauth_introspection_url)
        netloc = parts.hostname or ""
        if parts.port:
            netloc += f":{parts.port}"
        request = urllib.request.Request(
            urllib.parse.urlunsplit(parts._replace(netloc=netloc)),
            data=urllib.parse.urlencode({"token": token}).encode(),
            headers={"Content-Type": "application/x-www-form-urlencoded"},
        )
        if parts.username is not None:
            creds = f"{urllib.parse.unquote(parts.username)}:{urllib.parse.unquote(parts.password or '')}"
            request.add_header(
                "Authorization", "Basic " + base64.b64encode(creds.encode()).decode()
            )
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                info = json.loads(response.read())
        except (OSError, ValueError) as exc:
            log.warning("Gmail double: introspection failed: %s", type(exc).__name__)
            return None
        return info if isinstance(info, dict) else None

    def _token_valid_for(self, user: str, info: dict[str, Any]) -> float | None:
        """The token's expiry time if ``info`` (an introspection answer) lets ``user``
        in, else None."""
        if info.get("active") is not True:
            return None
        email = str(info.get("email") or "").lower()
        domain = str(info.get("app_domain") or "").lower()
        if email != user.lower() and not (domain and user.lower().endswith("@" + domain)):
            return None
        if (
            self.oauth_scope is not None
            and self.oauth_scope not in str(info.get("scope", "")).split()
        ):
            return None
        exp = info.get("exp")
        return float(exp) if isinstance(exp, int | float) else float("inf")

    def _find(self, user: str) -> _Account | None:
        acct = self._accounts.get(user)
        if acct is None:
            for name, a in self._accounts.items():
                if name.lower() == user.lower():
                    return a
        return acct

    def _record(self, rec: CommandRecord) -> None:
        with self._lock:
            self._log.append(rec)

    def _internal_error(self, text: str) -> None:
        self.internal_errors.append(text)

    # ---- the seeding and inspection API (thread-safe)

    def add_user(self, user: str, password: str) -> None:
        with self._lock:
            if user in self._accounts:
                raise ValueError(f"user {user!r} exists")
            self._accounts[user] = _Account(user, password, self.system_prefix, self._msgids)

    def _account(self, user: str) -> _Account:
        acct = self._accounts.get(user)
        if acct is None:
            raise KeyError(f"no user {user!r} in the Gmail double")
        return acct

    def add_message(
        self,
        user: str,
        raw: bytes,
        labels: Iterable[str] = (),
        flags: Iterable[str] = (),
        internaldate: datetime | None = None,
        *,
        thrid: int | None = None,
    ) -> int:
        """Store a message as if it had arrived; returns its X-GM-MSGID.

        ``labels``: ``\\Inbox``, ``\\Sent``, ``\\Draft``, ``\\Important``, ``\\Starred``
        (same as the ``\\Flagged`` flag), ``\\Spam``, ``\\Trash`` and user labels (created
        when missing).  No labels: archived (only in All Mail).  ``thrid`` defaults to the
        thread of a message this one answers (In-Reply-To/References), else its own id.
        """
        if internaldate is not None and internaldate.tzinfo is None:
            raise ValueError("internaldate needs a time zone")
        when = internaldate or datetime.now(UTC).replace(microsecond=0)
        label_set = set(labels)
        flag_set = set(flags)
        for label in label_set:
            if label.startswith("\\") and label not in SYSTEM_LABELS:
                raise ValueError(
                    f"unknown system label {label!r}; use one of {sorted(SYSTEM_LABELS)}"
                )
        for f in flag_set:
            if f.startswith("\\") and f not in _SYSTEM_FLAGS.values():
                raise ValueError(f"flag {f!r} cannot be stored (\\Deleted is per folder in Gmail)")
        with self._lock:
            acct = self._account(user)
            for label in label_set - SYSTEM_LABELS:
                if label not in acct.views:
                    try:
                        acct.create_label(label)
                    except _No as exc:
                        raise ValueError(f"invalid label {label!r}: {exc}") from None
            msg = acct.add(bytes(raw), label_set, flag_set, when, thrid)
            return msg.msgid

    def messages(self, user: str) -> list[GmailMessage]:
        """Every message of the account (Spam and Trash included), oldest first."""
        with self._lock:
            acct = self._account(user)
            return [acct.snapshot(m) for m in sorted(acct.messages.values(), key=lambda m: m.msgid)]

    def message(self, user: str, msgid: int) -> GmailMessage:
        with self._lock:
            acct = self._account(user)
            return acct.snapshot(acct.messages[msgid])

    def folders(self, user: str) -> list[str]:
        """Folder names as LIST shows them (Unicode), "[Gmail]" (\\Noselect) included."""
        with self._lock:
            return self._account(user).folder_names()

    def folder_uids(self, user: str, folder: str) -> dict[int, int]:
        """UID -> X-GM-MSGID of the messages a folder shows now."""
        with self._lock:
            view = self._account(user).view(folder)
            if view is None:
                raise KeyError(f"no folder {folder!r}")
            return dict(view.msgid_of)

    def uidvalidity(self, user: str, folder: str) -> int:
        with self._lock:
            view = self._account(user).view(folder)
            if view is None:
                raise KeyError(f"no folder {folder!r}")
            return view.uidvalidity

    def snapshot(
        self, user: str
    ) -> dict[str, tuple[int | None, dict[int, tuple[frozenset[str], str]]]]:
        """The account as the source-untouched guard compares it (tests/source_guard.py):
        folder -> (UIDVALIDITY, UID -> (flags, with \\Deleted of that folder, and sha256
        of the bytes)); a label added or removed shows as a UID added to or gone from its
        folder."""
        with self._lock:
            acct = self._account(user)
            hashes = {m.msgid: hashlib.sha256(m.raw).hexdigest() for m in acct.messages.values()}
            out: dict[str, tuple[int | None, dict[int, tuple[frozenset[str], str]]]] = {}
            for name, view in acct.views.items():
                msgs: dict[int, tuple[frozenset[str], str]] = {}
                for uid, msgid in view.msgid_of.items():
                    flags = set(acct.messages[msgid].flags)
                    if msgid in view.deleted:
                        flags.add("\\Deleted")
                    msgs[uid] = (frozenset(flags), hashes[msgid])
                out[name] = (view.uidvalidity, msgs)
            return out

    def create_label(self, user: str, name: str) -> None:
        with self._lock:
            acct = self._account(user)
            if acct.view(name) is None:
                try:
                    acct.create_label(name)
                except _No as exc:
                    raise ValueError(f"invalid label {name!r}: {exc}") from None

    def connections(self, user: str) -> int:
        """Authenticated connections of the account that are open now."""
        with self._lock:
            return self._account(user).connections

    def bandwidth(self, user: str) -> tuple[int, int]:
        """(bytes of message bodies served, bytes appended) since start or the last reset."""
        with self._lock:
            acct = self._account(user)
            return acct.down, acct.up

    def reset_bandwidth(self) -> None:
        with self._lock:
            for acct in self._accounts.values():
                acct.down = acct.up = 0

    @property
    def command_log(self) -> list[CommandRecord]:
        """Every command answered so far, in order (names and outcomes only)."""
        with self._lock:
            return list(self._log)

    def unsupported(self) -> list[CommandRecord]:
        """The commands answered BAD: what a client sent that the double refused."""
        return [r for r in self.command_log if r.status == "BAD"]

    def __repr__(self) -> str:
        where = f"127.0.0.1:{self._port}" if self._port else "stopped"
        return f"<GmailServer {where} users={sorted(self._accounts)}>"
