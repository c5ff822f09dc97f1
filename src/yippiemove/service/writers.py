"""One writer per destination mailbox, one order per pair (docs/design.md "One writer").

Both are rows in the control database keyed by a canonical identity, with the key as
primary key, so that no two holders can exist on SQLite or PostgreSQL alike:

* :class:`~.db.MailboxLock` -- the job *running* into a destination mailbox.  Taken when
  a job is claimed (service/jobhost.py ``SqlJobStore.claim``), in the claim's
  transaction.  A row is free when its job no longer runs or its lease expired: it is
  then taken over, and an expired holder is put back to ``queued`` in the same
  transaction (its supervisor, if alive, finds the lease gone and kills its job
  process -- it already did so by 0.8 x the lease without a renewal).
* :class:`~.db.ActiveOrder` -- the job *queued or running* for one customer's
  (source, destination) pair: a second order of the pair is answered with it.

Rows are never required to be deleted: whether a holder still holds is read from its
job's row, so a crash cannot leave a mailbox locked.

Identity of a pair (:func:`pair_key`): the host in one spelling (transfer/identity.py
``canonical_host``: lower case, no trailing dot, addresses canonical,
``localhost``/``::1``/``127.0.0.1`` as one), port, lower-cased user name; not resolved.

Identity of a destination mailbox for its lock (:func:`mailbox_keys_of`): every key the
CLI's locks use (transfer/locks.py ``mailbox_keys``): the host as written *and* each
address it resolves to, with port and user; a job holds a row per key, so two names of
one server (``127.1`` and ``127.0.0.1``, a name in /etc/hosts) meet on an address.  The
names are resolved when a worker claims the job, before the claim's transaction (a slow
answer holds up that claim only, never the database), through a cache of
:data:`RESOLVE_TTL` seconds (a waiting job asks again and again).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable, Mapping
from typing import Any

from sqlalchemy.orm import Session

from ..jobs.vocab import JobStatus, Phase
from ..transfer import identity
from ..transfer.identity import canonical_host
from ..transfer.locks import mailbox_keys
from .db import ActiveOrder, Job, MailboxLock

__all__ = [
    "canonical_host",
    "holder_of_pair",
    "mailbox_key",
    "mailbox_keys_of",
    "pair_key",
    "take_mailbox",
]

#: Seconds a name's addresses are remembered for the mailbox locks.
RESOLVE_TTL = 60.0
_resolved: dict[tuple[str, int], tuple[float, frozenset[str]]] = {}
_resolved_lock = threading.Lock()


def _addresses(host: str, port: int) -> frozenset[str]:
    """``identity.addresses`` through a small cache (see the module docstring)."""
    now = time.monotonic()
    with _resolved_lock:
        hit = _resolved.get((host, port))
        if hit is not None and hit[0] > now:
            return hit[1]
    found = identity.addresses(host, port)
    with _resolved_lock:
        if len(_resolved) > 10_000:
            _resolved.clear()
        _resolved[(host, port)] = (now + RESOLVE_TTL, found)
    return found


def mailbox_keys_of(account: Mapping[str, Any]) -> list[str]:
    """The lock keys of an account's mailbox: the name key and one per resolved address
    (transfer/locks.py ``mailbox_keys``).  May resolve the host name (cached)."""
    host, port = str(account.get("host", "")), int(account.get("port") or 0)
    user = str(account.get("username", ""))
    return mailbox_keys(host, port, user, _addresses(host, port))


def mailbox_key(account: Mapping[str, Any]) -> str:
    """The canonical identity of an account's mailbox: ``host|port|user``."""
    host = canonical_host(str(account.get("host", "")))
    return f"{host}|{int(account.get('port') or 0)}|{str(account.get('username', '')).lower()}"


def pair_key(user_id: int, source: Mapping[str, Any], dest: Mapping[str, Any]) -> str:
    return f"{user_id}>{mailbox_key(source)}>{mailbox_key(dest)}"


def _live(job: Job | None, now: float) -> bool:
    """Whether a running job's lease still holds."""
    return (
        job is not None
        and job.status == JobStatus.RUNNING
        and (job.lease_expires is None or job.lease_expires >= now)
    )


def take_mailbox(
    s: Session, job: Job, now: float | None = None, keys: Iterable[str] | None = None
) -> str | None:
    """Take the destination mailbox of ``job`` (in the caller's transaction): every one
    of its ``keys`` (:func:`mailbox_keys_of` of its destination when not given), or
    none.  None when taken, else the id of a job that holds one of them.  Flushes, so
    that a concurrent insert of the same key fails here (IntegrityError) rather than at
    commit."""
    now = time.time() if now is None else now
    wanted = sorted(set(mailbox_keys_of(job.dest) if keys is None else keys))
    locks = {key: s.get(MailboxLock, key, with_for_update=True) for key in wanted}
    for lock in locks.values():
        if lock is None or lock.job_id == job.id:
            continue
        holder = s.get(Job, lock.job_id, with_for_update=True)
        if _live(holder, now):
            return lock.job_id
        if holder is not None and holder.status == JobStatus.RUNNING:
            # Its lease expired: the holder goes back to the queue (resumed later).
            holder.status = JobStatus.QUEUED
            holder.lease_owner = None
            holder.lease_expires = None
            holder.jail = None
            holder.progress = dict(holder.progress or {}, phase=Phase.RESUMING)
    for key, lock in locks.items():
        if lock is None:
            s.add(MailboxLock(mailbox=key, job_id=job.id, since=now))
        elif lock.job_id != job.id:
            lock.job_id = job.id
            lock.since = now
    s.flush()
    return None


def holder_of_pair(s: Session, user_id: int, job: Job) -> str | None:
    """Make ``job`` the active order of its pair: None, or the id of the queued or
    running job of the same pair (then nothing changes).  Flushes, see take_mailbox."""
    key = pair_key(user_id, job.source, job.dest)
    row = s.get(ActiveOrder, key, with_for_update=True)
    if row is None:
        s.add(ActiveOrder(pair=key, job_id=job.id))
        s.flush()
        return None
    if row.job_id != job.id:
        other = s.get(Job, row.job_id)
        if other is not None and other.status in (
            JobStatus.QUEUED,
            JobStatus.RUNNING,
            JobStatus.AWAITING_PAYMENT,  # a second identical order finds the first
        ):
            return other.id
        row.job_id = job.id
        s.flush()
    return None
