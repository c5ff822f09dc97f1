"""Operators (issue 17): a role, the console's reads and actions, suspension, the audit log.

- A customer's ``role`` is ``customer`` or ``operator``.  Only the command line makes an
  operator (``yippiemove user set-role EMAIL operator``): no page or endpoint changes a
  role, so the first operator, and every other, is made by whoever runs the service.
- Every operator action (cancel, requeue, suspend, unsuspend, reading a customer's
  report) writes one :class:`~yippiemove.service.db.AuditEntry` in the transaction of
  the action itself: an action without its row, or a row without its action, cannot be
  committed.  Nothing in the code updates or deletes an audit row.
- Suspending a customer: their web sessions are deleted, log-in and API tokens are
  refused (403, :class:`~yippiemove.service.core.Suspended`), their running jobs are
  cancelled (the source stops being read on behalf of a suspended account) and the
  passwords of those jobs are wiped when they stop (service/jobhost.py ``finish``);
  their queued jobs are *held*: they stay queued but no worker claims them (jobhost's
  claim, the recovery sweeps skip them: :func:`not_held`).  Unsuspending lets them log
  in again and puts the held jobs back in the queue (the customer ordered them and never
  cancelled them; holding them was ours).
- What the console shows of a job is :func:`job_row`: a whitelist (never a credential,
  not even masked); reports are read-only.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from sqlalchemy import ColumnElement, delete, exists, func, select

from ..jobs.vocab import TERMINAL, JobStatus, Phase
from . import joblist
from .db import AuditEntry, Job, User, WebSession

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

    from .core import Service

__all__ = [
    "ACTIONS",
    "ROLES",
    "Operators",
    "job_row",
    "not_held",
]

ROLES = ("customer", "operator")
#: The actions of the audit log.
ACTIONS = (
    "set_role",
    "cancel",
    "requeue",
    "suspend",
    "unsuspend",
    "read_report",
    "grant_credits",  # issue 20 (service/billing.py)
)
#: Longest suspension reason kept.
REASON_MAX = 500
#: Rows of a console listing at most.
LIST_MAX = 500


def not_held() -> ColumnElement[bool]:
    """A WHERE clause on ``jobs``: the job's customer is not suspended (held jobs are
    not claimed, and the recovery sweeps do not enqueue them again)."""
    return ~exists().where(User.id == Job.user_id, User.suspended.is_(True))


def _side(acc: dict[str, Any] | None) -> dict[str, Any]:
    acc = acc or {}
    return {k: acc.get(k) for k in ("host", "port", "security", "username")}


def job_row(job: Job, email: str = "", held: bool = False) -> dict[str, Any]:
    """What an operator sees of a job: a whitelist of its fields (no credential, no
    password field of any kind, not even masked)."""
    p = job.progress or {}
    return {
        "id": job.id,
        "user_id": job.user_id,
        "email": email,
        "status": str(job.status),
        "phase": Phase.HELD if held and job.status == JobStatus.QUEUED else p.get("phase"),
        "held": bool(held and job.status == JobStatus.QUEUED),
        "batch_id": job.batch_id,
        "source": _side(job.source),
        "dest": _side(job.dest),
        "created": job.created,
        "started": job.started,
        "finished": job.finished,
        "messages_done": int(p.get("messages_done") or 0),
        "messages_total": int(p.get("messages_total") or 0),
        "bytes_done": int(p.get("bytes_done") or 0),
        "error": job.error,
        "runs": job.runs or 1,
        "attempts": job.attempts or 0,
        "host": job.host,
        "cancel_requested": bool(job.cancel_requested),
    }


def _customer_row(user: User, counts: dict[str, int]) -> dict[str, Any]:
    return {
        "id": user.id,
        "email": user.email,
        "role": user.role or "customer",
        "created": user.created,
        "suspended": bool(user.suspended),
        "suspended_reason": user.suspended_reason,
        "suspended_at": user.suspended_at,
        "jobs": {str(st): counts.get(str(st), 0) for st in JobStatus},
    }


def _audit_row(e: AuditEntry) -> dict[str, Any]:
    return {
        "id": e.id,
        "when": e.when,
        "operator_id": e.operator_id,
        "operator_email": e.operator_email,
        "action": e.action,
        "target_kind": e.target_kind,
        "target_id": e.target_id,
        "detail": dict(e.detail or {}),
    }


class Operators:
    """The operator's side of :class:`~yippiemove.service.core.Service` (a mixin)."""

    # -- the audit log ------------------------------------------------------------------

    @staticmethod
    def _audit(
        s: Session,
        operator: User | None,
        action: str,
        kind: str,
        target: str | int,
        **detail: Any,
    ) -> None:
        """One audit row, in the caller's transaction (the action's own)."""
        assert action in ACTIONS, action
        s.add(
            AuditEntry(
                when=time.time(),
                operator_id=operator.id if operator is not None else None,
                operator_email=operator.email if operator is not None else "",
                action=action,
                target_kind=kind,
                target_id=str(target),
                detail={k: v for k, v in detail.items() if v is not None},
            )
        )

    def audit_log(
        self: Service, operator_id: int, limit: int = 100, offset: int = 0
    ) -> dict[str, Any]:
        """The audit log, newest first."""
        self._operator(operator_id)
        limit = max(1, min(int(limit), LIST_MAX))
        with self.db.read() as s:
            total = int(s.scalar(select(func.count()).select_from(AuditEntry)) or 0)
            rows = s.scalars(
                select(AuditEntry)
                .order_by(AuditEntry.id.desc())
                .offset(max(0, int(offset)))
                .limit(limit)
            )
            return {"total": total, "entries": [_audit_row(e) for e in rows]}

    # -- roles ------------------------------------------------------------------------

    def set_role(self: Service, email: str, role: str) -> int:
        """Make the customer EMAIL an operator, or a customer again (the command line
        only: ``yippiemove user set-role``); audited, by "the command line"."""
        from .core import ServiceError

        if role not in ROLES:
            raise ServiceError(f"role: must be one of {', '.join(ROLES)}")
        uid = self.user_id_for_email(email)
        with self.db.session() as s:
            user = s.get(User, uid, with_for_update=True)
            assert user is not None
            before = user.role or "customer"
            user.role = role
            self._audit(
                s,
                None,
                "set_role",
                "customer",
                uid,
                email=user.email,
                role=role,
                before=before,
                by="cli",
            )
        return uid

    def is_operator(self: Service, user_id: int) -> bool:
        with self.db.read() as s:
            row = s.execute(
                select(User.role, User.suspended).where(User.id == user_id)
            ).one_or_none()
        return row is not None and row[0] == "operator" and not row[1]

    def _operator(self: Service, operator_id: int, s: Session | None = None) -> User:
        """The operator's row; NotFound (the console's 404) for anyone else."""
        from .core import NotFound

        if s is None:
            with self.db.read() as r:
                user = r.get(User, operator_id)
        else:
            user = s.get(User, operator_id)
        if user is None or user.role != "operator" or user.suspended:
            raise NotFound("not found")
        return user

    # -- reads --------------------------------------------------------------------------

    def op_customers(self: Service, operator_id: int, query: str = "") -> list[dict[str, Any]]:
        """Customers whose address contains ``query`` (all when empty), by address."""
        self._operator(operator_id)
        q = str(query or "").strip().lower()[:320]
        with self.db.read() as s:
            stmt = select(User).order_by(User.email).limit(LIST_MAX)
            if q:
                escaped = q.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
                stmt = stmt.where(User.email.like(f"%{escaped}%", escape="\\"))
            users = list(s.scalars(stmt))
            counts: dict[int, dict[str, int]] = {}
            if users:
                for uid, status, n in s.execute(
                    select(Job.user_id, Job.status, func.count())
                    .where(Job.user_id.in_([u.id for u in users]))
                    .group_by(Job.user_id, Job.status)
                ):
                    counts.setdefault(uid, {})[str(status)] = int(n)
            return [_customer_row(u, counts.get(u.id, {})) for u in users]

    def op_customer(self: Service, operator_id: int, user_id: int) -> dict[str, Any]:
        """One customer, their jobs (newest first) and their batches."""
        from .core import NotFound

        self._operator(operator_id)
        with self.db.read() as s:
            user = s.get(User, user_id)
            if user is None:
                raise NotFound("no such customer")
            jobs = list(
                s.scalars(
                    select(Job)
                    .where(Job.user_id == user_id)
                    .order_by(Job.created.desc(), Job.id)
                    .limit(LIST_MAX)
                )
            )
            rows = [job_row(j, user.email, bool(user.suspended)) for j in jobs]
            counts: dict[str, int] = {}
            for j in jobs:
                counts[str(j.status)] = counts.get(str(j.status), 0) + 1
            out = _customer_row(user, counts)
        batches: dict[str, dict[str, Any]] = {}
        for r in rows:
            if r["batch_id"]:
                b = batches.setdefault(r["batch_id"], {"id": r["batch_id"], "jobs": {}})
                b["jobs"][r["status"]] = b["jobs"].get(r["status"], 0) + 1
        out["transfers"] = rows
        out["batches"] = list(batches.values())
        return out

    def op_jobs(
        self: Service,
        operator_id: int,
        status: str | None = None,
        user_id: int | None = None,
        batch_id: str | None = None,
    ) -> list[dict[str, Any]]:
        """All customers' jobs (newest first, at most LIST_MAX), by status, customer or
        batch: the first page of :meth:`op_job_page`."""
        return self.op_job_page(operator_id, status, user_id, batch_id, limit=LIST_MAX)[0]

    def op_job_page(
        self: Service,
        operator_id: int,
        status: str | None = None,
        user_id: int | None = None,
        batch_id: str | None = None,
        *,
        cursor: str | None = None,
        limit: int = LIST_MAX,
    ) -> tuple[list[dict[str, Any]], str | None]:
        """One page of all customers' jobs, newest first, and the cursor of the next
        (None on the last): the customer list's keyset (service/joblist.py, issue 18)
        without its customer filter.  A bad status, limit or cursor is a ServiceError."""
        from .core import ServiceError

        self._operator(operator_id)
        if status is not None and status not in tuple(JobStatus):
            raise ServiceError(f"status: must be one of {', '.join(JobStatus)}")
        base = select(Job, User.email, User.suspended).join(User, User.id == Job.user_id)
        if user_id is not None:
            base = base.where(Job.user_id == user_id)
        try:
            joblist.check_limit(limit, LIST_MAX)
            stmt = joblist.keyset(
                base,
                statuses=None if status is None else [status],
                batch_id=batch_id or None,
                cursor=cursor,
                limit=limit,
            )
        except ValueError as exc:
            raise ServiceError(str(exc)) from None
        with self.db.read() as s:
            rows, nxt = joblist.split(list(s.execute(stmt)), limit, lambda r: r[0])
            return [job_row(j, email, bool(susp)) for j, email, susp in rows], nxt

    def op_job(self: Service, operator_id: int, job_id: str) -> dict[str, Any]:
        from .core import NotFound

        self._operator(operator_id)
        with self.db.read() as s:
            row = s.execute(
                select(Job, User.email, User.suspended)
                .join(User, User.id == Job.user_id)
                .where(Job.id == str(job_id))
            ).one_or_none()
            if row is None:
                raise NotFound("no such transfer")
            return job_row(row[0], row[1], bool(row[2]))

    def op_queue(self: Service, operator_id: int) -> dict[str, Any]:
        """Queue and worker state: jobs queued (held apart), running, the worker hosts
        (heartbeat, draining) and this process's worker pool."""
        self._operator(operator_id)
        with self.db.read() as s:
            counts = {
                str(st): int(n)
                for st, n in s.execute(
                    select(Job.status, func.count())
                    .where(Job.status.in_((JobStatus.QUEUED, JobStatus.RUNNING)))
                    .group_by(Job.status)
                )
            }
            held = int(
                s.scalar(
                    select(func.count())
                    .select_from(Job)
                    .where(Job.status == JobStatus.QUEUED, ~not_held())
                )
                or 0
            )
        try:
            waiting: int | None = len(self.queue.waiting_ids() or ())
        except Exception:  # the queue's server is away: say so, do not fail the page
            waiting = None
        return {
            "queued": counts.get(JobStatus.QUEUED, 0),
            "held": held,
            "running": counts.get(JobStatus.RUNNING, 0),
            "queue_messages": waiting,
            "hosts": self.hosts(),
            "local": {
                "host": self.settings.host_name,
                "workers": self._workers,
                "consuming": bool(self.queue.running),
                "draining": bool(self.agent is not None and self.agent.drained),
            },
        }

    def op_report(self: Service, operator_id: int, job_id: str) -> tuple[int, dict[str, Any]]:
        """The owner's id and the job's row, for a read-only look at its report (the
        caller reads it as the owner would: service.report, web/reports.py); audited."""
        with self.db.session() as s:
            operator = self._operator(operator_id, s)
            job = s.get(Job, str(job_id))
            if job is None:
                from .core import NotFound

                raise NotFound("no such transfer")
            email = s.scalar(select(User.email).where(User.id == job.user_id)) or ""
            self._audit(s, operator, "read_report", "job", job.id, customer=email)
            return job.user_id, job_row(job, email)

    # -- actions ------------------------------------------------------------------------

    def _op_job_locked(self: Service, s: Session, job_id: str) -> Job:
        from .core import NotFound

        job = s.get(Job, str(job_id), with_for_update=True)
        if job is None:
            raise NotFound("no such transfer")
        return job

    def op_cancel(self: Service, operator_id: int, job_id: str, reason: str = "") -> dict[str, Any]:
        """Cancel any customer's job (queued: at once; running: its supervisor stops it)."""
        with self.db.session() as s:
            operator = self._operator(operator_id, s)
            job = self._op_job_locked(s, job_id)
            before = str(job.status)
            self._cancel_job(s, job)
            self._audit(
                s, operator, "cancel", "job", job.id, before=before, reason=_reason(reason) or None
            )
            out = job_row(job, self.user_email(job.user_id))
        self.supervisor.poke(str(job_id))
        return out

    def op_requeue(self: Service, operator_id: int, job_id: str) -> dict[str, Any]:
        """Put any customer's job back in the queue: an ended one runs again (as the
        customer's re-run: only what is missing is copied); a queued one gets a new queue
        message (one lost, or a worker that gave it up).  A running job: Conflict."""
        from .core import Conflict

        with self.db.session() as s:
            operator = self._operator(operator_id, s)
            job = self._op_job_locked(s, job_id)
            before = str(job.status)
            if job.status == JobStatus.RUNNING:
                raise Conflict("the transfer is running: cancel it first")
            if job.status in TERMINAL:
                self._rerun_job(s, job, free=True)  # an operator's decision: not charged
            self._audit(s, operator, "requeue", "job", job.id, before=before)
            owner = s.get(User, job.user_id)
            out = job_row(job, owner.email if owner else "", bool(owner and owner.suspended))
        self._enqueue(str(job_id))
        return out

    def op_grant_credits(
        self: Service, operator_id: int, user_id: int, amount: int, note: str, key: str
    ) -> dict[str, Any]:
        """Credits for a customer (issue 20): one ``grant`` ledger entry per ``key`` (a
        retried request grants once) and its audit row, in one transaction.  Returns
        ``{"granted": bool, "balance": int}`` (False: that key granted already)."""
        from . import ledger
        from .core import Conflict, NotFound, ServiceError

        if not self.billing.enabled:
            raise Conflict("payments are off on this service")
        if isinstance(amount, bool) or not isinstance(amount, int) or amount <= 0:
            raise ServiceError("amount: a positive whole number of minor units (cents)")
        key = str(key).strip()
        if not 0 < len(key) <= 100:
            raise ServiceError("key: 1 to 100 characters")
        note = _reason(note)
        with self.db.session() as s:
            operator = self._operator(operator_id, s)
            if s.get(User, user_id) is None:
                raise NotFound("no such customer")
            account = self.billing.account_of(s, user_id)
            entry = ledger.post(
                s,
                account,
                amount,
                "grant",
                f"grant:{key}",
                actor=operator.email,
                note=note or None,
            )
            if entry is not None:
                self._audit(
                    s,
                    operator,
                    "grant_credits",
                    "customer",
                    user_id,
                    amount=amount,
                    currency=self.billing.prices.currency,
                    key=key,
                    note=note or None,
                )
            return {"granted": entry is not None, "balance": ledger.balance(s, account)}

    def op_suspend(self: Service, operator_id: int, user_id: int, reason: str) -> dict[str, Any]:
        """Suspend a customer (see the module): sessions ended, running jobs cancelled,
        queued ones held; one audit row naming the jobs cancelled and held."""
        from .core import Conflict, NotFound, ServiceError

        why = _reason(reason)
        if not why:
            raise ServiceError("reason: say why the customer is suspended")
        cancelled: list[str] = []
        with self.db.session() as s:
            operator = self._operator(operator_id, s)
            user = s.get(User, user_id, with_for_update=True)
            if user is None:
                raise NotFound("no such customer")
            if user.id == operator.id:
                raise Conflict("an operator cannot suspend their own account")
            if user.suspended:
                raise Conflict("the customer is suspended already")
            user.suspended = True
            user.suspended_reason = why
            user.suspended_at = time.time()
            s.execute(delete(WebSession).where(WebSession.user_id == user.id))
            held = []
            for job in s.scalars(
                select(Job)
                .where(
                    Job.user_id == user.id,
                    Job.status.in_((JobStatus.QUEUED, JobStatus.RUNNING)),
                )
                .with_for_update()
            ):
                if job.status == JobStatus.RUNNING:
                    job.cancel_requested = True
                    cancelled.append(job.id)
                else:
                    progress = dict(job.progress or {})
                    progress["phase"] = Phase.HELD
                    job.progress = progress
                    held.append(job.id)
            self._audit(
                s,
                operator,
                "suspend",
                "customer",
                user.id,
                email=user.email,
                reason=why,
                cancelled=cancelled,
                held=held,
            )
            email = user.email
        for job_id in cancelled:
            self.supervisor.poke(job_id)
        return self._customer_view(user_id, email)

    def op_unsuspend(self: Service, operator_id: int, user_id: int) -> dict[str, Any]:
        """Let the customer in again; their held jobs go back to the queue."""
        from .core import Conflict, NotFound

        with self.db.session() as s:
            operator = self._operator(operator_id, s)
            user = s.get(User, user_id, with_for_update=True)
            if user is None:
                raise NotFound("no such customer")
            if not user.suspended:
                raise Conflict("the customer is not suspended")
            user.suspended = False
            user.suspended_reason = None
            user.suspended_at = None
            released = []
            for job in s.scalars(
                select(Job)
                .where(Job.user_id == user.id, Job.status == JobStatus.QUEUED)
                .with_for_update()
            ):
                progress = dict(job.progress or {})
                if progress.get("phase") == Phase.HELD:
                    progress["phase"] = Phase.QUEUED
                    job.progress = progress
                released.append(job.id)
            self._audit(
                s, operator, "unsuspend", "customer", user.id, email=user.email, requeued=released
            )
            email = user.email
        for job_id in released:
            self._enqueue(job_id)
        return self._customer_view(user_id, email)

    def _customer_view(self: Service, user_id: int, email: str) -> dict[str, Any]:
        with self.db.read() as s:
            user = s.get(User, user_id)
            assert user is not None
            counts = {
                str(st): int(n)
                for st, n in s.execute(
                    select(Job.status, func.count())
                    .where(Job.user_id == user_id)
                    .group_by(Job.status)
                )
            }
            return _customer_row(user, counts)


def _reason(text: Any) -> str:
    """A reason as kept: one line, at most REASON_MAX characters."""
    return " ".join(str(text or "").split())[:REASON_MAX]
