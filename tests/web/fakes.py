"""An in-memory Service that follows docs/service-contract.md, for the web tests.

Same method names, signatures, return types and exceptions as
``yippiemove.service.core.Service`` (its dataclasses and exceptions are the real ones); no
database, no IMAP, no job processes.  The web was first written against this fake while
the backend was being built; tests/web/test_real_service.py and test_browser.py run the
same pages over the real Service.

Accounts (``check_account``): a host ending in ``.invalid`` cannot be reached; the password
``wrong`` is refused; anything else logs in and shows ``SAMPLE_FOLDERS`` (or the folders
given to ``add_account``).

Jobs stay ``queued`` until a test moves them with ``start``/``advance``/``finish``/``fail``,
or, with ``FakeService(job_seconds=N)``, run by themselves in N seconds of wall time (the
demo server and the browser tests use that).
"""

from __future__ import annotations

import csv
import io
import ipaddress
import itertools
import math
import secrets
import sqlite3
import threading
import time
from collections import Counter
from collections.abc import Callable, Collection
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from yippiemove.service import joblist
from yippiemove.service.config import Settings
from yippiemove.service.core import (
    Account,
    AlreadyActive,
    Conflict,
    CredentialsRefused,
    FolderInfo,
    IdempotencyMismatch,
    JobView,
    NotFound,
    ServiceError,
)
from yippiemove.service.passwords import password_problem

# ---------------------------------------------------------------------------------------

SAMPLE_FOLDERS: tuple[FolderInfo, ...] = (
    FolderInfo("INBOX", 1204, 187_400_000, "INBOX", True),
    FolderInfo("Sent", 388, 52_100_000, "Sent", True),
    FolderInfo("Drafts", 3, 41_000, "Drafts", True),
    FolderInfo("Archive", 0, 0, "Archive", True),
    FolderInfo("Archive/2019", 2210, 301_000_000, "Archive/2019", True),
    FolderInfo("Archive/2020", 1875, 254_300_000, "Archive/2020", True),
    FolderInfo("Spam", 57, 2_300_000, "Junk", False),
    FolderInfo("Trash", 140, 9_800_000, "Trash", False),
)

TERMINAL = frozenset({"done", "failed", "cancelled"})
STATUSES = ("queued", "running", "done", "failed", "cancelled")
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


@dataclass
class _Job:
    id: str
    user_id: int
    source: Account
    dest: Account
    folders: dict | None
    plan: list[FolderInfo]
    created: float
    status: str = "queued"
    started: float | None = None
    finished: float | None = None
    error: str | None = None
    fraction: float = 0.0
    failures: list[dict[str, Any]] = field(default_factory=list)
    altered: list[dict[str, Any]] = field(default_factory=list)
    history: list[list[float]] = field(default_factory=list)
    credentials: bool = True
    state_path: Path | None = None
    #: Unix time a throttled job waits until (the real job's Progress.throttled_until).
    throttled_until: float | None = None


def _public(acc: Account) -> dict[str, Any]:
    return {"host": acc.host, "port": acc.port, "security": acc.security, "username": acc.username}


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class FakeService:
    """In-memory stand-in for ``yippiemove.service.core.Service`` (see the module doc)."""

    BATCH_COLUMNS = BATCH_COLUMNS

    def __init__(
        self,
        settings: Settings,
        queue: object | None = None,
        *,
        job_seconds: float | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.settings = settings
        self.queue = queue
        self.job_seconds = job_seconds
        self.clock = clock
        self._lock = threading.RLock()
        self._ids = itertools.count(1)
        self.users: dict[int, tuple[str, str]] = {}
        self.tokens: dict[int, dict[str, Any]] = {}
        self.jobs: dict[str, _Job] = {}
        self.accounts: dict[tuple[str, int, str], tuple[str, list[FolderInfo]]] = {}
        self.checked: list[Account] = []
        self.created: list[tuple[int, Account, Account, dict | None]] = []
        #: Refuse a second order of a queued or running pair (AlreadyActive), as the
        #: real service does; off by default, for the tests that order one pair often.
        self.one_per_pair = False
        #: (user id, Idempotency-Key) -> (body, status, answer) of create_transfer_once.
        self.idempotency: dict[tuple[int, str], tuple[str, int, dict[str, Any]]] = {}
        #: Domain credentials (issue 16): id -> (user id, what is shown).
        self.domain_credentials: dict[str, tuple[int, dict[str, Any]]] = {}

    # -- domain-wide moves (issue 16; the real ones: service/domainbatch.py) -----------

    def add_domain_credential(self, user_id: int, data: Any) -> dict[str, Any]:
        from yippiemove.service.core import ServiceError

        if not isinstance(data, dict) or data.get("kind") not in (
            "service_account",
            "client_credentials",
        ):
            raise ServiceError("kind: must be one of service_account, client_credentials")
        cid = secrets.token_hex(16)
        view = {
            "id": cid,
            "kind": data["kind"],
            "provider": "google" if data["kind"] == "service_account" else "microsoft",
            "label": str(data.get("label") or "credential"),
            "principal": str(data.get("client_id") or "sa@example.iam"),
            "tenant": data.get("tenant"),
            "domain": str(data.get("domain") or ""),
            "created": self.clock(),
        }
        self.domain_credentials[cid] = (user_id, view)
        return dict(view)

    def list_domain_credentials(self, user_id: int) -> list[dict[str, Any]]:
        return [dict(v) for u, v in self.domain_credentials.values() if u == user_id]

    def delete_domain_credential(self, user_id: int, cred_id: str) -> None:
        found = self.domain_credentials.get(cred_id)
        if found is None or found[0] != user_id:
            raise NotFound("no such domain credential")
        del self.domain_credentials[cred_id]

    async def create_domain_batch(
        self,
        user_id: int,
        request: Any,
        *,
        check: bool = True,
        line_numbers: list[int] | None = None,
    ) -> dict[str, Any]:
        cred = (
            (request.get("source") or {}).get("credential") if isinstance(request, dict) else None
        )
        found = self.domain_credentials.get(str(cred))
        if found is None or found[0] != user_id:
            raise NotFound("no such domain credential")
        return {"created": [], "errors": ["line 1: not run by the fake"], "failed": []}

    # -- customers --------------------------------------------------------------------

    def create_user(self, email: str, password: str) -> int:
        email = email.strip().lower()
        if "@" not in email:
            raise ServiceError("email: not an e-mail address")
        problem = password_problem(password)  # the real rule (service/passwords.py)
        if problem:
            raise ServiceError(f"password: {problem}")
        with self._lock:
            if any(e == email for e, _ in self.users.values()):
                raise Conflict("email: a customer with this address exists already")
            uid = next(self._ids)
            self.users[uid] = (email, password)
            return uid

    def authenticate(self, email: str, password: str) -> int | None:
        email = email.strip().lower()
        for uid, (e, p) in self.users.items():
            if e == email and secrets.compare_digest(p.encode(), password.encode()):
                return uid
        return None

    def create_token(self, user_id: int, name: str = "") -> str:
        token = "ym_" + secrets.token_urlsafe(24)
        with self._lock:
            tid = next(self._ids)
            self.tokens[tid] = {
                "id": tid,
                "user": user_id,
                "name": name,
                "token": token,
                "created": self.clock(),
                "last_used": None,
            }
        return token

    def create_token_view(self, user_id: int, name: str = "") -> dict:
        token = self.create_token(user_id, name)
        (view,) = [t for t in self.list_tokens(user_id) if self.tokens[t["id"]]["token"] == token]
        return {**view, "token": token}

    def list_tokens(self, user_id: int) -> list[dict]:
        return [
            {k: t[k] for k in ("id", "name", "created", "last_used")}
            for t in self.tokens.values()
            if t["user"] == user_id
        ]

    def revoke_token(self, user_id: int, token_id: int) -> None:
        with self._lock:
            t = self.tokens.get(token_id)
            if t is None or t["user"] != user_id:
                raise NotFound("no such token")
            del self.tokens[token_id]

    def user_for_token(self, token: str) -> int | None:
        for t in self.tokens.values():
            if secrets.compare_digest(t["token"].encode(), token.encode()):
                t["last_used"] = self.clock()
                return int(t["user"])
        return None

    def user_email(self, user_id: int) -> str:
        try:
            return self.users[user_id][0]
        except KeyError:
            raise NotFound("no such user") from None

    # -- issue 17: the account lifecycle (service/account.py), the least of it ----------

    def account_info(self, user_id: int) -> dict[str, Any]:
        email = self.user_email(user_id)
        return {
            "id": user_id,
            "email": email,
            "created": 0.0,
            "timezone": None,
            "pending_email": None,
        }

    def _check_password(self, user_id: int, password: str) -> str:
        from yippiemove.service.core import WrongPassword

        email, stored = self.users[user_id]
        if not secrets.compare_digest(stored.encode(), str(password).encode()):
            raise WrongPassword("password: is not right")
        return email

    def change_password_checked(
        self, user_id: int, current: str, new: str, client: str = "?", keep: str | None = None
    ) -> None:
        email = self._check_password(user_id, current)
        self.users[user_id] = (email, new)

    def request_email_change(
        self, user_id: int, password: str, new_email: str, client: str = "?"
    ) -> str:
        self._check_password(user_id, password)
        return "sent"

    def delete_account(self, user_id: int, password: str, client: str = "?") -> None:
        self._check_password(user_id, password)
        with self._lock:
            del self.users[user_id]
            for k in [k for k, t in self.tokens.items() if t["user"] == user_id]:
                del self.tokens[k]
            for k in [k for k, j in self.jobs.items() if j.user_id == user_id]:
                del self.jobs[k]

    # -- accounts ---------------------------------------------------------------------

    def add_account(
        self, host: str, port: int, username: str, password: str, folders: list[FolderInfo]
    ) -> None:
        self.accounts[(host, port, username)] = (password, folders)

    def _validate(self, acc: Account, role: str) -> None:
        if not acc.host or any(c.isspace() for c in acc.host):
            raise ServiceError(f"{role}.host: not a host name")
        if not 1 <= acc.port <= 65535:
            raise ServiceError(f"{role}.port: must be 1-65535")
        if acc.security not in ("tls", "starttls", "none"):
            raise ServiceError(f"{role}.security: must be tls, starttls or none")
        if (
            acc.security == "none"
            and not self.settings.allow_insecure_hosts
            and not _is_loopback(acc.host)
        ):
            raise ServiceError(f"{role}.security: 'none' is only allowed for loopback hosts")
        if not acc.username:
            raise ServiceError(f"{role}.username: must not be empty")

    def validate_account(self, account: Account, role: str = "account") -> Account:
        self._validate(account, role)
        return account

    def pin(self, host: str, port: int, role: str, user: str = "", **kw: Any) -> None:
        """No egress policy in the fake (tests/web/test_egress.py tests the real one)."""

    async def check_account(
        self,
        account: Account,
        *,
        role: str = "account",
        dest: Account | None = None,
        user_id: int | None = None,
        folders: dict[str, Any] | None = None,
    ) -> list[FolderInfo]:
        """Like the real one: messages start with the role; with ``dest`` both accounts
        are logged in to and ``dest_name`` is the destination's name."""
        self.checked.append(account)
        self._validate(account, role)
        folders = self._login(account, {"source": "source: "}.get(role, f"{role}: "))
        if dest is not None:
            self.checked.append(dest)
            self._validate(dest, "dest")
            self._login(dest, "destination: ")
            return folders
        return [replace(f, dest_name=f.name) for f in folders]

    def _login(self, account: Account, where: str) -> list[FolderInfo]:
        if account.host.endswith(".invalid"):
            raise ServiceError(f"{where}host {account.host!r} not found; check the server name")
        known = self.accounts.get((account.host, account.port, account.username))
        password = known[0] if known is not None else None
        if account.password == "wrong" or (password is not None and account.password != password):
            raise ServiceError(
                f"{where}[AUTHENTICATIONFAILED] Authentication failed. "
                "Check the user name and password."
            )
        return list(known[1]) if known is not None else list(SAMPLE_FOLDERS)

    # -- transfers ----------------------------------------------------------------------

    def create_transfer(
        self, user_id: int, source: Account, dest: Account, folders: dict | None = None
    ) -> JobView:
        self._validate(source, "source")
        self._validate(dest, "dest")
        if folders is not None:
            extra = set(folders) - {"include", "exclude"}
            if extra:
                raise ServiceError(f"folders.{sorted(extra)[0]}: unknown key")
        if (source.host, source.port, source.username) == (dest.host, dest.port, dest.username):
            raise ServiceError("dest: the destination is the same account as the source")
        known = self.accounts.get((source.host, source.port, source.username))
        plan = list(known[1]) if known else list(SAMPLE_FOLDERS)
        if folders:
            inc, exc = folders.get("include") or [], folders.get("exclude") or []
            plan = [f for f in plan if (not inc or _matches_any(inc, f.name))]
            plan = [f for f in plan if not _matches_any(exc, f.name)]
        with self._lock:
            self._one_per_pair(user_id, source, dest)
            jid = secrets.token_hex(8)
            self.jobs[jid] = _Job(jid, user_id, source, dest, folders, plan, self.clock())
            self.created.append((user_id, source, dest, folders))
            return self._view(self.jobs[jid])

    def _one_per_pair(self, user_id: int, source: Account, dest: Account, me: str = "") -> None:
        """AlreadyActive while a job of the same customer and pair is queued or running."""
        if not self.one_per_pair:
            return

        def key(a: Account) -> tuple[str, int, str]:
            return (a.host.lower(), a.port, a.username.lower())

        for job in self.jobs.values():
            self._tick(job)
            if (
                job.id != me
                and job.user_id == user_id
                and job.status not in TERMINAL
                and (key(job.source), key(job.dest)) == (key(source), key(dest))
            ):
                raise AlreadyActive(job.id)

    def create_transfer_once(
        self,
        user_id: int,
        key: str,
        body: Any,
        source: Account,
        dest: Account,
        folders: dict | None = None,
    ) -> tuple[int, dict[str, Any]]:
        import json

        digest = json.dumps(body, sort_keys=True)
        with self._lock:
            seen = self.idempotency.get((user_id, key))
        if seen is not None:
            if seen[0] != digest:
                raise IdempotencyMismatch(
                    f"Idempotency-Key {key!r} was used before with another request body"
                )
            return seen[1], dict(seen[2])
        try:
            view = self.create_transfer(user_id, source, dest, folders)
        except AlreadyActive as exc:
            answer: tuple[int, dict[str, Any]] = (409, {"error": str(exc), "id": exc.job_id})
        else:
            answer = (201, {"id": view.id, "status": view.status})
        with self._lock:
            self.idempotency[(user_id, key)] = (digest, answer[0], answer[1])
        return answer

    def _job(self, user_id: int, job_id: str) -> _Job:
        job = self.jobs.get(job_id)
        if job is None or job.user_id != user_id:
            raise NotFound("no such transfer")
        return job

    def get_transfer(self, user_id: int, job_id: str) -> JobView:
        with self._lock:
            job = self._job(user_id, job_id)
            self._tick(job)
            return self._view(job)

    def watched_transfers(
        self, watched: Collection[tuple[int, str]]
    ) -> dict[tuple[int, str], JobView]:
        """The web's live progress poller (web/live.py): here one get_transfer each, so
        that a test that swaps get_transfer moves the live streams too."""
        out: dict[tuple[int, str], JobView] = {}
        for user_id, job_id in watched:
            try:
                out[(user_id, job_id)] = self.get_transfer(user_id, job_id)
            except NotFound:
                pass
        return out

    def list_transfers(self, user_id: int, status: str | None = None) -> list[JobView]:
        if status is not None and status not in STATUSES:
            raise ServiceError(f"status: must be one of {', '.join(STATUSES)}")
        with self._lock:
            out = []
            for job in self.jobs.values():
                if job.user_id != user_id:
                    continue
                self._tick(job)
                if status is None or job.status == status:
                    out.append(self._view(job))
            return sorted(out, key=lambda v: v.created, reverse=True)

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
        """Service.transfer_page over the fake's jobs (the same cursors and limits)."""
        try:
            joblist.check_limit(limit)
            after = joblist.decode_cursor(cursor) if cursor is not None else None
        except ValueError as exc:
            raise ServiceError(str(exc)) from None
        with self._lock:
            jobs = [j for j in self.jobs.values() if j.user_id == user_id]
            for job in jobs:
                self._tick(job)
            views = [
                self._view(j)
                for j in sorted(jobs, key=lambda j: (j.created, j.id), reverse=True)
                if (statuses is None or j.status in statuses)
                and (since is None or j.created >= since)
                and (before is None or j.created < before)
                and (after is None or (j.created, j.id) < after)
            ]
        page, more = views[:limit], len(views) > limit
        nxt = joblist.encode_cursor(page[-1].created, page[-1].id) if more else None
        return joblist.TransferPage(page if full else [joblist.summary(v) for v in page], nxt)

    def count_transfers(self, user_id: int) -> dict[str, int]:
        with self._lock:
            jobs = [j for j in self.jobs.values() if j.user_id == user_id]
            for job in jobs:
                self._tick(job)
            return dict(Counter(j.status for j in jobs))

    def cancel_transfer(self, user_id: int, job_id: str) -> JobView:
        with self._lock:
            job = self._job(user_id, job_id)
            self._tick(job)
            if job.status in TERMINAL:
                raise Conflict(f"the transfer is already {job.status}")
            job.status = "cancelled"
            job.finished = self.clock()
            self._write_state(job)
            return self._view(job)

    def rerun_transfer(self, user_id: int, job_id: str) -> JobView:
        with self._lock:
            job = self._job(user_id, job_id)
            self._tick(job)
            if job.status not in TERMINAL:
                raise Conflict("the transfer is still running; cancel it first")
            self._one_per_pair(user_id, job.source, job.dest, me=job.id)
            if not job.credentials:
                raise Conflict(
                    "the passwords of this transfer were deleted after "
                    f"{self.settings.credential_retention_days} days; order a new transfer"
                )
            job.status, job.started, job.finished, job.error = "queued", None, None, None
            job.fraction, job.failures, job.history = 0.0, [], []
            job.created = self.clock()
            return self._view(job)

    def undo_preview(self, user_id: int, job_id: str) -> dict[str, Any]:
        """Issue 17's undo, as the fake does it: nothing recorded, nothing to remove."""
        with self._lock:
            job = self._job(user_id, job_id)
            return {"dest": _label(job.dest), "applied": False, "to_remove": 0, "removed": 0,
                    "folders_refused": 0, "left_altered": 0, "left_without_uid": 0,
                    "folders": []}  # fmt: skip

    def undo_apply(self, user_id: int, job_id: str) -> dict[str, Any]:
        return dict(self.undo_preview(user_id, job_id), applied=True)

    def undo_result(self, user_id: int, job_id: str) -> dict[str, Any] | None:
        with self._lock:
            self._job(user_id, job_id)
        return None

    # Issue 17, staged moves (service/staged.py): the fake orders none, so every
    # transfer of the customer answers "no schedule" (409); another's is a missing one.
    def final_pass(self, user_id: int, job_id: str) -> JobView:
        with self._lock:
            self._job(user_id, job_id)
        raise Conflict("this transfer has no schedule still running")

    def cancel_schedule(self, user_id: int, job_id: str) -> JobView:
        return self.final_pass(user_id, job_id)

    async def update_credentials(
        self, user_id: int, job_id: str, passwords: dict[str, str], *, resume: bool = True
    ) -> JobView:
        """Issue 17 (service/resume.py), without servers: "wrong" is refused."""
        with self._lock:
            job = self._job(user_id, job_id)
            self._tick(job)
            if job.status not in ("failed", "cancelled"):
                raise Conflict(
                    "only a transfer that stopped or was cancelled takes new passwords "
                    f"(this one is {job.status})"
                )
            if not passwords:
                raise ServiceError("give a new password for the source, the destination or both")
            if "wrong" in passwords.values():
                raise CredentialsRefused("The new password did not pass the check", "auth", "NO")
            job.credentials = True
        return (
            self.rerun_transfer(user_id, job_id) if resume else self.get_transfer(user_id, job_id)
        )

    def forget_credentials(self, user_id: int, job_id: str) -> JobView:
        with self._lock:
            job = self._job(user_id, job_id)
            if job.status not in TERMINAL:
                raise Conflict("the transfer is still running; cancel it first")
            job.credentials = False
            return self._view(job)

    # -- OAuth2 sign-ins (issue 16): none offered by the fake; the real ones are tested
    # over the real Service (tests/web/test_oauth_web.py).

    def sign_in_providers(self) -> list[dict[str, str]]:
        return []

    def begin_sign_in(self, user_id: int, provider: str, *_a: Any, **_k: Any) -> tuple[str, str]:
        raise NotFound(f"no sign-in provider {provider[:40]!r}")

    async def redeem_sign_in(self, state: Any, **_k: Any) -> Any:
        from yippiemove.service.signin import SignInError

        raise SignInError("This sign-in has expired or was already used.")

    def sign_in_view(self, user_id: int, sid: Any) -> dict:
        raise NotFound("no such sign-in (it may have expired)")

    def signed_in(self, user_id: int, sid: Any, role: str) -> Account:
        raise ServiceError(f"{role}.authorization: no finished sign-in with this id")

    def used_sign_ins(self, user_id: int, ids: Any) -> None:
        return None

    async def forget_sign_in(self, user_id: int, sid: Any) -> None:
        raise NotFound("no such sign-in (it may have expired)")

    async def forget_job_sign_in(self, user_id: int, job_id: str) -> JobView:
        with self._lock:
            self._job(user_id, job_id)
        raise Conflict("this transfer has no sign-in to forget")

    def report(self, user_id: int, job_id: str) -> dict:
        with self._lock:
            job = self._job(user_id, job_id)
            self._tick(job)
            if job.status not in TERMINAL or job.started is None:
                raise NotFound("no report yet: the transfer has not run")
            folders = []
            for f in job.plan:
                done = round(f.messages * job.fraction)
                fails = [x for x in job.failures if x["folder"] == f.name]
                folders.append(
                    {
                        "source": f.name,
                        "dest": f.dest_name,
                        "source_count": f.messages,
                        "copied": max(0, done - len(fails)),
                        "already_present": 0,
                        "failed": len(fails),
                        "verified": max(0, done - len(fails)),
                        "bytes_copied": round(f.bytes * job.fraction),
                        "notes": [],
                        "error": None,
                        "failures": fails,
                        "messages": [],
                    }
                )
            return {
                "version": 1,
                "source": _label(job.source),
                "dest": _label(job.dest),
                "status": job.status,
                "error": job.error,
                "started": job.started,
                "finished": job.finished,
                "totals": {
                    "folders": len(folders),
                    "source_count": sum(f["source_count"] for f in folders),
                    "copied": sum(f["copied"] for f in folders),
                    "already_present": 0,
                    "failed": len(job.failures),
                    "folders_failed": 0,
                    "verified": sum(f["verified"] for f in folders),
                    "bytes_copied": sum(f["bytes_copied"] for f in folders),
                    "altered": len(job.altered),
                },
                "folders": folders,
                "failures": list(job.failures),
                "altered_messages": list(job.altered),
            }

    def state_file(self, user_id: int, job_id: str) -> Path:
        with self._lock:
            job = self._job(user_id, job_id)
            if job.state_path is None or not job.state_path.exists():
                raise NotFound("no state file yet: the transfer has not run")
            return job.state_path

    def validate_batch_csv(self, text: str) -> tuple[list[tuple[Account, Account]], list[str]]:
        """Columns: BATCH_COLUMNS (a header line is required); ports may be empty (993)."""
        rows: list[tuple[Account, Account]] = []
        errors: list[str] = []
        reader = csv.reader(io.StringIO(text))
        header = next(reader, None)
        if header is None:
            return [], ["line 1: the file is empty"]
        header = [h.strip().lower() for h in header]
        missing = [c for c in BATCH_COLUMNS if c not in header]
        if missing:
            return [], [f"line 1: missing column {', '.join(missing)}"]
        for row in reader:
            line = reader.line_num
            if not any(cell.strip() for cell in row):
                continue
            if len(row) != len(header):
                errors.append(f"line {line}: expected {len(header)} columns, found {len(row)}")
                continue
            cells = dict(zip(header, (c.strip() for c in row), strict=True))
            try:
                pair = tuple(self._row_account(cells, role) for role in ("source", "dest"))
            except ServiceError as exc:
                errors.append(f"line {line}: {exc}")
                continue
            rows.append(pair)  # type: ignore[arg-type]
        return rows, errors

    def _row_account(self, cells: dict[str, str], role: str) -> Account:
        port_text = cells[f"{role}_port"] or "993"
        if not port_text.isdigit():
            raise ServiceError(f"{role}_port: must be a number")
        acc = Account(
            cells[f"{role}_host"],
            int(port_text),
            cells[f"{role}_security"] or "tls",
            cells[f"{role}_username"],
            cells[f"{role}_password"],
        )
        if not acc.password:
            raise ServiceError(f"{role}_password: must not be empty")
        try:
            self._validate(acc, role)
        except ServiceError as exc:
            raise ServiceError(str(exc).replace(f"{role}.", f"{role}_")) from None
        return acc

    # -- test controls ------------------------------------------------------------------

    def start(self, job_id: str) -> None:
        with self._lock:
            job = self.jobs[job_id]
            job.status, job.started = "running", self.clock()
            job.history = [[job.started, 0]]

    def advance(self, job_id: str, fraction: float) -> None:
        with self._lock:
            job = self.jobs[job_id]
            if job.status == "queued":
                self.start(job_id)
            job.fraction = min(1.0, fraction)
            job.history.append([self.clock(), self._bytes_done(job)])

    def add_failure(self, job_id: str, folder: str, uid: int, reason: str) -> None:
        self.jobs[job_id].failures.append(
            {
                "folder": folder,
                "uid": uid,
                "size": 1234,
                "message_id": f"<{uid}@example.org>",
                "reason": reason,
            }
        )

    def add_altered(self, job_id: str, folder: str, uid: int, what: str) -> None:
        """Test control: a message the destination server stored altered (issue 13)."""
        self.jobs[job_id].altered.append(
            {
                "folder": folder,
                "uid": uid,
                "size": 1234,
                "message_id": f"<{uid}@example.org>",
                "dest_uid": uid,
                "stored_size": 1200,
                "what": what,
            }
        )

    def finish(self, job_id: str) -> None:
        with self._lock:
            job = self.jobs[job_id]
            self.advance(job_id, 1.0)
            job.status, job.finished = "done", self.clock()
            self._write_state(job)

    def fail(self, job_id: str, error: str) -> None:
        with self._lock:
            job = self.jobs[job_id]
            if job.started is None:
                self.start(job_id)
            job.status, job.finished, job.error = "failed", self.clock(), error
            self._write_state(job)

    def drop_credentials(self, job_id: str) -> None:
        """Test control: the retention ran out."""
        self.jobs[job_id].credentials = False

    # -- internals ----------------------------------------------------------------------

    def _tick(self, job: _Job) -> None:
        """With ``job_seconds``, move a job along by wall time."""
        if self.job_seconds is None or job.status in TERMINAL:
            return
        now = self.clock()
        if job.status == "queued" and now - job.created >= 0.5:
            job.status, job.started = "running", now
            job.history = [[now, 0]]
        if job.status != "running" or job.started is None:
            return
        # Uneven speed, so that the rate graph has something to show.
        t = (now - job.started) / self.job_seconds
        job.fraction = min(1.0, t + 0.04 * math.sin(t * 17) * (1 - t))
        job.fraction = max(job.fraction, job.history[-1][1] / max(1, _total_bytes(job)))
        if job.history[-1][0] + 0.25 <= now:
            job.history.append([now, self._bytes_done(job)])
        if job.fraction > 0.35 and not job.failures and job.plan:
            self.add_failure(
                job.id,
                job.plan[0].name,
                4711,
                "the destination refused the message: [LIMIT] Message too large (52 MB)",
            )
        if t >= 1.0:
            job.fraction, job.status, job.finished = 1.0, "done", now
            self._write_state(job)

    def _bytes_done(self, job: _Job) -> int:
        return round(_total_bytes(job) * job.fraction)

    def _write_state(self, job: _Job) -> None:
        jobs_dir = self.settings.data_dir / "jobs"
        jobs_dir.mkdir(parents=True, exist_ok=True)
        path = jobs_dir / f"{job.id}.sqlite"
        con = sqlite3.connect(path)
        try:
            con.execute("CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT)")
            con.execute(
                "INSERT OR REPLACE INTO meta VALUES ('source', ?), ('dest', ?)",
                (_label(job.source), _label(job.dest)),
            )
            con.commit()
        finally:
            con.close()
        job.state_path = path

    def _view(self, job: _Job) -> JobView:
        total_b = _total_bytes(job)
        total_m = sum(f.messages for f in job.plan)
        per_folder: dict[str, dict[str, Any]] = {}
        folders_done = 0
        for f in job.plan:
            m_done = round(f.messages * job.fraction)
            b_done = round(f.bytes * job.fraction)
            fails = sum(1 for x in job.failures if x["folder"] == f.name)
            state = "waiting" if job.fraction == 0 else "copying"
            if job.fraction >= 1.0 or job.status in TERMINAL:
                state = "done" if job.fraction > 0 else "waiting"
            per_folder[f.name] = {
                "dest": f.dest_name,
                "messages": f.messages,
                "bytes": f.bytes,
                "messages_done": m_done,
                "bytes_done": b_done,
                "failed": fails,
                "state": state,
            }
            if job.fraction >= 1.0:
                folders_done += 1
        elapsed = ((job.finished or self.clock()) - job.started) if job.started else 0.0
        bytes_done = round(total_b * job.fraction)
        rate = 0.0
        if len(job.history) >= 2:
            (t0, b0), (t1, b1) = job.history[-2], job.history[-1]
            rate = (b1 - b0) / (t1 - t0) if t1 > t0 else 0.0
        elif elapsed > 0:
            rate = bytes_done / elapsed
        eta = (total_b - bytes_done) / rate if rate > 0 and job.status == "running" else None
        progress = {
            "phase": {"queued": "waiting", "running": "copying"}.get(job.status, job.status),
            "folders_done": folders_done,
            "folders_total": len(job.plan),
            "messages_done": round(total_m * job.fraction),
            "messages_total": total_m,
            "bytes_done": bytes_done,
            "bytes_total": total_b,
            "rate": rate,
            "eta": eta,
            "eta_range": [eta * 0.9, eta * 1.1] if eta is not None else None,
            "failed": len(job.failures),
            "failures": list(job.failures),
            "current": [f.name for f in job.plan if job.status == "running" and job.fraction < 1][
                :2
            ],
            "rate_history": [list(p) for p in job.history],
            "per_folder": per_folder,
            "throttled_until": job.throttled_until,
            "reconnects": 1 if job.throttled_until else 0,
        }
        return JobView(
            id=job.id,
            status=job.status,
            source=_public(job.source),
            dest=_public(job.dest),
            folders=job.folders,
            created=job.created,
            started=job.started,
            finished=job.finished,
            progress=progress,
            error=job.error,
            can_rerun=job.status in TERMINAL and job.credentials,
            credentials_expire=(
                (job.finished or 0) + self.settings.credential_retention_days * 86400
                if job.credentials and job.status in TERMINAL
                else None
            ),
        )


def _total_bytes(job: _Job) -> int:
    return sum(f.bytes for f in job.plan)


def _label(acc: Account) -> str:
    return f"{acc.username}@{acc.host}:{acc.port}"


def _matches_any(patterns: list[str], name: str) -> bool:
    import fnmatch

    for p in patterns:
        if p == name or name.startswith(p + "/"):
            return True
        if any(ch in p for ch in "*?[") and fnmatch.fnmatchcase(name, p):
            return True
    return False


__all__ = [
    "BATCH_COLUMNS",
    "SAMPLE_FOLDERS",
    "Account",
    "Conflict",
    "FakeService",
    "FolderInfo",
    "JobView",
    "NotFound",
    "ServiceError",
    "Settings",
]
