"""One writer per destination mailbox on one machine: exclusive ``flock`` locks.

Two kinds of lock, both plain files locked with ``fcntl.flock(LOCK_EX | LOCK_NB)``:

- the *job* lock, ``STATE.lock`` beside a job's state file (:func:`job_lock_path`): a second
  run of the same job is refused;
- the *mailbox* locks, ``<dir>/<sha256 of a key>.lock``, one per key of the destination
  account's identity (:func:`mailbox_keys`): the lower-cased host name, port and user, and
  the same for each address the host name resolves to. Two runs with different state files
  into one mailbox share at least one key (``localhost`` and ``127.0.0.1`` share
  ``loopback``: host and addresses are spelled as transfer/identity.py spells them), so the second is refused.

The kernel drops a ``flock`` when the process ends for any reason (``kill -9`` too), so a
lock file left behind by a dead run never blocks: it is not held, and the next run takes it
and writes itself into it. A run that ends removes its lock files while it still holds them;
a run that locked a file no longer at its path (removed meanwhile) opens the path again, so
two runs never hold "the" lock on two different files.

After taking a lock the holder writes one JSON line into it (pid, host, since, state file,
mailbox); a run refused reads it to name the one running (:class:`LockHeld`).

Used by ``yippiemove move`` (cli.py). The service's job processes do not use these files:
the service keeps its one-writer rule in the control database, across machines.
Limits: ``flock`` is per machine (two machines sharing a home over NFS are not kept apart),
and a forwarding proxy or another name with other addresses for the same server is not
recognised here (that is the source/destination identity check's business).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import json
import os
import socket
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import identity
from .identity import canonical_address, canonical_host

__all__ = [
    "Holder",
    "LockError",
    "LockHeld",
    "Locks",
    "job_lock_path",
    "mailbox_keys",
    "mailbox_lock_paths",
]


class LockError(Exception):
    """A lock file could not be created or locked (not because another run holds it)."""


@dataclass(frozen=True)
class Holder:
    """Who holds a lock, as written in its file (fields may be missing: ``None``)."""

    pid: int | None = None
    host: str | None = None
    since: float | None = None
    state: str | None = None
    mailbox: str | None = None

    @classmethod
    def parse(cls, text: str) -> Holder:
        try:
            data = json.loads(text)
        except ValueError:
            return cls()
        if not isinstance(data, dict):
            return cls()

        def get(key: str, kind: type | tuple[type, ...]) -> Any:
            value = data.get(key)
            return value if isinstance(value, kind) and not isinstance(value, bool) else None

        since = get("since", (int, float))
        return cls(
            pid=get("pid", int),
            host=get("host", str),
            since=float(since) if since is not None else None,
            state=get("state", str),
            mailbox=get("mailbox", str),
        )

    def describe(self) -> str:
        """``pid 1234 on host since 2026-12-06 14:31:05 UTC`` (what is known of it)."""
        who = f"pid {self.pid}" if self.pid is not None else "pid unknown"
        if self.host:
            who += f" on {self.host}"
        if self.since is not None:
            who += " since " + time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(self.since))
        return who


class LockHeld(Exception):
    """Another live process holds the lock at ``path``; ``holder`` says which."""

    def __init__(self, path: Path, holder: Holder) -> None:
        super().__init__(f"{path} is held by {holder.describe()}")
        self.path = path
        self.holder = holder


def job_lock_path(state_path: Path) -> Path:
    """``STATE.lock`` beside the (resolved) state file."""
    resolved = state_path.resolve()
    return resolved.with_name(resolved.name + ".lock")


def mailbox_keys(
    host: str, port: int, user: str, addresses: Iterable[str] | None = None
) -> list[str]:
    """The keys of a mailbox's identity: ``name|host|port|user`` and ``addr|ADDRESS|port|user``
    for each resolved address (host and user lower-cased). One key per address rather than
    one for the sorted tuple, so that ``localhost`` (127.0.0.1 and ::1) and ``127.0.0.1``
    meet; the name key catches a round-robin name whose addresses change between runs."""
    h, u = canonical_host(host), user.lower()
    if addresses is None:
        addresses = identity.addresses(host, port)
    keys = {f"name|{h}|{port}|{u}"}
    keys.update(f"addr|{canonical_address(a)}|{port}|{u}" for a in addresses)
    return sorted(keys)


def mailbox_lock_paths(lock_dir: Path, keys: Iterable[str]) -> list[Path]:
    return [lock_dir / f"{hashlib.sha256(k.encode()).hexdigest()}.lock" for k in keys]


def _read_holder(fd: int) -> Holder:
    """What the holder wrote (it writes right after taking the lock: a moment's wait)."""
    deadline = time.monotonic() + 0.5
    while True:
        try:
            text = os.pread(fd, 4096, 0).decode("utf-8", "replace")
        except OSError:
            text = ""
        holder = Holder.parse(text)
        if holder.pid is not None or time.monotonic() >= deadline:
            return holder
        time.sleep(0.02)


def _open_locked(path: Path) -> int:
    """Open ``path`` (created 0600) and lock it without waiting; the fd. The file the
    lock is on must still be the one at ``path`` (a holder that ended may have unlinked it
    between our open and our lock): else again, with the new file."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    except OSError as exc:
        raise LockError(f"cannot create the lock directory {path.parent}: {exc.strerror}") from None
    for _ in range(100):
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        except OSError as exc:
            raise LockError(f"cannot create the lock file {path}: {exc.strerror}") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            try:
                if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                    raise LockHeld(path, _read_holder(fd)) from None
                raise LockError(f"cannot lock {path}: {exc.strerror}") from None
            finally:
                os.close(fd)
        try:
            same = os.path.samestat(os.fstat(fd), os.stat(path))
        except FileNotFoundError:
            same = False
        if same:
            return fd
        os.close(fd)
    raise LockError(f"cannot lock {path}: it keeps being replaced")


def _take(path: Path, record: dict[str, Any]) -> int:
    """Lock ``path`` and write ``record`` into it; the fd."""
    fd = _open_locked(path)
    try:
        data = (json.dumps(record, sort_keys=True) + "\n").encode()
        os.ftruncate(fd, 0)
        os.pwrite(fd, data, 0)
    except OSError as exc:
        os.close(fd)
        raise LockError(f"cannot write the lock file {path}: {exc.strerror}") from None
    return fd


@dataclass
class Locks:
    """Locks held by this process; taken all or none (:meth:`take`), released by
    :meth:`release`, by leaving the ``with`` block, or by the process ending."""

    fds: dict[Path, int] = field(default_factory=dict)

    def take(self, paths: Iterable[Path], *, state: Path | None, mailbox: str | None) -> None:
        """Take every lock in ``paths`` (in a fixed order, without waiting). Raises
        :class:`LockHeld` (another run holds one) or :class:`LockError`; either way the
        locks this call took are released again."""
        record = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "since": round(time.time(), 3),
            "state": str(state) if state is not None else None,
            "mailbox": mailbox,
        }
        taken: list[Path] = []
        try:
            for path in sorted(set(paths)):
                if path in self.fds:
                    continue
                self.fds[path] = _take(path, record)
                taken.append(path)
        except BaseException:
            self._release(taken)
            raise

    def _release(self, paths: Iterable[Path]) -> None:
        for path in paths:
            fd = self.fds.pop(path, None)
            if fd is None:
                continue
            with contextlib.suppress(OSError):
                # Unlinked while still held: a run that opened it meanwhile sees that the
                # file it locked is no longer at the path, and takes the new one.
                path.unlink()
            os.close(fd)  # closing the last descriptor drops the flock

    def release(self) -> None:
        self._release(list(self.fds))

    def __enter__(self) -> Locks:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()

    def __iter__(self) -> Iterator[Path]:
        return iter(self.fds)
