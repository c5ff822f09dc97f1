"""The byte budget: message bytes in flight (fetched, not yet stored), shared by all
folder workers of a transfer, so memory stays bounded whatever ``--connections`` is."""

from __future__ import annotations

import asyncio

__all__ = ["ByteBudget"]


class ByteBudget:
    """Message bytes in flight (fetched, not yet stored) shared by all folder workers.

    Memory then stays bounded whatever ``--connections`` is. A request larger than the
    whole budget (one huge message) waits until nothing else is in flight.
    """

    def __init__(self, limit: int) -> None:
        self.limit = max(1, limit)
        self.used = 0
        self._waiters: list[asyncio.Future[None]] = []

    def grow(self, limit: int) -> None:
        """Raise the limit (never lower it: bytes may be in flight)."""
        if limit > self.limit:
            self.limit = limit
            self.release(0)  # wake the waiters

    def would_wait(self, n: int) -> bool:
        """True when ``acquire(n)`` would have to wait for others to release bytes."""
        return bool(self.used) and self.used + min(max(0, n), self.limit) > self.limit

    async def acquire(self, n: int) -> int:
        n = min(max(0, n), self.limit)
        while self.used and self.used + n > self.limit:
            fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            self._waiters.append(fut)
            try:
                await fut
            finally:
                if fut in self._waiters:
                    self._waiters.remove(fut)
        self.used += n
        return n

    def release(self, n: int) -> None:
        self.used = max(0, self.used - n)
        waiters, self._waiters = self._waiters, []
        for w in waiters:
            if not w.done():
                w.set_result(None)
