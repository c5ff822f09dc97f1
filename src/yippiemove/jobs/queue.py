"""The job queue: a small interface of our own, Huey behind it.

The queue only carries job ids.  The control database is the source of truth: a worker
that receives an id *claims* the job there before running it, so an id delivered twice
(re-enqueued after a crash, or by the start-up recovery) runs once.  That also means the
queue needs no acknowledgements or visibility timeouts: a job whose worker died is found
by its expired lease in the database and enqueued again.

Implementations
---------------
:class:`HueyQueue` runs on any Huey storage.  Embedded (the default, ``queue_url =
"sqlite"``): ``SqliteHuey`` in ``data_dir/queue.sqlite``, consumers are threads of the
``serve`` process.  Distributed: ``queue_url = "redis://host:6379/0"`` gives
``RedisHuey`` (pip install redis); then start ``yippiemove serve`` (or more workers) on
each machine with the same ``database_url`` (PostgreSQL) and ``queue_url``.  For a
PostgreSQL-backed Huey, pass any ``huey.Huey`` instance to :class:`HueyQueue` (e.g.
``huey.contrib.sql_huey.SqlHuey`` with a peewee PostgreSQL database).
"""

from __future__ import annotations

import abc
import logging
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

log = logging.getLogger("yippiemove.queue")

__all__ = ["HueyQueue", "JobQueue", "JobRunner", "make_queue"]

#: What a worker does with a job id (the supervisor's ``run_job``).
JobRunner = Callable[[str], None]


class Gate(Protocol):
    """What a worker passes before it takes a message (jobs/admission.py): ``enter``
    blocks until this machine may start one more job (False: the service stops),
    ``leave`` when that job's run ended or there was no message."""

    def enter(self) -> bool: ...

    def leave(self) -> None: ...


class JobQueue(abc.ABC):
    """Deliver job ids to workers, at least once."""

    @abc.abstractmethod
    def enqueue(self, job_id: str, delay: float = 0.0) -> None:
        """Hand a job to some worker (durable: survives a restart of the service), at
        once or after ``delay`` seconds."""

    @abc.abstractmethod
    def start(self, workers: int, runner: JobRunner, gate: Gate | None = None) -> None:
        """Run ``workers`` consumers in this process; each calls ``runner(job_id)``.
        ``gate``: a consumer takes a message only once the gate lets it in, so that a
        job this machine cannot run yet stays in the queue (visible, and free for
        another machine to take)."""

    @abc.abstractmethod
    def stop(self, timeout: float = 30.0) -> None:
        """Stop the consumers, waiting (bounded) for running ``runner`` calls to return."""

    @property
    def running(self) -> bool:
        return False

    def waiting_ids(self) -> set[str] | None:
        """The job ids some queue message will deliver (due now or scheduled), or None
        when this queue cannot tell (then lost messages are not looked for)."""
        return None

    def server_id(self) -> str | None:
        """Who holds the messages: changes when they may all be gone (a Redis server
        restarted: its ``run_id``; the embedded queue's file replaced).  None: unknown."""
        return None


class HueyQueue(JobQueue):
    """:class:`JobQueue` on Huey; consumers are threads in this process."""

    TASK_NAME = "yippiemove.run_job"

    def __init__(
        self, huey: Any, *, poll_interval: float = 0.1, max_poll_delay: float = 1.0
    ) -> None:
        self.huey = huey
        self.poll_interval = poll_interval
        self.max_poll_delay = max_poll_delay
        self._runner: JobRunner | None = None
        self._consumer: Any = None
        self._lock = threading.Lock()
        # Idle workers poll with a backoff up to max_poll_delay; a job enqueued by this
        # process wakes one at once (other processes' jobs wait for the next poll).
        self._wake = threading.Condition()
        self._wakeups = 0
        #: The queue's server did not answer the last read (one warning per outage).
        self._down = False
        self._task = huey.task(name=self.TASK_NAME, retries=0)(self._execute)

    @classmethod
    def sqlite(cls, path: Path) -> HueyQueue:
        """The embedded queue: one SQLite file (WAL), no server."""
        from huey import SqliteHuey

        return cls(SqliteHuey("yippiemove", filename=str(path), results=False, utc=True))

    @classmethod
    def redis(cls, url: str) -> HueyQueue:
        """A queue shared by workers on many machines (needs the ``redis`` package)."""
        from huey import RedisHuey

        return cls(RedisHuey("yippiemove", url=url, results=False, utc=True))

    def _execute(self, job_id: str) -> None:
        runner = self._runner
        if runner is None:  # pragma: no cover - start() sets it before consumers run
            raise RuntimeError("queue consumer without a runner")
        runner(job_id)

    def enqueue(self, job_id: str, delay: float = 0.0) -> None:
        if delay > 0:
            # Huey's scheduler moves it to the queue when due (checked every second).
            self._task.schedule(args=(job_id,), delay=delay)
            return
        self._task(job_id)
        with self._wake:
            self._wakeups += 1
            self._wake.notify()

    def _unreachable(self, exc: Exception) -> None:
        with self._lock:
            first, self._down = not self._down, True
        if first:
            log.warning("job queue: cannot read the queue (%s); trying again", exc)

    def _reachable(self) -> None:
        if self._down:
            with self._lock:
                was, self._down = self._down, False
            if was:
                log.warning("job queue: the queue answers again")

    def pending(self) -> int:
        """Messages waiting in the queue (for tests and monitoring)."""
        return int(self.huey.pending_count())

    def waiting_ids(self) -> set[str] | None:
        """Job ids of the messages due now and of the scheduled ones (the fleet's sweep
        compares them with the jobs ``queued`` in the control database)."""
        ids: set[str] = set()
        for task in [*self.huey.pending(), *self.huey.scheduled()]:
            args = getattr(task, "args", None) or ()
            if getattr(task, "name", "").endswith(self.TASK_NAME) and args:
                ids.add(str(args[0]))
        return ids

    def server_id(self) -> str | None:
        storage = self.huey.storage
        conn = getattr(storage, "conn", None)
        if conn is not None and hasattr(conn, "info"):  # Redis: the server's run id
            return str(conn.info("server").get("run_id"))
        filename = getattr(storage, "filename", None)
        if filename:  # the embedded queue: the file itself
            try:
                st = Path(filename).stat()
            except FileNotFoundError:
                return "missing"
            return f"{st.st_dev}:{st.st_ino}"
        return None

    def start(self, workers: int, runner: JobRunner, gate: Gate | None = None) -> None:
        from huey.consumer import Consumer, Worker

        queue = self

        class _Worker(Worker):
            def loop(self, now: Any = None) -> None:
                if gate is not None and not gate.enter():
                    self.sleep()  # the service stops: until the consumers are stopped
                    return
                failed = False
                try:
                    # Huey's loop logs a traceback at every failed read: with the queue's
                    # server away that is one per worker per second.  One warning per
                    # outage instead; the worker waits and tries again (it never dies).
                    try:
                        task = self.huey.dequeue()
                    except Exception as exc:
                        queue._unreachable(exc)
                        task, failed = None, True
                    else:
                        queue._reachable()
                    if task is not None:
                        self.delay = self.default_delay
                        try:
                            self.huey.execute(task, now)
                        except Exception:
                            log.exception("job queue: task %s failed", task.id)
                finally:
                    if gate is not None:
                        gate.leave()
                if task is None and (failed or not self.huey.storage.blocking):
                    self.sleep()

            def sleep(self) -> None:
                self.delay = min(self.delay, self.max_delay)
                with queue._wake:
                    if not queue._wakeups:
                        queue._wake.wait(self.delay)
                    if queue._wakeups:
                        queue._wakeups -= 1
                        self.delay = self.default_delay
                        return
                self.delay *= self.backoff

        class _EmbeddedConsumer(Consumer):
            worker_class = _Worker

            # The host process (uvicorn) owns the signals; we are stopped by stop().
            def _set_signal_handlers(self) -> None:
                pass

        with self._lock:
            if self._consumer is not None:
                raise RuntimeError("the queue consumers are already running")
            self._runner = runner
            self._consumer = _EmbeddedConsumer(
                self.huey,
                workers=max(1, workers),
                periodic=False,
                initial_delay=self.poll_interval,
                backoff=1.5,
                max_delay=self.max_poll_delay,
                worker_type="thread",
                check_worker_health=False,
            )
            self._consumer.start()
        log.info("job queue: %d worker thread(s)", workers)

    def stop(self, timeout: float = 30.0) -> None:
        with self._lock:
            consumer, self._consumer = self._consumer, None
        if consumer is None:
            return
        consumer.shutdown_timeout = timeout
        consumer.stop_flag.set()
        with self._wake:
            self._wake.notify_all()
        consumer.stop(graceful=True)

    @property
    def running(self) -> bool:
        return self._consumer is not None


def make_queue(queue_url: str, data_dir: Path) -> JobQueue:
    """The queue a setting names: ``sqlite`` (embedded, default) or ``redis://...``."""
    if queue_url in ("", "sqlite"):
        return HueyQueue.sqlite(data_dir / "queue.sqlite")
    if queue_url.startswith(("redis://", "rediss://", "unix://")):
        return HueyQueue.redis(queue_url)
    raise ValueError(f"unknown queue_url {queue_url!r} (use 'sqlite' or 'redis://HOST:PORT/DB')")
