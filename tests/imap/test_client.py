"""ImapClient's pipelined verbs (``submit_*``): the bytes on the wire, and real Dovecot."""

from __future__ import annotations

import asyncio
import ssl

from yippiemove.imap.client import ImapClient
from yippiemove.imap.connection import ImapConnection


def test_submit_create_subscribe_noop_are_pipelined_with_the_expected_bytes() -> None:
    """Each returns its command's future without waiting for the answer: the server
    answers only once it has all of them (awaiting one would hang), in reverse order."""
    received: list[bytes] = []

    async def handler(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        w.write(b"* OK [CAPABILITY IMAP4rev1 LITERAL+ CREATE-SPECIAL-USE] hi\r\n")
        while len(received) < 5:
            line = await r.readline()
            if not line:
                return
            received.append(line)
        for line in reversed(received):
            tag = line.split()[0]
            if b"USE" in line:
                w.write(tag + b" NO [USEATTR] not that one\r\n")
            else:
                w.write(tag + b" OK done\r\n")
        await w.drain()
        await r.read()

    async def main() -> list[tuple[str, bytes]]:
        server = await asyncio.start_server(handler, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        async with server:
            conn = await ImapConnection.open("127.0.0.1", port, security="none", timeout=5)
            try:
                client = ImapClient(conn)
                futs = [
                    await client.submit_noop(),
                    await client.submit_create(b"Sent"),
                    await client.submit_create(b"Sent Items", "\\Sent"),
                    await client.submit_subscribe(b"Sent Items"),
                    await client.submit_subscribe(b'&AMk-t&AOk-/"x"'),
                ]
                assert not any(f.done() for f in futs)
                async with asyncio.timeout(10):
                    results = [await f for f in futs]
                return [(r.tagged.status, r.tagged.text) for r in results]
            finally:
                conn.abort()

    results = asyncio.run(main())
    assert received == [
        b"Y1 NOOP\r\n",
        b'Y2 CREATE "Sent"\r\n',
        b'Y3 CREATE "Sent Items" (USE (\\Sent))\r\n',
        b'Y4 SUBSCRIBE "Sent Items"\r\n',
        b'Y5 SUBSCRIBE "&AMk-t&AOk-/\\"x\\""\r\n',
    ]
    # The results are handed back as they are, refusals included.
    assert results == [
        ("OK", b"done"),
        ("OK", b"done"),
        ("NO", b"not that one"),
        ("OK", b"done"),
        ("OK", b"done"),
    ]


def test_submit_create_and_subscribe_on_dovecot(dovecot) -> None:
    async def main() -> tuple[list[str], set[bytes], set[bytes]]:
        ctx = ssl.create_default_context(cafile=str(dovecot.ca_file))
        conn = await ImapConnection.open(
            "127.0.0.1", dovecot.port, security="starttls", ssl_context=ctx
        )
        try:
            await conn.login("dst", "dstpass")
            client = ImapClient(conn)
            use = "\\Archive" if "CREATE-SPECIAL-USE" in client.capabilities else None
            futs = [
                await client.submit_create(b"Kept"),
                await client.submit_create(b"Old", use),
                await client.submit_subscribe(b"Kept"),
                await client.submit_create(b"Kept"),  # again: NO [ALREADYEXISTS]
                await client.submit_noop(),
            ]
            results = [await f for f in futs]
            codes = [
                r.tagged.status + (f" {r.tagged.code.name}" if r.tagged.code else "")
                for r in results
            ]
            listed = {m.raw for m in await client.list_mailboxes()}
            subscribed = {m.raw for m in await client.list_mailboxes(subscribed=True)}
            return codes, listed, subscribed
        finally:
            await conn.logout()

    codes, listed, subscribed = asyncio.run(main())
    assert codes == ["OK", "OK", "OK", "NO ALREADYEXISTS", "OK"]
    assert {b"Kept", b"Old"} <= listed
    assert b"Kept" in subscribed and b"Old" not in subscribed
