"""Is a job's work alive?  Judged by the bytes its servers exchange with it.

A job process prints a progress line every half second whatever its servers do, so its
output proves only that the process runs.  The supervisor judges the *servers* instead:
each progress line carries the process's wire counters (imap/connection.py ``TRAFFIC``:
bytes received from and sent to the source and the destination), and :class:`Liveness`
turns them into a verdict (docs/design.md "Fair share"):

- **stalled**: not one byte in either direction, with either server, for
  ``stall_seconds`` (a restart may cure it: a new connection);
- **too slow**: fewer than ``min_rate`` bytes per second over the last ``rate_window``
  seconds.  A server that drips one line every ``stall_seconds - 1`` is alive by the
  byte rule; it still holds a worker that other customers wait for, so a job that does
  not move at least this much is ended (not restarted: the same server would do the
  same again);
- **moving**: what the maximum job duration asks before it checkpoints a job instead of
  failing it.

Waits that the job chose are excused: while a progress line says the job sleeps until
some time (a server's throttling, a retry's backoff), the clocks start afresh then.
Pure: the caller passes the clock.
"""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass
from typing import Any

__all__ = ["STALLED", "TOO_SLOW", "Liveness", "LivenessRules", "may_checkpoint"]


def may_checkpoint(progress: dict[str, Any]) -> bool:
    """Whether a run past the maximum duration may be checkpointed now: once it has
    handled more messages than any run of the job before (``checkpoint_mark``, kept in
    the job's progress), i.e. stored something new.  Every run then moves the job on; a
    run that spent the whole limit re-planning and re-checking what earlier runs copied
    (or in the middle of its first large APPEND) would otherwise be checkpointed again
    and again, forever."""
    done = progress.get("messages_done")
    mark = progress.get("checkpoint_mark") or 0
    return isinstance(done, int) and isinstance(mark, int) and done > mark


STALLED = "stalled"
TOO_SLOW = "too slow"


@dataclass(frozen=True)
class LivenessRules:
    """The operator's settings (service/config.py ``job_stall_seconds``,
    ``job_min_rate``, ``job_rate_window``)."""

    stall_seconds: float
    min_rate: float = 0.0
    rate_window: float = 600.0


def _traffic_total(line: dict[str, Any]) -> int | None:
    traffic = line.get("traffic")
    if not isinstance(traffic, dict):
        return None
    total = 0
    for value in traffic.values():
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            total += value
    return total


class Liveness:
    """The servers' life of one job process (one attempt), from its progress lines."""

    def __init__(self, rules: LivenessRules, now: float) -> None:
        self.rules = rules
        self.since = now  # start of the current observation (after an excused wait)
        self.last_change = now
        self.total = 0
        self.samples: deque[tuple[float, int]] = deque([(now, 0)])
        self.excused_until = 0.0

    def update(self, line: dict[str, Any], now: float, wall: float | None = None) -> None:
        """A progress line arrived at ``now`` (monotonic); ``wall`` is ``time.time()``."""
        wall = time.time() if wall is None else wall
        waits = [
            float(w)
            for w in (line.get("throttled_until"), line.get("retry_until"))
            if isinstance(w, int | float) and not isinstance(w, bool)
        ]
        if waits and max(waits) > wall:
            self.excused_until = max(self.excused_until, now + min(max(waits) - wall, 86400))
        total = _traffic_total(line)
        if total is None or total <= self.total:
            return
        self.total = total
        self.last_change = now
        self.samples.append((now, total))
        window = self.rules.rate_window
        # Keep one sample at or before the window's start: the base of the rate.
        while len(self.samples) > 1 and self.samples[1][0] <= now - window:
            self.samples.popleft()

    def _excused(self, now: float) -> bool:
        if now < self.excused_until:
            self.since = self.last_change = now
            self.samples = deque([(now, self.total)])
            return True
        return False

    def moved(self, now: float, seconds: float) -> int:
        """Bytes exchanged over the last ``seconds`` (as far as the samples reach)."""
        base = self.samples[0][1]
        for t, total in self.samples:
            if t <= now - seconds:
                base = total
            else:
                break
        return self.total - base

    def verdict(self, now: float) -> str | None:
        """:data:`STALLED`, :data:`TOO_SLOW` or None (alive)."""
        if self._excused(now):
            return None
        r = self.rules
        if now - self.last_change > r.stall_seconds:
            return STALLED
        if r.min_rate > 0 and now - self.since >= r.rate_window:
            if self.moved(now, r.rate_window) < r.min_rate * r.rate_window:
                return TOO_SLOW
        return None

    def moving(self, now: float) -> bool:
        """Whether the job moves data now: at ``min_rate`` over the last window (or
        what of it has passed), or any bytes within the stall time when no rate is set."""
        if self._excused(now):
            return True
        r = self.rules
        if now - self.last_change > r.stall_seconds:
            return False
        if r.min_rate <= 0:
            return True
        span = max(1e-3, min(r.rate_window, now - self.since))
        return self.moved(now, span) >= r.min_rate * span

    def why(self, verdict: str) -> str:
        """A sentence for the customer (the job's error)."""
        r = self.rules
        if verdict == STALLED:
            return f"the mail servers sent and took no data for {r.stall_seconds:g} s"
        return (
            f"the mail servers moved less than {r.min_rate:g} bytes/s over "
            f"{r.rate_window:g} s (too slow to finish)"
        )
