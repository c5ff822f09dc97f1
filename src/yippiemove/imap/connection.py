"""An asyncio IMAP client connection around the sans-IO core.

The command state (tags, the commands in flight, which command an untagged response
belongs to) lives in :class:`.commands.ClientState`; parsing in :mod:`.protocol`.  This
module keeps what needs I/O: the socket, TLS and STARTTLS, logging in, timeouts, write
gathering and flow control, and one future per command, resolved from the core's
events.

Many commands may be in flight at once (pipelining, RFC 3501 5.5): :meth:`submit`
writes a command immediately and returns a future for its completion; commands that
need untagged data (FETCH, LIST...) may pass ``on_untagged`` to stream it instead of
collecting it.

Literals are sent with LITERAL+ (RFC 7888) when the server offers it, those of up to
4096 bytes also with LITERAL- (Gmail); otherwise the
connection waits for the server's ``+`` before each literal; meanwhile later
commands queue behind it so that bytes of two commands never interleave.

``read_only=True`` (the source of a transfer) makes the command state refuse every verb
that could change a mailbox (:data:`.commands.READ_ONLY_VERBS`): :meth:`submit` raises
:class:`.errors.ReadOnlyViolation` before a byte of the command is written.

``write_gate`` (an async callable, or None) is awaited before every command that may
change a mailbox (:func:`.commands.changes_mailbox`): the service's job process fences
its destination writes with it (jobs/fence.py); an exception it raises stops the command
before a byte is written.

``abortive_close=True`` (the destination of a transfer) sets ``SO_LINGER`` {on, 0} on the
socket as it is made: when the connection is closed without a LOGOUT answered -- an
error, :meth:`abort`, or the process dying, SIGKILL included -- the kernel sends a reset
and drops whatever it had not sent yet, instead of delivering it later from an orphaned
socket (a killed job's APPEND data landing after another host took the job over:
docs/design.md "Fencing and checkpoints").  :meth:`logout` turns lingering back off once
the server answered LOGOUT (everything before it was delivered), so that a normal end is
an ordinary FIN.

OAuth2: :meth:`login_oauth2` logs in with an access token, by OAUTHBEARER (RFC 7628)
when the server offers it, else XOAUTH2; the SASL conversation itself is sans-IO
(:mod:`.sasl`).  A refused token raises :class:`.errors.TokenRefused`.

Secrets: the bytes of LOGIN/AUTHENTICATE (passwords, access tokens) are never logged
or put into exceptions; a server's refusal that repeats them is cut out of our message.
"""

from __future__ import annotations

import asyncio
import base64
import collections
import fcntl
import logging
import socket
import ssl
import struct
import sys
import termios
import time
from collections.abc import Awaitable, Callable

from .commands import (
    Broken,
    Bye,
    ClientState,
    Command,
    CommandResult,
    Completed,
    ContinuationRequest,
    Greeting,
    HandlerFailed,
    Unsolicited,
    UntaggedHandler,
    changes_mailbox,
)
from .errors import (
    AuthenticationError,
    CommandError,
    ConnectError,
    ConnectionLost,
    HostUnreachable,
    InsecureAuthError,
    ResponseTooLarge,
    TlsError,
    TokenRefused,
)
from .protocol import Literal, LiteralTooLarge, Tagged, Untagged, nonsync_limit, quote
from .sasl import OAuth2Exchange, SaslError, choose_mechanism

log = logging.getLogger(__name__)

__all__ = ["TRAFFIC", "CommandResult", "ImapConnection", "is_loopback"]

#: Bytes on the wire of every connection of this process, by connection name and
#: direction (``"source_in"``, ``"destination_out"``...; the name is the store's role).  A job
#: process reports them in its progress lines; its supervisor judges whether the servers
#: are alive by them, never by the job's own output (jobs/supervisor.py, "Fair share").
TRAFFIC: collections.Counter[str] = collections.Counter()

#: Commands larger than this are written in slices of _SLICE with flow control.
_CHUNKED_WRITE = 1 << 20
_SLICE = 256 * 1024
#: The largest plaintext of one TLS record (RFC 8446 5.1), and how much decrypted
#: plaintext is gathered before the parser is called (about one socket read).
_TLS_RECORD = 16 * 1024
_TLS_PLAIN_RUN = 256 * 1024


def _part_len(p: bytes | Literal) -> int:
    return len(p.data) if isinstance(p, Literal) else len(p)


def is_loopback(host: str) -> bool:
    """True for names and addresses of this machine's loopback interface."""
    if host in ("localhost", "localhost.localdomain") or host.endswith(".localhost"):
        return True
    import ipaddress

    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


class _Transport(asyncio.Protocol):
    """asyncio protocol glue: bytes from the socket go straight into the parser."""

    def __init__(self, conn: ImapConnection) -> None:
        self.conn = conn

    def data_received(self, data: bytes) -> None:
        self.conn._data_received(data)

    def connection_lost(self, exc: Exception | None) -> None:
        self.conn._connection_lost(exc)

    def pause_writing(self) -> None:
        self.conn._paused = True

    def resume_writing(self) -> None:
        self.conn._paused = False
        waiter, self.conn._drain_waiter = self.conn._drain_waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_result(None)


class ImapConnection:
    """One IMAP client connection.  Create with :meth:`open`."""

    def __init__(
        self,
        host: str,
        *,
        idle_timeout: float = 120.0,
        name: str = "imap",
        read_only: bool = False,
    ) -> None:
        self.host = host
        #: The server's port (set by :meth:`open`; OAUTHBEARER names it).
        self.port: int | None = None
        self.name = name
        self.capabilities: frozenset[str] = frozenset()
        self.idle_timeout = idle_timeout
        self.greeted_in: float | None = None
        self._state = ClientState(read_only=read_only)
        #: Awaited before each command that may change a mailbox (module doc).
        self.write_gate: Callable[[], Awaitable[None]] | None = None
        self._transport: asyncio.Transport | None = None
        self._closed_exc: Exception | None = None
        self._paused = False
        self._drain_waiter: asyncio.Future[None] | None = None
        self._continuation: asyncio.Future[bytes] | None = None
        self._send_lock = asyncio.Lock()
        #: The socket, once a command with a synchronizing literal was sent: each read
        #: then re-arms TCP_QUICKACK (see :meth:`_write_parts_sync`).
        self._quickack: socket.socket | None = None
        self._greeting: asyncio.Future[Untagged] | None = None
        self._last_rx = time.monotonic()
        self._watchdog: asyncio.TimerHandle | None = None
        #: Untagged data no command asked for (EXISTS, EXPUNGE, flag changes...).
        self.unsolicited: collections.deque[Untagged] = collections.deque(maxlen=1000)
        self._bye: Untagged | None = None
        self.bytes_in = 0
        self.bytes_out = 0
        self._rx_key, self._tx_key = f"{name}_in", f"{name}_out"
        self.tls = False
        self._tls_in: ssl.MemoryBIO | None = None
        self._tls_out: ssl.MemoryBIO | None = None
        self._tls_obj: ssl.SSLObject | None = None
        self._tls_waiter: asyncio.Future[None] | None = None
        self._handshaking = False
        #: The buffer TLS records are decrypted into (made at the handshake) and
        #: ``SSLObject``'s C ``read`` (see :meth:`_decrypt`).
        self._tls_view: memoryview | None = None
        self._tls_read: Callable[..., int] | None = None
        self._tls_write: Callable[[bytes], int] | None = None
        #: SO_LINGER {on, 0} is set on the socket (``open(abortive_close=True)``).
        self.abortive = False

    # ------------------------------------------------------------------ opening

    @classmethod
    async def open(
        cls,
        host: str,
        port: int,
        *,
        security: str = "starttls",
        ssl_context: ssl.SSLContext | None = None,
        timeout: float = 30.0,
        idle_timeout: float = 120.0,
        name: str = "imap",
        read_only: bool = False,
        address: str | None = None,
        abortive_close: bool = False,
    ) -> ImapConnection:
        """Connect and read the greeting.

        ``address``: connect to this (already resolved and checked) address instead of
        resolving ``host``; ``host`` is still the name TLS sends (SNI) and checks the
        certificate against (the service's egress check pins the address it checked).

        ``security``: ``"tls"`` (TLS from the first byte), ``"starttls"`` (STARTTLS when
        the server offers it), ``"require-starttls"`` (fail without it) or ``"none"``.
        ``read_only``: refuse every command that could change a mailbox (module doc).
        ``abortive_close``: a close without a LOGOUT answered resets the connection and
        drops unsent bytes, also when the process dies (module doc).
        """
        if security not in ("tls", "starttls", "require-starttls", "none"):
            raise ValueError(f"unknown security mode {security!r}")
        self = cls(host, idle_timeout=idle_timeout, name=name, read_only=read_only)
        self.port = port
        loop = asyncio.get_running_loop()
        ctx = ssl_context
        if ctx is None and security != "none":
            ctx = ssl.create_default_context()  # costly: docs/performance.md item 12
        self._greeting = loop.create_future()
        started = time.monotonic()
        try:
            async with asyncio.timeout(timeout):
                try:
                    transport, _ = await loop.create_connection(
                        lambda: _Transport(self), address or host, port
                    )
                except socket.gaierror as exc:
                    raise HostUnreachable(f"unknown host {host!r}: {exc.strerror}") from None
                except OSError as exc:
                    reason = exc.strerror or exc.__class__.__name__
                    raise HostUnreachable(f"cannot connect to {host}:{port}: {reason}") from None
                assert isinstance(transport, asyncio.Transport)
                self._transport = transport
                _tune_socket(transport)
                if abortive_close:
                    self.abortive = _set_linger(transport, True)
                if security == "tls":
                    assert ctx is not None
                    await self._tls_handshake(ctx, f"TLS with {host}:{port}")
                greeting = await self._greeting
                #: Seconds from connecting to the greeting: at least one round trip
                #: (TCP's handshake, then the greeting; TLS adds its own).
                self.greeted_in = time.monotonic() - started
                if greeting.kind == "BYE":
                    raise ConnectError(
                        f"{host}:{port} refused the connection: "
                        + greeting.text.decode("utf-8", "replace"),
                        greeting,
                    )
                if greeting.code is not None and greeting.code.name == "CAPABILITY":
                    self.capabilities = frozenset(
                        greeting.code.args.decode("latin-1").upper().split()
                    )
                else:
                    await self.refresh_capabilities()
                if security in ("starttls", "require-starttls"):
                    if "STARTTLS" in self.capabilities:
                        assert ctx is not None
                        await self._starttls(ctx)
                    elif security == "require-starttls":
                        raise TlsError(f"{host}:{port} does not offer STARTTLS")
        except TimeoutError:
            self.abort()
            raise ConnectError(f"no answer from {host}:{port} within {timeout:g} s") from None
        except BaseException:
            self.abort()
            raise
        self._arm_watchdog()
        return self

    async def _starttls(self, ctx: ssl.SSLContext) -> None:
        await self.execute("STARTTLS")
        # RFC 3501 6.2.1 / RFC 2595: discard anything the server sent before TLS.
        self._state.restart_stream()
        await self._tls_handshake(ctx, f"STARTTLS with {self.host}")
        await self.refresh_capabilities()

    async def _tls_handshake(self, ctx: ssl.SSLContext, what: str) -> None:
        """TLS over our own transport with ``ssl.SSLObject`` and memory BIOs.

        asyncio's own TLS transport costs about three times the CPU of the cipher on a
        bulk transfer (a Python state machine per record); here a record costs one C call
        to decrypt and the plaintext goes straight into the response parser.
        """
        incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
        obj = ctx.wrap_bio(incoming, outgoing, server_hostname=self.host)
        self._tls_in, self._tls_out, self._tls_obj = incoming, outgoing, obj
        self._tls_view = memoryview(bytearray(_TLS_PLAIN_RUN + _TLS_RECORD))
        c_obj = getattr(obj, "_sslobj", obj)
        self._tls_read = getattr(c_obj, "read", obj.read)
        self._tls_write = getattr(c_obj, "write", obj.write)
        self._handshaking = True
        loop = asyncio.get_running_loop()
        try:
            while True:
                try:
                    obj.do_handshake()
                    break
                except ssl.SSLWantReadError:
                    self._flush_tls()
                    self._tls_waiter = loop.create_future()
                    await self._tls_waiter
        except ssl.SSLError as exc:
            self.abort()
            raise TlsError(f"{what} failed: {_ssl_reason(exc)}") from None
        except ConnectionLost as exc:
            raise TlsError(f"{what} failed: {exc}") from None
        finally:
            self._tls_waiter = None
        self._flush_tls()
        self._handshaking = False
        self.tls = True
        if incoming.pending:
            self._decrypt()

    def _flush_tls(self) -> None:
        out = self._tls_out
        if out is not None and out.pending and self._transport is not None:
            data = out.read()
            self.bytes_out += len(data)
            TRAFFIC[self._tx_key] += len(data)
            self._transport.write(data)

    def _decrypt(self) -> None:
        """Decrypt every complete TLS record received; parse the plaintext in large runs.

        Servers send small records (Dovecot: ~4 kB, so ~100 per socket read), so the
        records are decrypted into one reused buffer and the parser gets a view of it
        per ~256 kB (it copies what it keeps): one parser call per socket read, no
        allocation per record and no copy of the plaintext to a bytes object.  The C
        method is called directly: ``SSLObject.read``'s Python wrapper was a tenth of
        the TLS cost (docs/performance.md item 26).
        """
        view = self._tls_view
        read = self._tls_read
        assert view is not None and read is not None
        full = len(view) - _TLS_RECORD
        pos = 0
        error: ConnectionLost | None = None
        while True:
            try:
                n = read(_TLS_RECORD, view[pos:])
            except ssl.SSLWantReadError:
                break
            except ssl.SSLZeroReturnError:
                error = ConnectionLost(f"connection to {self.host} closed by the server")
                break
            except ssl.SSLError as exc:
                error = ConnectionLost(f"TLS error from {self.host}: {_ssl_reason(exc)}")
                break
            if not n:
                break
            pos += n
            if pos >= full:
                self._plaintext_received(view[:pos])
                pos = 0
                if self._closed_exc is not None:
                    return
        if pos:
            self._plaintext_received(view[:pos])
        if error is not None and self._closed_exc is None:
            self._fail(error)

    async def refresh_capabilities(self) -> frozenset[str]:
        res = await self.execute("CAPABILITY")
        caps: set[str] = set()
        for u in res.untagged:
            if u.kind == "CAPABILITY":
                caps.update(c.upper() for c in u.data if isinstance(c, str))
        self.capabilities = frozenset(caps)
        return self.capabilities

    async def login(self, user: str, password: str, *, allow_insecure: bool = False) -> None:
        """Authenticate; refuses to send a password in the clear unless allowed.

        Uses AUTHENTICATE PLAIN (RFC 4616) with SASL-IR when offered, else LOGIN.
        Neither the password nor the command bytes appear in any error.
        """
        if not self.tls and not allow_insecure:
            raise InsecureAuthError(
                f"refusing to send the password for {user!r} to {self.host} without TLS "
                "(the server offers no TLS; pass --allow-insecure-auth to do it anyway)"
            )
        if "LOGINDISABLED" in self.capabilities and "AUTH=PLAIN" not in self.capabilities:
            raise AuthenticationError(f"{self.host} does not allow logging in (LOGINDISABLED)")
        try:
            if "AUTH=PLAIN" in self.capabilities and "SASL-IR" in self.capabilities:
                token = base64.b64encode(b"\0" + user.encode() + b"\0" + password.encode())
                res = await self.execute("AUTHENTICATE", "PLAIN", token, sensitive=True)
            else:
                res = await self.execute("LOGIN", quote(user), quote(password), sensitive=True)
        except CommandError as exc:
            said = _without(exc.server_text, password)
            raise AuthenticationError(
                f"{self.host} refused the login for {user!r}: {said}", exc.response
            ) from None
        await self._logged_in(res.tagged)

    async def _logged_in(self, tagged: Tagged) -> None:
        code = tagged.code
        if code is not None and code.name == "CAPABILITY":
            self.capabilities = frozenset(code.args.decode("latin-1").upper().split())
        else:
            await self.refresh_capabilities()

    async def login_oauth2(
        self, user: str, access_token: str, *, allow_insecure: bool = False
    ) -> None:
        """Authenticate with an OAuth2 access token: AUTHENTICATE OAUTHBEARER (RFC 7628)
        when the server offers ``AUTH=OAUTHBEARER``, else XOAUTH2 when it offers
        ``AUTH=XOAUTH2``, else :class:`AuthenticationError` naming both.  SASL-IR (RFC 4959)
        when offered, else the message goes after the server's first ``+``.

        A refused token raises :class:`TokenRefused` (``status`` from the server's error
        challenge, if any); a bearer token is a password for its lifetime, so it is not
        sent without TLS unless ``allow_insecure``.  The token appears in no error.
        """
        if not self.tls and not allow_insecure:
            raise InsecureAuthError(
                f"refusing to send an access token for {user!r} to {self.host} without TLS "
                "(the server offers no TLS; pass --allow-insecure-auth to do it anyway)"
            )
        mech = choose_mechanism(self.capabilities)
        if mech is None:
            raise AuthenticationError(
                f"{self.host} offers neither OAUTHBEARER nor XOAUTH2: it does not take "
                "OAuth2 access tokens"
            )
        exchange = OAuth2Exchange(
            mech,
            user,
            access_token,
            host=self.host,
            port=self.port,
            sasl_ir="SASL-IR" in self.capabilities,
        )
        tagged = await self._authenticate(exchange)
        if not tagged.ok:
            status = exchange.challenge.status if exchange.challenge is not None else None
            code = f"[{tagged.code.name}] " if tagged.code else ""
            said = _without(
                (tagged.status + " " + code + tagged.text.decode("utf-8", "replace")).strip(),
                access_token,
            )
            why = f" (status {status})" if status else ""
            if tagged.status == "BAD":  # our message was not understood: not the token
                raise AuthenticationError(
                    f"{self.host} rejected AUTHENTICATE {mech} for {user!r}: {said}", tagged
                )
            raise TokenRefused(
                f"{self.host} refused the OAuth2 access token for {user!r} ({mech}){why}: {said}",
                tagged,
                status=status,
            )
        await self._logged_in(tagged)

    async def _authenticate(self, exchange: OAuth2Exchange) -> Tagged:
        """Run one ``AUTHENTICATE`` conversation: write the command, answer each ``+``
        with what the (sans-IO) exchange says, return the tagged answer.  The command is
        in the command state as expecting a continuation from before its first byte is
        written, so a ``+`` is never taken for a protocol error."""
        if self._closed_exc is not None:
            raise self._lost()
        loop = asyncio.get_running_loop()
        async with self._send_lock:
            initial = exchange.initial
            args: tuple[str | bytes, ...] = (exchange.mechanism,)
            if initial is not None:
                args += (initial,)
            cmd, parts = self._state.send("AUTHENTICATE", *args)
            fut: asyncio.Future[CommandResult] = loop.create_future()
            cmd.waiter = fut
            while True:
                self._state.expect_continuation(cmd)
                self._continuation = cont = loop.create_future()
                self._write_parts(parts)
                waiter = asyncio.ensure_future(cont)
                try:
                    await asyncio.wait({waiter, fut}, return_when=asyncio.FIRST_COMPLETED)
                finally:
                    if not waiter.done():
                        waiter.cancel()
                    self._continuation = None
                if fut.done():
                    break
                text = waiter.result()  # ConnectionLost when the connection died
                try:
                    line = exchange.respond(text)
                except SaslError as exc:
                    self._fail(ConnectionLost(f"{self.host} broke the SASL exchange: {exc}"))
                    raise AuthenticationError(
                        f"{self.host} broke the AUTHENTICATE {exchange.mechanism} exchange: {exc}"
                    ) from None
                parts = [line + b"\r\n"]
        return (await fut).tagged

    # ------------------------------------------------------------------ commands

    async def execute(
        self,
        name: str,
        *args: bytes | str | int | Literal,
        on_untagged: UntaggedHandler | None = None,
        sensitive: bool = False,
        check: bool = True,
    ) -> CommandResult:
        """Send a command and wait for its completion; NO/BAD raise :class:`CommandError`."""
        fut = await self.submit(name, *args, on_untagged=on_untagged, sensitive=sensitive)
        res = await fut
        if check and not res.tagged.ok:
            raise CommandError(name if not sensitive else name.split()[0], res.tagged)
        return res

    async def submit(
        self,
        name: str,
        *args: bytes | str | int | Literal,
        on_untagged: UntaggedHandler | None = None,
        sensitive: bool = False,
    ) -> asyncio.Future[CommandResult]:
        """Write a command now (pipelined) and return a future for its result."""
        if self.write_gate is not None and changes_mailbox(name):
            await self.write_gate()
        if self._closed_exc is not None:
            raise self._lost()
        nonsync = nonsync_limit(self.capabilities)
        cmd, parts = self._state.send(name, *args, handler=on_untagged, nonsync_max=nonsync)
        fut: asyncio.Future[CommandResult] = asyncio.get_running_loop().create_future()
        cmd.waiter = fut
        sync_literals = any(isinstance(p, Literal) and len(p.data) > nonsync for p in parts)
        big = len(parts) > 1 and sum(map(_part_len, parts)) > _CHUNKED_WRITE
        if not sync_literals and not big and not self._send_lock.locked():
            self._write_parts(parts)
        else:
            async with self._send_lock:
                if sync_literals:
                    await self._write_parts_sync(parts, cmd, nonsync)
                else:
                    await self._write_chunked(parts)
        if self._paused:
            await self.drain()
        return fut

    def _write_parts(self, parts: list[bytes | Literal]) -> None:
        t = self._transport
        if t is None:
            raise ConnectionLost("not connected")
        if len(parts) == 1:
            data = parts[0].data if isinstance(parts[0], Literal) else parts[0]
        else:
            # One write per command: a syscall per segment costs more than the copy.
            data = b"".join(p.data if isinstance(p, Literal) else p for p in parts)
        if self._tls_write is not None:
            self._tls_write(data)
            data = self._tls_out.read()  # type: ignore[union-attr]
        self.bytes_out += len(data)
        TRAFFIC[self._tx_key] += len(data)
        t.write(data)

    async def _write_chunked(self, parts: list[bytes | Literal]) -> None:
        """Write a large command in slices, waiting for the socket between them.

        The transport then never buffers a whole multi-megabyte APPEND (memory stays
        bounded: a message is held once, by its owner); the send lock keeps other
        commands' bytes from interleaving.
        """
        # Small parts (a MULTIAPPEND of 256 small messages has 512) are gathered into
        # one write of up to a slice: a send() per part was a third of the writing CPU.
        batch: list[bytes | Literal] = []
        batched = 0
        for p in parts:
            data = p.data if isinstance(p, Literal) else p
            if len(data) <= _SLICE:
                batch.append(data)
                batched += len(data)
                if batched < _SLICE:
                    continue
                self._write_parts(batch)
                batch, batched = [], 0
            else:
                if batch:
                    self._write_parts(batch)
                    batch, batched = [], 0
                with memoryview(data) as view:
                    for i in range(0, len(data), _SLICE):
                        self._write_parts([view[i : i + _SLICE]])  # type: ignore[list-item]
                        if self._paused:
                            await self.drain()
            if self._paused:
                await self.drain()
        if batch:
            self._write_parts(batch)
            if self._paused:
                await self.drain()

    async def _write_parts_sync(
        self, parts: list[bytes | Literal], cmd: Command, nonsync: int
    ) -> None:
        """Send with synchronizing literals: wait for ``+`` before each literal of more
        than ``nonsync`` bytes (the others were announced as non-synchronizing).

        What follows a literal up to the next synchronizing one goes out in the same
        write as the literal (the command's tail, a short message's next literal...).
        Meanwhile every read ACKs at once (TCP_QUICKACK): a server that leaves Nagle's
        algorithm on holds its ``+`` for the next command until we ACK its tagged OK for
        the previous one, which Linux would otherwise delay by up to 40 ms because we
        have nothing to send while we wait for that ``+`` (docs/performance.md).
        """
        loop = asyncio.get_running_loop()
        fut = cmd.waiter
        if self._quickack is None and self._transport is not None:
            sock = self._transport.get_extra_info("socket")
            if sock is not None and _QUICKACK is not None:
                self._quickack = sock
        pending: list[bytes | Literal] = []
        for p in parts:
            if isinstance(p, Literal) and len(p.data) > nonsync:
                if pending:
                    self._write_parts(pending)
                    pending = []
                self._state.expect_continuation(cmd)
                self._continuation = loop.create_future()
                waiter = asyncio.ensure_future(self._continuation)
                done, _ = await asyncio.wait({waiter, fut}, return_when=asyncio.FIRST_COMPLETED)
                if waiter not in done:
                    waiter.cancel()
                    return  # the command was refused before its literal (e.g. TRYCREATE)
                self._continuation = None
                if len(p.data) > _SLICE:
                    await self._write_chunked([p])
                    continue
            pending.append(p)
        if pending:
            self._write_parts(pending)
        if self._paused:
            await self.drain()

    async def drain(self) -> None:
        """Wait until the transport's write buffer is below its high-water mark.

        Several tasks may wait at once; they share one future.
        """
        if self._closed_exc is not None:
            raise self._lost()
        if not self._paused:
            return
        if self._drain_waiter is None or self._drain_waiter.done():
            self._drain_waiter = asyncio.get_running_loop().create_future()
        await asyncio.shield(self._drain_waiter)

    def bytes_delivered(self) -> int:
        """Of :attr:`bytes_out`, the bytes the peer's TCP has acknowledged: what is still
        in the transport's buffer or the kernel's send queue (``SIOCOUTQ``: unsent and
        unacknowledged) is left out.  How far a long write has really got (the live
        progress of a large APPEND: jobs/progress.py); ``bytes_out`` where the kernel
        cannot say."""
        t = self._transport
        if t is None:
            return self.bytes_out
        queued = t.get_write_buffer_size()
        sock = t.get_extra_info("socket")
        if sock is not None and _OUTQ is not None:
            try:
                buf = fcntl.ioctl(sock.fileno(), _OUTQ, b"\0\0\0\0")
                queued += struct.unpack("i", buf)[0]
            except (OSError, ValueError):
                pass
        return max(0, self.bytes_out - queued)

    @property
    def read_only(self) -> bool:
        """Only commands that change no mailbox may be sent (fixed at creation)."""
        return self._state.read_only

    @property
    def in_flight(self) -> int:
        return self._state.in_flight

    # ------------------------------------------------------------------ receiving

    def _data_received(self, data: bytes) -> None:
        self._last_rx = time.monotonic()
        if self._quickack is not None:
            _ack_now(self._quickack)
        self.bytes_in += len(data)
        TRAFFIC[self._rx_key] += len(data)
        if self._tls_in is not None:
            self._tls_in.write(data)
            if self._handshaking:
                w = self._tls_waiter
                if w is not None and not w.done():
                    w.set_result(None)
                return
            self._decrypt()
            return
        self._plaintext_received(data)

    def _plaintext_received(self, data: bytes | memoryview) -> None:
        """Hand the bytes to the command state; act on its events."""
        for ev in self._state.receive_data(data):
            if isinstance(ev, Completed):
                fut = ev.command.waiter
                if fut is not None and not fut.done():
                    fut.set_result(ev.result)
            elif isinstance(ev, Unsolicited):
                self.unsolicited.append(ev.response)
            elif isinstance(ev, HandlerFailed):
                fut = ev.command.waiter
                if fut is not None and not fut.done():
                    fut.set_exception(ev.error)
            elif isinstance(ev, ContinuationRequest):
                c = self._continuation
                if c is not None and not c.done():
                    c.set_result(ev.text)
            elif isinstance(ev, Greeting):
                g = self._greeting
                if g is not None and not g.done():
                    g.set_result(ev.response)
            elif isinstance(ev, Bye):
                # The connection ends next; pending commands fail when it does.
                self._bye = ev.response
            else:
                assert isinstance(ev, Broken)
                too_large = isinstance(ev.error, LiteralTooLarge)
                self._fail(
                    (ResponseTooLarge if too_large else ConnectionLost)(f"{self.host} {ev.reason}")
                )
                return

    def _connection_lost(self, exc: Exception | None) -> None:
        bye = self._bye
        if bye is not None:
            reason = "server said BYE: " + bye.text.decode("utf-8", "replace")
        elif exc is not None:
            reason = f"connection to {self.host} lost: {exc}"
        else:
            reason = f"connection to {self.host} closed by the server"
        self._fail(ConnectionLost(reason, bye))

    def _lost(self) -> ConnectionLost:
        """A fresh error for a command on a connection that is already gone (why it went,
        with the server's BYE when there was one)."""
        exc = self._closed_exc
        return ConnectionLost(str(exc), getattr(exc, "response", None))

    def _fail(self, exc: Exception) -> None:
        if self._closed_exc is None:
            self._closed_exc = exc
        if self._transport is not None:
            self._transport.abort()
        for cmd in self._state.abandon():
            fut = cmd.waiter
            if fut is not None and not fut.done():
                fut.set_exception(exc)
                fut.exception()  # mark retrieved: callers may have gone
        for fut in (self._greeting, self._continuation, self._drain_waiter, self._tls_waiter):
            if fut is not None and not fut.done():
                fut.set_exception(exc)
                fut.exception()
        if self._watchdog is not None:
            self._watchdog.cancel()

    def _arm_watchdog(self) -> None:
        loop = asyncio.get_running_loop()
        interval = max(0.05, min(5.0, self.idle_timeout / 4))

        def check() -> None:
            if self._closed_exc is not None:
                return
            idle = time.monotonic() - self._last_rx
            if self._state.in_flight and idle > self.idle_timeout:
                self._fail(
                    ConnectionLost(f"no answer from {self.host} for {self.idle_timeout:g} s")
                )
                return
            if not self._state.in_flight:
                self._last_rx = time.monotonic()
            self._watchdog = loop.call_later(interval, check)

        self._watchdog = loop.call_later(interval, check)

    # ------------------------------------------------------------------ closing

    @property
    def closed(self) -> bool:
        return self._closed_exc is not None

    async def logout(self, timeout: float = 5.0) -> None:
        """Say LOGOUT politely, then close; never raises."""
        if self._closed_exc is None:
            try:
                async with asyncio.timeout(timeout):
                    await self.execute("LOGOUT", check=False)
            except Exception:
                pass
            else:
                # Answered: the server has read everything we sent before LOGOUT, so
                # nothing unsent is left to drop; end with an ordinary FIN.
                if self.abortive and self._transport is not None:
                    self.abortive = not _set_linger(self._transport, False)
        self.abort()

    def abort(self) -> None:
        if self._closed_exc is None:
            self._fail(ConnectionLost("connection closed by us"))
        elif self._transport is not None:
            self._transport.abort()


def _without(text: str, secret: str) -> str:
    """A server's words with ``secret`` cut out (a server that repeats what it was sent
    must not put a password or a token into our errors)."""
    return text.replace(secret, "[redacted]") if len(secret) >= 4 else text


def _tune_socket(transport: asyncio.Transport) -> None:
    sock = transport.get_extra_info("socket")
    if sock is None:
        return
    try:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    except OSError:
        pass


#: struct linger {l_onoff, l_linger}: on with 0 seconds = close() resets the connection.
_LINGER_RESET = struct.pack("ii", 1, 0)
_LINGER_OFF = struct.pack("ii", 0, 0)


def _set_linger(transport: asyncio.Transport, reset: bool) -> bool:
    """SO_LINGER {on, 0} (``reset``) or off on the transport's socket; True if set."""
    sock = transport.get_extra_info("socket")
    if sock is None:
        return False
    try:
        sock.setsockopt(
            socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_RESET if reset else _LINGER_OFF
        )
    except OSError:
        return False
    return True


_QUICKACK: int | None = getattr(socket, "TCP_QUICKACK", None)  # Linux only
#: SIOCOUTQ (= TIOCOUTQ): the bytes of a TCP socket's send queue, not yet acknowledged.
_OUTQ: int | None = getattr(termios, "TIOCOUTQ", None) if sys.platform == "linux" else None


def _ack_now(sock: socket.socket) -> None:
    """ACK what was received now rather than after the delayed-ACK timer (Linux)."""
    try:
        sock.setsockopt(socket.IPPROTO_TCP, _QUICKACK, 1)  # type: ignore[arg-type]
    except OSError:
        pass


def _ssl_reason(exc: ssl.SSLError) -> str:
    if isinstance(exc, ssl.SSLCertVerificationError):
        return f"certificate verification failed ({exc.verify_message})"
    return exc.reason or str(exc)
