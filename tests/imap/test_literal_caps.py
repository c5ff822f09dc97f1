"""Issue 14, attack class 2: a peer's literal announcement costs nothing until its bytes
come, and outside FETCH answers a literal may not be large at all."""

from __future__ import annotations

import tracemalloc

import pytest

from yippiemove.imap.protocol import MAX_SMALL_LITERAL, ProtocolError, ResponseParser, Untagged


def _peak_while(fn: object) -> int:
    tracemalloc.start()
    try:
        fn()  # type: ignore[operator]
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_a_huge_announcement_allocates_nothing_large() -> None:
    """``* OK {999999999}`` plus a few bytes: the parser neither allocates the announced
    size nor accepts it (a literal in a greeting has no business being large)."""
    parser = ResponseParser()

    def feed() -> None:
        with pytest.raises(ProtocolError, match=r"999999999 bytes in a OK response"):
            parser.feed(b"* OK {999999999}\r\n" + b"x" * 100_000)

    assert _peak_while(feed) < 4 * 1024 * 1024


def test_a_big_fetch_literal_grows_with_its_bytes() -> None:
    """A FETCH body literal announced big costs what has arrived, not what was announced."""
    parser = ResponseParser()

    def feed() -> None:
        assert parser.feed(b"* 1 FETCH (UID 7 BODY[] {1999999999}\r\n" + b"x" * 100_000) == []

    assert _peak_while(feed) < 4 * 1024 * 1024
    assert parser.buffered < 1_000_000


@pytest.mark.parametrize(
    "head",
    [
        b'* LIST () "/" ',
        b'* LSUB () "/" ',
        b"* STATUS ",
        b"* CAPABILITY IMAP4rev1 X-",
        b'* ID ("name" ',
        b"* NAMESPACE ((",
        b"A1 OK ",
        b"* 3 EXPUNGE ",
    ],
)
def test_an_over_cap_literal_outside_fetch_is_refused(head: bytes) -> None:
    parser = ResponseParser()
    with pytest.raises(ProtocolError, match=r"at most 65536 bytes"):
        parser.feed(head + b"{%d}\r\nabc" % (MAX_SMALL_LITERAL + 1))


def test_a_list_literal_within_the_cap_is_fine() -> None:
    name = b"n" * MAX_SMALL_LITERAL
    (resp,) = ResponseParser().feed(b'* LIST () "/" {%d}\r\n' % len(name) + name + b"\r\n")
    assert isinstance(resp, Untagged) and resp.data[-1] == name


def test_a_50_mb_fetch_literal_arrives_in_pieces() -> None:
    size = 50 * 1024 * 1024
    parser = ResponseParser()
    assert parser.feed(b"* 1 FETCH (UID 7 BODY[] {%d}\r\n" % size) == []
    piece = b"abcdefgh" * 8192  # 64 kB
    sent = 0
    out: list[object] = []
    while sent < size:
        out += parser.feed(piece[: size - sent])
        sent += min(len(piece), size - sent)
    out += parser.feed(b")\r\nA1 OK done\r\n")
    assert len(out) == 2
    fetch = out[0]
    assert isinstance(fetch, Untagged) and fetch.kind == "FETCH"
    body = fetch.data[0]["BODY[]"]
    assert len(body) == size and bytes(body[:16]) == piece[:16]
