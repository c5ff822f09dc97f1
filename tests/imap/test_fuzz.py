"""Fuzzing the IMAP response parser and the client code that reads its output (issue 6).

A server may send anything.  What must hold, for any bytes, in any split:

* ``ResponseParser.feed`` raises :class:`ProtocolError` (our error) or nothing: never
  another exception, never a hang (each feed runs under a CPU-time watchdog, and a
  10 MB check bounds the cost of big inputs);
* a valid stream parses to exactly what was sent (literals byte for byte), however it
  is split, and cut anywhere it yields exactly the responses that were complete;
* the FETCH fast paths (``_fetch_fast``) agree with the general tokenizer, on valid
  answers and on broken ones (the same result or both a ProtocolError);
* ``imap/client.py`` turns parseable-but-wrong answers (a list where a UID should be,
  a missing UIDVALIDITY argument, a UID of 2**40...) into ProtocolError, never
  KeyError/TypeError/IndexError/OverflowError.

The examples per test keep the suite at ~30 s; ``YIPPIEMOVE_FUZZ_LONG=1`` runs 50 times
as many (and no per-example deadline) for a long session.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import string
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

import yippiemove.imap.protocol as proto
from yippiemove.imap.client import (
    META_KEY_MSGID,
    ImapClient,
    MessageMeta,
    _meta_collector,
    _select_info,
    append_result,
    parse_meta,
)
from yippiemove.imap.connection import CommandResult
from yippiemove.imap.errors import CommandError, ImapError
from yippiemove.imap.protocol import (
    Continuation,
    ProtocolError,
    ResponseCode,
    ResponseParser,
    Tagged,
    Untagged,
)

LONG = os.environ.get("YIPPIEMOVE_FUZZ_LONG") == "1"


def fuzz(n: int) -> Callable[[Any], Any]:
    """Hypothesis settings: ``n`` examples (x50 in a long run), a generous deadline."""
    return settings(
        max_examples=n * 50 if LONG else n,
        deadline=None if LONG else 2000,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )


class Hang(BaseException):
    """A feed used more CPU than any input of this size may need."""


@contextlib.contextmanager
def cpu_watchdog(seconds: float) -> Iterator[None]:
    """Raise :class:`Hang` when this block uses more than ``seconds`` of CPU.

    A CPU-time timer (SIGVTALRM) does not disturb pytest-timeout's SIGALRM, and the
    regex engine checks for signals, so a catastrophic backtrack is caught too.
    """

    def on_alarm(signum: int, frame: object) -> None:
        raise Hang(f"no result after {seconds} s of CPU")

    old = signal.signal(signal.SIGVTALRM, on_alarm)
    signal.setitimer(signal.ITIMER_VIRTUAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_VIRTUAL, 0)
        signal.signal(signal.SIGVTALRM, old)


def feed(chunks: list[bytes], *, limit: float = 5.0) -> tuple[list[Any], ProtocolError | None]:
    """Feed chunks to a new parser: the responses before the first error, and the error.

    Any exception other than ProtocolError propagates and fails the test.
    """
    p = ResponseParser()
    out: list[Any] = []
    with cpu_watchdog(limit):
        for c in chunks:
            try:
                out += p.feed(c)
            except ProtocolError as exc:
                return out, exc
    return out, None


def split(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts})
    out, prev = [], 0
    for c in [*points, len(data)]:
        out.append(data[prev:c])
        prev = c
    return out


@contextlib.contextmanager
def general_parser_only() -> Iterator[None]:
    """Disable the FETCH fast paths: every FETCH goes through the general tokenizer."""
    saved = proto._fetch_fast
    proto._fetch_fast = lambda *a: None  # type: ignore[assignment]
    try:
        yield
    finally:
        proto._fetch_fast = saved


# --------------------------------------------------------------------------------------
# A generator of realistic server answers, each with what it must parse to.
#
# A token is (wire bytes, parsed value): atoms are str, quoted strings and literals are
# bytes, NIL is None, parenthesised lists are lists (the tree documented in protocol.py).

Tok = tuple[bytes, Any]

_ATOM_ALPHABET = (
    string.ascii_letters + string.digits + "\\$.-_%*:/!#&'+,;<=>?@^`|~]}" + "äéßÿ"  # latin-1
)
atoms = (
    st.text(_ATOM_ALPHABET, min_size=1, max_size=12)
    .filter(lambda s: s != "NIL")
    .map(lambda s: (s.encode("latin-1"), s))
)
numbers = st.integers(0, 2**32 - 1).map(lambda n: (str(n).encode(), str(n)))
_QUOTABLE = st.binary(max_size=40).map(lambda b: b.replace(b"\r", b"").replace(b"\n", b""))
quoted = _QUOTABLE.map(lambda b: (b'"' + b.replace(b"\\", b"\\\\").replace(b'"', b'\\"') + b'"', b))
# Literal contents that look like protocol: the framer must never look inside them.
_TRICKY = st.sampled_from(
    [b"\r\n", b"{5}\r\n", b")", b"(", b"* OK done\r\n", b"A1 OK\r\n", b'"', b"\\", b"\x00", b"\xff"]
)
literal_bytes = st.lists(st.one_of(st.binary(max_size=30), _TRICKY), max_size=6).map(b"".join)
literals = literal_bytes.map(lambda b: (b"{%d}\r\n" % len(b) + b, b))
nil = st.just((b"NIL", None))


def _as_list(items: list[Tok]) -> Tok:
    return b"(" + b" ".join(w for w, _ in items) + b")", [v for _, v in items]


tokens = st.recursive(
    st.one_of(atoms, numbers, quoted, literals, nil),
    lambda inner: st.lists(inner, max_size=5).map(_as_list),
    max_leaves=16,
)

# Text after a status or in a continuation: no CR/LF, and no "{N}" at the very end
# (that would announce a literal).
resp_text = (
    st.binary(max_size=30)
    .map(lambda b: b.replace(b"\r", b"").replace(b"\n", b"").lstrip(b" "))
    .filter(lambda b: not b.endswith(b"}") and not b.startswith(b"["))
)
code_args = st.binary(max_size=30).map(
    lambda b: b.replace(b"]", b"").replace(b"\r", b"").replace(b"\n", b"")
)
code_names = st.sampled_from(
    [
        "APPENDUID",
        "COPYUID",
        "UIDVALIDITY",
        "UIDNEXT",
        "PERMANENTFLAGS",
        "TRYCREATE",
        "READ-ONLY",
        "ALREADYEXISTS",
        "CAPABILITY",
        "unavailable",
        "X-CUSTOM",
    ]
)


@st.composite
def resp_codes(draw: st.DrawFn) -> tuple[bytes, ResponseCode | None]:
    if not draw(st.booleans()):
        return b"", None
    name = draw(code_names)
    args = draw(code_args) if draw(st.booleans()) else b""
    wire = b"[" + name.encode() + (b" " + args if args else b"") + b"] "
    return wire, ResponseCode(name.upper(), args)


def _case(draw: st.DrawFn, word: str) -> str:
    return draw(st.sampled_from([word, word.lower(), word.capitalize()]))


@st.composite
def tagged(draw: st.DrawFn) -> tuple[bytes, Any]:
    tag = draw(st.text(string.ascii_letters + string.digits, min_size=1, max_size=6))
    status = draw(st.sampled_from(["OK", "NO", "BAD"]))
    cwire, code = draw(resp_codes())
    text = draw(resp_text)
    wire = f"{tag} {_case(draw, status)} ".encode() + cwire + text
    return wire, Tagged(tag, status, code, text)


@st.composite
def untagged_status(draw: st.DrawFn) -> tuple[bytes, Any]:
    kind = draw(st.sampled_from(["OK", "NO", "BAD", "BYE", "PREAUTH"]))
    cwire, code = draw(resp_codes())
    text = draw(resp_text)
    return f"* {_case(draw, kind)} ".encode() + cwire + text, Untagged(kind, None, [], code, text)


@st.composite
def continuation(draw: st.DrawFn) -> tuple[bytes, Any]:
    text = draw(resp_text)
    if not text and draw(st.booleans()):
        return b"+", Continuation(b"")
    return b"+ " + text, Continuation(text)


@st.composite
def capability(draw: st.DrawFn) -> tuple[bytes, Any]:
    caps = draw(st.lists(atoms, max_size=8))
    wire = b"* CAPABILITY" + b"".join(b" " + w for w, _ in caps)
    return wire, Untagged("CAPABILITY", None, [v for _, v in caps])


@st.composite
def numbered(draw: st.DrawFn) -> tuple[bytes, Any]:
    n = draw(st.integers(0, 2**32 - 1))
    kind = draw(st.sampled_from(["EXISTS", "RECENT", "EXPUNGE"]))
    return f"* {n} {_case(draw, kind)}".encode(), Untagged(kind, n, [])


flag_names = st.one_of(
    st.sampled_from(["\\Seen", "\\Answered", "\\Flagged", "\\Deleted", "\\Draft", "\\Recent"]),
    st.text(string.ascii_letters + "$_-", min_size=1, max_size=10).filter(lambda s: s != "NIL"),
)
flag_lists = st.lists(flag_names, max_size=6).map(
    lambda fs: (b"(" + " ".join(fs).encode() + b")", fs)
)
mailbox_names = st.one_of(atoms, quoted, literals)


@st.composite
def mailbox_data(draw: st.DrawFn) -> tuple[bytes, Any]:
    """LIST/LSUB, STATUS, SEARCH, FLAGS, NAMESPACE and unknown data responses."""
    shape = draw(st.sampled_from(["LIST", "LSUB", "STATUS", "SEARCH", "FLAGS", "NS", "ANY"]))
    toks: list[Tok]
    if shape in ("LIST", "LSUB"):
        attrs = draw(
            st.lists(
                st.sampled_from(["\\HasNoChildren", "\\Noselect", "\\Sent", "\\Trash"]),
                max_size=3,
            )
        )
        sep = draw(st.one_of(nil, st.sampled_from([b"/", b".", b"\\"]).map(_quoted_tok)))
        toks = [(b"(" + " ".join(attrs).encode() + b")", attrs), sep, draw(mailbox_names)]
    elif shape == "STATUS":
        pairs: list[Tok] = []
        for item in draw(st.lists(st.sampled_from(["MESSAGES", "UIDNEXT", "UNSEEN"]), max_size=3)):
            pairs += [(item.encode(), item), draw(numbers)]
        toks = [draw(mailbox_names), _as_list(pairs)]
    elif shape == "SEARCH":
        toks = draw(st.lists(numbers, max_size=8))
    elif shape == "FLAGS":
        toks = [draw(flag_lists)]
    elif shape == "NS":
        toks = [draw(tokens), draw(tokens), draw(tokens)]
    else:
        toks = draw(st.lists(tokens, max_size=4))
    kind = "NAMESPACE" if shape == "NS" else draw(st.sampled_from(["ID", "XAPPLE", "METADATA"]))
    if shape not in ("NS", "ANY"):
        kind = shape
    wire = f"* {_case(draw, kind)}".encode() + b"".join(b" " + w for w, _ in toks)
    return wire, Untagged(kind, None, [v for _, v in toks])


def _quoted_tok(b: bytes) -> Tok:
    return b'"' + b.replace(b"\\", b"\\\\") + b'"', b


dates = st.builds(
    lambda d, m, y, hh, mm, ss, z: f"{d:2d}-{m}-{y} {hh:02d}:{mm:02d}:{ss:02d} {z}".encode(),
    st.integers(1, 28),
    st.sampled_from(["Jan", "Feb", "Nov"]),
    st.integers(1970, 2040),
    st.integers(0, 23),
    st.integers(0, 59),
    st.integers(0, 59),
    st.sampled_from(["+0000", "-0130", "+0530"]),
)


@st.composite
def fetch_item(draw: st.DrawFn) -> tuple[str, Tok]:
    """One ``KEY value`` of a FETCH answer, typed like real servers send them."""
    key = draw(
        st.sampled_from(
            [
                "UID",
                "RFC822.SIZE",
                "FLAGS",
                "INTERNALDATE",
                "BODY[]",
                META_KEY_MSGID,
                "BODY[1.2]<0>",
                "X-GM-LABELS",
                "MODSEQ",
                "ENVELOPE",
                "X-ANY",
            ]
        )
    )
    if key in ("UID", "RFC822.SIZE"):
        value = draw(numbers)
    elif key == "FLAGS":
        value = draw(flag_lists)
    elif key == "INTERNALDATE":
        d = draw(dates)
        value = (b'"' + d + b'"', d)
    elif key in ("BODY[]", "BODY[1.2]<0>"):
        value = draw(literals)
    elif key == META_KEY_MSGID:
        value = draw(st.one_of(literals, nil, quoted))
    elif key == "MODSEQ":
        value = _as_list([draw(numbers)])
    else:
        value = draw(tokens)
    if draw(st.integers(0, 9)) == 0:
        key = key.lower()
    return key, value


@st.composite
def fetch(draw: st.DrawFn, *, meta_shape: bool = False) -> tuple[bytes, Any]:
    n = draw(st.integers(1, 2**32 - 1))
    if meta_shape:  # Dovecot's order for a metadata listing, and for a body
        uid, size = draw(numbers), draw(numbers)
        if draw(st.booleans()):
            d = draw(dates)
            items = [
                ("UID", uid),
                ("RFC822.SIZE", size),
                ("FLAGS", draw(flag_lists)),
                ("INTERNALDATE", (b'"' + d + b'"', d)),
            ]
        else:
            items = [("UID", uid), ("BODY[]", draw(literals))]
    else:
        items = draw(st.lists(fetch_item(), min_size=1, max_size=6))
    wire = b"(" + b" ".join(k.encode() + b" " + w for k, (w, _) in items) + b")"
    expected = {k.upper(): v for k, (_, v) in items}
    return f"* {n} FETCH ".encode() + wire, Untagged("FETCH", n, [expected])


responses = st.one_of(
    tagged(),
    untagged_status(),
    continuation(),
    capability(),
    numbered(),
    mailbox_data(),
    fetch(),
    fetch(meta_shape=True),
)
streams = st.lists(responses, min_size=1, max_size=8)


def wire_of(stream: list[tuple[bytes, Any]]) -> tuple[bytes, list[int]]:
    """The bytes of a stream and where each response ends."""
    data, ends = b"", []
    for w, _ in stream:
        data += w + b"\r\n"
        ends.append(len(data))
    return data, ends


# --------------------------------------------------------------------------------------
# The parser: valid streams


@fuzz(300)
@given(streams, st.lists(st.integers(0, 10_000), max_size=12))
def test_valid_streams_parse_exactly_in_any_split(stream, cuts):
    data, _ = wire_of(stream)
    expected = [v for _, v in stream]
    for chunks in ([data], split(data, cuts), [data[i : i + 1] for i in range(len(data))]):
        got, err = feed(chunks)
        assert err is None, (data, err)
        assert got == expected


@fuzz(150)
@given(streams, st.lists(st.integers(0, 10_000), max_size=6))
def test_a_cut_stream_yields_exactly_the_complete_responses(stream, cuts):
    data, ends = wire_of(stream)
    expected = [v for _, v in stream]
    for i in range(len(data) + 1):
        got, err = feed(split(data[:i], cuts))
        assert err is None, (data[:i], err)
        assert got == expected[: sum(1 for e in ends if e <= i)], i


@fuzz(300)
@given(st.lists(st.one_of(fetch(), fetch(meta_shape=True)), min_size=1, max_size=5))
@example(
    [
        (
            b"* 1 FETCH (ENVELOPE (NIL) X (a NIL))",
            Untagged("FETCH", 1, [{"ENVELOPE": [None], "X": ["a", None]}]),
        )
    ]
)
@example(
    [
        (
            b'* 1 FETCH (UID 1 RFC822.SIZE 2 FLAGS (\\Seen\xa0x) INTERNALDATE "d")',
            Untagged(
                "FETCH",
                1,
                [{"UID": "1", "RFC822.SIZE": "2", "FLAGS": ["\\Seen\xa0x"], "INTERNALDATE": b"d"}],
            ),
        )
    ]
)
def test_fetch_fast_path_agrees_with_the_general_tokenizer(stream):
    data, _ = wire_of(stream)
    fast, err = feed([data])
    assert err is None
    with general_parser_only():
        general, err = feed([data])
    assert err is None
    assert fast == general == [v for _, v in stream]


# --------------------------------------------------------------------------------------
# The parser: broken and hostile input

_JUNK = st.sampled_from(
    [
        b"\r\n",
        b"\r",
        b"\n",
        b" ",
        b"(",
        b")",
        b"{",
        b"}",
        b"{3}\r\n",
        b"{0}\r\n",
        b"{99999999999}\r\n",
        b"{4294967296}\r\n",
        b'"',
        b"\\",
        b"[",
        b"]",
        b"*",
        b"+",
        b"NIL",
        b"FETCH",
        b"* ",
        b"1 ",
        b"\x00",
        b"\xff",
        b"<0>",
        b"BODY[",
    ]
)


_GLUE = [b" ", b"(", b")", b'"', b"X", b"1", b"\\", b"{", b"}", b"[", b"]", b"\t", b"\xa0"]


@st.composite
def mutated(draw: st.DrawFn, base: st.SearchStrategy[list[tuple[bytes, Any]]]) -> bytes:
    """A valid stream with 1-4 random edits: cuts, deletions, insertions, swaps."""
    data, _ = wire_of(draw(base))
    for _ in range(draw(st.integers(1, 4))):
        n = len(data)
        i = draw(st.integers(0, n))
        j = draw(st.integers(i, min(n, i + 40)))
        op = draw(
            st.sampled_from(["cut", "delete", "drop", "insert", "char", "replace", "dup", "junk"])
        )
        if op == "cut":
            data = data[:i]
        elif op == "delete":
            data = data[:i] + data[j:]
        elif op == "drop":  # one byte: often a space or a bracket
            data = data[:i] + data[i + 1 :]
        elif op == "char":  # one byte of the kind that ends or glues tokens
            data = data[:i] + draw(st.sampled_from(_GLUE)) + data[i:]
        elif op == "insert":
            data = data[:i] + draw(st.binary(min_size=1, max_size=8)) + data[i:]
        elif op == "replace" and i < n:
            data = data[:i] + bytes([draw(st.integers(0, 255))]) + data[i + 1 :]
        elif op == "dup":
            data = data[:j] + data[i:j] + data[j:]
        else:
            data = data[:i] + draw(_JUNK) + data[i:]
    return data


soup = st.lists(st.one_of(_JUNK, atoms.map(lambda t: t[0]), st.binary(max_size=6)), max_size=40)


def _same_outcome(data: bytes, cuts: list[int]) -> None:
    """Whole, split or byte by byte: the same responses, and an error in all or none.

    (When ``feed`` raises, the responses it completed in that call are not returned:
    the connection is dropped anyway, so only a prefix of them is compared.)
    """
    ref, err = feed([data[i : i + 1] for i in range(len(data))])
    for chunks in ([data], split(data, cuts)):
        got, err2 = feed(chunks)
        assert (err is None) == (err2 is None), (data, err, err2)
        assert got == (ref if err is None else ref[: len(got)])


@fuzz(400)
@given(st.binary(max_size=400), st.lists(st.integers(0, 10_000), max_size=8))
@example(b"* 1 FETCH (" + b"(" * 1500 + b")" * 1500 + b" x)\r\n", [])
@example(b"* 1 FETCH (X " + b"(" * 1500 + b")" * 1500 + b")\r\n", [])
@example(b"* 1 FETCH (UID 12X 5)\r\n", [])
def test_arbitrary_bytes_raise_only_protocol_error(data, cuts):
    _same_outcome(data, cuts)


@fuzz(400)
@given(soup.map(b"".join), st.lists(st.integers(0, 10_000), max_size=8))
def test_imap_shaped_junk_raises_only_protocol_error(data, cuts):
    _same_outcome(data, cuts)


@fuzz(400)
@given(mutated(streams), st.lists(st.integers(0, 10_000), max_size=8))
def test_mutated_answers_raise_only_protocol_error(data, cuts):
    _same_outcome(data, cuts)


@fuzz(400)
@given(mutated(st.lists(st.one_of(fetch(), fetch(meta_shape=True)), min_size=1, max_size=3)))
@example(b"* 1 FETCH (UID 12X 5)\r\n")
@example(b"* 1 FETCH (X NILY 5)\r\n")
@example(b'* 1 FETCH (X "a"b 5)\r\n')
@example(b"* 1 FETCH (FLAGS (\\Seen)x 5)\r\n")
@example(b"* 1 FETCH (NIL 5)\r\n")
@example(b'* 1 FETCH (UID 1 RFC822.SIZE 2 FLAGS (\x00) INTERNALDATE "d")\r\n')
def test_fast_path_and_general_parser_agree_on_broken_fetch(data):
    fast, err = feed([data])
    with general_parser_only():
        general, err2 = feed([data])
    assert (err is None) == (err2 is None), (data, err, err2)
    assert fast == general


BIG_LITERAL = getattr(proto, "BIG_LITERAL", 64 * 1024)


@fuzz(40)
@given(
    streams,
    st.integers(-2, 2),
    st.binary(min_size=1, max_size=40),
    st.lists(st.integers(0, 1 << 20), max_size=10),
    st.integers(0, 2),
)
def test_big_literals_any_split_exact_and_cut_anywhere(stream, delta, pattern, cuts, edits):
    """Literals of BIG_LITERAL bytes and more take their own path into the parser: exact
    in any split; with a few edits around them: the same outcome whole or split."""
    n = BIG_LITERAL + delta
    body = (pattern * (n // len(pattern) + 1))[:n]
    big = (
        b"* 9 FETCH (UID 9 BODY[] {%d}\r\n" % n + body + b")",
        Untagged("FETCH", 9, [{"UID": "9", "BODY[]": body}]),
    )
    k = len(stream) // 2
    stream = [*stream[:k], big, *stream[k:]]
    data, _ = wire_of(stream)
    got, err = feed(split(data, cuts))
    assert err is None and got == [v for _, v in stream]
    for e in range(edits):  # deterministic edits: drop a byte, add junk, cut
        i = cuts[e % len(cuts)] % len(data) if cuts else len(data) // 2
        data = [data[:i] + data[i + 1 :], data[:i] + b"{7}\r\n" + data[i:], data[:i]][e]
    whole, err = feed([data])
    parts, err2 = feed(split(data, cuts))
    assert (err is None) == (err2 is None)
    if err is None:
        assert parts == whole


def test_protocol_errors_are_short_whatever_the_input():
    """An error names the problem in a few hundred characters: never a 100 MB repr, never
    a RecursionError from printing a deeply nested list."""
    body = b"x" * (8 << 20)
    cases = [
        b"* 1 FETCH (UID 1 BODY[] {%d}\r\n" % len(body) + body + b" X)\r\n",
        b"* 1 FETCH ({%d}\r\n" % len(body) + body + b" 1)\r\n",
        b"* 1 FETCH (" + b"(" * 100_000 + b")" * 100_000 + b" 1)\r\n",
        b"* LIST " + b"(" * 100_000 + b"\r\n",
        b"* LIST " + b")" * 100_000 + b"\r\n",
    ]
    for data in cases:
        got, err = feed([data])
        assert got == [] and err is not None, data[:60]
        assert len(str(err)) < 500, str(err)[:200]


# --------------------------------------------------------------------------------------
# Bounded time on big input

MB = 1 << 20

# (name, valid IMAP?, input of about n bytes).  Parsing valid data costs ~0.4 s of CPU
# per MB here, so the valid shapes use 2 MB in the default run.
_BIG: list[tuple[str, bool, Callable[[int], bytes]]] = [
    ("random bytes", False, lambda n: os.urandom(n)),
    (
        "deep parentheses",
        False,
        lambda n: b"* 1 FETCH (X " + b"(" * (n // 2) + b")" * (n // 2) + b")\r\n",
    ),
    ("open brackets", False, lambda n: b"* LIST () " + b"a[" * (n // 2) + b"\r\n"),
    ("unterminated quote", False, lambda n: b'* LIST () "/" "' + b"a" * n + b"\r\n"),
    (
        "one big literal",
        False,
        lambda n: b"* 1 FETCH (UID 1 BODY[] {%d}\r\n" % n + b"y" * n + b")\r\n",
    ),
    ("CR without LF", False, lambda n: b"* OK " + b"\r" * n),
    ("many literals", False, lambda n: b"* 1 FETCH (X " + b"{1}\r\nx " * (n // 8) + b")\r\n"),
    ("flags", False, lambda n: b"* 1 FETCH (FLAGS (\\Seen " + b"\\" * n + b"))\r\n"),
    ("backslashes in quotes", True, lambda n: b'* LIST () "/" "' + b"\\\\" * (n // 2) + b'"\r\n'),
    ("one line of atoms", True, lambda n: b"* SEARCH " + b"12345 " * (n // 6) + b"\r\n"),
    ("many short lines", True, lambda n: b"* 1 EXISTS\r\n" * (n // 12)),
    ("many tagged lines", True, lambda n: b"A1 OK [UIDNEXT 5] done\r\n" * (n // 24)),
    ("fetch pairs", True, lambda n: b"* 1 FETCH (" + b"X 1 " * (n // 4) + b"UID 1)\r\n"),
]


@pytest.mark.timeout(900 if LONG else 240)
@pytest.mark.parametrize("chunk", [64 * 1024, 1460] if LONG else [64 * 1024])
def test_ten_megabytes_of_junk_take_bounded_time(chunk):
    """Linear-ish: 10 MB in any of these shapes is parsed or refused within seconds of CPU
    (a quadratic step would take hours); the shapes that parse use 2 MB by default and
    10 MB in a long run."""
    slow = []
    for name, parses, make in _BIG:
        data = make(2 * MB if parses and not LONG else 10 * MB)
        t0 = time.process_time()
        got, err = feed([data[i : i + chunk] for i in range(0, len(data), chunk)], limit=120)
        spent = time.process_time() - t0
        if spent > 3 * len(data) / MB:
            slow.append((name, round(spent, 1)))
        if parses:  # valid IMAP, only big
            assert err is None and got, (name, err)
    assert not slow, slow


def test_many_tiny_feeds_are_linear():
    """Byte-by-byte feeding of a 200 kB answer (a slow link) costs about as much per byte
    as feeding 20 kB: no rescanning of what is buffered."""
    body = bytes(range(256)) * 800

    def cost(n: int) -> float:
        data = b"* 1 FETCH (UID 1 BODY[] {%d}\r\n" % n + body[:n] + b")\r\n"
        data += b"* SEARCH " + b"1 " * (n // 2) + b"\r\n"
        t0 = time.process_time()
        got, err = feed([data[i : i + 1] for i in range(len(data))], limit=60)
        assert err is None and got[0].data[0]["BODY[]"] == body[:n]
        return time.process_time() - t0

    small, big = cost(20_000), cost(200_000)
    assert big < 30 * max(small, 0.01), (small, big)


# --------------------------------------------------------------------------------------
# The client layer: answers that parse but do not make sense

ALLOWED = (ProtocolError, ImapError)


def trees(max_leaves: int = 8) -> st.SearchStrategy[Any]:
    """Parsed token trees (what Untagged.data holds), including nonsense."""
    leaf = st.one_of(
        st.none(),
        st.text(_ATOM_ALPHABET, max_size=8),
        st.sampled_from(["1", "0", "-1", "4294967295", "4294967296", "9" * 30, "1_0", "\\*"]),
        st.binary(max_size=12),
        st.sampled_from([b"/", b".", b"\xff", b"", b"\xc3\xa4"]),
    )
    return st.recursive(leaf, lambda inner: st.lists(inner, max_size=4), max_leaves=max_leaves)


@fuzz(300)
@given(
    st.dictionaries(
        st.sampled_from(["UID", "RFC822.SIZE", "FLAGS", "INTERNALDATE", META_KEY_MSGID, "X"]),
        trees(),
    )
)
@example({"UID": "1", "RFC822.SIZE": "5", "FLAGS": [], "INTERNALDATE": b"d", "X": None})
@example({"UID": "99999999999999999999", "RFC822.SIZE": "5", "FLAGS": [], "INTERNALDATE": b"d"})
@example({"UID": "0", "RFC822.SIZE": "5", "FLAGS": [], "INTERNALDATE": b"d"})
@example({"UID": "7", "RFC822.SIZE": "-5", "FLAGS": [], "INTERNALDATE": b"d"})
def test_parse_meta_refuses_nonsense_with_protocol_error(item):
    try:
        meta = parse_meta(item)
    except ProtocolError:
        return
    assert isinstance(meta, MessageMeta)
    assert 1 <= meta.uid < 2**32 and 0 <= meta.size < 2**63  # storable in the state file
    assert all(isinstance(f, str) for f in meta.flags)
    assert isinstance(meta.internaldate, bytes)


_CODE_NAMES = ["UIDVALIDITY", "UIDNEXT", "PERMANENTFLAGS", "READ-ONLY", "X"]
code_arg_bytes = st.one_of(
    code_args,
    st.sampled_from([b"", b"0", b"4294967296", b"9" * 5000, b"(\\Seen", b"(((", b"{5}", b"1 2"]),
)
untagged_for_select = st.one_of(
    st.builds(
        lambda kind, n, data: Untagged(kind, n, data),
        st.sampled_from(["EXISTS", "RECENT", "FLAGS"]),
        st.one_of(st.none(), st.integers(0, 2**64)),
        st.lists(trees(), max_size=3),
    ),
    st.builds(
        lambda name, args: Untagged("OK", None, [], ResponseCode(name, args), b""),
        st.sampled_from(_CODE_NAMES),
        code_arg_bytes,
    ),
)


@fuzz(300)
@given(st.lists(untagged_for_select, max_size=6), st.booleans())
def test_select_answers_become_select_info_or_protocol_error(untagged, read_only):
    code = ResponseCode("READ-ONLY") if read_only else None
    res = CommandResult(Tagged("Y1", "OK", code, b"done"), untagged)
    try:
        info = _select_info(res)
    except ProtocolError:
        return
    assert 0 <= info.uidvalidity < 2**32 and 0 <= info.exists < 2**32
    assert info.uidnext is None or 0 <= info.uidnext < 2**32
    assert all(isinstance(f, str) for f in info.flags + info.permanent_flags)
    info.can_store("\\Seen")


@fuzz(300)
@given(code_arg_bytes, st.sampled_from(["OK", "NO", "BAD"]))
@example(b"1 1:4294967295", "OK")
@example(b"1 4294967295:1", "OK")
@example(b"4294967296 1", "OK")
@example(b"1 0", "OK")
@example(b"1 1,,2", "OK")
def test_appenduid_is_bounded_and_checked(args, status):
    res = CommandResult(Tagged("Y1", status, ResponseCode("APPENDUID", args), b""), [])
    try:
        with cpu_watchdog(5):
            au = append_result(res)
    except ALLOWED:
        return
    assert au is not None
    assert 1 <= au.uidvalidity < 2**32
    assert 1 <= len(au.uids) <= proto.MAX_UID_SET
    assert all(1 <= u < 2**32 for u in au.uids)


class FakeConnection:
    """Stands in for ImapConnection: answers every command with scripted untagged
    responses (routed to ``on_untagged`` when given, like the real one) and a tagged OK.
    There is no real server that sends nonsense on demand; the parser and connection
    themselves are tested against real sockets elsewhere."""

    def __init__(self, untagged: list[Untagged], caps: frozenset[str]) -> None:
        self.untagged = untagged
        self.capabilities = caps

    async def submit(
        self, name: str, *args: Any, on_untagged: Any = None, sensitive: bool = False
    ) -> asyncio.Future[CommandResult]:
        res = CommandResult(Tagged("Y1", "OK", None, b"done"), [])
        for u in self.untagged:
            if on_untagged is not None:
                on_untagged(u)
            else:
                res.untagged.append(u)
        fut: asyncio.Future[CommandResult] = asyncio.get_running_loop().create_future()
        fut.set_result(res)
        return fut

    async def execute(self, name: str, *args: Any, **kw: Any) -> CommandResult:
        kw.pop("check", None)
        return await (await self.submit(name, *args, **kw))


def _fetch_untagged(item: Any) -> Untagged:
    return Untagged("FETCH", 1, [item])


# What the parser can produce: any tree for most kinds; for FETCH always one dict.
client_untagged = st.one_of(
    st.builds(
        Untagged,
        st.sampled_from(["LIST", "LSUB", "NAMESPACE", "STATUS", "SEARCH"]),
        st.none(),
        st.lists(trees(), max_size=4),
    ),
    st.dictionaries(
        st.sampled_from(["UID", "RFC822.SIZE", "BODY[]", META_KEY_MSGID, "FLAGS"]), trees()
    ).map(_fetch_untagged),
)


async def _every_reading_verb(client: ImapClient) -> list[Any]:
    """Each ImapClient method that interprets untagged data; its result or its error."""
    calls = [
        lambda: client.namespace(),
        lambda: client.list_mailboxes(),
        lambda: client.list_mailboxes(subscribed=True),
        lambda: client.status_many([b"INBOX"], "(MESSAGES UIDNEXT)"),
        lambda: client.uid_search([b"ALL"]),
        lambda: client.fetch_meta(),
        lambda: client.fetch_message_ids([1, 2]),
        lambda: client.fetch_sizes(),
        lambda: client.select(b"INBOX"),
        lambda: client.select_and_list(b"INBOX", message_id=True),
        lambda: client.select_many([b"INBOX", b"Sent"]),
    ]
    out: list[Any] = []
    for call in calls:
        try:
            out.append(await call())
        except ALLOWED as exc:
            out.append(exc)
    bodies: list[tuple[int, bytes]] = []
    try:
        res = await (await client.submit_fetch_bodies([1], lambda u, b: bodies.append((u, b))))
        out.append((res, bodies))
    except ALLOWED as exc:
        out.append(exc)
    return out


@fuzz(300)
@given(
    st.lists(client_untagged, max_size=5),
    st.sets(st.sampled_from(["NAMESPACE", "MULTIAPPEND"])).map(frozenset),
)
@example([Untagged("LIST", None, [[], b"\xff", b"INBOX"])], frozenset())
@example([Untagged("NAMESPACE", None, [[[b"", b"\xff"]]])], frozenset({"NAMESPACE"}))
@example(
    [_fetch_untagged({"UID": ["1"], "BODY[]": b"x", META_KEY_MSGID: b"Message-ID: <a>"})],
    frozenset(),
)
@example([_fetch_untagged({"UID": "9" * 5000, "BODY[]": b"x"})], frozenset())
@example([Untagged("STATUS", None, [None, []])], frozenset())
def test_client_turns_nonsense_into_protocol_errors(untagged, caps):
    client = ImapClient(FakeConnection(untagged, caps))  # type: ignore[arg-type]
    with cpu_watchdog(5):
        results = asyncio.run(_every_reading_verb(client))
    for r in results:
        if isinstance(r, list):
            for m in r:
                if isinstance(m, MessageMeta):
                    assert 1 <= m.uid < 2**32
        if isinstance(r, dict):
            assert all(isinstance(k, bytes | int) for k in r), r
    # Each error names what was wrong in a line, not a dump of the answer.
    for r in results:
        if isinstance(r, Exception):
            assert len(str(r)) < 500


def test_meta_collector_skips_other_kinds_and_reads_fetch():
    out: list[MessageMeta] = []
    on = _meta_collector(out)
    on(Untagged("EXISTS", 3, []))
    on(
        _fetch_untagged(
            {"UID": "7", "RFC822.SIZE": "10", "FLAGS": ["\\Seen"], "INTERNALDATE": b"d"}
        )
    )
    on(_fetch_untagged({"FLAGS": ["\\Seen"]}))  # an unsolicited flag update: not a listing
    assert [m.uid for m in out] == [7]
    with pytest.raises(ProtocolError):
        on(_fetch_untagged({"UID": "7", "RFC822.SIZE": ["10"], "FLAGS": [], "INTERNALDATE": b""}))


def test_command_error_keeps_the_servers_words():
    with pytest.raises(CommandError, match=r"APPEND failed: NO \[OVERQUOTA\] full"):
        append_result(CommandResult(Tagged("Y1", "NO", ResponseCode("OVERQUOTA"), b"full")))


def test_a_handlers_protocol_error_fails_the_command_cleanly():
    """The server's FETCH has a list where the UID belongs: the command fails with the
    client's ProtocolError (not retried: the server will say it again), nothing is
    logged by asyncio's last-resort handler."""
    from yippiemove.imap.connection import ImapConnection

    async def handler(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        w.write(b"* OK [CAPABILITY IMAP4rev1] hi\r\n")
        while line := await r.readline():
            tag = line.split()[0]
            w.write(b"* 1 FETCH (UID (1) BODY[HEADER.FIELDS (MESSAGE-ID)] NIL)\r\n")
            w.write(tag + b" OK done\r\n")
            await w.drain()

    async def main() -> tuple[BaseException | None, list[dict[str, Any]]]:
        fatal: list[dict[str, Any]] = []
        asyncio.get_running_loop().set_exception_handler(lambda loop, ctx: fatal.append(ctx))
        server = await asyncio.start_server(handler, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        async with server:
            conn = await ImapConnection.open("127.0.0.1", port, security="none")
            try:
                async with asyncio.timeout(10):
                    await ImapClient(conn).fetch_message_ids([1])
            except (ProtocolError, ImapError) as exc:
                return exc, fatal
            finally:
                conn.abort()
        return None, fatal

    exc, fatal = asyncio.run(main())
    assert exc is not None and "malformed UID" in str(exc)
    assert not getattr(exc, "transient", False), type(exc)
    # (the test server's own handler task, cancelled at shutdown, may be reported too)
    assert [c for c in fatal if "data_received" in str(c.get("message"))] == []
