"""The Service's "Sign in with Google / Microsoft" (issue 16): the customer's consent in
the web order and the REST API, the grant kept encrypted until an order uses it, "forget
my sign-in" and signing in again to a job that the provider stopped (docs/service.md
"Sign in with Google / Microsoft", docs/design.md "OAuth2: the web order").

The authorization-code flow with PKCE (yippiemove.oauth.flows, authlib):

1. :meth:`SignIns.begin_sign_in` keeps a row (``oauth_sign_ins``): the SHA-256 of the
   ``state`` sent to the provider (never the state itself), whose it is (customer, step
   or job, and a nonce of the browser's session), and encrypted the PKCE verifier and
   the order form's fields to come back to;
2. :meth:`SignIns.redeem_sign_in` takes the provider's answer: the state must name a
   pending row of this session, not expired, and is used up at once (a reload or a
   replay finds nothing); a refused consent or a failed exchange deletes the row;
3. the caller checks the account on the spot (a login with the new token, as for a
   password), then :meth:`SignIns.confirm_sign_in` (the grant kept for the order, until
   ``oauth_unused_seconds``) or :meth:`SignIns.drop_sign_in`;
4. the order names the sign-in's id instead of a password (:meth:`SignIns.signed_in`);
   creating the transfer moves the grant into the job's credentials blob
   (``source_oauth``/``dest_oauth``) and deletes the row (:meth:`SignIns.used_sign_ins`).

A mixin of :class:`~yippiemove.service.core.Service` (its database, credential box,
settings, account checks and re-runs).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import re
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from sqlalchemy import delete, select

from ..oauth import GrantTokenSource
from ..oauth import flows as oauth_flows
from .db import Job, OAuthSignIn

if TYPE_CHECKING:
    from .core import Account, JobView

log = logging.getLogger("yippiemove.service")

__all__ = ["DEFAULT_IMAP", "SignIn", "SignIns", "imap_servers"]

#: Where a signed-in account's mail is, per provider key (``oauth_imap`` overrides).
DEFAULT_IMAP: dict[str, tuple[str, int, str]] = {
    "google": ("imap.gmail.com", 993, "tls"),
    "microsoft": ("outlook.office365.com", 993, "tls"),
}
SIDES = ("source", "dest")
_NETLOC = re.compile(r"\A[A-Za-z0-9.-]+(:[0-9]{1,5})?\Z")
PURPOSES = ("order", "reauth", "api")


def imap_servers(text: str) -> dict[str, tuple[str, int, str]]:
    """``KEY=HOST:PORT[:SECURITY],...`` over the built-ins; ValueError naming a bad one."""
    out = dict(DEFAULT_IMAP)
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        key, _, server = part.partition("=")
        bits = server.strip().rsplit(":", 2) if server.count(":") >= 2 else server.split(":")
        if not key.strip() or len(bits) < 2 or not bits[1].isdigit():
            raise ValueError(f"oauth_imap: {part!r} is not KEY=HOST:PORT[:SECURITY]")
        security = bits[2] if len(bits) > 2 else "tls"
        out[key.strip()] = (bits[0], int(bits[1]), security)
    return out


def _hash(value: str) -> str:
    return hashlib.sha256(value.encode("utf-8", "surrogateescape")).hexdigest()


@dataclass(frozen=True)
class SignIn:
    """A redeemed sign-in (the provider said yes and gave a grant), to be checked."""

    id: str
    user_id: int
    provider: str
    provider_name: str
    purpose: str
    side: str
    job_id: str | None
    address: str
    #: The order form's fields when the sign-in started (web order only).
    form: dict[str, Any] = field(repr=False)
    #: The account as the sign-in gives it: the provider's IMAP server, the address, the
    #: grant (never in repr).
    account: Account = field(repr=False)
    #: Started in a browser session (the web order, the job page), not by an API client.
    bound: bool = True


class SignInError(Exception):
    """A sign-in that did not happen; the message is for the customer.  ``sign_in``:
    what is known of it (for the page to go back to), when anything is."""

    def __init__(self, message: str, row: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.row = row or {}


class SignIns:
    """OAuth2 sign-ins of customers (mixed into Service)."""

    # -------------------------------------------------------------- providers

    def sign_in_providers(self) -> list[dict[str, str]]:
        """The providers customers can sign in with (a client id is set), as the order
        form shows them: ``[{"key": "google", "name": "Google", "origin":
        "https://accounts.google.com"}...]`` (the origin: the pages' CSP lets forms go
        there, the redirect to the provider being a form's)."""
        config = self.settings.oauth_config()  # type: ignore[attr-defined]
        out = []
        for key in config.configured():
            prov = config.get(key)
            url = urlsplit(prov.authorize_url)
            origin = f"{url.scheme}://{url.netloc}"
            if url.scheme not in ("https", "http") or not _NETLOC.match(url.netloc):
                origin = ""  # nothing odd goes into a CSP header
            out.append({"key": key, "name": prov.name, "origin": origin})
        return out

    def _provider(self, key: Any) -> Any:
        from .core import NotFound

        config = self.settings.oauth_config()  # type: ignore[attr-defined]
        if not isinstance(key, str) or key not in config.configured():
            raise NotFound(f"no sign-in provider {str(key)[:40]!r}")
        return config.get(key)

    def imap_server(self, provider: str) -> tuple[str, int, str]:
        """(host, port, security) of the provider's IMAP server."""
        from .core import ServiceError

        servers = imap_servers(self.settings.oauth_imap)  # type: ignore[attr-defined]
        if provider not in servers:
            raise ServiceError(f"no IMAP server is set for {provider!r} (oauth_imap)")
        return servers[provider]

    # -------------------------------------------------------------- the flow

    def begin_sign_in(
        self,
        user_id: int,
        provider: str,
        redirect_uri: str,
        *,
        purpose: str = "order",
        side: str = "",
        job_id: str | None = None,
        binding: str | None = None,
        form: dict[str, Any] | None = None,
        login_hint: str | None = None,
    ) -> tuple[str, str]:
        """Start a sign-in; returns (its id, the provider's URL to send the user to)."""
        from .core import ServiceError

        prov = self._provider(provider)
        if purpose not in PURPOSES:
            raise ServiceError(f"purpose: must be one of {', '.join(PURPOSES)}")
        if purpose != "api" and side not in SIDES:
            raise ServiceError("side: must be source or dest")
        pending = oauth_flows.begin(prov, redirect_uri, login_hint=login_hint or None)
        now = time.time()
        sid = uuid.uuid4().hex
        secret = self.box.encrypt(  # type: ignore[attr-defined]
            {"code_verifier": pending.code_verifier, "form": form or {}}
        )
        with self.db.session() as s:  # type: ignore[attr-defined]
            self._purge_sign_ins(s, now)
            s.add(
                OAuthSignIn(
                    id=sid,
                    state_hash=_hash(pending.state),
                    user_id=user_id,
                    provider=provider,
                    purpose=purpose,
                    side=side,
                    job_id=job_id,
                    binding=_hash(binding) if binding else None,
                    redirect_uri=redirect_uri,
                    status="pending",
                    secret=secret,
                    created=now,
                    expires=now + self.settings.oauth_sign_in_seconds,  # type: ignore[attr-defined]
                )
            )
        log.info("sign-in %s: started with %s for user %d (%s)", sid, provider, user_id, purpose)
        return sid, pending.url

    def _purge_sign_ins(self, s: Any, now: float) -> None:
        s.execute(delete(OAuthSignIn).where(OAuthSignIn.expires <= now))

    def _take_pending(self, state: str, binding: str | None) -> dict[str, Any]:
        """The pending sign-in of ``state``, used up now (one transaction): a second
        answer with the same state finds it gone."""
        now = time.time()
        refused: str | None = None
        with self.db.session() as s:  # type: ignore[attr-defined]
            row = s.scalars(
                select(OAuthSignIn).where(OAuthSignIn.state_hash == _hash(state)).with_for_update()
            ).first()
            if row is None or row.status != "pending" or row.expires <= now:
                if row is not None and row.status == "pending":
                    s.delete(row)
                refused = (
                    "This sign-in has expired or was already used. Please start the sign-in again."
                )
            elif row.binding is not None and (not binding or _hash(binding) != row.binding):
                # Someone else's browser (a link planted on the customer, or a stolen
                # answer): nothing is stored, and the real sign-in is void too.
                s.delete(row)
                refused = (
                    "This sign-in was started in another browser session. Please start the "
                    "sign-in again from the order page."
                )
            if refused is not None:  # committed first (the deletion), refused below
                out: dict[str, Any] = {}
            else:
                assert row is not None
                out = {
                    "id": row.id,
                    "user_id": row.user_id,
                    "provider": row.provider,
                    "purpose": row.purpose,
                    "side": row.side,
                    "job_id": row.job_id,
                    "redirect_uri": row.redirect_uri,
                    "bound": row.binding is not None,
                    "secret": self.box.decrypt(row.secret) if row.secret else {},  # type: ignore[attr-defined]
                }
                row.status = "checking"
                row.secret = None
                row.expires = now + 300.0
        if refused is not None:
            raise SignInError(refused)
        return out

    async def redeem_sign_in(
        self,
        state: Any,
        *,
        code: Any = None,
        error: Any = None,
        binding: str | None = None,
    ) -> SignIn:
        """The provider's answer (``state`` and ``code``, or ``error``): the grant and the
        account, not yet checked.  :class:`SignInError` with a message for the customer
        when it failed: nothing is stored then."""
        from .core import Account

        if not isinstance(state, str) or not state or len(state) > 500:
            raise SignInError("The sign-in answer is incomplete (no state). Please start again.")
        row = self._take_pending(state, binding)
        secret = row.pop("secret")
        form = secret.get("form") or {}
        info = {**row, "form": form}
        config = self.settings.oauth_config()  # type: ignore[attr-defined]
        try:
            prov = config.get(row["provider"])
        except Exception:
            self._delete_sign_in(row["id"])
            raise SignInError("This sign-in provider is no longer offered.", info) from None
        if error is not None or not isinstance(code, str) or not code:
            self._delete_sign_in(row["id"])
            if error == "access_denied":
                raise SignInError(
                    f"You did not allow access at {prov.name}, so nothing was stored. "
                    f"Sign in with {prov.name} again when you want to use it.",
                    info,
                )
            said = str(error)[:60] if isinstance(error, str) and error.isprintable() else "none"
            raise SignInError(
                f"{prov.name} did not complete the sign-in (error: {said}); nothing was "
                "stored. Please try again.",
                info,
            )
        pending = oauth_flows.Pending("", state, str(secret.get("code_verifier") or ""))
        try:
            grant, address = await oauth_flows.finish(
                prov, pending, code[:2000], row["redirect_uri"], state=state
            )
        except Exception as exc:  # FlowError, a config or network problem
            self._delete_sign_in(row["id"])
            log.warning("sign-in %s: the code exchange failed: %s", row["id"], exc)
            raise SignInError(
                f"The sign-in with {prov.name} could not be completed ({exc}). Nothing was "
                "stored; please try again.",
                info,
            ) from None
        host, port, security = self.imap_server(row["provider"])
        account = Account(host, port, security, address, "", grant)
        with self.db.session() as s:  # type: ignore[attr-defined]
            r = s.get(OAuthSignIn, row["id"])
            if r is not None:
                r.address = address
                r.secret = self.box.encrypt({"grant": grant})  # type: ignore[attr-defined]
        return SignIn(
            id=row["id"],
            user_id=row["user_id"],
            provider=row["provider"],
            provider_name=prov.name,
            purpose=row["purpose"],
            side=row["side"],
            job_id=row["job_id"],
            address=address,
            form=form,
            account=account,
            bound=bool(row["bound"]),
        )

    def confirm_sign_in(self, sign_in: SignIn) -> None:
        """The account worked: keep the grant for the order (``oauth_unused_seconds``)."""
        now = time.time()
        with self.db.session() as s:  # type: ignore[attr-defined]
            row = s.get(OAuthSignIn, sign_in.id, with_for_update=True)
            if row is None:
                return
            row.status = "done"
            row.error = None
            row.expires = now + self.settings.oauth_unused_seconds  # type: ignore[attr-defined]
        log.info("sign-in %s: %s signed in with %s", sign_in.id, "account", sign_in.provider)

    async def drop_sign_in(self, sign_in: SignIn, message: str) -> None:
        """The account did not work (or is not the one wanted): the grant is revoked at
        the provider (best effort) and deleted; an API client sees ``message``."""
        await self._revoke(sign_in.account.oauth)
        now = time.time()
        with self.db.session() as s:  # type: ignore[attr-defined]
            row = s.get(OAuthSignIn, sign_in.id, with_for_update=True)
            if row is None:
                return
            if row.binding is None:  # an API client's: kept a while, GET says why
                row.status = "failed"
                row.error = message[:1000]
                row.secret = None
                row.expires = now + 600.0
            else:
                s.delete(row)

    def _delete_sign_in(self, sid: str) -> None:
        with self.db.session() as s:  # type: ignore[attr-defined]
            row = s.get(OAuthSignIn, sid)
            if row is not None:
                s.delete(row)

    async def _revoke(self, grant: dict[str, Any] | None) -> bool:
        """Revoke a refresh grant at its provider (RFC 7009), best effort: never raises."""
        if not grant or grant.get("kind") != "refresh":
            return False
        try:
            source = GrantTokenSource(grant, self.settings.oauth_config())  # type: ignore[attr-defined]
            return bool(await asyncio.wait_for(source.revoke(), timeout=20))
        except Exception as exc:
            log.warning("revoking a sign-in at its provider failed: %s", type(exc).__name__)
            return False

    # -------------------------------------------------------------- using it

    def sign_in_view(self, user_id: int, sid: Any) -> dict[str, Any]:
        """What an API client sees of a sign-in (never its grant): id, provider, status
        (pending | checking | done | failed), and once done the account."""
        from .core import NotFound

        with self.db.read() as s:  # type: ignore[attr-defined]
            row = s.get(OAuthSignIn, sid) if isinstance(sid, str) and len(sid) <= 32 else None
            if row is None or row.user_id != user_id or row.expires <= time.time():
                raise NotFound("no such sign-in (it may have expired)")
            out: dict[str, Any] = {
                "id": row.id,
                "provider": row.provider,
                "status": row.status,
                "expires": row.expires,
                "error": row.error,
                "account": None,
            }
            if row.status == "done":
                host, port, security = self.imap_server(row.provider)
                out["account"] = {
                    "host": host,
                    "port": port,
                    "security": security,
                    "username": row.address,
                    "oauth_provider": row.provider,
                }
            return out

    def signed_in(self, user_id: int, sid: Any, role: str) -> Account:
        """The account of a finished sign-in of this customer (with its grant), for an
        order; ServiceError naming ``role`` when there is none (expired, used, other's)."""
        from .core import Account, ServiceError

        now = time.time()
        with self.db.read() as s:  # type: ignore[attr-defined]
            row = s.get(OAuthSignIn, sid) if isinstance(sid, str) and len(sid) <= 32 else None
            if (
                row is None
                or row.user_id != user_id
                or row.status != "done"
                or row.expires <= now
                or row.secret is None
                or row.purpose == "reauth"
            ):
                raise ServiceError(
                    f"{role}.authorization: no finished sign-in with this id (it may have "
                    "expired or been used): sign in again"
                )
            grant = self.box.decrypt(row.secret).get("grant")  # type: ignore[attr-defined]
            provider, address = row.provider, row.address or ""
        host, port, security = self.imap_server(provider)
        return Account(host, port, security, address, "", grant)

    def used_sign_ins(self, user_id: int, ids: Iterable[str | None]) -> None:
        """The order that used these sign-ins exists: their rows (and grants) go; the
        grants live on in the job's credentials only."""
        wanted = [i for i in ids if isinstance(i, str) and i]
        if not wanted:
            return
        with self.db.session() as s:  # type: ignore[attr-defined]
            s.execute(
                delete(OAuthSignIn).where(
                    OAuthSignIn.id.in_(wanted), OAuthSignIn.user_id == user_id
                )
            )

    async def forget_sign_in(self, user_id: int, sid: Any) -> None:
        """An API client's ``DELETE``: revoke (best effort) and delete a sign-in."""
        from .core import NotFound

        with self.db.session() as s:  # type: ignore[attr-defined]
            row = s.get(OAuthSignIn, sid) if isinstance(sid, str) and len(sid) <= 32 else None
            if row is None or row.user_id != user_id:
                raise NotFound("no such sign-in (it may have expired)")
            secret = self.box.decrypt(row.secret) if row.secret else {}  # type: ignore[attr-defined]
            s.delete(row)
        await self._revoke(secret.get("grant"))

    # -------------------------------------------------------------- jobs

    async def forget_job_sign_in(self, user_id: int, job_id: str) -> JobView:
        """ "Forget my sign-in" of a transfer: its grants are revoked at the providers (best
        effort) and deleted from its credentials; the passwords of a side without a
        sign-in stay.  The job cannot run again until the customer signs in again (a
        running one stops when its access token runs out: the provider refuses it)."""
        from .core import Conflict, JobView

        with self.db.session() as s:  # type: ignore[attr-defined]
            job = self._own(s, user_id, job_id, lock=True)  # type: ignore[attr-defined]
            creds = self.box.decrypt(job.credentials) if job.credentials else {}  # type: ignore[attr-defined]
            grants = [creds.pop(f"{side}_oauth", None) for side in SIDES]
            if not any(grants):
                raise Conflict("this transfer has no sign-in to forget")
            job.credentials = self.box.encrypt(creds)  # type: ignore[attr-defined]
            # Marked on the account (progress belongs to the running job's supervisor).
            if grants[0]:
                job.source = dict(job.source, signed_out=True)
            if grants[1]:
                job.dest = dict(job.dest, signed_out=True)
            view = JobView.of(job)
        for grant in grants:
            await self._revoke(grant)
        with contextlib.suppress(Exception):
            self.db.checkpoint()  # type: ignore[attr-defined]
        log.info("job %s: sign-in forgotten by its customer", job_id)
        return view

    def reauth_job(self, sign_in: SignIn) -> JobView:
        """A new consent for a job the provider stopped (or whose sign-in was forgotten):
        the same account's new grant replaces the old one in the job's credentials and
        the job runs again (the re-run path: what was copied is not copied again)."""
        from .core import Conflict, JobView, ServiceError

        side = sign_in.side
        with self.db.session() as s:  # type: ignore[attr-defined]
            job = self._own(s, sign_in.user_id, sign_in.job_id or "", lock=True)  # type: ignore[attr-defined]
            account = dict(job.source if side == "source" else job.dest)
            if account.get("oauth_provider") != sign_in.provider:
                raise ServiceError(
                    f"this transfer's {'source' if side == 'source' else 'destination'} "
                    f"does not sign in with {sign_in.provider_name}"
                )
            if str(account.get("username", "")).casefold() != sign_in.address.casefold():
                raise ServiceError(
                    f"You signed in as {sign_in.address}, but this transfer's "
                    f"{'source' if side == 'source' else 'destination'} is "
                    f"{account.get('username')}. Sign in with that account."
                )
            if job.credentials is None:
                raise Conflict(
                    "the credentials of this transfer were deleted; start a new transfer"
                )
            creds = self.box.decrypt(job.credentials)  # type: ignore[attr-defined]
            creds[f"{side}_oauth"] = sign_in.account.oauth
            job.credentials = self.box.encrypt(creds)  # type: ignore[attr-defined]
            progress = dict(job.progress or {})
            stopped_here = job.status == "failed" and side in (progress.get("reauth") or [])
            left = [x for x in progress.get("reauth") or [] if x != side]
            if left:
                progress["reauth"] = left
            else:
                progress.pop("reauth", None)
            job.progress = progress
            account.pop("signed_out", None)
            if side == "source":
                job.source = account
            else:
                job.dest = account
            waiting = bool(left) or any(
                (job.source if o == "source" else job.dest).get("signed_out") for o in SIDES
            )
            view = JobView.of(job)
            row = s.get(OAuthSignIn, sign_in.id)
            if row is not None and row.binding is None:  # an API client reads the outcome
                row.status, row.secret, row.expires = "done", None, time.time() + 600.0
            elif row is not None:
                s.delete(row)
        log.info("job %s: signed in again (%s)", view.id, side)
        if not stopped_here or waiting:
            return view  # another side still waits for its sign-in, or nothing to resume
        return self.rerun_transfer(sign_in.user_id, view.id)  # type: ignore[attr-defined]

    def missing_sign_ins(self, job: Job, creds: dict[str, Any]) -> list[str]:
        """The sides of a job that sign in with OAuth2 but have no grant now."""
        return [
            side
            for side in SIDES
            if (job.source if side == "source" else job.dest).get("oauth_provider")
            and not isinstance(creds.get(f"{side}_oauth"), dict)
        ]
