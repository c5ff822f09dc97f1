"""Least privilege for job processes (issue 14, "Privilege").

A job process parses what a customer's servers send: the code most exposed to hostile
bytes.  When the service runs as root, each running job gets a user id of its own, from
a range no account uses (``job_uid_base`` + slot, no /etc/passwd entry needed), and its
job directory is chowned to that id while it runs (back to the service's user when it
has ended).  The job process:

- reads its spec (with the passwords) from its stdin pipe and sets up TLS (a CA file
  may be readable by root only) *as root*, then drops for good: ``setgroups([])``, the
  job's gid and uid, umask 077, ``PR_SET_NO_NEW_PRIVS``.  Only then does it connect
  to anything;
- can reach its own directory (owner, 0700) and nothing else of the service: the data
  directory and ``jobs/`` are 0711 (traversable, not listable: SQLite opens its database
  by absolute path), every file directly in the data directory (credentials and session
  keys, the control database and its WAL, the queue) loses its group and other bits, and
  every other job's directory is 0700, owned by the service or by that job's own id;
- shares no user id with another running job: it cannot signal, trace or read the
  ``/proc`` entries of another job (whose memory holds that job's passwords).

Why no seccomp or Landlock filter: see docs/security.md ("Issue 14: least privilege for
jobs"): no maintained Python binding is straightforward to depend on today.
"""

from __future__ import annotations

import codecs
import contextlib
import ctypes
import logging
import os
import stat
import threading
from pathlib import Path

__all__ = ["JobUids", "chown_tree", "drop_privileges", "seal_data_dir", "unreachable_ancestor"]

log = logging.getLogger("yippiemove.privilege")

PR_SET_DUMPABLE = 4
PR_SET_NO_NEW_PRIVS = 38

#: How many jobs may run at once with ids of their own (slots of the range).
UID_SLOTS = 1 << 16


#: Codecs the standard library and the mover load on first use (ssl's server_hostname:
#: idna; modified UTF-7: utf-16-be...): loaded before the drop, since the interpreter's
#: files may not be readable by the job's user id (an interpreter under /root).
PRELOADED_CODECS = ("ascii", "latin-1", "utf-8", "utf-8-sig", "utf-16", "utf-16-be", "idna")


def drop_privileges(uid: int) -> None:
    """Become ``uid`` (gid the same) for good, with no supplementary groups, a private
    umask and no way back to privileges (no set-uid binary, no file capability)."""
    for name in PRELOADED_CODECS:
        codecs.lookup(name)
    os.setgroups([])
    os.setresgid(uid, uid, uid)
    os.setresuid(uid, uid, uid)
    os.umask(0o077)
    libc = ctypes.CDLL(None, use_errno=True)
    # Not dumpable (the kernel did so at the change of ids; said again, on purpose): no
    # core, no ptrace and no /proc/PID/{mem,environ,fd} for a process of the same id.
    for option, value in ((PR_SET_DUMPABLE, 0), (PR_SET_NO_NEW_PRIVS, 1)):
        if libc.prctl(option, value, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), f"prctl({option}, {value}) failed")
    if os.getresuid() != (uid, uid, uid) or os.getgroups():
        raise OSError("the job process could not drop its privileges")


def chown_tree(path: Path, uid: int, gid: int) -> None:
    """``path`` and everything in it (a job directory: a few files), symlinks not
    followed (a job could leave one pointing at the key file)."""
    os.chown(path, uid, gid, follow_symlinks=False)
    for root, dirs, files in os.walk(path):
        for name in dirs + files:
            with contextlib.suppress(FileNotFoundError):
                os.chown(os.path.join(root, name), uid, gid, follow_symlinks=False)


def seal_data_dir(jobs_dir: Path) -> None:
    """The data directory and ``jobs/`` traversable only (0711); the files directly in
    the data directory readable by their owner only; job directories 0700."""
    data_dir = jobs_dir.parent
    for d in (data_dir, jobs_dir):
        os.chmod(d, 0o711)
    for directory in (data_dir, jobs_dir):
        with os.scandir(directory) as entries:
            for entry in entries:
                if entry.is_symlink() or entry.path == str(jobs_dir):
                    continue
                with contextlib.suppress(FileNotFoundError):
                    mode = stat.S_IMODE(entry.stat(follow_symlinks=False).st_mode)
                    private = mode & 0o700 if entry.is_dir() else mode & 0o600
                    if mode != private:
                        os.chmod(entry.path, private)


def unreachable_ancestor(jobs_dir: Path) -> Path | None:
    """The first parent of the data directory that other users cannot search (x bit),
    if any: SQLite opens a job's state by absolute path, so the way must be open."""
    for parent in reversed(jobs_dir.parent.absolute().parents):
        if not os.stat(parent).st_mode & stat.S_IXOTH:
            return parent
    return None


class JobUids:
    """The user ids of running jobs: one per job, from ``base`` on; none at all (jobs run
    as the service's user) unless the service runs as root and ``base`` is set."""

    def __init__(self, jobs_dir: Path, base: int) -> None:
        self.jobs_dir = jobs_dir
        self.base = base
        self.active = base > 0 and os.geteuid() == 0
        self._lock = threading.Lock()
        self._taken: set[int] = set()
        #: workdir -> the id that owns it now (a new attempt of a job may take its
        #: directory before the old attempt's process is reaped and gives its id back).
        self._owner: dict[Path, int] = {}

    def take(self, workdir: Path) -> int | None:
        """A free id for the job in ``workdir``, which is handed to it; None: no drop."""
        if not self.active:
            return None
        blocked = unreachable_ancestor(self.jobs_dir)
        if blocked is not None:
            # Checked at every start: a parent's mode can change while the service runs.
            log.warning(
                "this job process runs as the service's user: %s is not searchable by "
                "other users, so a job with a user id of its own could not open its "
                "state by path; put the data directory where every parent is (e.g. "
                "/var/lib/yippiemove, YIPPIEMOVE_DATA_DIR)",
                blocked,
            )
            return None
        with self._lock:
            slot = next(i for i in range(UID_SLOTS + 1) if i not in self._taken)
            if slot == UID_SLOTS:
                raise OSError("no free user id for another job process")
            self._taken.add(slot)
        uid = self.base + slot
        with self._lock:
            self._owner[workdir] = uid
        try:
            seal_data_dir(self.jobs_dir)
            chown_tree(workdir, uid, uid)
            os.chmod(workdir, 0o700)
        except BaseException:
            self.give_back(uid, workdir)
            raise
        return uid

    def give_back(self, uid: int | None, workdir: Path) -> None:
        """The job has ended (reaped): its directory back to the service, its id free."""
        if uid is None:
            return
        with self._lock:
            mine = self._owner.get(workdir) == uid
            if mine:
                del self._owner[workdir]
        if mine:  # else a newer process of the job owns the directory now: leave it be
            with contextlib.suppress(FileNotFoundError):
                chown_tree(workdir, os.geteuid(), os.getegid())
        with self._lock:
            self._taken.discard(uid - self.base)
