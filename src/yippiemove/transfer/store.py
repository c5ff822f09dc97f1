"""The engine's view of one connected account: a :class:`Store`.

In the spirit of mbsync's driver interface (``driver.h``: one table of operations, an
IMAP implementation in ``drv_imap.c``) and huey's storage backends, the transfer engine
talks to a ``Store`` -- list folders, list a folder's metadata, fetch bodies, append,
set flags, create and subscribe folders -- and never to sockets or to the IMAP
connection underneath.

* :class:`ImapStore` implements it on :class:`~yippiemove.imap.client.ImapClient`.
* :class:`GmailStore` adds the verbs of Gmail's IMAP extensions (X-GM-EXT-1: labels,
  X-GM-MSGID, ``UID COPY`` adding a label) that :mod:`yippiemove.transfer.gmail` uses.
* ``tests/transfer/memstore.py`` keeps a mailbox in memory behind the same interface,
  so the engine's matching, copy and verify run in tests without a server.

The source of a transfer is opened read-only (``connect_store(..., read_only=True)``,
which :class:`~yippiemove.transfer.pairs.Connector` does for the ``"source"`` role): its
connection refuses every verb that could change a mailbox -- SELECT included, EXAMINE
only -- before a byte is written (imap/commands.py ``READ_ONLY_VERBS``), so no engine
code path can write to it whatever it calls; :attr:`ImapStore.read_only` says so.

The operations are IMAP-shaped on purpose (UIDs, UIDVALIDITY, PERMANENTFLAGS, APPENDUID
answers): the engine's promises are stated in those terms, and a Store that hid them
would hide what the verification checks.  Pipelining stays visible too: ``submit_*``
send a command and return the future of its answer, so many can be in flight.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Awaitable, Callable, Sequence
from typing import Protocol, runtime_checkable

from ..imap import gmail as gm
from ..imap import utf7
from ..imap.client import (
    AppendItem,
    ImapClient,
    MailboxInfo,
    MessageMeta,
    NamespaceInfo,
    SelectInfo,
)
from ..imap.connection import CommandResult, ImapConnection
from ..imap.errors import (
    CommandError,
    ConnectError,
    ImapError,
    TokenRefused,
)
from ..policy import retry as retry_policy
from .model import Endpoint

__all__ = ["GmailStore", "ImapStore", "Store", "connect_store", "name_encoder", "open_store"]


@runtime_checkable
class Store(Protocol):
    """One connected account.  Folder names are the server's raw (modified UTF-7) bytes."""

    #: The folder selected now (raw name), or None.
    selected: bytes | None

    # -- the session
    @property
    def capabilities(self) -> frozenset[str]: ...
    def has(self, cap: str) -> bool: ...
    @property
    def closed(self) -> bool: ...
    @property
    def read_only(self) -> bool: ...
    @property
    def tls(self) -> bool: ...
    @property
    def greeted_in(self) -> float | None: ...
    def abort(self) -> None: ...
    def wire_out(self) -> tuple[int, int]: ...
    async def logout(self) -> None: ...
    async def submit_noop(self) -> asyncio.Future[CommandResult]: ...

    # -- folders
    async def namespace(self) -> NamespaceInfo: ...
    async def list_folders(self) -> list[MailboxInfo]: ...
    async def list_subscribed(self) -> list[MailboxInfo]: ...
    async def create(self, raw: bytes) -> None: ...
    async def submit_create(
        self, raw_name: bytes, special_use: str | None = None
    ) -> asyncio.Future[CommandResult]: ...
    async def submit_subscribe(self, raw_name: bytes) -> asyncio.Future[CommandResult]: ...
    async def select(self, raw: bytes, *, readonly: bool = False) -> SelectInfo: ...
    async def select_many(
        self, raws: Sequence[bytes], *, readonly: bool = False
    ) -> dict[bytes, SelectInfo | None]: ...
    async def status_many(
        self, raws: Sequence[bytes], items: str
    ) -> dict[bytes, dict[str, int]]: ...

    # -- messages of the selected folder
    async def select_and_list(
        self, raw: bytes, *, readonly: bool = False, message_id: bool = False
    ) -> tuple[SelectInfo, list[MessageMeta]]: ...
    async def reselect_and_fetch_meta(
        self, uids: str | None
    ) -> tuple[SelectInfo, list[MessageMeta]]: ...
    async def uid_search(self, criteria: Sequence[bytes | str]) -> list[int]: ...
    async def fetch_meta(
        self, uids: str = "1:*", *, message_id: bool = True
    ) -> list[MessageMeta]: ...
    async def fetch_sizes(self, uids: str = "1:*") -> list[tuple[int, int]]: ...
    async def fetch_message_ids(self, uids: Sequence[int]) -> dict[int, bytes | None]: ...
    async def submit_fetch_bodies(
        self, uids: Sequence[int], on_body: Callable[[int, bytes], None]
    ) -> asyncio.Future[CommandResult]: ...
    async def submit_append(
        self, raw_mailbox: bytes, items: Sequence[AppendItem]
    ) -> asyncio.Future[CommandResult]: ...
    async def store_flags(self, uid: int, flags: Sequence[str]) -> None: ...


def name_encoder(store: Store) -> Callable[[str], bytes]:
    """How ``store`` spells a new folder's name: :meth:`ImapClient.encode_name` (UTF-8
    after ``ENABLE UTF8=ACCEPT``, else modified UTF-7); a Store without it (a test's
    in-memory one): modified UTF-7."""
    enc = getattr(store, "encode_name", None)
    return enc if callable(enc) else utf7.encode


class ImapStore(ImapClient):
    """:class:`Store` on an IMAP connection: the client's verbs (pipelined ones
    included: ``submit_noop``, ``submit_create``, ``submit_subscribe``...), plus the
    session's state the engine needs (closed, TLS, time to greet) without reaching the
    socket."""

    @property
    def closed(self) -> bool:
        return self.conn.closed

    @property
    def read_only(self) -> bool:
        """Its connection refuses every command that could change a mailbox."""
        return self.conn.read_only

    @property
    def tls(self) -> bool:
        return bool(self.conn.tls)

    @property
    def greeted_in(self) -> float | None:
        return self.conn.greeted_in

    def wire_out(self) -> tuple[int, int]:
        """(bytes written, bytes the server has received) on this connection so far:
        how far a long APPEND has got (imap/connection.py ``bytes_delivered``)."""
        return self.conn.bytes_out, self.conn.bytes_delivered()

    def abort(self) -> None:
        self.conn.abort()

    async def list_subscribed(self) -> list[MailboxInfo]:
        return await self.list_mailboxes(subscribed=True)

    async def list_folders(self) -> list[MailboxInfo]:
        """LIST, with RFC 6154 attributes even from a server that only gives them when
        asked (LIST-EXTENDED ``RETURN (SPECIAL-USE)``, RFC 5258); Dovecot gives them in
        plain LIST."""
        boxes = await self.list_mailboxes()
        if any(m.special_use for m in boxes) or not (
            self.has("SPECIAL-USE") and self.has("LIST-EXTENDED")
        ):
            return boxes
        try:
            marked = await self.list_mailboxes(special_use=True)
        except CommandError as exc:
            if retry_policy.retryable(exc):
                raise  # a temporary refusal: plan again rather than without special folders
            return boxes
        attrs = {m.raw: m.special_use for m in marked}
        return [
            dataclasses.replace(m, flags=m.flags | attrs[m.raw]) if attrs.get(m.raw) else m
            for m in boxes
        ]


class GmailStore(ImapStore):
    """An :class:`ImapStore` on a server with Gmail's extensions (X-GM-EXT-1)."""

    async def fetch_labelled_meta(
        self, uids: Sequence[int] | str = "1:*"
    ) -> list[tuple[MessageMeta, frozenset[str]]]:
        return await gm.fetch_labelled_meta(self, uids)

    async def fetch_index(self, uids: Sequence[int] | str = "1:*") -> list[gm.IndexEntry]:
        return await gm.fetch_index(self, uids)

    async def fetch_msgids(self, uids: Sequence[int] | str = "1:*") -> dict[int, int]:
        return await gm.fetch_msgids(self, uids)

    async def copy_uids(self, uids: Sequence[int], mailbox: bytes) -> dict[int, int]:
        return await gm.copy_uids(self, uids, mailbox)


async def connect_store(
    ep: Endpoint,
    role: str,
    *,
    connect_timeout: float,
    idle_timeout: float,
    on_open: Callable[[], None] | None = None,
    read_only: bool = False,
    write_gate: Callable[[], Awaitable[None]] | None = None,
    abortive_close: bool = False,
) -> ImapStore:
    """Open and log in to one account; a :class:`GmailStore` when it is Gmail.
    ``on_open`` is called once the server has answered (before the login);
    ``read_only``: nothing can be written through it (the source; module doc);
    ``write_gate``: awaited before each command that may change a mailbox;
    ``abortive_close``: unsent bytes are dropped (a reset) unless LOGOUT was answered,
    also when the process dies (imap/connection.py).

    The one door to an account: every connection of a transfer -- the first, and each
    reconnect after a dropped connection -- is opened here, so each OAuth2 login takes
    a token that is valid now.  With ``ep.oauth`` the login is OAuth2
    (:meth:`ImapConnection.login_oauth2`) with ``await ep.oauth.access_token()``; when
    the server refuses that token (:class:`TokenRefused`: expired early, revoked...) a
    new one is asked for (``access_token(refresh=True)``) and the login is tried again
    on a new connection, once.  A second refusal, and :class:`ConsentRevoked` from the
    token source, are permanent (policy/retry.py: stop, no retry loop).
    """

    async def opened() -> ImapConnection:
        conn = await ImapConnection.open(
            ep.host,
            ep.port,
            security=ep.security,
            ssl_context=ep.ssl_context,
            timeout=connect_timeout,
            idle_timeout=idle_timeout,
            name=role,
            read_only=read_only,
            address=ep.address,
            abortive_close=abortive_close,
        )
        if on_open is not None:
            on_open()
        if not read_only:
            conn.write_gate = write_gate
        return conn

    conn = await opened()
    try:
        if ep.oauth is None:
            await conn.login(ep.user, ep.password, allow_insecure=ep.allow_insecure_auth)
        else:
            conn = await _login_oauth2(conn, ep, opened)
    except BaseException:
        conn.abort()
        raise
    kind = GmailStore if gm.CAPABILITY in conn.capabilities else ImapStore
    store = kind(conn)
    try:
        # RFC 6855: names as UTF-8 both ways (a destination then takes every name the
        # server can store, not only what modified UTF-7 spells); the source too, so
        # that a server never downgrades what it sends to a client that did not enable.
        await store.enable_utf8()
    except BaseException:
        conn.abort()
        raise
    return store


#: The usual name of :func:`connect_store` in the OAuth2 work (issue 16's contracts).
open_store = connect_store


async def _token(ep: Endpoint, *, refresh: bool) -> str:
    """An access token from ``ep.oauth``.  :class:`ConsentRevoked` and the IMAP layer's
    errors pass as they are; a failure that says it is transient (an OSError, a timeout,
    an exception with ``transient = True``: the token endpoint did not answer) becomes a
    :class:`ConnectError`, retried like a server that did not answer.  Only the error's
    type is kept: its text could hold what the token endpoint was sent."""
    assert ep.oauth is not None
    try:
        return await ep.oauth.access_token(refresh=refresh)
    except ImapError:
        raise
    except (OSError, TimeoutError) as exc:
        raise ConnectError(
            f"could not get an OAuth2 access token for {ep.user!r} "
            f"({type(exc).__name__}); the provider's token endpoint did not answer"
        ) from None
    except Exception as exc:
        if getattr(exc, "transient", False):
            raise ConnectError(
                f"could not get an OAuth2 access token for {ep.user!r} "
                f"({type(exc).__name__}); the provider's token endpoint failed"
            ) from None
        raise


async def _login_oauth2(
    conn: ImapConnection, ep: Endpoint, reopen: Callable[[], Awaitable[ImapConnection]]
) -> ImapConnection:
    """Log ``conn`` in with an access token; on a refusal, once more with a fresh token on
    a new connection (:func:`connect_store`).  Returns the logged-in connection (``conn``
    or the new one); on an error the new one is aborted here, ``conn`` by the caller."""
    insecure = ep.allow_insecure_auth
    try:
        await conn.login_oauth2(ep.user, await _token(ep, refresh=False), allow_insecure=insecure)
        return conn
    except TokenRefused as exc:
        if retry_policy.classify(exc).retry:
            raise  # "NO [UNAVAILABLE]"...: the server's trouble, not the token's
        first = exc
    conn.abort()
    token = await _token(ep, refresh=True)
    conn = await reopen()
    try:
        await conn.login_oauth2(ep.user, token, allow_insecure=insecure)
    except BaseException as exc:
        conn.abort()
        if not isinstance(exc, TokenRefused) or retry_policy.classify(exc).retry:
            raise
        again = f", status {first.status}" if first.status else ""
        raise TokenRefused(
            f"{exc}; that was a freshly issued token, after the first was refused too{again}. "
            f"Check that IMAP access is enabled for {ep.user!r} and that the sign-in was "
            "for this address and allowed mail access",
            exc.response,
            status=exc.status,
        ) from None
    return conn
