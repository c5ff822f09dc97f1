"""The service's side of the supervisor's interfaces (jobs/ports.py): the control database
and the credential box as a :class:`~yippiemove.jobs.ports.JobStore`."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from sqlalchemy import bindparam, func, select
from sqlalchemy.exc import IntegrityError

from ..jobs.ports import Checkpoint, Claim, SupervisorConfig, Waiting
from ..jobs.vocab import TERMINAL, JobStatus, Phase
from . import staged
from .config import Settings
from .db import Database, Job, JobCheckpoint, User
from .refunds import refund_failed_run
from .secrets import CredentialBox
from .writers import mailbox_keys_of, take_mailbox

__all__ = ["SqlJobStore", "expire_credentials", "supervisor_config"]


def supervisor_config(settings: Settings) -> SupervisorConfig:
    """The settings the supervisor and the job launchers use."""
    return SupervisorConfig(
        jobs_dir=settings.jobs_dir,
        job_spawn=settings.job_spawn,
        job_max_open_files=settings.job_max_open_files,
        job_max_memory=settings.job_max_memory,
        job_connections=settings.job_connections,
        job_max_restarts=settings.job_max_restarts,
        job_max_attempts=settings.job_max_attempts,
        lease_seconds=settings.lease_seconds,
        job_stall_seconds=settings.job_stall_seconds,
        progress_interval=settings.progress_interval,
        job_kill_grace=settings.job_kill_grace,
        restart_delay=settings.restart_delay,
        ca_file=settings.ca_file,
        allow_insecure_hosts=settings.allow_insecure_hosts,
        mailbox_wait_seconds=settings.mailbox_wait_seconds,
        start_mail_after=settings.start_mail_after,
        egress_allow=settings.egress_allow,
        egress_deny=settings.egress_deny,
        job_min_rate=settings.job_min_rate,
        job_rate_window=settings.job_rate_window,
        job_max_seconds=settings.job_max_seconds,
        job_uid_base=settings.job_uid_base,
        host_name=settings.host_name,
        checkpoint_interval=settings.checkpoint_interval,
        checkpoint_max_bytes=settings.checkpoint_max_bytes,
        lease_margin=settings.lease_margin,
        job_admission_pressure=settings.job_admission_pressure,
        job_admission_floor=settings.job_admission_floor,
        job_nice=settings.job_nice,
        oauth_config=settings.oauth_config_dict(),
    )


def _held(job: Job | None, owner: str, token: int) -> bool:
    """Whether ``owner`` holds the job's lease under fencing token ``token`` (a stale
    holder -- its lease expired and another worker claimed the job -- does not)."""
    return job is not None and job.lease_owner == owner and (job.lease_token or 0) == token


def expire_credentials(job: Job, settings: Settings, now: float) -> None:
    """A job ended: keep its passwords for re-runs for the retention time, then none."""
    days = settings.credential_retention_days
    if days <= 0:
        job.credentials = None
        job.credentials_expires = None
    else:
        job.credentials_expires = now + days * 86400


def _cancelled_while_suspended(s: Any, job: Job, now: float) -> None:
    job.status = JobStatus.CANCELLED
    job.finished = now
    job.cancel_requested = False
    job.credentials = None
    job.credentials_expires = None
    progress = dict(job.progress or {})
    progress.update(phase=Phase.CANCELLED, rate=0.0, eta=None, current=[])
    job.progress = progress
    staged.job_cancelled(s, job)  # a staged job's schedule stops with it
    ckpt = s.get(JobCheckpoint, job.id)
    if ckpt is not None:
        s.delete(ckpt)


class SqlJobStore:
    """The control database (service/db.py) for the supervisor; see jobs/ports.py."""

    def __init__(self, settings: Settings, db: Database, box: CredentialBox) -> None:
        self.settings = settings
        self.db = db
        self.box = box

    def claim(
        self, job_id: str, owner: str, lease_seconds: float, max_attempts: int
    ) -> Claim | Waiting | None:
        # The destination's lock keys, resolved before the claim's transaction: a slow
        # name server holds up this claim only, not the database (service/writers.py).
        with self.db.read() as sess:
            job = sess.get(Job, job_id)
            dest = dict(job.dest) if job is not None else None
        if dest is None:
            return None
        keys = mailbox_keys_of(dest)
        try:
            return self._claim(job_id, owner, lease_seconds, max_attempts, keys)
        except IntegrityError:
            # Another claim inserted the same mailbox's lock at the same moment
            # (PostgreSQL; SQLite's writers are serialised): it won.
            return Waiting(None)

    def _claim(
        self, job_id: str, owner: str, lease_seconds: float, max_attempts: int, keys: list[str]
    ) -> Claim | Waiting | None:
        now = time.time()
        with self.db.session() as s:
            job = s.get(Job, job_id, with_for_update=True)
            if job is None or job.status != JobStatus.QUEUED:
                return None
            if staged.starts_later(s, job.id):  # a staged job's start is for later
                return None
            if s.scalar(select(User.suspended).where(User.id == job.user_id)):
                # Held (service/operator.py): the customer is suspended; unsuspending
                # enqueues the job again.  One that was running when they were suspended
                # (its cancel asked) and came back to the queue (its host died) ends
                # here, cancelled, its passwords wiped.
                if job.cancel_requested:
                    _cancelled_while_suspended(s, job, now)
                return None
            if job.attempts >= max_attempts:
                job.status = JobStatus.FAILED
                job.finished = now
                job.error = f"gave up after {job.attempts} attempts"
                expire_credentials(job, self.settings, now)
                ckpt = s.get(JobCheckpoint, job_id)
                if ckpt is not None:
                    s.delete(ckpt)
                return None
            holder = take_mailbox(s, job, now, keys)
            if holder is not None:
                progress = dict(job.progress or {})
                if progress.get("waiting_for") != holder:
                    progress.update(phase=Phase.WAITING, waiting_for=holder)
                    job.progress = progress
                return Waiting(holder)
            busy = self._customer_busy(s, job)
            if busy is not None:
                progress = dict(job.progress or {})
                if progress.get("waiting_reason") != busy:
                    progress.update(phase=Phase.WAITING, waiting_reason=busy)
                    progress.pop("waiting_for", None)
                    job.progress = progress
                # The mailbox rows just written name a queued job: free for others.
                return Waiting(None, busy)
            if {"waiting_for", "waiting_reason"} & set(job.progress or {}):
                progress = dict(job.progress or {})
                progress.pop("waiting_for", None)
                progress.pop("waiting_reason", None)
                if progress.get("phase") == Phase.WAITING:
                    progress["phase"] = Phase.QUEUED
                job.progress = progress
            last_host = job.host
            job.status = JobStatus.RUNNING
            job.lease_owner = owner
            job.lease_expires = now + lease_seconds
            # The fencing token: every write under this lease names it (docs/design.md
            # "Fencing and checkpoints"); a holder from before this claim is refused.
            job.lease_token = (job.lease_token or 0) + 1
            job.host = self.settings.host_name or None
            job.started = job.started or now
            job.cancel_requested = False
            user = s.get(User, job.user_id)
            return Claim(
                token=job.lease_token,
                last_host=last_host,
                source=dict(job.source),
                dest=dict(job.dest),
                folders=job.folders,
                progress=dict(job.progress or {}),
                email=user.email if user else "",
                notified_start=job.notified_start,
            )

    def waiting(self, job_id: str, reason: str) -> bool:
        with self.db.session() as s:
            job = s.get(Job, job_id, with_for_update=True)
            if job is None or job.status != JobStatus.QUEUED:
                return False
            progress = dict(job.progress or {})
            if progress.get("waiting_reason") != reason or progress.get("phase") != Phase.WAITING:
                progress.update(phase=Phase.WAITING, waiting_reason=reason)
                progress.pop("waiting_for", None)
                job.progress = progress
            return True

    def _customer_busy(self, s: Any, job: Job) -> str | None:
        """Why the job's customer may not start another job now, or None.

        The customer's row is locked first: two workers claiming two jobs of one
        customer at once count one after the other (PostgreSQL; SQLite serialises)."""
        limit = self.settings.customer_max_running
        if limit <= 0 or job.user_id is None:
            return None
        s.get(User, job.user_id, with_for_update=True)
        running = s.scalar(
            select(func.count())
            .select_from(Job)
            .where(Job.user_id == job.user_id, Job.status == JobStatus.RUNNING, Job.id != job.id)
        )
        if int(running or 0) < limit:
            return None
        return (
            f"waiting: you have {running} transfer{'s' if running != 1 else ''} running "
            f"(limit {limit})"
        )

    def credentials(self, job_id: str) -> dict[str, Any] | None:
        with self.db.read() as sess:
            job = sess.get(Job, job_id)
            blob = job.credentials if job is not None else None
        if blob is None:
            return None
        return self.box.decrypt(blob)

    def passwords(self, job_id: str) -> tuple[str, str] | None:
        creds = self.credentials(job_id)
        if creds is None:
            return None
        return creds.get("source_password", ""), creds.get("dest_password", "")

    def oauth_grants(self, job_id: str) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
        with self.db.read() as sess:
            job = sess.get(Job, job_id)
            blob = job.credentials if job is not None else None
        if blob is None:
            return None, None
        creds: dict[str, Any] = dict(self.box.decrypt(blob))
        src, dst = creds.get("source_oauth"), creds.get("dest_oauth")
        return (src if isinstance(src, dict) else None, dst if isinstance(dst, dict) else None)

    def store_grant(
        self, job_id: str, owner: str, token: int, side: str, grant: dict[str, Any]
    ) -> bool:
        if side not in ("source", "dest"):
            return False
        with self.db.session() as sess:
            job = sess.get(Job, job_id, with_for_update=True)
            if not _held(job, owner, token) or job is None or job.credentials is None:
                return False
            creds: dict[str, Any] = dict(self.box.decrypt(job.credentials))
            old = creds.get(f"{side}_oauth")
            if not isinstance(old, dict) or old.get("kind") != "refresh":
                return False
            kept = {k: v for k, v in old.items() if k not in ("access_token", "expires_at")}
            creds[f"{side}_oauth"] = dict(kept, refresh_token=grant["refresh_token"])
            job.credentials = self.box.encrypt(creds)
            return True

    def mark_start_notified(self, job_id: str) -> None:
        with self.db.session() as sess:
            job = sess.get(Job, job_id)
            if job is not None:
                job.notified_start = True

    def jail_started(self, job_id: str, owner: str, token: int, identity: str) -> bool:
        with self.db.session() as sess:
            job = sess.get(Job, job_id, with_for_update=True)
            if not _held(job, owner, token):
                return False
            assert job is not None
            job.jail = identity
            job.attempts = (job.attempts or 0) + 1
            return True

    def jail_ended(self, job_id: str, owner: str, token: int) -> None:
        with self.db.session() as sess:
            job = sess.get(Job, job_id, with_for_update=True)
            if job is not None and _held(job, owner, token):
                job.jail = None

    def heartbeat(
        self,
        job_id: str,
        owner: str,
        token: int,
        lease_seconds: float,
        progress: Callable[[int], dict[str, Any]],
    ) -> tuple[bool, bool]:
        with self.db.session() as sess:
            job = sess.get(Job, job_id, with_for_update=True)
            if job is None or not _held(job, owner, token) or job.status != JobStatus.RUNNING:
                return False, False
            job.progress = progress(job.attempts)
            job.lease_expires = time.time() + lease_seconds
            return True, bool(job.cancel_requested)

    def heartbeat_many(
        self,
        owner: str,
        lease_seconds: float,
        beats: dict[str, tuple[int, dict[str, Any]]],
    ) -> dict[str, tuple[bool, bool]]:
        """One short write transaction for many jobs: one SELECT of their lease columns
        (FOR UPDATE on PostgreSQL; SQLite's BEGIN IMMEDIATE holds the write lock), one
        executemany UPDATE of the rows still held."""
        if not beats:
            return {}
        table = Job.__table__
        answers: dict[str, tuple[bool, bool]] = {job_id: (False, False) for job_id in beats}
        with self.db.session() as sess:
            rows = sess.execute(
                select(
                    Job.id,
                    Job.lease_owner,
                    Job.lease_token,
                    Job.status,
                    Job.attempts,
                    Job.cancel_requested,
                )
                .where(Job.id.in_(list(beats)))
                .with_for_update()
            ).all()
            expires = time.time() + lease_seconds
            params: list[dict[str, Any]] = []
            for job_id, lease_owner, lease_token, status, attempts, cancel in rows:
                token, progress = beats[job_id]
                if lease_owner != owner or (lease_token or 0) != token:
                    continue
                if status != JobStatus.RUNNING:
                    continue
                params.append(
                    {
                        "b_id": job_id,
                        "b_progress": {**progress, "attempt": attempts},
                        "b_expires": expires,
                    }
                )
                answers[job_id] = (True, bool(cancel))
            update = (
                table.update()  # type: ignore[attr-defined]
                .where(table.c.id == bindparam("b_id"))  # type: ignore[attr-defined]
                .values(
                    progress=bindparam("b_progress", type_=table.c.progress.type),  # type: ignore[attr-defined]
                    lease_expires=bindparam("b_expires"),
                )
            )
            if params and self.db.is_sqlite:
                sess.execute(update, params)  # executemany: no network in between
            else:
                # One statement at a time on PostgreSQL, never psycopg's pipelined
                # executemany: a host cut off mid-pipeline (before its Sync) leaves its
                # session waiting for input without idle_in_transaction_session_timeout
                # armed (the server arms it only at ReadyForQuery), holding the row
                # locks of every job of the batch until TCP gives up; the other hosts'
                # takeovers waited on them (seen in the fleet's partition test).
                for one in params:
                    sess.execute(update, one)
        return answers

    def requeue(
        self,
        job_id: str,
        owner: str,
        token: int,
        progress: dict[str, Any] | None,
        *,
        checkpoint: bool = False,
    ) -> bool:
        with self.db.session() as sess:
            job = sess.get(Job, job_id, with_for_update=True)
            if job is None or not _held(job, owner, token):
                return False
            if checkpoint:  # a run that ended well is not an attempt that failed
                job.attempts = max(0, (job.attempts or 0) - 1)
            job.status = JobStatus.QUEUED
            job.lease_owner = None
            job.lease_expires = None
            job.jail = None
            if progress is not None:
                job.progress = progress
        return True

    def finish(
        self,
        job_id: str,
        owner: str,
        token: int | None,
        status: JobStatus,
        error: str | None,
        progress: Callable[[dict[str, Any]], dict[str, Any]],
        report_path: str | None,
    ) -> str | None:
        now = time.time()
        with self.db.session() as sess:
            job = sess.get(Job, job_id, with_for_update=True)
            if job is None or job.status in TERMINAL:
                return None
            if job.lease_owner is None:
                # Not running (a job failed before its claim); a holder with a token
                # must still be the last claimer.
                if token is not None and (job.lease_token or 0) != token:
                    return None
            elif token is None or not _held(job, owner, token):
                return None
            # The run is over: its checkpoint is no longer needed (the local state file
            # stays for the report and the receipt).
            ckpt = sess.get(JobCheckpoint, job_id)
            if ckpt is not None:
                sess.delete(ckpt)
            job.status = status
            job.finished = now
            job.error = error
            job.lease_owner = None
            job.lease_expires = None
            job.jail = None
            job.cancel_requested = False
            job.progress = progress(dict(job.progress or {}))
            job.report_path = report_path
            if self.settings.billing_enabled:  # our failure: its price back (issue 20)
                refund_failed_run(sess, job)
            # A staged job's pass (issue 17): its figures, the next pass, its passwords.
            if not staged.pass_ended(sess, job, status, now):
                expire_credentials(job, self.settings, now)
            user = sess.get(User, job.user_id) if job.user_id else None
            if user is not None and user.suspended:
                # Stopped because an operator suspended its customer: no re-run (nor a
                # staged move's next pass) on their behalf; the passwords go now
                # (service/operator.py).
                staged.job_cancelled(sess, job)
                job.credentials = None
                job.credentials_expires = None
            return user.email if user is not None else ""

    def save_checkpoint(self, job_id: str, owner: str, token: int, ckpt: Checkpoint) -> bool:
        """Store (replace) the job's checkpoint if ``owner`` still holds the lease under
        ``token``: the check and the write are one transaction."""
        with self.db.session() as sess:
            job = sess.get(Job, job_id, with_for_update=True)
            if not _held(job, owner, token) or job is None or job.status != JobStatus.RUNNING:
                return False
            row = sess.get(JobCheckpoint, job_id)
            if row is None:
                row = JobCheckpoint(job_id=job_id)
                sess.add(row)
            row.token = token
            row.host = ckpt.host
            row.taken = ckpt.taken
            row.size = ckpt.size
            row.sha256 = ckpt.sha256
            row.data = ckpt.data
            return True

    def load_checkpoint(self, job_id: str) -> Checkpoint | None:
        with self.db.read() as sess:
            row = sess.get(JobCheckpoint, job_id)
            if row is None:
                return None
            return Checkpoint(
                host=row.host,
                taken=row.taken,
                size=row.size,
                sha256=row.sha256,
                data=bytes(row.data),
                token=row.token,
            )

    def mail_view(self, job_id: str) -> dict[str, Any]:
        with self.db.read() as sess:
            job = sess.get(Job, job_id)
            assert job is not None
            user = sess.get(User, job.user_id) if job.user_id else None
            view = _mail_view(job, user)
            view["quiet"] = staged.is_quiet(sess, job)  # a staged job's top-up: no mail
            return view

    def batch_summary(self, job_id: str) -> dict[str, Any] | None:
        """The job's batch when this job's end was the batch's last one and its summary
        mail is ours to send (claimed here, once: ``batch_mailed`` on the batch's first
        job); None otherwise, and for a job outside a batch."""
        with self.db.session() as sess:
            job = sess.get(Job, job_id)
            if job is None or job.batch_id is None:
                return None
            batch_id = job.batch_id
            jobs = list(
                sess.scalars(select(Job).where(Job.batch_id == batch_id).order_by(Job.created))
            )
            if not jobs or any(j.status not in TERMINAL for j in jobs):
                return None
            first = sess.get(Job, jobs[0].id, with_for_update=True, populate_existing=True)
            if first is None or first.batch_mailed:
                return None
            first.batch_mailed = True
            user = sess.get(User, job.user_id) if job.user_id else None
            return {
                "id": batch_id,
                "email": user.email if user is not None else "",
                "timezone": user.timezone if user is not None else None,
                "jobs": [_mail_view(j, user) for j in jobs],
            }

    def end_user_notice(self, job_id: str) -> dict[str, Any] | None:
        from .batches import end_user_notice  # issue 17, journey-batches

        return end_user_notice(self.db, job_id)


def _mail_view(job: Job, user: User | None) -> dict[str, Any]:
    return {
        "id": job.id,
        "status": job.status,
        "source": dict(job.source),
        "dest": dict(job.dest),
        "progress": dict(job.progress or {}),
        "error": job.error,
        "started": job.started,
        "finished": job.finished,
        "batch_id": job.batch_id,
        "timezone": user.timezone if user is not None else None,
    }
