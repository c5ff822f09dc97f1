"""The control database: users, API tokens and jobs (SQLAlchemy 2.0).

It is the source of truth of the service: the job queue only carries job ids, and
whoever runs a job first *claims* it here (a compare-and-set UPDATE), so a job id
delivered twice, or re-enqueued after a crash, runs once.

SQLite is the embedded default (WAL, a busy timeout, ``BEGIN IMMEDIATE`` for writers so
that they wait for each other instead of failing on a lock upgrade, plain deferred
transactions for readers (:meth:`Database.read`) so that polling pages never wait for, or
hold up, progress writes; ``secure_delete`` so that deleted credentials do not linger in
free pages).  PostgreSQL is the fleet's database: a plain ``postgresql://user@host/db``
URL (as libpq's tools write it) is driven by psycopg 3, with a connect timeout, TCP
keepalives and a statement timeout so that a restarted or unreachable server is noticed
in seconds (:func:`engine_options`).  READ COMMITTED and the row locks the writers take
(``with_for_update``) are all the service needs there.

The schema is made and changed by Alembic migrations (service/schema.py,
service/migrations/), never by ``create_all``.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy import (
    JSON,
    URL,
    BigInteger,
    Boolean,
    Engine,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    UniqueConstraint,
    create_engine,
    event,
    false,
    make_url,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, sessionmaker

__all__ = [
    "AccountToken",
    "ActiveOrder",
    "ApiToken",
    "AuditEntry",
    "AuthThrottle",
    "Base",
    "Batch",
    "BatchLine",
    "BillingAccount",
    "Database",
    "DomainCredential",
    "IdempotencyKey",
    "Job",
    "JobCheckpoint",
    "LedgerEntry",
    "MailboxLock",
    "OAuthSignIn",
    "PendingSignup",
    "StagedPass",
    "StagedSchedule",
    "User",
    "WebSession",
    "WorkerHost",
    "connect_error",
    "driver_url",
    "engine_options",
    "shown_url",
]


class Base(DeclarativeBase):
    pass


class User(Base):
    __tablename__ = "users"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    email: Mapped[str] = mapped_column(String(320), unique=True, index=True)
    password_hash: Mapped[str] = mapped_column(String(200))
    created: Mapped[float] = mapped_column(Float, default=time.time)
    #: IANA time zone for times in mails (issue 17; None: UTC); set from the browser.
    timezone: Mapped[str | None] = mapped_column(String(64), nullable=True)
    # -- issue 17, operators (service/operator.py) --
    #: "customer" or "operator"; set by ``yippiemove user set-role`` only.
    role: Mapped[str] = mapped_column(String(16), default="customer", server_default="customer")
    #: A suspended customer cannot log in or use a token; their jobs are held or cancelled.
    suspended: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    suspended_reason: Mapped[str | None] = mapped_column(Text, nullable=True)
    suspended_at: Mapped[float | None] = mapped_column(Float, nullable=True)


class ApiToken(Base):
    __tablename__ = "api_tokens"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(200), default="")
    #: SHA-256 (hex) of the token; the token itself is shown once and never stored.
    token_hash: Mapped[str] = mapped_column(String(64), unique=True, index=True)
    created: Mapped[float] = mapped_column(Float, default=time.time)
    last_used: Mapped[float | None] = mapped_column(Float, nullable=True)


class Job(Base):
    """One transfer.  ``source``/``dest`` hold host, port, security, username only."""

    __tablename__ = "jobs"
    #: A customer's list, newest first, a page at a time (issue 18; migration 0010).
    __table_args__ = (Index("ix_jobs_user_created", "user_id", "created", "id"),)

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    status: Mapped[str] = mapped_column(String(16), index=True, default="queued")
    source: Mapped[dict[str, Any]] = mapped_column(JSON)
    dest: Mapped[dict[str, Any]] = mapped_column(JSON)
    folders: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    created: Mapped[float] = mapped_column(Float, default=time.time)
    started: Mapped[float | None] = mapped_column(Float, nullable=True)
    finished: Mapped[float | None] = mapped_column(Float, nullable=True)
    #: Live counters, rate history (bounded) and per-folder progress; see JobView.
    progress: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    report_path: Mapped[str | None] = mapped_column(Text, nullable=True)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    #: "host|pid|process start time" of the supervisor running the job.
    lease_owner: Mapped[str | None] = mapped_column(String(300), nullable=True)
    lease_expires: Mapped[float | None] = mapped_column(Float, nullable=True)
    #: "pid|process start time" of the job process (the jail), while it runs.
    jail: Mapped[str | None] = mapped_column(String(100), nullable=True)
    #: Job processes started in this run (restarts and resumptions included).
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    #: Runs of this job (1 for the first, +1 per re-run).
    runs: Mapped[int] = mapped_column(Integer, default=1)
    cancel_requested: Mapped[bool] = mapped_column(Boolean, default=False)
    #: Fernet token of {"source_password", "dest_password"}; NULL once deleted.
    credentials: Mapped[bytes | None] = mapped_column(LargeBinary, nullable=True)
    #: When the credentials are deleted (set when the job ends).
    credentials_expires: Mapped[float | None] = mapped_column(Float, nullable=True)
    #: Whether the start e-mail of the current run was sent (not again on a restart).
    notified_start: Mapped[bool] = mapped_column(Boolean, default=False)
    #: The batch this job was ordered in (issue 17: one summary mail per batch, when its
    #: last job ends; ``batch_mailed`` on the batch's first job says it went out).
    batch_id: Mapped[str | None] = mapped_column(String(32), nullable=True, index=True)
    batch_mailed: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    #: Fencing token: +1 at every claim.  Every write made under the lease (progress,
    #: checkpoint, requeue, finish) names the token it was claimed with; a stale holder's
    #: token no longer matches and its writes are refused (docs/service.md "Running a
    #: fleet").
    lease_token: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    #: The worker host (``Settings.host_name``) that runs the job now, or ran it last.
    host: Mapped[str | None] = mapped_column(String(200), nullable=True, index=True)


class DomainCredential(Base):
    """A customer's admin credential for domain-wide moves (issue 16): a Google Workspace
    service account key (``kind`` ``service_account``) or a Microsoft 365 application
    (``client_credentials``).  The secret part (the key's JSON, or the client secret) is a
    Fernet token like a job's passwords; what may be shown is in clear: the label, the
    ``principal`` (the key's client_email, or the application's client id), the tenant and
    the domain.  Deleting the row deletes the secret; jobs made with it keep their own
    per-user grant in their own credentials (wiped when they end)."""

    __tablename__ = "domain_credentials"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    kind: Mapped[str] = mapped_column(String(32))
    #: The OAuth2 provider's key (OAuthConfig: "google", "microsoft").
    provider: Mapped[str] = mapped_column(String(32))
    label: Mapped[str] = mapped_column(String(200), default="")
    principal: Mapped[str] = mapped_column(String(320))
    tenant: Mapped[str | None] = mapped_column(String(200), nullable=True)
    domain: Mapped[str] = mapped_column(String(253))
    secret: Mapped[bytes] = mapped_column(LargeBinary)
    created: Mapped[float] = mapped_column(Float, default=time.time)


class OAuthSignIn(Base):
    """A customer's "Sign in with Google / Microsoft" (issue 16), from its start to the
    order (or re-sign-in) that uses it: the ``state`` sent to the provider (only its
    SHA-256: single use, expiring), to whom and to which step it belongs, and the secret
    part encrypted like a job's passwords (``secret``: the PKCE verifier and the order
    form's fields while pending; the grant once signed in).  Used or expired rows are
    deleted, their secret with them."""

    __tablename__ = "oauth_sign_ins"

    #: Random id: the order form's (or an API client's) handle of the sign-in.
    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    state_hash: Mapped[str] = mapped_column(String(64), unique=True, index=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    provider: Mapped[str] = mapped_column(String(32))
    #: "order" (a step of the web order), "reauth" (a stopped job), "api" (REST).
    purpose: Mapped[str] = mapped_column(String(16))
    #: "source" or "dest" (the order's step, or the job's side); "" for the API.
    side: Mapped[str] = mapped_column(String(8), default="")
    job_id: Mapped[str | None] = mapped_column(String(32), nullable=True)
    #: SHA-256 of a nonce kept in the browser's web session: the answer must come back
    #: to the session that started the sign-in (None: an API client's).
    binding: Mapped[str | None] = mapped_column(String(64), nullable=True)
    redirect_uri: Mapped[str] = mapped_column(Text)
    #: pending | checking | done | failed
    status: Mapped[str] = mapped_column(String(16), default="pending")
    address: Mapped[str | None] = mapped_column(String(320), nullable=True)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    secret: Mapped[bytes | None] = mapped_column(LargeBinary, nullable=True)
    created: Mapped[float] = mapped_column(Float, default=time.time)
    expires: Mapped[float] = mapped_column(Float, index=True)


class JobCheckpoint(Base):
    """The last checkpoint of a job's state database (transfer/state.py), so that a job
    resumed on another worker host starts from it, not from an empty state.

    ``data`` is a consistent copy of ``state.sqlite`` (sqlite3's backup API), compressed
    with zlib.  Written only by the lease holder: ``token`` is the job's ``lease_token``
    at the time (a stale holder's write is refused)."""

    __tablename__ = "job_checkpoints"

    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), primary_key=True)
    token: Mapped[int] = mapped_column(Integer)
    host: Mapped[str] = mapped_column(String(200))
    taken: Mapped[float] = mapped_column(Float)
    #: Size of the uncompressed state file, and SHA-256 (hex) of it.
    size: Mapped[int] = mapped_column(Integer)
    sha256: Mapped[str] = mapped_column(String(64))
    data: Mapped[bytes] = mapped_column(LargeBinary)


class WorkerHost(Base):
    """A machine running job workers (``yippiemove serve`` or ``yippiemove worker``):
    it registers at start and renews ``heartbeat``; ``yippiemove hosts`` lists them."""

    __tablename__ = "worker_hosts"

    name: Mapped[str] = mapped_column(String(200), primary_key=True)
    address: Mapped[str] = mapped_column(String(100), default="")
    #: Jobs it runs at once (its ``--workers``).
    capacity: Mapped[int] = mapped_column(Integer, default=0)
    version: Mapped[str] = mapped_column(String(50), default="")
    #: "serve" or "worker".
    role: Mapped[str] = mapped_column(String(16), default="worker")
    pid: Mapped[int] = mapped_column(Integer, default=0)
    started: Mapped[float] = mapped_column(Float, default=time.time)
    heartbeat: Mapped[float] = mapped_column(Float, default=time.time, index=True)
    #: Set by ``yippiemove worker drain NAME``: the host takes no new jobs and hands its
    #: running ones (checkpointed) to the others.
    draining: Mapped[bool] = mapped_column(Boolean, default=False, server_default="0")


class MailboxLock(Base):
    """One writer per destination mailbox: the job that holds it (service/writers.py).

    The primary key makes two holders impossible on any database; a row whose job no
    longer runs, or whose lease expired, is free (taken over by the next claim), so a
    row left behind by a crash never blocks a mailbox.
    """

    __tablename__ = "mailbox_locks"

    mailbox: Mapped[str] = mapped_column(String(700), primary_key=True)
    job_id: Mapped[str] = mapped_column(String(32))
    since: Mapped[float] = mapped_column(Float, default=time.time)


class ActiveOrder(Base):
    """One queued-or-running job per (customer, source, destination): a second order of
    the same pair gets this one (service/writers.py); a row whose job ended is free."""

    __tablename__ = "active_orders"

    pair: Mapped[str] = mapped_column(String(1500), primary_key=True)
    job_id: Mapped[str] = mapped_column(String(32))


class IdempotencyKey(Base):
    """``Idempotency-Key`` of ``POST /api/v1/transfers``: the first answer, per customer."""

    __tablename__ = "idempotency_keys"

    user_id: Mapped[int] = mapped_column(
        ForeignKey("users.id", ondelete="CASCADE"), primary_key=True
    )
    key: Mapped[str] = mapped_column(String(255), primary_key=True)
    #: SHA-256 (hex) of the request body, canonical JSON (passwords included, hashed).
    body_hash: Mapped[str] = mapped_column(String(64))
    status_code: Mapped[int] = mapped_column(Integer)
    response: Mapped[dict[str, Any]] = mapped_column(JSON)
    created: Mapped[float] = mapped_column(Float, default=time.time, index=True)


class WebSession(Base):
    """A web session (service/auth.py): the cookie holds only a random id, stored hashed.

    Logout deletes the row; a password change deletes the account's other rows."""

    __tablename__ = "web_sessions"

    #: SHA-256 (hex) of the cookie's random session id.
    id_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    #: The logged-in customer (None: not logged in).  No foreign key: the web front door
    #: also runs over stand-in services in tests; sessions are found by id only.
    user_id: Mapped[int | None] = mapped_column(Integer, nullable=True, index=True)
    #: The session's small state: CSRF token, flash messages, the page's one-time notes.
    data: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    created: Mapped[float] = mapped_column(Float, default=time.time)
    expires: Mapped[float] = mapped_column(Float, index=True)


class AuthThrottle(Base):
    """Failed attempts per key (``ip:ADDR``, ``acct:EMAIL``, ``pair:ADDR|EMAIL``,
    ``signup:ADDR``) and when the last one was; the delay grows with the count."""

    __tablename__ = "auth_throttle"

    key: Mapped[str] = mapped_column(String(400), primary_key=True)
    failures: Mapped[int] = mapped_column(Integer, default=0)
    last: Mapped[float] = mapped_column(Float, index=True)


class PendingSignup(Base):
    """A signup waiting for its e-mail link: the password is kept hashed only."""

    __tablename__ = "pending_signups"

    #: SHA-256 (hex) of the token mailed to the address.
    token_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    email: Mapped[str] = mapped_column(String(320), index=True)
    password_hash: Mapped[str] = mapped_column(String(200))
    expires: Mapped[float] = mapped_column(Float, index=True)


# -- issue 17, staged moves until cut-over (service/staged.py; migration 0006) ------------


class StagedSchedule(Base):
    """A staged job's schedule: a first pass (at ``start_at``), top-up passes every
    ``interval`` seconds while the old mailbox still receives mail, a final pass at
    ``final_at`` or when the customer says (``final_requested``).  The job stays one job
    (same id, same state database): each pass is a run of it.  ``next_run_at`` is when
    the next pass is due (None: a pass is queued or running, or none will come); the
    scheduler that sets it to None first fires the pass (service/staged.py)."""

    __tablename__ = "staged_schedules"

    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), primary_key=True)
    interval: Mapped[float] = mapped_column(Float)
    start_at: Mapped[float] = mapped_column(Float)
    final_at: Mapped[float | None] = mapped_column(Float, nullable=True)
    #: scheduled | syncing | final | done | cancelled (service/staged.py)
    state: Mapped[str] = mapped_column(String(16))
    next_run_at: Mapped[float | None] = mapped_column(Float, nullable=True, index=True)
    final_requested: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    #: The kind of the pass queued, running or last run: first | top-up | final.
    current_kind: Mapped[str] = mapped_column(String(16))


class StagedPass(Base):
    """One ended pass of a staged job, with its figures (the report's totals)."""

    __tablename__ = "staged_passes"

    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), primary_key=True)
    number: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    kind: Mapped[str] = mapped_column(String(16))
    started: Mapped[float | None] = mapped_column(Float, nullable=True)
    finished: Mapped[float] = mapped_column(Float)
    #: The run's status: done | failed | cancelled.
    outcome: Mapped[str] = mapped_column(String(16))
    copied: Mapped[int] = mapped_column(Integer)
    already_present: Mapped[int] = mapped_column(Integer)
    failed: Mapped[int] = mapped_column(Integer)
    bytes: Mapped[int] = mapped_column(BigInteger)


# -- issue 17, journey-batches: batches as first-class objects (migration 0007) -------------


class Batch(Base):
    """A customer's batch of transfers (service/batches.py): a CSV or a domain's users,
    checked line by line before anything starts (pre-flight), then started as jobs
    (``jobs.batch_id`` is this id).  ``state``: checking -> checked -> running; "done"
    is derived when every job has ended."""

    __tablename__ = "batches"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(200), default="")
    #: "csv" or "domain".
    kind: Mapped[str] = mapped_column(String(16), default="csv")
    #: checking | checked | running
    state: Mapped[str] = mapped_column(String(16), default="checking")
    created: Mapped[float] = mapped_column(Float, default=time.time)
    started: Mapped[float | None] = mapped_column(Float, nullable=True)
    #: One mail to each end user (the source address) when their mailbox is done.
    notify_end_users: Mapped[bool] = mapped_column(Boolean, default=False)
    #: Start by itself when every line passed the pre-flight.
    autostart: Mapped[bool] = mapped_column(Boolean, default=True)
    lines_total: Mapped[int] = mapped_column(Integer, default=0)
    lines_checked: Mapped[int] = mapped_column(Integer, default=0)
    lines_bad: Mapped[int] = mapped_column(Integer, default=0)
    #: The folder selection every line's transfer gets (a domain batch's ``folders``).
    folders: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)


class BatchLine(Base):
    """One line of a batch: what may be shown of both accounts (never a password), its
    pre-flight verdict, and its job once started.  ``credentials`` (the accounts with
    their passwords, encrypted like a job's) only while the line is not started: wiped
    at start, or with the batch."""

    __tablename__ = "batch_lines"

    batch_id: Mapped[str] = mapped_column(
        ForeignKey("batches.id", ondelete="CASCADE"), primary_key=True
    )
    #: The line number in the customer's file.
    line: Mapped[int] = mapped_column(Integer, primary_key=True)
    source: Mapped[dict[str, Any]] = mapped_column(JSON)
    dest: Mapped[dict[str, Any]] = mapped_column(JSON)
    #: waiting | checking | ok | bad | started | refused
    check: Mapped[str] = mapped_column(String(16), default="waiting")
    #: A bad line: "source" or "dest" (or None), policy/failures.py's kind, the message.
    side: Mapped[str | None] = mapped_column(String(8), nullable=True)
    kind: Mapped[str | None] = mapped_column(String(32), nullable=True)
    message: Mapped[str | None] = mapped_column(Text, nullable=True)
    credentials: Mapped[bytes | None] = mapped_column(LargeBinary, nullable=True)
    job_id: Mapped[str | None] = mapped_column(String(32), nullable=True, index=True)
    #: The end user's "your mailbox is done" notice went out.
    end_user_mailed: Mapped[bool] = mapped_column(Boolean, default=False)
    #: Billing on (issue 20): the quote of the line's source, made by its pre-flight.
    quote_id: Mapped[str | None] = mapped_column(String(32), nullable=True)


# -- issue 17, account lifecycle (journey-account; migration 0009) ----------------------


class AccountToken(Base):
    """A link mailed for the account (service/account.py): a password reset
    (``purpose`` "reset") or the confirmation of a new e-mail address ("email", the new
    address in ``new_email``).  Only the token's SHA-256 is stored; single use (``used``
    set when it is used, so that a second use can be told apart from a wrong link) and
    expiring; pruned after it expired."""

    __tablename__ = "account_tokens"

    #: SHA-256 (hex) of the token in the mailed link.
    token_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    purpose: Mapped[str] = mapped_column(String(16))
    new_email: Mapped[str | None] = mapped_column(String(320), nullable=True)
    created: Mapped[float] = mapped_column(Float, default=time.time)
    expires: Mapped[float] = mapped_column(Float, index=True)
    used: Mapped[float | None] = mapped_column(Float, nullable=True)


# -- issue 17: operators (service/operator.py) -------------------------------------------


class AuditEntry(Base):
    """One operator action (service/operator.py): written in the transaction of the action
    itself, never deleted by the code; updated only when a customer deletes their account
    (service/account.py ``_scrub_audit``: their address and job ids replaced).
    ``detail`` holds what was done (a reason, the status before...), never a secret."""

    __tablename__ = "audit_log"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    when: Mapped[float] = mapped_column(Float, default=time.time, index=True)
    #: The operator (None: the command line, ``yippiemove user set-role``).
    operator_id: Mapped[int | None] = mapped_column(Integer, nullable=True, index=True)
    #: The operator's address at the time (the row outlives a deleted account).
    operator_email: Mapped[str] = mapped_column(String(320), default="")
    action: Mapped[str] = mapped_column(String(32))
    #: "customer" or "job".
    target_kind: Mapped[str] = mapped_column(String(16))
    target_id: Mapped[str] = mapped_column(String(64), index=True)
    detail: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)


# -- issue 20, billing: the credit ledger (service/ledger.py; migration 0011) --------------


class BillingAccount(Base):
    """Who holds credits: a customer (``user_id``), or later a company or reseller whose
    users share one balance (``company``, no user).  The balance is never stored here: it
    is the sum of the account's ledger entries.  The row is the account's lock: a spend
    takes it (``SELECT ... FOR UPDATE`` on PostgreSQL; SQLite's single writer) before it
    sums the balance, so two spends never both see the same credits."""

    __tablename__ = "billing_accounts"
    __table_args__ = (UniqueConstraint("user_id", name="uq_billing_accounts_user_id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    user_id: Mapped[int | None] = mapped_column(
        ForeignKey("users.id", ondelete="CASCADE"), nullable=True
    )
    #: A company's or reseller's name (None: a customer's own account).
    company: Mapped[str | None] = mapped_column(String(200), nullable=True)
    created_at: Mapped[float] = mapped_column(Float, default=time.time)


class LedgerEntry(Base):
    """One movement of credits (service/ledger.py): ``amount`` in minor units of the
    installation's currency, positive for credits in (``grant``, ``purchase``,
    ``refund``, a positive ``adjust``), negative for credits out (``spend``, a negative
    ``adjust``).  ``key`` names the cause (``refund:<job>``, a payment's id...) and is
    unique per account: the same cause twice inserts nothing.  Never updated."""

    __tablename__ = "ledger_entries"
    __table_args__ = (
        UniqueConstraint("account_id", "key", name="uq_ledger_entries_account_key"),
        Index("ix_ledger_entries_account_id_id", "account_id", "id"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    account_id: Mapped[int] = mapped_column(ForeignKey("billing_accounts.id", ondelete="CASCADE"))
    amount: Mapped[int] = mapped_column(BigInteger)
    #: grant | purchase | spend | refund | adjust
    kind: Mapped[str] = mapped_column(String(16))
    key: Mapped[str] = mapped_column(String(255))
    order_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    job_id: Mapped[str | None] = mapped_column(String(32), nullable=True)
    payment_id: Mapped[str | None] = mapped_column(String(255), nullable=True)
    #: Who made it: an operator's address, "stripe", "system"... (None: not said).
    actor: Mapped[str | None] = mapped_column(String(320), nullable=True)
    note: Mapped[str | None] = mapped_column(String(500), nullable=True)
    created_at: Mapped[float] = mapped_column(Float, default=time.time)


class BillingMember(Base):
    """A customer who spends a company's or reseller's credits (issue 20): their orders
    spend from ``account_id`` (a :class:`BillingAccount` with a ``company`` name), not
    from an account of their own.  Set by an operator (service/billing.py)."""

    __tablename__ = "billing_members"

    user_id: Mapped[int] = mapped_column(
        ForeignKey("users.id", ondelete="CASCADE"), primary_key=True
    )
    account_id: Mapped[int] = mapped_column(ForeignKey("billing_accounts.id", ondelete="CASCADE"))
    added_at: Mapped[float] = mapped_column(Float, default=time.time)


class PriceQuote(Base):
    """A quote (issue 20): what one transfer of a measured mailbox costs, line by line.
    An order names it, so the price shown is the price kept; it is used by one order at
    most (``job_id``) and expires.  ``subject`` is an HMAC of the source account and
    the folder choice it was measured for: an order of another mailbox cannot use it."""

    __tablename__ = "price_quotes"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    subject: Mapped[str] = mapped_column(String(64))
    currency: Mapped[str] = mapped_column(String(3))
    price: Mapped[int] = mapped_column(BigInteger)
    lines: Mapped[list[Any]] = mapped_column(JSON)
    bytes: Mapped[int] = mapped_column(BigInteger)
    messages: Mapped[int] = mapped_column(Integer)
    rerun_of: Mapped[str | None] = mapped_column(String(32), nullable=True)
    created_at: Mapped[float] = mapped_column(Float, default=time.time)
    expires_at: Mapped[float] = mapped_column(Float)
    job_id: Mapped[str | None] = mapped_column(String(32), nullable=True, unique=True)


class JobCharge(Base):
    """What one run of a transfer costs and how it was settled (issue 20): ``state`` is
    ``awaiting_payment`` (nothing spent; the job waits), ``paid`` (its ``price`` was
    spent from the balance: ledger key ``order:<job>:<run>``), ``free`` (nothing to
    pay) or ``refunded`` (given back after a failure on our side)."""

    __tablename__ = "job_charges"
    __table_args__ = (UniqueConstraint("job_id", "run", name="uq_job_charges_job_run"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), index=True)
    run: Mapped[int] = mapped_column(Integer)
    account_id: Mapped[int] = mapped_column(ForeignKey("billing_accounts.id", ondelete="CASCADE"))
    quote_id: Mapped[str | None] = mapped_column(String(32), nullable=True)
    currency: Mapped[str] = mapped_column(String(3))
    price: Mapped[int] = mapped_column(BigInteger)
    state: Mapped[str] = mapped_column(String(16))
    #: Why it waits (a declined card, a dispute...), in the customer's words.
    reason: Mapped[str | None] = mapped_column(String(500), nullable=True)
    created_at: Mapped[float] = mapped_column(Float, default=time.time)
    settled_at: Mapped[float | None] = mapped_column(Float, nullable=True)


class Payment(Base):
    """One card payment through Stripe (issue 20): for a transfer's charge (``charge_id``)
    or for a bundle of credits (``credit``).  Made before Stripe is called, so a retry
    finds it and its PaymentIntent instead of making a second one.  A payment that
    succeeds adds ``credit`` to the balance (ledger key ``payment:<id>``); the order's
    spend follows in the same transaction."""

    __tablename__ = "payments"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    account_id: Mapped[int] = mapped_column(ForeignKey("billing_accounts.id", ondelete="CASCADE"))
    user_id: Mapped[int | None] = mapped_column(
        ForeignKey("users.id", ondelete="SET NULL"), nullable=True, index=True
    )
    #: order | bundle
    purpose: Mapped[str] = mapped_column(String(16))
    charge_id: Mapped[int | None] = mapped_column(Integer, nullable=True, unique=True)
    job_id: Mapped[str | None] = mapped_column(String(32), nullable=True)
    amount: Mapped[int] = mapped_column(BigInteger)
    credit: Mapped[int] = mapped_column(BigInteger)
    currency: Mapped[str] = mapped_column(String(3))
    description: Mapped[str] = mapped_column(String(200))
    intent_id: Mapped[str | None] = mapped_column(String(255), nullable=True, unique=True)
    #: new | processing | succeeded | failed | disputed | refunded
    state: Mapped[str] = mapped_column(String(16), default="new")
    failure: Mapped[str | None] = mapped_column(String(500), nullable=True)
    card: Mapped[str | None] = mapped_column(String(64), nullable=True)
    created_at: Mapped[float] = mapped_column(Float, default=time.time)
    paid_at: Mapped[float | None] = mapped_column(Float, nullable=True)


class StripeEvent(Base):
    """A webhook event handled (issue 20): its id, inserted in the transaction of its
    effects, so a replayed or re-delivered event changes nothing."""

    __tablename__ = "stripe_events"

    id: Mapped[str] = mapped_column(String(255), primary_key=True)
    type: Mapped[str] = mapped_column(String(64))
    received_at: Mapped[float] = mapped_column(Float, default=time.time)


#: Seconds to connect to PostgreSQL, and a writer's statement (or lock wait) at most: a
#: heartbeat or progress write must fail and be retried rather than hang longer than a
#: lease behind a lock or a dead server.
PG_CONNECT_TIMEOUT = 5
PG_STATEMENT_TIMEOUT_MS = 15_000
#: PostgreSQL ends a session idle inside a transaction this long (milliseconds): a host
#: cut off from the network mid-transaction would keep its row locks until TCP noticed
#: (hours), and the other hosts' claims would wait for it.  The service never idles
#: inside a transaction (the fleet's partition test, tests/jobs/test_fleet.py).
IDLE_IN_TRANSACTION_MS = 5000


def driver_url(url: str | URL) -> URL:
    """The SQLAlchemy URL of a database URL as written by people and libpq's tools:
    ``postgresql://`` and ``postgres://`` (no driver named) mean psycopg 3; the rest
    (``sqlite:///path``, ``postgresql+psycopg://``...) is taken as it is.  Query
    parameters stay (``?host=/socket/dir``, ``sslmode=require``); a URL without a
    password lets psycopg find it as libpq does (``PGPASSWORD``, ``~/.pgpass``)."""
    u = make_url(url) if isinstance(url, str) else url
    if u.drivername in ("postgresql", "postgres"):
        u = u.set(drivername="postgresql+psycopg")
    return u


def shown_url(url: str | URL) -> str:
    """The URL for logs and messages, as it was written but never with its password."""
    try:
        return (make_url(url) if isinstance(url, str) else url).render_as_string(hide_password=True)
    except Exception:  # an unparsable URL: show nothing of it that could be a secret
        return "<an invalid database URL>"


def engine_options(url: URL, *, writer: bool = True) -> dict[str, Any]:
    """``create_engine`` options of a URL (see the module's docstring)."""
    kwargs: dict[str, Any] = {}
    if url.get_backend_name() == "sqlite":
        kwargs["connect_args"] = {"timeout": 30, "check_same_thread": False}
        # Web requests and one supervisor thread per running job share the pool.
        kwargs["pool_size"] = 10
        kwargs["max_overflow"] = 100
    elif url.get_backend_name() == "postgresql":
        connect: dict[str, Any] = {
            "connect_timeout": PG_CONNECT_TIMEOUT,
            "application_name": "yippiemove",
            # A dead peer or a cut link is noticed in ~10 s on an idle connection
            # (keepalives), and on one waiting for its data to be acknowledged.
            "keepalives": 1,
            "keepalives_idle": 5,
            "keepalives_interval": 2,
            "keepalives_count": 3,
            "tcp_user_timeout": 10_000,
        }
        if writer:
            connect["options"] = (
                f"-c statement_timeout={PG_STATEMENT_TIMEOUT_MS} "
                f"-c idle_in_transaction_session_timeout={IDLE_IN_TRANSACTION_MS}"
            )
        kwargs["connect_args"] = connect
        # A connection the server dropped (restart, failover) is replaced on checkout.
        kwargs["pool_pre_ping"] = True
        kwargs["pool_size"] = 10
        kwargs["max_overflow"] = 100
        kwargs["pool_recycle"] = 3600
    return kwargs


class Database:
    """Engine and sessions for one database URL.

    On start the schema is brought to, or checked at, the migrations' head
    (:func:`yippiemove.service.schema.ensure_current`): SQLite upgrades itself,
    PostgreSQL is created when empty and must otherwise be at head (``yippiemove db
    upgrade``), else :class:`~yippiemove.service.schema.SchemaError`.  ``prepare=False``
    skips that (``yippiemove db`` does it itself)."""

    def __init__(self, url: str, *, prepare: bool = True) -> None:
        self.sa_url = driver_url(url)
        self.url = self.sa_url.render_as_string(hide_password=False)
        #: The URL as it may be shown (no password).
        self.shown_url = shown_url(url)
        self.is_sqlite = self.sa_url.get_backend_name() == "sqlite"
        kwargs = engine_options(self.sa_url)
        self.engine: Engine = create_engine(self.sa_url, hide_parameters=True, **kwargs)
        # Reads get their own engine on SQLite: DEFERRED transactions, which in WAL mode
        # neither wait for nor block writers (pages polling progress must not queue up
        # behind, or hold up, the supervisors' progress writes).
        self.read_engine: Engine = self.engine
        if self.is_sqlite:
            _sqlite_pragmas(self.engine, "BEGIN IMMEDIATE")
            self.read_engine = create_engine(self.sa_url, hide_parameters=True, **kwargs)
            _sqlite_pragmas(self.read_engine, "BEGIN")
        #: SQLite: this process's write transactions take turns on a lock of ours.
        #: SQLite's own wait for its write lock (the busy timeout) polls with sleeps of
        #: up to 100 ms, so under many writers of one process (the API, the heartbeats
        #: writer, claims) a write could lose the race many times in a row: POST p99
        #: 0.8 s at 500 jobs (issue 18).  Here a waiting writer is woken the moment the
        #: lock is free.  Other processes' writers still meet the busy timeout.
        self._write_turn: threading.RLock | None = threading.RLock() if self.is_sqlite else None
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)
        self._read_sessions = sessionmaker(self.read_engine, expire_on_commit=False)
        if prepare:
            try:
                self.prepare()
            except BaseException:
                self.dispose()
                raise

    def migration_engine(self) -> Engine:
        """A one-connection engine for migrations: no statement timeout (a migration of
        a big table may take longer than a heartbeat may), SQLite's writer set-up."""
        from sqlalchemy.pool import NullPool

        opts = engine_options(self.sa_url, writer=False)
        opts.pop("pool_size", None)
        opts.pop("max_overflow", None)
        opts.pop("pool_recycle", None)
        engine = create_engine(self.sa_url, hide_parameters=True, poolclass=NullPool, **opts)
        if self.is_sqlite:
            _sqlite_pragmas(engine, "BEGIN IMMEDIATE")
        return engine

    def prepare(self) -> Any:
        """Bring the schema to head or check it is there (see the class); returns the
        :class:`~yippiemove.service.schema.Upgrade` done, or None."""
        from . import schema  # schema imports this module's models

        engine = self.migration_engine()
        try:
            return schema.ensure_current(engine, shown_url=self.shown_url)
        finally:
            engine.dispose()

    @contextmanager
    def session(self) -> Iterator[Session]:
        """One transaction: committed at the end of the block, rolled back on error."""
        if self._write_turn is None:
            with self._sessions() as s, s.begin():
                yield s
            return
        # Bounded like SQLite's own wait: a writer that somehow waits on another writer
        # of this process (it would deadlock here) falls back to the busy timeout.
        turn = self._write_turn.acquire(timeout=WRITE_TURN_TIMEOUT)
        try:
            with self._sessions() as s, s.begin():
                yield s
        finally:
            if turn:
                self._write_turn.release()

    @contextmanager
    def read(self) -> Iterator[Session]:
        """A read-only transaction (a consistent snapshot); never write in it."""
        with self._read_sessions() as s:  # closing it rolls the transaction back
            yield s

    def checkpoint(self) -> None:
        """SQLite: fold the WAL into the database and truncate it (after deletions)."""
        if self.is_sqlite:
            with self.engine.connect() as c:
                # On the driver's connection: SQLAlchemy would open a transaction first,
                # and a checkpoint inside a transaction cannot reset the WAL.
                raw = c.connection.driver_connection
                assert raw is not None
                raw.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()

    def dispose(self) -> None:
        self.engine.dispose()
        self.read_engine.dispose()


#: Seconds a writer waits for its turn in this process (then SQLite's busy timeout).
WRITE_TURN_TIMEOUT = 30.0


#: How long a new connection retries switching a fresh database to WAL (the busy timeout).
WAL_SWITCH_TIMEOUT = 30.0


def _set_wal(cur: Any) -> None:
    """``PRAGMA journal_mode=WAL``, retried while the database is locked.

    Switching the journal mode takes an exclusive lock, and SQLite answers "database is
    locked" at once there instead of calling the busy handler: two processes opening a
    fresh database at the same moment (``serve`` and a ``worker``, two hosts' first
    start) could fail one of them (about 1 start in 10 in
    tests/service/test_migrations.py's two-process test)."""
    deadline = time.monotonic() + WAL_SWITCH_TIMEOUT
    while True:
        try:
            cur.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(0.02)


def _sqlite_pragmas(engine: Engine, begin: str) -> None:
    @event.listens_for(engine, "connect")
    def on_connect(dbapi_conn: Any, _record: Any) -> None:
        # Let us issue BEGIN ourselves (pysqlite's implicit BEGIN is DEFERRED).
        dbapi_conn.isolation_level = None
        cur = dbapi_conn.cursor()
        _set_wal(cur)
        cur.execute("PRAGMA synchronous=NORMAL")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.execute("PRAGMA secure_delete=ON")
        cur.execute("PRAGMA busy_timeout=30000")
        cur.close()

    @event.listens_for(engine, "begin")
    def on_begin(conn: Any) -> None:
        # Writers: a DEFERRED transaction that reads and then writes can fail at once
        # with SQLITE_BUSY when another connection wrote meanwhile; IMMEDIATE waits.
        conn.exec_driver_sql(begin)


def connect_error(exc: BaseException, url: str | URL) -> str:
    """A database error as one line for a message, without the URL's password (libpq's
    own messages do not carry it; this makes sure)."""
    orig = getattr(exc, "orig", None) or exc
    text = " ".join(str(orig).split()) or type(orig).__name__
    try:
        password = driver_url(url).password
    except Exception:
        password = None
    if password:
        text = text.replace(str(password), "***")
    return text
