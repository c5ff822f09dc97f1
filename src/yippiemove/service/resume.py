"""New passwords for a stopped transfer, checked on the spot, then resumed (issue 17).

A job that failed (a wrong or changed password...) or was cancelled can take a new
password for either side, or both.  Only the *secret* changes: host, port, security and
user name stay those of the order, because the job's state (what was copied, source UID
-> destination UID) belongs to that pair of mailboxes; another account is another
transfer.  Each new password is checked first with the account check the order form
uses (:meth:`Service.check_account`: log in and list in a limited child process); a
refused one is ``CredentialsRefused`` (422) and nothing is stored.  A good one replaces
the old in the job's encrypted credentials, and the job runs again on the re-run path:
what is already on the destination is not copied again.

Sides that sign in with OAuth2 take a new sign-in instead (service/signin.py
``reauth_job``); both paths end in ``rerun_transfer``.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any

from ..jobs.vocab import JobStatus
from ..policy.failures import describe, kind_of_text
from .jobhost import expire_credentials

if TYPE_CHECKING:
    from .core import JobView

log = logging.getLogger("yippiemove.service")

SIDES = ("source", "dest")
#: The statuses that take new credentials: stopped before the end, or cancelled.
RESUMABLE = (JobStatus.FAILED, JobStatus.CANCELLED)
_NAMES = {"source": "source", "dest": "destination"}


def credential_sides(job: Any) -> list[str]:
    """The sides of a job that log in with a password (not an OAuth2 sign-in)."""
    return [
        side
        for side in SIDES
        if not ((job.source if side == "source" else job.dest) or {}).get("oauth_provider")
    ]


class Resumes:
    """Mixed into :class:`~yippiemove.service.core.Service` (as SignIns is)."""

    async def update_credentials(
        self, user_id: int, job_id: str, passwords: dict[str, str], *, resume: bool = True
    ) -> JobView:
        """Replace the password of the sides in ``passwords`` (``"source"``/``"dest"``
        -> new password) after checking each on the spot; then, with ``resume``, run the
        job again.  ServiceError (400) for an empty request, :class:`Conflict` (409) for
        a job that is not failed/cancelled or a side that signs in with OAuth2,
        ``CredentialsRefused`` (422) when a new password does not pass the check (nothing
        stored), Busy (429) when too many checks are under way."""
        from .core import Account, Conflict, CredentialsRefused, JobView, ServiceError

        svc: Any = self
        with svc.db.read() as s:  # another customer's job is a missing one, first
            svc._own(s, user_id, job_id)
        if not isinstance(passwords, dict) or not passwords:
            raise ServiceError("give a new password for the source, the destination or both")
        unknown = [k for k in passwords if k not in SIDES]
        if unknown:
            raise ServiceError(f"{unknown[0]}: unknown side (source or dest)")
        for side, pw in passwords.items():
            if not isinstance(pw, str) or not pw:
                raise ServiceError(f"{side}.password: is required")
            if len(pw) > 1024:
                raise ServiceError(f"{side}.password: is too long")
        with svc.db.read() as s:
            job = svc._own(s, user_id, job_id)
            _check_state(job, passwords, Conflict)
            stamp = (job.runs, job.finished)
            accounts = {
                side: Account(
                    host=str(acc["host"]),
                    port=int(acc["port"]),
                    security=str(acc["security"]),
                    username=str(acc["username"]),
                    password=passwords[side],
                )
                for side in passwords
                for acc in [job.source if side == "source" else job.dest]
            }
        # Checked on the spot, one side after the other; nothing stored before both pass.
        for side, account in accounts.items():
            try:
                await svc.check_account(account, role=side, user_id=user_id)
            except CredentialsRefused:
                raise
            except ServiceError as exc:
                if getattr(exc, "status", 400) == 429:
                    raise
                raise refused(side, str(exc)) from None
        del accounts
        with svc.db.session() as s:
            job = svc._own(s, user_id, job_id, lock=True)
            _check_state(job, passwords, Conflict)
            if (job.runs, job.finished) != stamp:
                raise Conflict("the transfer changed meanwhile; look at it and try again")
            creds = svc.box.decrypt(job.credentials) if job.credentials is not None else {}
            for side, pw in passwords.items():
                creds[f"{side}_password"] = pw
            job.credentials = svc.box.encrypt(creds)
            del creds
            if job.credentials_expires is None:  # stored again: the retention starts now
                expire_credentials(job, svc.settings, time.time())
            view = JobView.of(job)
        log.info(
            "job %s: new password(s) for %s checked and stored",
            job_id,
            " and ".join(_NAMES[s] for s in passwords),
        )
        if not resume:
            return view
        result: JobView = svc.rerun_transfer(user_id, job_id)
        return result


def refused(side: str, raw: str) -> Exception:
    """The check's answer in the customer's words (policy/failures.py), its raw text
    kept as ``detail`` (the REST answer's ``detail``, the page's "Details")."""
    from .core import CredentialsRefused

    failure = describe(raw, kind_of_text(raw), side) or {}
    return CredentialsRefused(
        f"The new {_NAMES[side]} password did not pass the check; nothing was changed. "
        f"{failure.get('message', '')}",
        kind=str(failure.get("kind", "other")),
        detail=raw,
    )


def _check_state(job: Any, passwords: dict[str, str], conflict: type[Exception]) -> None:
    if job.status not in RESUMABLE:
        raise conflict(
            "only a transfer that stopped or was cancelled takes new passwords "
            f"(this one is {job.status})"
        )
    allowed = credential_sides(job)
    for side in passwords:
        if side not in allowed:
            raise conflict(f"the {_NAMES[side]} signs in with its provider: sign in again instead")
    if job.credentials is None:
        missing = [s for s in allowed if s not in passwords]
        if missing or len(allowed) < len(SIDES):
            raise conflict(
                "the stored passwords of this transfer were deleted: give the passwords "
                "of both accounts (or start a new transfer)"
            )
