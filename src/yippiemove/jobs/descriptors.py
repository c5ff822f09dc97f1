"""The service process's open-file budget (issue 18, docs/design.md "Many jobs: descriptors").

Every running job costs the service process a few descriptors (its stdin and stdout pipes,
and, while it is being spawned, the other ends and its log); the web server and the
control database need some of their own.  Under a soft ``RLIMIT_NOFILE`` of 1,024 a few
hundred jobs used to exhaust it, and the jobs that hit ``EMFILE`` were failed for good.

- :func:`raise_limit`: at start, the soft limit goes up to the hard one.
- :class:`FdBudget`: whether one more job fits now (counted in ``/proc/self/fd``, so the
  web server's sockets and the database's files count too), and how many jobs fit at all.
- :func:`shortage`: whether an error is the service running short of a resource
  (descriptors, processes, memory for a fork) -- a reason to put the job back in the
  queue, never to fail it.
"""

from __future__ import annotations

import errno
import logging
import os
import resource
from dataclasses import dataclass

log = logging.getLogger(__name__)

#: What one running job costs the service process once started: its stdin and stdout
#: pipes, the watch loop's epoll and its lease work, 5 measured (tests/jobs/test_descriptors.py), one
#: for a margin.  Sizes the number of workers (:meth:`FdBudget.capacity`).
JOB_FDS = 6
#: What starting one needs for a moment: both ends of both pipes and its log, plus the
#: above (measured: 7-8 at the peak), counted for each job being started.
SPAWN_FDS = 10
#: What the rest of the service process needs, at most: the web server's connections,
#: the control database and its journal, the queue, log files, the zygote's socket.
#: Sizes the number of workers a process may have (:meth:`FdBudget.capacity`).
RESERVE_FDS = 128
#: Kept free at all times when a job is started (:meth:`FdBudget.room`): what is open is
#: counted, so this is only for what the rest may still open (a burst of web clients, a
#: database connection of a new thread).
HEADROOM_FDS = 32
#: When the hard limit is "unlimited", the soft one is raised this far.
UNLIMITED_CAP = 1 << 20

#: errno values that mean "the service is short of something", not "this job is broken".
SHORTAGE_ERRNOS = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOMEM, errno.EAGAIN})

WAITING_REASON = "waiting: the service is at its limit of open files"


def raise_limit() -> tuple[int, int, int]:
    """Raise the soft ``RLIMIT_NOFILE`` to the hard limit; (old soft, new soft, hard).

    Logged once; a refusal (some containers) leaves the old limit and says so."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = UNLIMITED_CAP if hard == resource.RLIM_INFINITY else hard
    new = soft
    if soft == resource.RLIM_INFINITY or soft >= target:
        new = soft
    else:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            new = target
        except (ValueError, OSError) as exc:
            log.warning("open files: cannot raise the soft limit %d to %d: %s", soft, target, exc)
    log.info(
        "open files: soft limit %s (was %s), hard limit %s",
        _fmt(new),
        _fmt(soft),
        _fmt(hard),
    )
    return soft, new, hard


def _fmt(n: int) -> str:
    return "unlimited" if n == resource.RLIM_INFINITY else str(n)


def soft_limit() -> int:
    soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    return UNLIMITED_CAP if soft == resource.RLIM_INFINITY else soft


def open_fds() -> int:
    """Descriptors open in this process now (Linux: /proc/self/fd; the listing's own one
    excluded)."""
    try:
        return max(0, len(os.listdir("/proc/self/fd")) - 1)
    except OSError:
        return 0  # no /proc, or no descriptor left to read it: the spawn will tell


def shortage(exc: BaseException) -> bool:
    """Whether ``exc`` is the service short of descriptors, processes or memory."""
    return isinstance(exc, OSError) and exc.errno in SHORTAGE_ERRNOS


@dataclass(frozen=True)
class FdBudget:
    """How many jobs the service process's descriptors allow."""

    per_job: int = JOB_FDS
    per_start: int = SPAWN_FDS
    reserve: int = RESERVE_FDS
    headroom: int = HEADROOM_FDS

    def capacity(self, limit: int | None = None) -> int:
        """Jobs that fit at most under ``limit`` (default: the soft limit now)."""
        limit = soft_limit() if limit is None else limit
        return max(0, (limit - self.reserve) // self.per_job)

    def room(self, starting: int = 0) -> bool:
        """Whether one more job can start now: what is open is counted, and ``starting``
        jobs (given room, their process not started yet) at ``per_start`` each."""
        free = soft_limit() - open_fds() - self.headroom - starting * self.per_start
        return free >= self.per_start


def job_open_files(wanted: int) -> int:
    """A job process's ``RLIMIT_NOFILE`` (soft and hard): ``job_max_open_files``, but
    never above this process's hard limit, which an unprivileged process cannot raise
    (under a hard limit of 384, asking for 1,024 failed every job at its start)."""
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    return wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
