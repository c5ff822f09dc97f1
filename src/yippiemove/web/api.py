"""The REST API, /api/v1: transfers for programs, authenticated by API tokens.

No ``from __future__ import annotations`` here: FastAPI reads the endpoint annotations
(which use the local ``User`` alias) at runtime.
"""

import os
import re
import shutil
import sqlite3
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal

from fastapi import APIRouter, Depends, Header, Query
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.background import BackgroundTask
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException

from yippiemove.service.core import Account, AlreadyActive, CredentialsRefused
from yippiemove.service.joblist import DEFAULT_LIMIT, MAX_LIMIT

from .batch_schemas import BatchOut
from .schemas import (
    AlreadyActiveOut,
    AuthorizationIn,
    AuthorizationOut,
    AuthorizationStarted,
    CredentialsIn,
    CredentialsRefusedOut,
    DomainBatchIn,
    DomainBatchOut,
    DomainCredentialIn,
    DomainCredentialList,
    DomainCredentialOut,
    ErrorOut,
    SignedInAccountIn,
    StatusName,
    TransferCreated,
    TransferIn,
    TransferList,
    TransferOut,
    error_body,
)

if TYPE_CHECKING:
    from yippiemove.service.core import JobView, Service

API_PREFIX = "/api/v1"
_JOB_ID = re.compile(r"[A-Za-z0-9_.-]{1,100}")

_bearer = HTTPBearer(
    auto_error=False,
    scheme_name="token",
    description="An API token from the Tokens page: `Authorization: Bearer TOKEN`.",
)

_ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"model": ErrorOut, "description": "No token, or an invalid or revoked one"},
    404: {"model": ErrorOut, "description": "No such transfer (or not yours)"},
}


def public_view(view: "JobView") -> dict[str, Any]:
    """A JobView as JSON for customers: never a password, whatever the backend puts in."""
    data = view.as_dict()
    for side in ("source", "dest"):
        acc = data.get(side)
        if isinstance(acc, dict):
            data[side] = {k: v for k, v in acc.items() if "password" not in k.lower()}
    return data


def check_job_id(job_id: str) -> str:
    """Ids that cannot be a job's get the same 404 as other customers' jobs."""
    if not _JOB_ID.fullmatch(job_id):
        raise HTTPException(404, "no such transfer")
    return job_id


def to_account(model: Any, service: Any = None, user: int = 0, role: str = "account") -> Account:
    """The API's account: the fields given, or a finished OAuth2 sign-in's account."""
    if isinstance(model, SignedInAccountIn):
        signed_in: Account = service.signed_in(user, model.authorization, role)
        return signed_in
    return Account(
        host=model.host,
        port=model.port,
        security=model.security,
        username=model.username,
        password=model.password,
    )


def snapshot_sqlite(path: Path) -> Path:
    """A consistent copy of a (maybe live, WAL-mode) sqlite database, in a temp file."""
    fd, tmp_name = tempfile.mkstemp(prefix="yippiemove-receipt-", suffix=".sqlite")
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        src = sqlite3.connect(f"{path.as_uri()}?mode=ro", uri=True, timeout=5)
        try:
            dst = sqlite3.connect(tmp)
            try:
                src.backup(dst)
            finally:
                dst.close()
        finally:
            src.close()
    except sqlite3.Error:
        # Not readable as a database right now: hand out the file as it is.
        shutil.copyfile(path, tmp)
    return tmp


def receipt_response(path: Path, job_id: str) -> FileResponse:
    tmp = snapshot_sqlite(path)
    return FileResponse(
        tmp,
        media_type="application/vnd.sqlite3",
        filename=f"yippiemove-{job_id}-receipt.sqlite",
        background=BackgroundTask(tmp.unlink, missing_ok=True),
    )


def build_api_router(service: "Service") -> APIRouter:
    """The REST API's routes, as closures over ``service`` (FastAPI's style): the
    function is long because it registers every route; each route is short."""
    router = APIRouter(prefix=API_PREFIX, tags=["transfers"], responses=_ERRORS)

    def api_user(
        creds: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
    ) -> int:
        if creds is None or not creds.credentials:
            raise HTTPException(
                401,
                "an API token is required: Authorization: Bearer TOKEN",
                headers={"WWW-Authenticate": "Bearer"},
            )
        user = service.user_for_token(creds.credentials)
        if user is None:
            raise HTTPException(
                401,
                "the API token is invalid or was revoked",
                headers={"WWW-Authenticate": 'Bearer error="invalid_token"'},
            )
        return user

    User = Annotated[int, Depends(api_user)]

    @router.post(
        "/transfers",
        status_code=201,
        response_model=TransferCreated,
        summary="Order a transfer",
        responses={
            400: {"model": ErrorOut, "description": "Refused by policy"},
            402: {
                "model": ErrorOut,
                "description": "Payment required: the service charges for transfers and "
                "the order has no usable quote (none, another customer's, expired, used, "
                "or of another source or folder choice): the message says why",
            },
            409: {
                "model": AlreadyActiveOut,
                "description": "The same transfer (same source and destination accounts) "
                "is already queued or running: `id` names it",
            },
            422: {
                "model": ErrorOut,
                "description": "Invalid body (the message names the field), or an "
                "`Idempotency-Key` used before with another body",
            },
        },
    )
    def create_transfer(
        body: TransferIn,
        user: User,
        idempotency_key: Annotated[
            str | None,
            Header(
                alias="Idempotency-Key",
                max_length=255,
                description="Any string up to 255 characters, new for each transfer you "
                "mean to order: a request repeated with the same key and the same body "
                "gets the first answer again (same status and body), and orders nothing "
                "more; with another body, 422.  Keys are per customer.",
            ),
        ] = None,
    ) -> JSONResponse:
        """Copy every folder of `source` (or those `folders` selects) to `dest`.

        The transfer is queued and runs in the background; follow it with
        `GET /api/v1/transfers/{id}`.  Passwords are stored encrypted and only for as long
        as re-runs need them; no response ever contains them.

        When the service charges for transfers, order with the `quote_id` of a quote of
        this source and folder choice (`POST /api/v1/quotes`; without one: 402).  The
        quote's price is spent from your balance at once if it covers it (`queued`);
        else the transfer is `awaiting_payment` until paid (`POST
        /api/v1/transfers/{id}/payment` by card, or `.../settle` from credits).

        One transfer of a pair at a time: while a transfer with the same source and
        destination accounts is queued or running, ordering it again answers 409 with
        that transfer's `id` (nothing new is queued).  Transfers from other sources into
        the same destination mailbox wait for each other (phase `waiting`).

        With `schedule`, a staged move until cut-over: the same transfer runs a first
        pass, then top-up passes every `schedule.interval` seconds (each copies only the
        mail that arrived since), then a final pass at `schedule.final_at` or when you call
        `POST /api/v1/transfers/{id}/final-pass`.  Its passwords are kept until the final
        pass ends, then deleted; `GET` shows the schedule and each pass's figures.
        """
        folders = body.folders.model_dump(mode="json") if body.folders is not None else None
        # A staged move (issue 17) and a quote (issue 20); passed only when given
        # (stand-in services in tests).
        staged: dict[str, Any] = (
            {"schedule": body.schedule.model_dump(mode="json")} if body.schedule else {}
        )
        if body.quote_id is not None:
            staged["quote_id"] = body.quote_id
        source = to_account(body.source, service, user, "source")
        dest = to_account(body.dest, service, user, "dest")
        signed = [
            a.authorization for a in (body.source, body.dest) if isinstance(a, SignedInAccountIn)
        ]
        if idempotency_key is not None:
            status, answer = service.create_transfer_once(
                user,
                idempotency_key,
                # Without a quote: the body as stored before quotes existed.
                body.model_dump(
                    mode="json", exclude={"quote_id"} if body.quote_id is None else None
                ),
                source,
                dest,
                folders,
                **staged,
            )
        else:
            try:
                view = service.create_transfer(user, source, dest, folders, **staged)
            except AlreadyActive as exc:
                status, answer = 409, {"error": str(exc), "id": exc.job_id}
            else:
                status, answer = 201, {"id": view.id, "status": view.status}
                if signed:  # the job holds the grants now (with a key: they expire)
                    service.used_sign_ins(user, signed)
        if status >= 400:  # one error shape (a stored answer may predate it)
            message = str(answer.get("error", ""))
            answer = error_body(status, message, code="already_active", id=answer.get("id"))
        return JSONResponse(
            answer,
            status_code=status,
            headers={"Location": f"{API_PREFIX}/transfers/{answer['id']}"},
        )

    @router.get(
        "/transfers",
        response_model=TransferList,
        summary="List your transfers",
        responses={400: {"model": ErrorOut, "description": "A `cursor` this list did not give"}},
    )
    def list_transfers(
        user: User,
        status: Annotated[
            StatusName | None,
            Query(description="only transfers with this status"),
        ] = None,
        batch_id: Annotated[
            str | None,
            Query(
                min_length=1,
                max_length=32,
                pattern=r"^[A-Za-z0-9]+$",
                description="only the transfers of this batch",
            ),
        ] = None,
        since: Annotated[
            float | None,
            Query(
                allow_inf_nan=False, description="only transfers ordered at or after (unix time)"
            ),
        ] = None,
        before: Annotated[
            float | None,
            Query(allow_inf_nan=False, description="only transfers ordered before (unix time)"),
        ] = None,
        limit: Annotated[
            int, Query(ge=1, le=MAX_LIMIT, description="transfers per page")
        ] = DEFAULT_LIMIT,
        cursor: Annotated[
            str | None,
            Query(
                max_length=200,
                description="the `next_cursor` of the page before (opaque); none: the first page",
            ),
        ] = None,
        view: Annotated[
            Literal["summary", "full"],
            Query(
                description="`summary`: without each transfer's rate history and "
                "per-folder details; `full`: each transfer as `GET /api/v1/transfers/{id}`"
            ),
        ] = "summary",
    ) -> dict[str, Any]:
        """Newest first, a page at a time: follow `next_cursor` until it is null.  A
        cursor stays valid while transfers are ordered: newer ones do not shift the
        pages after it (they come on the first page)."""
        page = service.transfer_page(
            user,
            statuses=None if status is None else [status],
            batch_id=batch_id,
            since=since,
            before=before,
            cursor=cursor,
            limit=limit,
            full=view == "full",
        )
        return {
            "transfers": [public_view(v) for v in page.views],
            "next_cursor": page.next_cursor,
        }

    @router.get("/transfers/{job_id}", response_model=TransferOut, summary="Status and progress")
    def get_transfer(job_id: str, user: User) -> dict[str, Any]:
        data = public_view(service.get_transfer(user, check_job_id(job_id)))
        billing = getattr(service, "billing", None)  # (stand-in services have none)
        if billing is not None and billing.enabled:
            data["charge"] = billing.charge_of(user, data["id"])
        return data

    @router.post(
        "/transfers/{job_id}/cancel",
        response_model=TransferOut,
        summary="Cancel a queued or running transfer",
        responses={409: {"model": ErrorOut, "description": "Already finished"}},
    )
    def cancel_transfer(job_id: str, user: User) -> dict[str, Any]:
        """Stops the transfer cleanly: what was copied stays, a re-run completes it."""
        return public_view(service.cancel_transfer(user, check_job_id(job_id)))

    @router.post(
        "/transfers/{job_id}/rerun",
        response_model=TransferOut,
        summary="Run a finished transfer again",
        responses={409: {"model": ErrorOut, "description": "Still running, or passwords gone"}},
    )
    def rerun_transfer(job_id: str, user: User) -> dict[str, Any]:
        """Copies what is missing (new mail, failed messages); never doubles a message."""
        return public_view(service.rerun_transfer(user, check_job_id(job_id)))

    @router.post(
        "/transfers/{job_id}/final-pass",
        response_model=TransferOut,
        summary="Staged move: run the final pass now",
        responses={409: {"model": ErrorOut, "description": "No schedule still running"}},
    )
    def final_pass(job_id: str, user: User) -> dict[str, Any]:
        """After you switched the domain's MX: the final pass starts now (or right
        after the pass under way).  When it ends the transfer is done, no more top-ups
        run, and the stored passwords are deleted."""
        return public_view(service.final_pass(user, check_job_id(job_id)))

    @router.delete(
        "/transfers/{job_id}/schedule",
        response_model=TransferOut,
        summary="Staged move: cancel the schedule",
        responses={409: {"model": ErrorOut, "description": "No schedule still running"}},
    )
    def cancel_schedule(job_id: str, user: User) -> dict[str, Any]:
        """No more top-ups and no final pass; what was copied stays.  The stored
        passwords are deleted now (or when the pass under way ends)."""
        return public_view(service.cancel_schedule(user, check_job_id(job_id)))

    @router.put(
        "/transfers/{job_id}/credentials",
        response_model=TransferOut,
        summary="New passwords for a stopped transfer, then resume it",
        responses={
            400: {"model": ErrorOut, "description": "No password given"},
            409: {
                "model": ErrorOut,
                "description": "Not failed or cancelled, a side that signs in with OAuth2 "
                "(sign in again instead), or the stored passwords were deleted and only "
                "one side was given",
            },
            422: {
                "model": CredentialsRefusedOut,
                "description": "Invalid body (`error` names the field), or a new password "
                "that did not pass the check (refused by the server, server unreachable): "
                "nothing was stored; `kind` and `detail` say why",
            },
            429: {"model": ErrorOut, "description": "Too many account checks under way"},
        },
    )
    async def update_credentials(
        job_id: str, body: CredentialsIn, user: User
    ) -> dict[str, Any] | JSONResponse:
        """Replaces the password of `source`, `dest` or both of a failed or cancelled
        transfer.  Only the password changes: host, port, security and user name stay the
        order's (the transfer's state belongs to those two mailboxes; another account is
        another transfer).  Each new password is checked on the spot first; a refused one
        answers 422 and nothing is stored.  Then, unless `resume` is false, the transfer
        runs again and continues where it stopped: nothing is copied twice."""
        passwords = {
            side: pw.password
            for side, pw in (("source", body.source), ("dest", body.dest))
            if pw is not None
        }
        try:
            view = await service.update_credentials(
                user, check_job_id(job_id), passwords, resume=body.resume
            )
        except CredentialsRefused as exc:
            body = error_body(
                422, str(exc), code="credentials_refused", kind=exc.kind, detail=exc.detail
            )
            return JSONResponse(body, status_code=422)
        return public_view(view)

    @router.get(
        "/transfers/{job_id}/report",
        summary="The final report",
        responses={
            404: {
                "model": ErrorOut,
                "description": "No such transfer (or not yours), or no report yet: the "
                "transfer has not run (the report of the latest run, once there is one)",
            }
        },
    )
    def report(job_id: str, user: User) -> dict[str, Any]:
        """Per folder: counts, source UID → destination UID; per failed message: folder,
        UID, size, Message-ID and the server's words (same shape as `yippiemove move
        --report`)."""
        return service.report(user, check_job_id(job_id))

    @router.get(
        "/transfers/{job_id}/receipt",
        summary="Download the job's state database (receipt)",
        response_class=FileResponse,
        responses={
            200: {"content": {"application/vnd.sqlite3": {}}},
            404: {
                "model": ErrorOut,
                "description": "No such transfer (or not yours), or no receipt yet: the "
                "transfer has not started",
            },
        },
    )
    async def receipt(job_id: str, user: User) -> FileResponse:
        """The sqlite3 database of the mover's state: every message's source UID, size,
        SHA-256 and destination UID.  No message bodies, no passwords."""
        path = await run_in_threadpool(service.state_file, user, check_job_id(job_id))
        if not Path(path).is_file():
            raise HTTPException(404, "no receipt yet: the transfer has not started")
        return await run_in_threadpool(receipt_response, Path(path), job_id)

    from .reports_api import add_report_api  # (it uses this module's helpers)

    add_report_api(router, service, User, ErrorOut)  # messages, undo (web/reports_api.py)
    from .account_api import add_account_api

    add_account_api(router, service, User, ErrorOut)  # issue 17 (web/account_api.py)

    from .parity_api import add_parity_api

    add_parity_api(router, service, User)  # checks, listings, tokens (web/parity_api.py)

    from .batches_api import add_batch_api

    add_batch_api(router, service, User, ErrorOut)  # batches (issue 17, web/batches_api.py)

    from .operator_api import add_operator_api

    add_operator_api(router, service, User, ErrorOut)  # issue 17: operators only

    from .billing_api import add_billing_api

    add_billing_api(router, service, User, ErrorOut)  # issue 20 (web/billing_api.py)

    # -- domain-wide moves (issue 16) -----------------------------------------------

    @router.post(
        "/domain-credentials",
        response_model=DomainCredentialOut,
        status_code=201,
        summary="Store an admin credential for domain-wide moves",
        responses={400: {"model": ErrorOut, "description": "Not a usable key or application"}},
    )
    def add_domain_credential(body: DomainCredentialIn, user: User) -> dict[str, Any]:
        """A Google Workspace service account key (domain-wide delegation of the IMAP
        scope) or a Microsoft 365 application (client credentials, `IMAP.AccessAsApp`).
        Stored encrypted; no response ever contains the key or the secret."""
        data = body.model_dump(mode="json", exclude_none=True)
        return service.add_domain_credential(user, data)

    @router.get(
        "/domain-credentials",
        response_model=DomainCredentialList,
        summary="List your domain credentials",
    )
    def list_domain_credentials(user: User) -> dict[str, Any]:
        return {"credentials": service.list_domain_credentials(user)}

    @router.delete(
        "/domain-credentials/{credential_id}",
        status_code=204,
        summary="Delete a domain credential (and its secret)",
        responses={404: {"model": ErrorOut, "description": "No such credential (or not yours)"}},
    )
    def delete_domain_credential(credential_id: str, user: User) -> Response:
        """Transfers made with it keep their own per-mailbox grant until they end."""
        service.delete_domain_credential(user, credential_id)
        return Response(status_code=204)

    @router.post(
        "/domain-batches",
        response_model=DomainBatchOut,
        summary="Move a whole domain from a list of addresses",
        responses={
            202: {
                "model": BatchOut,
                "description": "`wait: false`: the batch, its lines being checked",
            },
            400: {"model": ErrorOut, "description": "A malformed batch"},
            404: {"model": ErrorOut, "description": "No such credential (or not yours)"},
        },
    )
    async def create_domain_batch(body: DomainBatchIn, user: User) -> Any:
        """One transfer per address, each signing in with its own grant made from the
        source's domain credential (and the destination's, or the passwords given per
        user).  With `check` (the default) every mailbox is signed in to on both sides
        before anything starts; the lines that fail are listed in `errors` as
        `line N: ADDRESS: why` and not started."""
        data = body.model_dump(mode="json", exclude_none=True)
        check = bool(data.pop("check", True))
        wait = bool(data.pop("wait", True))
        if not wait:  # issue 17: a batch, checked in the background
            view = await service.create_domain_batch(user, data, check=check, wait=False)
            return JSONResponse(BatchOut.model_validate(view).model_dump(mode="json"), 202)
        return await service.create_domain_batch(user, data, check=check)

    # -- OAuth2 sign-ins (issue 16) ------------------------------------------------------

    @router.post(
        "/oauth/{provider}/authorizations",
        status_code=201,
        response_model=AuthorizationStarted,
        summary="Start an OAuth2 sign-in (Google, Microsoft)",
        tags=["oauth"],
        responses={404: {"model": ErrorOut, "description": "No such provider (or transfer)"}},
    )
    def start_authorization(
        provider: str, user: User, body: AuthorizationIn | None = None
    ) -> dict[str, Any]:
        """Send the user's browser to `authorization_url`: they sign in at the provider,
        which sends them back to this service; the service checks the mailbox and the
        authorization becomes `done` (poll `GET /api/v1/oauth/authorizations/{id}`).
        Then order with `{"authorization": ID}` in place of an account.  The grant stays
        on the service, encrypted; no response ever contains a token.

        With `transfer` and `side`: a new sign-in for that transfer (after `error_code`
        `reauth`, or a forgotten sign-in); once done the transfer resumes."""
        body = body or AuthorizationIn()
        purpose, job_id = "api", None
        if body.transfer is not None or body.side is not None:
            if body.transfer is None or body.side is None:
                raise HTTPException(422, "transfer and side: give both or neither")
            view = service.get_transfer(user, check_job_id(body.transfer))
            account = view.source if body.side == "source" else view.dest
            if account.get("oauth_provider") != provider:
                raise HTTPException(
                    422, f"side: this transfer's {body.side} does not sign in with {provider}"
                )
            purpose, job_id = "reauth", view.id
        sid, url = service.begin_sign_in(
            user,
            provider,
            str(service.settings.base_url).rstrip("/") + "/oauth/callback",
            purpose=purpose,
            side=body.side or "",
            job_id=job_id,
            login_hint=body.login_hint,
        )
        view = service.sign_in_view(user, sid)
        return {"id": sid, "authorization_url": url, "expires": view["expires"]}

    @router.get(
        "/oauth/authorizations/{authorization_id}",
        response_model=AuthorizationOut,
        summary="An OAuth2 sign-in's status, and its account once done",
        tags=["oauth"],
        responses={404: {"model": ErrorOut, "description": "No such authorization"}},
    )
    def get_authorization(authorization_id: str, user: User) -> dict[str, Any]:
        return service.sign_in_view(user, authorization_id)

    @router.delete(
        "/oauth/authorizations/{authorization_id}",
        status_code=204,
        summary="Forget an OAuth2 sign-in that no order used",
        tags=["oauth"],
        responses={404: {"model": ErrorOut, "description": "No such authorization"}},
    )
    async def delete_authorization(authorization_id: str, user: User) -> Response:
        """Revokes the grant at the provider (best effort) and deletes it."""
        await service.forget_sign_in(user, authorization_id)
        return Response(status_code=204)

    @router.delete(
        "/transfers/{job_id}/sign-in",
        response_model=TransferOut,
        summary="Forget a transfer's OAuth2 sign-in",
        tags=["oauth"],
        responses={409: {"model": ErrorOut, "description": "The transfer has no sign-in"}},
    )
    async def forget_transfer_sign_in(job_id: str, user: User) -> dict[str, Any]:
        """Revokes the grants at the providers (best effort) and deletes them from the
        transfer: it cannot run again until a new sign-in (`sign_in_needed`)."""
        return public_view(await service.forget_job_sign_in(user, check_job_id(job_id)))

    return router
