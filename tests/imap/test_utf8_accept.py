"""RFC 6855 UTF8=ACCEPT: ENABLE when offered, names as UTF-8 both ways (the wire bytes)."""

from __future__ import annotations

import asyncio

import pytest

from yippiemove.imap.client import ImapClient, decode_mailbox
from yippiemove.imap.connection import ImapConnection

NAME = "Ünïcödé 🎉"


def _run(caps: bytes, script, *, read_only: bool = False) -> tuple[list[bytes], object]:
    """A scripted server greeting with ``caps``; answers each line by ``script(line)``."""
    received: list[bytes] = []

    async def handler(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        w.write(b"* OK [CAPABILITY " + caps + b"] hi\r\n")
        while True:
            line = await r.readline()
            if not line:
                return
            received.append(line)
            tag = line.split()[0]
            w.write(script(line.split(b" ", 1)[1]) + tag + b" OK done\r\n")
            await w.drain()

    async def main(body):
        server = await asyncio.start_server(handler, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        async with server:
            conn = await ImapConnection.open(
                "127.0.0.1", port, security="none", timeout=5, read_only=read_only
            )
            try:
                async with asyncio.timeout(10):
                    return await body(ImapClient(conn))
            finally:
                conn.abort()

    return received, main


def _answers(line: bytes) -> bytes:
    if line.startswith(b"ENABLE"):
        return b"* ENABLED UTF8=ACCEPT\r\n"
    if line.startswith(b"LIST"):
        return (
            b'* LIST () "/" "' + NAME.encode() + b'"\r\n'
            b'* LIST () "/" "a&-b"\r\n'
            b'* LIST () "/" INBOX\r\n'
        )
    return b""


@pytest.mark.parametrize("read_only", [False, True])
def test_enable_utf8_names_travel_as_utf8_both_ways(read_only: bool) -> None:
    received, main = _run(b"IMAP4rev1 ENABLE UTF8=ACCEPT", _answers, read_only=read_only)

    async def body(c: ImapClient):
        assert await c.enable_utf8() is True
        boxes = await c.list_mailboxes()
        if not read_only:
            await c.create(c.encode_name(NAME + "/x"))
        await c.select(boxes[0].raw, readonly=True)
        return boxes

    boxes = asyncio.run(main(body))
    assert [b.name for b in boxes] == [NAME, "a&-b", "INBOX"]  # "&-" is two characters
    assert boxes[0].raw == NAME.encode()
    quoted = b'"' + NAME.encode() + b'"'
    sent = [line.split(b" ", 1)[1] for line in received]
    assert sent[0] == b"ENABLE UTF8=ACCEPT\r\n"
    if not read_only:
        assert b'CREATE "' + NAME.encode() + b'/x"\r\n' in sent
    assert b"EXAMINE " + quoted + b"\r\n" in sent  # a quoted string, not a literal


def test_no_enable_without_the_capability_and_modified_utf7_names() -> None:
    def answers(line: bytes) -> bytes:
        if line.startswith(b"LIST"):
            return b'* LIST () "/" "&AMk-t&AOk-"\r\n* LIST () "/" "a&-b"\r\n'
        return b""

    received, main = _run(b"IMAP4rev1 ENABLE", answers)

    async def body(c: ImapClient):
        assert await c.enable_utf8() is False
        assert c.encode_name("été") == b"&AOk-t&AOk-"
        return await c.list_mailboxes()

    boxes = asyncio.run(main(body))
    assert [b.name for b in boxes] == ["\u00c9t\u00e9", "a&b"]
    assert not any(line.split(b" ", 1)[1].startswith(b"ENABLE") for line in received)


def test_a_server_that_does_not_confirm_enable_keeps_modified_utf7() -> None:
    _received, main = _run(b"IMAP4rev1 ENABLE UTF8=ACCEPT", lambda line: b"")

    async def body(c: ImapClient):
        ok = await c.enable_utf8()
        return ok, c.encode_name("été")

    ok, raw = asyncio.run(main(body))
    assert ok is False and raw == b"&AOk-t&AOk-"


def test_decode_mailbox_utf8_mode() -> None:
    assert decode_mailbox(b"a&-b", utf8=True) == "a&-b"
    assert decode_mailbox(b"a&-b") == "a&b"
    assert decode_mailbox("é".encode(), utf8=True) == "é"
    assert decode_mailbox(b"&AOk-", utf8=True) == "&AOk-"
    assert decode_mailbox(b"\xff&AOk-", utf8=True).endswith("&AOk-")  # not UTF-8: tolerated
