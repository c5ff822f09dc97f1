"""The IMAP4rev1 wire protocol, sans I/O: bytes in, responses out; commands in, bytes out.

Theory of operation
-------------------
An IMAP server sends *responses*: lines ending in CRLF, where a line may end in a
literal announcement ``{N}`` after which exactly N raw bytes follow and the line
goes on (RFC 3501 section 4.3).  :class:`ResponseParser` keeps one growing buffer,
finds where each response ends without ever scanning inside a literal, and turns
each complete response into one of three frozen-ish objects:

* :class:`Continuation`  -- ``+ text`` (the server is ready for a literal),
* :class:`Tagged`        -- ``TAG OK|NO|BAD [code] text``, the end of one command,
* :class:`Untagged`      -- ``* ...`` data (FETCH, LIST, CAPABILITY, EXISTS, OK, BYE, ...).

Untagged data is tokenised into a small tree: atoms are ``str`` (ASCII), quoted
strings and literals are ``bytes`` (never decoded: message bodies pass through
untouched), ``NIL`` is ``None`` and parenthesised lists are ``list``.  FETCH data is
further turned into a ``dict`` keyed by the *canonical* item name (:func:`fetch_key`:
``"UID"``, ``"BODY[]"``, ``"BODY[HEADER.FIELDS (MESSAGE-ID)]"``...), so the engine finds
what it asked for by meaning, however the server spelled it (``body[header.fields
("Message-ID")]``, ``BODY.PEEK[...]``, ``RFC822`` for ``BODY[]``...).

Commands go the other way: :func:`encode_command` turns arguments into a list of
``bytes`` segments and :class:`Literal` markers; the I/O layer either writes them
at once (LITERAL+, RFC 7888) or waits for a continuation before each literal.

Anything the server sends that cannot be parsed raises :class:`ProtocolError`
(the peer's fault); misuse of the API raises ``ValueError`` (our fault).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "MAX_CONTINUATION",
    "MAX_LINE",
    "AppendUid",
    "Continuation",
    "FetchRun",
    "Literal",
    "LiteralTooLarge",
    "ProtocolError",
    "ResponseCode",
    "ResponseParser",
    "Tagged",
    "Untagged",
    "encode_command",
    "fetch_key",
    "parse_uid_set",
    "quote",
]

#: Longest response line (outside literals) we accept before declaring the peer broken.
MAX_LINE = 64 * 1024 * 1024
#: Longest continuation request (``+ text``) we accept: it is a literal's go-ahead or a
#: SASL challenge (an OAuth2 error challenge is ~200 bytes); a server that sends a huge
#: one, or one that never ends, is broken before more than this is buffered.
MAX_CONTINUATION = 64 * 1024
#: Largest literal we accept (a single message); IMAP servers rarely allow more than ~150 MB.
MAX_LITERAL = 2 * 1024 * 1024 * 1024
#: Deepest nesting of parenthesised lists we accept.  Real answers nest a few levels
#: (BODYSTRUCTURE: one per MIME level, and servers cap those near 100); deeper trees
#: could not even be printed or compared without a RecursionError.
MAX_DEPTH = 256
#: Most UIDs a UID set from the server may name (APPENDUID, COPYUID: we append a few
#: hundred and copy 2000 per command): "1:4294967295" is refused instead of being
#: expanded into 4 billion ints.
MAX_UID_SET = 100_000
#: Largest UID, UIDVALIDITY, sequence number or count (nz-number/number: 32 bits).
MAX_NUMBER = 2**32 - 1
#: Literals from this size on are received into a buffer of their own (one copy less).
BIG_LITERAL = 64 * 1024
#: Largest literal anywhere but in a FETCH answer (a greeting, CAPABILITY, LIST, LSUB,
#: STATUS, NAMESPACE, ID, SEARCH, a tagged or status text...): a mailbox name or an ID
#: value has no business being large, and an announcement is refused before a byte of
#: it is kept.  FETCH literals (message bodies) keep MAX_LITERAL; the mover's memory
#: budget (transfer/budget.py) governs those.
MAX_SMALL_LITERAL = 64 * 1024
#: An untagged FETCH response: the only place a literal may be large.
_FETCH_START = re.compile(rb"\* [0-9]+ FETCH[ (]", re.IGNORECASE)
#: A response name fit for an error message (LIST, OK, STATUS...).
_RESPONSE_WORD = re.compile(rb"[A-Za-z][A-Za-z0-9.-]{0,19}")


class ProtocolError(Exception):
    """The server sent something that is not IMAP (the peer's fault)."""


def _literal_cap(first: bytes) -> tuple[int, str]:
    """The largest literal the response starting with ``first`` may carry, and the
    response's name for an error message (only a short atom of the peer's bytes)."""
    if _FETCH_START.match(first):
        return MAX_LITERAL, "FETCH"
    parts = first[:80].split(b" ", 3)
    word = parts[1] if len(parts) > 1 else b""
    if parts[0] == b"*" and word.isdigit() and len(parts) > 2:
        word = parts[2]
    name = word.decode("latin-1").upper() if _RESPONSE_WORD.fullmatch(word) else "unknown"
    if parts[0] not in (b"*", b"+"):
        name = "tagged " + name
    return MAX_SMALL_LITERAL, name


def brief(value: object, limit: int = 60, _depth: int = 0) -> str:
    """A short repr for error messages: a few items and bytes of whatever the server sent
    (never the whole of a 100 MB literal, never a RecursionError on a deep tree)."""
    if isinstance(value, bytes | bytearray | str):
        more = "..." if len(value) > limit else ""
        return repr(value[:limit]) + more
    if isinstance(value, list):
        if _depth >= 3:
            return "[...]"
        items = [brief(v, limit, _depth + 1) for v in value[:4]]
        return "[" + ", ".join(items) + (", ...]" if len(value) > 4 else "]")
    if value is None or isinstance(value, int):
        return repr(value)[:limit]
    return f"<{type(value).__name__}>"


class LiteralTooLarge(ProtocolError):
    """A literal announced beyond what its context may hold (our words only: a number
    and where; the customer may be shown it)."""


# --------------------------------------------------------------------------------------
# Response objects


@dataclass(frozen=True, slots=True)
class ResponseCode:
    """A bracketed response code, e.g. ``[APPENDUID 38505 3955]`` (RFC 3501 7.1)."""

    name: str
    args: bytes = b""

    def tokens(self) -> list[Any]:
        """The code's arguments tokenised like untagged data."""
        return _tokenize([self.args], [], 0) if self.args else []


@dataclass(frozen=True, slots=True)
class AppendUid:
    """RFC 4315 APPENDUID: the UIDVALIDITY and UIDs the destination gave appended messages."""

    uidvalidity: int
    uids: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class Continuation:
    """``+ text``: the server waits for the rest of a command (RFC 3501 7.5)."""

    text: bytes


@dataclass(frozen=True, slots=True)
class Tagged:
    """The completion of one command (RFC 3501 7.1)."""

    tag: str
    status: str  # "OK", "NO" or "BAD"
    code: ResponseCode | None
    text: bytes

    @property
    def ok(self) -> bool:
        return self.status == "OK"

    def appenduid(self) -> AppendUid | None:
        """The APPENDUID code of a successful APPEND, when the server has UIDPLUS."""
        if self.code is None or self.code.name != "APPENDUID":
            return None
        parts = self.code.args.split()
        if len(parts) != 2:
            raise ProtocolError(f"malformed APPENDUID code: {brief(self.code.args)}")
        try:
            uidvalidity = int(parts[0])
            uids = tuple(parse_uid_set(parts[1]))
        except ValueError as exc:
            raise ProtocolError(f"malformed APPENDUID code: {brief(self.code.args)}") from exc
        if not 0 < uidvalidity <= MAX_NUMBER:
            raise ProtocolError(f"malformed APPENDUID code: {brief(self.code.args)}")
        return AppendUid(uidvalidity, uids)


@dataclass(slots=True)
class Untagged:
    """``* ...`` data.

    ``kind`` is the upper-cased response name (``FETCH``, ``LIST``, ``EXISTS``,
    ``OK``...); ``number`` the leading number of ``* 12 FETCH``/``* 3 EXISTS``;
    ``data`` the tokens after the name (for FETCH: one ``dict``); for status
    responses (OK/NO/BAD/BYE/PREAUTH) ``code`` and ``text`` are set instead.
    """

    kind: str
    number: int | None = None
    data: list[Any] = field(default_factory=list)
    code: ResponseCode | None = None
    text: bytes = b""


@dataclass(slots=True)
class FetchRun:
    """Consecutive FETCH responses of one of the two shapes a transfer receives tens of
    thousands of times, parsed in bulk (``ResponseParser(bulk=True)``):

    * ``shape == "meta"``: ``* n FETCH (UID u RFC822.SIZE s FLAGS (...) INTERNALDATE "d")``,
      rows ``(n, u, s, flags, d)`` with ``flags`` the raw bytes inside the parentheses;
    * ``shape == "body"``: ``* n FETCH (UID u BODY[] {len}<bytes>)``, rows ``(n, u, body)``.

    Only lines the per-line parser would read exactly the same way are taken (numbers
    without leading zeros and in range, flat flag lists the fast path accepts), so a run
    is just a compact form of :meth:`untagged`, which gives the per-line objects.
    """

    shape: str
    rows: list[tuple[Any, ...]]
    kind: str = "FETCH"

    def untagged(self) -> list[Untagged]:
        """The same responses as the per-line parser gives them."""
        if self.shape == "meta":
            return [
                Untagged(
                    "FETCH",
                    n,
                    [
                        {
                            "UID": str(uid),
                            "RFC822.SIZE": str(size),
                            "FLAGS": _flat_list(flags),
                            "INTERNALDATE": date,
                        }
                    ],
                )
                for n, uid, size, flags, date in self.rows
            ]
        return [
            Untagged("FETCH", n, [{"UID": str(uid), "BODY[]": body}]) for n, uid, body in self.rows
        ]


Response = Continuation | Tagged | Untagged | FetchRun


# --------------------------------------------------------------------------------------
# Tokenising


# Atoms may carry a bracketed section with spaces inside it, e.g. BODY[HEADER.FIELDS (X)]<0>;
# mailbox names may begin with "[" ("[Gmail]/Sent Mail").  CTL, SP, "(", ")", '"' and "{"
# end an atom (RFC 3501 9, ATOM-CHAR), "%" and "*" are allowed in LIST data.
_TOKEN = re.compile(
    rb"[ ]*(?:"
    rb"(?P<lp>\()|(?P<rp>\))"
    rb'|"(?P<q>(?:[^"\\\r\n]|\\.)*)"'
    rb'|(?P<atom>(?:[^\x00-\x20()"{\x7f\[]+|\[[^\]\r\n]*\])+)'
    rb")"
)
_LITERAL_AT_END = re.compile(rb"\{(\d{1,10})(\+?)\}\Z")
#: The start of a section cut by a literal: "[" and no "]" up to the literal.
_SECTION_OPEN = re.compile(rb"\[[^\]\r\n]*")
#: The rest of a section after a literal in it: up to "]", and a partial's "<o>".
_SECTION_TAIL = re.compile(rb'[^\]\r\n]*\](?:[^\x00-\x20()"{\x7f\[]+)?')


def _quoted_text(raw: bytes) -> str:
    """A literal inside a section, as a quoted string (latin-1: every byte kept)."""
    return '"' + raw.decode("latin-1").replace("\\", "\\\\").replace('"', '\\"') + '"'


_UNESCAPE = re.compile(rb"\\(.)")
_NUMBER = re.compile(rb"\d{1,20}\Z")


def _tokenize(chunks: list[bytes], literals: list[bytes], start: int) -> list[Any]:
    """Tokenise one response given as line chunks separated by literals."""
    stack: list[list[Any]] = [[]]
    match = _TOKEN.match
    nlit = len(literals)
    #: a bracketed section cut by a literal (``BODY[HEADER.FIELDS ({10}`` CRLF
    #: ``MESSAGE-ID)]``: a header-fld-name is an astring, RFC 3501 9): its text so far,
    #: each literal in it written as a quoted string (what fetch_key reads)
    section: str | None = None
    for i, chunk in enumerate(chunks):
        pos = start if i == 0 else 0
        end = len(chunk)
        if i < nlit:
            end = chunk.rindex(b"{")
        if section is not None:
            m = _SECTION_TAIL.match(chunk, pos, end)
            if m is not None:
                stack[-1].append(section + m.group().decode("latin-1"))
                section = None
                pos = m.end()
            elif i < nlit and b"]" not in chunk[pos:end]:
                section += chunk[pos:end].decode("latin-1") + _quoted_text(literals[i])
                continue
            else:
                raise ProtocolError(f"unterminated section: {brief(chunk, 80)}")
        while pos < end:
            m = match(chunk, pos, end)
            if m is None or m.end() == pos:
                if chunk[pos:end].strip(b" ") == b"":
                    break
                if (
                    i < nlit
                    and _SECTION_OPEN.fullmatch(chunk, pos, end)
                    and stack[-1]
                    and isinstance(stack[-1][-1], str)
                    and chunk[pos - 1 : pos] not in (b" ", b"(", b"")
                ):
                    # BODY[HEADER.FIELDS (... up to a literal: the section goes on after it
                    section = (
                        stack[-1].pop()
                        + chunk[pos:end].decode("latin-1")
                        + _quoted_text(literals[i])
                    )
                    break
                raise ProtocolError(f"unexpected data at offset {pos}: {chunk[pos : pos + 60]!r}")
            pos = m.end()
            group = m.lastgroup
            if group == "atom":
                atom = m.group("atom").decode("latin-1")
                stack[-1].append(None if atom == "NIL" else atom)
            elif group == "q":
                q = m.group("q")
                if b"\\" in q:
                    q = _UNESCAPE.sub(rb"\1", q)
                stack[-1].append(q)
            elif group == "lp":
                if len(stack) > MAX_DEPTH:
                    raise ProtocolError(f"lists nested more than {MAX_DEPTH} deep")
                new: list[Any] = []
                stack[-1].append(new)
                stack.append(new)
            elif group == "rp":
                if len(stack) == 1:
                    raise ProtocolError(f"unbalanced ')' in {brief(chunk, 80)}")
                stack.pop()
            else:  # pragma: no cover - regex has no other groups
                break
        if i < nlit and section is None:
            stack[-1].append(literals[i])
    if section is not None:
        raise ProtocolError(f"unterminated section: {brief(section, 80)}")
    if len(stack) != 1:
        raise ProtocolError(f"unbalanced '(' in {brief(chunks[0], 80)}")
    return stack[0]


def _parse_resp_text(line: bytes, pos: int) -> tuple[ResponseCode | None, bytes]:
    """resp-text = ["[" resp-text-code "]" SP] text (RFC 3501 9)."""
    rest = line[pos:].lstrip(b" ")
    if rest.startswith(b"["):
        close = rest.find(b"]")
        if close < 0:
            raise ProtocolError(f"unterminated response code: {rest[:80]!r}")
        inner = rest[1:close]
        name, _, args = inner.partition(b" ")
        code = ResponseCode(name.decode("latin-1").upper(), args)
        return code, rest[close + 1 :].lstrip(b" ")
    return None, rest


_STATUS = frozenset(("OK", "NO", "BAD", "BYE", "PREAUTH"))


# Fast path for FETCH data (the hot path of a transfer): ``NAME value`` pairs where a
# value is a number, a quoted string, a flat list (FLAGS), NIL, or the chunk's literal.
# It must agree with the general tokenizer (tests/imap/test_fuzz.py checks): a flat list
# holds only atom characters and spaces, and a value ends at a space or ")" (else
# "UID 12X 5" would read as UID=12, X=5 where the tokenizer sees three tokens).
_FLAT = rb'\(([^\x00-\x1f\x7f()"{}\\\[]*(?:\\[^\x00-\x1f\x7f()"{}\\\[]*)*)\)'
_FETCH_PAIR = re.compile(
    rb" ?([A-Za-z0-9.]+(?:\[[^\]\r\n]*\](?:<\d+>)?)?) "
    rb'(?:(\d+)(?=[ )])|"((?:[^"\\\r\n]|\\.)*)"(?=[ )])|' + _FLAT + rb"(?=[ )])"
    rb"|(NIL)(?=[ )])|\{(\d+)\}\Z)"
)


# The two shapes a transfer sees thousands of times, matched whole (Dovecot's item order).
_FETCH_BODY = re.compile(rb"\(UID (\d+) BODY\[\] \{(\d+)\}\Z")
_FETCH_META = re.compile(
    rb"\(UID (\d+) RFC822\.SIZE (\d+) FLAGS " + _FLAT + rb' INTERNALDATE "([^"\\\r\n]*)"\)\Z'
)


# Whole lines of those two shapes, for the bulk path.  Numbers without leading zeros
# and of bounded length, so that str(int(x)) is the server's text and the range
# checks below are all a consumer would make (parse_number).
_NZ = rb"([1-9][0-9]{0,9})"
_BULK_META = re.compile(
    rb"\* "
    + _NZ
    + rb" FETCH \(UID "
    + _NZ
    + rb" RFC822\.SIZE (0|[1-9][0-9]{0,18}) FLAGS "
    + _FLAT
    + rb' INTERNALDATE "([^"\\\r\n]*)"\)\r\n'
)
_BULK_BODY = re.compile(
    rb"\* " + _NZ + rb" FETCH \(UID " + _NZ + rb" BODY\[\] \{([0-9]{1,10})\}\r\n"
)
_MAX_SIZE = 2**63 - 1


def _flat_list(flat: bytes) -> list[str] | None:
    """The atoms of a flat list, or None when the general tokenizer must decide."""
    if b"\\\\" in flat:
        return None
    atoms = flat.split()  # bytes.split: ASCII whitespace only (no NBSP, unlike str)
    if b"NIL" in atoms:
        return None  # NIL is None in a list, not the atom "NIL"
    return [a.decode("latin-1") for a in atoms]


def _fetch_fast(chunks: list[bytes], literals: list[bytes], start: int) -> dict[str, Any] | None:
    """Parse ``(K V K V ...)`` of a FETCH response, or None to use the general tokenizer."""
    first = chunks[0]
    nchunks = len(chunks)
    if nchunks == 2 and len(literals) == 1 and chunks[1] == b")":
        m = _FETCH_BODY.match(first, start)
        if m is not None and int(m.group(2)) == len(literals[0]):
            return {"UID": m.group(1).decode("ascii"), "BODY[]": literals[0]}
    elif nchunks == 1:
        m = _FETCH_META.match(first, start)
        if m is not None:
            flags = _flat_list(m.group(3))
            if flags is not None:
                return {
                    "UID": m.group(1).decode("ascii"),
                    "RFC822.SIZE": m.group(2).decode("ascii"),
                    "FLAGS": flags,
                    "INTERNALDATE": m.group(4),
                }
    if first[start : start + 1] != b"(":
        return None
    out: dict[str, Any] = {}
    match = _FETCH_PAIR.match
    nlit = len(literals)
    for i, chunk in enumerate(chunks):
        pos = start + 1 if i == 0 else 0
        end = len(chunk)
        while pos < end:
            if chunk[pos] == 41:  # ")": must be the very end of the response
                if i != len(chunks) - 1 or pos != end - 1:
                    return None
                return out
            m = match(chunk, pos)
            if m is None:
                return None
            key = fetch_key(m.group(1).decode("latin-1"))
            if key == "NIL":
                return None  # NIL is no item name: the tokenizer refuses it
            num, quoted, flat, nil, lit = m.group(2, 3, 4, 5, 6)
            if num is not None:
                out[key] = num.decode("latin-1")
            elif quoted is not None:
                out[key] = _UNESCAPE.sub(rb"\1", quoted) if b"\\" in quoted else quoted
            elif flat is not None:
                flags = _flat_list(flat)
                if flags is None:
                    return None
                out[key] = flags
            elif nil is not None:
                out[key] = None
            else:
                if i >= nlit or int(lit) != len(literals[i]):
                    return None
                out[key] = literals[i]
                pos = end
                break
            pos = m.end()
    return None


# --------------------------------------------------------------------------------------
# FETCH item names by meaning

#: RFC822.* items and the BODY[...] section each is a synonym of (RFC 3501 6.4.5).
_RFC822 = {"RFC822": "BODY[]", "RFC822.HEADER": "BODY[HEADER]", "RFC822.TEXT": "BODY[TEXT]"}
#: Tokens of a section: "(", ")", a quoted string, or anything else up to a space.
_SECTION_TOKEN = re.compile(r'\s*(?:(\()|(\))|"((?:[^"\\]|\\.)*)"|([^\s()"]+))', re.S)
_FIELD_ATOM = re.compile(r'[^\x00-\x20()"{\x7f-\xff%*\\\]]+\Z')
_PARTIAL = re.compile(r"<(\d+)>\Z")
#: Item names seen -> their canonical form (names repeat in every response: bounded).
_KEYS: dict[str, str] = {}
_KEYS_MAX = 4096


def fetch_key(name: str) -> str:
    """The canonical form of a FETCH item name (a fetch-att as asked, or as the server
    echoes it): items are found by meaning, not by spelling.

    Upper-cased; ``BODY.PEEK[...]`` is ``BODY[...]`` (and ``BINARY.PEEK`` ``BINARY``);
    ``RFC822``, ``RFC822.HEADER`` and ``RFC822.TEXT`` are ``BODY[]``, ``BODY[HEADER]`` and
    ``BODY[TEXT]``; in a section, header field names (astrings: atoms, quoted strings or
    literals) are unquoted and upper-cased (field names are case-insensitive, RFC 5322
    1.2.2) and separated by one space; a partial's origin ``<o>`` is kept (``<o.n>`` of
    a request becomes ``<o>``, as the server echoes it).  So
    ``body.peek[header.fields ("Message-ID")]`` and ``BODY[HEADER.FIELDS (MESSAGE-ID)]``
    are one key.  A name that is not a section spelling is only upper-cased.
    """
    key = _KEYS.get(name)
    if key is None:
        key = _canonical(name)
        if len(_KEYS) < _KEYS_MAX:
            _KEYS[name] = key
    return key


def _canonical(name: str) -> str:
    open_ = name.find("[")
    if open_ < 0:
        upper = name.upper()
        return _RFC822.get(upper, upper)
    head = name[:open_].upper()
    if head.endswith(".PEEK"):
        head = head[: -len(".PEEK")]
    # the section: tokens up to the "]" that is not inside a quoted string
    words: list[str] = []
    depth = 0
    pos = open_ + 1
    while True:
        m = _SECTION_TOKEN.match(name, pos)
        if m is None:
            return name.upper()  # no "]": not a section we understand, spelled as it is
        pos = m.end()
        lp, rp, quoted, word = m.groups()
        if lp:
            depth += 1
            words.append("(")
        elif rp:
            depth -= 1
            words.append(")")
        elif quoted is not None:
            field = re.sub(r"\\(.)", r"\1", quoted, flags=re.S).upper()
            words.append(field if _FIELD_ATOM.match(field) else _quoted_str(field))
        else:
            cut = word.find("]")
            if cut < 0:
                words.append(word.upper())
                continue
            if depth:
                return name.upper()  # "]" inside the field list: not a section we know
            if cut:
                words.append(word[:cut].upper())
            tail = name[m.start(4) + cut + 1 :]
            break
    section = ""
    for w in words:
        if section and w != ")" and not section.endswith("("):
            section += " "
        section += w
    tail = tail.strip()
    if tail.startswith("<") and "." in tail and tail.endswith(">"):
        tail = tail[: tail.index(".")] + ">"  # a request's <o.n>: the answer says <o>
    p = _PARTIAL.match(tail)
    if p is not None:
        tail = f"<{int(p.group(1))}>"
    return f"{head}[{section}]{tail.upper()}"


def _quoted_str(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _fetch_dict(items: list[Any]) -> dict[str, Any]:
    if len(items) % 2:
        raise ProtocolError(f"odd FETCH item list: {brief(items)}")
    out: dict[str, Any] = {}
    for k in range(0, len(items), 2):
        key = items[k]
        if not isinstance(key, str):
            raise ProtocolError(f"bad FETCH item name: {brief(key)}")
        out[fetch_key(key)] = items[k + 1]
    return out


def _build(chunks: list[bytes], literals: list[bytes]) -> Response:
    first = chunks[0]
    if first.startswith(b"+"):
        if literals:
            raise ProtocolError("literal in a continuation request")
        return Continuation(first[2:] if first.startswith(b"+ ") else first[1:])
    sp = first.find(b" ")
    if sp <= 0:
        raise ProtocolError(f"malformed response: {first[:80]!r}")
    tag = first[:sp]
    if tag == b"*":
        sp2 = first.find(b" ", sp + 1)
        word = first[sp + 1 : sp2 if sp2 >= 0 else len(first)]
        number: int | None = None
        if _NUMBER.match(word):
            number = int(word)
            if sp2 < 0:
                raise ProtocolError(f"malformed response: {first[:80]!r}")
            sp3 = first.find(b" ", sp2 + 1)
            word = first[sp2 + 1 : sp3 if sp3 >= 0 else len(first)]
            sp2 = sp3
        try:
            kind = word.decode("ascii").upper()
        except UnicodeDecodeError as exc:
            raise ProtocolError(f"malformed response name: {word[:40]!r}") from exc
        if not kind:
            raise ProtocolError(f"malformed response: {first[:80]!r}")
        rest_pos = len(first) if sp2 < 0 else sp2 + 1
        if kind in _STATUS and number is None:
            if literals:
                # A status response's text may not contain literals; keep it raw.
                raise ProtocolError("literal in a status response")
            code, text = _parse_resp_text(first, rest_pos)
            return Untagged(kind, None, [], code, text)
        if kind in ("CAPABILITY", "ENABLED") and not literals:
            return Untagged(kind, number, first[rest_pos:].decode("latin-1").split())
        if kind == "FETCH":
            fast = _fetch_fast(chunks, literals, rest_pos)
            if fast is not None:
                return Untagged(kind, number, [fast])
        data = _tokenize(chunks, literals, rest_pos) if rest_pos < len(first) or literals else []
        if kind == "FETCH":
            if len(data) != 1 or not isinstance(data[0], list):
                raise ProtocolError(f"malformed FETCH response: {first[:80]!r}")
            data = [_fetch_dict(data[0])]
        return Untagged(kind, number, data)
    # Tagged completion
    if literals:
        raise ProtocolError("literal in a tagged response")
    sp2 = first.find(b" ", sp + 1)
    status = first[sp + 1 : sp2 if sp2 >= 0 else len(first)].upper()
    if status not in (b"OK", b"NO", b"BAD"):
        raise ProtocolError(f"malformed tagged response: {first[:80]!r}")
    try:
        tag_s = tag.decode("ascii")
    except UnicodeDecodeError as exc:
        raise ProtocolError(f"malformed tag: {tag[:40]!r}") from exc
    code, text = _parse_resp_text(first, sp2 + 1 if sp2 >= 0 else len(first))
    return Tagged(tag_s, status.decode("ascii"), code, text)


class ResponseParser:
    """Frames and parses server responses from a byte stream.

    ``feed(data)`` returns the responses completed by ``data`` (possibly none).  A
    literal is copied out of the buffer exactly once.
    """

    __slots__ = (
        "_big",
        "_big_len",
        "_big_size",
        "_buf",
        "_bulk",
        "_chunks",
        "_lit_len",
        "_literals",
        "_pos",
        "_scan",
    )

    def __init__(self, *, bulk: bool = False) -> None:
        #: Give runs of the common FETCH shapes as one :class:`FetchRun` each.
        self._bulk = bulk
        self._buf = bytearray()
        self._pos = 0  # start of the current (unfinished) line chunk
        self._scan = 0  # where to resume looking for CRLF
        self._chunks: list[bytes] = []
        self._literals: list[bytes] = []
        self._lit_len = -1  # >= 0 while waiting for literal bytes
        # A big literal is received straight into pieces of its own (never allocated for
        # bytes that have not arrived) and joined once complete: the message body is
        # copied once here instead of into the line buffer and out again, and a read
        # wholly inside it is kept as it is.  (A bytearray grown by ``+=`` re-allocated
        # and copied all of it at every read: 10 copies of a 5 MB body in 256 kB reads.)
        self._big: list[bytes | bytearray] | None = None
        self._big_len = 0  # bytes in its pieces
        self._big_size = 0  # its announced size

    @property
    def buffered(self) -> int:
        """Bytes received but not yet part of a complete response."""
        return (
            len(self._buf)
            - self._pos
            + self._big_len
            + sum(map(len, self._chunks))
            + sum(map(len, self._literals))
        )

    def _big_add(self, data: bytes | memoryview) -> None:
        """Keep ``data`` as a piece of the big literal: a read from the socket as it is,
        a view (TLS's reused buffer) copied.  Pieces under BIG_LITERAL are gathered into
        one, so a peer sending a byte at a time costs no object per byte."""
        big = self._big
        assert big is not None
        n = len(data)
        self._big_len += n
        if n >= BIG_LITERAL:
            big.append(data if isinstance(data, bytes) else bytes(data))
            return
        last = big[-1] if big else None
        if isinstance(last, bytearray) and len(last) < BIG_LITERAL:
            last += data
        else:
            big.append(bytearray(data))

    def feed(self, data: bytes | memoryview) -> list[Response]:
        if self._big is not None:
            need = self._big_size - self._big_len
            if len(data) < need:
                self._big_add(data)
                return []
            rest = memoryview(data)
            self._big_add(data if len(data) == need else rest[:need])
            data = rest[need:]
            self._literals.append(b"".join(self._big))
            self._big, self._big_len, self._big_size = None, 0, 0
        buf = self._buf
        buf += data
        out: list[Response] = []
        while True:
            if self._lit_len >= 0:
                end = self._pos + self._lit_len
                if len(buf) < end:
                    if self._lit_len >= BIG_LITERAL:
                        # Grown as the bytes come (never sized by the announcement:
                        # a peer's "{2000000000}" costs nothing until it is sent).
                        self._big, self._big_len = [], 0
                        with memoryview(buf) as mv:
                            self._big_add(mv[self._pos :])
                        self._big_size = self._lit_len
                        self._pos = self._scan = len(buf)
                        self._lit_len = -1
                    break
                with memoryview(buf) as mv:
                    self._literals.append(mv[self._pos : end].tobytes())
                self._pos = self._scan = end
                self._lit_len = -1
            if self._bulk and not self._chunks and buf.startswith(b"* ", self._pos):
                run = self._bulk_run(buf)
                if run is not None:
                    out.append(run)
                    continue
            i = buf.find(b"\r\n", self._scan)
            if i < 0:
                if len(buf) - self._pos > MAX_LINE:
                    raise ProtocolError(f"response line longer than {MAX_LINE} bytes")
                if (
                    len(buf) - self._pos > MAX_CONTINUATION
                    and not self._chunks
                    and buf.startswith(b"+", self._pos)
                ):
                    raise ProtocolError(
                        f"continuation request longer than {MAX_CONTINUATION} bytes"
                    )
                self._scan = max(self._pos, len(buf) - 1)
                break
            if (
                i - self._pos > MAX_CONTINUATION
                and not self._chunks
                and buf.startswith(b"+", self._pos)
            ):
                raise ProtocolError(f"continuation request longer than {MAX_CONTINUATION} bytes")
            with memoryview(buf) as mv:
                chunk = mv[self._pos : i].tobytes()
            self._pos = self._scan = i + 2
            if chunk.endswith(b"}"):
                m = _LITERAL_AT_END.search(chunk)
                if m is not None:
                    n = int(m.group(1))
                    if n > MAX_SMALL_LITERAL:
                        cap, what = _literal_cap(self._chunks[0] if self._chunks else chunk)
                        if n > cap:
                            raise LiteralTooLarge(
                                f"the server announced a literal of {n} bytes in a {what} "
                                f"response (at most {cap} bytes are accepted there)"
                            )
                    self._chunks.append(chunk)
                    self._lit_len = n
                    continue
            self._chunks.append(chunk)
            chunks, literals = self._chunks, self._literals
            self._chunks, self._literals = [], []
            out.append(_build(chunks, literals))
        # Compact after every read whose consumed bytes are at least the unfinished rest:
        # moving that rest costs no more than the bytes already parsed (linear overall),
        # and the buffer stays about one read long.  Keeping consumed bytes until they
        # passed 1 MB made each ``+=`` re-allocate and copy the whole buffer: ~7% of a
        # bulk transfer's CPU, plain or TLS (docs/performance.md item 26).
        pos = self._pos
        if pos and len(buf) - pos <= pos:
            if pos == len(buf) and pos > 1 << 20:
                # A big buffer went through: a new one gives its memory back (a
                # bytearray keeps its capacity after ``del``).
                self._buf = bytearray()
            else:
                del buf[:pos]
            self._scan -= pos
            self._pos = 0
        return out

    def _bulk_run(self, buf: bytearray) -> FetchRun | None:
        """Complete FETCH responses of the common shapes at the start of a line, taken
        together (regexes over the buffer; no per-line objects).  Anything else, or
        anything not yet complete, is left to the per-line path."""
        pos = self._pos
        m = _BULK_META.match(buf, pos)
        if m is not None:
            meta: list[tuple[Any, ...]] = []
            match = _BULK_META.match
            while m is not None:
                n, uid, size, flags, date = m.group(1, 2, 3, 4, 5)
                if (
                    b"\\\\" in flags
                    or (b"NIL" in flags and b"NIL" in flags.split())
                    or int(uid) > MAX_NUMBER
                    or int(size) > _MAX_SIZE
                ):
                    break
                meta.append((int(n), int(uid), int(size), flags, date))
                pos = m.end()
                m = match(buf, pos)
            if not meta:
                return None
            self._pos = self._scan = pos
            return FetchRun("meta", meta)
        m = _BULK_BODY.match(buf, pos)
        if m is None:
            return None
        bodies: list[tuple[Any, ...]] = []
        match = _BULK_BODY.match
        have = len(buf)
        with memoryview(buf) as mv:
            while m is not None:
                start = m.end()
                size = int(m.group(3))
                end = start + size
                if (
                    size > MAX_LITERAL
                    or end + 3 > have
                    or buf[end : end + 3] != b")\r\n"
                    or int(m.group(2)) > MAX_NUMBER
                ):
                    break
                bodies.append((int(m.group(1)), int(m.group(2)), mv[start:end].tobytes()))
                pos = end + 3
                m = match(buf, pos)
        if not bodies:
            return None
        self._pos = self._scan = pos
        return FetchRun("body", bodies)


# --------------------------------------------------------------------------------------
# Commands


@dataclass(frozen=True, slots=True)
class Literal:
    """Raw bytes sent as an IMAP literal; never altered (RFC 3501 4.3)."""

    data: bytes


_ATOM_SAFE = re.compile(rb"[^\x00-\x20()\"{\x7f-\xff%*\\\]]+\Z")
_QUOTE_SAFE = re.compile(rb"[^\x00\r\n\x80-\xff]*\Z")


def quote(value: bytes | str) -> bytes | Literal:
    """An astring/string argument: quoted when possible, a literal otherwise."""
    raw = value.encode("utf-8") if isinstance(value, str) else value
    if len(raw) < 1024 and _QUOTE_SAFE.match(raw):
        return b'"' + raw.replace(b"\\", b"\\\\").replace(b'"', b'\\"') + b'"'
    return Literal(raw)


Arg = bytes | str | int | Literal


#: LITERAL- (RFC 7888 section 5): non-synchronizing literals up to this many bytes.
LITERAL_MINUS_MAX = 4096


def nonsync_limit(capabilities: frozenset[str] | set[str]) -> int:
    """The largest literal the server takes without a continuation: any (LITERAL+),
    4096 bytes (LITERAL-), or none (-1)."""
    if "LITERAL+" in capabilities:
        return MAX_LITERAL
    if "LITERAL-" in capabilities:
        return LITERAL_MINUS_MAX
    return -1


def encode_command(
    tag: str, name: str, *args: Arg, literal_plus: bool = False, nonsync_max: int = -1
) -> list[bytes | Literal]:
    """Encode one command as segments: ``bytes`` to send and ``Literal`` to send as literals.

    ``str`` and ``int`` arguments are sent verbatim as atoms; ``bytes`` must already be
    encoded (use :func:`quote` for strings); a :class:`Literal` becomes ``{N}`` or
    ``{N+}`` (non-synchronizing, RFC 7888: every literal with ``literal_plus``, those of
    at most ``nonsync_max`` bytes otherwise, see :func:`nonsync_limit`) followed by the data.
    """
    parts: list[bytes | Literal] = []
    line = bytearray(tag.encode("ascii") + b" " + name.encode("ascii"))
    for arg in args:
        if isinstance(arg, Literal):
            plus = literal_plus or len(arg.data) <= nonsync_max
            line += b" {%d%s}\r\n" % (len(arg.data), b"+" if plus else b"")
            parts.append(bytes(line))
            parts.append(arg)
            line = bytearray()
            continue
        if isinstance(arg, str):
            arg = arg.encode("ascii")
        elif isinstance(arg, int):
            arg = str(arg).encode("ascii")
        if line:
            line += b" "
        elif parts:
            # right after a literal: the next token needs its separating space
            line += b" "
        line += arg
    line += b"\r\n"
    parts.append(bytes(line))
    return parts


def parse_uid_set(raw: bytes | str, *, limit: int | None = MAX_UID_SET) -> list[int]:
    """``"1:3,7"`` -> ``[1, 2, 3, 7]`` (RFC 3501 9, sequence-set, as used by UIDPLUS).

    Every UID must be 1..2**32-1 (nz-number); more than ``limit`` UIDs in all is a
    ``ValueError`` raised before anything is expanded.
    """
    text = raw.decode("ascii") if isinstance(raw, bytes) else raw
    ranges: list[tuple[int, int]] = []
    count = 0
    for part in text.split(","):
        a, sep, b = part.partition(":")
        lo = _uid_number(a)
        hi = _uid_number(b) if sep else lo
        ranges.append((lo, hi))
        count += abs(hi - lo) + 1
        if limit is not None and count > limit:
            raise ValueError(f"more than {limit} UIDs in a UID set")
    out: list[int] = []
    for lo, hi in ranges:
        step = 1 if hi >= lo else -1
        out.extend(range(lo, hi + step, step))
    return out


def _uid_number(text: str) -> int:
    if not (text.isascii() and text.isdigit()) or len(text) > 10:
        raise ValueError(f"not a UID: {text[:20]!r}")
    n = int(text)
    if not 0 < n <= MAX_NUMBER:
        raise ValueError(f"UID out of range: {n}")
    return n


def format_uid_set(uids: list[int] | tuple[int, ...]) -> str:
    """``[1, 2, 3, 7]`` -> ``"1:3,7"`` (sorted, compressed ranges)."""
    if not uids:
        raise ValueError("empty UID set")
    s = sorted(uids)
    out: list[str] = []
    start = prev = s[0]
    for u in s[1:]:
        if u == prev + 1:
            prev = u
            continue
        out.append(str(start) if start == prev else f"{start}:{prev}")
        start = prev = u
    out.append(str(start) if start == prev else f"{start}:{prev}")
    return ",".join(out)
