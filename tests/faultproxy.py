"""A fault-injecting TCP proxy between an IMAP client (the mover) and a real server.

It forwards bytes both ways and, on a schedule fixed in advance per connection (the
n-th connection the proxy accepts gets ``schedule[n]``), injects faults:

* ``Fault.cut(at, direction)``: forward exactly ``at`` bytes of that direction's stream,
  then reset both sides;
* ``Fault.cut_in_literal(n, direction, match=...)``: cut in the middle of the n-th
  literal (of a command or response whose first line contains ``match``): mid-FETCH
  body (``"s2c"``), mid-APPEND message (``"c2s"``);
* ``Fault.cut_after_append(nth)``: forward the n-th APPEND completely, then cut when
  the server's tagged answer to it comes, before it is forwarded (nobody knows whether
  the message was stored: it was);
* ``Fault.stall(...)``: stop forwarding both ways and keep the connection open
  (for ``seconds``, or until the client gives up), at a byte offset or after a command;
* ``Fault.throttle(rate)``: the connection runs at ``rate`` bytes per second each way;
* ``Fault.answer(verb, text, nth)``: the n-th command with that verb never reaches the
  server; the client gets ``<tag> <text>`` instead (e.g. ``NO [UNAVAILABLE] ...``,
  Microsoft's throttling ``BAD``, Gmail's ``NO [ALERT] Too many simultaneous
  connections`` at login: verb ``"LOGIN|AUTHENTICATE"``);
* ``Fault.bye(verb, text, nth)``: the n-th such command is dropped and the client gets
  ``* BYE <text>`` and a closed connection (verb ``"GREETING"``: instead of the greeting).

Streams are followed by a small scanner, not a parser: lines, and literals announced by
``{N}`` / ``{N+}`` at the end of a line, so that literal bytes are never taken for
commands or answers, and injected answers go between two responses.  Commands are told
apart by tag and verb (``UID FETCH`` is one verb).  Plain text only: run the mover with
``--no-starttls``.

Everything that was injected is recorded in :attr:`FaultProxy.injected` (never any
command's arguments: LOGIN's hold a password).  :func:`random_schedule` makes a seeded
random schedule for the fault campaign.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import re
import socket
import threading
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from types import TracebackType

__all__ = [
    "GMAIL_BANDWIDTH",
    "GMAIL_TOO_MANY",
    "LIMIT",
    "OVERQUOTA",
    "SERVERBUG",
    "UNAVAILABLE",
    "Fault",
    "FaultProxy",
    "Injected",
    "ms_throttled",
    "random_fault",
    "random_schedule",
]

# Server answers, as providers word them.
UNAVAILABLE = "NO [UNAVAILABLE] Temporary System Error"
SERVERBUG = "NO [SERVERBUG] Internal error occurred. Refer to server log for more information."
OVERQUOTA = "NO [OVERQUOTA] Quota exceeded (mailbox for user is full)"
LIMIT = "NO [LIMIT] Mail size is too large"
GMAIL_TOO_MANY = "NO [ALERT] Too many simultaneous connections. (Failure)"
GMAIL_BANDWIDTH = "NO [OVERQUOTA] Account exceeded command or bandwidth limits. (Failure)"


def ms_throttled(ms: int, status: str = "BAD") -> str:
    """Exchange Online's throttling answer (it comes as BAD, sometimes NO)."""
    return f"{status} Request is throttled. Suggested Backoff Time: {ms} milliseconds"


@dataclass(frozen=True)
class Fault:
    """One fault for one connection; build with the static methods."""

    kind: str  # cut | cut_literal | cut_after_append | stall | throttle | answer | bye
    direction: str = "s2c"  # "s2c" (server to client) | "c2s"
    at: int | None = None  # byte offset in ``direction``'s stream
    verb: str | None = None  # "APPEND", "UID FETCH", "LOGIN|AUTHENTICATE", "GREETING"
    nth: int = 1  # the n-th command with ``verb`` / the n-th matching literal
    match: bytes | None = None  # the command's (or literal's response's) first line has it
    text: str = ""  # answer (without tag) or BYE text
    rate: int = 0  # bytes per second
    seconds: float | None = None  # stall length; None: until the client gives up
    frac: float = 0.5  # where in the literal to cut

    @staticmethod
    def cut(at: int, direction: str = "s2c") -> Fault:
        return Fault("cut", direction=direction, at=at)

    @staticmethod
    def cut_in_literal(
        nth: int = 1, direction: str = "s2c", match: bytes | None = None, frac: float = 0.5
    ) -> Fault:
        return Fault("cut_literal", direction=direction, nth=nth, match=match, frac=frac)

    @staticmethod
    def cut_after_append(nth: int = 1) -> Fault:
        return Fault("cut_after_append", verb="APPEND", nth=nth)

    @staticmethod
    def stall(
        *,
        at: int | None = None,
        direction: str = "s2c",
        verb: str | None = None,
        nth: int = 1,
        match: bytes | None = None,
        seconds: float | None = None,
    ) -> Fault:
        """At byte ``at`` of ``direction``, or right after the n-th ``verb`` command."""
        return Fault(
            "stall", direction=direction, at=at, verb=verb, nth=nth, match=match, seconds=seconds
        )

    @staticmethod
    def throttle(rate: int) -> Fault:
        return Fault("throttle", rate=rate)

    @staticmethod
    def answer(verb: str, text: str, nth: int = 1, match: bytes | None = None) -> Fault:
        return Fault("answer", verb=verb, text=text, nth=nth, match=match)

    @staticmethod
    def bye(verb: str, text: str, nth: int = 1) -> Fault:
        return Fault("bye", verb=verb, text=text, nth=nth)

    def verbs(self) -> tuple[str, ...]:
        return tuple(v.strip().upper() for v in (self.verb or "").split("|") if v.strip())


@dataclass(frozen=True)
class Injected:
    """A fault that happened: on which connection (0-based), what, and when."""

    conn: int
    kind: str
    detail: str
    t: float  # time.monotonic()


Schedule = Mapping[int, Sequence[Fault]] | Callable[[int], Sequence[Fault]]


# ---------------------------------------------------------------------- the scanner

_LITERAL = re.compile(rb"~?\{(\d+)(\+)?\}\r?\n\Z")


@dataclass
class _Segment:
    kind: str  # "line" | "literal"
    data: bytes
    head: bytes  # first line of the command/response this belongs to
    first: bool = False  # the first line of a command/response
    last: bool = False  # the command/response ends here
    sync: bool = False  # a line announcing a synchronizing literal
    lit_size: int = 0
    lit_offset: int = 0  # where in its literal this chunk starts


class _Scanner:
    """Splits a stream into whole lines and literal chunks, never looking into literals."""

    def __init__(self) -> None:
        self.buf = bytearray()
        self.lit_left = 0
        self.lit_size = 0
        self.in_message = False
        self.head = b""

    def cancel_literal(self) -> None:
        """The announced synchronizing literal will not come (the server refused it)."""
        if self.lit_left == self.lit_size:
            self.lit_left = self.lit_size = 0
            self.in_message = False

    def feed(self, data: bytes) -> list[_Segment]:
        out: list[_Segment] = []
        pos, end = 0, len(data)
        while pos < end:
            if self.lit_left:
                n = min(self.lit_left, end - pos)
                off = self.lit_size - self.lit_left
                self.lit_left -= n
                out.append(
                    _Segment(
                        "literal",
                        data[pos : pos + n],
                        self.head,
                        lit_size=self.lit_size,
                        lit_offset=off,
                    )
                )
                pos += n
                continue
            nl = data.find(b"\n", pos)
            if nl < 0:
                self.buf += data[pos:]
                break
            line = bytes(self.buf) + data[pos : nl + 1]
            self.buf.clear()
            pos = nl + 1
            first = not self.in_message
            if first:
                self.head = line
            m = _LITERAL.search(line)
            if m is not None:
                self.lit_size = self.lit_left = int(m.group(1))
                self.in_message = True
                out.append(_Segment("line", line, self.head, first, False, m.group(2) is None))
            else:
                self.in_message = False
                out.append(_Segment("line", line, self.head, first, True))
        return out


def _tag_and_verb(line: bytes) -> tuple[bytes, str]:
    parts = line.split(None, 3)
    if len(parts) < 2:
        return (parts[0] if parts else b""), ""
    verb = parts[1].decode("ascii", "replace").upper()
    if verb == "UID" and len(parts) > 2:
        verb = "UID " + parts[2].decode("ascii", "replace").upper()
    return parts[0], verb


# ---------------------------------------------------------------------- one connection


class _Link:
    def __init__(
        self,
        proxy: FaultProxy,
        index: int,
        faults: Sequence[Fault],
        client: tuple[asyncio.StreamReader, asyncio.StreamWriter],
        server: tuple[asyncio.StreamReader, asyncio.StreamWriter],
    ) -> None:
        self.proxy = proxy
        self.index = index
        self.faults = list(faults)
        self.cr, self.cw = client
        self.sr, self.sw = server
        self.c2s = _Scanner()
        self.s2c = _Scanner()
        self.sent = {"c2s": 0, "s2c": 0}
        self.verbs: Counter[str] = Counter()
        self.literal_hits: Counter[int] = Counter()  # per fault index
        self.command_hits: Counter[int] = Counter()  # per fault index
        self.dead = False
        self.greeted = False
        self.s2c_mid = False  # forwarded server bytes end inside a response
        self.injections: list[tuple[bytes, bool]] = []  # (bytes, close after) to send
        self.swallow: tuple[bytes, Fault] | None = None
        self.await_tag: dict[bytes, Fault] = {}
        self.sync_tag: bytes | None = None  # command waiting for its literal's "+"
        self.unstalled = asyncio.Event()
        self.unstalled.set()
        self.stalled_forever = False  # read and drop both ways until the client leaves
        self.draining = False  # BYE said: read and drop until the client leaves
        self.pending_after: Fault | None = None  # acts when the current command ends
        self.current: tuple[bytes, str] = (b"", "")
        self.rate = max((f.rate for f in self.faults if f.kind == "throttle"), default=0)
        if self.rate:
            self.record("throttle", f"{self.rate} bytes/s")
            # Like a link, not a bottomless buffer: the client's bytes wait in a
            # receive buffer of about a quarter second (the kernel's, autotuned on
            # loopback, would take megabytes and acknowledge them long before they
            # cross; the client's view of what was delivered would run ahead).
            sock = self.cw.get_extra_info("socket")
            if sock is not None:
                with contextlib.suppress(OSError):
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, max(8192, self.rate // 8))

    # ---------------------------------------------------------------- helpers

    def record(self, kind: str, detail: str) -> None:
        self.proxy._record(Injected(self.index, kind, detail, time.monotonic()))

    def cut(self, why: str) -> None:
        if not self.dead:
            self.record("cut", why)
        self.dead = True
        for w in (self.cw, self.sw):
            with contextlib.suppress(Exception):
                w.transport.abort()

    def close(self) -> None:
        self.dead = True
        for w in (self.cw, self.sw):
            with contextlib.suppress(Exception):
                w.close()

    def stall(self, fault: Fault, where: str) -> None:
        """Stop forwarding.  For good: both sides are still read (and dropped) so that
        the client giving up closes the server side too; for a while: held."""
        if not self.unstalled.is_set() or self.stalled_forever:
            return
        how = f"{fault.seconds:g} s" if fault.seconds is not None else "until the client gives up"
        self.record("stall", f"{where}, {how}")
        if fault.seconds is None:
            self.stalled_forever = True
            return
        self.unstalled.clear()
        asyncio.get_running_loop().call_later(fault.seconds, self.unstalled.set)

    async def write(self, direction: str, data: bytes) -> None:
        if self.stalled_forever or self.dead:
            return
        w = self.sw if direction == "c2s" else self.cw
        if not self.rate:
            w.write(data)
            await w.drain()
            return
        step = max(1, self.rate // 20)
        for i in range(0, len(data), step):
            piece = data[i : i + step]
            w.write(piece)
            await w.drain()
            await asyncio.sleep(len(piece) / self.rate)
            if self.dead:
                return

    async def forward(self, direction: str, seg: _Segment) -> None:
        """Forward one segment, cutting or stalling inside it when a fault says so."""
        data = seg.data
        start = self.sent[direction]
        stop_at: int | None = None  # bytes of this segment to forward before the fault
        action: tuple[str, Fault] | None = None
        for i, f in enumerate(self.faults):
            if f.direction != direction:
                continue
            if f.kind in ("cut", "stall") and f.at is not None and f.verb is None:
                if start <= f.at < start + len(data) or (f.at == start and not data):
                    k = f.at - start
                    if stop_at is None or k < stop_at:
                        stop_at, action = k, (f.kind, f)
            elif f.kind == "cut_literal" and seg.kind == "literal":
                if f.match is not None and f.match not in seg.head:
                    continue
                if seg.lit_offset == 0:
                    self.literal_hits[i] += 1
                if self.literal_hits[i] != f.nth:
                    continue
                target = min(seg.lit_size - 1, int(seg.lit_size * f.frac))
                if seg.lit_offset <= target < seg.lit_offset + len(data):
                    k = target - seg.lit_offset
                    if stop_at is None or k < stop_at:
                        stop_at, action = k, ("cut_literal", f)
        if action is None:
            await self.write(direction, data)
            self.sent[direction] += len(data)
            return
        assert stop_at is not None
        if stop_at:
            await self.write(direction, data[:stop_at])
            self.sent[direction] += stop_at
        kind, f = action
        where = f"{direction} byte {self.sent[direction]}"
        if kind == "cut_literal":
            verb = _tag_and_verb(seg.head)[1] if direction == "c2s" else "response"
            self.cut(
                f"{where}, byte {stop_at + seg.lit_offset} of a {seg.lit_size}-byte literal "
                f"({verb}: {_describe(seg.head, direction)})"
            )
        elif kind == "cut":
            self.cut(where)
        else:
            self.stall(f, where)
            if self.stalled_forever:
                return
            await self.unstalled.wait()
            rest = data[stop_at:]
            if rest and not self.dead:
                await self.write(direction, rest)
                self.sent[direction] += len(rest)

    def inject(self, data: bytes, close_after: bool = False) -> None:
        """Send bytes of our own to the client between two server responses."""
        self.injections.append((data, close_after))
        if not self.s2c_mid:
            self.flush_injections()

    def flush_injections(self) -> None:
        while self.injections and not self.dead:
            data, close_after = self.injections.pop(0)
            self.cw.write(data)
            if close_after:
                self.hang_up()

    def hang_up(self) -> None:
        """Like a server that said BYE: the server side is gone, the client gets end of
        file after the BYE, and what it still sends is read and dropped until it closes
        (closing at once could reset the connection before the client read the BYE)."""
        self.draining = True
        with contextlib.suppress(Exception):
            self.cw.write_eof()
        with contextlib.suppress(Exception):
            self.sw.transport.abort()

    # ---------------------------------------------------------------- pumps

    def verb_fault(self, tag: bytes, verb: str, line: bytes) -> Fault | None:
        """The fault for this command, if it is the n-th one a fault is waiting for
        (counting the commands with the fault's verb whose line has its ``match``)."""
        self.verbs[verb] += 1
        hit: Fault | None = None
        for i, f in enumerate(self.faults):
            if f.kind not in ("answer", "bye", "cut_after_append", "stall"):
                continue
            if verb not in f.verbs() or (f.match is not None and f.match not in line):
                continue
            self.command_hits[i] += 1
            if self.command_hits[i] == f.nth and hit is None:
                hit = f
        return hit

    async def client_to_server(self) -> None:
        while not self.dead:
            data = await self.cr.read(1 << 16)
            if not data:
                break
            if self.stalled_forever or self.draining:
                continue
            if not self.unstalled.is_set():
                # Stalled: hold what comes, notice the client giving up (EOF).
                held = [data]
                while not self.unstalled.is_set() and not self.dead:
                    more = asyncio.ensure_future(self.cr.read(1 << 16))
                    waiter = asyncio.ensure_future(self.unstalled.wait())
                    done, _ = await asyncio.wait({more, waiter}, return_when="FIRST_COMPLETED")
                    if more in done:
                        chunk = more.result()
                        if not chunk:
                            waiter.cancel()
                            self.close()
                            return
                        held.append(chunk)
                    else:
                        more.cancel()
                    waiter.cancel()
                data = b"".join(held)
            for seg in self.c2s.feed(data):
                if self.dead:
                    return
                await self.client_segment(seg)
        self.close()

    async def client_segment(self, seg: _Segment) -> None:
        if seg.kind == "line" and seg.first:
            tag, verb = _tag_and_verb(seg.data)
            f = self.verb_fault(tag, verb, seg.data)
            if f is not None and f.kind in ("answer", "bye"):
                self.swallow = (tag, f)
            else:
                self.pending_after = f
            self.current = (tag, verb)
        if self.swallow is not None:
            tag, f = self.swallow
            if seg.last or seg.sync:
                if seg.sync and not seg.last:
                    self.c2s.cancel_literal()  # the client waits for "+": it never comes
                self.swallow = None
                verb = _tag_and_verb(seg.head)[1]
                if f.kind == "answer":
                    self.record("answer", f"{verb} #{f.nth}: {tag.decode()} {f.text}")
                    self.inject(tag + b" " + f.text.encode() + b"\r\n")
                else:
                    self.record("bye", f"{verb} #{f.nth}: * BYE {f.text}")
                    self.inject(b"* BYE " + f.text.encode() + b"\r\n", close_after=True)
            return
        if seg.kind == "line" and seg.sync and not seg.last:
            self.sync_tag = _tag_and_verb(seg.head)[0]
        await self.forward("c2s", seg)
        if seg.last and self.pending_after is not None:
            f, self.pending_after = self.pending_after, None
            tag, verb = self.current
            if f.kind == "cut_after_append":
                self.await_tag[tag] = f
            elif f.kind == "stall":
                self.stall(f, f"after {verb} #{f.nth}")

    async def server_to_client(self) -> None:
        while not self.dead:
            await self.unstalled.wait()
            data = await self.sr.read(1 << 16)
            if not data:
                break
            if self.stalled_forever:
                continue
            for seg in self.s2c.feed(data):
                if self.dead:
                    return
                await self.unstalled.wait()
                if not self.greeted:
                    self.greeted = True
                    g = [f for f in self.faults if f.kind == "bye" and "GREETING" in f.verbs()]
                    if g:
                        self.record("bye", f"instead of the greeting: * BYE {g[0].text}")
                        self.cw.write(b"* BYE " + g[0].text.encode() + b"\r\n")
                        self.close()
                        return
                if seg.kind == "line" and seg.first:
                    tag = seg.data.split(None, 1)[0] if seg.data.strip() else b""
                    if tag in self.await_tag:
                        self.cut(
                            f"after APPEND #{self.await_tag[tag].nth} was sent in full, "
                            f"before the server's answer ({_describe(seg.data, 's2c')})"
                        )
                        return
                    if self.sync_tag is not None and tag == b"+":
                        self.sync_tag = None  # go ahead: the literal comes
                    elif self.sync_tag is not None and tag == self.sync_tag:
                        self.c2s.cancel_literal()  # refused before its literal
                        self.sync_tag = None
                if self.draining:
                    return
                self.s2c_mid = True
                await self.forward("s2c", seg)
                self.s2c_mid = not seg.last
                if not self.s2c_mid:
                    self.flush_injections()
        if not self.draining:
            self.close()

    async def run(self) -> None:
        tasks = [
            asyncio.ensure_future(self.client_to_server()),
            asyncio.ensure_future(self.server_to_client()),
        ]
        try:
            await asyncio.wait(tasks, return_when="FIRST_COMPLETED")
            # One side ended: the other ends when its socket closes; give it a moment to
            # pass on what is in flight (a server's last answer before closing).
            await asyncio.wait(tasks, timeout=2)
        finally:
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            if not self.dead:
                self.close()


def _describe(line: bytes, direction: str) -> str:
    """A first line for the record, without arguments that may be secret."""
    if direction == "c2s":
        tag, verb = _tag_and_verb(line)
        return f"{tag.decode('ascii', 'replace')} {verb}"
    text = line.decode("utf-8", "replace").strip()
    return text[:60]


# ---------------------------------------------------------------------- the proxy


class FaultProxy:
    """A proxy to ``target_port`` on 127.0.0.1, run in a thread; use as a context manager.

    ``schedule``: connection number (0-based, in order of acceptance) -> faults, as a
    mapping or a function.  :attr:`injected` records every fault that happened,
    :attr:`accepted` the time (monotonic) each connection was accepted.
    """

    def __init__(
        self,
        target_port: int,
        schedule: Schedule | None = None,
        *,
        target_host: str = "127.0.0.1",
    ) -> None:
        self.target_host = target_host
        self.target_port = target_port
        self.schedule: Schedule = schedule or {}
        self.injected: list[Injected] = []
        self.accepted: list[float] = []
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._server: asyncio.Server | None = None
        self._links: set[_Link] = set()
        self._accepting: set[asyncio.Task[None]] = set()
        self._port = 0

    @property
    def port(self) -> int:
        if not self._port:
            raise RuntimeError("the proxy is not running")
        return self._port

    @property
    def connections(self) -> int:
        return len(self.accepted)

    def faults_for(self, index: int) -> Sequence[Fault]:
        s = self.schedule
        if callable(s):
            return s(index)
        return s.get(index, ())

    def set_schedule(self, schedule: Schedule | None, *, renumber: bool = False) -> None:
        """New faults for the connections to come (``renumber``: count from 0 again)."""
        with self._lock:
            self.schedule = schedule or {}
            if renumber:
                self.accepted = []

    def _record(self, item: Injected) -> None:
        with self._lock:
            self.injected.append(item)

    def kinds(self) -> Counter[str]:
        with self._lock:
            return Counter(i.kind for i in self.injected)

    # ---------------------------------------------------------------- running

    def __enter__(self) -> FaultProxy:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def start(self) -> FaultProxy:
        ready = threading.Event()
        errors: list[BaseException] = []

        def main() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            try:
                self._server = loop.run_until_complete(
                    asyncio.start_server(self._accept, "127.0.0.1", 0)
                )
                self._port = self._server.sockets[0].getsockname()[1]
            except BaseException as exc:  # pragma: no cover - reported to start()
                errors.append(exc)
                ready.set()
                return
            ready.set()
            try:
                loop.run_forever()
            finally:
                loop.run_until_complete(loop.shutdown_asyncgens())
                loop.close()

        self._thread = threading.Thread(target=main, name="faultproxy", daemon=True)
        self._thread.start()
        ready.wait(10)
        if errors:
            raise errors[0]
        return self

    def stop(self) -> None:
        loop = self._loop
        if loop is None or self._thread is None:
            return

        async def shutdown() -> None:
            if self._server is not None:
                self._server.close()
            for link in list(self._links):
                link.close()
            await asyncio.sleep(0)
            # Links still running end here, not when the loop is gone (an "Event loop
            # is closed" error in a coroutine collected later, during another test).
            tasks = [t for t in self._accepting if not t.done()]
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

        with contextlib.suppress(Exception):
            asyncio.run_coroutine_threadsafe(shutdown(), loop).result(5)
        loop.call_soon_threadsafe(loop.stop)
        self._thread.join(10)
        self._loop = None
        self._thread = None

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._accepting.add(task)
            task.add_done_callback(self._accepting.discard)
        with self._lock:
            index = len(self.accepted)
            self.accepted.append(time.monotonic())
        faults = self.faults_for(index)
        try:
            up = await asyncio.open_connection(self.target_host, self.target_port)
        except OSError:
            writer.transport.abort()
            return
        link = _Link(self, index, faults, (reader, writer), up)
        self._links.add(link)
        try:
            await link.run()
        finally:
            self._links.discard(link)


# ---------------------------------------------------------------------- campaigns


#: Fault kinds of a random schedule, with their weights.
KINDS: dict[str, int] = {
    "cut_s2c": 4,  # anywhere in what the server sends (FETCH bodies are most of it)
    "cut_c2s": 3,  # anywhere in what the client sends (APPEND literals are most of it)
    "cut_fetch_literal": 2,
    "cut_append_literal": 2,
    "cut_after_append": 3,
    "stall": 1,
    "bye": 2,
    "unavailable": 2,
    "serverbug": 1,
    "ms_throttled": 2,
    "too_many": 1,
    "throttle": 1,
    "overquota": 1,  # permanent: the transfer must stop, a re-run completes it
}


#: Commands each kind of connection sends: the planning connections (LIST, counts,
#: CREATE...) and the folder workers' (the source is only read: EXAMINE).
VERBS = {
    ("src", True): ["LIST", "LSUB", "NAMESPACE", "EXAMINE", "STATUS", "LOGIN|AUTHENTICATE"],
    ("dst", True): ["LIST", "LSUB", "NAMESPACE", "SELECT", "CREATE", "SUBSCRIBE"],
    ("src", False): ["EXAMINE", "UID FETCH", "UID FETCH", "LOGIN|AUTHENTICATE"],
    ("dst", False): ["SELECT", "APPEND", "APPEND", "UID FETCH", "LOGIN|AUTHENTICATE"],
}
#: Faults that only make sense where message bodies flow.
_ONLY = {
    "cut_fetch_literal": ("src", False),
    "cut_append_literal": ("dst", False),
    "cut_after_append": ("dst", False),
    "overquota": ("dst", False),
}


def random_fault(
    rng: random.Random,
    *,
    side: str = "src",
    planning: bool = False,
    stream_bytes: int,
    command_bytes: int = 600,
) -> tuple[str, Fault]:
    """One random fault for a connection to the ``side`` ("src" or "dst") account: the
    planning connection, or a folder worker's.

    The message bytes flow server to client on the source, client to server on the
    destination: about ``stream_bytes`` that way, ``command_bytes`` the other way.
    """
    where = (side, planning)
    kinds = [k for k in KINDS if _ONLY.get(k, where) == where]
    kind = rng.choices(kinds, weights=[KINDS[k] for k in kinds])[0]
    big = "s2c" if side == "src" else "c2s"

    def at(direction: str) -> int:
        n = stream_bytes if direction == big else command_bytes
        return rng.randrange(0, max(1, n))

    nth = rng.choice([1, 1, 1, 2, 3])
    verb = rng.choice(VERBS[where])
    if kind == "cut_s2c":
        return kind, Fault.cut(at("s2c"), "s2c")
    if kind == "cut_c2s":
        return kind, Fault.cut(at("c2s"), "c2s")
    if kind == "cut_fetch_literal":
        return kind, Fault.cut_in_literal(nth, "s2c", match=b"BODY[] {", frac=rng.random())
    if kind == "cut_append_literal":
        return kind, Fault.cut_in_literal(nth, "c2s", match=b"APPEND", frac=rng.random())
    if kind == "cut_after_append":
        return kind, Fault.cut_after_append(nth)
    if kind == "stall":
        direction = rng.choice(["s2c", "c2s"])
        if rng.random() < 0.5:
            return kind, Fault.stall(verb=verb, nth=nth)
        return kind, Fault.stall(at=at(direction), direction=direction)
    if kind == "bye":
        return kind, Fault.bye(verb, "[UNAVAILABLE] Server shutting down.", nth)
    if kind == "unavailable":
        return kind, Fault.answer(verb, UNAVAILABLE, nth)
    if kind == "serverbug":
        return kind, Fault.answer(verb, SERVERBUG, nth)
    if kind == "ms_throttled":
        status = rng.choice(["BAD", "NO"])
        return kind, Fault.answer(verb, ms_throttled(rng.randint(50, 400), status), nth)
    if kind == "too_many":
        return kind, Fault.answer("LOGIN|AUTHENTICATE", GMAIL_TOO_MANY)
    if kind == "overquota":
        return kind, Fault.answer("APPEND", OVERQUOTA, nth)
    return kind, Fault.throttle(rng.randint(300_000, 3_000_000))


def random_schedule(
    rng: random.Random,
    *,
    side: str,
    connections: int,
    stream_bytes: int,
    probability: float = 0.5,
) -> dict[int, list[Fault]]:
    """Faults for the first ``connections`` connections (0: the planning one, which the
    mover then uses for its first folder worker): each gets one with ``probability``;
    later connections get none (every transfer can finish)."""
    out: dict[int, list[Fault]] = {}
    for i in range(connections):
        if rng.random() < probability:
            _kind, fault = random_fault(
                rng, side=side, planning=i == 0, stream_bytes=stream_bytes if i else 2000
            )
            out[i] = [fault]
    return out
