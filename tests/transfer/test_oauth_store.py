"""``connect_store`` with an OAuth2 token source: the token comes from ``ep.oauth``; a
refused token is refreshed and the login tried again on a new connection, once; a second
refusal and ConsentRevoked are permanent.  Scripted servers here for exact counts;
real servers (Dovecot's oauth2 passdb, the Gmail double): test_oauth_transfer.py."""

from __future__ import annotations

import asyncio
import base64
import json

import pytest

from yippiemove.imap.errors import ConnectError, ConsentRevoked, ImapError, TokenRefused
from yippiemove.policy import retry
from yippiemove.transfer.model import Endpoint, TokenSource
from yippiemove.transfer.store import connect_store, open_store


class Tokens:
    """A stand-in TokenSource: hands out ``tokens`` in turn (an exception is raised);
    records each call's ``refresh``."""

    def __init__(self, *tokens: str | BaseException) -> None:
        self.tokens = list(tokens)
        self.calls: list[bool] = []

    async def access_token(self, *, refresh: bool = False) -> str:
        self.calls.append(refresh)
        t = self.tokens.pop(0)
        if isinstance(t, BaseException):
            raise t
        return t


class Server:
    """A scripted IMAP server taking AUTHENTICATE XOAUTH2 (SASL-IR) with ``valid`` tokens;
    ``no`` is its tagged answer to a refused one."""

    def __init__(self, valid: set[str], no: bytes = b"NO [AUTHENTICATIONFAILED] Invalid") -> None:
        self.valid = valid
        self.no = no
        self.connections = 0
        self.tokens_seen: list[str] = []

    async def handle(self, r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        self.connections += 1
        w.write(b"* OK [CAPABILITY IMAP4rev1 SASL-IR AUTH=XOAUTH2 ENABLE] hi\r\n")
        while line := await r.readline():
            tag, verb, *rest = line.split()
            verb = verb.upper()
            if verb == b"AUTHENTICATE":
                msg = base64.b64decode(rest[1]).decode()
                token = msg.split("auth=Bearer ")[1].split("\x01")[0]
                self.tokens_seen.append(token)
                if token in self.valid:
                    w.write(tag + b" OK [CAPABILITY IMAP4rev1 ENABLE] Logged in\r\n")
                    continue
                err = json.dumps({"status": "401", "schemes": "bearer", "scope": "mail"})
                w.write(b"+ " + base64.b64encode(err.encode()) + b"\r\n")
                await r.readline()
                w.write(tag + b" " + self.no + b"\r\n")
            elif verb == b"LOGOUT":
                w.write(b"* BYE bye\r\n" + tag + b" OK bye\r\n")
                await w.drain()
                w.close()
                return
            else:
                w.write(tag + b" OK done\r\n")


async def login(server: Server, tokens: TokenSource) -> object:
    srv = await asyncio.start_server(server.handle, "127.0.0.1", 0)
    async with srv:
        port = srv.sockets[0].getsockname()[1]
        ep = Endpoint(
            "127.0.0.1",
            port,
            "u@example.com",
            security="none",
            allow_insecure_auth=True,
            oauth=tokens,
        )
        try:
            store = await connect_store(ep, "source", connect_timeout=5, idle_timeout=5)
        except ImapError as exc:
            return exc
        await store.logout()
        return store


def test_the_login_uses_the_sources_token_and_no_password():
    server, tokens = Server({"tokA"}), Tokens("tokA")
    store = asyncio.run(login(server, tokens))
    assert not isinstance(store, ImapError), store
    assert tokens.calls == [False] and server.connections == 1
    assert open_store is connect_store
    ep = Endpoint("h", 993, "u", oauth=tokens)
    assert "Tokens" not in repr(ep) and ep == Endpoint("h", 993, "u")


def test_a_refused_token_is_refreshed_and_the_login_tried_again_on_a_new_connection():
    server, tokens = Server({"fresh"}), Tokens("expired", "fresh")
    store = asyncio.run(login(server, tokens))
    assert not isinstance(store, ImapError), store
    assert tokens.calls == [False, True]
    assert server.connections == 2 and server.tokens_seen == ["expired", "fresh"]


def test_a_second_refusal_is_permanent_and_says_what_to_check():
    server, tokens = Server(set()), Tokens("one", "two", "three")
    exc = asyncio.run(login(server, tokens))
    assert isinstance(exc, TokenRefused), exc
    assert tokens.calls == [False, True] and server.connections == 2  # once, no loop
    assert exc.status == "401"
    assert "freshly issued" in str(exc) and "IMAP access" in str(exc)
    assert not any(t in str(exc) for t in ("one", "two"))
    assert retry.classify(exc).kind == retry.STOP


def test_consent_revoked_on_refresh_stops_with_sign_in_again():
    server, tokens = Server(set()), Tokens("old", ConsentRevoked("invalid_grant"))
    exc = asyncio.run(login(server, tokens))
    assert isinstance(exc, ConsentRevoked) and "sign in again" in str(exc)
    assert server.connections == 1 and tokens.calls == [False, True]
    assert retry.classify(exc).kind == retry.STOP


def test_consent_revoked_before_any_login_sends_nothing():
    server, tokens = Server({"x"}), Tokens(ConsentRevoked())
    exc = asyncio.run(login(server, tokens))
    assert isinstance(exc, ConsentRevoked)
    assert server.tokens_seen == []


def test_a_token_endpoint_that_does_not_answer_is_a_retryable_connect_error():
    class Flaky(Exception):
        transient = True

    for err in (OSError("connection refused to https://token.example/?secret=s3"), Flaky("s3")):
        exc = asyncio.run(login(Server({"x"}), Tokens(err)))
        assert isinstance(exc, ConnectError), exc
        assert "s3" not in str(exc) and "token endpoint" in str(exc)
        assert retry.classify(exc).retry


def test_a_temporary_refusal_is_not_taken_for_a_bad_token():
    server = Server(set(), no=b"NO [UNAVAILABLE] Try again later")
    tokens = Tokens("tok", "unused")
    exc = asyncio.run(login(server, tokens))
    assert isinstance(exc, TokenRefused)
    assert tokens.calls == [False] and server.connections == 1  # no refresh for that
    assert retry.classify(exc).kind == retry.RETRY


@pytest.mark.parametrize("refused", [True, False])
def test_a_connection_is_never_left_open_after_a_failed_oauth_login(refused):
    server = Server(set())
    tokens = Tokens("a", "b") if refused else Tokens("a", ConsentRevoked())

    async def main() -> None:
        srv = await asyncio.start_server(server.handle, "127.0.0.1", 0)
        async with srv:
            port = srv.sockets[0].getsockname()[1]
            ep = Endpoint(
                "127.0.0.1", port, "u", security="none", allow_insecure_auth=True, oauth=tokens
            )
            before = {t for t in asyncio.all_tasks()}
            with pytest.raises(ImapError):
                await connect_store(ep, "destination", connect_timeout=5, idle_timeout=5)
            await asyncio.sleep(0.05)
            # Every server-side session ended: the client closed both connections.
            handlers = [t for t in asyncio.all_tasks() if t not in before]
            assert all(t.done() for t in handlers), handlers

    asyncio.run(main())
