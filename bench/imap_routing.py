#!/usr/bin/env python3
"""Micro-benchmark of the IMAP layer's receive path: parsing, command state and routing.

    .venv/bin/python bench/imap_routing.py            # 20,000 messages, best of 7
    .venv/bin/python bench/imap_routing.py --repeat 3 --messages 5000

No server and no socket: an :class:`ImapConnection` writes into a transport that only
counts bytes, and a recorded-shape conversation (built once, before timing) is fed to
it in 64 KiB reads, the way a transfer of the ``small`` preset looks to each side:

* ``listing``: ``UID FETCH 1:* (UID RFC822.SIZE FLAGS INTERNALDATE)``, one line a message;
* ``fetch``: pipelined ``UID FETCH <256 uids> (UID BODY.PEEK[])`` whose bodies go to a
  callback by UID (as the engine's), with two batches' output interleaved (Dovecot);
* ``multiappend``: pipelined MULTIAPPENDs of 256 messages, each answered by
  ``* n EXISTS``, ``* n RECENT`` and ``OK [APPENDUID ...]`` (the destination is selected);
* ``append``: one APPEND per message (a server without MULTIAPPEND): the per-command
  cost of tags, the command table and completions.

Each scenario's time covers submitting the commands (encoding, writing), feeding every
byte and awaiting every result.  Figures: best and median of ``--repeat`` runs, as
messages per second and microseconds per message.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from yippiemove.imap.client import AppendItem, ImapClient
from yippiemove.imap.connection import ImapConnection

READ = 64 * 1024
BATCH = 256
GREETING = b"* OK [CAPABILITY IMAP4rev1 LITERAL+ MULTIAPPEND UIDPLUS] ready\r\n"
CAPS = frozenset(("IMAP4REV1", "LITERAL+", "MULTIAPPEND", "UIDPLUS"))


class _CountingTransport:
    """Stands in for the socket: swallows writes, counts bytes."""

    def __init__(self) -> None:
        self.written = 0

    def write(self, data: bytes) -> None:
        self.written += len(data)

    def abort(self) -> None:
        pass

    def get_extra_info(self, name: str) -> None:
        return None


def _connection() -> ImapConnection:
    conn = ImapConnection("bench.invalid", name="bench")
    conn._transport = _CountingTransport()  # type: ignore[assignment]
    conn._data_received(GREETING)
    conn.capabilities = CAPS
    return conn


def _feed(conn: ImapConnection, data: bytes) -> None:
    for i in range(0, len(data), READ):
        conn._data_received(data[i : i + READ])


def _bodies(n: int, rng: random.Random) -> list[bytes]:
    out = []
    for i in range(n):
        size = rng.randint(900, 2300)
        head = b"Message-ID: <%d@bench>\r\nSubject: message %d\r\n\r\n" % (i, i)
        out.append(head + bytes(rng.getrandbits(7) | 32 for _ in range(8)) * (size // 8))
    return out


def _listing(n: int) -> bytes:
    lines = [
        b'* %d FETCH (UID %d RFC822.SIZE %d FLAGS (%s) INTERNALDATE "01-Jan-2024 10:00:00 +0000")'
        b"\r\n" % (i, i, 1000 + i % 900, b"\\Seen" if i % 3 else b"")
        for i in range(1, n + 1)
    ]
    return b"".join(lines) + b"Y1 OK Fetch completed.\r\n"


def _fetch_answer(bodies: list[bytes]) -> bytes:
    """Tags Y1..: two batches at a time answered interleaved, completions swapped."""
    out = bytearray()
    batches = [list(range(i, min(i + BATCH, len(bodies)))) for i in range(0, len(bodies), BATCH)]
    for k in range(0, len(batches), 2):
        pair = batches[k : k + 2]
        lines: list[list[bytes]] = [
            [
                b"* %d FETCH (UID %d BODY[] {%d}\r\n" % (j + 1, j + 1, len(bodies[j]))
                + bodies[j]
                + b")\r\n"
                for j in batch
            ]
            for batch in pair
        ]
        for i in range(max(map(len, lines))):
            for side in lines:
                if i < len(side):
                    out += side[i]
        for idx in reversed(range(len(pair))):
            out += b"Y%d OK Fetch completed.\r\n" % (k + idx + 1)
    return bytes(out)


def _append_answer(n: int, per: int) -> bytes:
    out = bytearray()
    tag = 0
    for start in range(0, n, per):
        tag += 1
        count = min(per, n - start)
        out += b"* %d EXISTS\r\n* %d RECENT\r\n" % (start + count, count)
        uids = b"%d:%d" % (start + 1, start + count) if count > 1 else b"%d" % (start + 1)
        out += b"Y%d OK [APPENDUID 1700000000 %s] Append completed.\r\n" % (tag, uids)
    return bytes(out)


async def _listing_run(data: bytes) -> int:
    conn = _connection()
    client = ImapClient(conn)
    task = asyncio.ensure_future(client.fetch_meta(message_id=False))
    await asyncio.sleep(0)
    _feed(conn, data)
    return len(await task)


async def _fetch_run(n: int, data: bytes) -> int:
    conn = _connection()
    client = ImapClient(conn)
    got: dict[int, bytes] = {}
    futs = [
        await client.submit_fetch_bodies(range(i + 1, min(i + BATCH, n) + 1), got.__setitem__)
        for i in range(0, n, BATCH)
    ]
    _feed(conn, data)
    for f in futs:
        assert (await f).tagged.ok
    return len(got)


async def _append_run(items: list[AppendItem], per: int, data: bytes) -> int:
    conn = _connection()
    client = ImapClient(conn)
    futs = [
        await client.submit_append(b"INBOX", items[i : i + per]) for i in range(0, len(items), per)
    ]
    _feed(conn, data)
    done = 0
    for f in futs:
        done += len((await f).tagged.appenduid().uids)  # type: ignore[union-attr]
    return done


def _time(make: Callable[[], Awaitable[int]], n: int, repeat: int) -> tuple[float, float]:
    times = []
    for _ in range(repeat):
        loop = asyncio.new_event_loop()
        try:
            started = time.perf_counter()
            got = loop.run_until_complete(make())
            times.append(time.perf_counter() - started)
        finally:
            loop.close()
        assert got == n, (got, n)
    return min(times), statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--messages", type=int, default=20_000)
    ap.add_argument("--repeat", type=int, default=7)
    ap.add_argument(
        "--scenarios",
        default="listing,fetch,multiappend,append",
        help="comma-separated subset (before the command table's per-kind index, "
        "'append' took ~1 ms a message: 20 s a run)",
    )
    args = ap.parse_args()
    n = args.messages
    rng = random.Random(11)
    bodies = _bodies(n, rng)
    items = [AppendItem(b, ("\\Seen",), b"01-Jan-2024 10:00:00 +0000") for b in bodies]
    listing = _listing(n)
    fetched = _fetch_answer(bodies)
    multi = _append_answer(n, BATCH)
    single = _append_answer(n, 1)
    scenarios: list[tuple[str, Callable[[], Awaitable[int]], int]] = [
        ("listing", lambda: _listing_run(listing), len(listing)),
        ("fetch", lambda: _fetch_run(n, fetched), len(fetched)),
        ("multiappend", lambda: _append_run(items, BATCH, multi), sum(map(len, bodies))),
        ("append", lambda: _append_run(items, 1, single), sum(map(len, bodies))),
    ]
    print(f"{n} messages, best and median of {args.repeat} runs")
    print(
        f"{'scenario':<12} {'MB':>7} {'best ms':>9} {'median ms':>10} {'msgs/s':>10} {'us/msg':>7}"
    )
    chosen = args.scenarios.split(",")
    for name, make, size in scenarios:
        if name not in chosen:
            continue
        best, med = _time(make, n, args.repeat)
        print(
            f"{name:<12} {size / 1e6:7.1f} {best * 1e3:9.1f} {med * 1e3:10.1f}"
            f" {n / best:10.0f} {best / n * 1e6:7.2f}"
        )


if __name__ == "__main__":
    main()
