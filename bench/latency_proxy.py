"""A TCP proxy that adds a fixed one-way delay in each direction, without a bandwidth cap.

    python bench/latency_proxy.py --target 127.0.0.1:PORT --delay-ms 20 [--listen 127.0.0.1:0]

prints ``LISTENING <host> <port>`` on stdout once it accepts connections and runs until
SIGTERM/SIGINT.  Every chunk read from one side is stamped with ``now + delay`` and
put in a queue; a separate writer task forwards each chunk when it is due (all chunks
that are due at once are written together).  Reading never waits for the delay, so the
link carries a full bandwidth-delay product in flight: 20 ms each way = 40 ms RTT
without limiting throughput.  At most ``--buffer-mb`` per direction is held before
reading pauses (back-pressure, like a full TCP window).

Connection set-up is modelled too: the upstream connection is opened ``3 x delay``
after the client's connection is accepted, so the server's greeting reaches the client
two round trips after it connected, as over a real link (SYN, SYN-ACK, ACK, greeting).

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

CHUNK = 256 * 1024
PIECE = 16 * 1024  # what a rate-capped link sends at once (a few TCP segments)

#: Bytes carried, per direction, and connections handled (printed on exit).
STATS = {"up": 0, "down": 0, "connections": 0}
#: The live connection handlers (strong references: see _handle).
_HANDLERS: set[asyncio.Task[None]] = set()


class _Direction:
    """One direction of one connection: read, stamp, forward when due."""

    def __init__(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        delay: float,
        limit: int,
        rate: float = 0.0,
        counter: str = "",
    ) -> None:
        self.reader = reader
        self.writer = writer
        self.delay = delay
        self.limit = limit
        self.rate = rate  # bytes per second on this link; 0: no cap
        self.counter = counter  # the STATS key this direction counts into
        self.link_free = 0.0  # when the link has sent what it was given
        self.queue: deque[tuple[float, bytes]] = deque()
        self.buffered = 0
        self.eof = False
        self.ready = asyncio.Event()
        self.space = asyncio.Event()
        self.space.set()

    async def read_side(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            while True:
                await self.space.wait()
                data = await self.reader.read(CHUNK)
                if not data:
                    break
                if self.counter:
                    STATS[self.counter] += len(data)
                now = loop.time()
                if self.rate:
                    # serialisation at the link's rate, piece by piece, then the delay
                    for at in range(0, len(data), PIECE):
                        piece = data[at : at + PIECE]
                        self.link_free = max(now, self.link_free) + len(piece) / self.rate
                        self.queue.append((self.link_free + self.delay, piece))
                else:
                    self.queue.append((now + self.delay, data))
                self.buffered += len(data)
                if self.buffered >= self.limit:
                    self.space.clear()
                self.ready.set()
        except (ConnectionError, OSError):
            pass
        finally:
            self.eof = True
            self.ready.set()

    async def write_side(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            while not self.queue:
                if self.eof:
                    with contextlib.suppress(OSError, RuntimeError):
                        if self.writer.can_write_eof():
                            self.writer.write_eof()
                    return
                self.ready.clear()
                await self.ready.wait()
            due = self.queue[0][0]
            wait = due - loop.time()
            if wait > 0:
                await asyncio.sleep(wait)
            now = loop.time()
            out: list[bytes] = []
            while self.queue and self.queue[0][0] <= now:
                out.append(self.queue.popleft()[1])
            size = sum(len(b) for b in out)
            self.writer.write(b"".join(out) if len(out) > 1 else out[0])
            self.buffered -= size
            if self.buffered < self.limit:
                self.space.set()
            await self.writer.drain()


async def _handle(
    client_r: asyncio.StreamReader,
    client_w: asyncio.StreamWriter,
    target: tuple[str, int],
    delay: float,
    limit: int,
    nagle: bool = False,
    rate: float = 0.0,
) -> None:
    server_w: asyncio.StreamWriter | None = None
    STATS["connections"] += 1
    # asyncio keeps only weak references to tasks, and the stream protocol drops its
    # reference to this one when the client's side closes: without this, a connection
    # whose tasks all wait on each other could be garbage-collected while pending.
    me = asyncio.current_task()
    if me is not None:
        _HANDLERS.add(me)
    try:
        if delay:
            await asyncio.sleep(3 * delay)  # TCP handshake over the slow link
        server_r, server_w = await asyncio.open_connection(*target)
        for w in (client_w, server_w):
            sock = w.get_extra_info("socket")
            if sock is not None:
                off = nagle and w is client_w
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 0 if off else 1)
        up = _Direction(client_r, server_w, delay, limit, rate, "up")
        down = _Direction(server_r, client_w, delay, limit, rate, "down")
        tasks = [
            asyncio.create_task(up.read_side()),
            asyncio.create_task(up.write_side()),
            asyncio.create_task(down.read_side()),
            asyncio.create_task(down.write_side()),
        ]
        try:
            await asyncio.gather(*tasks)
        except (ConnectionError, OSError):
            pass
        finally:
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
    except (ConnectionError, OSError):
        pass
    except asyncio.CancelledError:
        pass  # shutting down: the handler is the outermost task of its connection
    finally:
        for w in (client_w, server_w):
            if w is not None:
                w.close()
                with contextlib.suppress(Exception):
                    await w.wait_closed()
        if me is not None:
            _HANDLERS.discard(me)


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
    server = await asyncio.start_server(
        lambda r, w: _handle(r, w, target, delay, limit, nagle, rate),
        listen[0],
        listen[1],
        limit=CHUNK * 4,
        reuse_port=reuse_port or None,
        backlog=4096,
    )
    host, port = server.sockets[0].getsockname()[:2]
    print(f"LISTENING {host} {port}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
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
