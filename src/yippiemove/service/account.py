"""A customer's account over its life (issue 17; docs/design.md "Customer journey:
account lifecycle"): forgot password, change of e-mail address, deletion.

The links mailed here carry a random token of which only the SHA-256 is stored
(:class:`~yippiemove.service.db.AccountToken`); a link works once and for a while
(``password_reset_seconds``, ``email_change_seconds``); a used one is kept (hash only)
until it expires, so that a second use says "used already" rather than "unknown".

No enumeration: asking for a password reset answers the same whatever the address
(an unknown one gets no mail); a new e-mail address that belongs to another account
gets a note saying so, in its own mailbox, and the requester's answer is the same.

Deleting an account: the password again, then every way in closed (web sessions, API
tokens), its jobs stopped (their job processes ended by their supervisors), then every
row that names the customer (every table with a ``user_id``, rows of its jobs, the
throttling keys and pending sign-ups of its address) and every job directory on this
host (state, reports, receipts, undo results, logs); other worker hosts remove theirs
in their maintenance round (:func:`purge_orphan_job_dirs`).  Then a goodbye mail.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import re
import secrets
import shutil
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import delete, select, update
from sqlalchemy.exc import IntegrityError

from ..jobs.vocab import TERMINAL, JobStatus
from .db import (
    AccountToken,
    ApiToken,
    AuditEntry,
    AuthThrottle,
    Base,
    BillingAccount,
    Job,
    LedgerEntry,
    Payment,
    PendingSignup,
    User,
)
from .passwords import password_problem
from .secrets import hash_password, verify_password

if TYPE_CHECKING:
    from .auth import AuthStore
    from .config import Settings
    from .db import Database
    from .notify import Notifier

__all__ = [
    "AccountLifecycle",
    "LinkRefused",
    "purge_orphan_job_dirs",
]

log = logging.getLogger("yippiemove.service.account")

RESET = "reset"
EMAIL = "email"
#: Reset requests from one client address before they wait (the delay then doubles).
RESET_CLIENT_FREE = 5
#: Reset mails to one address before the next ones are dropped for a while.
RESET_MAILS_FREE = 3
#: A job directory with no job row is removed once it is this old (seconds).
ORPHAN_AGE = 600.0
_JOB_DIR = re.compile(r"\A[0-9a-f]{32}\Z")


def _hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def _errors() -> Any:
    from . import core  # core imports this module

    return core


class LinkRefused(Exception):
    """A mailed link that does not work: ``state`` is ``used``, ``expired`` or
    ``unknown`` (the pages and the API say which, plainly)."""

    def __init__(self, state: str) -> None:
        super().__init__(state)
        self.state = state


class AccountLifecycle:
    """Mixed into :class:`~yippiemove.service.core.Service`."""

    settings: Settings
    db: Database
    auth: AuthStore
    notifier: Notifier

    # ------------------------------------------------------------------ helpers

    def _base(self) -> str:
        return self.settings.base_url.rstrip("/")

    def _new_link(
        self, user_id: int, purpose: str, ttl: float, new_email: str | None = None
    ) -> str:
        token = secrets.token_urlsafe(32)
        now = self.auth.clock()
        with self.db.session() as s:
            s.add(
                AccountToken(
                    token_hash=_hash(token),
                    user_id=user_id,
                    purpose=purpose,
                    new_email=new_email,
                    created=now,
                    expires=now + ttl,
                )
            )
        return token

    def link_state(self, token: str, purpose: str) -> str:
        """``valid``, ``used``, ``expired`` or ``unknown`` (a token of another kind too)."""
        if not isinstance(token, str) or not token or len(token) > 200:
            return "unknown"
        with self.db.read() as s:
            row = s.get(AccountToken, _hash(token))
            if row is None or row.purpose != purpose:
                return "unknown"
            if row.used is not None:
                return "used"
            if row.expires <= self.auth.clock():
                return "expired"
            return "valid"

    def _take_link(self, s: Any, token: str, purpose: str) -> AccountToken:
        """The link's row, locked and marked used; LinkRefused when it does not work."""
        if not isinstance(token, str) or not token or len(token) > 200:
            raise LinkRefused("unknown")
        row = s.get(AccountToken, _hash(token), with_for_update=True)
        if row is None or row.purpose != purpose:
            raise LinkRefused("unknown")
        if row.used is not None:
            raise LinkRefused("used")
        now = self.auth.clock()
        if row.expires <= now:
            raise LinkRefused("expired")
        row.used = now
        return row

    def _check_password(self, user_id: int, password: str, client: str) -> str:
        """The customer's e-mail when ``password`` is theirs (re-authentication, with the
        log-in throttle); TooManyAttempts or WrongPassword otherwise."""
        core = _errors()
        with self.db.read() as s:
            user = s.get(User, user_id)
            if user is None:
                raise core.NotFound("no such customer")
            email, stored = user.email, user.password_hash
        wait = self.auth.login_wait(client, email)
        if wait > 0:
            raise core.TooManyAttempts(wait)
        if not isinstance(password, str) or not verify_password(stored, password):
            self.auth.login_failed(client, email)
            raise core.WrongPassword("password: is not right")
        return email

    # ------------------------------------------------------------------ the account

    def account_info(self, user_id: int) -> dict[str, Any]:
        """id, email, created, timezone and ``pending_email`` (a new address waiting for
        its confirmation, or None)."""
        core = _errors()
        now = self.auth.clock()
        with self.db.read() as s:
            user = s.get(User, user_id)
            if user is None:
                raise core.NotFound("no such customer")
            pending = s.scalar(
                select(AccountToken.new_email)
                .where(
                    AccountToken.user_id == user_id,
                    AccountToken.purpose == EMAIL,
                    AccountToken.used.is_(None),
                    AccountToken.expires > now,
                )
                .order_by(AccountToken.created.desc())
                .limit(1)
            )
            return {
                "id": user.id,
                "email": user.email,
                "created": user.created,
                "timezone": user.timezone,
                "pending_email": pending,
            }

    # ------------------------------------------------------------------ forgot password

    def password_reset_wait(self, client: str) -> float:
        """Seconds before ``client`` may ask for another reset (every request counts)."""
        from .auth import delay

        now = self.auth.clock()
        key = f"reset:{client}"
        counts = self.auth._counts([key], now)
        if key not in counts:
            return 0.0
        n, last = counts[key]
        return max(0.0, last + delay(n, RESET_CLIENT_FREE) - now)

    def request_password_reset(self, email: str, client: str = "?") -> None:
        """Mail a reset link to ``email`` if it is a customer's.  The caller answers the
        same either way; TooManyAttempts when ``client`` asked too often (whatever the
        address).  An address that got :data:`RESET_MAILS_FREE` links lately gets no
        more for a while (silently)."""
        from .auth import delay

        wait = self.password_reset_wait(client)
        if wait > 0:
            raise _errors().TooManyAttempts(wait)
        now = self.auth.clock()
        self.auth._bump([f"reset:{client}"], now)
        address = email.strip().lower()[:320] if isinstance(email, str) else ""
        with self.db.read() as s:
            user_id = s.scalar(select(User.id).where(User.email == address)) if address else None
        mail_key = f"resetmail:{address}"
        counts = self.auth._counts([mail_key], now)
        allowed = True
        if mail_key in counts:
            n, last = counts[mail_key]
            allowed = last + delay(n, RESET_MAILS_FREE) <= now
        if user_id is None or not allowed:
            # The same work as the other branch, roughly: one token made and hashed.
            _hash(secrets.token_urlsafe(32))
            if user_id is not None:
                log.info("password reset mail not sent: too many for one address lately")
            return
        self.auth._bump([mail_key], now)
        token = self._new_link(user_id, RESET, self.settings.password_reset_seconds)
        minutes = max(1, round(self.settings.password_reset_seconds / 60))
        self.notifier.password_reset(
            address, f"{self._base()}/password/reset?token={token}", minutes
        )

    def reset_password(self, token: str, new: str) -> int:
        """Set a new password from a reset link (used once): every web session of the
        account is ended; API tokens stay (docs/design.md says why).  Returns the
        customer's id; LinkRefused, or ServiceError for a refused password (the link
        then still works)."""
        core = _errors()
        problem = password_problem(new)
        if problem:
            raise core.ServiceError(f"password: {problem}")
        new_hash = hash_password(new)
        with self.db.session() as s:
            row = self._take_link(s, token, RESET)
            user = s.get(User, row.user_id)
            if user is None:
                raise LinkRefused("unknown")
            user.password_hash = new_hash
            user_id, email = user.id, user.email
            # The account's other reset links stop working too.
            s.execute(
                update(AccountToken)
                .where(
                    AccountToken.user_id == user_id,
                    AccountToken.purpose == RESET,
                    AccountToken.used.is_(None),
                )
                .values(used=self.auth.clock())
            )
        self.auth.revoke_sessions(user_id)
        # Whoever was guessing is shut out by the new password; the owner may log in now.
        self.auth._clear([f"acct:{email}"])
        self.notifier.password_was_reset(email, f"{self._base()}/login")
        return user_id

    # ------------------------------------------------------------------ change password

    def change_password_checked(
        self, user_id: int, current: str, new: str, client: str = "?", keep: str | None = None
    ) -> None:
        """The password change of both front doors: the current password (throttled like
        a log-in), the password rule, then every web session but ``keep`` ends."""
        core = _errors()
        problem = password_problem(new)
        if problem:
            raise core.ServiceError(f"new_password: {problem}")
        self._check_password(user_id, current, client)
        with self.db.session() as s:
            user = s.get(User, user_id)
            if user is None:
                raise core.NotFound("no such customer")
            user.password_hash = hash_password(new)
        self.auth.revoke_sessions(user_id, keep)

    # ------------------------------------------------------------------ change e-mail

    def request_email_change(
        self, user_id: int, password: str, new_email: str, client: str = "?"
    ) -> str:
        """Start a change of address: the password again, then a link to the new address
        (the old one stays until it is opened).  Returns ``"sent"``; or ``"changed"`` on a
        service that sends no mail (the change is made at once, as sign-ups are).  A new
        address that is another account's gets a note instead of a link, and the answer
        is the same ("sent")."""
        core = _errors()
        new = core._norm_email(new_email)
        old = self._check_password(user_id, password, client)
        if new == old:
            raise core.ServiceError("email: is your address already")
        with self.db.read() as s:
            taken = s.scalar(select(User.id).where(User.email == new)) is not None
        if not self.notifier.enabled:
            if taken:
                raise core.Conflict("email: a customer with this address exists already")
            self._set_email(user_id, new)
            return "changed"
        if not self.auth.signup_mail_allowed(new):  # the sign-up's per-address budget
            log.info("address change mail not sent: too many for one address lately")
        elif taken:
            self.notifier.email_change_taken(new, f"{self._base()}/login")
        else:
            ttl = self.settings.email_change_seconds
            token = self._new_link(user_id, EMAIL, ttl, new_email=new)
            self.notifier.email_change_confirm(
                new, old, f"{self._base()}/account/email/confirm?token={token}"
            )
        return "sent"

    def confirm_email_change(self, token: str) -> int:
        """Make the new address the account's (the link, once); the old address is told.
        LinkRefused (``taken``: the address got an account meanwhile)."""
        try:
            return self._confirm_email_change(token)
        except IntegrityError:  # an account made with the address at the same moment
            raise LinkRefused("taken") from None

    def _confirm_email_change(self, token: str) -> int:
        with self.db.session() as s:
            row = self._take_link(s, token, EMAIL)
            user = s.get(User, row.user_id)
            new = row.new_email
            if user is None or not new:
                raise LinkRefused("unknown")
            if s.scalar(select(User.id).where(User.email == new)) is not None:
                raise LinkRefused("taken")
            old = user.email
            user.email = new
            user_id = user.id
            _end_links(s, user_id, self.auth.clock())
        self._after_email_change(old, new)
        return user_id

    def _set_email(self, user_id: int, new: str) -> None:
        core = _errors()
        with self.db.session() as s:
            user = s.get(User, user_id)
            if user is None:
                raise core.NotFound("no such customer")
            old = user.email
            user.email = new
            _end_links(s, user_id, self.auth.clock())
        self._after_email_change(old, new)

    def _after_email_change(self, old: str, new: str) -> None:
        # Throttling keys named the old address: they go with it.
        self.auth._clear([f"acct:{old}", f"resetmail:{old}", f"signupmail:{old}"])
        self.notifier.email_changed(old, new)

    def prune_account_links(self) -> int:
        """Delete links that expired (used or not); returns how many."""
        with self.db.session() as s:
            result = s.execute(
                delete(AccountToken).where(AccountToken.expires <= self.auth.clock())
            )
            return int(result.rowcount or 0)  # type: ignore[attr-defined]

    # ------------------------------------------------------------------ delete

    def delete_account(self, user_id: int, password: str, client: str = "?") -> None:
        """Delete the customer and everything of theirs (see the module's docstring).
        WrongPassword / TooManyAttempts before anything changes; Busy when a job did not
        stop within ``account_delete_wait`` seconds (the account is then still there,
        without sessions and tokens, its jobs cancelled: trying again finishes)."""
        core = _errors()
        email = self._check_password(user_id, password, client)
        # 1. No way in any more: web sessions and API tokens.
        self.auth.revoke_sessions(user_id)
        with self.db.session() as s:
            s.execute(delete(ApiToken).where(ApiToken.user_id == user_id))
        # 2. Its jobs stopped: queued ones at once, running ones by their supervisors.
        self._stop_all_jobs(user_id)
        # 3. Every row naming the customer, in one transaction.
        with self.db.session() as s:
            running = s.scalar(
                select(Job.id)
                .where(Job.user_id == user_id, Job.status == JobStatus.RUNNING)
                .limit(1)
            )
            if running is not None:
                raise core.Conflict(
                    "a transfer of this account is still stopping; try again in a minute"
                )
            job_ids = list(s.scalars(select(Job.id).where(Job.user_id == user_id)))
            # Addresses it asked to move to: their mail budget named them.
            asked = [
                f"signupmail:{a}"
                for a in s.scalars(
                    select(AccountToken.new_email).where(
                        AccountToken.user_id == user_id, AccountToken.new_email.is_not(None)
                    )
                )
            ]
            _delete_rows(s, user_id, job_ids)
            _scrub_audit(s, user_id, email, job_ids)
            s.execute(
                delete(AuthThrottle).where(
                    AuthThrottle.key.in_(
                        [f"acct:{email}", f"resetmail:{email}", f"signupmail:{email}", *asked]
                    )
                    | AuthThrottle.key.like(f"pair:%|{_like(email)}", escape="\\")
                )
            )
            s.execute(delete(PendingSignup).where(PendingSignup.email == email))
            s.execute(delete(User).where(User.id == user_id))
        # 4. Its files on this host (others' in their maintenance round).
        for job_id in job_ids:
            _remove_tree(self.settings.job_dir(job_id))
        with contextlib.suppress(Exception):
            self.db.checkpoint()  # deleted rows out of the WAL (secure_delete zeroes them)
        log.info("customer %d deleted their account (%d transfers)", user_id, len(job_ids))
        self.notifier.account_deleted(email)

    def _stop_all_jobs(self, user_id: int) -> None:
        core = _errors()
        with self.db.read() as s:
            active = list(
                s.scalars(select(Job.id).where(Job.user_id == user_id, Job.status.not_in(TERMINAL)))
            )
        for job_id in active:
            with contextlib.suppress(core.Conflict, core.NotFound):
                self.cancel_transfer(user_id, job_id)  # type: ignore[attr-defined]
        deadline = time.monotonic() + self.settings.account_delete_wait
        supervisor = getattr(self, "supervisor", None)
        stopping = set(active)
        while active:
            with self.db.read() as s:
                active = list(
                    s.scalars(
                        select(Job.id).where(
                            Job.user_id == user_id,
                            (Job.status == JobStatus.RUNNING) | Job.jail.is_not(None),
                        )
                    )
                )
            # A supervisor of this process finishing one (its end mail, its last reads)
            # is let be: its rows must still be there.
            if supervisor is not None:
                active += [j for j in stopping if supervisor.supervises(j)]
            if not active:
                return
            if time.monotonic() > deadline:
                raise core.Conflict(
                    "a transfer of this account is still stopping; try again in a minute"
                )
            time.sleep(0.1)


def _end_links(s: Any, user_id: int, now: float) -> None:
    """A new address: every unused link of the account stops working (reset links went
    to the old address, other address links are superseded)."""
    s.execute(
        update(AccountToken)
        .where(AccountToken.user_id == user_id, AccountToken.used.is_(None))
        .values(used=now)
    )


def _like(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def _delete_rows(s: Any, user_id: int, job_ids: list[str]) -> None:
    """Every row of the customer: rows of its jobs (tables with a ``job_id``), then rows
    with its ``user_id``, children before parents (whatever tables later issues add)."""
    # Billing (issue 20): the customer's own account goes with its entries and payments;
    # a company's entries and payments stay (its balance is its other members' too),
    # naming a job or payer that no longer exists.
    own = select(BillingAccount.id).where(BillingAccount.user_id == user_id)
    s.execute(delete(LedgerEntry).where(LedgerEntry.account_id.in_(own)))
    s.execute(delete(Payment).where(Payment.account_id.in_(own)))
    s.execute(update(Payment).where(Payment.user_id == user_id).values(user_id=None))
    for table in reversed(Base.metadata.sorted_tables):
        if table.name in ("users", "ledger_entries", "payments"):
            continue
        cols = table.c
        if "job_id" in cols and job_ids:
            s.execute(delete(table).where(cols["job_id"].in_(job_ids)))
        if "user_id" in cols:
            s.execute(delete(table).where(cols["user_id"] == user_id))


def _scrub_audit(s: Any, user_id: int, email: str, job_ids: list[str]) -> None:
    """The operators' audit log outlives a deleted customer (it records what operators
    did, docs/design.md "Customer journey: account lifecycle"), but not the customer's
    address: rows about the customer or their jobs keep their action, the customer's
    number and the time; every detail that named the address says "(deleted customer)",
    a deleted job's id "(deleted)"; rows of an operator who deleted their own account
    lose that operator's address the same way."""
    about = ((AuditEntry.target_kind == "customer") & (AuditEntry.target_id == str(user_id))) | (
        AuditEntry.operator_id == user_id
    )
    if job_ids:
        about = about | ((AuditEntry.target_kind == "job") & AuditEntry.target_id.in_(job_ids))
    for row in s.scalars(select(AuditEntry).where(about)):
        row.detail = {
            k: ("(deleted customer)" if v == email else v) for k, v in (row.detail or {}).items()
        }
        if row.operator_id == user_id:
            row.operator_email = "(deleted operator)"
        if row.target_kind == "job" and row.target_id in job_ids:
            row.target_id = "(deleted)"  # the job is gone: its id names nothing any more


def _remove_tree(path: Path) -> None:
    try:
        shutil.rmtree(path)
    except FileNotFoundError:
        pass
    except OSError:
        log.warning("could not remove %s", path, exc_info=True)


def purge_orphan_job_dirs(settings: Settings, db: Database, now: float | None = None) -> int:
    """Remove job directories of this host whose job no longer exists (a deleted
    account's, when its jobs ran on this host but the deletion was made on another),
    once they are :data:`ORPHAN_AGE` old.  Returns how many."""
    now = time.time() if now is None else now
    try:
        entries = [p for p in settings.jobs_dir.iterdir() if _JOB_DIR.match(p.name) and p.is_dir()]
    except OSError:
        return 0
    if not entries:
        return 0
    with db.read() as s:
        known = set(s.scalars(select(Job.id).where(Job.id.in_([p.name for p in entries]))))
    n = 0
    for p in entries:
        if p.name in known:
            continue
        try:
            if now - p.stat().st_mtime < ORPHAN_AGE:
                continue
        except OSError:
            continue
        _remove_tree(p)
        n += 1
    return n
