"""The account pages (issue 17, service/account.py): forgot password, reset from the
mailed link, the account page (address, change of address, delete), the new address's
confirmation.  Forms carry the session's CSRF token like every other; a mailed link's
GET only shows a button (mail scanners open links), the POST uses it."""

from __future__ import annotations

import logging
import re
from typing import TYPE_CHECKING, Any

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from starlette.exceptions import HTTPException

from yippiemove.service.account import LinkRefused
from yippiemove.service.core import (
    Conflict,
    ServiceError,
    TooManyAttempts,
    WrongPassword,
)
from yippiemove.service.passwords import MIN_LENGTH, password_problem

if TYPE_CHECKING:
    from .pages import Pages

__all__ = ["add_routes"]

#: What a mailed link that does not work says, by why (LinkRefused.state).
LINK_TEXT = {
    "used": "This link was used already: it works once.",
    "expired": "This link is too old: it works for a limited time only.",
    "unknown": "This link is not valid: it may have been cut short or mistyped.",
    "taken": "This address belongs to another account by now: nothing was changed.",
}


def _field_error(exc: ServiceError) -> tuple[str, str]:
    field, _sep, text = str(exc).partition(": ")
    if not text:
        return "", str(exc)
    return field, text[:1].upper() + text[1:] + "."


def add_routes(r: APIRouter, p: Pages) -> None:
    from .pages import flash

    svc: Any = p.service
    html = {"response_class": HTMLResponse}
    redact_access_log()

    def need(name: str) -> Any:
        """The service's method (the web front door also runs over stand-ins)."""
        fn = getattr(svc, name, None)
        if fn is None:
            raise HTTPException(404, "not available")
        return fn

    def mail() -> bool:
        return bool(getattr(svc, "signup_by_mail", False))

    # -- forgot password ----------------------------------------------------------------

    async def forgot_page(request: Request) -> Response:
        return p.render(request, "forgot.html", email="", errors={}, mail=mail())

    async def forgot(request: Request) -> Response:
        form = await p.form(request)
        email = str(form.get("email", "")).strip()[:320]
        if not mail():
            return p.render(request, "forgot.html", 400, email=email, errors={}, mail=False)
        if not email:
            errors = {"email": "Enter your e-mail address, like you@example.org."}
            return p.render(request, "forgot.html", 400, email=email, errors=errors, mail=True)
        try:
            await p.call(need("request_password_reset"), email, p.client(request))
        except TooManyAttempts as exc:
            errors = {"email": f"Too many requests from your network. {_wait(exc)}"}
            return p.render(request, "forgot.html", 429, email=email, errors=errors, mail=True)
        seconds = getattr(svc.settings, "password_reset_seconds", 3600.0)
        minutes = max(1, round(seconds / 60))
        return p.render(request, "forgot_sent.html", email=email, minutes=minutes)

    async def reset_page(request: Request) -> Response:
        token = str(request.query_params.get("token", ""))[:200]
        state = await p.call(need("link_state"), token, "reset")
        return _reset(request, token if state == "valid" else "", state, {})

    def _reset(request: Request, token: str, state: str, errors: dict[str, str]) -> Response:
        status = 200 if state == "valid" and not errors else 400
        return p.render(
            request,
            "reset.html",
            status,
            token=token,
            state=state,
            problem=LINK_TEXT.get(state, ""),
            errors=errors,
            min_length=MIN_LENGTH,
        )

    async def reset(request: Request) -> Response:
        form = await p.form(request)
        token = str(form.get("token", ""))[:200]
        new = str(form.get("password", ""))[:1024]
        errors: dict[str, str] = {}
        problem = password_problem(new)
        if problem:
            errors["password"] = f"The password {problem}."
        elif new != str(form.get("password2", ""))[:1024]:
            errors["password2"] = "The two passwords are not the same."
        if errors:
            state = await p.call(need("link_state"), token, "reset")
            return _reset(request, token if state == "valid" else "", state, errors)
        try:
            await p.call(need("reset_password"), token, new)
        except LinkRefused as exc:
            return _reset(request, "", exc.state, {})
        except ServiceError as exc:
            return _reset(request, token, "valid", {"password": _field_error(exc)[1]})
        request.session.clear()
        flash(
            request, "Your new password is set, and every session was logged out. Log in with it."
        )
        return RedirectResponse("/login", 303)

    # -- the account page ---------------------------------------------------------------

    async def account_page(request: Request, status: int = 200, **context: Any) -> Response:
        uid = await p.user(request)
        info = await p.call(need("account_info"), uid)
        context.setdefault("errors", {})
        context.setdefault("new_email", "")
        return p.render(request, "account.html", status, account=info, mail=mail(), **context)

    async def account(request: Request) -> Response:
        return await account_page(request)

    async def email_change(request: Request) -> Response:
        uid = await p.user(request)
        form = await p.form(request)
        new = str(form.get("email", "")).strip()[:320]
        password = str(form.get("password", ""))[:1024]
        try:
            done = await p.call(need("request_email_change"), uid, password, new, p.client(request))
        except TooManyAttempts as exc:
            errors = {"email_password": f"Too many failed attempts. {_wait(exc)}"}
            return await account_page(request, 429, errors=errors, new_email=new)
        except WrongPassword:
            errors = {"email_password": "That is not your password."}
            return await account_page(request, 403, errors=errors, new_email=new)
        except (Conflict, ServiceError) as exc:
            _field, text = _field_error(exc)
            return await account_page(request, 400, errors={"email": text}, new_email=new)
        if done == "changed":
            flash(request, f"Your account's address is now {new}.")
        else:
            flash(
                request,
                f"We sent a link to {new}. Your address changes when you open it; "
                "until then it stays as it is.",
            )
        return RedirectResponse("/account", 303)

    async def email_confirm_page(request: Request) -> Response:
        token = str(request.query_params.get("token", ""))[:200]
        state = await p.call(need("link_state"), token, "email")
        return p.render(
            request,
            "email_confirm.html",
            200 if state == "valid" else 400,
            token=token if state == "valid" else "",
            problem=LINK_TEXT.get(state, ""),
        )

    async def email_confirm(request: Request) -> Response:
        form = await p.form(request)
        token = str(form.get("token", ""))[:200]
        try:
            await p.call(need("confirm_email_change"), token)
        except LinkRefused as exc:
            problem = LINK_TEXT.get(exc.state, LINK_TEXT["unknown"])
            return p.render(request, "email_confirm.html", 400, token="", problem=problem)
        flash(request, "Your new address is confirmed: log in with it from now on.")
        logged_in = isinstance(request.session.get("uid"), int)
        return RedirectResponse("/account" if logged_in else "/login", 303)

    async def delete_account(request: Request) -> Response:
        uid = await p.user(request)
        form = await p.form(request)
        password = str(form.get("password", ""))[:1024]
        if form.get("confirm") != "yes":
            errors = {"confirm": "Tick the box to say you mean it."}
            return await account_page(request, 400, errors=errors)
        try:
            await p.call(need("delete_account"), uid, password, p.client(request))
        except TooManyAttempts as exc:
            errors = {"delete_password": f"Too many failed attempts. {_wait(exc)}"}
            return await account_page(request, 429, errors=errors)
        except WrongPassword:
            errors = {"delete_password": "That is not your password: nothing was deleted."}
            return await account_page(request, 403, errors=errors)
        except Conflict as exc:  # a job still stopping: sessions and tokens are gone
            request.session.clear()
            flash(request, f"Not finished: {exc}. Log in and delete the account again.", "error")
            return RedirectResponse("/login", 303)
        request.session.clear()
        flash(request, "Your account and all its data are deleted. Goodbye!")
        return RedirectResponse("/", 303)

    r.add_api_route("/password/forgot", forgot_page, methods=["GET"], **html)
    r.add_api_route("/password/forgot", forgot, methods=["POST"], **html)
    r.add_api_route("/password/reset", reset_page, methods=["GET"], **html)
    r.add_api_route("/password/reset", reset, methods=["POST"], **html)
    r.add_api_route("/account", account, methods=["GET"], **html)
    r.add_api_route("/account/email", email_change, methods=["POST"], **html)
    r.add_api_route("/account/email/confirm", email_confirm_page, methods=["GET"], **html)
    r.add_api_route("/account/email/confirm", email_confirm, methods=["POST"], **html)
    r.add_api_route("/account/delete", delete_account, methods=["POST"], **html)


_TOKEN_QUERY = re.compile(r"([?&]token=)[^&\s]*")


class RedactLinkTokens(logging.Filter):
    """The mailed links' tokens (``?token=``: password reset, new address, sign-up) are
    secrets: the web server's access lines show ``token=<redacted>`` instead."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple) and any(
            isinstance(a, str) and "token=" in a for a in record.args
        ):
            record.args = tuple(
                _TOKEN_QUERY.sub(r"\1<redacted>", a) if isinstance(a, str) else a
                for a in record.args
            )
        elif isinstance(record.msg, str) and "token=" in record.msg:
            record.msg = _TOKEN_QUERY.sub(r"\1<redacted>", record.msg)
        return True


def redact_access_log() -> None:
    """Install :class:`RedactLinkTokens` on uvicorn's access logger (once)."""
    logger = logging.getLogger("uvicorn.access")
    if not any(isinstance(f, RedactLinkTokens) for f in logger.filters):
        logger.addFilter(RedactLinkTokens())


def _wait(exc: TooManyAttempts) -> str:
    minutes = int(exc.wait // 60) + 1
    return f"Try again in {minutes} minute{'s' if minutes != 1 else ''}."
