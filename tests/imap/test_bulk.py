"""The parser's bulk path (``ResponseParser(bulk=True)``, used by every connection).

Runs of the two FETCH shapes a transfer receives tens of thousands of times (the
metadata listing and ``UID BODY[]``) are parsed with one regex per line straight from
the buffer and handed over as one :class:`FetchRun`.  It is only an optimisation, so
the whole contract is: a run expands to exactly what the per-line parser gives, in any
split of the input, valid or not, and the client's handlers read a run exactly as they
read the responses it stands for.
"""

from __future__ import annotations

import asyncio
from typing import Any

from hypothesis import example, given
from hypothesis import strategies as st

from yippiemove.imap.client import ImapClient, MessageMeta, _BodyCollector, _meta_collector
from yippiemove.imap.connection import ImapConnection
from yippiemove.imap.protocol import (
    BIG_LITERAL,
    FetchRun,
    ProtocolError,
    ResponseParser,
    Untagged,
)

from .test_fuzz import cpu_watchdog, dates, fuzz, mutated, split, streams


def feed(
    chunks: list[bytes], *, bulk: bool, limit: float = 5.0
) -> tuple[list[Any], ProtocolError | None, int]:
    """Responses (runs expanded) before the first error, the error, and how many runs."""
    p = ResponseParser(bulk=bulk)
    out: list[Any] = []
    runs = 0
    with cpu_watchdog(limit):
        for c in chunks:
            try:
                got = p.feed(c)
            except ProtocolError as exc:
                return out, exc, runs
            for r in got:
                if isinstance(r, FetchRun):
                    runs += 1
                    out += r.untagged()
                else:
                    out.append(r)
    return out, None, runs


def same_outcome(data: bytes, cuts: list[int]) -> int:
    """Bulk and per-line parsing agree on ``data`` fed whole, split and byte by byte:
    the same responses from each ``feed`` call, the same error (a call that raises
    gives nothing, in both modes)."""
    runs = 0
    for chunks in ([data], split(data, cuts), [data[i : i + 1] for i in range(len(data))]):
        ref, err, _ = feed(chunks, bulk=False)
        got, err2, n = feed(chunks, bulk=True)
        runs = max(runs, n)
        assert (err is None) == (err2 is None), (data, err, err2)
        assert str(err) == str(err2)
        assert got == ref, data
    return runs


# Metadata and body lines as servers send them, and near misses: leading zeros, zero,
# numbers past 32/63 bits, \Recent, NIL and escaped characters in flag lists, NBSP.
num_text = st.one_of(
    st.integers(1, 2**32 - 1).map(str),
    st.sampled_from(["0", "007", "4294967296", "9223372036854775807", "9223372036854775808"]),
    st.sampled_from(["99999999999999999999", "123456789012345678901"]),
)
flag_text = st.lists(
    st.sampled_from(
        ["\\Seen", "\\Recent", "\\recent", "$label1", "NIL", "nil", "\\\\x", "a\xa0b", "\\*"]
    ),
    max_size=4,
).map(" ".join)


@st.composite
def meta_line(draw: st.DrawFn) -> bytes:
    n, uid, size = draw(num_text), draw(num_text), draw(num_text)
    flags = draw(flag_text).encode("latin-1")
    return b'* %s FETCH (UID %s RFC822.SIZE %s FLAGS (%s) INTERNALDATE "%s")' % (
        n.encode(),
        uid.encode(),
        size.encode(),
        flags,
        draw(dates),
    )


@st.composite
def body_line(draw: st.DrawFn) -> bytes:
    n, uid = draw(num_text), draw(num_text)
    body = draw(
        st.one_of(
            st.binary(max_size=60),
            st.sampled_from(
                [b"", b")\r\n", b"* 1 FETCH (UID 1 BODY[] {3}\r\nabc)\r\n", b"{5}\r\n"]
            ),
        )
    )
    return (
        b"* %s FETCH (UID %s BODY[] {%d}\r\n" % (n.encode(), uid.encode(), len(body)) + body + b")"
    )


lines = st.lists(st.one_of(meta_line(), body_line(), streams.map(lambda s: s[0][0])), max_size=10)


@fuzz(200)
@given(lines, st.lists(st.integers(0, 10_000), max_size=8))
@example([b'* 1 FETCH (UID 1 RFC822.SIZE 2 FLAGS (\\Seen) INTERNALDATE "d")'] * 3, [])
def test_runs_expand_to_the_per_line_responses(ls: list[bytes], cuts: list[int]) -> None:
    same_outcome(b"".join(x + b"\r\n" for x in ls), cuts)


@fuzz(200)
@given(streams, st.lists(st.integers(0, 10_000), max_size=8))
def test_valid_streams_parse_the_same_with_runs(stream, cuts) -> None:  # type: ignore[no-untyped-def]
    data = b"".join(w + b"\r\n" for w, _ in stream)
    same_outcome(data, cuts)


@fuzz(200)
@given(mutated(lines.map(lambda ls: [(x, None) for x in ls])), st.lists(st.integers(0, 10_000)))
def test_broken_runs_fail_or_parse_the_same(data: bytes, cuts: list[int]) -> None:
    same_outcome(data, cuts)


def test_a_listing_and_bodies_come_as_few_runs() -> None:
    """The point of it: 1,000 listing lines are one run, not 1,000 responses; bodies too,
    up to a body that is not complete yet (the per-line path takes it over)."""
    meta = b"".join(
        b'* %d FETCH (UID %d RFC822.SIZE %d FLAGS (\\Seen $x) INTERNALDATE "1-Jan-2020 00:00:00 +0000")\r\n'
        % (i, i, 100 + i)
        for i in range(1, 1001)
    )
    p = ResponseParser(bulk=True)
    (run,) = p.feed(meta + b"A1 OK done\r\n")[:1]
    assert isinstance(run, FetchRun) and run.shape == "meta" and len(run.rows) == 1000
    assert run.rows[6] == (7, 7, 107, b"\\Seen $x", b"1-Jan-2020 00:00:00 +0000")

    bodies = b"".join(
        b"* %d FETCH (UID %d BODY[] {%d}\r\n" % (i, 10 * i, i) + b"x" * i + b")\r\n"
        for i in range(1, 101)
    )
    cut = len(bodies) - 40  # inside the last body
    got = p.feed(bodies[:cut])
    assert [type(r) for r in got] == [FetchRun]
    assert len(got[0].rows) == 99 and got[0].rows[-1] == (99, 990, b"x" * 99)
    (last,) = p.feed(bodies[cut:])
    assert last == Untagged("FETCH", 100, [{"UID": "1000", "BODY[]": b"x" * 100}])


def test_big_bodies_still_get_their_own_buffer() -> None:
    """A big body that arrives in pieces is left to the per-line path (one copy);
    one complete in the buffer is taken by the run."""
    body = bytes(range(256)) * (BIG_LITERAL // 256 + 3)
    wire = b"* 1 FETCH (UID 5 BODY[] {%d}\r\n" % len(body) + body + b")\r\n"
    p = ResponseParser(bulk=True)
    out = []
    longest = 0
    for i in range(0, len(wire), 16384):
        out += p.feed(wire[i : i + 16384])
        longest = max(longest, len(p._buf))
    assert out == [Untagged("FETCH", 1, [{"UID": "5", "BODY[]": body}])]
    assert longest <= 16384  # the body never went through the line buffer
    (run,) = ResponseParser(bulk=True).feed(wire)
    assert isinstance(run, FetchRun) and run.rows == [(1, 5, body)]


@fuzz(100)
@given(st.lists(meta_line(), min_size=1, max_size=8))
def test_the_listing_handler_reads_a_run_as_its_responses(ls: list[bytes]) -> None:
    data = b"".join(x + b"\r\n" for x in ls)
    per_line, run_wise = [], []
    on_line, on_run = _meta_collector(per_line), _meta_collector(run_wise)
    line_err = run_err = None
    try:
        for r in ResponseParser().feed(data):
            on_line(r)
    except ProtocolError as exc:
        line_err = exc
    try:
        for r in ResponseParser(bulk=True).feed(data):
            on_run.on_run(r) if isinstance(r, FetchRun) else on_run(r)
    except ProtocolError as exc:
        run_err = exc
    assert (line_err is None) == (run_err is None)
    if line_err is None:
        assert run_wise == per_line
        assert all(isinstance(m, MessageMeta) for m in run_wise)
        assert not any(f.upper() == "\\RECENT" for m in run_wise for f in m.flags)


def test_the_body_handler_reads_a_run_as_its_responses() -> None:
    got: list[tuple[int, bytes]] = []
    h = _BodyCollector(lambda uid, body: got.append((uid, body)))
    h.on_run(FetchRun("body", [(1, 7, b"a"), (2, 9, b"bc")]))
    h(Untagged("FETCH", 3, [{"UID": "11", "BODY[]": b"d"}]))
    assert got == [(7, b"a"), (9, b"bc"), (11, b"d")]


def test_a_handler_without_run_support_gets_the_responses_one_by_one() -> None:
    """``fetch_sizes`` has a plain handler: a run of listing lines (a server answering
    with more items than asked) reaches it expanded, nothing lost."""

    async def handler(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        w.write(b"* OK [CAPABILITY IMAP4rev1] hi\r\n")
        while line := await r.readline():
            tag = line.split()[0]
            for i in range(1, 301):
                w.write(
                    b'* %d FETCH (UID %d RFC822.SIZE %d FLAGS () INTERNALDATE "d")\r\n'
                    % (i, i, i * 3)
                )
            w.write(tag + b" OK done\r\n")
            await w.drain()

    async def main() -> list[tuple[int, int]]:
        server = await asyncio.start_server(handler, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        try:
            conn = await ImapConnection.open("127.0.0.1", port, security="none", timeout=5)
            try:
                return await ImapClient(conn).fetch_sizes()
            finally:
                conn.abort()
        finally:
            server.close()
            await server.wait_closed()

    assert asyncio.run(main()) == [(i, i * 3) for i in range(1, 301)]
