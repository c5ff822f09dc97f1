"""Connections of a transfer: (source, destination) pairs, one per folder worker, and
the distance probe that gives far servers more workers and a bigger byte budget."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable

from ..imap.connection import CommandResult
from .budget import ByteBudget
from .context import EventHandler, check
from .model import Endpoint, Options
from .store import Store, connect_store

__all__ = ["Connector", "Pair", "StoreFactory"]

Pair = tuple[Store, Store]

#: Opens and logs in to one account: (endpoint, role, on_open) -> a Store.
StoreFactory = Callable[[Endpoint, str, Callable[[], None]], Awaitable[Store]]


class Connector:
    """Opens the stores of one transfer and keeps the spare pairs opened ahead."""

    def __init__(
        self,
        source: Endpoint,
        dest: Endpoint,
        options: Options,
        budget: ByteBudget,
        on_event: EventHandler,
        factory: StoreFactory | None = None,
    ) -> None:
        self.source = source
        self.dest = dest
        self.options = options
        self.budget = budget
        self.on_event = on_event
        self._factory = factory
        #: (host, port) of the servers that answered once: unreachable later = retry.
        self.reached: set[tuple[str, int]] = set()
        #: Connected pairs waiting for a worker.
        self.spares: list[Pair] = []
        #: Seconds of a round trip to the farther server (NOOPs while planning), if measured.
        self.rtt: float | None = None

    async def connect(self, ep: Endpoint, role: str, *, read_only: bool | None = None) -> Store:
        """Open and log in to ``ep``.  The ``"source"`` role (or ``read_only=True``) gets a
        read-only store: nothing can be written to the source (transfer/store.py)."""
        if read_only is None:
            read_only = role == "source"

        def opened() -> None:
            self.reached.add((ep.host, ep.port))

        try:
            if self._factory is not None:
                return await self._factory(ep, role, opened)
            return await self._connect_store(ep, role, opened, read_only)
        except Exception as exc:
            # Which account failed, for the customer's message (policy/failures.py).
            if not hasattr(exc, "yippiemove_side"):
                with contextlib.suppress(AttributeError, TypeError):
                    exc.yippiemove_side = "source" if role == "source" else "dest"  # type: ignore[attr-defined]
            raise

    async def _connect_store(
        self, ep: Endpoint, role: str, opened: Callable[[], None], read_only: bool
    ) -> Store:
        return await connect_store(
            ep,
            role,
            connect_timeout=self.options.connect_timeout,
            idle_timeout=self.options.idle_timeout,
            on_open=opened,
            read_only=read_only,
            write_gate=None if read_only else self.options.write_gate,
            # The source is never written: only a writer's unsent bytes matter.
            abortive_close=not read_only and self.options.abortive_close,
        )

    async def open_pair(self) -> Pair:
        """A source and a destination connection, opened at the same time (each costs
        the server a login process and a mailbox process: tens of milliseconds)."""
        src_t = asyncio.ensure_future(self.connect(self.source, "source"))
        dst_t = asyncio.ensure_future(self.connect(self.dest, "destination"))
        try:
            await asyncio.wait({src_t, dst_t}, return_when=asyncio.ALL_COMPLETED)
        except BaseException:
            for t in (src_t, dst_t):
                t.cancel()
            await asyncio.gather(src_t, dst_t, return_exceptions=True)
            for t in (src_t, dst_t):
                if not t.cancelled() and t.exception() is None:
                    t.result().abort()
            raise
        if src_t.exception() is not None or dst_t.exception() is not None:
            for t in (src_t, dst_t):
                if t.exception() is None:
                    await t.result().logout()
            exc = src_t.exception() or dst_t.exception()
            assert exc is not None
            raise exc
        return src_t.result(), dst_t.result()

    def drop_spares(self) -> None:
        for pair in self.spares:
            for c in pair:
                c.abort()
        self.spares = []

    async def logout_spares(self, keep: int = 0) -> None:
        while len(self.spares) > keep:
            for c in self.spares.pop():
                await c.logout()

    async def probe(
        self,
        src: Store,
        dst: Store,
        sent: float,
        src_noop: asyncio.Future[CommandResult],
        dst_noop: asyncio.Future[CommandResult],
    ) -> list[Pair]:
        """The round trip to the farther of the two servers (a folder waits on both),
        each the shorter of a NOOP's and of the time its connection took to greet
        (each is at least one round trip; taking both keeps a busy machine's hiccup
        from passing for distance).  When it is ``Options.far_rtt`` or more, the byte
        budget grows to ``far_memory_budget`` (``far_memory_budget_tls`` over TLS) and
        the pairs of the extra workers (``far_connections``) are opened.  A pair that
        cannot be opened (a server's connection limit...) only means fewer workers."""
        answered: dict[int, float] = {}
        for noop in (src_noop, dst_noop):
            noop.add_done_callback(lambda f: answered.setdefault(id(f), time.monotonic()))
        trips = []
        for client, noop in ((src, src_noop), (dst, dst_noop)):
            check(await noop, "NOOP")
            trip = answered.get(id(noop), time.monotonic()) - sent
            if client.greeted_in is not None:
                trip = min(trip, client.greeted_in)
            trips.append(trip)
        self.rtt = max(trips)
        opts = self.options
        if self.rtt < opts.far_rtt:
            return []
        tls = src.tls or dst.tls
        self.budget.grow(opts.far_memory_budget_tls if tls else opts.far_memory_budget)
        if opts.far_connections <= opts.connections:
            return []
        tasks = [
            asyncio.ensure_future(self.open_pair())
            for _ in range(opts.far_connections - opts.connections)
        ]
        try:
            await asyncio.wait(tasks)
        except BaseException:
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            for t in tasks:
                if not t.cancelled() and t.exception() is None:
                    for c in t.result():
                        c.abort()
            raise
        pairs = [t.result() for t in tasks if t.exception() is None]
        self.on_event(
            f"servers {self.rtt * 1000:.0f} ms away: {opts.connections + len(pairs)} workers"
        )
        return pairs
