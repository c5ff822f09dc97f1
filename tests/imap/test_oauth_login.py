"""``ImapConnection.login_oauth2`` against scripted servers: mechanisms by capability,
SASL-IR or not, error challenges, and hostile servers.  (Real servers: Dovecot with its
oauth2 passdb and the Gmail double, tests/transfer/test_oauth_transfer.py.)"""

from __future__ import annotations

import asyncio
import base64
import json

import pytest

from yippiemove.imap.connection import ImapConnection
from yippiemove.imap.errors import (
    AuthenticationError,
    ConnectionLost,
    InsecureAuthError,
    TokenRefused,
)

from .test_connection import Handler, scripted

TOKEN = "MARKER.access-token_9f8e7d"
GOOD_CAPS = b"IMAP4rev1 AUTH=PLAIN ENABLE"


def run(coro):
    return asyncio.run(coro)


def b64json(doc: object) -> bytes:
    return base64.b64encode(json.dumps(doc).encode())


def sasl_server(
    caps: bytes,
    log: list[bytes],
    *,
    accept: bool = True,
    challenge: bytes = b64json({"status": "invalid_token", "scope": "mail"}),
    no_text: bytes = b"[AUTHENTICATIONFAILED] Authentication failed",
) -> Handler:
    """Greets with ``caps``; AUTHENTICATE: the message (as initial response or after an
    empty "+"), then OK with new capabilities, or the error challenge, the client's
    dummy answer, and NO."""

    async def handler(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        w.write(b"* OK [CAPABILITY " + caps + b"] hi\r\n")
        while line := await r.readline():
            log.append(line)
            tag, verb, *rest = line.split()
            if verb.upper() == b"AUTHENTICATE":
                if len(rest) < 2:
                    w.write(b"+ \r\n")
                    log.append(await r.readline())
                if accept:
                    w.write(tag + b" OK [CAPABILITY IMAP4rev1 ENABLE AFTER] Logged in\r\n")
                    continue
                w.write(b"+ " + challenge + b"\r\n")
                log.append(await r.readline())
                w.write(tag + b" NO " + no_text + b"\r\n")
            else:
                w.write(tag + b" OK done\r\n")

    return handler


def messages(log: list[bytes]) -> list[bytes]:
    """The SASL client messages the server got, decoded."""
    out = []
    for line in log:
        parts = line.split()
        if len(parts) >= 4 and parts[1].upper() == b"AUTHENTICATE":
            out.append(base64.b64decode(parts[3]))
        elif len(parts) == 1:
            out.append(base64.b64decode(parts[0]))
        elif line == b"\r\n":
            out.append(b"")
    return out


async def connect(port: int) -> ImapConnection:
    return await ImapConnection.open("127.0.0.1", port, security="none")


@pytest.mark.parametrize(
    ("caps", "mech", "expect"),
    [
        (
            b"AUTH=XOAUTH2 AUTH=OAUTHBEARER SASL-IR",
            b"OAUTHBEARER",
            b"n,a=u@example.com,\x01host=127.0.0.1\x01port=%d\x01auth=Bearer "
            + TOKEN.encode()
            + b"\x01\x01",
        ),
        (
            b"AUTH=XOAUTH2",
            b"XOAUTH2",
            b"user=u@example.com\x01auth=Bearer " + TOKEN.encode() + b"\x01\x01",
        ),
    ],
)
def test_login_oauth2_chooses_by_capability_with_or_without_sasl_ir(caps, mech, expect):
    log: list[bytes] = []

    async def main():
        server, port = await scripted(sasl_server(GOOD_CAPS + b" " + caps, log))
        async with server:
            conn = await connect(port)
            await conn.login_oauth2("u@example.com", TOKEN, allow_insecure=True)
            assert "AFTER" in conn.capabilities  # the OK's CAPABILITY code was taken
            await conn.logout()
            return port

    port = run(main())
    first = log[0].split()
    assert first[1:3] == [b"AUTHENTICATE", mech]
    assert (len(first) == 4) == (b"SASL-IR" in caps)
    assert messages(log) == [expect.replace(b"%d", str(port).encode())]


@pytest.mark.parametrize(
    "caps", [b"AUTH=OAUTHBEARER SASL-IR", b"AUTH=XOAUTH2", b"AUTH=OAUTHBEARER"]
)
def test_refused_token_answers_the_error_challenge_then_raises_token_refused(caps):
    log: list[bytes] = []

    async def main():
        server, port = await scripted(
            sasl_server(
                GOOD_CAPS + b" " + caps,
                log,
                accept=False,
                no_text=b"[AUTHENTICATIONFAILED] bad token " + TOKEN.encode(),
            )
        )
        async with server:
            conn = await connect(port)
            with pytest.raises(TokenRefused) as e:
                await conn.login_oauth2("u@example.com", TOKEN, allow_insecure=True)
            assert not conn.closed  # in step: the next command works
            await conn.execute("NOOP")
            await conn.logout()
            return e.value

    exc = run(main())
    assert exc.status == "invalid_token"
    assert isinstance(exc, AuthenticationError)
    text = str(exc)
    assert "'u@example.com'" in text and "invalid_token" in text and "AUTHENTICATIONFAILED" in text
    # The server repeated the token in its NO: cut out of our message.
    assert TOKEN not in text and "[redacted]" in text
    # The dummy answer: ^A (RFC 7628 3.2.3) for OAUTHBEARER, an empty line for XOAUTH2.
    noop = next(i for i, line in enumerate(log) if b" NOOP" in line)
    assert log[noop - 1] == (b"AQ==\r\n" if b"OAUTHBEARER" in caps else b"\r\n")


def test_no_oauth_mechanism_names_both_and_sends_nothing():
    log: list[bytes] = []

    async def main():
        server, port = await scripted(sasl_server(GOOD_CAPS, log))
        async with server:
            conn = await connect(port)
            with pytest.raises(AuthenticationError, match="neither OAUTHBEARER nor XOAUTH2"):
                await conn.login_oauth2("u", TOKEN, allow_insecure=True)
            with pytest.raises(InsecureAuthError, match="access token"):
                await conn.login_oauth2("u", TOKEN)
            await conn.logout()

    run(main())
    assert not any(TOKEN.encode() in line or b"AUTHENTICATE" in line for line in log)


def test_a_server_that_keeps_challenging_is_dropped():
    """Failed on the old code (no OAuth2 login); the exchange answers two challenges at
    most, then drops the connection instead of answering forever."""
    sent: list[bytes] = []

    async def handler(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        w.write(b"* OK [CAPABILITY IMAP4rev1 AUTH=XOAUTH2] hi\r\n")
        line = await r.readline()
        sent.append(line)
        while True:
            w.write(b"+ " + b64json({"status": "401"}) + b"\r\n")
            line = await r.readline()
            if not line:
                return
            sent.append(line)

    async def main():
        server, port = await scripted(handler)
        async with server:
            conn = await connect(port)
            with pytest.raises(AuthenticationError, match="SASL challenges") as e:
                async with asyncio.timeout(10):
                    await conn.login_oauth2("u", TOKEN, allow_insecure=True)
            assert not isinstance(e.value, TokenRefused)
            assert conn.closed

    run(main())
    assert len(sent) == 3  # the command, our message after "+", the dummy answer


def test_a_huge_challenge_breaks_the_connection_not_the_memory():
    async def handler(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        w.write(b"* OK [CAPABILITY IMAP4rev1 AUTH=OAUTHBEARER SASL-IR] hi\r\n")
        await r.readline()
        w.write(b"+ ")
        try:
            for _ in range(1000):  # 64 MiB if nobody stops it
                w.write(b"A" * 65536)
                await w.drain()
        except ConnectionError:
            pass

    async def main():
        server, port = await scripted(handler)
        async with server:
            conn = await connect(port)
            with pytest.raises(ConnectionLost, match="continuation request longer"):
                async with asyncio.timeout(10):
                    await conn.login_oauth2("u", TOKEN, allow_insecure=True)

    run(main())
