"""The asyncio connection: against real Dovecot, and scripted servers for the faults."""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Awaitable, Callable

import pytest

from yippiemove.imap.client import ImapClient
from yippiemove.imap.connection import ImapConnection
from yippiemove.imap.errors import (
    AuthenticationError,
    ConnectError,
    ConnectionLost,
    InsecureAuthError,
    TlsError,
)
from yippiemove.imap.protocol import Literal


def run(coro):
    return asyncio.run(coro)


@pytest.mark.source_writes("a connection test: it APPENDs over IMAP as user src")
def test_starttls_login_and_deep_pipelining(dovecot):
    async def main():
        ctx = ssl.create_default_context(cafile=str(dovecot.ca_file))
        conn = await ImapConnection.open(
            "127.0.0.1", dovecot.port, security="starttls", ssl_context=ctx
        )
        assert conn.tls
        await conn.login("src", "srcpass")
        assert "LITERAL+" in conn.capabilities
        client = ImapClient(conn)
        await client.create(b"Box")
        await client.select(b"Box")
        futs = [await conn.submit("NOOP") for _ in range(300)]
        futs += [await conn.submit("STATUS", b'"INBOX"', b"(MESSAGES)") for _ in range(50)]
        assert conn.in_flight > 0
        results = await asyncio.gather(*futs)
        assert all(r.tagged.ok for r in results)
        assert all(any(u.kind == "STATUS" for u in r.untagged) for r in results[300:])
        await conn.logout()
        assert conn.closed

    run(main())


@pytest.mark.source_writes("a connection test: it APPENDs over IMAP as user src")
@pytest.mark.parametrize("plain_run", [None, 1024])
def test_implicit_tls_carries_big_and_small_bodies_exactly(dovecot, monkeypatch, plain_run):
    """Bodies of every size through implicit TLS and back in one pipelined burst.  With
    a run of 1 kB the decrypt buffer is handed to the parser after every record, many
    times within one socket read, and overwritten after each (``_decrypt``)."""
    import random

    from yippiemove.imap import connection

    if plain_run is not None:
        monkeypatch.setattr(connection, "_TLS_PLAIN_RUN", plain_run)

    rng = random.Random(19)
    sizes = [1, 100, 4095, 4096, 16384, 16385, 70_000, 300_000, 3_000_000, 7]
    alphabet = bytes(range(33, 127))
    bodies = []
    for n in sizes:
        text = bytes(rng.choice(alphabet) for _ in range(min(n, 5000)))
        text = (text * (n // len(text) + 1))[:n]
        lines = b"\r\n".join(text[k : k + 76] for k in range(0, n, 76))
        bodies.append(b"Subject: %d\r\n\r\n" % n + lines + b"\r\n")

    async def main():
        ctx = ssl.create_default_context(cafile=str(dovecot.ca_file))
        conn = await ImapConnection.open(
            "127.0.0.1", dovecot.tls_port, security="tls", ssl_context=ctx
        )
        assert conn.tls
        await conn.login("src", "srcpass")
        await conn.execute("CREATE", b"TlsBodies%d" % (plain_run or 0))
        for b in bodies:
            await conn.execute("APPEND", b"TlsBodies%d" % (plain_run or 0), Literal(b))
        await conn.execute("SELECT", b"TlsBodies%d" % (plain_run or 0))
        got: dict[int, bytes] = {}
        for _ in range(3):
            res = await conn.execute("UID FETCH", b"1:*", b"(BODY.PEEK[])")
            got = {}
            for u in res.untagged:
                if u.kind == "FETCH":
                    got[u.number] = u.data[0]["BODY[]"]
            assert [got[i + 1] for i in range(len(bodies))] == bodies
        await conn.logout()

    run(main())


def test_certificate_not_trusted_is_a_tls_error(dovecot):
    async def main():
        with pytest.raises(TlsError, match="certificate verification failed"):
            await ImapConnection.open("127.0.0.1", dovecot.tls_port, security="tls")
        with pytest.raises(TlsError, match="certificate verification failed"):
            await ImapConnection.open("127.0.0.1", dovecot.port, security="starttls")

    run(main())


def test_wrong_password_names_the_user_not_the_password(dovecot):
    async def main():
        ctx = ssl.create_default_context(cafile=str(dovecot.ca_file))
        conn = await ImapConnection.open(
            "127.0.0.1", dovecot.tls_port, security="tls", ssl_context=ctx
        )
        with pytest.raises(AuthenticationError) as e:
            await conn.login("src", "not-the-password")
        assert "'src'" in str(e.value) and "not-the-password" not in str(e.value)
        conn.abort()

    run(main())


Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


async def scripted(handler: Handler) -> tuple[asyncio.Server, int]:
    server = await asyncio.start_server(handler, "127.0.0.1", 0)
    return server, server.sockets[0].getsockname()[1]


def test_plaintext_password_refused_without_tls():
    received: list[bytes] = []

    async def handler(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        w.write(b"* OK [CAPABILITY IMAP4rev1 AUTH=PLAIN] hi\r\n")
        while line := await r.readline():
            received.append(line)
            tag = line.split()[0]
            w.write(tag + b" OK done\r\n")

    async def main():
        server, port = await scripted(handler)
        async with server:
            conn = await ImapConnection.open("127.0.0.1", port, security="starttls")
            assert not conn.tls
            with pytest.raises(InsecureAuthError, match="--allow-insecure-auth"):
                await conn.login("bob", "s3cret")
            await conn.logout()
        assert not any(b"s3cret" in line or b"LOGIN" in line for line in received)

    run(main())


def test_require_starttls_fails_when_not_offered():
    async def handler(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        w.write(b"* OK [CAPABILITY IMAP4rev1] hi\r\n")
        await r.read()

    async def main():
        server, port = await scripted(handler)
        async with server:
            with pytest.raises(TlsError, match="does not offer STARTTLS"):
                await ImapConnection.open("127.0.0.1", port, security="require-starttls")

    run(main())


def test_silent_server_times_out_instead_of_hanging():
    async def handler(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        w.write(b"* OK [CAPABILITY IMAP4rev1] hi\r\n")
        await r.read()  # never answers

    async def main():
        server, port = await scripted(handler)
        async with server:
            conn = await ImapConnection.open("127.0.0.1", port, security="none", idle_timeout=0.5)
            with pytest.raises(ConnectionLost, match="no answer"):
                async with asyncio.timeout(10):
                    await conn.execute("NOOP")

    run(main())


def test_no_greeting_is_a_connect_timeout():
    async def handler(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        await r.read()

    async def main():
        server, port = await scripted(handler)
        async with server:
            with pytest.raises(ConnectError, match="no answer"):
                await ImapConnection.open("127.0.0.1", port, security="none", timeout=0.5)

    run(main())


@pytest.mark.parametrize(
    ("reply", "match"),
    [
        (b"this is not imap\r\n", "invalid IMAP data"),
        (b"* BYE shutting down\r\n", "server said BYE: shutting down"),
        (b"", "closed by the server"),
        (b"* 1 FETCH (BODY[] {10}\r\nabc", "closed by the server"),
    ],
)
def test_broken_server_answers_fail_the_command(reply, match):
    async def handler(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        w.write(b"* OK [CAPABILITY IMAP4rev1] hi\r\n")
        await r.readline()
        w.write(reply)
        await w.drain()
        w.close()

    async def main():
        server, port = await scripted(handler)
        async with server:
            conn = await ImapConnection.open("127.0.0.1", port, security="none")
            with pytest.raises(ConnectionLost, match=match):
                async with asyncio.timeout(10):
                    await conn.execute("NOOP")

    run(main())


def test_refused_connection_is_a_connect_error():
    import socket

    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()

    async def main():
        with pytest.raises(ConnectError, match=f"cannot connect to 127.0.0.1:{port}"):
            await ImapConnection.open("127.0.0.1", port, security="none")
        with pytest.raises(ConnectError, match="unknown host"):
            await ImapConnection.open("no-such-host.invalid", 143, security="none")

    run(main())


def test_many_writers_waiting_for_a_full_send_buffer_all_resume():
    """Several tasks blocked on a paused transport share one drain: none is forgotten."""
    from yippiemove.imap.protocol import Literal

    payload = b"x" * (4 << 20)
    n = 3

    async def handler(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        w.write(b"* OK [CAPABILITY IMAP4rev1 LITERAL+] hi\r\n")
        await w.drain()
        await asyncio.sleep(0.5)  # let the client's send buffer fill up
        for i in range(1, n + 1):
            line = await r.readline()
            assert line.endswith(b"{%d+}\r\n" % len(payload)), line[:60]
            await r.readexactly(len(payload) + 2)
            w.write(b"Y%d OK stored\r\n" % i)
        await w.drain()
        await r.read()

    async def main():
        server, port = await scripted(handler)
        async with server:
            conn = await ImapConnection.open("127.0.0.1", port, security="none")

            async def one():
                fut = await conn.submit("XSTORE", Literal(payload))
                return await fut

            async with asyncio.timeout(30):
                results = await asyncio.gather(*(one() for _ in range(n)))
            assert [r.tagged.text for r in results] == [b"stored"] * n
            conn.abort()

    run(main())


def test_a_big_command_of_many_small_literals_is_sent_exactly_in_few_writes():
    """A MULTIAPPEND of hundreds of small messages is over the chunked-write size: its
    parts are gathered into slices (a send() per part cost a third of the writing CPU),
    big literals still go in slices of their own, and the bytes are exactly the
    command's."""
    from yippiemove.imap.protocol import Literal, encode_command

    bodies = [bytes([65 + i % 26]) * (3000 + i) for i in range(400)]
    big = b"\x00\xff" * 300_000
    args: list[bytes | Literal] = [b"INBOX"]
    for b in bodies[:200]:
        args += [b"(\\Seen)", Literal(b)]
    args += [b"()", Literal(big)]
    for b in bodies[200:]:
        args += [b"(\\Seen)", Literal(b)]
    expected = b"".join(
        p.data if isinstance(p, Literal) else p
        for p in encode_command("Y1", "APPEND", *args, nonsync_max=1 << 30)
    )
    received = bytearray()

    async def handler(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        w.write(b"* OK [CAPABILITY IMAP4rev1 LITERAL+ MULTIAPPEND] hi\r\n")
        await w.drain()
        while len(received) < len(expected):
            chunk = await r.read(1 << 16)
            if not chunk:
                break
            received.extend(chunk)
        w.write(b"Y1 OK stored\r\n")
        await w.drain()
        await r.read()

    async def main() -> int:
        server, port = await scripted(handler)
        async with server:
            conn = await ImapConnection.open("127.0.0.1", port, security="none")
            assert conn._transport is not None
            writes = 0
            real = conn._transport.write

            def counting(data: bytes) -> None:
                nonlocal writes
                writes += 1
                real(data)

            conn._transport.write = counting  # type: ignore[method-assign]
            async with asyncio.timeout(30):
                res = await (await conn.submit("APPEND", *args))
            assert res.tagged.ok
            conn.abort()
            return writes

    writes = run(main())
    assert bytes(received) == expected
    # ~2.0 MB of small parts in 256 kB slices, the big literal in 3 slices: not ~800.
    assert writes <= 16, writes


# ---------------------------------------------------------------- synchronizing literals


def _sync_literal_server(n: int, log: list[str], writes_seen: list[bytes] | None = None) -> Handler:
    """A server without LITERAL+: answers each APPEND's line with ``+``, reads its
    literal, and answers the tagged OKs only after all ``n`` APPENDs have arrived, so
    the client can only get them all there by pipelining (the log shows the order)."""

    async def handler(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        w.write(b"* OK [CAPABILITY IMAP4rev1 UIDPLUS] hi\r\n")
        await w.drain()
        tags = []
        for _ in range(n):
            line = await r.readline()
            tag, _verb, _box, size = line.split()
            assert size.startswith(b"{") and size.endswith(b"}"), line
            log.append(f"line {tag.decode()}")
            w.write(b"+ go ahead\r\n")
            await w.drain()
            body = await r.readexactly(int(size[1:-1]) + 2)
            assert body.endswith(b"\r\n")
            if writes_seen is not None:
                writes_seen.append(body[:-2])
            log.append(f"literal {tag.decode()}")
            tags.append(tag)
        for tag in tags:
            log.append(f"OK {tag.decode()}")
            w.write(tag + b" OK [APPENDUID 1 1] stored\r\n")
        await w.drain()
        await r.read()

    return handler


def test_sync_literals_keep_several_appends_in_flight():
    """Without LITERAL+, the next APPEND's line goes out as soon as the previous APPEND's
    bytes are written (it then waits for its own ``+``), not after its tagged OK: all
    APPENDs reach the server before it has answered any."""
    from yippiemove.imap.protocol import Literal

    n = 4
    log: list[str] = []
    bodies: list[bytes] = []

    async def main() -> None:
        server, port = await scripted(_sync_literal_server(n, log, bodies))
        async with server:
            conn = await ImapConnection.open("127.0.0.1", port, security="none")
            futs = [
                await conn.submit("APPEND", b"INBOX", Literal(b"m%d\r\n" % i * (i + 1)))
                for i in range(n)
            ]
            async with asyncio.timeout(30):
                results = await asyncio.gather(*futs)
            assert all(r.tagged.ok for r in results)
            conn.abort()

    run(main())
    assert bodies == [b"m%d\r\n" % i * (i + 1) for i in range(n)]
    first_ok = log.index(next(e for e in log if e.startswith("OK")))
    assert [e.split()[0] for e in log[:first_ok]] == ["line", "literal"] * n, log


def test_sync_literal_goes_out_with_the_rest_of_its_command_in_one_write():
    """After the ``+``, the literal and what follows it (the command's CRLF, or more
    arguments) leave in one write: a separate small write for the CRLF is one more
    segment the server must wait for."""
    from yippiemove.imap.protocol import Literal

    log: list[str] = []

    async def main() -> list[bytes]:
        server, port = await scripted(_sync_literal_server(1, log))
        async with server:
            conn = await ImapConnection.open("127.0.0.1", port, security="none")
            assert conn._transport is not None
            writes: list[bytes] = []
            real = conn._transport.write

            def counting(data: bytes) -> None:
                writes.append(bytes(data))
                real(data)

            conn._transport.write = counting  # type: ignore[method-assign]
            async with asyncio.timeout(30):
                res = await (await conn.submit("APPEND", b"INBOX", Literal(b"x" * 5000)))
            assert res.tagged.ok
            conn.abort()
            return writes

    writes = run(main())
    assert len(writes) == 2, [w[:40] for w in writes]
    assert writes[0].endswith(b"APPEND INBOX {5000}\r\n")
    assert writes[1] == b"x" * 5000 + b"\r\n"


@pytest.mark.skipif(not hasattr(__import__("socket"), "TCP_QUICKACK"), reason="Linux only")
def test_reads_are_acked_at_once_while_sending_sync_literals(monkeypatch):
    """A server that leaves Nagle on holds its ``+`` for APPEND n+1 until we ACK its
    tagged OK for APPEND n; with nothing to send, Linux would delay that ACK up to
    40 ms per message.  While synchronizing literals are in use, every read re-arms
    TCP_QUICKACK (an ACK goes out now); a connection with LITERAL+ never does it."""
    import yippiemove.imap.connection as connection
    from yippiemove.imap.protocol import Literal

    acks: list[int] = []
    real_ack = connection._ack_now

    def spy(sock) -> None:  # type: ignore[no-untyped-def]
        acks.append(sock.fileno())
        real_ack(sock)

    monkeypatch.setattr(connection, "_ack_now", spy)
    n = 3
    log: list[str] = []

    async def plus(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        w.write(b"* OK [CAPABILITY IMAP4rev1 LITERAL+] hi\r\n")
        while line := await r.readline():
            size = int(line.rsplit(b"{", 1)[1].split(b"+")[0])
            await r.readexactly(size + 2)
            w.write(line.split()[0] + b" OK stored\r\n")

    async def main() -> tuple[int, int]:
        server, port = await scripted(_sync_literal_server(n, log))
        async with server:
            conn = await ImapConnection.open("127.0.0.1", port, security="none")
            before = len(acks)
            futs = [await conn.submit("APPEND", b"INBOX", Literal(b"abc")) for _ in range(n)]
            async with asyncio.timeout(30):
                await asyncio.gather(*futs)
            sync_acks = len(acks) - before
            conn.abort()
        server, port = await scripted(plus)
        async with server:
            conn = await ImapConnection.open("127.0.0.1", port, security="none")
            before = len(acks)
            futs = [await conn.submit("APPEND", b"INBOX", Literal(b"abc")) for _ in range(n)]
            async with asyncio.timeout(30):
                await asyncio.gather(*futs)
            plus_acks = len(acks) - before
            conn.abort()
        return sync_acks, plus_acks

    sync_acks, plus_acks = run(main())
    assert sync_acks >= n, sync_acks  # at least each "+" read (and the OKs)
    assert plus_acks == 0


def test_tcp_nodelay_on_plain_starttls_and_tls_connections(dovecot):
    """Small writes never wait for Nagle's algorithm, whatever the security."""
    import socket

    async def main() -> list[int]:
        ctx = ssl.create_default_context(cafile=str(dovecot.ca_file))
        out = []
        for security, port in (
            ("none", dovecot.port),
            ("starttls", dovecot.port),
            ("tls", dovecot.tls_port),
        ):
            conn = await ImapConnection.open("127.0.0.1", port, security=security, ssl_context=ctx)
            assert conn._transport is not None
            sock = conn._transport.get_extra_info("socket")
            out.append(sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))
            await conn.logout()
        return out

    assert all(run(main()))


def _linger(conn: ImapConnection) -> tuple[int, int]:
    import socket
    import struct

    assert conn._transport is not None
    sock = conn._transport.get_extra_info("socket")
    return struct.unpack("ii", sock.getsockopt(socket.SOL_SOCKET, socket.SO_LINGER, 8))


@pytest.mark.parametrize(
    ("abortive", "end", "seen"),
    [
        (True, "logout", "eof"),  # LOGOUT answered: lingering off again, a FIN
        (True, "abort", "reset"),  # an error, a kill: unsent bytes dropped, a reset
        (False, "abort", "eof"),  # the ordinary close
    ],
)
def test_abortive_close_resets_unless_logout_was_answered(abortive, end, seen):
    """``abortive_close`` (the destination of a transfer): SO_LINGER {on, 0} from the
    start; a close without LOGOUT answered is a reset (tests/jobs/test_linger.py shows
    why), a LOGOUT answered ends with an ordinary FIN."""

    async def main() -> str:
        got: asyncio.Future[str] = asyncio.get_running_loop().create_future()

        async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            writer.write(b"* OK [CAPABILITY IMAP4rev1 LITERAL+] scripted\r\n")
            try:
                while line := await reader.readline():
                    tag = line.split(b" ", 1)[0]
                    if b"LOGOUT" in line.upper():
                        writer.write(b"* BYE bye\r\n" + tag + b" OK done\r\n")
                        await writer.drain()
                got.set_result("eof")
            except ConnectionResetError:
                got.set_result("reset")
            writer.close()

        server = await asyncio.start_server(handler, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        conn = await ImapConnection.open(
            "127.0.0.1", port, security="none", abortive_close=abortive
        )
        assert conn.abortive is abortive
        assert _linger(conn) == ((1, 0) if abortive else (0, 0))
        await conn.submit("NOOP")
        if end == "logout":
            await conn.logout()
        else:
            conn.abort()
        result = await asyncio.wait_for(got, 10)
        server.close()
        return result

    assert run(main()) == seen


def test_only_destination_connections_of_a_transfer_close_abortively(dovecot):
    """The engine's destination connections get ``abortive_close`` (Options, on by
    default: ``yippiemove move`` and the service's jobs alike); the source never (it is
    never written)."""
    from yippiemove.transfer.budget import ByteBudget
    from yippiemove.transfer.model import Endpoint, Options
    from yippiemove.transfer.pairs import Connector

    async def main() -> list[tuple[int, int]]:
        ctx = ssl.create_default_context(cafile=str(dovecot.ca_file))
        src = Endpoint("127.0.0.1", dovecot.port, "src", password="srcpass", ssl_context=ctx)
        dst = Endpoint("127.0.0.1", dovecot.port, "dst", password="dstpass", ssl_context=ctx)
        out = []
        for options in (Options(), Options(abortive_close=False)):
            c = Connector(src, dst, options, ByteBudget(1 << 20), lambda *a: None)
            s, d = await c.open_pair()
            out += [_linger(s.conn), _linger(d.conn)]  # type: ignore[attr-defined]
            for store in (s, d):
                await store.logout()
        return out

    assert run(main()) == [(0, 0), (1, 0), (0, 0), (0, 0)]
