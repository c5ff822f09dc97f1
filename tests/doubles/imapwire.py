"""The IMAP wire of the test doubles (tests/doubles/gmail.py, tests/doubles/quirky.py).

What every scripted IMAP server in the suite needs the same way: modified UTF-7 names,
quoting, INTERNALDATE, header sections, the command reader (tag, name, synchronizing and
non-synchronizing literals, RFC 3501 4.3 and RFC 7888), the argument tokenizer, sequence
sets, FETCH items and sections, flag lists, LIST patterns, and the background thread that
runs an asyncio server on 127.0.0.1 for synchronous tests and CLI subprocesses.  Each
double keeps its own store and command handlers.  Written for the suite (no IMAP server
library on PyPI serves scripted, switchable behaviour; see docs/design.md).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import bisect
import contextlib
import re
import threading
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from types import TracebackType
from typing import Any, Self

MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
SYSTEM_FLAGS = {f.lower(): f for f in ("\\Seen", "\\Answered", "\\Flagged", "\\Draft")}
MAX_LITERAL = 64 * 1024 * 1024
MAX_LINE = 4 * 1024 * 1024


# ---------------------------------------------------------------------------- helpers


def mutf7_encode(name: str) -> bytes:
    """Modified UTF-7 (RFC 3501 5.1.3), written for this double (independent of imap.utf7)."""
    out = bytearray()
    run: list[str] = []

    def flush() -> None:
        if run:
            data = base64.b64encode("".join(run).encode("utf-16-be"))
            out.extend(b"&" + data.rstrip(b"=").replace(b"/", b",") + b"-")
            run.clear()

    for ch in name:
        if 0x20 <= ord(ch) <= 0x7E:
            flush()
            out.extend(b"&-" if ch == "&" else ch.encode("ascii"))
        else:
            run.append(ch)
    flush()
    return bytes(out)


def mutf7_decode(raw: bytes) -> str:
    """Decode modified UTF-7; ValueError when ``raw`` is not valid."""
    out: list[str] = []
    i = 0
    while i < len(raw):
        c = raw[i]
        if c == 0x26:  # "&"
            j = raw.find(b"-", i + 1)
            if j < 0:
                raise ValueError("unterminated & shift")
            if j == i + 1:
                out.append("&")
            else:
                b64 = raw[i + 1 : j].replace(b",", b"/")
                try:
                    data = base64.b64decode(b64 + b"=" * (-len(b64) % 4), validate=True)
                    out.append(data.decode("utf-16-be"))
                except (binascii.Error, UnicodeDecodeError) as exc:
                    raise ValueError(f"bad base64 run: {exc}") from None
            i = j + 1
        elif 0x20 <= c <= 0x7E:
            out.append(chr(c))
            i += 1
        else:
            raise ValueError(f"byte 0x{c:02x} is not modified UTF-7")
    return "".join(out)


def mailbox_name(tok: object, utf8: bool, lenient: bool = False) -> str:
    """A mailbox argument as Unicode: raw UTF-8 after ``ENABLE UTF8=ACCEPT`` (RFC 6855),
    else modified UTF-7; ``lenient`` also takes 8-bit bytes as UTF-8 (as Gmail does)."""
    if isinstance(tok, str):
        raw = tok.encode("latin-1")
    elif isinstance(tok, bytes):
        raw = bytes(tok)
    else:
        raise Bad("Could not parse command: mailbox name expected")
    try:
        if utf8 or (lenient and any(b >= 0x80 for b in raw)):
            return raw.decode("utf-8")
        return mutf7_decode(raw)
    except (UnicodeDecodeError, ValueError) as exc:
        raise Bad(f"Could not parse command: invalid mailbox name {raw[:60]!r}: {exc}") from None


def mailbox_wire(name: str, utf8: bool) -> bytes:
    """A mailbox name as sent: UTF-8 after ``ENABLE UTF8=ACCEPT``, else modified UTF-7."""
    return name.encode("utf-8") if utf8 else mutf7_encode(name)


def quoted(data: bytes) -> bytes:
    return b'"' + data.replace(b"\\", b"\\\\").replace(b'"', b'\\"') + b'"'


ATOM_SAFE = re.compile(rb'[^\x00-\x20(){%*"\\\]\x7f-\xff]+\Z')


def astring(data: bytes) -> bytes:
    """An atom when the bytes allow it, else a quoted string."""
    if ATOM_SAFE.match(data) and data.upper() != b"NIL":
        return data
    return quoted(data)


def format_date(when: datetime) -> bytes:
    """INTERNALDATE, always in UTC (``+0000``, as Gmail answers)."""
    t = when.astimezone(UTC)
    return (
        f"{t.day:02d}-{MONTHS[t.month - 1]}-{t.year:04d} "
        f"{t.hour:02d}:{t.minute:02d}:{t.second:02d} +0000"
    ).encode("ascii")


DATE_TIME = re.compile(
    r"\s?(\d{1,2})-([A-Za-z]{3})-(\d{4}) (\d{2}):(\d{2}):(\d{2}) ([+-])(\d{2})(\d{2})\Z"
)
DATE = re.compile(r"(\d{1,2})-([A-Za-z]{3})-(\d{4})\Z")


def month(name: str) -> int:
    try:
        return [m.lower() for m in MONTHS].index(name.lower()) + 1
    except ValueError:
        raise Bad(f"Could not parse command: bad month {name!r}") from None


def parse_date_time(text: str) -> datetime:
    m = DATE_TIME.match(text)
    if m is None:
        raise Bad(f"Could not parse command: bad date-time {text!r}")
    day, mon, year, hh, mm, ss, sign, zh, zm = m.groups()
    offset = timedelta(hours=int(zh), minutes=int(zm))
    tz = timezone(offset if sign == "+" else -offset)
    try:
        return datetime(int(year), month(mon), int(day), int(hh), int(mm), int(ss), tzinfo=tz)
    except ValueError as exc:
        raise Bad(f"Could not parse command: bad date-time {text!r}: {exc}") from None


def header_block(raw: bytes) -> bytes:
    """The header section including the blank line that ends it (RFC 3501 6.4.5 HEADER)."""
    end = raw.find(b"\r\n\r\n")
    if end >= 0:
        return raw[: end + 4]
    end = raw.find(b"\n\n")
    if end >= 0:
        return raw[: end + 2]
    return raw


def header_fields(raw: bytes) -> list[tuple[bytes, bytes]]:
    """(lower-case field name, the field's lines with their line endings), in order."""
    block = header_block(raw)
    out: list[tuple[bytes, bytes]] = []
    for line in block.splitlines(keepends=True):
        if line in (b"\r\n", b"\n"):
            break
        if line[:1] in (b" ", b"\t") and out:
            out[-1] = (out[-1][0], out[-1][1] + line)
            continue
        name, sep, _ = line.partition(b":")
        out.append((name.strip().lower() if sep else b"", line))
    return out


def field_value(lines: bytes) -> bytes:
    _, _, value = lines.partition(b":")
    return b" ".join(value.split())


def header_value(raw: bytes, name: bytes) -> bytes | None:
    for fname, lines in header_fields(raw):
        if fname == name:
            return field_value(lines)
    return None


# ---------------------------------------------------------------------------- errors


class Bad(Exception):
    """Answer the command with BAD and this text."""


class No(Exception):
    """Answer the command with NO and this text."""


class Lit(bytes):
    """A literal argument (RFC 3501 4.3); quoted strings are plain ``bytes``."""


# ---------------------------------------------------------------------------- commands


TOKEN = re.compile(
    rb" *(?:(?P<lp>\()|(?P<rp>\))"
    rb'|"(?P<q>(?:[^"\\\r\n]|\\.)*)"'
    rb'|(?P<atom>(?:[^\x00-\x20()"{\x7f\[]+|\[[^\]\r\n]*\])+))'
)
UNESCAPE = re.compile(rb"\\(.)")
LITERAL_END = re.compile(rb"\{(\d{1,10})(\+?)\}\Z")
TAG_NAME = re.compile(rb'([^\x00-\x20(){%*"\\+\x7f-\xff]+) ([A-Za-z][A-Za-z0-9]*)')
UID_SUB = re.compile(rb" ([A-Za-z]+)")
SEQ_SET = re.compile(r"(?:\d+|\*)(?::(?:\d+|\*))?(?:,(?:\d+|\*)(?::(?:\d+|\*))?)*\Z")


def tokenize(chunks: list[bytes], literals: list[bytes], start: int) -> list[Any]:
    """Command arguments: atoms are ``str``, strings ``bytes`` (literals ``Lit``), lists ``list``."""
    stack: list[list[Any]] = [[]]
    for i, chunk in enumerate(chunks):
        pos = start if i == 0 else 0
        while pos < len(chunk):
            m = TOKEN.match(chunk, pos)
            if m is None:
                if not chunk[pos:].strip(b" "):
                    break
                raise Bad(f"Could not parse command near {chunk[pos : pos + 40]!r}")
            pos = m.end()
            kind = m.lastgroup
            if kind == "atom":
                stack[-1].append(m.group("atom").decode("latin-1"))
            elif kind == "q":
                stack[-1].append(UNESCAPE.sub(rb"\1", m.group("q")))
            elif kind == "lp":
                new: list[Any] = []
                stack[-1].append(new)
                stack.append(new)
            else:
                if len(stack) == 1:
                    raise Bad("Could not parse command: unbalanced ')'")
                stack.pop()
        if i < len(literals):
            stack[-1].append(Lit(literals[i]))
    if len(stack) != 1:
        raise Bad("Could not parse command: unbalanced '('")
    return stack[0]


class SeqSet:
    """A sequence set (RFC 3501 9) resolved against a maximum (for ``*``)."""

    def __init__(self, text: object, maximum: int) -> None:
        if not isinstance(text, str) or not SEQ_SET.match(text):
            raise Bad(f"Could not parse command: invalid sequence set {text!r:.60}")
        ranges: list[tuple[int, int]] = []
        for part in text.split(","):
            a, sep, b = part.partition(":")
            lo = maximum if a == "*" else int(a)
            hi = (maximum if b == "*" else int(b)) if sep else lo
            if lo > hi:
                lo, hi = hi, lo
            ranges.append((lo, hi))
        ranges.sort()
        merged: list[tuple[int, int]] = []
        for lo, hi in ranges:
            if merged and lo <= merged[-1][1] + 1:
                merged[-1] = (merged[-1][0], max(hi, merged[-1][1]))
            else:
                merged.append((lo, hi))
        self._starts = [lo for lo, _ in merged]
        self._ranges = merged

    def __contains__(self, n: int) -> bool:
        i = bisect.bisect_right(self._starts, n) - 1
        return i >= 0 and self._ranges[i][0] <= n <= self._ranges[i][1]


def uid_list(uids: list[int]) -> str:
    return ",".join(map(str, uids))


@dataclass(slots=True)
class Command:
    tag: str
    name: str
    chunks: list[bytes]
    literals: list[bytes]
    start: int  # where the arguments begin in chunks[0]
    line: bytes = b""  # the first line as received (literal marker included)


SKIP = object()  # a command already answered while it was read
NONAUTH, AUTH, SELECTED, LOGOUT = range(4)
ANY = frozenset((NONAUTH, AUTH, SELECTED))
AUTHED = frozenset((AUTH, SELECTED))
SEL = frozenset((SELECTED,))

SECTION = re.compile(
    r"(BODY|BODY\.PEEK|BINARY|BINARY\.PEEK)\[([^\]]*)\](?:<(\d+)(?:\.(\d+))?>)?\Z", re.I
)


@dataclass(slots=True)
class FetchItem:
    kind: str  # UID FLAGS INTERNALDATE RFC822.SIZE X-GM-MSGID X-GM-THRID X-GM-LABELS MODSEQ BODY
    out: bytes = b""  # the response item name for BODY sections
    section: str = ""  # "", HEADER, TEXT, HEADER.FIELDS, HEADER.FIELDS.NOT
    fields: tuple[bytes, ...] = ()
    origin: int | None = None
    count: int | None = None
    sets_seen: bool = False


def fetch_items(
    spec: object, plain: Iterable[str] = (), who: str = "this double"
) -> list[FetchItem]:
    """The items of a FETCH; ``plain``: the server's own attribute items beside RFC 3501's."""
    names: list[Any] = spec if isinstance(spec, list) else [spec]
    out: list[FetchItem] = []
    for tok in names:
        if not isinstance(tok, str):
            raise Bad(f"Could not parse command: bad FETCH item {tok!r:.40}")
        up = tok.upper()
        if up == "FAST":
            out += [FetchItem("FLAGS"), FetchItem("INTERNALDATE"), FetchItem("RFC822.SIZE")]
        elif up in ("UID", "FLAGS", "INTERNALDATE", "RFC822.SIZE") or up in plain:
            out.append(FetchItem(up))
        elif up == "RFC822":
            out.append(FetchItem("BODY", b"RFC822", "", sets_seen=True))
        elif up == "RFC822.HEADER":
            out.append(FetchItem("BODY", b"RFC822.HEADER", "HEADER"))
        elif up == "RFC822.TEXT":
            out.append(FetchItem("BODY", b"RFC822.TEXT", "TEXT", sets_seen=True))
        elif up in ("ALL", "FULL", "ENVELOPE", "BODY", "BODYSTRUCTURE"):
            raise Bad(f"Could not parse command: FETCH {up} is not supported by {who}")
        else:
            out.append(body_item(tok, who))
    return out


def body_item(tok: str, who: str = "this double") -> FetchItem:
    m = SECTION.match(tok)
    if m is None:
        raise Bad(f"Could not parse command: unknown FETCH item {tok[:60]!r}")
    verb, section, origin, count = m.groups()
    if verb.upper().startswith("BINARY"):
        raise Bad("Could not parse command: BINARY is not supported by " + who)
    sec = section.strip()
    up = sec.upper()
    fields: tuple[bytes, ...] = ()
    if up in ("", "HEADER", "TEXT"):
        norm = up
    else:
        fm = re.match(r"(HEADER\.FIELDS(?:\.NOT)?) *\(([^()]*)\)\Z", sec, re.I)
        if fm is None:
            raise Bad(
                f"Could not parse command: section [{sec[:40]}] (MIME parts) is not "
                f"supported by {who}"
            )
        up = fm.group(1).upper()
        # field names are astrings: atoms or quoted strings (RFC 3501 9, header-fld-name)
        fields = tuple(f.strip('"').encode("latin-1").upper() for f in fm.group(2).split())
        if not fields:
            raise Bad("Could not parse command: empty header field list")
        norm = f"{up} ({' '.join(f.decode('latin-1') for f in fields)})"
    name = f"BODY[{norm}]"
    if origin is not None:
        name += f"<{int(origin)}>"
    return FetchItem(
        "BODY",
        name.encode("latin-1"),
        up,
        fields,
        None if origin is None else int(origin),
        None if count is None else int(count),
        sets_seen=not verb.upper().endswith(".PEEK"),
    )


def section_bytes(item: FetchItem, raw: bytes) -> bytes:
    if item.section == "":
        data = raw
    elif item.section == "HEADER":
        data = header_block(raw)
    elif item.section == "TEXT":
        data = raw[len(header_block(raw)) :]
    else:
        want = {f.lower() for f in item.fields}
        keep = item.section == "HEADER.FIELDS"
        data = b"".join(lines for name, lines in header_fields(raw) if (name in want) == keep)
        data += b"\r\n"
    if item.origin is not None:
        end = None if item.count is None else item.origin + item.count
        data = data[item.origin : end]
    return data


def flag_list(tok: object) -> list[str]:
    items = tok if isinstance(tok, list) else [tok]
    out: list[str] = []
    for f in items:
        if not isinstance(f, str):
            raise Bad(f"Could not parse command: bad flag {f!r:.40}")
        if f.startswith("\\"):
            low = f.lower()
            if low == "\\deleted":
                out.append("\\Deleted")
            elif low == "\\recent":
                continue
            elif low in SYSTEM_FLAGS:
                out.append(SYSTEM_FLAGS[low])
            else:
                raise Bad(f"Could not parse command: unknown system flag {f}")
        else:
            out.append(f)
    return out


def pattern(raw: bytes, separator: bytes = b"/") -> re.Pattern[bytes]:
    """A LIST pattern (RFC 3501 6.3.8: ``*`` anything, ``%`` anything but the separator)."""
    other = b"[^" + re.escape(separator) + b"]*"
    out = b""
    for ch in raw:
        c = bytes((ch,))
        out += b".*" if c == b"*" else other if c == b"%" else re.escape(c)
    return re.compile(out + b"\\Z", re.S)


# ---------------------------------------------------------------------------- session


Handler = Callable[[Any, Command, list[Any]], Awaitable[str]]  # a verb: the tagged answer


class WireSession:
    """One connection's reading and writing; a double's session subclasses it.

    ``nonsync_max``: the largest ``{n+}`` literal taken (None: any, LITERAL+; 0: none, a
    server without LITERAL+/LITERAL-).  Subclasses answer (:meth:`answer`) and may refuse a
    literal before its continuation (:meth:`refuse_literal`) or delay it
    (:meth:`continuation`).
    """

    greeting = b"* OK IMAP4rev1 test double ready\r\n"
    line_too_long = b"* BYE [TOOBIG] Command line too long\r\n"
    nonsync_max: int | None = None

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.state = NONAUTH

    def send(self, data: bytes) -> None:
        self.writer.write(data)

    async def flush(self) -> None:
        await self.writer.drain()

    async def readline(self) -> bytes | None:
        try:
            line = await self.reader.readuntil(b"\n")
        except asyncio.IncompleteReadError:
            return None
        except (asyncio.LimitOverrunError, ValueError):
            self.send(self.line_too_long)
            return None
        except ConnectionError:
            return None
        return line[:-2] if line.endswith(b"\r\n") else line[:-1]

    async def read_exact(self, n: int) -> bytes | None:
        try:
            return await self.reader.readexactly(n)
        except (asyncio.IncompleteReadError, ConnectionError):
            return None

    async def run(self) -> None:
        try:
            self.send(self.greeting)
            await self.flush()
            while self.state != LOGOUT:
                cmd = await self.read_command()
                if cmd is None:
                    break
                if cmd is not SKIP:
                    assert isinstance(cmd, Command)
                    await self.dispatch(cmd)
                await self.flush()
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            self.release()
            self.writer.close()
            with contextlib.suppress(Exception):
                await self.writer.wait_closed()

    def release(self) -> None:
        """The connection is over (called once it closes)."""

    def sync(self, *, expunges: bool) -> None:
        """Tell the client what changed in its selected folder (EXISTS, EXPUNGE)."""

    async def dispatch(self, cmd: Command) -> None:
        raise NotImplementedError

    async def execute(self, cmd: Command, handler: Handler) -> None:
        """Run a verb and answer: ``Bad``/``No`` as BAD/NO, anything else as
        :meth:`internal_error` says; first the selected folder's news (RFC 3501 7.4.1: no
        EXPUNGE during FETCH, STORE, SEARCH)."""
        try:
            args = tokenize(cmd.chunks, cmd.literals, cmd.start)
            response = await handler(self, cmd, args)
        except Bad as exc:
            response = f"BAD {exc}"
        except No as exc:
            response = f"NO {exc}"
        except Exception as exc:
            response = self.internal_error(cmd, exc)
        if self.state == SELECTED:
            self.sync(expunges=cmd.name not in ("FETCH", "STORE", "SEARCH"))
        self.answer(cmd.tag, cmd.name, response)

    def internal_error(self, cmd: Command, exc: Exception) -> str:
        """The answer to a handler's bug (a double records it for the test to fail)."""
        return f"BAD [SERVERBUG] internal error in the double: {exc!r}"

    def answer(self, tag: str, name: str, response: str) -> None:
        self.send(f"{tag} {response}\r\n".encode("utf-8", "replace"))

    def refuse_literal(self, name: str, n: int) -> str | None:
        """A tagged answer ("BAD ...", "NO ...") instead of the continuation, or None."""
        if n > MAX_LITERAL:
            return "BAD [TOOBIG] Literal too large for the double"
        return None

    def nonsync_refusal(self, n: int) -> str:
        """The BAD text for a ``{n+}`` literal beyond :attr:`nonsync_max`."""
        if self.nonsync_max == 0:
            return "Could not parse command: non-synchronizing literal (no LITERAL+ here)"
        return f"[TOOBIG] Non-synchronizing literal larger than {self.nonsync_max} bytes"

    async def continuation(self) -> None:
        """Invite a synchronizing literal's bytes (RFC 3501 7.5)."""
        self.send(b"+ go ahead\r\n")
        await self.flush()

    async def read_command(self) -> Command | object | None:
        line = await self.readline()
        if line is None:
            return None
        first = line
        m = TAG_NAME.match(line)
        tag = m.group(1).decode("ascii") if m else None
        name = m.group(2).decode("ascii").upper() if m else ""
        start = m.end() if m else 0
        if m and name == "UID":
            sub = UID_SUB.match(line, start)
            if sub:
                name = "UID " + sub.group(1).decode("ascii").upper()
                start = sub.end()
        chunks: list[bytes] = []
        literals: list[bytes] = []
        error: str | None = None
        while True:
            lm = LITERAL_END.search(line)
            if lm is None:
                chunks.append(line)
                break
            n = int(lm.group(1))
            chunks.append(line[: lm.start()])
            if lm.group(2):  # {n+}: the client sends the bytes at once
                limit = self.nonsync_max
                if limit is not None and n > limit and error is None:
                    error = self.nonsync_refusal(n)
            else:
                refusal = self.refuse_literal(name, n) if tag else "BAD Could not parse command"
                if refusal is not None:
                    if tag is None:
                        self.send(b"* BAD Could not parse command\r\n")
                    else:
                        self.answer(tag, name, refusal)
                    return SKIP
                await self.continuation()
            data = await self.read_exact(n)
            if data is None:
                return None
            literals.append(data)
            line = await self.readline()
            if line is None:
                return None
        if tag is None:
            self.send(b"* BAD Could not parse command\r\n")
            return SKIP
        if error is not None:
            self.answer(tag, name, "BAD " + error)
            return SKIP
        return Command(tag, name, chunks, literals, start, first)


# ---------------------------------------------------------------------------- search


Predicate = Callable[[int, int, Any], bool]  # (sequence number, UID, message) -> match


class Search:
    """SEARCH criteria (RFC 3501 6.4.4) as a predicate over (seq, UID, message).

    A message has ``raw`` (bytes), ``flags`` and ``internaldate``; a double overrides
    :meth:`has_flag` (where flags live elsewhere), :meth:`extra_key` (its own keys) and
    :meth:`sub` (a parenthesised group, same settings).
    """

    def __init__(self, toks: list[Any], nseq: int, uid_max: int) -> None:
        self.toks = toks
        self.pos = 0
        self.nseq = nseq
        self.uid_max = uid_max

    def sub(self, toks: list[Any]) -> Search:
        return type(self)(toks, self.nseq, self.uid_max)

    def has_flag(self, m: Any, name: str) -> bool:
        return name in m.flags

    def extra_key(self, up: str) -> Predicate | None:
        return None

    def next(self) -> Any:
        if self.pos >= len(self.toks):
            raise Bad("Could not parse command: SEARCH criteria end too early")
        tok = self.toks[self.pos]
        self.pos += 1
        return tok

    def string(self) -> bytes:
        tok = self.next()
        if isinstance(tok, str):
            return tok.encode("latin-1")
        if isinstance(tok, bytes):
            return bytes(tok)
        raise Bad("Could not parse command: SEARCH string expected")

    def number(self) -> int:
        tok = self.next()
        if not isinstance(tok, str) or not tok.isdigit():
            raise Bad(f"Could not parse command: number expected, got {tok!r:.30}")
        return int(tok)

    def date(self) -> datetime:
        tok = self.next()
        text = tok.decode("latin-1") if isinstance(tok, bytes) else str(tok)
        m = DATE.match(text)
        if m is None:
            raise Bad(f"Could not parse command: bad date {text[:30]!r}")
        return datetime(int(m.group(3)), month(m.group(2)), int(m.group(1)), tzinfo=UTC)

    def all(self) -> Predicate:
        preds = []
        while self.pos < len(self.toks):
            preds.append(self.key())
        if not preds:
            raise Bad("Could not parse command: empty SEARCH")
        return lambda n, u, m: all(p(n, u, m) for p in preds)

    def key(self) -> Predicate:
        tok = self.next()
        if isinstance(tok, list):
            return self.sub(tok).all()
        if not isinstance(tok, str):
            raise Bad("Could not parse command: bad SEARCH key")
        up = tok.upper()

        def flag(name: str, want: bool = True) -> Predicate:
            return lambda n, u, m: self.has_flag(m, name) == want

        simple = {
            "ALL": lambda n, u, m: True,
            "ANSWERED": flag("\\Answered"),
            "UNANSWERED": flag("\\Answered", False),
            "DELETED": flag("\\Deleted"),
            "UNDELETED": flag("\\Deleted", False),
            "DRAFT": flag("\\Draft"),
            "UNDRAFT": flag("\\Draft", False),
            "FLAGGED": flag("\\Flagged"),
            "UNFLAGGED": flag("\\Flagged", False),
            "SEEN": flag("\\Seen"),
            "UNSEEN": flag("\\Seen", False),
            "NEW": lambda n, u, m: False,
            "RECENT": lambda n, u, m: False,
            "OLD": lambda n, u, m: True,
        }
        if up in simple:
            return simple[up]
        if up in ("KEYWORD", "UNKEYWORD"):
            kw = self.string().decode("latin-1")
            return flag(kw, up == "KEYWORD")
        if up == "NOT":
            inner = self.key()
            return lambda n, u, m: not inner(n, u, m)
        if up == "OR":
            a, b = self.key(), self.key()
            return lambda n, u, m: a(n, u, m) or b(n, u, m)
        if up == "UID":
            uset = SeqSet(self.next(), self.uid_max)
            return lambda n, u, m: u in uset
        if SEQ_SET.match(tok):
            sset = SeqSet(tok, self.nseq)
            return lambda n, u, m: n in sset
        if up in ("LARGER", "SMALLER"):
            size = self.number()
            if up == "LARGER":
                return lambda n, u, m: len(m.raw) > size
            return lambda n, u, m: len(m.raw) < size
        if up in ("SINCE", "BEFORE", "ON"):
            day = self.date().date()

            def on_day(n: int, u: int, m: Any) -> bool:
                d = m.internaldate.astimezone(UTC).date()
                return d >= day if up == "SINCE" else d < day if up == "BEFORE" else d == day

            return on_day
        if up in ("FROM", "TO", "CC", "BCC", "SUBJECT"):
            return self.header(up.lower().encode(), self.string())
        if up == "HEADER":
            name = self.string().lower()
            return self.header(name, self.string())
        if up in ("BODY", "TEXT"):
            needle = self.string().lower()
            if up == "BODY":
                return lambda n, u, m: needle in m.raw[len(header_block(m.raw)) :].lower()
            return lambda n, u, m: needle in m.raw.lower()
        extra = self.extra_key(up)
        if extra is not None:
            return extra
        raise Bad(f"Could not parse command: SEARCH key {up[:20]} is not supported by the double")

    @staticmethod
    def header(name: bytes, needle: bytes) -> Predicate:
        low = needle.lower()

        def match(n: int, u: int, m: Any) -> bool:
            for fname, lines in header_fields(m.raw):
                if fname == name and low in field_value(lines).lower():
                    return True
            return False

        return match


# ---------------------------------------------------------------------------- shared verbs


async def plain_credentials(s: WireSession, args: list[Any], bad_login: str) -> tuple[str, str]:
    """AUTHENTICATE PLAIN (RFC 4616), initial response or after a ``+``: (user, password)."""
    if not args or not isinstance(args[0], str):
        raise Bad("Could not parse command: AUTHENTICATE needs a mechanism")
    if args[0].upper() != "PLAIN":
        raise No(f"[CANNOT] Unsupported mechanism {args[0][:20]} (the double has AUTH=PLAIN only)")
    if len(args) > 1:
        token = args[1].encode("latin-1") if isinstance(args[1], str) else bytes(args[1])
    else:
        s.send(b"+ \r\n")
        await s.flush()
        line = await s.readline()
        if line is None:
            s.state = LOGOUT
            raise Bad("Connection closed during AUTHENTICATE")
        token = line
    if token.strip() == b"*":
        raise Bad("AUTHENTICATE cancelled")
    try:
        decoded = base64.b64decode(b"" if token == b"=" else token, validate=True)
        _authz, user, password = decoded.split(b"\0")
    except (binascii.Error, ValueError):
        raise No(bad_login) from None
    return user.decode("utf-8", "replace"), password.decode("utf-8", "replace")


async def idle(s: WireSession, done: str) -> str:
    """IDLE (RFC 2177): report changes every 50 ms until DONE; ``done`` is the OK answer."""
    s.send(b"+ idling\r\n")
    await s.flush()
    while True:
        if s.state == SELECTED:
            s.sync(expunges=True)
            await s.flush()
        try:
            line = await asyncio.wait_for(s.readline(), 0.05)
        except TimeoutError:
            continue
        if line is None:
            s.state = LOGOUT
            raise Bad("Connection closed during IDLE")
        if line.strip().upper() == b"DONE":
            return done
        raise Bad("Could not parse command: expected DONE")


# ---------------------------------------------------------------------------- server


class ThreadedServer:
    """An asyncio IMAP server on ``host`` (a free port by default) in a daemon thread."""

    label = "the test double"  # in error messages

    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self.host = host
        self._want_port = port
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: asyncio.base_events.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._port: int | None = None

    def session(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> WireSession:
        raise NotImplementedError

    @property
    def port(self) -> int:
        if self._port is None:
            raise RuntimeError(f"{self.label} is not running")
        return self._port

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def start(self, timeout: float = 10.0) -> Self:
        if self.running:
            return self
        ready = threading.Event()
        failure: list[BaseException] = []

        def run() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            try:
                self._server = loop.run_until_complete(
                    asyncio.start_server(self._serve, self.host, self._want_port, limit=MAX_LINE)
                )
                self._port = self._server.sockets[0].getsockname()[1]
            except BaseException as exc:
                failure.append(exc)
                ready.set()
                loop.close()
                return
            ready.set()
            try:
                loop.run_forever()
            finally:
                loop.run_until_complete(loop.shutdown_asyncgens())
                loop.close()

        self._thread = threading.Thread(target=run, name=self.label, daemon=True)
        self._thread.start()
        if not ready.wait(timeout):
            raise RuntimeError(f"{self.label} did not start")
        if failure:
            self._thread.join(timeout)
            self._thread = None
            raise RuntimeError(f"{self.label} could not listen: {failure[0]}") from failure[0]
        return self

    def stop(self, timeout: float = 10.0) -> None:
        """Close the listener and every connection, stop the loop, join the thread."""
        loop, thread = self._loop, self._thread
        if loop is None or thread is None or not thread.is_alive():
            self._thread = None
            return
        fut = asyncio.run_coroutine_threadsafe(self._shutdown(), loop)
        with contextlib.suppress(Exception):
            fut.result(timeout)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout)
        if thread.is_alive():
            raise RuntimeError(f"{self.label}'s thread did not stop")
        self._thread = None
        self._loop = None
        self._port = None

    async def _shutdown(self) -> None:
        if self._server is not None:
            self._server.close()
        tasks = list(self._tasks)
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            await self.session(reader, writer).run()
        except asyncio.CancelledError:
            pass  # stop(): Python 3.11's stream callback would log a cancelled task's error
        finally:
            self._tasks.discard(task)
