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
