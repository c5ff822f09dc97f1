"""The web side of "Sign in with Google / Microsoft" (issue 16): the order's sign-in
buttons, the provider's way back (``/oauth/callback``), "sign in again" and "forget my
sign-in" on the job page.  The flow and its rules are the service's (service/signin.py);
this module only takes the browser there and back.

The provider sends the browser back with a top-level GET: the session cookie
(``SameSite=Lax``) comes along, and the sign-in must belong to that session (a nonce in
it, hashed in the sign-in's row), so a sign-in link planted on a customer does nothing.
"""

from __future__ import annotations

import logging
import secrets
from typing import TYPE_CHECKING, Any

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from starlette.datastructures import FormData

from yippiemove.service.core import NotFound, ServiceError

from .api import check_job_id
from .forms import AccountForm, folders_to_plan, parse_plan

if TYPE_CHECKING:
    from yippiemove.service.signin import SignIn

    from .pages import Pages

log = logging.getLogger("yippiemove.web")

#: Where providers send the browser back (registered with them: docs/providers.md).
CALLBACK_PATH = "/oauth/callback"
#: Largest order form kept while the customer is at the provider (the folder list).
MAX_FORM = 4 * 1024 * 1024
_SIDES = {"source": "source", "dest": "destination"}


class HideCallbackQuery(logging.Filter):
    """The web server's access log without the provider's answer: ``/oauth/callback``'s
    query holds the authorization code and the state (secrets, if short-lived ones)."""

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        if isinstance(args, tuple) and len(args) >= 3 and isinstance(args[2], str):
            if args[2].startswith(CALLBACK_PATH + "?"):
                record.args = (*args[:2], CALLBACK_PATH + "?(hidden)", *args[3:])
        return True


def hide_callback_queries() -> None:
    """Install :class:`HideCallbackQuery` on uvicorn's access log (once)."""
    access = logging.getLogger("uvicorn.access")
    if not any(isinstance(f, HideCallbackQuery) for f in access.filters):
        access.addFilter(HideCallbackQuery())


def callback_url(service: Any) -> str:
    """The redirect URI: the service's public address (``base_url``) + the callback."""
    return str(service.settings.base_url).rstrip("/") + CALLBACK_PATH


def session_nonce(request: Request) -> str:
    """The nonce that binds a sign-in to this browser session (made on first use)."""
    nonce = request.session.get("oauth_nonce")
    if not isinstance(nonce, str) or len(nonce) < 20:
        nonce = secrets.token_urlsafe(24)
        request.session["oauth_nonce"] = nonce
    return nonce


def _flash(request: Request, text: str, kind: str = "ok") -> None:
    request.session.setdefault("flash", []).append([kind, text])


class SignInPages:
    """The sign-in routes; uses the order pages' helpers (:class:`~.pages.Pages`)."""

    def __init__(self, pages: Pages) -> None:
        self.pages = pages
        self.service = pages.service

    def add_routes(self, r: APIRouter) -> None:
        html = {"response_class": HTMLResponse}
        r.add_api_route(CALLBACK_PATH, self.callback, methods=["GET"], **html)
        r.add_api_route("/transfers/{job_id}/sign-in", self.job_sign_in, methods=["POST"])
        r.add_api_route("/transfers/{job_id}/forget-sign-in", self.job_forget, methods=["POST"])

    # ------------------------------------------------------------ the order's buttons

    async def start_order(
        self, request: Request, uid: int, form: FormData, action: str
    ) -> Response:
        """``action`` ``oauth_SIDE_PROVIDER``: keep the order form (encrypted, on the
        server) and send the browser to the provider."""
        _, _, rest = action.partition("_")
        side, _, provider = rest.partition("_")
        if side not in _SIDES or not provider:
            raise NotFound("no such sign-in")
        kept: dict[str, str] = {}
        size = 0
        for key, value in form.multi_items():
            if key in ("csrf_token", "action") or not isinstance(value, str):
                continue
            if key == "folder":  # the ticks of the last step are not needed
                continue
            size += len(key) + len(value)
            kept[key] = value
        if size > MAX_FORM:
            kept.pop("plan", None)
        # The side being signed in starts afresh (no old password carried along).
        for key in [k for k in kept if k.startswith(side + "_")]:
            kept.pop(key)
        try:
            _sid, url = await self.pages.call(
                lambda: self.service.begin_sign_in(
                    uid,
                    provider,
                    callback_url(self.service),
                    purpose="order",
                    side=side,
                    binding=session_nonce(request),
                    form=kept,
                )
            )
        except ServiceError as exc:
            src = AccountForm.from_form(form, "source")
            dst = AccountForm.from_form(form, "dest")
            plan = parse_plan(form.get("plan"))
            step = "dest" if side == "dest" and plan is not None else "source"
            return self.pages._wizard(
                request, step, src, dst, plan, status=400, error=f"Could not sign in: {exc}"
            )
        return RedirectResponse(url, 303)

    # ------------------------------------------------------------ the way back

    async def callback(self, request: Request) -> Response:
        """The provider's answer: redeem it, check the account on the spot, go on."""
        from yippiemove.service.signin import SignInError

        q = request.query_params
        nonce = request.session.get("oauth_nonce")
        try:
            sign_in = await self.service.redeem_sign_in(
                q.get("state"),
                code=q.get("code"),
                error=q.get("error"),
                binding=nonce if isinstance(nonce, str) else None,
            )
        except SignInError as exc:
            return await self._failed(request, str(exc), exc.row)
        if sign_in.bound and request.session.get("uid") == sign_in.user_id:
            await self.pages.user(request)  # the page's header names the customer
        if sign_in.bound and request.session.get("uid") != sign_in.user_id:
            # Bound to this session, but another customer logged in since: not theirs.
            await self.service.drop_sign_in(sign_in, "another customer is logged in")
            return self.pages.render(
                request,
                "signed_in.html",
                400,
                ok=False,
                message="This sign-in was started by another account. Log in again and "
                "start the sign-in again.",
                address=None,
            )
        if sign_in.purpose == "order" and sign_in.bound:
            return await self._order(request, sign_in)
        if sign_in.purpose == "reauth":
            return await self._reauth(request, sign_in)
        return await self._api(request, sign_in)

    async def _failed(self, request: Request, message: str, row: dict[str, Any]) -> Response:
        """Nothing was stored: back where the customer was, saying why."""
        purpose = row.get("purpose")
        uid = request.session.get("uid")
        if purpose == "order" and isinstance(uid, int) and uid == row.get("user_id"):
            form = row.get("form") or {}
            src = AccountForm.from_form(form, "source")
            dst = AccountForm.from_form(form, "dest")
            plan = parse_plan(form.get("plan"))
            step = "dest" if row.get("side") == "dest" and plan is not None else "source"
            return self.pages._wizard(request, step, src, dst, plan, status=400, error=message)
        if purpose == "reauth" and row.get("job_id") and isinstance(uid, int):
            _flash(request, message, "error")
            return RedirectResponse(f"/transfers/{row['job_id']}", 303)
        if isinstance(uid, int) and purpose != "api":
            await self.pages.user(request)
            return self.pages._wizard(
                request, "source", AccountForm(), AccountForm(), None, status=400, error=message
            )
        return self.pages.render(
            request, "signed_in.html", 400, ok=False, message=message, address=None
        )

    async def _order(self, request: Request, sign_in: SignIn) -> Response:
        """A step of the order: fill the account in, check it, show the next step."""
        form = sign_in.form
        src = AccountForm.from_form(form, "source")
        dst = AccountForm.from_form(form, "dest")
        plan = parse_plan(form.get("plan"))
        mine = AccountForm.signed_in(sign_in.account, sign_in.id, sign_in.provider_name)
        uid = sign_in.user_id
        if sign_in.side == "source":
            folders, err, _side = await self.pages.check(sign_in.account, "source", user_id=uid)
            if folders is None or not folders:
                why = err or "The source mailbox has no folders that can be copied."
                await self.service.drop_sign_in(sign_in, why)
                return self.pages._wizard(
                    request,
                    "source",
                    AccountForm(),
                    dst,
                    None,
                    status=400,
                    error=f"We could not use the source mailbox ({sign_in.address}): {why}",
                )
            await self.pages.call(self.service.confirm_sign_in, sign_in)
            return self.pages._wizard(request, "dest", mine, dst, folders_to_plan(folders))
        # The destination: checked together with the source, as the dest step does.
        src_acc, errors = src.validate("source")
        src_acc, gone = await self.pages.signed_in_account(uid, src, src_acc, "source")
        if src_acc is None or errors or gone or plan is None:
            await self.service.drop_sign_in(sign_in, "the order's source is gone")
            return self.pages._wizard(
                request,
                "source",
                AccountForm() if gone else src,
                dst,
                None,
                status=400,
                error=gone or "Please check the source mailbox again.",
            )
        from .forms import same_account

        if same_account(src_acc, sign_in.account):
            await self.service.drop_sign_in(sign_in, "the same mailbox as the source")
            return self.pages._wizard(
                request,
                "dest",
                src,
                AccountForm(),
                plan,
                status=400,
                error="The destination is the same mailbox as the source. "
                "Choose the mailbox the mail should go to.",
            )
        folders, err, side = await self.pages.check(
            src_acc, "source", dest=sign_in.account, user_id=uid
        )
        if folders is None:
            await self.service.drop_sign_in(sign_in, err or "the check failed")
            who = "destination" if side == "dest" else "source"
            return self.pages._wizard(
                request,
                "dest",
                src,
                AccountForm(),
                plan,
                status=400,
                error=f"We could not use the {who} mailbox: {err}",
            )
        await self.pages.call(self.service.confirm_sign_in, sign_in)
        return self.pages._wizard(request, "folders", src, mine, folders_to_plan(folders))

    async def _check_alone(self, sign_in: SignIn) -> str | None:
        """Log in to the signed-in account alone; None when it works, else why not."""
        role = sign_in.side if sign_in.side in _SIDES else "source"
        folders, err, _side = await self.pages.check(sign_in.account, role, user_id=sign_in.user_id)
        return None if folders is not None else (err or "the check failed")

    async def _reauth(self, request: Request, sign_in: SignIn) -> Response:
        """A job the provider stopped (or whose sign-in was forgotten): the new grant
        replaces the old and the job resumes."""
        job_id = sign_in.job_id or ""
        why = await self._check_alone(sign_in)
        if why is not None:
            why = f"We could not use {sign_in.address}: {why}"
        else:
            try:
                view = await self.pages.call(self.service.reauth_job, sign_in)
            except ServiceError as exc:
                why = str(exc)
        if why is not None:
            await self.service.drop_sign_in(sign_in, why)
            if not sign_in.bound:  # an API client's browser
                return self.pages.render(
                    request, "signed_in.html", 400, ok=False, message=why, address=None
                )
            _flash(request, why, "error")
            return RedirectResponse(f"/transfers/{job_id}", 303)
        if not sign_in.bound:
            return self.pages.render(
                request, "signed_in.html", ok=True, message=None, address=sign_in.address
            )
        if view.status in ("queued", "running"):
            _flash(request, f"Signed in again as {sign_in.address}: the transfer continues.")
        else:
            _flash(request, f"Signed in again as {sign_in.address}.")
        return RedirectResponse(f"/transfers/{view.id}", 303)

    async def _api(self, request: Request, sign_in: SignIn) -> Response:
        """An API client's sign-in: checked here; the client reads the outcome."""
        why = await self._check_alone(sign_in)
        if why is not None:
            await self.service.drop_sign_in(sign_in, why)
            return self.pages.render(
                request,
                "signed_in.html",
                400,
                ok=False,
                message=f"We could not use {sign_in.address}: {why}",
                address=sign_in.address,
            )
        await self.pages.call(self.service.confirm_sign_in, sign_in)
        return self.pages.render(
            request, "signed_in.html", ok=True, message=None, address=sign_in.address
        )

    # ------------------------------------------------------------ the job page

    async def job_sign_in(self, request: Request, job_id: str) -> Response:
        """ "Sign in again to <provider>": a new consent for the job's side (the form's
        ``side``: source or dest)."""
        uid = await self.pages.user(request)
        form = await self.pages.form(request)
        job_id = check_job_id(job_id)
        view = await self.pages.call(self.service.get_transfer, uid, job_id)
        side = form.get("side")
        if side not in _SIDES:
            _flash(request, "Choose the mailbox to sign in to again.", "error")
            return RedirectResponse(f"/transfers/{job_id}", 303)
        account = view.source if side == "source" else view.dest
        provider = account.get("oauth_provider")
        if not provider:
            _flash(request, f"The {_SIDES[str(side)]} of this transfer does not sign in.", "error")
            return RedirectResponse(f"/transfers/{job_id}", 303)
        try:
            _sid, url = await self.pages.call(
                lambda: self.service.begin_sign_in(
                    uid,
                    provider,
                    callback_url(self.service),
                    purpose="reauth",
                    side=str(side),
                    job_id=job_id,
                    binding=session_nonce(request),
                    login_hint=str(account.get("username") or ""),
                )
            )
        except ServiceError as exc:
            _flash(request, f"Could not sign in: {exc}", "error")
            return RedirectResponse(f"/transfers/{job_id}", 303)
        return RedirectResponse(url, 303)

    async def job_forget(self, request: Request, job_id: str) -> Response:
        """ "Forget my sign-in": revoke at the provider (best effort), delete the grant."""
        uid = await self.pages.user(request)
        await self.pages.form(request)
        job_id = check_job_id(job_id)
        try:
            await self.pages.call(self.service.get_transfer, uid, job_id)  # 404 if not theirs
            await self.service.forget_job_sign_in(uid, job_id)
        except NotFound:
            raise
        except ServiceError as exc:
            _flash(request, f"Could not forget the sign-in: {exc}", "error")
        else:
            _flash(
                request,
                "Your sign-in is forgotten: we asked the provider to revoke our access and "
                "deleted it here. The transfer cannot run again until you sign in again.",
            )
        return RedirectResponse(f"/transfers/{job_id}", 303)
