"""The shared byte budget never deadlocks the folder workers (real Dovecot).

Each worker holds bodies in its unsent MULTIAPPEND group while it fetches more; when
the budget is smaller than what all workers want at once, a worker must send its group
before it waits, or every worker waits for the others for ever.  This happened with
``--connections 3`` on the benchmark's ``mixed`` corpus.
"""

from __future__ import annotations

import asyncio
import random
from datetime import datetime
from pathlib import Path

import pytest

from tests import mailcheck
from yippiemove.testing.dovecot import DovecotServer, MaildirMessage
from yippiemove.transfer.engine import ByteBudget, Mover
from yippiemove.transfer.model import Endpoint, Options
from yippiemove.transfer.state import State


def _message(i: int, size: int) -> bytes:
    head = (
        f"From: a{i}@example.org\r\nTo: b@example.org\r\nSubject: budget {i}\r\n"
        f"Message-ID: <budget-{i}@example.org>\r\nDate: Mon, 1 Jan 2024 10:00:00 +0000\r\n\r\n"
    ).encode()
    line = b"x" * 76 + b"\r\n"
    return head + line * max(1, (size - len(head)) // len(line))


def _load(server: DovecotServer) -> None:
    rng = random.Random(7)
    n = 0
    for folder in ("INBOX", "A", "B", "C", "D"):
        items = []
        for _ in range(40):
            size = rng.choice((2_000, 20_000, 200_000, 600_000))
            items.append(MaildirMessage(_message(n, size), ("\\Seen",), datetime(2023, 5, 1)))
            n += 1
        server.deliver_many("src", folder, items)


class _Checked(ByteBudget):
    """A budget that notes releases of more than is in use (the count clamps at 0)."""

    def __init__(self, limit: int) -> None:
        super().__init__(limit)
        self.over_released: list[tuple[int, int]] = []

    def release(self, n: int) -> None:
        if n > self.used:
            self.over_released.append((n, self.used))
        super().release(n)


@pytest.mark.parametrize("connections", [2, 3, 5])
def test_small_budget_many_workers_completes_exactly(
    dovecot: DovecotServer, tmp_path: Path, connections: int
) -> None:
    _load(dovecot)
    # Per worker: 3 fetches of 1 MB in flight plus an APPEND group of up to 4 MB, for
    # 2-5 workers, against a 3 MB budget: only sending groups early lets them progress.
    options = Options(
        connections=connections,
        memory_budget=3 * 1024 * 1024,
        fetch_batch_bytes=1024 * 1024,
        fetch_window=3,
        append_batch_bytes=4 * 1024 * 1024,
        append_batch_messages=500,
    )
    src = Endpoint("127.0.0.1", dovecot.port, "src", "none", "srcpass", allow_insecure_auth=True)
    dst = Endpoint("127.0.0.1", dovecot.port, "dst", "none", "dstpass", allow_insecure_auth=True)
    state = State(tmp_path / "state.sqlite")
    mover = Mover(src, dst, state=state, options=options)
    mover.budget = budget = _Checked(options.memory_budget)
    try:
        results = asyncio.run(asyncio.wait_for(mover.run(), timeout=120))
    finally:
        state.close()
    assert sum(r.copied for r in results) == 200
    assert not any(r.failures for r in results)
    assert mover.budget.used == 0
    # Every byte given back was taken before: a worker that gives back more than it
    # holds lets the others fetch past the budget (peak memory grew with the workers).
    assert budget.over_released == [], budget.over_released[:5]
    got = mailcheck.snapshot(dovecot.port, "dst", "dstpass")
    want = mailcheck.snapshot(dovecot.port, "src", "srcpass")
    assert mailcheck.in_utc(got) == mailcheck.in_utc(want)


def test_budget_would_wait() -> None:
    b = ByteBudget(100)
    assert not b.would_wait(500)  # nothing in flight: one big request may go alone
    asyncio.run(b.acquire(60))
    assert not b.would_wait(40)
    assert b.would_wait(41)
    b.release(60)
    assert not b.would_wait(100)


def test_budget_grow_wakes_waiters_and_never_shrinks() -> None:
    async def main() -> None:
        b = ByteBudget(100)
        await b.acquire(80)
        waiter = asyncio.ensure_future(b.acquire(50))
        await asyncio.sleep(0)
        assert not waiter.done()
        b.grow(200)  # a far link: more bytes in flight
        assert await asyncio.wait_for(waiter, 1) == 50
        assert b.used == 130
        b.grow(10)
        assert b.limit == 200

    asyncio.run(main())
