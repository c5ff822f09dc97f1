"""A TCP proxy that adds a fixed one-way delay in each direction, without a bandwidth cap.

    python bench/latency_proxy.py --target 127.0.0.1:PORT --delay-ms 20 [--listen 127.0.0.1:0]

prints ``LISTENING <host> <port>`` on stdout once it accepts connections and runs until
SIGTERM/SIGINT.  Every chunk read from one side is stamped with ``now + delay`` and
put in that direction's queue; a loop timer armed for the queue's head writes each
chunk when it is due (all chunks that are due at once in one write), then re-arms for
the next.  Reading never waits for the delay, so the link carries a full
bandwidth-delay product in flight: 20 ms each way = 40 ms RTT without limiting
throughput.  At most ``--buffer-mb`` per direction is held before reading from the
sending side pauses (back-pressure, like a full TCP window); while the receiving
side's socket does not take more (its transport's write buffer is full), nothing more
is written to it, and the queue fills.  An EOF is passed on once the data before it
has been written (half-close: the other direction goes on); the connection closes when
both directions have ended, or at once on an error on either side.

It is asyncio protocols and timers, no streams and no tasks per direction: a chunk
costs a timer and a ``send``, not a task switch or two (TLS servers send many small
records, so a bulk transfer is many chunks).  With ``--delay-ms 0`` (and no rate cap)
a chunk is written as soon as it is read, without a timer.

Connection set-up is modelled too: the upstream connection is opened ``3 x delay``
after the client's connection is accepted (nothing is read from the client until
then), so the server's greeting reaches the client two round trips after it
connected, as over a real link (SYN, SYN-ACK, ACK, greeting).

``--nagle`` leaves Nagle's algorithm on for the socket towards the client (no
``TCP_NODELAY``), as an IMAP server that never sets it: its small replies (a tagged OK,
then a ``+`` continuation) wait for the client's ACK of the previous one, which a
client with nothing to send delays by up to 40 ms (Linux's delayed ACK).  With
``--delay-ms 0`` this models such a server on loopback (bench ``--no-literal-plus``).

Listen on 127.0.0.1 (the default) so that STARTTLS through the proxy still finds the
certificate's IP address.

Throttled links (``bench/fleet.py``): ``--rate-mbps R`` caps each connection at R MB/s
per direction (MB = 10^6 bytes): every chunk is cut into pieces of at most 16 kB that
leave the link one after another at that rate (serialisation delay), then take the
one-way delay (propagation), as a slow provider's link does.  ``--reuse-port`` binds
with ``SO_REUSEPORT``, so several proxy processes can share one port (the kernel spreads
the connections over them).  On SIGTERM the proxy prints ``STATS {json}``: the bytes it
carried towards the server (``up``) and towards the client (``down``), the connections
it handled and its own CPU seconds (user + system).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import resource
import signal
import socket
import sys
from collections import deque
from dataclasses import dataclass

CHUNK = 256 * 1024  # read at most this much at once
PIECE = 16 * 1024  # what a rate-capped link sends at once (a few TCP segments)
BATCH = 256 * 1024  # at most this much of the chunks due at once joined into one write

#: Bytes carried, per direction, and connections handled (printed on exit).
STATS = {"up": 0, "down": 0, "connections": 0}
#: The connections still being set up (strong references: asyncio keeps weak ones).
_OPENING: set[asyncio.Task[None]] = set()


@dataclass(frozen=True, slots=True)
class Link:
    """What every connection through this proxy gets."""

    target: tuple[str, int]
    delay: float  # one-way, seconds
    limit: int  # bytes held per direction before reading pauses
    nagle: bool = False  # no TCP_NODELAY towards the client
    rate: float = 0.0  # bytes per second per direction; 0: no cap


class _Pipe:
    """One direction of one connection: each chunk read from ``src`` is stamped with the
    time it is due and written to ``dst`` then, by a loop timer."""

    __slots__ = (
        "blocked",
        "buffered",
        "conn",
        "counter",
        "done",
        "dst",
        "eof",
        "held",
        "link_free",
        "queue",
        "src",
        "timer",
    )

    def __init__(self, conn: _Conn, counter: str) -> None:
        self.conn = conn
        self.counter = counter  # the STATS key this direction counts into
        self.src: asyncio.Transport | None = None
        self.dst: asyncio.Transport | None = None
        self.queue: deque[tuple[float, bytes | memoryview]] = deque()
        self.buffered = 0  # bytes in the queue
        self.timer: asyncio.TimerHandle | None = None  # armed for the queue's head
        self.link_free = 0.0  # when the link has sent what it was given (rate cap)
        self.held = False  # reading from src paused: the queue is full
        self.blocked = False  # dst's write buffer is full (pause_writing)
        self.eof = False  # src has ended
        self.done = False  # ... and its EOF was passed on to dst

    def feed(self, data: bytes) -> None:
        """A chunk read from ``src``."""
        if self.conn.closed:
            return
        STATS[self.counter] += len(data)
        link = self.conn.link
        loop = self.conn.loop
        queue = self.queue
        now = loop.time()
        if link.rate:
            # serialisation at the link's rate, piece by piece, then the delay
            view = memoryview(data) if len(data) > PIECE else data
            for at in range(0, len(data), PIECE):
                piece = view[at : at + PIECE]
                self.link_free = max(now, self.link_free) + len(piece) / link.rate
                queue.append((self.link_free + link.delay, piece))
        elif not link.delay and not queue and not self.blocked:
            assert self.dst is not None
            self.dst.write(data)  # due now, nothing before it: no queue, no timer
            return
        else:
            queue.append((now + link.delay, data))
        self.buffered += len(data)
        if self.buffered >= link.limit and not self.held:
            self.held = True
            assert self.src is not None
            self.src.pause_reading()
        if self.timer is None and not self.blocked:
            self.timer = loop.call_at(queue[0][0], self.flush)

    def flush(self) -> None:
        """Write what is due (chunks due together joined), then wait for the next."""
        self.timer = None
        conn = self.conn
        if conn.closed:
            return
        queue = self.queue
        dst = self.dst
        assert dst is not None
        now = conn.loop.time()
        while queue and not self.blocked:
            due, data = queue[0]
            if due > now:
                self.timer = conn.loop.call_at(due, self.flush)
                break
            queue.popleft()
            size = len(data)
            if queue and queue[0][0] <= now:
                parts = [data]
                while queue and queue[0][0] <= now and size < BATCH:
                    more = queue.popleft()[1]
                    parts.append(more)
                    size += len(more)
                data = b"".join(parts)
            self.buffered -= size
            dst.write(data)  # may call pause_writing: self.blocked
        if self.held and self.buffered < conn.link.limit:
            self.held = False
            assert self.src is not None
            self.src.resume_reading()
        if self.eof and not queue:
            self.finish()

    def block(self) -> None:
        """``dst`` has a full write buffer: write nothing more until it drains."""
        self.blocked = True
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None

    def unblock(self) -> None:
        self.blocked = False
        if self.timer is None and self.queue:
            self.flush()

    def end(self) -> None:
        """``src`` sent EOF: pass it on once the queue is written."""
        self.eof = True
        if not self.queue:
            self.finish()

    def finish(self) -> None:
        if self.done:
            return
        self.done = True
        assert self.dst is not None
        with contextlib.suppress(OSError, RuntimeError):
            if self.dst.can_write_eof():
                self.dst.write_eof()
        self.conn.finished()

    def stop(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        self.queue.clear()
        self.buffered = 0


class _Conn:
    """One client connection and its upstream one: two pipes, two transports."""

    __slots__ = ("client", "closed", "down", "link", "loop", "server", "up")

    def __init__(self, link: Link, loop: asyncio.AbstractEventLoop) -> None:
        self.link = link
        self.loop = loop
        self.up = _Pipe(self, "up")  # client -> server
        self.down = _Pipe(self, "down")  # server -> client
        self.client: asyncio.Transport | None = None
        self.server: asyncio.Transport | None = None
        self.closed = False

    def accepted(self, transport: asyncio.Transport) -> None:
        STATS["connections"] += 1
        self.client = self.up.src = self.down.dst = transport
        _nodelay(transport, not self.link.nagle)
        # nothing is read from the client until the upstream connection is open
        transport.pause_reading()
        task = self.loop.create_task(self._open())
        _OPENING.add(task)
        task.add_done_callback(_OPENING.discard)

    async def _open(self) -> None:
        link = self.link
        try:
            if link.delay:
                await asyncio.sleep(3 * link.delay)  # TCP handshake over the slow link
            if not self.closed:
                await self.loop.create_connection(
                    lambda: _End(self, self.down, self.up), *link.target
                )
        except OSError:
            self.close()

    def connected(self, transport: asyncio.Transport) -> None:
        self.server = self.down.src = self.up.dst = transport
        if self.closed:  # the client went away meanwhile
            transport.close()
            return
        _nodelay(transport, True)
        assert self.client is not None
        self.client.resume_reading()

    def finished(self) -> None:
        """A direction passed its EOF on: when both have, close both."""
        if self.up.done and self.down.done:
            self.close()

    def close(self) -> None:
        """Close both (what they have to write is still sent)."""
        if self.closed:
            return
        self.closed = True
        self.up.stop()
        self.down.stop()
        for t in (self.client, self.server):
            if t is not None:
                t.close()


#: What every socket reads into (one loop, one read at a time): each read is copied out
#: at its own size.  A ``Protocol`` gets a fresh 256 kB ``bytes`` per read, shrunk to
#: what came: glibc maps and unmaps one for each, so a small read costs page faults.
_READ_BUFFER = memoryview(bytearray(CHUNK))


class _End(asyncio.BufferedProtocol):
    """One socket of a connection: what it reads goes into ``out``; its write buffer's
    flow control holds ``into``, the pipe that writes to it."""

    def __init__(self, conn: _Conn, out: _Pipe, into: _Pipe) -> None:
        self.conn = conn
        self.out = out
        self.into = into

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        if self.out is self.conn.up:
            self.conn.accepted(transport)
        else:
            self.conn.connected(transport)

    def get_buffer(self, sizehint: int) -> memoryview:
        return _READ_BUFFER

    def buffer_updated(self, nbytes: int) -> None:
        self.out.feed(bytes(_READ_BUFFER[:nbytes]))

    def eof_received(self) -> bool:
        self.out.end()
        return True  # half-closed: the other direction goes on

    def pause_writing(self) -> None:
        self.into.block()

    def resume_writing(self) -> None:
        self.into.unblock()

    def connection_lost(self, exc: Exception | None) -> None:
        self.conn.close()  # an error on either side ends both


def _nodelay(transport: asyncio.Transport, on: bool) -> None:
    sock = transport.get_extra_info("socket")
    if sock is not None:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1 if on else 0)


async def serve(
    listen: tuple[str, int],
    target: tuple[str, int],
    delay: float,
    limit: int,
    nagle: bool = False,
    rate: float = 0.0,
    reuse_port: bool = False,
) -> None:
    """Run the proxy until cancelled; prints ``LISTENING host port`` when ready."""
    loop = asyncio.get_running_loop()
    link = Link(target, delay, limit, nagle, rate)

    def accept() -> _End:
        conn = _Conn(link, loop)
        return _End(conn, conn.up, conn.down)

    server = await loop.create_server(
        accept,
        listen[0],
        listen[1],
        reuse_port=reuse_port or None,
        backlog=4096,
    )
    host, port = server.sockets[0].getsockname()[:2]
    print(f"LISTENING {host} {port}", flush=True)
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    async with server:
        await stop.wait()
        # Print the counts and leave at once: the kernel closes the connections still
        # open; tearing down thousands of them in the loop only makes noise.
        print(stats_line(), flush=True)
        os._exit(0)


def stats_line() -> str:
    """``STATS {json}``: bytes each way, connections, this process's CPU seconds."""
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return "STATS " + json.dumps(dict(STATS, cpu=ru.ru_utime + ru.ru_stime))


def _hostport(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    return host or "127.0.0.1", int(port)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--target", required=True, help="HOST:PORT to forward to")
    ap.add_argument("--listen", default="127.0.0.1:0", help="HOST:PORT (default 127.0.0.1:0)")
    ap.add_argument("--delay-ms", type=float, default=20.0, help="one-way delay (default 20)")
    ap.add_argument(
        "--buffer-mb", type=float, default=64.0, help="per-direction buffer (default 64)"
    )
    ap.add_argument(
        "--nagle",
        action="store_true",
        help="no TCP_NODELAY towards the client (a server that leaves Nagle on)",
    )
    ap.add_argument(
        "--rate-mbps",
        type=float,
        default=0.0,
        help="per-connection cap in MB/s (10^6 bytes) per direction (default 0: none)",
    )
    ap.add_argument(
        "--reuse-port",
        action="store_true",
        help="SO_REUSEPORT: several proxy processes share the port",
    )
    args = ap.parse_args(argv)
    try:
        asyncio.run(
            serve(
                _hostport(args.listen),
                _hostport(args.target),
                args.delay_ms / 1000.0,
                int(args.buffer_mb * 1e6),
                args.nagle,
                args.rate_mbps * 1e6,
                args.reuse_port,
            )
        )
    except KeyboardInterrupt:
        print(stats_line(), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
