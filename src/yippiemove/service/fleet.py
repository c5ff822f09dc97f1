"""Worker hosts of a fleet: the registry, heartbeats, drains and recovery sweeps.

Every process that runs job workers (``yippiemove serve`` with workers, ``yippiemove
worker``) is a *worker host*, named by ``Settings.host_name``.  It

* **registers** a :class:`~yippiemove.service.db.WorkerHost` row at start (name,
  address, capacity, version, role, pid, start time) -- refused while another live
  process holds the name (:class:`HostNameTaken`);
* **heartbeats** it every ``host_heartbeat_interval`` seconds from a thread, reading
  the ``draining`` flag each time: ``yippiemove worker drain HOST`` sets it, the host
  stops taking jobs and hands its running ones back to the queue (the graceful path of
  a shutdown), and ``undrain`` clears it;
* **sweeps** every ``recovery_interval`` seconds: running jobs whose lease expired
  are taken over (``Service.recover``: a compare-and-set on the job's row, so hosts
  sweeping at once do no harm), and ``queued`` jobs that no queue message will
  deliver are enqueued again (:class:`LostMessages`);
* on a clean stop sets its heartbeat to 0 ("gone"); the row stays for the operator.

The control database is the truth; the queue only carries ids.  Nothing here is needed
for a service with ``--workers 0`` (web and API only), which has no row.
"""

from __future__ import annotations

import contextlib
import logging
import os
import random
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from sqlalchemy import select

from .. import __version__
from ..jobs.vocab import JobStatus
from .config import Settings
from .db import Database, Job, WorkerHost

log = logging.getLogger("yippiemove.fleet")

__all__ = [
    "HostAgent",
    "HostNameTaken",
    "HostView",
    "LostMessages",
    "find_address",
    "list_hosts",
    "process_started_at",
    "set_draining",
    "wait_drained",
]

#: Heartbeats a host may miss before it is shown "gone".
MISSED_BEATS = 3


class HostNameTaken(Exception):
    """Another live process runs as this worker host; the message says which."""


# ---------------------------------------------------------------------- this process


def process_started_at(pid: int) -> float | None:
    """When the process started (seconds since the epoch, at the kernel clock's
    resolution), or None when there is no such process.  Two processes with one pid
    (a pid reused) have different start times."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        fields = stat.rpartition(")")[2].split()
        if fields[0] == "Z":
            return None
        ticks = int(fields[19])
        btime = next(
            int(line.split()[1])
            for line in Path("/proc/stat").read_text().splitlines()
            if line.startswith("btime ")
        )
    except (OSError, IndexError, ValueError, StopIteration):
        return None
    return btime + ticks / os.sysconf("SC_CLK_TCK")


def _remote_endpoints(settings: Settings) -> list[tuple[str, int]]:
    """(host, port) of the control database and the queue server, when remote."""
    out = []
    for url, port in ((settings.database_url, 5432), (settings.queue_url, 6379)):
        with contextlib.suppress(ValueError):
            parts = urlsplit(url)
            if parts.hostname and not url.startswith("sqlite"):
                out.append((parts.hostname, parts.port or port))
    return out


def find_address(settings: Settings) -> str:
    """This host's address as the fleet sees it: ``host_address`` when set, else the
    address of the interface that routes to the control database (or queue) server,
    else of the default route, else 127.0.0.1.  A UDP socket's ``connect`` picks the
    route and sends nothing."""
    if settings.host_address:
        return settings.host_address
    targets = [*_remote_endpoints(settings), ("192.0.2.1", 9)]  # TEST-NET-1: a route only
    for host, port in targets:
        try:
            infos = socket.getaddrinfo(host, port, type=socket.SOCK_DGRAM)
        except OSError:
            continue
        for family, type_, proto, _, addr in infos:
            try:
                with socket.socket(family, type_, proto) as s:
                    s.connect(addr)
                    return str(s.getsockname()[0])
            except OSError:
                continue
    return "127.0.0.1"


# ---------------------------------------------------------------------- the operator's view


@dataclass(frozen=True)
class HostView:
    """One worker host as ``yippiemove hosts`` and ``Service.hosts()`` show it."""

    name: str
    role: str
    address: str
    capacity: int
    version: str
    pid: int
    started: float
    #: Seconds since its last heartbeat (None: it stopped cleanly).
    heartbeat_age: float | None
    draining: bool
    #: up | draining | drained | gone
    state: str
    #: Ids of the jobs it runs now (their lease is in its name).
    running: list[str]

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _state(row: WorkerHost, running: int, now: float, stale_after: float) -> str:
    if not row.heartbeat or now - row.heartbeat > stale_after:
        return "gone"
    if row.draining:
        return "draining" if running else "drained"
    return "up"


def _running_by_host(db: Database) -> dict[str, list[str]]:
    """Running jobs per worker host: the host in the lease owner's identity
    (``host|pid|start``, jobs/supervisor.py), else ``jobs.host``."""
    out: dict[str, list[str]] = {}
    with db.read() as s:
        rows = s.execute(
            select(Job.id, Job.lease_owner, Job.host)
            .where(Job.status == JobStatus.RUNNING)
            .order_by(Job.started, Job.id)
        ).all()
    for job_id, owner, host in rows:
        name = owner.partition("|")[0] if owner else host
        out.setdefault(name or "", []).append(job_id)
    return out


def list_hosts(db: Database, settings: Settings, now: float | None = None) -> list[HostView]:
    """Every registered worker host, by name."""
    now = time.time() if now is None else now
    stale_after = MISSED_BEATS * settings.host_heartbeat_interval
    running = _running_by_host(db)
    with db.read() as s:
        rows = list(s.scalars(select(WorkerHost).order_by(WorkerHost.name)))
    return [
        HostView(
            name=r.name,
            role=r.role,
            address=r.address,
            capacity=r.capacity,
            version=r.version,
            pid=r.pid,
            started=r.started,
            heartbeat_age=round(max(0.0, now - r.heartbeat), 1) if r.heartbeat else None,
            draining=bool(r.draining),
            state=_state(r, len(running.get(r.name, [])), now, stale_after),
            running=running.get(r.name, []),
        )
        for r in rows
    ]


def set_draining(db: Database, name: str, draining: bool) -> bool:
    """Set or clear a host's ``draining`` flag; False when no host has that name."""
    with db.session() as s:
        row = s.get(WorkerHost, name, with_for_update=True)
        if row is None:
            return False
        row.draining = draining
    return True


def wait_drained(
    db: Database,
    settings: Settings,
    name: str,
    timeout: float | None = None,
    poll: float = 0.5,
) -> HostView:
    """Wait until the host runs no job (it notices a drain within one heartbeat, so at
    least 1.5 heartbeats are waited first) or is gone; TimeoutError after ``timeout``."""
    start = time.monotonic()
    earliest = start + 1.5 * settings.host_heartbeat_interval
    while True:
        view = next((h for h in list_hosts(db, settings) if h.name == name), None)
        if view is None:
            raise LookupError(f"no worker host named {name!r}")
        now = time.monotonic()
        if view.state == "gone" or (now >= earliest and not view.running):
            return view
        if timeout is not None and now - start > timeout:
            raise TimeoutError(f"{name} still runs {len(view.running)} job(s) after {timeout:g} s")
        time.sleep(poll)


# ---------------------------------------------------------------------- lost queue messages


class LostMessages:
    """Which ``queued`` jobs no queue message will deliver.

    The queue can lose messages: a Redis restart without persistence empties it, and an
    enqueue that failed while the queue server was away is only logged (the job's row
    is committed; the API answered 201).  Each sweep compares the ids of the jobs
    ``queued`` in the control database with the ids of the queue's messages (due and
    scheduled).  A job missing from the queue at two sweeps in a row is enqueued again;
    one sweep is not enough, because a message is briefly in no list while a worker
    holds it between dequeue and claim (or between a claim that must wait and its
    rescheduling).  When the queue's server changed (Redis ``run_id``, the embedded
    queue's file) every missing job is enqueued at once.  Jobs that wait legitimately
    have their message and are never enqueued twice; a duplicate made by two hosts
    sweeping at the same moment is harmless (a job runs once: whoever claims it).
    """

    def __init__(self) -> None:
        self._missing: set[str] = set()
        self._server: str | None = None

    def lost(self, queued: set[str], waiting: set[str] | None, server: str | None) -> list[str]:
        """The ids to enqueue again, given this sweep's view of the database (``queued``)
        and of the queue (``waiting``: its ids, None when it cannot tell; ``server``)."""
        if waiting is None:
            return []
        missing = queued - waiting
        restarted = self._server is not None and server is not None and server != self._server
        if server is not None:
            self._server = server
        if restarted and missing:
            log.warning("the queue's server changed: %d queued job(s) to enqueue", len(missing))
        lost = missing if restarted else missing & self._missing
        self._missing = missing - lost
        return sorted(lost)


# ---------------------------------------------------------------------- this host


class HostAgent:
    """This process as a worker host: its row, heartbeat, drain, sweeps (module doc).

    ``on_drain()`` / ``on_undrain()`` stop and start taking jobs (the Service's);
    ``sweep()`` runs a recovery sweep.  They are called from the agent's threads, one
    drain transition at a time."""

    def __init__(
        self,
        settings: Settings,
        db: Database,
        *,
        role: str,
        capacity: int,
        on_drain: Callable[[], None],
        on_undrain: Callable[[], None],
        sweep: Callable[[], None],
    ) -> None:
        self.settings = settings
        self.db = db
        self.name = settings.host_name
        self.role = role
        self.capacity = capacity
        self.pid = os.getpid()
        self.started = process_started_at(self.pid) or time.time()
        self.address = ""
        self._on_drain = on_drain
        self._on_undrain = on_undrain
        self._sweep = sweep
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        #: Serialises drain transitions (and the stop after them).
        self._transition = threading.Lock()
        self._closed = False
        #: The drain state asked for (the row's flag) and the one applied.
        self._wanted = False
        self.drained = False
        self._db_failing = False

    # ------------------------------------------------------------------ registry

    def register(self) -> None:
        """Upsert this host's row; :class:`HostNameTaken` while another live process
        holds the name.  A host drained before it restarted stays drained."""
        self.address = find_address(self.settings)
        now = time.time()
        stale_after = MISSED_BEATS * self.settings.host_heartbeat_interval
        with self.db.session() as s:
            row = s.get(WorkerHost, self.name, with_for_update=True)
            if row is None:
                row = WorkerHost(name=self.name, draining=False)
                s.add(row)
            elif (
                row.heartbeat
                and now - row.heartbeat < stale_after
                and not self._mine(row)
                and self._alive(row)
            ):
                raise HostNameTaken(
                    f"another process runs as worker host {self.name!r} "
                    f"(pid {row.pid} at {row.address or 'an unknown address'}, last heartbeat "
                    f"{now - row.heartbeat:.0f} s ago); give this one another name "
                    "(--host-name or YIPPIEMOVE_HOST_NAME), or stop that one"
                )
            row.address = self.address
            row.capacity = self.capacity
            row.version = __version__
            row.role = self.role
            row.pid = self.pid
            row.started = self.started
            row.heartbeat = now
            self._wanted = self.drained = bool(row.draining)
        log.info(
            "worker host %s (%s, %s) registered: %d worker(s)%s",
            self.name,
            self.role,
            self.address,
            self.capacity,
            "; drained (yippiemove worker undrain to take jobs)" if self.drained else "",
        )

    def _mine(self, row: WorkerHost) -> bool:
        return row.pid == self.pid and abs((row.started or 0) - self.started) < 1e-3

    def _alive(self, row: WorkerHost) -> bool:
        """Whether the process holding the row may be alive.  Known only for a process
        at our own address (this machine, or this namespace); elsewhere presumed alive
        while its heartbeat is fresh."""
        if row.address and row.address != self.address:
            return True
        started = process_started_at(row.pid)
        return started is not None and abs(started - (row.started or 0)) < 1.0

    def beat(self) -> None:
        """Renew the heartbeat and read the drain flag (never raises)."""
        try:
            with self.db.session() as s:
                row = s.get(WorkerHost, self.name, with_for_update=True)
                if row is None:  # the operator removed it: we are here all the same
                    row = WorkerHost(
                        name=self.name,
                        address=self.address,
                        capacity=self.capacity,
                        version=__version__,
                        role=self.role,
                        pid=self.pid,
                        started=self.started,
                        draining=self._wanted,
                    )
                    s.add(row)
                elif not self._mine(row):
                    log.error(
                        "worker host %s: the name is now held by pid %d at %s; this "
                        "process no longer heartbeats (two hosts with one name?)",
                        self.name,
                        row.pid,
                        row.address,
                    )
                    return
                row.heartbeat = time.time()
                draining = bool(row.draining)
        except Exception as exc:
            if not self._db_failing:
                log.warning("worker host %s: heartbeat failed: %s", self.name, exc)
            self._db_failing = True
            return
        if self._db_failing:
            log.info("worker host %s: the control database answers again", self.name)
        self._db_failing = False
        if draining != self._wanted:
            self._wanted = draining
            threading.Thread(target=self.apply, name="yippiemove-drain", daemon=True).start()

    def apply(self) -> None:
        """Bring the host to the drain state asked for (one transition at a time)."""
        with self._transition:
            want = self._wanted
            if self._closed or want == self.drained:
                return
            if want:
                log.warning(
                    "worker host %s: draining (no new jobs; running ones handed back)", self.name
                )
                self._on_drain()
            else:
                log.warning("worker host %s: undrained: taking jobs again", self.name)
                self._on_undrain()
            self.drained = want

    # ------------------------------------------------------------------ threads

    def start(self) -> None:
        self._stop.clear()
        beat = threading.Thread(target=self._beat_loop, name="yippiemove-heartbeat", daemon=True)
        self._threads = [beat]
        if self.settings.recovery_interval > 0:
            self._threads.append(
                threading.Thread(target=self._sweep_loop, name="yippiemove-sweep", daemon=True)
            )
        for t in self._threads:
            t.start()

    def _beat_loop(self) -> None:
        while not self._stop.wait(self.settings.host_heartbeat_interval):
            self.beat()

    def _sweep_loop(self) -> None:
        interval = self.settings.recovery_interval
        # Jitter: hosts started together do not sweep in step.
        while not self._stop.wait(interval * random.uniform(0.8, 1.2)):
            try:
                self._sweep()
            except Exception as exc:
                log.warning("worker host %s: recovery sweep failed: %s", self.name, exc)

    def stop(self) -> None:
        """Stop the threads (after a drain transition under way) and mark the host
        gone (heartbeat 0); the row stays for the operator to see."""
        self._stop.set()
        with self._transition:
            self._closed = True
        for t in self._threads:
            t.join(timeout=10)
        self._threads = []
        try:
            with self.db.session() as s:
                row = s.get(WorkerHost, self.name, with_for_update=True)
                if row is not None and self._mine(row):
                    row.heartbeat = 0.0
        except Exception as exc:
            log.warning("worker host %s: cannot mark it stopped: %s", self.name, exc)
