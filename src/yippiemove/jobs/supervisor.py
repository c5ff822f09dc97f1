"""The supervisor: runs one job in its own OS process and watches over it.

A queue worker calls :meth:`Supervisor.run_job` with a job id.  The supervisor

1. **claims** the job in the control database (``queued`` -> ``running``, with a lease in
   its name); a job another worker claimed first is left alone;
2. **starts the jail** (:mod:`yippiemove.jobs.jail`, through :mod:`.launch`: forked
   from a preloaded zygote, or exec'd): a new session and process group, private
   working directory ``data_dir/jobs/<id>/`` (mode 0700), an environment with nothing
   of ours in it, limits set before the job gets any work (``RLIMIT_NOFILE``,
   ``RLIMIT_AS``, ``RLIMIT_CORE`` = 0), the credentials written to its stdin;
3. **streams progress** from the jail's stdout into the database (throttled), renewing
   the lease each time, and checks the cancel flag;
4. **cancels** with SIGTERM to the process group (the mover stops cleanly, flushes its
   state, writes its report), then SIGKILL after a grace period;
5. **restarts** the job, resuming from its state file, when it died of a transient
   cause -- killed by a signal we did not send (OOM killer, an operator's kill -9), a
   hang (no output for ``job_stall_seconds``), or exit 2 with a transient error
   (connection dropped) -- at most ``job_max_restarts`` times per run, with backoff;
6. marks the job ``done``/``failed``/``cancelled``, schedules the deletion of its
   credentials, and has the owner e-mailed.

If the service stops (Ctrl-C, SIGTERM), running jobs are stopped cleanly and put back
to ``queued``; if it is killed, the jails die with it (``PR_SET_PDEATHSIG``, through the
zygote when they were forked) and the next start finds their jobs ``running`` under a
dead owner and resumes them.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import select
import selectors
import signal
import socket
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from ..accounts import own_addresses
from .admission import Admission, default_floor
from .checkpoint import STATE_FILE, StateSignature, prepare_state, signature, take
from .descriptors import WAITING_REASON, FdBudget, shortage
from .fairshare import STALLED, Liveness, LivenessRules, may_checkpoint
from .fence import lease_line
from .heartbeats import Beat, Heartbeats
from .launch import JailProcess, make_launcher
from .ports import (
    Claim,
    CredentialsUnreadable,
    JobStore,
    Notifications,
    SupervisorConfig,
    Waiting,
)
from .progress import interrupt_folders
from .spec import Account, JobSpec
from .vocab import JobStatus, Phase

log = logging.getLogger("yippiemove.supervisor")
T = TypeVar("T")

#: A job put back for a service-side shortage (jobs/descriptors.py) is tried again after
#: this, doubled at each shortage in a row, up to the maximum.
SHORTAGE_DELAY = 0.5
SHORTAGE_MAX_DELAY = 10.0

__all__ = [
    "ProgressTracker",
    "Supervisor",
    "identity_dead",
    "kill_stale_jail",
    "process_identity",
]


# ---------------------------------------------------------------------- process identity


def _start_time(pid: int) -> str | None:
    """The process's start time in clock ticks since boot (tells reused pids apart)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rpartition(")")[2].split()
    return fields[19] if len(fields) > 19 else None


def _this_host(host: str | None) -> str:
    """The host name identities are written with: the configured worker host name
    (``Settings.host_name``), else the machine's."""
    return host or socket.gethostname()


def process_identity(pid: int | None = None, host: str | None = None) -> str:
    """``host|pid|start time`` of a process on this host.

    ``host`` is the worker host's configured name (``Settings.host_name``, passed down in
    :class:`SupervisorConfig`), not necessarily the kernel's host name: several worker
    hosts may share one kernel (network namespaces), and each judges only its own
    processes."""
    pid = os.getpid() if pid is None else pid
    return f"{_this_host(host)}|{pid}|{_start_time(pid)}"


def identity_dead(identity: str | None, host: str | None = None) -> bool:
    """Whether a process named by :func:`process_identity` is known to be gone.

    Only processes of this host (``host``: its configured name) can be checked; others
    are presumed alive (their leases expire instead).
    """
    if not identity:
        return True
    owner_host, _, rest = identity.partition("|")
    pid_s, _, start = rest.partition("|")
    if owner_host != _this_host(host):
        return False
    try:
        pid = int(pid_s)
    except ValueError:
        return True
    return _start_time(pid) != start


def kill_stale_jail(jail: str | None, timeout: float = 10.0, host: str | None = None) -> None:
    """SIGKILL a job process (and its group) left over by a dead supervisor, if alive.

    ``jail`` is the job process's :func:`process_identity` as stored in the job's row;
    a process of another host (``host``: this one's configured name), or a pid reused by
    another process, is left alone.
    """
    if not jail or identity_dead(jail, host):
        return
    owner_host, _, rest = jail.partition("|")
    if owner_host != _this_host(host):
        return
    pid_s, _, start = rest.partition("|")
    pid = int(pid_s)
    log.warning("killing the job process %d left over by a dead supervisor", pid)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)
    deadline = time.monotonic() + timeout
    while _start_time(pid) == start and time.monotonic() < deadline:
        # A zombie whose parent died is reaped by init; its stat says state Z meanwhile.
        with contextlib.suppress(OSError):
            if Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0] == "Z":
                return
        time.sleep(0.02)


# ---------------------------------------------------------------------- progress


class ProgressTracker:
    """Turns the jail's progress lines into the job's progress JSON.

    Adds the rate (bytes/s that crossed the link over the last ``window`` seconds of
    this run: ``bytes_moved``, not messages found already there), the ETA with a range
    (``eta_range``: none until ``min_span`` seconds of samples), and a rate history for a
    graph: ``[[t, bytes moved in this run], ...]`` sampled every ``step`` seconds; when
    it grows past ``max_points`` every other point is dropped and the step doubled, so
    it covers the whole run at a bounded size.  A new job process counts from zero:
    what the ones before it moved is carried (``base``).  A re-run starts a new history
    (service/core.py ``rerun_transfer``).
    """

    def __init__(
        self,
        previous: dict[str, Any] | None = None,
        *,
        max_points: int = 240,
        window: float = 15,
        min_span: float = 3,
    ) -> None:
        previous = previous or {}
        self.history: list[list[float]] = [list(p) for p in previous.get("rate_history", [])]
        self.step = float(previous.get("history_step", 1.0))
        self.max_points = max_points
        self.window = window
        self.min_span = min_span
        #: Bytes moved by the job processes of this run before the current one.
        self.base = int(self.history[-1][1]) if self.history else 0
        self.moved = 0  # by the current job process
        self.recent: deque[tuple[float, int]] = deque()
        self.latest: dict[str, Any] = {
            k: v
            for k, v in previous.items()
            if k not in ("rate_history", "history_step", "rate", "eta", "eta_range")
        }

    def new_attempt(self) -> None:
        """A new job process counts from zero again: do not read that as a negative rate."""
        self.base += self.moved
        self.moved = 0
        self.recent.clear()

    def update(self, line: dict[str, Any]) -> None:
        line = {k: v for k, v in line.items() if k != "type"}
        self.latest.update(line)
        t = float(line.get("t", time.time()))
        self.moved = int(line.get("bytes_moved", line.get("bytes_done", 0)))
        self.recent.append((t, self.base + self.moved))
        while self.recent and t - self.recent[0][0] > self.window:
            self.recent.popleft()

    def _rate_since(self, since: float) -> float | None:
        pts = [p for p in self.recent if p[0] >= since]
        if len(pts) < 2 or pts[-1][0] - pts[0][0] <= 0:
            return None
        (t0, b0), (t1, b1) = pts[0], pts[-1]
        return max(0.0, (b1 - b0) / (t1 - t0))

    def rate(self) -> float | None:
        """Bytes/s over the window; None until it spans ``min_span`` seconds."""
        if len(self.recent) < 2 or self.recent[-1][0] - self.recent[0][0] < self.min_span:
            return None
        return self._rate_since(self.recent[0][0])

    def eta(self, rate: float | None) -> tuple[float, float, float] | None:
        """(estimate, low, high) seconds left at ``rate``, the spread from the rate of the
        window's latest half; None when there is nothing to go by."""
        total = int(self.latest.get("bytes_total", 0))
        done = int(self.latest.get("bytes_done", 0))
        if not rate or total <= done:
            return None
        left = total - done
        recent = self._rate_since(self.recent[-1][0] - self.window / 2) or rate
        fast, slow = max(rate, recent), min(rate, recent)
        high = left / slow * 1.1 if slow > 0 else left / fast * 2
        return left / rate, left / fast * 0.9, high

    def snapshot(self, **extra: Any) -> dict[str, Any]:
        now = time.time()
        moved = self.base + self.moved
        if not self.history or now - self.history[-1][0] >= self.step:
            self.history.append([round(now, 2), moved])
            if len(self.history) > self.max_points:
                self.history = self.history[::2]
                self.step *= 2
        rate = self.rate()
        eta = self.eta(rate)
        out = dict(self.latest)
        out.pop("bytes_moved", None)
        out.update(
            rate=round(rate, 1) if rate is not None else None,
            eta=round(eta[0], 1) if eta is not None else None,
            eta_range=[round(eta[1], 1), round(eta[2], 1)] if eta is not None else None,
            rate_history=self.history,
            history_step=self.step,
            updated=now,
        )
        out.update(extra)
        if out.get("phase") in (Phase.INTERRUPTED, Phase.RESUMING):
            interrupt_folders(out)
        return out


# ---------------------------------------------------------------------- supervisor


@dataclass
class Outcome:
    """How one job process ended."""

    kind: str  # "exited" | "cancelled" | "stopping" | "lost_lease" | "checkpoint"
    returncode: int | None = None
    result: dict[str, Any] | None = None
    stalled: bool = False
    #: Ended by the fair-share rules (jobs/fairshare.py): why, and whether a restart
    #: may cure it (a silent server: yes; too slow, or no data by the deadline: no).
    servers: str | None = None
    servers_transient: bool = False


@dataclass
class Lease:
    """The lease of one claimed job as this supervisor holds it (fencing: docs/design.md
    "Fencing and checkpoints")."""

    token: int
    #: CLOCK_MONOTONIC time taken just before the last renewal that committed (or the
    #: claim): the lease runs ``lease_seconds`` from there, at least.
    renewed_at: float
    checkpointer: _Checkpointer | None = field(default=None, repr=False)


class Supervisor:
    """Runs jobs (one OS process each) for the queue's workers; see the module docstring."""

    def __init__(
        self,
        settings: SupervisorConfig,
        store: JobStore,
        notifier: Notifications,
        enqueue: Any,
        stopping: threading.Event | None = None,
    ) -> None:
        self.settings = settings
        self.store = store
        self.notifier = notifier
        self.enqueue = enqueue
        self.stopping = stopping or threading.Event()
        self.host = settings.host_name or socket.gethostname()
        self.owner = process_identity(host=self.host)
        self._jails: dict[str, JailProcess] = {}
        self.launcher = make_launcher(settings)
        self._jails_lock = threading.Lock()
        self._pokes: dict[str, _Wake] = {}
        #: Jobs a queue worker of this process runs now (run_job), see supervises().
        self._active: set[str] = set()
        #: Checkpoints are taken on threads of their own, never on a watch loop's; two
        #: at a time at most (a copy and a compression each).
        self._checkpoint_slots = threading.BoundedSemaphore(2)
        #: The service process's descriptors (jobs/descriptors.py): no claim without room.
        self.fd_budget = FdBudget()
        #: job id -> the service-side shortages it met in a row (backoff of its retries).
        self._shortages: dict[str, int] = {}
        #: Jobs given room in the budget whose process is not started yet.
        self._starting: set[str] = set()
        #: How many jobs run at once: as many as the processors serve (jobs/admission.py);
        #: the queue's consumers pass it before they take a message (jobs/queue.py Gate).
        self.admission = Admission(
            settings.job_admission_pressure,
            settings.job_admission_floor or default_floor(),
            stopping=self.stopping,
        )
        #: Seconds between a job process's progress lines while few jobs run.
        self._line_every = min(1.0, settings.progress_interval)
        #: One writer for every job's progress and lease (jobs/heartbeats.py).
        self.heartbeats = Heartbeats(
            store, self.owner, settings.lease_seconds, settings.progress_interval
        )

    def close(self) -> None:
        """Stop the launcher's helpers (the zygote); call once no job runs here."""
        self.heartbeats.close()
        self.launcher.close()

    def poke(self, job_id: str) -> None:
        """Look at the job's row now (a cancel), not at the next heartbeat.

        Only reaches a job supervised by this process; others see the flag within
        ``progress_interval`` anyway.
        """
        with self._jails_lock:
            event = self._pokes.get(job_id)
        if event is not None:
            event.set()

    def poke_all(self) -> None:
        """Every watch loop of this process looks now (the service stops or drains)."""
        with self._jails_lock:
            events = list(self._pokes.values())
        for event in events:
            event.ring()

    def running_jails(self) -> dict[str, int]:
        """job id -> pid of the job processes this supervisor runs now."""
        with self._jails_lock:
            return {k: p.pid for k, p in self._jails.items()}

    # ------------------------------------------------------------------ the run

    def run_job(self, job_id: str) -> None:
        """Claim, run and finish one job (the queue's runner; never raises)."""
        token: int | None = None
        with self._jails_lock:
            self._active.add(job_id)
        try:
            if not self._take_room(job_id):
                self._short(job_id, None, None, None)
                return
            claimed_at = time.monotonic()  # before the claim's write: see Lease
            claim = self._claim(job_id)
            if claim is None:
                with self._jails_lock:
                    self._shortages.pop(job_id, None)
                return
            if isinstance(claim, Waiting):
                # Another job writes into the same mailbox, or the customer has as many
                # jobs running as allowed: try again later.
                log.info(
                    "job %s: waiting (%s)",
                    job_id,
                    claim.reason or f"same mailbox as {claim.holder}",
                )
                self.enqueue(job_id, delay=self.settings.mailbox_wait_seconds)
                return
            token = claim.token
            self._supervise(job_id, claim, Lease(claim.token, claimed_at))
        except Exception:
            log.exception("job %s: supervisor error", job_id)
            with contextlib.suppress(Exception):
                self._finish(
                    job_id,
                    token,
                    JobStatus.FAILED,
                    "internal error in the service; the job stopped",
                )
        finally:
            with self._jails_lock:
                self._active.discard(job_id)
                self._starting.discard(job_id)

    def _take_room(self, job_id: str) -> bool:
        """Whether the service's descriptors leave room for one more job, counting the
        jobs being started now (their descriptors are not open yet); if so the room is
        this job's until its process started (or did not)."""
        with self._jails_lock:
            if not self.fd_budget.room(starting=len(self._starting)):
                return False
            self._starting.add(job_id)
            return True

    def supervises(self, job_id: str) -> bool:
        """Whether a queue worker of this process is running the job now (claimed, or
        about to be): a job whose lease names this process but which is not supervised
        here was given up (its lease lost) and may be taken over by the recovery."""
        with self._jails_lock:
            return job_id in self._active

    def _claim(self, job_id: str) -> Claim | Waiting | None:
        s = self.settings
        return self.store.claim(job_id, self.owner, s.lease_seconds, s.job_max_attempts)

    def _supervise(self, job_id: str, claim: Claim, lease: Lease) -> None:
        s = self.settings
        workdir = s.job_dir(job_id)
        workdir.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.chmod(workdir, 0o700)
        tracker = ProgressTracker(claim.progress)
        self._resume_state(job_id, workdir, claim, tracker)
        lease.checkpointer = _Checkpointer(self, job_id, lease, workdir / STATE_FILE)
        restarts = 0
        t = lease.token
        while True:
            if self.stopping.is_set():
                self._requeue(job_id, lease)
                return
            try:
                spec = self._spec(job_id, claim)
            except CredentialsUnreadable as exc:
                self._finish(job_id, t, JobStatus.FAILED, str(exc))
                return
            if spec is None:
                self._finish(
                    job_id,
                    t,
                    JobStatus.FAILED,
                    "the passwords of this transfer were deleted; start it again",
                )
                return
            unsigned = [
                side
                for side, acc, public in (
                    ("source", spec.source, claim.source),
                    ("dest", spec.dest, claim.dest),
                )
                if public.get("oauth_provider") and acc.oauth is None
            ]
            if unsigned:  # "forget my sign-in": nothing to log in with until a new one
                self._finish(
                    job_id,
                    t,
                    JobStatus.FAILED,
                    "the sign-in of this transfer was forgotten; sign in again to continue",
                    tracker,
                    {"reauth": unsigned},
                )
                return
            tracker.new_attempt()
            try:
                proc = self._spawn(job_id, workdir, spec, lease)
            except OSError as exc:
                if not shortage(exc):
                    raise
                self._short(job_id, lease, tracker, exc)
                return
            finally:
                del spec
                with self._jails_lock:
                    self._starting.discard(job_id)
            with self._jails_lock:
                self._shortages.pop(job_id, None)
            if proc is None:  # the lease was taken over meanwhile
                return
            start_mail = None if claim.notified_start else self._start_mail(job_id, claim)
            try:
                out = self._watch(job_id, proc, tracker, lease)
            finally:
                if start_mail is not None:
                    start_mail.cancel()
                with self._jails_lock:
                    self._jails.pop(job_id, None)
            log.info("job %s: job process ended: %s rc=%s", job_id, out.kind, out.returncode)
            if out.kind == "lost_lease":
                self._give_back(job_id, lease, tracker)
                return
            if out.kind == "stopping":
                self._requeue(job_id, lease, tracker)
                return
            if out.kind == "cancelled":
                self._finish(job_id, t, JobStatus.CANCELLED, None, tracker)
                return
            if out.kind == "checkpoint" and not (
                out.returncode in (0, 1) and out.result is not None
            ):
                self._checkpoint(job_id, lease, tracker)
                return
            result = out.result or {}
            transient, why = self._transient(out)
            if transient:
                if restarts < s.job_max_restarts:
                    restarts += 1
                    delay = s.restart_delay * 2 ** (restarts - 1)
                    log.warning(
                        "job %s: %s; restarting in %.1f s (%d of %d)",
                        job_id,
                        why,
                        delay,
                        restarts,
                        s.job_max_restarts,
                    )
                    if not self._pause(job_id, lease, tracker, delay):
                        return
                    continue
                self._finish(
                    job_id,
                    t,
                    JobStatus.FAILED,
                    f"{why}; gave up after {restarts} restarts",
                    tracker,
                )
                return
            if out.result is None:  # died without a word (an uncaught exception...)
                self._finish(job_id, t, JobStatus.FAILED, why, tracker)
            elif out.returncode == 0:
                self._finish(job_id, t, JobStatus.DONE, None, tracker, result)
            elif out.returncode == 1:
                totals = result.get("totals") or {}
                n = int(totals.get("failed", 0))
                msg = f"{n} message{'s' if n != 1 else ''} could not be copied (see the report)"
                self._finish(job_id, t, JobStatus.DONE, msg, tracker, result)
            else:
                self._finish(job_id, t, JobStatus.FAILED, why, tracker, result)
            return

    @staticmethod
    def _transient(out: Outcome) -> tuple[bool, str]:
        """Whether the job died of something a restart may cure, and a sentence why."""
        rc = out.returncode
        result = out.result
        if out.servers is not None:
            return out.servers_transient, out.servers
        if out.stalled:
            return True, "the job process hung (no progress) and was killed"
        if rc is not None and rc < 0:
            try:
                name = signal.Signals(-rc).name
            except ValueError:
                name = f"signal {-rc}"
            return True, f"the job process was killed ({name})"
        if rc == 2 and result is not None:
            return bool(result.get("transient")), str(result.get("error") or "the job stopped")
        if result is None:
            return False, f"the job process ended unexpectedly (exit status {rc})"
        return False, str((result or {}).get("error") or "")

    # ------------------------------------------------------------------ the jail

    def _spec(self, job_id: str, claim: Claim) -> JobSpec | None:
        """The jail's stdin: the job and, only here, its passwords and OAuth2 grants."""
        creds = self.store.credentials(job_id)
        if creds is None:
            return None
        s = self.settings
        source = _account(claim.source, creds, "source")
        dest = _account(claim.dest, creds, "dest")
        return JobSpec(
            source=source,
            dest=dest,
            oauth_config=s.oauth_config if source.oauth or dest.oauth else None,
            folders=claim.folders,
            job_id=job_id,
            ca_file=s.ca_file,
            allow_insecure_hosts=s.allow_insecure_hosts,
            egress_allow=s.egress_allow,
            egress_deny=s.egress_deny,
            egress_own=own_addresses(),
            connections=s.job_connections,
            # A line a second at most: each one wakes the watch loop (issue 18).
            progress_interval=self._line_every,
            fenced=True,
            lease_wait=min(5.0, max(1.0, self._margin())),
        )

    def _spawn(self, job_id: str, workdir: Path, spec: JobSpec, lease: Lease) -> JailProcess | None:
        """Start the job process and give it its spec and its first lease line; its stdin
        stays open for the next ones (jobs/fence.py).  None: the lease is not ours."""
        proc = self.launcher.spawn(workdir)
        try:
            with self._jails_lock:
                self._jails[job_id] = proc
            if not self.store.jail_started(
                job_id, self.owner, lease.token, process_identity(proc.pid, self.host)
            ):
                log.error("job %s: lease taken over before its job process started", job_id)
                proc.signal_group(signal.SIGKILL)
                with self._jails_lock:
                    self._jails.pop(job_id, None)
                proc.stdin.close()
                proc.reap()
                return None
            proc.stdin.write(spec.to_json().encode() + b"\n")
            proc.stdin.flush()
            os.set_blocking(proc.stdin.fileno(), False)
            self._send_lease(proc, lease)
        except BaseException:
            with self._jails_lock:
                self._jails.pop(job_id, None)
            with contextlib.suppress(BaseException):
                proc.stdin.close()
            proc.reap()
            raise
        log.info("job %s: job process %d started", job_id, proc.pid)
        return proc

    def _watch(
        self, job_id: str, proc: JailProcess, tracker: ProgressTracker, lease: Lease
    ) -> Outcome:
        """Read progress until the job process ends; renew the lease; cancel; stop.

        Long for a reason: one select() loop whose timers (lease renewal, stall, SIGTERM
        grace, progress writes) share its state; split up, each part would need them all.
        """
        s = self.settings
        fd = proc.stdout_fd
        os.set_blocking(fd, False)
        sel = selectors.DefaultSelector()
        sel.register(fd, selectors.EVENT_READ)
        # Woken by output, by a poke (a cancel, and then its heartbeat's answer); else
        # at its next timer (the next write, the lease's 80%, the stall, the kill
        # grace, the next checkpoint), at most WATCH_TICK later: no polling (issue 18).
        poke = _Wake()
        sel.register(poke.fd, selectors.EVENT_READ)
        beats = self.heartbeats
        beats.join(job_id)
        buf = b""
        eof = False
        result: dict[str, Any] | None = None
        last_output = last_renewal = time.monotonic()
        last_write = 0.0
        started = last_output
        live = Liveness(
            LivenessRules(s.job_stall_seconds, s.job_min_rate, s.job_rate_window), started
        )
        servers: str | None = None
        servers_transient = False
        term_at: float | None = None
        reason: str | None = None  # why we signalled it: cancelled | stopping | lost_lease
        stalled = False
        with self._jails_lock:
            self._pokes[job_id] = poke
        # The lease is renewed by the heartbeats' writer (jobs/heartbeats.py): a database
        # that hangs (a partition, a lock) never holds up this loop for longer than the
        # lease.
        renewal: Future[Beat] | None = None
        first_write = True
        hooked: Future[Beat] | None = None  # the write a poke woke us for the answer of
        write_every = beats.interval()
        timeout = 0.0
        renewal_from = 0.0
        ckpt = lease.checkpointer
        grants = _GrantSaver(self, job_id, lease.token)
        folders_done = int(tracker.latest.get("folders_done") or 0)
        last_ckpt = time.monotonic()
        try:
            while True:
                if not eof:
                    for key, _ev in sel.select(timeout):
                        if key.fd == poke.fd:
                            poke.drain()
                            continue
                        try:
                            chunk = os.read(fd, 1 << 16)
                        except BlockingIOError:
                            continue
                        if not chunk:
                            eof = True
                            break
                        last_output = time.monotonic()
                        buf += chunk
                        *lines, buf = buf.split(b"\n")
                        for raw in lines:
                            msg = _parse(raw)
                            if msg is None:
                                continue
                            if msg.get("type") == "progress":
                                live.update(msg, time.monotonic())
                                msg.pop("traffic", None)
                                msg.pop("retry_until", None)
                                tracker.update(msg)
                                done_now = int(msg.get("folders_done") or 0)
                                if done_now > folders_done and ckpt is not None:
                                    ckpt.request()  # a folder ended: checkpoint
                                folders_done = max(folders_done, done_now)
                            elif msg.get("type") == "result":
                                result = msg
                            elif msg.get("type") == "grant":
                                grants.add(msg)
                else:
                    time.sleep(0.05)
                grants.pump()
                exited = proc.exited()
                now = time.monotonic()
                ok: bool | None = None
                cancel = False
                if renewal is None and (now - last_write >= write_every or poke.is_set()):
                    poked = poke.is_set()
                    if poked:
                        # Only when set: a poke landing between the test and an
                        # unconditional clear was wiped, and the write it came for
                        # (which reads the cancel) was then answered with no wake,
                        # up to WATCH_TICK later (5.1 s in a CI run, issue 19 session).
                        poke.clear()
                    last_write = now
                    write_every = beats.interval()
                    renewal_from = time.monotonic()
                    renewal = beats.submit(job_id, lease.token, tracker.snapshot())
                    if poked or first_write:
                        # A cancel waits for this answer: wake up for it.  The first
                        # write too: the job's row said "running" from its claim, and a
                        # cancel made before this loop was there to be poked (the job
                        # process starting, most of a second on a busy machine) found
                        # nobody to poke; this write reads it (a 5.2 s cancel in CI).
                        renewal.add_done_callback(poke.ring)
                    first_write = False
                    # Otherwise the answer is read at the next wake (the job's next
                    # progress line, at most WATCH_TICK): one wake a beat fewer.
                if renewal is not None and poke.is_set() and renewal is not hooked:
                    # A cancel came while a write was on its way: wake up for that
                    # answer, then write again at once to read the flag (not at the next
                    # progress line or WATCH_TICK, seconds away).
                    hooked = renewal
                    renewal.add_done_callback(poke.ring)
                if renewal is not None and renewal.done():
                    try:
                        ok, cancel = renewal.result()
                    except Exception:  # cancelled: the writer has stopped
                        ok, cancel = None, False
                    renewal = None
                    if ok:
                        last_renewal = now
                        lease.renewed_at = renewal_from
                        if not exited and reason != "lost_lease":
                            self._send_lease(proc, lease)
                if reason != "lost_lease" and (
                    ok is False or now - last_renewal > s.lease_seconds * 0.8
                ):
                    # Someone else owns the job now (or we cannot prove we do: the
                    # database did not answer): never let two movers write the same
                    # mailbox.  The job process stopped writing at its deadline already.
                    log.error("job %s: lease lost; killing its job process", job_id)
                    proc.signal_group(signal.SIGKILL)
                    reason = "lost_lease"
                if cancel and reason is None and not exited:
                    reason = "cancelled"
                    proc.signal_group(signal.SIGTERM)
                    term_at = now
                if (
                    ckpt is not None
                    and s.checkpoint_interval > 0
                    and now - last_ckpt >= s.checkpoint_interval
                    and reason is None
                ):
                    last_ckpt = now
                    ckpt.request()
                if self.stopping.is_set() and reason is None and not exited:
                    reason = "stopping"
                    proc.signal_group(signal.SIGTERM)
                    term_at = now
                if reason is None and not exited and now - last_output > s.job_stall_seconds:
                    log.error("job %s: no output for %.0f s; killing it", job_id, now - last_output)
                    stalled = True
                    reason = "stalled"
                    proc.signal_group(signal.SIGKILL)
                if reason is None and not exited:
                    verdict = live.verdict(now)
                    over = s.job_max_seconds > 0 and now - started > s.job_max_seconds
                    if verdict is None and over and live.moving(now):
                        # Long but moving: checkpoint (SIGTERM flushes its state) and
                        # give the worker to the jobs queued behind it -- once this run
                        # has stored something new, so that every run moves the job on.
                        if may_checkpoint(tracker.latest):
                            log.info("job %s: ran %.0f s; checkpointing", job_id, now - started)
                            reason = "checkpoint"
                    elif verdict is not None or over:
                        servers = (
                            live.why(verdict)
                            if verdict is not None
                            else f"the mail servers moved no data by the maximum duration "
                            f"of a run ({s.job_max_seconds:g} s)"
                        )
                        servers_transient = verdict == STALLED
                        log.error("job %s: %s; stopping it", job_id, servers)
                        reason = "servers"
                    if reason is not None:
                        proc.signal_group(signal.SIGTERM)
                        term_at = now
                if term_at is not None and now - term_at > s.job_kill_grace and not exited:
                    proc.signal_group(signal.SIGKILL)
                    term_at = None
                if exited and (eof or now - last_output > 2):
                    # Output left in the pipe is read first: after a freeze (SIGSTOP)
                    # the select above may have timed out with the result line waiting.
                    if eof or not _readable(fd):
                        break
                # Only timers that can still fire: one whose deadline passed without
                # effect (a checkpoint while cancelling, the stall of a job being
                # killed) would make this loop spin.
                quiet = reason is None and not exited
                timeout = _next_wake(
                    now,
                    (
                        last_write + write_every if renewal is None else None,
                        now if renewal is None and poke.is_set() else None,  # write now
                        term_at + s.job_kill_grace if term_at is not None and not exited else None,
                        last_output + s.job_stall_seconds if quiet else None,
                        last_renewal + s.lease_seconds * 0.8 if reason != "lost_lease" else None,
                        last_ckpt + s.checkpoint_interval
                        if quiet and ckpt is not None and s.checkpoint_interval > 0
                        else None,
                        last_output + 2 if exited else None,
                    ),
                )
        finally:
            beats.leave(job_id)
            with self._jails_lock:
                self._pokes.pop(job_id, None)
            sel.close()
            poke.close()
            with contextlib.suppress(Exception):
                proc.stdin.close()
            rc = proc.reap()  # stray children in its group are SIGKILLed first
            if reason != "lost_lease":
                grants.flush(timeout=min(10.0, s.lease_seconds / 2))
            cpu = float(tracker.latest.get("cpu_seconds", 0.0)) + proc.cpu
            tracker.latest["cpu_seconds"] = round(cpu, 3)
            if reason != "lost_lease":
                with contextlib.suppress(Exception):
                    self.store.jail_ended(job_id, self.owner, lease.token)
        if result is not None and result.get("lease_lost") and reason is None:
            # The job stopped itself at the fence (no renewal reached it in time): not
            # an error of the servers.  Restarted if the lease is still ours (_pause).
            log.warning("job %s: its job process stopped at the fence (lease lost)", job_id)
        if reason in ("cancelled", "stopping", "lost_lease", "checkpoint"):
            return Outcome(reason, rc, result)
        if servers is not None and not (rc in (0, 1) and result is not None):
            return Outcome(
                "exited", rc, result, servers=servers, servers_transient=servers_transient
            )
        return Outcome("exited", rc, result, stalled=stalled)

    def _store_grants(self, job_id: str, token: int, tokens: dict[str, str]) -> None:
        """Store the newest rotated refresh token of each side (``tokens``: side ->
        token, see :class:`_GrantSaver`).  Never logs a token."""
        for side, refresh in tokens.items():
            try:
                grant = {"refresh_token": refresh}
                stored = self.store.store_grant(job_id, self.owner, token, side, grant)
            except Exception as exc:  # a database error: the next rotation tries again
                log.warning(
                    "job %s: cannot store the %s's new sign-in: %s",
                    job_id,
                    side,
                    type(exc).__name__,
                )
                continue
            if not stored:
                log.info(
                    "job %s: the %s's new sign-in was not stored (lease or credentials gone)",
                    job_id,
                    side,
                )

    def _heartbeat(
        self, job_id: str, token: int, snapshot: dict[str, Any]
    ) -> tuple[bool | None, bool]:
        """Write progress and renew the lease: (lease ok, or None if the DB failed; cancel?).
        ``snapshot``: the tracker's, taken on the caller's thread."""
        try:
            return self.store.heartbeat(
                job_id,
                self.owner,
                token,
                self.settings.lease_seconds,
                lambda attempts: {**snapshot, "attempt": attempts},
            )
        except Exception as exc:
            log.warning("job %s: cannot write progress: %s", job_id, exc)
            return None, False

    # ------------------------------------------------------------------ fencing

    def _margin(self) -> float:
        """How long before the database's lease expiry the job process stops writing."""
        s = self.settings
        return s.lease_margin if s.lease_margin > 0 else min(5.0, 0.25 * s.lease_seconds)

    def _send_lease(self, proc: JailProcess, lease: Lease) -> None:
        """Tell the job process how long it may write (jobs/fence.py): the lease runs
        from before the renewal's database write, less the margin."""
        deadline = lease.renewed_at + self.settings.lease_seconds - self._margin()
        # With many jobs each reports less often (the pace of the progress writes,
        # jobs/heartbeats.py): supervision costs grow with events, not jobs x seconds.
        with self._jails_lock:  # jobs with a process, this one included from its start
            n = len(self._jails)
        every = self.heartbeats.interval_for(n)
        try:
            proc.stdin.write(
                lease_line(deadline, lease.token, every if every > self._line_every else None)
            )
            proc.stdin.flush()
        except (BlockingIOError, BrokenPipeError, ValueError, OSError):
            # A job that reads none (stuck, or gone): it will stop at its deadline.
            pass

    def _resume_state(
        self, job_id: str, workdir: Path, claim: Claim, tracker: ProgressTracker
    ) -> None:
        """The state the job resumes from: the local file or the checkpoint
        (jobs/checkpoint.py); the progress says which."""
        host = self.settings.host_name
        try:
            prepared = prepare_state(
                workdir,
                host=host,
                last_host=claim.last_host,
                load=lambda: self.store.load_checkpoint(job_id),
            )
        except Exception:
            log.exception("job %s: cannot prepare its state; it starts from what is local", job_id)
            return
        if prepared.source != "empty" or claim.last_host is not None:
            log.info(
                "job %s: resuming on %s from the %s state (%d messages known)",
                job_id,
                host or "this host",
                prepared.source,
                prepared.messages,
            )
        tracker.latest["resumed_from"] = {
            "state": prepared.source,
            "messages_known": prepared.messages,
            "host": host,
            "checkpoint_host": prepared.host,
        }

    def _final_checkpoint(self, lease: Lease | None) -> None:
        """The run stops here (requeue, maximum duration): store its state first."""
        if lease is not None and lease.checkpointer is not None:
            lease.checkpointer.now()

    def _pause(self, job_id: str, lease: Lease, tracker: ProgressTracker, seconds: float) -> bool:
        """Sleep between restarts, keeping the lease; False if the job must not go on."""
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            t0 = time.monotonic()
            ok, cancel = self._heartbeat(job_id, lease.token, tracker.snapshot())
            if ok is False:
                return False
            if ok:
                lease.renewed_at = t0
            if cancel:
                self._finish(job_id, lease.token, JobStatus.CANCELLED, None, tracker)
                return False
            if self.stopping.is_set():
                self._requeue(job_id, lease, tracker)
                return False
            time.sleep(min(0.2, max(0.0, deadline - time.monotonic())))
        return True

    # ------------------------------------------------------------------ endings

    def _requeue(self, job_id: str, lease: Lease, tracker: ProgressTracker | None = None) -> None:
        """The service is stopping: give the job back, to resume at the next start
        (here or on another host: its state is checkpointed first)."""
        self._final_checkpoint(lease)
        progress = tracker.snapshot(phase=Phase.INTERRUPTED) if tracker is not None else None
        if not self.store.requeue(job_id, self.owner, lease.token, progress):
            return
        with contextlib.suppress(Exception):
            self.enqueue(job_id)
        log.info("job %s: put back in the queue (service stopping)", job_id)

    def _short(
        self,
        job_id: str,
        lease: Lease | None,
        tracker: ProgressTracker | None,
        exc: OSError | None,
    ) -> None:
        """The service is short of descriptors (``exc`` None: the budget says so before the
        claim) or of descriptors, processes or memory (``exc``: starting the job process
        failed): the job stays, or goes back, in the queue, visibly waiting, and is tried
        again after a backoff.  Never a failure of the customer's job."""
        with self._jails_lock:
            n = self._shortages.get(job_id, 0)
            self._shortages[job_id] = n + 1
        delay = min(SHORTAGE_MAX_DELAY, SHORTAGE_DELAY * 2**n)
        if exc is None:
            # Shown once per wait (a write of the control database), not at every retry.
            if n == 0 and not self.store.waiting(job_id, WAITING_REASON):
                with self._jails_lock:  # not queued any more (cancelled, taken)
                    self._shortages.pop(job_id, None)
                return
            log.info("job %s: %s; next try in %.1f s", job_id, WAITING_REASON, delay)
        else:
            assert lease is not None and tracker is not None
            # A restart's spawn: what the runs before it did goes with the job (unchanged
            # state is not stored again); short of descriptors, this may fail too.
            with contextlib.suppress(Exception):
                self._final_checkpoint(lease)
            progress = tracker.snapshot(phase=Phase.WAITING, waiting_reason=WAITING_REASON)
            if not self.store.requeue(job_id, self.owner, lease.token, progress):
                return
            log.warning(
                "job %s: cannot start its job process, the service is short of resources "
                "(%s); put back in the queue, next try in %.1f s (raise the open-files "
                "limit or lower --workers)",
                job_id,
                exc,
                delay,
            )
        with contextlib.suppress(Exception):
            self.enqueue(job_id, delay=delay)

    def _give_back(self, job_id: str, lease: Lease, tracker: ProgressTracker) -> None:
        """The lease could not be renewed in time (the database did not answer, or too
        slowly) and the job process was killed: if nobody took the job over meanwhile
        (the write is fenced by the token), put it back in the queue now instead of
        leaving it ``running`` until a recovery sweep notices its expired lease."""
        progress = tracker.snapshot(phase=Phase.RESUMING)
        try:
            if not self.store.requeue(job_id, self.owner, lease.token, progress):
                return  # another host has it: nothing to give back
            self.enqueue(job_id)
        except Exception as exc:  # the database is still away: the sweep will do it
            log.warning("job %s: cannot give the job back yet: %s", job_id, exc)
            return
        log.info("job %s: lease lost; put back in the queue", job_id)

    def _checkpoint(self, job_id: str, lease: Lease, tracker: ProgressTracker) -> None:
        """A run reached the maximum duration while moving data: its state is flushed;
        put it at the back of the queue (behind other customers' jobs) to resume."""
        mark = max(
            int(tracker.latest.get("checkpoint_mark") or 0),
            int(tracker.latest.get("messages_done") or 0),
        )
        progress = tracker.snapshot(phase=Phase.RESUMING, checkpoint_mark=mark)
        tracker.latest["checkpoint_mark"] = mark
        self._final_checkpoint(lease)
        if not self.store.requeue(job_id, self.owner, lease.token, progress, checkpoint=True):
            return
        with contextlib.suppress(Exception):
            self.enqueue(job_id)
        log.info("job %s: checkpointed and put back in the queue (maximum duration)", job_id)

    def _finish(
        self,
        job_id: str,
        token: int | None,
        status: JobStatus,
        error: str | None,
        tracker: ProgressTracker | None = None,
        result: dict[str, Any] | None = None,
    ) -> None:

        def final(stored: dict[str, Any]) -> dict[str, Any]:
            progress = tracker.snapshot() if tracker is not None else dict(stored)
            if result is not None and result.get("progress"):
                progress.update(result["progress"])
            if result is not None and result.get("totals"):
                progress["totals"] = result["totals"]
            if result is not None and result.get("reauth"):
                # The provider refused a token (consent revoked): sign in again there
                # (the service's error code ``reauth``, issue 16).
                progress["reauth"] = [str(s) for s in result["reauth"]][:2]
            progress.pop("failure", None)
            if result is not None and isinstance(result.get("failure"), dict):
                # Why it stopped, for the customer's message (policy/failures.py).
                f = result["failure"]
                progress["failure"] = {"kind": str(f.get("kind")), "side": f.get("side")}
            progress.update(phase=status, rate=0.0, eta=None, eta_range=None, current=[])
            if status == JobStatus.DONE:
                progress["folders_done"] = progress.get("folders_total", 0)
            else:  # cancelled or failed: what was not finished says so
                interrupt_folders(progress)
            return progress

        report = self.settings.job_dir(job_id) / "report.json"
        report_path = str(report) if report.exists() else None
        email = self.store.finish(job_id, self.owner, token, status, error, final, report_path)
        if email is None:
            return
        log.info("job %s: %s%s", job_id, status, f" ({error})" if error else "")
        view = self.store.mail_view(job_id)
        if view.get("quiet"):  # a staged job's top-up pass: its history says it, no mail
            return
        if view.get("batch_id"):  # one summary per batch, when its last job ends
            batch = self.store.batch_summary(job_id)
            if batch is not None:
                self.notifier.batch_done(batch["email"], batch)
            if status == JobStatus.DONE:  # the end user's own notice, when asked for
                try:
                    notice = self.store.end_user_notice(job_id)
                    if notice is not None:
                        self.notifier.end_user_done(notice["to"], notice["job"])
                except Exception:  # a mail is never worth a job: logged, dropped
                    log.exception("job %s: the end user's notice could not be sent", job_id)
        elif status == JobStatus.DONE:
            self.notifier.job_done(email, view)
        elif status == JobStatus.FAILED:
            self.notifier.job_failed(email, view)

    def _start_mail(self, job_id: str, claim: Claim) -> threading.Timer | None:
        """The start mail of this run, once it has lasted ``start_mail_after`` seconds
        (cancelled when it ends sooner: a short run or re-run sends no start mail; a
        job of a batch sends none, its batch has a summary).  Marked sent when sent."""
        view = self.store.mail_view(job_id)
        if view.get("batch_id") or view.get("quiet"):
            return None

        def send() -> None:
            try:
                view = self.store.mail_view(job_id)
                if view["status"] != JobStatus.RUNNING:
                    return
                claim.notified_start = True
                self.store.mark_start_notified(job_id)
                self.notifier.job_started(claim.email, view)
            except Exception:  # a mail is never worth a job: logged, dropped
                log.exception("job %s: the start mail could not be sent", job_id)

        timer = threading.Timer(max(0.0, self.settings.start_mail_after), send)
        timer.daemon = True
        timer.name = f"start-mail-{job_id[:8]}"
        timer.start()
        return timer


def _account(public: dict[str, Any], creds: dict[str, Any], side: str) -> Account:
    """A job's account from its stored public part and its credentials blob: the
    password, or the OAuth2 grant (``source_oauth``/``dest_oauth``) when it has one."""
    grant = creds.get(f"{side}_oauth")
    return Account(
        host=str(public["host"]),
        port=int(public["port"]),
        security=str(public["security"]),
        username=str(public["username"]),
        password=str(creds.get(f"{side}_password") or ""),
        oauth=grant if isinstance(grant, dict) else None,
    )


class _GrantSaver:
    """A job's ``grant`` lines (the provider rotated a side's refresh token) stored so
    that a re-run, a resume or a staged top-up signs in with the newest one: a provider
    that revokes the old token at rotation would refuse it.  One store at a time, on a
    thread of its own (the watch loop never waits on the database), always the newest
    token of each side (two rotations never stored out of order); :meth:`flush` before
    the job's end is recorded."""

    def __init__(self, sup: Supervisor, job_id: str, token: int) -> None:
        self.sup, self.job_id, self.token = sup, job_id, token
        self.pending: dict[str, str] = {}
        self.running: Future[None] | None = None

    def add(self, msg: dict[str, Any]) -> None:
        side, grant = msg.get("side"), msg.get("grant")
        if side in ("source", "dest") and isinstance(grant, dict):
            refresh = grant.get("refresh_token")
            if isinstance(refresh, str) and refresh:
                self.pending[str(side)] = refresh
        self.pump()

    def pump(self) -> None:
        if self.pending and (self.running is None or self.running.done()):
            batch, self.pending = self.pending, {}
            self.running = _in_thread(self.sup._store_grants, self.job_id, self.token, batch)

    def flush(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while self.running is not None and (self.pending or not self.running.done()):
            with contextlib.suppress(Exception):
                self.running.result(timeout=max(0.0, deadline - time.monotonic()))
            if time.monotonic() >= deadline:
                log.warning("job %s: a new sign-in could not be stored in time", self.job_id)
                return
            self.pump()


#: The longest a watch loop sleeps with nothing to do (the liveness rules, a job process
#: that ended with its output still held open, and the database's answers are looked at
#: this often at least; the service stopping pokes every loop, :meth:`Supervisor.poke_all`).
#: It was 1 s: with each job reporting every few seconds (many jobs, jobs/heartbeats.py)
#: this tick was most of the wake-ups.
WATCH_TICK = 5.0


def _next_wake(now: float, due: tuple[float | None, ...]) -> float:
    """Seconds until the earliest of the ``due`` times (None: not set), within
    [10 ms, WATCH_TICK] (the floor: a deadline that stays past never makes a loop spin)."""
    soonest = min((t for t in due if t is not None), default=now + WATCH_TICK)
    return min(WATCH_TICK, max(0.01, soonest - now))


class _Wake:
    """Wakes a watch loop from another thread (a cancel, its heartbeat's answer): an
    eventfd in its selector, and a flag for the poke."""

    def __init__(self) -> None:
        self.fd = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
        self._poked = False
        #: A late ring (a heartbeat answered after the loop ended) must never write to
        #: the descriptor number once it is closed and perhaps reused.
        self._lock = threading.Lock()

    def set(self) -> None:  # a poke: look at the job's row now
        self._poked = True
        self.ring()

    def is_set(self) -> bool:
        return self._poked

    def clear(self) -> None:
        self._poked = False

    def ring(self, _future: object = None) -> None:
        with self._lock, contextlib.suppress(OSError):
            if self.fd >= 0:
                os.eventfd_write(self.fd, 1)

    def drain(self) -> None:
        with contextlib.suppress(OSError):
            os.eventfd_read(self.fd)

    def close(self) -> None:
        with self._lock:
            fd, self.fd = self.fd, -1
        with contextlib.suppress(OSError):
            os.close(fd)


def _in_thread(fn: Callable[..., T], *args: Any) -> Future[T]:
    """``fn(*args)`` on a daemon thread of its own (a call that hangs on a dead database
    connection never holds up the process's exit, as a pool's thread would)."""
    fut: Future[T] = Future()

    def run() -> None:
        if not fut.set_running_or_notify_cancel():
            return
        try:
            fut.set_result(fn(*args))
        except BaseException as exc:
            fut.set_exception(exc)

    threading.Thread(target=run, name="yippiemove-lease", daemon=True).start()
    return fut


def _readable(fd: int) -> bool:
    """Whether ``fd`` has data (or EOF) to read now."""
    try:
        return bool(select.select([fd], [], [], 0)[0])
    except (OSError, ValueError):
        return False


def _parse(raw: bytes) -> dict[str, Any] | None:
    try:
        msg = json.loads(raw)
    except ValueError:
        return None
    return msg if isinstance(msg, dict) else None


class _Checkpointer:
    """Takes and stores one job's checkpoints (jobs/checkpoint.py) on the supervisor's
    checkpoint threads, never on the watch loop's: a request while one is being taken
    asks for one more after it; an unchanged state file is not stored again."""

    def __init__(self, sup: Supervisor, job_id: str, lease: Lease, path: Path) -> None:
        self.sup = sup
        self.job_id = job_id
        self.lease = lease
        self.path = path
        self._lock = threading.Lock()
        self._running: Future[None] | None = None
        self._again = False
        self._stored: StateSignature | None = None
        self.stored = 0  # checkpoints stored (tests, logs)

    def request(self) -> None:
        with self._lock:
            if self._running is not None:
                self._again = True
                return
            self._running = _in_thread(self._loop)

    def now(self, timeout: float = 60.0) -> None:
        """Take one now and wait for it (after any that is being taken)."""
        with self._lock:
            running = self._running
        if running is not None:
            with contextlib.suppress(FutureTimeout, Exception):
                running.result(timeout)
        self._one()

    def _loop(self) -> None:
        while True:
            self._one()
            with self._lock:
                if not self._again:
                    self._running = None
                    return
                self._again = False

    def _one(self) -> None:
        s = self.sup.settings
        try:
            sig = signature(self.path)
            if sig is None or sig == self._stored:
                return
            with self.sup._checkpoint_slots:
                ckpt = take(self.path, host=s.host_name, max_bytes=s.checkpoint_max_bytes)
            if ckpt is None:
                return
            if self.sup.store.save_checkpoint(self.job_id, self.sup.owner, self.lease.token, ckpt):
                self._stored = sig
                self.stored += 1
                log.info(
                    "job %s: checkpoint stored (%d bytes, %d compressed)",
                    self.job_id,
                    ckpt.size,
                    len(ckpt.data),
                )
            else:
                log.warning("job %s: checkpoint refused: the lease is not ours", self.job_id)
        except Exception:
            log.exception("job %s: cannot take a checkpoint", self.job_id)
