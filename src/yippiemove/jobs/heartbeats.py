"""One writer for the progress and the leases of every job a supervisor runs (issue 18,
docs/design.md "Many jobs: supervision").

Before, each job's watch loop wrote its own progress and renewed its own lease, one
transaction per job every ``progress_interval`` on a thread started for that write.  At
500 jobs that was 500 write transactions a second on the control database (SQLite
serializes writers: 23 of them waited out the 30 s busy timeout) and 500 threads
started a second.

Now a watch loop hands its snapshot to :class:`Heartbeats` and gets a future; one
thread writes what is pending in one transaction (``JobStore.heartbeat_many``): the
progress of each job whose lease is still its own, and its lease renewed.  Writes
gather for a moment (``gather``) so that one transaction carries many jobs.  The
number of job rows written per second is bounded (``rows_per_second``): with more jobs
than that, each job's progress is written less often (:meth:`interval`), never its
lease less often than a quarter of the lease (the watch loop kills its job at 80%).

A database that hangs holds up this one thread, never a watch loop: each loop sees its
future not done and judges its lease by the last renewal that committed (unchanged).
"""

from __future__ import annotations

import logging
import threading
import time
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any

from .ports import JobStore

log = logging.getLogger("yippiemove.supervisor")

#: (lease still ours -- None when the database failed --, cancel asked)
Beat = tuple[bool | None, bool]

#: Progress writes per second at most, all jobs together: past this many jobs (at the
#: default interval of 1 s), each job is written less often, and its job process sends
#: its progress lines at that pace too (the supervisor says so in its lease lines,
#: jobs/fence.py), so that the supervisor's wake-ups and writes stay about this many a
#: second however many jobs run (issue 18: 400 a second cost 0.7-0.95 ms of service CPU
#: per job-second at 100-200 jobs).
ROWS_PER_SECOND = 100.0
#: How long the writer waits for more beats once one arrived.
GATHER = 0.05
#: At most this many jobs per transaction (SQLite's variable limit, short transactions).
MAX_BATCH = 500


@dataclass
class _Pending:
    token: int
    snapshot: dict[str, Any]
    future: Future[Beat]


class Heartbeats:
    """Batches the progress writes and lease renewals of this process's jobs."""

    def __init__(
        self,
        store: JobStore,
        owner: str,
        lease_seconds: float,
        progress_interval: float,
        *,
        rows_per_second: float | None = None,
        gather: float = GATHER,
    ) -> None:
        self.store = store
        self.owner = owner
        self.lease_seconds = lease_seconds
        self.progress_interval = progress_interval
        self.rows_per_second = ROWS_PER_SECOND if rows_per_second is None else rows_per_second
        self.gather = gather
        self._pending: dict[str, _Pending] = {}
        self._cond = threading.Condition()
        self._thread: threading.Thread | None = None
        self._closed = False
        #: Jobs that beat through here now (sizes :meth:`interval`).
        self._jobs: set[str] = set()
        #: Figures for the benchmarks and tests: transactions, rows.
        self.transactions = 0
        self.rows = 0
        self._failing = False

    # ------------------------------------------------------------------ watch loops

    def join(self, job_id: str) -> None:
        with self._cond:
            self._jobs.add(job_id)

    def leave(self, job_id: str) -> None:
        with self._cond:
            self._jobs.discard(job_id)

    def interval(self) -> float:
        """How often each job's progress is written now: ``progress_interval``, longer
        when the jobs together would exceed ``rows_per_second``, at most a quarter of
        the lease."""
        with self._cond:
            n = len(self._jobs)
        return self.interval_for(n)

    def interval_for(self, n: int) -> float:
        """:meth:`interval` with ``n`` jobs."""
        spread = n / self.rows_per_second if self.rows_per_second > 0 else 0.0
        return min(max(self.progress_interval, spread), self.lease_seconds / 4)

    def submit(self, job_id: str, token: int, snapshot: dict[str, Any]) -> Future[Beat]:
        """Write ``snapshot`` as the job's progress and renew its lease, soon, with the
        other jobs' beats; the future tells whether the lease is still ours (None: the
        database failed) and whether a cancel was asked."""
        fut: Future[Beat] = Future()
        with self._cond:
            if self._closed:
                fut.set_result((None, False))
                return fut
            old = self._pending.get(job_id)
            if old is not None:  # not written yet: the newer snapshot replaces it
                old.future.cancel()
            self._pending[job_id] = _Pending(token, snapshot, fut)
            self._start()
            self._cond.notify()
        return fut

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify()
            pending, self._pending = self._pending, {}
        for p in pending.values():
            if p.future.set_running_or_notify_cancel():
                p.future.set_result((None, False))

    # ------------------------------------------------------------------ the writer

    def _start(self) -> None:
        if self._thread is None or not self._thread.is_alive():
            self._thread = threading.Thread(
                target=self._loop, name="yippiemove-heartbeats", daemon=True
            )
            self._thread.start()

    def _loop(self) -> None:
        while True:
            with self._cond:
                while not self._pending and not self._closed:
                    self._cond.wait()
                if self._closed:
                    return
            time.sleep(self.gather)  # let the other jobs' beats of this moment arrive
            with self._cond:
                batch = dict(list(self._pending.items())[:MAX_BATCH])
                for job_id in batch:
                    del self._pending[job_id]
            self._write(batch)

    def _write(self, batch: dict[str, _Pending]) -> None:
        live = {k: p for k, p in batch.items() if p.future.set_running_or_notify_cancel()}
        if not live:
            return
        try:
            answers = self.store.heartbeat_many(
                self.owner,
                self.lease_seconds,
                {k: (p.token, p.snapshot) for k, p in live.items()},
            )
        except Exception as exc:
            if not self._failing:
                log.warning("cannot write progress (%d jobs): %s", len(live), exc)
            self._failing = True
            for p in live.values():
                p.future.set_result((None, False))
            return
        if self._failing:
            log.warning("progress writes work again")
            self._failing = False
        self.transactions += 1
        self.rows += len(live)
        for job_id, p in live.items():
            p.future.set_result(answers.get(job_id, (False, False)))
