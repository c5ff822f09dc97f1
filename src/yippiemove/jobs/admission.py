"""How many jobs one machine runs at once: as many as its processors serve (issue 18).

A job that waits on its mail servers costs the machine almost nothing, so hundreds may
run together; a job whose servers answer at once (a local server, a fast provider)
keeps a processor busy.  Past the point where the processors are saturated, starting
more jobs does not move more mail: every job gets slower, the time each one runs (and
what its supervision, its connections and the servers' processes cost per second)
grows, and the machine moves *less*.  On 2 cores, 500 such jobs started together moved
0.43 of what 100 did (docs/benchmarks.md).

So the supervisor admits jobs the way TCP opens its window:

* up to ``floor`` running jobs (``job_admission_floor``; 0: four per processor) are
  always admitted;
* past it, a job starts only while the processors are not saturated: the share of
  the last half second in which some runnable task of the machine waited for a
  processor (Linux's pressure-stall information, ``/proc/pressure/cpu``, "some"; the
  busy share of ``/proc/stat`` where PSI is missing) is below ``limit``
  (``job_admission_pressure``; 0: no admission control).  Each such half second lets
  a quarter more jobs start (at least one), so the load grows while it is measured;
* the queue's consumers pass it *before* they take a message (jobs/queue.py ``Gate``):
  a job this machine cannot start yet stays in the queue, ``queued``, where the fleet's
  sweep sees its message and another machine with idle processors may take it;
* consumers that wait keep their order (first come, first served); one (the first)
  looks at the pressure, the others sleep until their turn.

Every supervising process of a machine reads the same machine-wide pressure, so
several ``worker`` processes share the processors without talking to each other.
"""

from __future__ import annotations

import collections
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path

__all__ = ["Admission", "CpuPressure", "default_floor"]

PSI_PATH = Path("/proc/pressure/cpu")
STAT_PATH = Path("/proc/stat")


def default_floor(cpus: int | None = None) -> int:
    """Jobs always admitted: four per processor."""
    return 4 * max(1, cpus or os.cpu_count() or 1)


class CpuPressure:
    """The share of time, since the previous reading, in which the processors were the
    bottleneck: PSI "some" (a runnable task waited), else the busy share of /proc/stat.
    None on the first reading or where neither file can be read."""

    def __init__(
        self,
        psi: Path | None = None,
        stat: Path | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.psi = psi if psi is not None else PSI_PATH
        self.stat = stat if stat is not None else STAT_PATH
        self.clock = clock
        self._last: tuple[float, float] | None = None  # (time or total ticks, stalled)
        self.source = "psi" if self._psi_total() is not None else "stat"

    def _psi_total(self) -> float | None:
        """Microseconds in which some task waited for a processor, since boot."""
        try:
            for line in self.psi.read_text().splitlines():
                if line.startswith("some "):
                    for part in line.split():
                        if part.startswith("total="):
                            return float(part[6:])
        except (OSError, ValueError):
            return None
        return None

    def _stat_ticks(self) -> tuple[float, float] | None:
        """(all ticks, busy ticks) of the machine's processors, since boot."""
        try:
            with open(self.stat, encoding="ascii") as f:
                fields = [float(x) for x in f.readline().split()[1:]]
        except (OSError, ValueError):
            return None
        if len(fields) < 5:
            return None
        idle = fields[3] + fields[4]  # idle + iowait
        total = sum(fields[:8])
        return total, total - idle

    def read(self) -> float | None:
        if self.source == "psi":
            total = self._psi_total()
            now = self.clock()
            if total is None:
                return None
            point = (now * 1e6, total)
        else:
            ticks = self._stat_ticks()
            if ticks is None:
                return None
            point = ticks
        last, self._last = self._last, point
        if last is None or point[0] <= last[0]:
            return None
        return max(0.0, min(1.0, (point[1] - last[1]) / (point[0] - last[0])))


class Admission:
    """Admits jobs to run in this process (see the module docstring): the queue's
    ``Gate``.

    ``enter`` blocks until one more job may start (True) or ``stopping`` is set (False);
    every True is followed by one ``leave`` when that run ends.
    """

    def __init__(
        self,
        limit: float,
        floor: int,
        pressure: CpuPressure | None = None,
        *,
        stopping: threading.Event | None = None,
        period: float = 0.5,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.limit = limit
        self.floor = max(1, floor)
        self.pressure = pressure if pressure is not None else CpuPressure()
        self.stopping = stopping if stopping is not None else threading.Event()
        self.period = period
        self.clock = clock
        self.running = 0
        self._lock = threading.Lock()
        self._waiters: collections.deque[threading.Event] = collections.deque()
        self._allowance = 0
        if self.limit > 0:
            self.pressure.read()  # the first reading is a baseline
        self._measured_at = self.clock()

    @property
    def waiting(self) -> int:
        with self._lock:
            return len(self._waiters)

    def _may_start(self, now: float) -> bool:
        if self.limit <= 0 or self.running < self.floor:
            return True
        if self._allowance > 0:
            self._allowance -= 1
            return True
        if now - self._measured_at < self.period:
            return False
        p = self.pressure.read()
        self._measured_at = now
        if p is not None and p >= self.limit:
            return False
        self._allowance = max(1, self.running // 4) - 1
        return True

    def enter(self) -> bool:
        """Wait for the turn of one more job (False: the service stops)."""
        me = threading.Event()
        with self._lock:
            self._waiters.append(me)
        try:
            while True:
                with self._lock:
                    if self.stopping.is_set():
                        return False
                    head = self._waiters[0] is me
                    if head and self._may_start(self.clock()):
                        self._waiters.popleft()
                        self.running += 1
                        if self._waiters:  # the next in line looks now
                            self._waiters[0].set()
                        return True
                    me.clear()
                # The first in line measures every period; the others sleep until they
                # are first (and look at ``stopping`` now and then).
                me.wait(self.period if head else 2.0)
        finally:
            with self._lock:
                if me in self._waiters:  # stopping: leave the line
                    first = self._waiters[0] is me
                    self._waiters.remove(me)
                    if first and self._waiters:
                        self._waiters[0].set()

    def leave(self) -> None:
        with self._lock:
            self.running -= 1
            if self._waiters:
                self._waiters[0].set()

    def wake_all(self) -> None:
        """Let every waiting thread look at ``stopping`` now (the service stops)."""
        with self._lock:
            for w in self._waiters:
                w.set()
