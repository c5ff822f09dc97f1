"""Live progress for many streams (issue 18): ONE poller per web process.

Every event stream of a job page used to read its transfer from the control database at
each tick: 500 transfers watched in 2 tabs each were 1,000 reads a tick.  Here a stream
registers its transfer (after the customer's ownership was checked at open, by a normal
read) with the process's :class:`ProgressHub`; one poller thread reads, per tick and in
ONE query, every transfer that at least one stream follows (``Service.watched_transfers``),
serialises each changed transfer once, and wakes the streams that follow it.  N streams
on one transfer cost one row, N transfers one query, no stream costs a database read
after its open.  docs/design.md "Many jobs: live progress".
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import time
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from .api import public_view

if TYPE_CHECKING:
    from yippiemove.service.core import JobView

log = logging.getLogger("yippiemove.web")

Key = tuple[int, str]  # (user id, job id)


class WatchSource(Protocol):
    """What the hub reads: the Service (and the web tests' fake)."""

    def watched_transfers(self, watched: Collection[Key]) -> dict[Key, JobView]: ...


def as_data(view: JobView) -> str:
    """A transfer as a ``progress`` event's data: what GET /api/v1/transfers/{id} shows."""
    return json.dumps(public_view(view), separators=(",", ":"))


@dataclass(frozen=True)
class State:
    """One transfer as its streams see it; ``version`` +1 at each change."""

    version: int
    data: str
    status: str
    gone: bool = False


@dataclass(eq=False)
class Watch:
    """A transfer that ``streams`` event streams follow."""

    key: Key
    state: State
    #: The view ``state`` was made of: an equal view is not serialised again.
    view: JobView | None = None
    streams: int = 0
    waiters: set[tuple[asyncio.AbstractEventLoop, asyncio.Event]] = field(default_factory=set)


class ProgressHub:
    """The transfers followed by this process's event streams, and the one thread that
    polls them (started by the first stream, ended after a tick with none)."""

    def __init__(self, source: WatchSource, interval: Callable[[], float]) -> None:
        self.source = source
        self.interval = interval
        self._lock = threading.Lock()
        self._watches: dict[Key, Watch] = {}
        self._thread: threading.Thread | None = None
        #: Polls made (each one query of the followed transfers): for tests and metrics.
        self.polls = 0

    def watch(self, user_id: int, job_id: str, first: JobView) -> Watch:
        """Follow (``user_id``, ``job_id``), whose ownership the caller has checked by
        reading ``first``; :meth:`unwatch` when the stream ends."""
        key = (user_id, job_id)
        with self._lock:
            w = self._watches.get(key)
            if w is None:
                w = self._watches[key] = Watch(key, State(0, as_data(first), first.status), first)
            w.streams += 1
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._run, name="yippiemove-live-progress", daemon=True
                )
                self._thread.start()
            return w

    def unwatch(self, w: Watch) -> None:
        with self._lock:
            w.streams -= 1
            if w.streams <= 0 and self._watches.get(w.key) is w:
                del self._watches[w.key]

    def watched(self) -> int:
        """How many transfers are followed now."""
        with self._lock:
            return len(self._watches)

    def streams(self) -> int:
        """How many streams follow them."""
        with self._lock:
            return sum(w.streams for w in self._watches.values())

    async def changed(self, w: Watch, seen: int, timeout: float) -> State:
        """``w``'s state once its version is not ``seen`` any more, or after ``timeout``
        seconds (the stream's own checks: disconnected, stopping, too old)."""
        loop = asyncio.get_running_loop()
        event = asyncio.Event()
        waiter = (loop, event)
        with self._lock:
            if w.state.version != seen:
                return w.state
            w.waiters.add(waiter)
        try:
            await asyncio.wait_for(event.wait(), timeout)
        except TimeoutError:
            pass
        finally:
            with self._lock:
                w.waiters.discard(waiter)
        return w.state

    # -- the poller thread ---------------------------------------------------------------

    def _run(self) -> None:
        while True:
            time.sleep(max(0.001, self.interval()))
            with self._lock:
                keys = list(self._watches)
                if not keys:
                    self._thread = None
                    return
            try:
                views = self.source.watched_transfers(keys)
                self.polls += 1
                self._publish(keys, views)
            except Exception:  # a busy database: try again at the next tick
                log.warning("live progress poll failed (%d transfers)", len(keys), exc_info=True)

    def _publish(self, keys: list[Key], views: dict[Key, JobView]) -> None:
        with self._lock:
            before = {k: w.view for k in keys if (w := self._watches.get(k)) is not None}
        # Serialised once per transfer, and only when its view changed (comparing two
        # views costs ~1/100 of serialising one), outside the lock.
        fresh = {k: as_data(v) for k, v in views.items() if k in before and v != before[k]}
        wake: list[tuple[asyncio.AbstractEventLoop, asyncio.Event]] = []
        with self._lock:
            for key in keys:
                w = self._watches.get(key)
                if w is None or w.state.gone:
                    continue
                old = w.state
                view = views.get(key)
                if view is None:  # deleted, or no longer this customer's
                    w.state = State(old.version + 1, old.data, old.status, gone=True)
                elif key in fresh:
                    w.view = view
                    if fresh[key] == old.data and view.status == old.status:
                        continue
                    w.state = State(old.version + 1, fresh[key], view.status)
                else:
                    continue
                wake.extend(w.waiters)
        for loop, event in wake:
            try:
                loop.call_soon_threadsafe(event.set)
            except RuntimeError:  # that stream's event loop is closed: nothing to wake
                pass


_MAKING = threading.Lock()


def hub_of(app: Any, source: WatchSource, default_interval: float) -> ProgressHub:
    """The app's hub (create_app makes it; made here for an app put together without
    it); ticks at ``app.state.sse_interval``."""
    with _MAKING:
        hub: ProgressHub | None = getattr(app.state, "progress_hub", None)
        if hub is None:
            hub = app.state.progress_hub = ProgressHub(
                source, lambda: float(getattr(app.state, "sse_interval", default_interval))
            )
        return hub
