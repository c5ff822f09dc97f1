"""The REST routes of the customer's own account (issue 17, service/account.py): read
it, change its password or address, delete it; and the public "forgot password".

No ``from __future__ import annotations`` here: FastAPI reads the endpoint annotations
(the API's ``User`` dependency, passed in) at runtime.
"""

from typing import TYPE_CHECKING, Any

from fastapi import APIRouter, Request, Response
from pydantic import BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool

from yippiemove.service.auth import client_key

from .sessions import client_host

if TYPE_CHECKING:
    from yippiemove.service.core import Service

__all__ = ["add_account_api"]


class CustomerOut(BaseModel):
    id: int
    email: str = Field(description="the address the customer logs in with")
    created: float = Field(description="Unix time the account was made")
    timezone: str | None = Field(description="IANA time zone of times in mails (None: UTC)")
    pending_email: str | None = Field(
        description="a new address waiting for its confirmation link to be opened"
    )


class PasswordChangeIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    current_password: str = Field(max_length=1024)
    new_password: str = Field(max_length=1024, description="at least 12 characters, not common")


class EmailChangeIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    email: str = Field(max_length=320, description="the new address")
    password: str = Field(max_length=1024, description="the account's password (asked again)")


class EmailChangeOut(BaseModel):
    status: str = Field(
        description="`sent`: a link went to the new address, which becomes the account's "
        "when it is opened (the old address stays until then and is told after); "
        "`changed`: the service sends no mail and changed it at once"
    )


class AccountDeleteIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    password: str = Field(max_length=1024, description="the account's password (asked again)")


class PasswordResetIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    email: str = Field(max_length=320)


class PasswordResetOut(BaseModel):
    status: str = Field(description="always `accepted`, whether the address has an account or not")
    message: str


def add_account_api(router: APIRouter, service: "Service", user_dep: Any, errors: Any) -> None:
    """The routes, registered on the API router (``user_dep``: its bearer-token user
    dependency; ``errors``: the error model)."""
    svc: Any = service

    def client(request: Request) -> str:
        return client_key(client_host(request.scope, request.app.state.trust_proxy))

    wrong = {"model": errors, "description": "The password is not right"}
    slow = {"model": errors, "description": "Too many wrong passwords lately: wait"}

    @router.get("/account", response_model=CustomerOut, tags=["account"], summary="Your account")
    def get_account(user: user_dep) -> dict[str, Any]:
        return dict(svc.account_info(user))

    @router.put(
        "/account/password",
        status_code=204,
        tags=["account"],
        summary="Change your password",
        responses={
            204: {"description": "Changed; every web session of the account is logged out"},
            400: {"model": errors, "description": "The new password is refused (too short...)"},
            403: wrong,
            429: slow,
        },
    )
    def change_password(body: PasswordChangeIn, user: user_dep, request: Request) -> Response:
        """The current password is asked again.  API tokens keep working."""
        svc.change_password_checked(user, body.current_password, body.new_password, client(request))
        return Response(status_code=204)

    @router.post(
        "/account/email",
        status_code=202,
        response_model=EmailChangeOut,
        tags=["account"],
        summary="Change your e-mail address (a link confirms it)",
        responses={
            400: {"model": errors, "description": "Not an address, or yours already"},
            403: wrong,
            409: {"model": errors, "description": "No mail service and the address is taken"},
            429: slow,
        },
    )
    def change_email(body: EmailChangeIn, user: user_dep, request: Request) -> dict[str, str]:
        """A link goes to the new address; until it is opened the account keeps its
        address.  An address that is another account's gets a note instead, and the
        answer here is the same (no one learns whose address it is)."""
        return {
            "status": svc.request_email_change(user, body.password, body.email, client(request))
        }

    @router.delete(
        "/account",
        status_code=204,
        tags=["account"],
        summary="Delete your account and everything of it",
        responses={
            204: {"description": "Deleted; the token used is revoked with the rest"},
            403: wrong,
            409: {"model": errors, "description": "A transfer is still stopping: try again"},
            429: slow,
        },
    )
    def delete_account(body: AccountDeleteIn, user: user_dep, request: Request) -> Response:
        """Running transfers are stopped, then the transfers, their reports and receipts,
        stored passwords, sign-ins, domain credentials, API tokens, web sessions and the
        account are deleted.  Messages already copied stay in the destinations."""
        svc.delete_account(user, body.password, client(request))
        return Response(status_code=204)

    @router.post(
        "/password-resets",
        status_code=202,
        response_model=PasswordResetOut,
        tags=["account"],
        summary="Forgot password: mail a reset link (no token needed)",
        responses={
            429: {"model": errors, "description": "Too many requests from this client"},
            503: {"model": errors, "description": "The service sends no mail"},
        },
        openapi_extra={"security": []},
    )
    async def password_reset(body: PasswordResetIn, request: Request) -> dict[str, str]:
        """The same answer whether the address has an account or not.  The mailed link
        opens the web page that sets the new password (it works once, for
        `password_reset_seconds`)."""
        if not svc.notifier.enabled:
            from starlette.exceptions import HTTPException

            raise HTTPException(503, "this service sends no mail: ask its operator")
        await run_in_threadpool(svc.request_password_reset, body.email, client(request))
        return {
            "status": "accepted",
            "message": "if the address is an account's, a link to reset its password is on its way",
        }
