"""The sans-IO protocol core, from byte fixtures."""

from __future__ import annotations

import pytest

from yippiemove.imap.protocol import (
    BIG_LITERAL,
    AppendUid,
    Continuation,
    Literal,
    ProtocolError,
    ResponseParser,
    Tagged,
    Untagged,
    encode_command,
    format_uid_set,
    nonsync_limit,
    parse_uid_set,
    quote,
)


def parse_all(data: bytes, step: int | None = None) -> list[object]:
    p = ResponseParser()
    if step is None:
        return list(p.feed(data))
    out: list[object] = []
    for i in range(0, len(data), step):
        out += p.feed(data[i : i + step])
    return out


FETCH = (
    b'* 12 FETCH (UID 345 RFC822.SIZE 11 FLAGS (\\Seen $Label1) INTERNALDATE " 7-Jul-1996 02:44:25 -0700"'
    b" BODY[HEADER.FIELDS (MESSAGE-ID)] {21}\r\nMessage-ID: <a@b>\r\n\r\n"
    b" BODY[] {12}\r\nab\r\n{5}\r\nxyz)\r\n"
)


@pytest.mark.parametrize("step", [None, 1, 2, 3, 7, 64])
def test_fetch_with_literals_any_split(step):
    (r,) = parse_all(FETCH, step)
    assert isinstance(r, Untagged)
    assert (r.kind, r.number) == ("FETCH", 12)
    item = r.data[0]
    assert item["UID"] == "345"
    assert item["FLAGS"] == ["\\Seen", "$Label1"]
    assert item["INTERNALDATE"] == b" 7-Jul-1996 02:44:25 -0700"
    assert item["BODY[HEADER.FIELDS (MESSAGE-ID)]"] == b"Message-ID: <a@b>\r\n\r\n"
    # A literal's bytes are taken verbatim, even when they look like a literal marker.
    assert item["BODY[]"] == b"ab\r\n{5}\r\nxyz"


def test_literal_bytes_are_exact():
    body = bytes(range(256)) * 3 + b"\r\n\n\r\x00"
    data = b"* 1 FETCH (UID 1 BODY[] {%d}\r\n" % len(body) + body + b")\r\n"
    (r,) = parse_all(data, 5)
    assert r.data[0]["BODY[]"] == body


@pytest.mark.parametrize("seed", range(6))
def test_big_literals_in_random_splits(seed):
    """Literals from BIG_LITERAL bytes on take their own path into the parser; any split,
    several of them back to back, small ones between, all exact and in order."""
    import random

    rng = random.Random(seed)
    sizes = [BIG_LITERAL - 1, BIG_LITERAL, BIG_LITERAL + 1, 3 * BIG_LITERAL + 17, 5, 700_000]
    rng.shuffle(sizes)
    bodies = [
        bytes(rng.getrandbits(8) for _ in range(64)) * (n // 64) + b"}\r\n" * (n % 64 // 3)
        for n in sizes
    ]
    data = (
        b"".join(
            b"* %d FETCH (UID %d BODY[] {%d}\r\n" % (i + 1, i + 10, len(b)) + b + b")\r\n"
            for i, b in enumerate(bodies)
        )
        + b"A1 OK done\r\n"
    )
    p = ResponseParser()
    out: list[object] = []
    i = 0
    while i < len(data):
        step = rng.choice((1, 7, 4096, 65536, 300_000))
        out += p.feed(data[i : i + step])
        i += step
    assert p.buffered == 0
    assert [r.data[0]["BODY[]"] for r in out[:-1]] == bodies
    assert [r.data[0]["UID"] for r in out[:-1]] == [str(i + 10) for i in range(len(bodies))]
    assert out[-1] == Tagged("A1", "OK", None, b"done")


def test_views_of_a_reused_buffer_are_copied():
    """TLS hands the parser views of one decrypt buffer that it overwrites at once
    (imap/connection.py ``_decrypt``): nothing parsed may still point into it."""
    body = bytes(range(256)) * 400 + b"tail"
    data = (
        b"* 1 FETCH (UID 7 BODY[] {%d}\r\n" % len(body) + body + b")\r\n"
        b"* 2 FETCH (UID 8 BODY[] {3}\r\nabc)\r\nA1 OK done\r\n"
    )
    buf = bytearray(4096)
    view = memoryview(buf)
    p = ResponseParser()
    out: list[object] = []
    for i in range(0, len(data), 4096):
        piece = data[i : i + 4096]
        buf[: len(piece)] = piece
        out += p.feed(view[: len(piece)])
        buf[:] = b"\xff" * len(buf)  # the next record overwrites the buffer
    assert [r.data[0]["BODY[]"] for r in out[:2]] == [body, b"abc"]
    assert out[2] == Tagged("A1", "OK", None, b"done")


def test_a_big_literal_sent_a_byte_at_a_time_costs_no_object_per_byte():
    """A big literal's reads are kept as pieces (no copy of a whole read); small reads
    are gathered, so a peer trickling bytes cannot make one object per byte."""
    body = bytes(range(256)) * (BIG_LITERAL // 256 + 20)
    wire = b"* 1 FETCH (UID 5 BODY[] {%d}\r\n" % len(body) + body + b")\r\n"
    p = ResponseParser()
    out: list[object] = []
    pieces = 0
    for i in range(len(wire)):
        out += p.feed(wire[i : i + 1])
        if p._big is not None:
            pieces = max(pieces, len(p._big))
    assert pieces <= 2
    assert [r.data[0]["BODY[]"] for r in out] == [body]
    assert p.buffered == 0


def test_line_buffer_stays_about_one_read_long():
    """Consumed bytes are dropped after each read that ends with at most as many
    unfinished ones: a buffer that kept them until 1 MB re-allocated and copied all of
    it at every read (docs/performance.md item 26)."""
    small = b"* %d FETCH (UID %d BODY[] {2000}\r\n" + b"x" * 2000 + b")\r\n"
    data = b"".join(small % (i + 1, i + 1) for i in range(2000))
    step = 256 * 1024
    p = ResponseParser()
    n = 0
    longest = 0
    for i in range(0, len(data), step):
        n += len(p.feed(data[i : i + step]))
        longest = max(longest, len(p._buf))
    assert n == 2000
    assert longest <= step + len(small)


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        (b"A1 OK done", Tagged("A1", "OK", None, b"done")),
        (b"A2 no [TRYCREATE] no such mailbox", None),
        (b"+ ready", Continuation(b"ready")),
        (b"+", Continuation(b"")),
    ],
)
def test_simple_lines(line, expected):
    (r,) = parse_all(line + b"\r\n")
    if expected is not None:
        assert r == expected
    else:
        assert isinstance(r, Tagged)
        assert r.status == "NO"
        assert r.code is not None and r.code.name == "TRYCREATE"
        assert r.text == b"no such mailbox"


def test_appenduid():
    (r,) = parse_all(b"Y9 OK [APPENDUID 38505 3955:3957,3960] APPEND completed\r\n")
    assert r.appenduid() == AppendUid(38505, (3955, 3956, 3957, 3960))
    (r2,) = parse_all(b"Y9 OK APPEND completed\r\n")
    assert r2.appenduid() is None
    (r3,) = parse_all(b"Y9 OK [APPENDUID x y] done\r\n")
    with pytest.raises(ProtocolError):
        r3.appenduid()


def test_untagged_status_with_code():
    (r,) = parse_all(b"* OK [PERMANENTFLAGS (\\Seen \\Deleted \\*)] Flags permitted.\r\n")
    assert r.kind == "OK"
    assert r.code.name == "PERMANENTFLAGS"
    assert r.code.tokens() == [["\\Seen", "\\Deleted", "\\*"]]
    assert r.text == b"Flags permitted."


def test_list_quoted_and_literal_names():
    data = (
        b'* LIST (\\HasNoChildren) "/" "a \\"quoted\\" \\\\ name"\r\n'
        b'* LIST (\\Noselect) "." {5}\r\nx"y z\r\n'
        b"* LIST () NIL INBOX\r\n"
        b'* LIST (\\HasNoChildren \\Sent) "/" [Gmail]/Sent\r\n'
    )
    r1, r2, r3, r4 = parse_all(data, 3)
    assert r1.data == [["\\HasNoChildren"], b"/", b'a "quoted" \\ name']
    assert r2.data == [["\\Noselect"], b".", b'x"y z']
    assert r3.data == [[], None, "INBOX"]
    assert r4.data[2] == "[Gmail]/Sent"


def test_exists_capability_search():
    data = b"* 23 EXISTS\r\n* CAPABILITY IMAP4rev1 LITERAL+ MULTIAPPEND\r\n* SEARCH 2 4 9\r\n"
    r1, r2, r3 = parse_all(data)
    assert (r1.kind, r1.number) == ("EXISTS", 23)
    assert r2.data == ["IMAP4rev1", "LITERAL+", "MULTIAPPEND"]
    assert r3.data == ["2", "4", "9"]


@pytest.mark.parametrize(
    "bad",
    [
        b"garbage\r\n",
        b"* 1 FETCH (UID 1\r\n",
        b"* 1 FETCH UID 1)\r\n",
        b"* 1 FETCH (UID)\r\n",
        b"A1 MAYBE ok\r\n",
        b"* OK [UNTERMINATED code\r\n",
        b"* LIST (a)) x\r\n",
    ],
)
def test_malformed_raises_protocol_error(bad):
    with pytest.raises(ProtocolError):
        parse_all(bad)


def test_incomplete_input_waits():
    p = ResponseParser()
    assert p.feed(b"* 1 FETCH (UID 1 BODY[] {10}\r\n12345") == []
    assert p.feed(b"6789") == []
    (r,) = p.feed(b"0)\r\n")
    assert r.data[0]["BODY[]"] == b"1234567890"


def test_huge_literal_refused():
    with pytest.raises(ProtocolError):
        ResponseParser().feed(b"* 1 FETCH (BODY[] {99999999999}\r\n")


def test_literal_minus_only_small_literals_are_non_synchronizing():
    """RFC 7888 LITERAL-: {N+} only up to 4096 bytes; bigger ones wait for "+"."""
    assert nonsync_limit(frozenset({"LITERAL+"})) > 1 << 30
    assert nonsync_limit(frozenset({"LITERAL-"})) == 4096
    assert nonsync_limit(frozenset({"IMAP4REV1"})) == -1
    parts = encode_command(
        "A1", "APPEND", b"x", Literal(b"a" * 4096), Literal(b"b" * 4097), nonsync_max=4096
    )
    assert parts[0] == b"A1 APPEND x {4096+}\r\n"
    assert parts[2] == b" {4097}\r\n"
    plain = encode_command("A1", "APPEND", b"x", Literal(b"a"))
    assert plain[0] == b"A1 APPEND x {1}\r\n"


def test_encode_command_literal_plus_and_sync():
    parts = encode_command(
        "A1",
        "APPEND",
        quote("INBOX"),
        b"(\\Seen)",
        b'"1-Jan-2020 00:00:00 +0000"',
        Literal(b"abc"),
        b"()",
        Literal(b"de"),
        literal_plus=True,
    )
    assert parts == [
        b'A1 APPEND "INBOX" (\\Seen) "1-Jan-2020 00:00:00 +0000" {3+}\r\n',
        Literal(b"abc"),
        b" () {2+}\r\n",
        Literal(b"de"),
        b"\r\n",
    ]
    sync = encode_command("A2", "LOGIN", quote("u"), Literal(b"p\r\nw"))
    assert sync[0] == b'A2 LOGIN "u" {4}\r\n'


def test_quote():
    assert quote('a"b\\c') == b'"a\\"b\\\\c"'
    assert quote(b"line\r\nbreak") == Literal(b"line\r\nbreak")
    assert quote("päss") == Literal("päss".encode())


def test_uid_sets_round_trip():
    assert parse_uid_set(b"1:3,7,9:8") == [1, 2, 3, 7, 9, 8]
    assert format_uid_set([7, 1, 2, 3, 10, 11]) == "1:3,7,10:11"
    with pytest.raises(ValueError):
        format_uid_set([])


def _generic(data: bytes):
    """Parse FETCH data with the general tokenizer only (the fast path disabled)."""
    import yippiemove.imap.protocol as proto

    saved = proto._fetch_fast
    proto._fetch_fast = lambda *a: None
    try:
        return parse_all(data)
    finally:
        proto._fetch_fast = saved


@pytest.mark.parametrize(
    "data",
    [
        FETCH,
        b"* 1 FETCH (UID 5 BODY[] {3}\r\nabc)\r\n",
        b"* 1 FETCH (UID 5 BODY[] {0}\r\n)\r\n",
        b'* 9 FETCH (UID 1 RFC822.SIZE 18 FLAGS (\\Seen \\Recent $x) INTERNALDATE "26-Nov-2026 03:15:34 +0000")\r\n',
        b'* 9 FETCH (UID 1 RFC822.SIZE 18 FLAGS () INTERNALDATE " 6-Nov-2026 03:15:34 -0130")\r\n',
        b"* 1 FETCH (FLAGS (\\Seen \\Answered $Forwarded) UID 7)\r\n",
        b'* 1 FETCH (FLAGS () UID 7 INTERNALDATE "01-Jan-2020 00:00:00 +0000")\r\n',
        b"* 1 FETCH (UID 7 BODY[HEADER.FIELDS (MESSAGE-ID)] NIL)\r\n",
        b'* 1 FETCH (UID 7 BODY[HEADER.FIELDS (MESSAGE-ID)] "a \\"q\\"")\r\n',
        b"* 1 FETCH (UID 7 BODY[1.2]<0> {2}\r\nhi RFC822.SIZE 2)\r\n",
        b'* 1 FETCH (UID 7 ENVELOPE (NIL NIL (("a" NIL "b" "c")) NIL))\r\n',
        b'* 1 FETCH (UID 7 X-GM-LABELS (\\Inbox "a b"))\r\n',
    ],
)
def test_fetch_fast_path_agrees_with_general_parser(data):
    assert parse_all(data) == _generic(data)
