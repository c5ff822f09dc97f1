"""The Service facade: everything the web front door and the CLI may do.

The web layer (``yippiemove.web``) talks to the rest of the service only through
:class:`Service` (docs/service-contract.md).  Every method that touches a transfer takes
the acting ``user_id`` and behaves as if other customers' transfers did not exist
(:class:`NotFound`), so tenant isolation does not depend on each page remembering it.

Errors are :class:`ServiceError` (and subclasses) whose message is safe to show: it names
the offending field (``"source.port: must be 1-65535"``) and never holds a password.
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import functools
import hashlib
import hmac
import io
import json
import logging
import os
import re
import threading
import time
import types
import uuid
from collections.abc import Callable, Collection
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar, cast

from sqlalchemy import delete, func, select
from sqlalchemy.exc import IntegrityError

from ..jobs import spec
from ..jobs.descriptors import FdBudget, raise_limit, soft_limit
from ..jobs.progress import default_progress, interrupt_folders
from ..jobs.queue import JobQueue, make_queue
from ..jobs.supervisor import Supervisor, identity_dead, kill_stale_jail
from ..jobs.vocab import TERMINAL, JobStatus, Phase, Security
from ..policy.failures import describe
from ..transfer.identity import same_address
from ..transfer.model import Endpoint
from . import joblist, staged
from .account import AccountLifecycle, purge_orphan_job_dirs
from .auth import AuthStore
from .batches import Batches
from .checks import CheckFailed, CheckSlots, TooManyChecks, run_check
from .config import Settings
from .db import ApiToken, Database, IdempotencyKey, Job, JobCheckpoint, User
from .domainbatch import DomainBatches
from .fleet import HostAgent, HostNameTaken, LostMessages, list_hosts, set_draining, wait_drained
from .jobhost import SqlJobStore, expire_credentials, supervisor_config
from .notify import Notifier
from .operator import Operators, not_held
from .passwords import password_problem
from .resume import RESUMABLE, Resumes, credential_sides
from .secrets import (
    CredentialBox,
    hash_password,
    hash_token,
    new_token,
    password_needs_rehash,
    verify_password,
)
from .signin import SignIns
from .writers import holder_of_pair

log = logging.getLogger("yippiemove.service")


class TooManyWorkers(ValueError):
    """``start(workers)`` asks for more concurrent jobs than the process's open-files
    limit can hold (jobs/descriptors.py); the message names the limit."""


T = TypeVar("T")

__all__ = [
    "Account",
    "AlreadyActive",
    "Busy",
    "Conflict",
    "CredentialsRefused",
    "FolderInfo",
    "HostNameTaken",
    "IdempotencyMismatch",
    "JobView",
    "NotFound",
    "Service",
    "ServiceError",
    "Suspended",
    "default_selected",
    "explain_imap_error",
]

STATUSES = tuple(JobStatus)
#: Orders that count against ``customer_max_pending`` (a waiting order holds passwords).
PENDING = (JobStatus.QUEUED, JobStatus.RUNNING, JobStatus.AWAITING_PAYMENT)
#: Seconds an ``Idempotency-Key`` is remembered (Stripe's rule: 24 hours); after that the
#: same key is a new request.
IDEMPOTENCY_TTL = 24 * 3600.0
#: Expired keys deleted at most per new key (bounded work on the request's path).
IDEMPOTENCY_PURGE = 100
SECURITIES = tuple(Security)


def credentials_blob(source: spec.Account, dest: spec.Account) -> dict[str, Any]:
    """A job's secrets as its encrypted credentials blob stores them: the passwords and,
    for a side signed in with OAuth2, its grant (``source_oauth``/``dest_oauth``);
    wiped together (``expire_credentials``, ``forget_credentials``)."""
    out: dict[str, Any] = {"source_password": source.password, "dest_password": dest.password}
    if source.oauth is not None:
        out["source_oauth"] = source.oauth
    if dest.oauth is not None:
        out["dest_oauth"] = dest.oauth
    return out


@functools.cache
def _dummy_hash() -> str:
    """A hash to verify against for unknown e-mails: same time as a wrong password."""
    return hash_password("not a real password, only for equal timing")


_EMAIL = re.compile(r"\A[^@\s]+@[^@\s]+\.[^@\s]+\Z")

#: Folder names (any level, case-insensitive) left unticked by default: junk and trash.
JUNK_TRASH_NAMES = frozenset(
    {
        "junk",
        "spam",
        "junk e-mail",
        "junk email",
        "junk mail",
        "bulk mail",
        "spamverdacht",
        "trash",
        "bin",
        "deleted",
        "deleted items",
        "deleted messages",
        "papierkorb",
        "gelöschte elemente",
        "gelöschte objekte",
        "corbeille",
        "papelera",
        "cestino",
        "prullenbak",
    }
)


class ServiceError(Exception):
    """A request the service cannot do; the message is safe to show to the customer."""

    status: int = 400


class NotFound(ServiceError):
    """No such object -- also for another customer's transfer."""

    status = 404


class Conflict(ServiceError):
    """The object is not in a state that allows this (e.g. re-run while running)."""

    status = 409


class CredentialsRefused(ServiceError):
    """A new password refused by its server on the spot (service/resume.py): nothing
    was stored.  ``kind`` names why (policy/failures.py), ``detail`` is the check's own
    text (the server's answer, never the password)."""

    status = 422

    def __init__(self, message: str, kind: str = "other", detail: str = "") -> None:
        super().__init__(message)
        self.kind = kind
        self.detail = detail


class Suspended(ServiceError):
    """The customer's account is suspended by an operator (service/operator.py): no
    log-in, no API token (403)."""

    status = 403

    def __init__(self) -> None:
        super().__init__(
            "this account is suspended: write to the service's support to have it reopened"
        )


class Busy(ServiceError):
    """Too many account checks in flight (for this customer or in all): try later."""

    status = 429


class WrongPassword(ServiceError):
    """The account's password, asked again before a change (service/account.py), is
    not right."""

    status = 403


class TooManyAttempts(ServiceError):
    """Too many wrong passwords or reset requests from this client lately: ``wait``
    seconds before the next is looked at."""

    status = 429

    def __init__(self, wait: float) -> None:
        minutes = int(wait // 60) + 1
        super().__init__(
            f"too many attempts; try again in {minutes} minute{'s' if minutes != 1 else ''}"
        )
        self.wait = wait


class Account(spec.Account):
    """The API's ACCOUNT object (jobs/spec.py ``Account``).  The password never shows in
    ``repr``; :meth:`from_dict` raises ServiceError."""

    @classmethod
    def from_dict(cls, data: Any, role: str = "account") -> Account:
        """From JSON/form data; a missing or mistyped field is a ServiceError naming it.

        ``port`` may be omitted (993 for tls, else 143) or a string of digits;
        ``security`` defaults to ``tls``.
        """
        try:
            return cast(Account, super().from_dict(data, role))
        except spec.SpecError as exc:
            raise ServiceError(str(exc)) from None


class AlreadyActive(Conflict):
    """The same transfer (same source and destination accounts) is already queued or
    running: ``job_id`` names it (one order per pair, docs/design.md "One writer")."""

    def __init__(self, job_id: str) -> None:
        super().__init__(f"this transfer is already queued or running: {job_id}")
        self.job_id = job_id


class TooManyTransfers(ServiceError):
    """The customer has as many transfers queued or running as allowed
    (``customer_max_pending``): nothing new until some end."""

    status = 429


class IdempotencyMismatch(ServiceError):
    """An ``Idempotency-Key`` used before with another request body."""

    status = 422


@dataclass(frozen=True)
class FolderInfo:
    name: str
    messages: int
    bytes: int
    dest_name: str
    selected_by_default: bool
    #: Why ``dest_name`` is what it is (special folder, separator...); see Plan.as_dict.
    reasons: tuple[str, ...] = ()
    #: Selected by the ``folders`` of the check (its include/exclude); None without one.
    selected: bool | None = None


#: JobView.of's "read the schedule yourself".
_READ: Any = object()


@dataclass(frozen=True)
class JobView:
    """What pages and the API show of a transfer (never a password)."""

    id: str
    status: str  # queued | running | done | failed | cancelled
    source: dict[str, Any]
    dest: dict[str, Any]
    folders: dict[str, Any] | None
    created: float
    started: float | None
    finished: float | None
    progress: dict[str, Any]
    error: str | None
    # additions: restarts/resumptions of this run, runs so far, whether a re-run is
    # possible now, and when the stored passwords will be deleted (None: while running)
    attempts: int = 0
    runs: int = 1
    can_rerun: bool = False
    credentials_expire: float | None = None
    #: Issue 16: "reauth" when the job stopped because a provider refused its sign-in
    #: (consent revoked): sign in again to resume; ``sign_in_needed``: the sides
    #: ("source", "dest") waiting for a new sign-in (refused, or forgotten).
    error_code: str | None = None
    sign_in_needed: list[str] = dataclasses.field(default_factory=list)
    #: Issue 17: why it stopped in the customer's words (policy/failures.py ``describe``:
    #: kind, side, message, next_step, detail = the raw text), None when it did not.
    failure: dict[str, Any] | None = None
    #: The sides that take a new password now (failed or cancelled, no OAuth2 sign-in;
    #: service/resume.py), else empty.
    credential_sides: list[str] = dataclasses.field(default_factory=list)
    #: Issue 17, a staged move (service/staged.py ``view``): its schedule, next pass,
    #: how long the passwords are kept, and the history of its passes; None otherwise.
    schedule: dict[str, Any] | None = None

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def of(cls, job: Job, *, schedule: Any = _READ) -> JobView:
        """The view of ``job``; ``schedule``: its staged view already read
        (service/staged.py ``views``), else read here."""
        progress = default_progress()
        progress.update(job.progress or {})
        progress.pop("history_step", None)
        if job.status == JobStatus.QUEUED and progress.get("phase") in (None, "", Phase.DONE):
            progress["phase"] = Phase.QUEUED
        # Sides waiting for a new OAuth2 sign-in: refused by the provider (the job
        # stopped, progress "reauth") or forgotten by the customer (account "signed_out").
        refused = progress.get("reauth") or []
        needed = [
            side
            for side, acc in (("source", job.source), ("dest", job.dest))
            if side in refused or (acc or {}).get("signed_out")
        ]
        return cls(
            id=job.id,
            status=job.status,
            source=dict(job.source),
            dest=dict(job.dest),
            folders=job.folders,
            created=job.created,
            started=job.started,
            finished=job.finished,
            progress=progress,
            error=job.error,
            attempts=job.attempts or 0,
            runs=job.runs or 1,
            can_rerun=job.status in TERMINAL and job.credentials is not None and not needed,
            credentials_expire=job.credentials_expires if job.credentials is not None else None,
            error_code=(
                "reauth" if job.status == JobStatus.FAILED and progress.get("reauth") else None
            ),
            sign_in_needed=needed,
            failure=_failure(job, progress),
            credential_sides=credential_sides(job) if job.status in RESUMABLE else [],
            schedule=staged.view(job) if schedule is _READ else schedule,
        )


def _starts_later(view: JobView) -> bool:
    """A staged job whose first pass is for later: not enqueued now (service/staged.py)."""
    return view.schedule is not None and view.schedule["state"] == "scheduled"


def _failure(job: Job, progress: dict[str, Any]) -> dict[str, Any] | None:
    """The stop of a failed job (or the failed messages of a done one) as the customer
    reads it (issue 17)."""
    if job.status not in (JobStatus.FAILED, JobStatus.DONE) or not job.error:
        return None
    known = progress.get("failure") if isinstance(progress.get("failure"), dict) else {}
    kind, side = known.get("kind"), known.get("side")
    refused = progress.get("reauth") or []
    if job.status == JobStatus.FAILED and refused:
        kind, side = "consent_revoked", refused[0] if len(refused) == 1 else None
    if job.status == JobStatus.DONE:
        kind = "messages_failed"
    return describe(job.error, kind, side)


def default_selected(name: str, separator: str | None, special_use: frozenset[str]) -> bool:
    """Junk/Spam and Trash are left unticked: by SPECIAL-USE (RFC 6154) or by name."""
    if special_use & {"\\JUNK", "\\TRASH"}:
        return False
    parts = name.split(separator) if separator else [name]
    return not any(p.strip().lower() in JUNK_TRASH_NAMES for p in parts)


_APP_PASSWORD = re.compile(
    r"app(lication)?[- ]?(specific[- ])?passwor|app passwor|web ?login required|WEBALERT",
    re.IGNORECASE,
)


#: What to check when a domain credential's grant could not sign in (docs/service.md
#: "Domain-wide moves").
_DOMAIN_HINTS = {
    "service_account": (
        "Check that the mailbox exists and that the service account's domain-wide "
        "delegation (Google Admin console: Security > API controls) grants its client id "
        "the scope https://mail.google.com/ for this domain."
    ),
    "client_credentials": (
        "Check that the mailbox exists, that the application has the IMAP.AccessAsApp "
        "permission with admin consent, and that its service principal was given access "
        "to this mailbox (Add-MailboxPermission)."
    ),
}

#: The longest server text (an IMAP NO/BAD/BYE) a customer is shown.
SERVER_TEXT_MAX = 200
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]+")


def server_words(text: str, limit: int = SERVER_TEXT_MAX) -> str:
    """An IMAP server's words as a customer may see them: control bytes out, at most
    ``limit`` characters (pages escape them as any text)."""
    text = _CONTROL.sub(" ", text).strip()
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"


def not_imap(where: str, account: Account) -> str:
    """One sentence for every port that did not answer as an IMAP server -- closed,
    silent, another protocol: a customer cannot tell them apart (no port scanning
    through the check), and never sees what such a port sent."""
    return (
        f"{where}{account.host} port {account.port} did not answer as an IMAP server "
        "(check the server name, the port and the security setting: TLS is usually "
        "port 993, STARTTLS port 143)"
    )


def _child_error(result: dict[str, Any]) -> Exception:
    """The check child's error (service/checkproc.py) as the exception it was, enough of
    it for :func:`explain_imap_error`: its class, text and IMAP response (kind, text)."""
    from ..imap import errors as imap_errors
    from ..imap import protocol

    name = str(result["imap_error"])
    cls = getattr(imap_errors, name, None) or getattr(protocol, name, None)
    if not (
        isinstance(cls, type) and issubclass(cls, imap_errors.ImapError | protocol.ProtocolError)
    ):
        cls = imap_errors.ImapError
    exc = cls.__new__(cls)
    Exception.__init__(exc, str(result.get("text", "")))
    response = result.get("response")
    exc.response = (  # type: ignore[attr-defined]
        types.SimpleNamespace(
            kind=str(response.get("kind", "")), text=str(response.get("text", "")).encode()
        )
        if isinstance(response, dict)
        else None
    )
    return exc


def explain_imap_error(exc: Exception, role: str, account: Account) -> str:
    """A sentence for the customer: wrong password, host not found, TLS problem...

    Never a peer's raw bytes: a port that is not an IMAP server gets :func:`not_imap`;
    an IMAP server's own NO/BAD/BYE texts are shown through :func:`server_words`.  The
    details go to the operator's log."""
    from ..imap.errors import (
        AuthenticationError,
        CommandError,
        ConnectError,
        ConnectionLost,
        InsecureAuthError,
        ProtocolError,
        ResponseTooLarge,
        TlsError,
    )

    where = {"source": "source: ", "dest": "destination: "}.get(role, f"{role}: ")
    log.info(
        "check of %s:%d failed: %s: %.300r",
        account.host,
        account.port,
        type(exc).__name__,
        str(exc),
    )
    if isinstance(exc, AuthenticationError):
        # Our words and the server's NO text (capped, cleaned); never the command.
        text = server_words(str(exc), 2 * SERVER_TEXT_MAX)
        grant = account.oauth if isinstance(account.oauth, dict) else None
        if grant is not None and grant.get("kind") in _DOMAIN_HINTS:
            # A domain credential's grant: the admin's set-up is what to check.
            return f"{where}{text}. {_DOMAIN_HINTS[grant['kind']]}"
        msg = f"{where}{text.rstrip('.')}. Check the user name and password."
        if _APP_PASSWORD.search(text):
            msg += (
                " The server asks for an app password: create one in the provider's "
                "account security settings and use it here instead of your usual password."
            )
        return msg
    if isinstance(exc, ConnectError):
        if str(exc).startswith("unknown host"):
            return f"{where}host {account.host!r} not found; check the server name"
        if exc.response is not None and exc.response.kind == "BYE":  # an IMAP greeting
            said = server_words(exc.response.text.decode("utf-8", "replace"))
            return f"{where}{account.host} refused the connection: {said}"
        return not_imap(where, account)
    if isinstance(exc, ResponseTooLarge):  # our words: a size and where it was announced
        return f"{where}{exc}"
    if isinstance(exc, ConnectionLost | ProtocolError):
        return not_imap(where, account)
    if isinstance(exc, TlsError):
        if "certificate" in str(exc).lower():  # our TLS library's words, not the peer's
            return (
                f"{where}TLS problem: {server_words(str(exc), 2 * SERVER_TEXT_MAX)} (check "
                "the port and the security setting: TLS is usually port 993, STARTTLS port 143)"
            )
        if "STARTTLS" in str(exc) and "does not offer" in str(exc):
            return (
                f"{where}{account.host} does not offer STARTTLS (check the port and the "
                "security setting: TLS is usually port 993, STARTTLS port 143)"
            )
        return not_imap(where, account)
    if isinstance(exc, InsecureAuthError):
        return (
            f"{where}{account.host} offers no TLS, and passwords are only sent over TLS "
            "to servers other than this machine"
        )
    if isinstance(exc, CommandError):
        said = exc.response.text.decode("utf-8", "replace") if exc.response else ""
        return f"{where}the server refused a command: {server_words(said)}"
    return not_imap(where, account)


class Service(Batches, DomainBatches, SignIns, Resumes, AccountLifecycle, Operators):
    """Users, tokens, transfers, account checks and reports (see the contract); the
    domain-wide moves of issue 16 in service/domainbatch.py."""

    def __init__(self, settings: Settings, queue: JobQueue | None = None) -> None:
        self.settings = settings
        settings.data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        settings.jobs_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.db = Database(settings.database_url)
        self.box = CredentialBox.from_settings(settings.credentials_key_file)
        settings.session_key()  # created 0600 on first start
        self.queue = (
            queue if queue is not None else make_queue(settings.queue_url, settings.data_dir)
        )
        # SQLite files are created with the umask; only the service may read them.
        for path in settings.data_dir.glob("*.sqlite*"):
            with contextlib.suppress(OSError):
                os.chmod(path, 0o600)
        self.notifier = Notifier(settings)
        #: Throttling, web sessions, pending sign-ups (service/auth.py).
        self.auth = AuthStore(self.db)
        #: The clock of the Idempotency-Key expiry (tests move it).
        self.clock: Callable[[], float] = time.time
        from .billing import Billing  # billing imports this module's errors

        self.billing = Billing(self)
        self._stopping = threading.Event()
        #: Running jobs take the graceful path (SIGTERM, flush, requeue): set when the
        #: service stops, and while this worker host drains.
        self._jobs_stopping = threading.Event()
        self.supervisor = Supervisor(
            supervisor_config(settings),
            SqlJobStore(settings, self.db, self.box),
            self.notifier,
            self._enqueue,
            self._jobs_stopping,
        )
        self._janitor: threading.Thread | None = None
        #: Fires the due passes of staged moves (service/staged.py).
        self._scheduler: threading.Thread | None = None
        #: This process as a worker host of the fleet (None: no workers here).
        self.agent: HostAgent | None = None
        self._workers = 0
        self._lost = LostMessages()
        #: Where the service may connect for a customer (policy/egress.py).
        self.egress = settings.egress()
        #: (host, port) -> addresses: DNS, or a test's fake (accounts.resolve_host).
        self.resolve: Callable[[str, int], list[str]] | None = None
        #: Seconds a checked server has to answer (connect and greeting).
        self.check_connect_timeout = 20.0
        #: Account checks in flight, per customer and in all (service/checks.py).
        self.checks = CheckSlots(settings.checks_per_user, settings.checks_total)

    # ================================================================== lifecycle

    def start(self, workers: int | None = None, role: str = "serve") -> None:
        """Run jobs in this process: register as a worker host (service/fleet.py),
        recover interrupted jobs, start queue consumers and the host's heartbeat and
        recovery sweeps.  ``workers`` 0 (``serve --workers 0``): web and API only -- no
        consumers, no host row; the maintenance round still runs.

        :class:`HostNameTaken` when another live process runs as this host."""
        n = self.settings.workers if workers is None else workers
        raise_limit()  # the soft open-files limit up to the hard one (jobs/descriptors.py)
        fits = FdBudget().capacity()
        if n > fits:
            raise TooManyWorkers(
                f"{n} workers do not fit in this process's limit of {soft_limit()} open "
                f"files (at most {fits}: {FdBudget.per_job} per job, {FdBudget.reserve} kept "
                "for the web server and the database); raise the hard limit (ulimit -Hn, "
                "LimitNOFILE=) or ask for fewer workers"
            )
        self._stopping.clear()
        self._jobs_stopping.clear()
        self._workers = n
        if n > 0:
            agent = HostAgent(
                self.settings,
                self.db,
                role=role,
                capacity=n,
                on_drain=self._drain,
                on_undrain=self._undrain,
                sweep=self.sweep,
            )
            agent.register()
            self.agent = agent
            self.recover(startup=True)
        self.cleanup_credentials()
        if role == "serve":
            self.resume_preflights()  # batches whose check a stop interrupted (issue 17)
        if self.agent is not None:
            if not self.agent.drained:
                self.queue.start(n, self.supervisor.run_job, self.supervisor.admission)
            self.agent.start()
        self._janitor = threading.Thread(
            target=self._maintain, name="yippiemove-janitor", daemon=True
        )
        self._janitor.start()
        self._scheduler = threading.Thread(
            target=self._schedule_loop, name="yippiemove-staged", daemon=True
        )
        self._scheduler.start()

    def stop(self, timeout: float = 30.0) -> None:
        """Stop running jobs cleanly (they go back to ``queued``) and the consumers."""
        self._stopping.set()
        self._jobs_stopping.set()
        self.supervisor.admission.wake_all()
        self.supervisor.poke_all()
        if self.agent is not None:
            self.agent.stop()  # waits for a drain under way; marks the host gone
            self.agent = None
        self._jobs_stopping.set()
        self.queue.stop(timeout)
        self.supervisor.close()
        if self._janitor is not None:
            self._janitor.join(timeout=5)
            self._janitor = None
        if self._scheduler is not None:
            self._scheduler.join(timeout=5)
            self._scheduler = None
        self.notifier.flush()

    def _drain(self) -> None:
        """This host was drained: stop taking jobs; running ones take the graceful path
        of a shutdown (SIGTERM, state flushed, requeued) so that other hosts resume
        them.  A job claimed meanwhile is handed back at once (the supervisor sees the
        flag before it starts the job)."""
        self._jobs_stopping.set()
        self.supervisor.admission.wake_all()
        self.supervisor.poke_all()
        try:
            self.queue.stop(self.settings.job_kill_grace + 30)
        finally:
            if not self._stopping.is_set():
                self._jobs_stopping.clear()

    def _undrain(self) -> None:
        if not self._stopping.is_set() and not self.queue.running:
            self.queue.start(self._workers, self.supervisor.run_job, self.supervisor.admission)

    def _enqueue(self, job_id: str, delay: float = 0.0) -> bool:
        """Hand a job to the queue; a failure (the queue's server is away) is logged
        and left to the recovery sweep: the job's row is the truth (service/fleet.py
        ``LostMessages``).  False when it failed."""
        try:
            self.queue.enqueue(job_id, delay)
        except Exception as exc:
            log.warning("job %s: cannot enqueue it now (%s); the recovery sweep will", job_id, exc)
            return False
        return True

    def sweep(self) -> dict[str, list[str]]:
        """One recovery sweep of a worker host (every ``recovery_interval`` seconds):
        expired leases taken over, lost queue messages replaced."""
        return {"recovered": self.recover(startup=False), "requeued": self.requeue_lost()}

    def requeue_lost(self) -> list[str]:
        """Enqueue ``queued`` jobs that no queue message will deliver (service/fleet.py
        ``LostMessages``); returns their ids."""
        with self.db.read() as s:
            queued = set(
                s.scalars(select(Job.id).where(Job.status == JobStatus.QUEUED, not_held()))
            )
            queued -= staged.waiting_start(s)  # staged: enqueued when their start comes
        if not queued:
            self._lost.lost(set(), set(), None)
            return []
        waiting = self.queue.waiting_ids()
        lost = self._lost.lost(queued, waiting, self.queue.server_id())
        for job_id in lost:
            log.warning("job %s: queued but in no queue message; enqueued again", job_id)
            self._enqueue(job_id)
        return lost

    # ================================================================== the fleet

    def hosts(self) -> list[dict[str, Any]]:
        """The worker hosts (operators; ``yippiemove hosts --json``): name, role,
        address, capacity, version, pid, heartbeat age, state (up / draining / drained
        / gone) and the ids of the jobs each runs."""
        return [h.as_dict() for h in list_hosts(self.db, self.settings)]

    def drain_host(self, name: str, draining: bool = True) -> None:
        """Set (or clear) a worker host's drain flag; NotFound for an unknown host."""
        if not set_draining(self.db, name, draining):
            raise NotFound(f"no worker host named {name!r} (see `yippiemove hosts`)")

    def wait_drained(self, name: str, timeout: float | None = None) -> dict[str, Any]:
        """Until the host runs no job (or is gone); TimeoutError, NotFound."""
        try:
            return wait_drained(self.db, self.settings, name, timeout).as_dict()
        except LookupError as exc:
            raise NotFound(str(exc)) from None

    def close(self) -> None:
        self.db.dispose()

    def _schedule_loop(self) -> None:
        while not self._stopping.wait(self.settings.staged_poll_interval):
            try:
                self.fire_due_passes()
            except Exception:
                log.exception("the staged moves' scheduler failed a round")

    def fire_due_passes(self, now: float | None = None) -> list[str]:
        """Start the staged moves' passes that are due (each by one scheduler only, of
        any number of processes or hosts: service/staged.py); returns the ids started."""
        return staged.fire_due(self.db, self._enqueue, now)

    def _maintain(self) -> None:
        while not self._stopping.wait(self.settings.maintenance_interval):
            try:
                self.cleanup_credentials()
                self.recover(startup=False)
                self.auth.prune()
                self.prune_account_links()
                purge_orphan_job_dirs(self.settings, self.db)  # deleted accounts' files
            except Exception:
                log.exception("maintenance round failed")

    def recover(self, startup: bool = False) -> list[str]:
        """Put jobs whose supervisor died back in the queue; returns their ids.

        A ``running`` job is taken over when its lease expired, or at once when its
        owner was a process on this machine that no longer exists (the service was
        killed).  Its job process, if it survived, is killed first: two movers must
        never write the same mailbox.  At start-up, ``queued`` jobs that no queue message
        will deliver are enqueued again too (all of them when the queue cannot tell: a
        duplicate is harmless, a job runs once, whoever claims it first; but hosts of a
        fleet starting one after the other must not fill the queue with copies).
        """
        now = time.time()
        with self.db.read() as s:
            # Columns only: every worker host runs this every few seconds (a sweep).
            rows = s.execute(
                select(Job.id, Job.lease_owner, Job.jail, Job.lease_expires, Job.lease_token).where(
                    Job.status == JobStatus.RUNNING
                )
            ).all()
            host = self.settings.host_name
            stale = [
                (job_id, owner, jail, token or 0, dead)
                for job_id, owner, jail, expires, token in rows
                if (owner != self.supervisor.owner or not self.supervisor.supervises(job_id))
                and ((dead := identity_dead(owner, host)) or (expires or 0) < now)
            ]
            queued = (
                list(
                    s.scalars(
                        select(Job.id)
                        .where(Job.status == JobStatus.QUEUED, not_held())
                        .order_by(Job.created)
                    )
                )
                if startup
                else []
            )
            if queued:  # staged moves whose first pass is for later: not yet
                later = staged.waiting_start(s)
                queued = [job_id for job_id in queued if job_id not in later]
        recovered = []
        for job_id, owner, jail, token, dead in stale:
            kill_stale_jail(jail, host=self.settings.host_name)
            with self.db.session() as s:
                job = s.get(Job, job_id, with_for_update=True)
                # The same holder, under the same fencing token, and (unless its process
                # is known dead) still expired: a renewal since the read wins the race.
                if (
                    job is None
                    or job.status != JobStatus.RUNNING
                    or job.lease_owner != owner
                    or (job.lease_token or 0) != token
                    or (not dead and (job.lease_expires or 0) >= time.time())
                ):
                    continue
                job.status = JobStatus.QUEUED
                job.lease_owner = None
                job.lease_expires = None
                job.jail = None
                progress = dict(job.progress or {})
                progress["phase"] = Phase.RESUMING
                job.progress = progress
            log.warning("job %s: its supervisor is gone; resuming it", job_id)
            recovered.append(job_id)
        if queued:
            try:
                waiting = self.queue.waiting_ids()
            except Exception as exc:  # the queue's server is away: the sweep will see
                log.warning("cannot read the job queue: %s", exc)
                waiting = None
            if waiting is not None:
                queued = [job_id for job_id in queued if job_id not in waiting]
        for job_id in recovered + queued:
            self._enqueue(job_id)
        return recovered

    def cleanup_credentials(self, now: float | None = None) -> int:
        """Delete stored passwords whose retention ran out; returns how many."""
        now = time.time() if now is None else now
        with self.db.session() as s:
            jobs = s.scalars(
                select(Job).where(
                    Job.credentials.is_not(None),
                    Job.credentials_expires.is_not(None),
                    Job.credentials_expires <= now,
                    Job.status.in_(TERMINAL),
                )
            ).all()
            for job in jobs:
                job.credentials = None
                job.credentials_expires = None
            n = len(jobs)
            # Orders never paid for (issue 20): cancelled after ``unpaid_order_days``,
            # their passwords with them (they are kept only for the run they wait for).
            unpaid = s.scalars(
                select(Job).where(
                    Job.status == JobStatus.AWAITING_PAYMENT,
                    Job.created <= now - self.settings.unpaid_order_days * 86400,
                )
            ).all()
            for job in unpaid:
                job.status = JobStatus.CANCELLED
                job.finished = now
                job.error = "never paid for: cancelled, and its passwords deleted"
                job.credentials = None
                job.credentials_expires = None
                staged.job_cancelled(s, job)
            n += len(unpaid)
            # Sign-ins that timed out, or that no order used (their grants with them).
            self._purge_sign_ins(s, now)
        n += self.expire_batch_credentials(now)  # batch lines nobody started (issue 17)
        if n:
            with contextlib.suppress(Exception):
                self.db.checkpoint()
            log.info("deleted the credentials of %d ended transfer(s)", n)
        return n

    # ================================================================== customers

    def create_user(self, email: str, password: str) -> int:
        email = _norm_email(email)
        problem = password_problem(password)
        if problem:
            raise ServiceError(f"password: {problem}")
        with self.db.session() as s:
            if s.scalar(select(User.id).where(User.email == email)) is not None:
                raise Conflict("email: a customer with this address exists already")
            user = User(email=email, password_hash=hash_password(password), created=time.time())
            s.add(user)
            s.flush()
            return user.id

    @property
    def signup_by_mail(self) -> bool:
        """Sign-ups are confirmed by a mailed link (and never say whether an address has
        an account) whenever the service can send mail (docs/security.md)."""
        return self.notifier.enabled

    def request_signup(self, email: str, password: str) -> None:
        """Start a sign-up: the address gets a link to finish it, or, when it has an
        account already, a note saying so.  The caller's answer is the same either way."""
        email = _norm_email(email)
        problem = password_problem(password)
        if problem:
            raise ServiceError(f"password: {problem}")
        with self.db.read() as s:
            exists = s.scalar(select(User.id).where(User.email == email)) is not None
        base = self.settings.base_url.rstrip("/")
        if not self.auth.signup_mail_allowed(email):
            hash_password(password)  # the same work and the same answer; no mail
            log.info("sign-up mail not sent: too many for one address in a short time")
        elif exists:
            hash_password(password)  # the same work either way (timing)
            self.notifier.signup_exists(email, f"{base}/login")
        else:
            token = self.auth.signup_start(email, hash_password(password))
            self.notifier.signup_confirm(email, f"{base}/signup/confirm?token={token}")

    def confirm_signup(self, token: str) -> int | None:
        """Finish a sign-up from its mailed link: the new customer's id (None: unknown or
        expired link, or the address got an account meanwhile)."""
        pending = self.auth.signup_take(token)
        if pending is None:
            return None
        email, password_hash = pending
        with self.db.session() as s:
            if s.scalar(select(User.id).where(User.email == email)) is not None:
                return None
            user = User(email=email, password_hash=password_hash, created=time.time())
            s.add(user)
            s.flush()
            return user.id

    def change_password(self, user_id: int, current: str, new: str) -> None:
        """Set a new password (the current one must be right); the caller revokes the
        account's other sessions (``auth.revoke_sessions``)."""
        problem = password_problem(new)
        if problem:
            raise ServiceError(f"password: {problem}")
        with self.db.session() as s:
            user = s.get(User, user_id)
            if user is None:
                raise NotFound("no such customer")
            if not verify_password(user.password_hash, current):
                raise ServiceError("current_password: is not right")
            user.password_hash = hash_password(new)

    def authenticate(self, email: str, password: str) -> int | None:
        try:
            email = _norm_email(email)
        except ServiceError:
            return None
        with self.db.session() as s:
            user = s.scalar(select(User).where(User.email == email))
            if user is None:
                verify_password(_dummy_hash(), password)
                return None
            if not verify_password(user.password_hash, password):
                return None
            if password_needs_rehash(user.password_hash):
                user.password_hash = hash_password(password)
            if user.suspended:  # said only to whoever knows the password
                raise Suspended()
            return user.id

    def create_token(self, user_id: int, name: str = "") -> str:
        return str(self.create_token_view(user_id, name)["token"])

    def create_token_view(self, user_id: int, name: str = "") -> dict[str, Any]:
        """Addition (issue 17, the REST tokens): a new token as ``list_tokens`` shows
        it, plus ``token``, its secret (stored only as a hash)."""
        self.user_email(user_id)
        token = new_token()
        with self.db.session() as s:
            row = ApiToken(
                user_id=user_id,
                name=str(name)[:200],
                token_hash=hash_token(token),
                created=time.time(),
            )
            s.add(row)
            s.flush()
            view = {"id": row.id, "name": row.name, "created": row.created, "last_used": None}
        return {**view, "token": token}

    def list_tokens(self, user_id: int) -> list[dict[str, Any]]:
        with self.db.read() as s:
            rows = s.scalars(
                select(ApiToken).where(ApiToken.user_id == user_id).order_by(ApiToken.id)
            )
            return [
                {"id": t.id, "name": t.name, "created": t.created, "last_used": t.last_used}
                for t in rows
            ]

    def revoke_token(self, user_id: int, token_id: int) -> None:
        with self.db.session() as s:
            tok = s.get(ApiToken, token_id)
            if tok is None or tok.user_id != user_id:
                raise NotFound("no such token")
            s.delete(tok)

    def user_for_token(self, token: str) -> int | None:
        if not isinstance(token, str) or not token:
            return None
        h = hash_token(token)
        with self.db.session() as s:
            tok = s.scalar(select(ApiToken).where(ApiToken.token_hash == h))
            if tok is None:
                return None
            if s.scalar(select(User.suspended).where(User.id == tok.user_id)):
                raise Suspended()
            now = time.time()
            if tok.last_used is None or now - tok.last_used > 60:
                tok.last_used = now
            return tok.user_id

    def user_email(self, user_id: int) -> str:
        with self.db.read() as s:
            user = s.get(User, user_id)
            if user is None:
                raise NotFound("no such customer")
            return user.email

    def user_id_for_email(self, email: str) -> int:
        """Addition (operator CLI): the id of the customer with this address."""
        email = _norm_email(email)
        with self.db.read() as s:
            uid = s.scalar(select(User.id).where(User.email == email))
        if uid is None:
            raise NotFound(f"email: no customer {email!r}")
        return uid

    # ================================================================== accounts

    def validate_account(self, account: Account, role: str = "account") -> Account:
        """Addition: check every field; returns the account with a normalised host."""
        try:
            return spec.check_account(
                account, role, allow_insecure_hosts=self.settings.allow_insecure_hosts
            )
        except spec.SpecError as exc:
            raise ServiceError(str(exc)) from None

    def pin(
        self, host: str, port: int, role: str, user: str = "", *, unresolved_ok: bool = False
    ) -> Endpoint:
        """The egress check (policy/egress.py): ``host`` resolved once and checked; an
        Endpoint pinned to the address to connect to.  :class:`ServiceError`
        ``"ROLE.host: ..."`` when the service may not connect there (or it does not
        resolve).  Every path that connects, creates or re-runs a job comes here."""
        from ..accounts import pin_endpoint
        from ..imap.errors import ImapError
        from ..policy.egress import EgressRefused

        try:
            return pin_endpoint(Endpoint(host, port, user), self.egress, self.resolve)
        except EgressRefused as exc:
            log.info("egress refused for %s: %s", role, exc)
            raise ServiceError(f"{role}.host: {exc}") from None
        except ImapError:
            if unresolved_ok:  # an order: the job resolves, checks and pins when it runs
                return Endpoint(host, port, user)
            raise ServiceError(f"{role}: host {host!r} not found; check the server name") from None

    async def check_account(
        self,
        account: Account,
        *,
        role: str = "account",
        dest: Account | None = None,
        user_id: int | None = None,
        folders: dict[str, Any] | None = None,
    ) -> list[FolderInfo]:
        """Log in, list the folders with message counts and sizes, default ticks.

        ``folders`` (issue 17, the REST folder listing): a checked ``folders`` object
        (jobs/spec.py ``check_folders``): its rules and filters are planned with (the
        destination names after renames and ``under``, the counts after the message
        filters) and ``FolderInfo.selected`` says what its include/exclude select.

        ``dest`` (an addition) also logs in there and maps each folder's name to the
        destination's namespace and separator exactly as the transfer will; without
        it ``dest_name`` is the name as on the source.  Raises :class:`ServiceError`
        with a clear message: wrong password, host not found, TLS problem...

        The talking to servers runs in a short-lived limited child process
        (service/checks.py: ``check_timeout``, ``check_max_memory``); at most
        ``checks_per_user`` checks of ``user_id`` and ``checks_total`` in all are in
        flight, more is :class:`Busy` (429).  Both servers pass the egress policy first
        (:meth:`pin`), and the child connects to the very addresses checked.
        """
        import asyncio

        account = self.validate_account(account, role)
        if dest is not None:
            dest = self.validate_account(dest, "dest")
        # Resolved once, checked, and connected to at that address (no second lookup).
        src_at = await asyncio.to_thread(self.pin, account.host, account.port, role)
        dst_at = (
            await asyncio.to_thread(self.pin, dest.host, dest.port, "dest")
            if dest is not None
            else None
        )
        request = {
            "account": account.as_dict(),
            "address": src_at.address,
            "role": role,
            "dest": dest.as_dict() if dest is not None else None,
            "oauth_config": (
                self.settings.oauth_config_dict()
                if account.oauth is not None or (dest is not None and dest.oauth is not None)
                else None
            ),
            "dest_address": dst_at.address if dst_at is not None else None,
            "ca_file": self.settings.ca_file,
            "allow_insecure_hosts": self.settings.allow_insecure_hosts,
            "connect_timeout": self.check_connect_timeout,
            "folders": folders,
        }
        try:
            with self.checks.slot(user_id):
                result = await run_check(
                    request,
                    timeout=self.settings.check_timeout,
                    max_memory=self.settings.check_max_memory,
                )
        except TooManyChecks as exc:
            raise Busy(str(exc)) from None
        except CheckFailed as exc:
            where = {"source": "source: ", "dest": "destination: "}.get(role, f"{role}: ")
            raise ServiceError(f"{where}{exc}") from None
        finally:
            del request
        if not result.get("ok"):
            if "imap_error" in result:
                side = str(result.get("role", role))
                who = dest if side == "dest" and dest is not None else account
                raise ServiceError(explain_imap_error(_child_error(result), side, who))
            raise ServiceError(str(result.get("message") or "the check failed"))
        return [
            FolderInfo(
                name=f["name"],
                messages=int(f["messages"]),
                bytes=int(f["bytes"]),
                dest_name=f["dest_name"],
                selected_by_default=default_selected(
                    f["name"], f["separator"], frozenset(f["special_use"])
                ),
                reasons=tuple(f["reasons"]),
                selected=f.get("selected"),
            )
            for f in result.get("folders", [])
        ]

    # ================================================================== transfers

    def make_spec(
        self,
        source: Account,
        dest: Account,
        folders: dict[str, Any] | None = None,
        *,
        pinned: dict[tuple[str, int], str | None] | None = None,
    ) -> spec.JobSpec:
        """The one place a transfer is checked: both accounts, that they differ, the
        folder selection with its rules and filters, the egress policy on both servers
        (``pinned``: a batch's memory of servers already resolved).  The web form, the
        REST API and the batch CSV all come through here."""
        source = self.validate_account(source, "source")
        dest = self.validate_account(dest, "dest")
        # Whatever the front door checked before (a web step, nothing at all), both
        # servers pass the egress policy here; the job process checks again when it runs.
        for role, acc in (("source", source), ("dest", dest)):
            key = (acc.host.lower(), acc.port)
            if pinned is not None and key in pinned:  # a batch: one lookup per server
                if pinned[key] is not None:
                    raise ServiceError(f"{role}.host: {pinned[key]}")
                continue
            try:
                self.pin(acc.host, acc.port, role, unresolved_ok=True)
            except ServiceError as exc:
                if pinned is not None:
                    pinned[key] = str(exc).split(": ", 1)[1]
                raise
            if pinned is not None:
                pinned[key] = None
        if (source.host.lower(), source.port, source.username) == (
            dest.host.lower(),
            dest.port,
            dest.username,
        ):
            raise ServiceError("dest: is the same account as the source")
        # The same mailbox under another name (localhost / 127.0.0.1...): refused here,
        # before a job exists; what the servers say is compared again by the job.
        alias = same_address(
            Endpoint(source.host, source.port, source.username),
            Endpoint(dest.host, dest.port, dest.username),
        )
        if alias is not None:
            raise ServiceError(f"dest: is the same mailbox as the source ({alias})")
        try:
            return spec.JobSpec(source=source, dest=dest, folders=folders)
        except spec.SpecError as exc:  # the folder selection, its rules or filters
            raise ServiceError(str(exc)) from None

    def create_transfer(
        self,
        user_id: int,
        source: Account,
        dest: Account,
        folders: dict[str, Any] | None = None,
        schedule: dict[str, Any] | None = None,
        quote_id: str | None = None,
    ) -> JobView:
        """Validate, store (passwords encrypted), enqueue; returns the new job.
        ``schedule``: a staged move (:meth:`make_schedule`).  ``quote_id``: billing on,
        the quote the order keeps the price of (service/billing.py); the job then waits
        (``awaiting_payment``) unless its price was spent from the balance."""
        plan = self.make_schedule(schedule) if schedule is not None else None
        return self.submit(user_id, self.make_spec(source, dest, folders), plan, quote_id)

    def submit(
        self,
        user_id: int,
        job_spec: spec.JobSpec,
        schedule: staged.Schedule | None = None,
        quote_id: str | None = None,
    ) -> JobView:
        """Store a checked spec (passwords encrypted) and enqueue it; returns the new job.

        :class:`AlreadyActive` when a job of the same pair is queued or running."""
        self.user_email(user_id)
        view = self._atomically(
            lambda s: self._add_job(s, user_id, job_spec, schedule, quote_id)
        )
        if view.status == JobStatus.QUEUED and not _starts_later(view):
            self._enqueue(view.id)
        log.info("job %s: created for user %d", view.id, user_id)
        return view

    def create_transfer_once(
        self,
        user_id: int,
        key: str,
        body: Any,
        source: Account,
        dest: Account,
        folders: dict[str, Any] | None = None,
        schedule: dict[str, Any] | None = None,
        quote_id: str | None = None,
    ) -> tuple[int, dict[str, Any]]:
        """:meth:`create_transfer` under an ``Idempotency-Key`` (see :meth:`submit_once`).

        Errors of the order itself (a field, the same account twice) are raised as
        usual and not remembered: the key may be used again with a corrected body."""
        plan = self.make_schedule(schedule) if schedule is not None else None
        job_spec = self.make_spec(source, dest, folders)
        return self.submit_once(user_id, key, body, job_spec, plan, quote_id)

    def submit_once(
        self,
        user_id: int,
        key: str,
        body: Any,
        job_spec: spec.JobSpec,
        schedule: staged.Schedule | None = None,
        quote_id: str | None = None,
    ) -> tuple[int, dict[str, Any]]:
        """:meth:`submit` under an ``Idempotency-Key``: (status, body) of the API's answer.

        The first request with ``key`` stores its answer (201 with the new job, or 409
        naming the job already running for the pair); a later one with the same
        ``body`` (the request's JSON) gets it back unchanged, with another body
        :class:`IdempotencyMismatch`.  Keys are per customer; the body is kept only as
        an HMAC (it holds passwords).  A key expires :data:`IDEMPOTENCY_TTL` after its
        first use (then it is a new request); each new key deletes up to
        :data:`IDEMPOTENCY_PURGE` expired ones."""
        self.user_email(user_id)
        key = str(key)
        canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
        body_hash = hmac.new(
            self.settings.session_key(), canonical.encode(), hashlib.sha256
        ).hexdigest()

        def once(s: Any) -> tuple[int, dict[str, Any], bool]:
            now = self.clock()
            row = s.get(IdempotencyKey, (user_id, key), with_for_update=True)
            if row is not None and row.created <= now - IDEMPOTENCY_TTL:
                s.delete(row)  # expired: the key is new again
                s.flush()
                row = None
            if row is not None:
                if row.body_hash != body_hash:
                    raise IdempotencyMismatch(
                        f"Idempotency-Key {key!r} was used before with another request body"
                    )
                return row.status_code, dict(row.response), False
            try:
                with s.begin_nested():
                    view = self._add_job(s, user_id, job_spec, schedule, quote_id)
                status, body = 201, {"id": view.id, "status": view.status}
                new = view.status == JobStatus.QUEUED and not _starts_later(view)
            except AlreadyActive as exc:
                status, body, new = 409, {"error": str(exc), "id": exc.job_id}, False
            expired = s.execute(
                select(IdempotencyKey.user_id, IdempotencyKey.key)
                .where(IdempotencyKey.created <= now - IDEMPOTENCY_TTL)
                .order_by(IdempotencyKey.created)
                .limit(IDEMPOTENCY_PURGE)
            ).all()
            for old_user, old_key in expired:
                s.execute(
                    delete(IdempotencyKey).where(
                        IdempotencyKey.user_id == old_user, IdempotencyKey.key == old_key
                    )
                )
            s.add(
                IdempotencyKey(
                    user_id=user_id,
                    key=key,
                    body_hash=body_hash,
                    status_code=status,
                    response=body,
                    created=now,
                )
            )
            s.flush()
            return status, body, new

        status, body, new = self._atomically(once)
        if new:
            self._enqueue(body["id"])
        if status == 201:
            log.info("job %s: created for user %d", body["id"], user_id)
        return status, body

    def _atomically(self, fn: Callable[[Any], T]) -> T:
        """``fn(session)`` in one transaction, once more when a concurrent transaction
        inserted the same unique key first (PostgreSQL; SQLite serialises writers)."""
        for attempt in range(3):
            try:
                with self.db.session() as s:
                    return fn(s)
            except IntegrityError:
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")

    def _add_job(
        self,
        s: Any,
        user_id: int,
        job_spec: spec.JobSpec,
        schedule: staged.Schedule | None = None,
        quote_id: str | None = None,
    ) -> JobView:
        source, dest = job_spec.source, job_spec.dest
        blob = self.box.encrypt(credentials_blob(source, dest))
        job = Job(
            id=uuid.uuid4().hex,
            user_id=user_id,
            status=JobStatus.QUEUED,
            source=source.public(),
            dest=dest.public(),
            folders=job_spec.folders.as_dict() if job_spec.folders is not None else None,
            created=time.time(),
            progress=default_progress(),
            credentials=blob,
            attempts=0,
            runs=1,
        )
        other = holder_of_pair(s, user_id, job)
        if other is not None:
            raise AlreadyActive(other)
        self._check_pending(s, user_id)
        s.add(job)
        s.flush()
        if self.billing.enabled:  # priced: queued if paid from the balance, else waits
            folders = job_spec.folders.as_dict() if job_spec.folders is not None else None
            subject = self.billing.subject(user_id, source, folders)
            self.billing.charge_new_job(s, user_id, job, quote_id, subject)
        if schedule is not None:
            staged.add(s, job, schedule, time.time())
        return JobView.of(job)

    def _check_pending(self, s: Any, user_id: int) -> None:
        """Refuse a new order past the customer's ``customer_max_pending`` (fair share:
        a batch of thousands does not fill the queue).  The customer's row is locked so
        that parallel orders count one after the other."""
        limit = self.settings.customer_max_pending
        if limit <= 0:
            return
        s.get(User, user_id, with_for_update=True)
        pending = s.scalar(
            select(func.count())
            .select_from(Job)
            .where(Job.user_id == user_id, Job.status.in_(PENDING))
        )
        if int(pending or 0) >= limit:
            raise TooManyTransfers(
                f"you have {pending} transfers queued or running (limit {limit}); "
                "start more when some have finished"
            )

    def _own(self, s: Any, user_id: int, job_id: str, *, lock: bool = False) -> Job:
        if not isinstance(job_id, str) or not job_id:
            raise NotFound("no such transfer")
        job = s.get(Job, job_id, with_for_update=lock)
        if job is None or job.user_id != user_id:
            raise NotFound("no such transfer")
        return job

    def get_transfer(self, user_id: int, job_id: str) -> JobView:
        with self.db.read() as s:
            return JobView.of(self._own(s, user_id, job_id))

    def watched_transfers(
        self, watched: Collection[tuple[int, str]]
    ) -> dict[tuple[int, str], JobView]:
        """The views of the transfers (``user_id``, ``job_id``) that live progress streams
        follow, in ONE query whatever their number (a second one only when a staged move
        is among them): the web's shared progress poller (web/live.py, issue 18).  A pair
        missing from the answer is gone (deleted, or not that customer's transfer)."""
        wanted = set(watched)
        if not wanted:
            return {}
        with self.db.read() as s:
            query = staged.watched_query({job_id for _, job_id in wanted})
            rows = [
                (job, sched) for job, sched in s.execute(query) if (job.user_id, job.id) in wanted
            ]
            schedules = staged.views(s, rows)
            return {
                (job.user_id, job.id): JobView.of(job, schedule=schedules[job.id])
                for job, _ in rows
            }

    def list_transfers(self, user_id: int, status: str | None = None) -> list[JobView]:
        """Every transfer of the customer, whole: for small accounts and tests; the API
        and the pages read a page at a time (:meth:`transfer_page`)."""
        if status is not None and status not in STATUSES:
            raise ServiceError(f"status: must be one of {', '.join(STATUSES)}")
        with self.db.read() as s:
            q = select(Job).where(Job.user_id == user_id)
            if status is not None:
                q = q.where(Job.status == status)
            return [JobView.of(j) for j in s.scalars(q.order_by(Job.created.desc(), Job.id))]

    def transfer_page(
        self,
        user_id: int,
        *,
        statuses: Collection[str] | None = None,
        batch_id: str | None = None,
        since: float | None = None,
        before: float | None = None,
        cursor: str | None = None,
        limit: int = joblist.DEFAULT_LIMIT,
        full: bool = False,
    ) -> joblist.TransferPage:
        """One page of the customer's transfers, newest first (keyset on created, id:
        a page reads ``limit`` + 1 rows whatever the number of transfers, and transfers
        ordered meanwhile never shift the pages after a cursor).  Summaries unless
        ``full``.  A bad status, limit or cursor is a ServiceError (400)."""
        if statuses is not None:
            bad = [st for st in statuses if st not in STATUSES]
            if bad:
                raise ServiceError(f"status: must be one of {', '.join(STATUSES)}")
        try:
            joblist.check_limit(limit)
            q = joblist.page_query(
                user_id,
                statuses=statuses,
                batch_id=batch_id,
                since=since,
                before=before,
                cursor=cursor,
                limit=limit,
            )
        except ValueError as exc:
            raise ServiceError(str(exc)) from None
        with self.db.read() as s:
            page, nxt = joblist.split(list(s.scalars(q)), limit, lambda j: j)
            views = [JobView.of(j) for j in page]
        if not full:
            views = [joblist.summary(v) for v in views]
        return joblist.TransferPage(views, nxt)

    def count_transfers(self, user_id: int) -> dict[str, int]:
        """The customer's transfers by status (one GROUP BY; the list's tabs)."""
        with self.db.read() as s:
            rows = s.execute(
                select(Job.status, func.count()).where(Job.user_id == user_id).group_by(Job.status)
            ).all()
        return {str(st): int(n) for st, n in rows}

    def cancel_transfer(self, user_id: int, job_id: str) -> JobView:
        """A queued job is cancelled at once; a running one is stopped by its supervisor."""
        with self.db.session() as s:
            view = self._cancel_job(s, self._own(s, user_id, job_id, lock=True))
        self.supervisor.poke(job_id)  # at once when the job runs in this process
        return view

    def _cancel_job(self, s: Any, job: Job) -> JobView:
        """Cancel ``job`` (locked) in the transaction ``s``; the caller pokes the
        supervisor after the commit (customers, and operators: service/operator.py)."""
        now = time.time()
        if job.status in TERMINAL:
            raise Conflict(f"the transfer has already ended ({job.status})")
        if job.status in (JobStatus.QUEUED, JobStatus.AWAITING_PAYMENT):
            job.status = JobStatus.CANCELLED
            job.finished = now
            progress = dict(job.progress or {})
            progress.update(phase=Phase.CANCELLED, rate=0.0, eta=None, eta_range=None, current=[])
            job.progress = interrupt_folders(progress)
            expire_credentials(job, self.settings, now)
            staged.job_cancelled(s, job)  # a staged job's schedule stops with it
            # A job given back to the queue may have left a checkpoint: it ends here.
            ckpt = s.get(JobCheckpoint, job.id)
            if ckpt is not None:
                s.delete(ckpt)
        else:
            job.cancel_requested = True
        return JobView.of(job)

    def rerun_transfer(self, user_id: int, job_id: str) -> JobView:
        """Run an ended job again (incremental: only what is missing is copied).  Billing
        on: free within ``free_rerun_days`` of a paid run, else paid again first."""
        with self.db.session() as s:
            view = self._rerun_job(s, self._own(s, user_id, job_id, lock=True))
        if view.status == JobStatus.QUEUED:
            self._enqueue(job_id)
        return view

    def _rerun_job(self, s: Any, job: Job, *, free: bool = False) -> JobView:
        """Put the ended ``job`` (locked) back in the queue in the transaction ``s``; the
        caller enqueues it after the commit (customers, and operators)."""
        if job.status not in TERMINAL:
            raise Conflict("the transfer is still running")
        for role, acc in (("source", job.source), ("dest", job.dest)):
            # The policy of today (the job checks again when it runs).
            self.pin(str(acc["host"]), int(acc["port"]), role, unresolved_ok=True)
        other = holder_of_pair(s, job.user_id, job)
        if other is not None:
            raise AlreadyActive(other)
        if job.credentials is None:
            raise Conflict(
                "the passwords of this transfer were deleted "
                f"({self.settings.credential_retention_days:g} days after it ended); "
                "start a new transfer"
            )
        missing = self.missing_sign_ins(job, self.box.decrypt(job.credentials))
        if missing:
            raise Conflict(
                "sign in again first: the sign-in of this transfer's "
                + " and ".join("source" if m == "source" else "destination" for m in missing)
                + " was forgotten or refused"
            )
        self._check_pending(s, job.user_id)
        # A new run, a new graph: its rate and history are this run's only.
        staged.new_run(job)
        staged.rerun(s, job)  # a staged job: this run is its next pass
        if self.billing.enabled:
            self.billing.charge_rerun(s, job, free=free)
        return JobView.of(job)

    def forget_credentials(self, user_id: int, job_id: str) -> JobView:
        """Addition: delete an ended job's stored passwords now (no re-runs after)."""
        with self.db.session() as s:
            job = self._own(s, user_id, job_id, lock=True)
            if job.status not in TERMINAL:
                raise Conflict("the transfer is still running; cancel it first")
            job.credentials = None
            job.credentials_expires = None
            view = JobView.of(job)
        with contextlib.suppress(Exception):
            self.db.checkpoint()
        return view

    # -- issue 17: staged moves until cut-over (service/staged.py) ------------------------

    def make_schedule(self, data: Any) -> staged.Schedule:
        """A staged move's schedule checked (``interval`` seconds, ``start_at`` and
        ``final_at`` unix times or null); ServiceError naming the field."""
        try:
            return staged.parse(data, self.settings, time.time())
        except staged.ScheduleError as exc:
            raise ServiceError(str(exc)) from None

    def final_pass(self, user_id: int, job_id: str) -> JobView:
        """The customer switched over: run the final pass now (right after the pass
        under way, if one runs); then the job is done and its passwords deleted.
        Conflict when the transfer has no schedule still running."""
        with self.db.session() as s:
            job = self._own(s, user_id, job_id, lock=True)
            if not staged.request_final(s, job, time.time()):
                raise Conflict("this transfer has no schedule still running")
        self.fire_due_passes()  # at once, not at the next scheduler round
        return self.get_transfer(user_id, job_id)

    def cancel_schedule(self, user_id: int, job_id: str) -> JobView:
        """Stop a staged move's passes: no more top-ups and no final pass; the stored
        passwords are deleted now (or when the pass under way ends).  Conflict when the
        transfer has no schedule still running."""
        with self.db.session() as s:
            job = self._own(s, user_id, job_id, lock=True)
            if not staged.cancel(s, job):
                raise Conflict("this transfer has no schedule still running")
            view = JobView.of(job)
        with contextlib.suppress(Exception):
            self.db.checkpoint()
        return view

    def report(self, user_id: int, job_id: str) -> dict[str, Any]:
        """The mover's JSON report of the latest run (same shape as ``move --report``)."""
        self.get_transfer(user_id, job_id)
        path = self.settings.job_dir(job_id) / "report.json"
        try:
            return json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise NotFound("no report yet: the transfer has not run") from None
        except ValueError:
            raise NotFound("the report cannot be read") from None

    # -- issue 17: readable reports and undo (service/reports.py) -------------------------

    def undo_preview(self, user_id: int, job_id: str) -> dict[str, Any]:
        """What undoing the job removes from its destination, per folder (no change)."""
        from . import reports

        return reports.undo_preview(self, user_id, job_id)

    def undo_apply(self, user_id: int, job_id: str) -> dict[str, Any]:
        """Remove from the destination exactly the messages the job appended."""
        from . import reports

        return reports.undo_apply(self, user_id, job_id)

    def undo_result(self, user_id: int, job_id: str) -> dict[str, Any] | None:
        """The last undo's result, if the job was undone."""
        from . import reports

        return reports.undo_result(self, user_id, job_id)

    def state_file(self, user_id: int, job_id: str) -> Path:
        """The job's sqlite state (a receipt: source UID -> destination UID, outcomes)."""
        self.get_transfer(user_id, job_id)
        path = self.settings.job_dir(job_id) / "state.sqlite"
        if not path.exists():
            raise NotFound("no state file yet: the transfer has not run")
        return path

    # ================================================================== batches

    def tag_batch(self, user_id: int, job_ids: list[str], batch_id: str | None = None) -> str:
        """Mark the customer's jobs ordered together as one batch (issue 17: one summary
        mail when the last one ends, instead of a start and an end mail each); call it
        as each job is ordered, with the id it returned the first time.  A job that
        ended before it was tagged (seconds after its order) mailed alone."""
        batch_id = batch_id or uuid.uuid4().hex
        with self.db.session() as s:
            for job in s.scalars(select(Job).where(Job.id.in_(job_ids), Job.user_id == user_id)):
                if job.batch_id is None:
                    job.batch_id = batch_id
        return batch_id

    def set_timezone(self, user_id: int, name: str) -> bool:
        """The customer's time zone for mails (an IANA name the browser reported, e.g.
        ``Europe/Paris``); False (unchanged) for a name this machine does not know."""
        from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

        name = str(name).strip()
        if not name or len(name) > 64:
            return False
        try:
            ZoneInfo(name)
        except (ZoneInfoNotFoundError, ValueError):
            return False
        with self.db.session() as s:
            user = s.get(User, user_id)
            if user is None:
                return False
            user.timezone = name
        return True

    BATCH_COLUMNS = (
        "source_host",
        "source_port",
        "source_security",
        "source_username",
        "source_password",
        "dest_host",
        "dest_port",
        "dest_security",
        "dest_username",
        "dest_password",
    )

    def validate_batch_csv(self, text: str) -> tuple[list[tuple[Account, Account]], list[str]]:
        """:meth:`parse_batch_csv` without the line numbers."""
        rows, errors = self.parse_batch_csv(text)
        return [(src, dst) for _n, src, dst in rows], errors

    def parse_batch_csv(self, text: str) -> tuple[list[tuple[int, Account, Account]], list[str]]:
        """Parse and check a batch of transfers, one per CSV line.

        Columns, in this order (or in any order under a header line naming them):
        ``source_host, source_port, source_security, source_username, source_password,
        dest_host, dest_port, dest_security, dest_username, dest_password``.  A port may
        be empty (993 for tls, 143 otherwise), a security empty (tls).  Blank lines and
        lines starting with ``#`` are skipped.  Returns the good rows and, for the bad
        ones, errors ``"line N: source.port: must be 1-65535"`` (never a password).
        Each good row comes with its line number.
        """
        rows: list[tuple[int, Account, Account]] = []
        errors: list[str] = []
        columns = list(self.BATCH_COLUMNS)
        #: (host, port) -> why refused, or None: each server resolved once per batch.
        pinned: dict[tuple[str, int], str | None] = {}
        seen_header = False
        reader = csv.reader(io.StringIO(text))
        for cells in reader:
            n = reader.line_num
            if not cells or all(not c.strip() for c in cells) or cells[0].lstrip().startswith("#"):
                continue
            lowered = [c.strip().lower() for c in cells]
            if not seen_header and not rows and not errors and "source_host" in lowered:
                missing = [c for c in self.BATCH_COLUMNS if c not in lowered]
                if missing:
                    errors.append(f"line {n}: header lacks the column(s) {', '.join(missing)}")
                    return [], errors
                columns = lowered
                seen_header = True
                continue
            seen_header = True
            if len(cells) != len(columns):
                errors.append(f"line {n}: expected {len(columns)} columns, found {len(cells)}")
                continue
            values = dict(zip(columns, cells, strict=True))
            try:
                pair = []
                for role in ("source", "dest"):
                    data = {
                        k: values[f"{role}_{k}"].strip()
                        if k != "password"
                        else values[f"{role}_{k}"]
                        for k in ("host", "port", "security", "username", "password")
                    }
                    if not data["port"]:
                        del data["port"]
                    pair.append(self.validate_account(Account.from_dict(data, role), role))
                job = self.make_spec(pair[0], pair[1], pinned=pinned)
                src, dst = cast(Account, job.source), cast(Account, job.dest)
            except ServiceError as exc:
                errors.append(f"line {n}: {exc}")
                continue
            rows.append((n, src, dst))
            limit = self.settings.batch_max_transfers
            if limit > 0 and len(rows) > limit:
                raise ServiceError(
                    f"too many transfers: at most {limit} per batch (line {n} is one more); "
                    "split the file"
                )
        return rows, errors


def _norm_email(email: Any) -> str:
    if not isinstance(email, str):
        raise ServiceError("email: is required")
    email = email.strip().lower()
    if not _EMAIL.match(email) or len(email) > 320:
        raise ServiceError("email: is not a valid e-mail address")
    return email
