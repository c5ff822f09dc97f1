"""What the web does that the REST API did not (issue 17, parity): check an account,
list its folders as the transfer would plan them, delete a transfer's stored
passwords, and manage the API tokens.  The table of every capability and its twin is
in docs/api.md; tests/web/test_api_contract.py keeps both sides of it.

No ``from __future__ import annotations``: FastAPI reads the annotations at runtime.
"""

from typing import TYPE_CHECKING, Any, Literal

from fastapi import APIRouter, Response
from pydantic import BaseModel, ConfigDict, Field
from starlette.exceptions import HTTPException

from yippiemove.service.listing import account_check, folder_listing

from .schemas import AnyAccountIn, ErrorOut, FailureOut, FoldersIn, TransferOut

if TYPE_CHECKING:
    from yippiemove.service.core import Service

__all__ = ["add_parity_api"]

_REFUSED = {
    "model": ErrorOut,
    "description": "Refused by policy: the service may not connect there (the egress "
    "policy), plain text to a remote host, or the same account twice",
}
_BUSY = {"model": ErrorOut, "description": "Too many account checks under way: try later"}
_NO_SIGN_IN = {"model": ErrorOut, "description": "No such authorization (or not yours)"}


class AccountCheckIn(BaseModel):
    """An account to check: log in and list its folders (nothing is changed on it)."""

    model_config = ConfigDict(extra="forbid")

    account: AnyAccountIn
    side: Literal["source", "dest"] = Field(
        "source", description="which side of a transfer it is meant for (the words only)"
    )


class AccountCheckOut(BaseModel):
    ok: bool = Field(description="the server let us in and listed the folders")
    folders: int | None = Field(None, description="how many folders (ok only)")
    messages: int | None = Field(None, description="messages in them (ok only)")
    bytes: int | None = Field(None, description="their size in bytes (ok only)")
    failure: FailureOut | None = Field(
        None,
        description="why not, in plain words (`kind` auth, unreachable, tls...; `detail` "
        "the check's own sentence); null when ok",
    )


class FolderListingIn(BaseModel):
    """The source's folders as a transfer to `dest` with `folders` would plan them."""

    model_config = ConfigDict(extra="forbid")

    source: AnyAccountIn
    dest: AnyAccountIn | None = Field(
        None,
        description="with it: each folder's name at the destination (its namespace and "
        "separator, as the transfer will write it); without it the names are the source's",
    )
    folders: FoldersIn | None = Field(
        None,
        description="an order's `folders`: its rules (rename, under...) give the "
        "destination names, its filters (since, larger...) the counts, and its "
        "include/exclude each folder's `selected`",
    )


class ListedFolderOut(BaseModel):
    name: str = Field(description="the folder's name on the source")
    messages: int = Field(description="messages to copy (after the message filters)")
    bytes: int = Field(description="their size in bytes")
    dest_name: str = Field(description="where it goes (see `dest`)")
    selected_by_default: bool = Field(
        description="what the web ticks by default (not junk or trash)"
    )
    selected: bool | None = Field(
        None, description="chosen by the request's `folders` include/exclude (null without)"
    )
    reasons: list[str] = Field(description="why `dest_name` is what it is, when it differs")


class FolderListingOut(BaseModel):
    ok: bool
    folders: list[ListedFolderOut]
    failure: FailureOut | None = Field(None, description="as in the account check")


class TokenIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field("API token", min_length=1, max_length=100, pattern=r"^[^\x00-\x1f\x7f]+$")


class TokenOut(BaseModel):
    id: int
    name: str
    created: float | None = None
    last_used: float | None = Field(None, description="unix time, to the minute; null: never")


class TokenCreated(TokenOut):
    token: str = Field(
        description="the secret: shown in this answer only (the service keeps a hash)"
    )


class TokenList(BaseModel):
    tokens: list[TokenOut]


def add_parity_api(router: APIRouter, service: "Service", User: Any) -> None:
    """The routes, on the API's router (``User``: its token dependency)."""
    from .api import check_job_id, public_view, to_account

    @router.post(
        "/account-checks",
        response_model=AccountCheckOut,
        summary="Check an account: log in and list its folders",
        tags=["accounts"],
        responses={400: _REFUSED, 404: _NO_SIGN_IN, 429: _BUSY},
    )
    async def check_account(body: AccountCheckIn, user: User) -> dict[str, Any]:
        """What the web's order steps do before going on: the server is asked, and the
        answer is `ok`, or a `failure` in plain words (wrong password, server not
        reachable, TLS problem...).  Nothing is stored; the password is used for this
        check only.  At most a few checks per customer at a time (429 beyond)."""
        account = to_account(body.account, service, user, body.side)
        return await account_check(service, user, account, body.side)

    @router.post(
        "/folder-listings",
        response_model=FolderListingOut,
        summary="List an account's folders as a transfer would plan them",
        tags=["accounts"],
        responses={400: _REFUSED, 404: _NO_SIGN_IN, 429: _BUSY},
    )
    async def list_folders(body: FolderListingIn, user: User) -> dict[str, Any]:
        """The web's folder step as data: every folder of `source` with its messages,
        size and name at `dest`, after the rules and filters of `folders`.  A failed
        login on either side is `ok` false with `failure` (its `side` says which)."""
        source = to_account(body.source, service, user, "source")
        dest = to_account(body.dest, service, user, "dest") if body.dest is not None else None
        folders = body.folders.model_dump(mode="json") if body.folders is not None else None
        return await folder_listing(service, user, source, dest, folders)

    @router.delete(
        "/transfers/{job_id}/credentials",
        response_model=TransferOut,
        summary="Delete a transfer's stored passwords now",
        responses={409: {"model": ErrorOut, "description": "Still queued or running"}},
    )
    def forget_credentials(job_id: str, user: User) -> dict[str, Any]:
        """The web's "Delete the passwords now": an ended transfer's stored passwords
        are wiped at once (not after the retention time); it cannot run again until new
        ones are given (`PUT /api/v1/transfers/{id}/credentials`, both sides)."""
        return public_view(service.forget_credentials(user, check_job_id(job_id)))

    @router.get(
        "/tokens", response_model=TokenList, summary="List your API tokens", tags=["tokens"]
    )
    def list_tokens(user: User) -> dict[str, Any]:
        """Newest first; never a token's secret (only its name and id)."""
        tokens = sorted(service.list_tokens(user), key=lambda t: -(t.get("created") or 0))
        return {"tokens": tokens}

    @router.post(
        "/tokens",
        status_code=201,
        response_model=TokenCreated,
        summary="Create an API token",
        tags=["tokens"],
    )
    def create_token(user: User, body: TokenIn | None = None) -> dict[str, Any]:
        """A new token for the same customer: its secret is in this answer and never
        again (keep it; lost, revoke it and make another)."""
        return service.create_token_view(user, (body or TokenIn()).name)

    @router.delete(
        "/tokens/{token_id}",
        status_code=204,
        summary="Revoke an API token",
        tags=["tokens"],
        responses={404: {"model": ErrorOut, "description": "No such token (or not yours)"}},
    )
    def revoke_token(token_id: str, user: User) -> Response:
        """Programs using it are refused from the next request on (also this token
        itself, when it revokes itself)."""
        if not (token_id.isascii() and token_id.isdigit()) or len(token_id) > 18:
            raise HTTPException(404, "no such token")
        service.revoke_token(user, int(token_id))
        return Response(status_code=204)
