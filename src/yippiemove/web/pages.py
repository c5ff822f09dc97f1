"""The web pages: sign up, log in, new transfer (3 steps), transfers, live job page, tokens,
batch upload.  Session cookie auth; every POST form carries the session's CSRF token."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
import re
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import urlencode

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response, StreamingResponse
from fastapi.templating import Jinja2Templates
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import FormData, UploadFile
from starlette.exceptions import HTTPException

from yippiemove.jobs.vocab import JobStatus, Phase
from yippiemove.service.auth import AuthStore, client_key
from yippiemove.service.core import (
    AlreadyActive,
    Busy,
    Conflict,
    NotFound,
    ServiceError,
    Suspended,
)
from yippiemove.service.passwords import MIN_LENGTH, password_problem

from . import live, presets
from .account import add_routes as add_account_routes
from .api import check_job_id, public_view, receipt_response
from .batches import add_batch_pages, create_from_upload
from .billing_pages import add_routes as add_billing_pages
from .billing_pages import quote_step
from .forms import (
    AccountForm,
    folders_to_plan,
    parse_plan,
    plan_json,
    same_account,
    with_depth,
)
from .operator import add_operator_pages
from .options import OptionsForm, describe_options, plain, reason_words
from .reports import add_report_pages
from .resume import add_routes as add_resume_routes
from .schemas import TERMINAL
from .security import CSP, check_csrf, csrf_token
from .selection import display_pattern, selection_to_folders
from .sessions import client_host
from .staged import ScheduleFormError, schedule_from_form
from .staged import add_routes as add_staged_routes

if TYPE_CHECKING:
    from yippiemove.service.core import Account, FolderInfo, Service

log = logging.getLogger("yippiemove.web")

T = TypeVar("T")

BATCH_LIMIT = 1024 * 1024  # bytes of CSV per upload
#: The CSV columns of Service.validate_batch_csv (Service.BATCH_COLUMNS when it has them).
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
CHECK_TIMEOUT = 120.0  # seconds for one account check
SSE_INTERVAL = 0.5  # seconds between progress polls of one event stream
SSE_MAX_SECONDS = 300.0  # then the stream ends and the browser reconnects
_EMAIL = re.compile(r"[^@\s]+@[^@\s]+\.[^@\s]+")

#: Transfers per page of the list (issue 18); "Older" goes on.
PAGE_SIZE = 50
LIST_FILTERS: dict[str, tuple[str, frozenset[str] | None]] = {
    "all": ("All", None),
    "running": ("Running", frozenset({JobStatus.QUEUED, JobStatus.RUNNING})),
    "finished": ("Finished", frozenset({JobStatus.DONE})),
    "failed": ("Failed", frozenset({JobStatus.FAILED})),
    "cancelled": ("Cancelled", frozenset({JobStatus.CANCELLED})),
}
STATUS_LABELS: dict[str, str] = {
    JobStatus.QUEUED: "Waiting to start",
    JobStatus.RUNNING: "Running",
    JobStatus.DONE: "Finished",
    JobStatus.FAILED: "Failed",
    JobStatus.CANCELLED: "Cancelled",
    JobStatus.AWAITING_PAYMENT: "Waiting for payment",
}


_ROLE_PREFIX = re.compile(r"\A(source|dest|destination|account)(\.[A-Za-z_]+)?: ")


def split_role(message: str, default: str) -> tuple[str, str]:
    """``"destination: wrong password"`` -> ("dest", "wrong password"); the service prefixes
    its messages with the account they are about (``source.port: ...`` keeps ``port:``)."""
    m = _ROLE_PREFIX.match(message)
    if not m:
        return default, message
    role = {"source": "source", "dest": "dest", "destination": "dest"}.get(m.group(1), default)
    rest = message[m.end() :]
    if m.group(2):
        rest = f"{m.group(2)[1:]}: {rest}"
    return role, rest


#: What a running job is doing, by ``progress["phase"]`` (job.js has the same words).
PHASES: dict[str, str] = {
    Phase.QUEUED: "Waiting for a free worker…",
    Phase.RESUMING: "Resuming after an interruption…",
    Phase.CONNECTING: "Connecting to the mail servers…",
    Phase.PLANNING: "Listing the folders and comparing both sides…",
    Phase.COPYING: "Copying…",
    Phase.VERIFYING: "Verifying…",
    Phase.INTERRUPTED: "Interrupted; resuming shortly…",
}


class LoginRequired(Exception):
    def __init__(self, next_path: str) -> None:
        super().__init__(next_path)
        self.next_path = next_path


def safe_next(target: object, default: str = "/transfers") -> str:
    """A local path to go to after logging in (never another site)."""
    if (
        isinstance(target, str)
        and target.startswith("/")
        and not target.startswith("//")
        and "\\" not in target
        and len(target) < 500
    ):
        return target
    return default


def flash(request: Request, text: str, kind: str = "ok") -> None:
    request.session.setdefault("flash", []).append([kind, text])


class Pages:
    """The page routes, bound to one Service."""

    def __init__(self, service: Service, templates: Jinja2Templates) -> None:
        from .signin import SignInPages

        self.service = service
        self.templates = templates
        self.batch_columns = tuple(getattr(service, "BATCH_COLUMNS", BATCH_COLUMNS))
        self.sign_ins = SignInPages(self)

    # -- helpers ----------------------------------------------------------------------

    @staticmethod
    def auth(request: Request) -> AuthStore:
        """Throttling and sessions, in the control database (service/auth.py)."""
        store: AuthStore = request.app.state.auth
        return store

    @staticmethod
    def client(request: Request) -> str:
        """The throttling key of the client's address (a trusted proxy's word for it)."""
        return client_key(client_host(request.scope, request.app.state.trust_proxy))

    @staticmethod
    def _minutes(wait: float) -> str:
        n = int(wait // 60) + 1
        return "1 minute" if n == 1 else f"{n} minutes"

    async def call(self, fn: Callable[..., T], *args: Any) -> T:
        """Service calls touch the database: run them off the event loop."""
        return await run_in_threadpool(fn, *args)

    async def user(self, request: Request) -> int:
        uid = request.session.get("uid")
        if isinstance(uid, int):
            try:
                email = await self.call(self.service.user_email, uid)
            except NotFound:
                email = None
            if email:
                request.state.user_email = email
                return uid
            request.session.clear()
        nxt = request.url.path if request.method == "GET" else "/transfers"
        if request.method == "GET" and request.url.query:
            nxt += "?" + request.url.query
        raise LoginRequired(nxt)

    async def form(self, request: Request) -> FormData:
        """The posted form, after checking its CSRF token (CsrfError otherwise)."""
        form = await request.form()
        check_csrf(request, form)
        return form

    def render(
        self, request: Request, name: str, status: int = 200, **context: Any
    ) -> HTMLResponse:
        context.setdefault("user_email", getattr(request.state, "user_email", None))
        context["csrf"] = csrf_token(request)
        context["flashes"] = request.session.pop("flash", []) if "session" in request.scope else []
        context["status_labels"] = STATUS_LABELS
        context["phases"] = PHASES
        response = self.templates.TemplateResponse(request, name, context, status_code=status)
        origins = sorted({p["origin"] for p in self.sign_in_providers() if p.get("origin")})
        if origins:
            # "Sign in with ...": a form's answer redirects to the provider, which the
            # CSP's form-action must allow (Chromium applies it to redirects too).
            response.headers["content-security-policy"] = CSP.replace(
                "form-action 'self'", "form-action 'self' " + " ".join(origins)
            )
        return response

    # -- public pages -------------------------------------------------------------------

    async def home(self, request: Request) -> Response:
        if isinstance(request.session.get("uid"), int):
            return RedirectResponse("/transfers", 303)
        return self.render(request, "home.html")

    async def signup_page(self, request: Request) -> Response:
        return self.render(request, "signup.html", email="")

    async def signup(self, request: Request) -> Response:
        """Sign up.  With mail (a public service), the answer is the same whether the
        address has an account or not; the mailed message says which (docs/security.md)."""
        form = await self.form(request)
        email = str(form.get("email", "")).strip()[:320]
        password = str(form.get("password", ""))[:1024]
        confirm = str(form.get("password2", ""))[:1024]
        errors: dict[str, str] = {}
        client = self.client(request)
        wait = await self.call(self.auth(request).signup_wait, client)
        if wait > 0:
            errors["email"] = (
                f"Too many sign-ups from your network. Try again in {self._minutes(wait)}."
            )
            return self.render(request, "signup.html", 429, email=email, errors=errors)
        if not _EMAIL.fullmatch(email):
            errors["email"] = "Enter your e-mail address, like you@example.org."
        problem = password_problem(password)
        if problem:
            errors["password"] = f"The password {problem}."
        elif password != confirm:
            errors["password2"] = "The two passwords are not the same."
        by_mail = bool(getattr(self.service, "signup_by_mail", False))
        if not errors:
            await self.call(self.auth(request).signup_attempted, client)
            try:
                if by_mail:
                    await self.call(self.service.request_signup, email, password)
                    return self.render(request, "signup_sent.html", email=email)
                uid = await self.call(self.service.create_user, email, password)
            except Conflict:
                errors["email"] = (
                    "An account with this e-mail address exists already. Log in instead."
                )
            except ServiceError as exc:
                field, _sep, text = str(exc).partition(": ")
                if field in ("email", "password") and text:
                    errors[field] = text[:1].upper() + text[1:] + "."
                else:
                    errors["email"] = str(exc)
            else:
                await self._remember_zone(uid, form)
                request.session.clear()
                request.session["uid"] = uid
                flash(request, "Welcome! Your account is ready. Order your first transfer below.")
                return RedirectResponse("/transfers/new", 303)
        return self.render(request, "signup.html", 400, email=email, errors=errors)

    async def signup_confirm_page(self, request: Request) -> Response:
        token = str(request.query_params.get("token", ""))[:200]
        valid = await self.call(self.auth(request).signup_peek, token)
        return self.render(
            request, "signup_confirm.html", 200 if valid else 400, token=token, valid=valid
        )

    async def signup_confirm(self, request: Request) -> Response:
        form = await self.form(request)
        token = str(form.get("token", ""))[:200]
        uid = await self.call(self.service.confirm_signup, token)
        if uid is None:
            return self.render(request, "signup_confirm.html", 400, token="", valid=False)
        await self._remember_zone(uid, form)
        request.session.clear()
        request.session["uid"] = uid
        flash(request, "Welcome! Your account is ready. Order your first transfer below.")
        return RedirectResponse("/transfers/new", 303)

    async def _remember_zone(self, uid: int, form: Any) -> None:
        """The browser's time zone (app.js fills the forms' ``timezone`` field), kept
        for the times in the customer's mails (issue 17; pages show times in the
        browser's own zone anyway).  Nothing when absent or unknown."""
        zone = str(form.get("timezone", "") or "")[:64]
        setter = getattr(self.service, "set_timezone", None)
        if zone and setter is not None:
            await self.call(setter, uid, zone)

    async def login_page(self, request: Request) -> Response:
        nxt = safe_next(request.query_params.get("next"))
        return self.render(request, "login.html", email="", next=nxt)

    async def login(self, request: Request) -> Response:
        form = await self.form(request)
        email = str(form.get("email", "")).strip()[:320]
        password = str(form.get("password", ""))[:1024]
        nxt = safe_next(form.get("next"))
        client = self.client(request)
        auth = self.auth(request)
        wait = await self.call(auth.login_wait, client, email)
        if wait > 0:
            return self.render(
                request,
                "login.html",
                429,
                email=email,
                next=nxt,
                error=f"Too many failed attempts. Try again in {self._minutes(wait)}.",
            )
        try:
            uid = await self.call(self.service.authenticate, email, password) if email else None
        except Suspended as exc:  # the right password of a suspended account (operators)
            await self.call(auth.login_succeeded, client, email)
            return self.render(
                request, "login.html", 403, email=email, next=nxt, error=str(exc).capitalize()
            )
        if uid is None:
            await self.call(auth.login_failed, client, email)
            return self.render(
                request,
                "login.html",
                400,
                email=email,
                next=nxt,
                error="Wrong e-mail address or password.",
            )
        await self.call(auth.login_succeeded, client, email)
        await self._remember_zone(uid, form)
        request.session.clear()  # a fresh session (and CSRF token) for the logged-in user
        request.session["uid"] = uid
        return RedirectResponse(nxt, 303)

    async def logout(self, request: Request) -> Response:
        await self.form(request)
        request.session.clear()  # the server-side session is deleted (web/sessions.py)
        flash(request, "You are logged out.")
        return RedirectResponse("/login", 303)

    async def password_page(self, request: Request) -> Response:
        await self.user(request)
        return self.render(request, "password.html", min_length=MIN_LENGTH, errors={})

    async def password_change(self, request: Request) -> Response:
        """A new password; every other session of the account is logged out."""
        uid = await self.user(request)
        form = await self.form(request)
        current = str(form.get("current_password", ""))[:1024]
        new = str(form.get("password", ""))[:1024]
        errors: dict[str, str] = {}
        client, email = self.client(request), str(getattr(request.state, "user_email", ""))
        auth = self.auth(request)
        wait = await self.call(auth.login_wait, client, email)
        problem = password_problem(new)
        if wait > 0:
            errors["current_password"] = (
                f"Too many failed attempts. Try again in {self._minutes(wait)}."
            )
        elif problem:
            errors["password"] = f"The password {problem}."
        elif new != str(form.get("password2", ""))[:1024]:
            errors["password2"] = "The two passwords are not the same."
        else:
            try:
                await self.call(self.service.change_password, uid, current, new)
            except ServiceError as exc:
                field, _sep, text = str(exc).partition(": ")
                if field == "current_password":
                    await self.call(auth.login_failed, client, email)
                    errors[field] = "That is not your current password."
                else:
                    errors["password"] = text[:1].upper() + text[1:] + "." if text else str(exc)
        if errors:
            return self.render(request, "password.html", 400, min_length=MIN_LENGTH, errors=errors)
        keep = request.cookies.get(request.app.state.session_cookie)
        await self.call(auth.revoke_sessions, uid, keep)
        flash(request, "Your password is changed; your other sessions are logged out.")
        return RedirectResponse("/transfers", 303)

    # -- transfers ----------------------------------------------------------------------

    async def transfers(self, request: Request) -> Response:
        uid = await self.user(request)
        key = request.query_params.get("status", "all")
        if key not in LIST_FILTERS:
            key = "all"
        # A page at a time (issue 18): the tabs' counts by one GROUP BY, the rows by a
        # keyset page; a cursor that is not one is the first page again.
        by_status = await self.call(self.service.count_transfers, uid)
        counts = {
            k: sum(n for st, n in by_status.items() if wanted is None or st in wanted)
            for k, (_label, wanted) in LIST_FILTERS.items()
        }
        wanted = LIST_FILTERS[key][1]
        cursor = request.query_params.get("cursor") or None
        try:
            page = await self.call(
                functools.partial(
                    self.service.transfer_page,
                    uid,
                    statuses=wanted,
                    cursor=cursor,
                    limit=PAGE_SIZE,
                )
            )
        except ServiceError:
            if cursor is None:
                raise
            page = await self.call(
                functools.partial(self.service.transfer_page, uid, statuses=wanted, limit=PAGE_SIZE)
            )
            cursor = None
        older = None
        if page.next_cursor is not None:
            query = {"status": key} if key != "all" else {}
            older = "/transfers?" + urlencode({**query, "cursor": page.next_cursor})
        return self.render(
            request,
            "transfers.html",
            jobs=[public_view(v) for v in page.views],
            filters=LIST_FILTERS,
            current=key,
            counts=counts,
            older=older,
            paged=cursor is not None,
        )

    def _wizard(
        self,
        request: Request,
        step: str,
        src: AccountForm,
        dst: AccountForm,
        plan: list[dict[str, Any]] | None,
        *,
        status: int = 200,
        errors: dict[str, str] | None = None,
        error: str | None = None,
        selected: set[str] | None = None,
        options: OptionsForm | None = None,
    ) -> HTMLResponse:
        if plan is not None and selected is None:
            selected = {f["name"] for f in plan if f["selected"]}
        return self.render(
            request,
            "new.html",
            status,
            sign_in_providers=self.sign_in_providers(),
            step=step,
            src=src,
            dst=dst,
            plan=with_depth(plan) if plan else [],
            plan_json=plan_json(plan) if plan is not None else "",
            selected=selected or set(),
            errors=errors or {},
            error=error,
            presets=presets.PRESETS,
            security_choices=presets.SECURITY_CHOICES,
            options=options or OptionsForm(),
        )

    async def check(
        self,
        account: Account,
        role: str,
        dest: Account | None = None,
        user_id: Any = None,
        folders: dict[str, Any] | None = None,
    ) -> tuple[list[FolderInfo] | None, str | None, str]:
        """Log in (to both accounts when ``dest`` is given) and list the source's folders.

        Returns (folders, None, role) or (None, message, role of the failing account);
        too many checks in flight (:class:`Busy`) is raised: a 429 page.
        """
        try:
            kwargs: dict[str, Any] = {"role": role}
            if dest is not None:
                kwargs["dest"] = dest
            if isinstance(user_id, int):
                kwargs["user_id"] = user_id
            if folders is not None:  # the folder step's options (issue 17)
                kwargs["folders"] = folders
            listed = await asyncio.wait_for(
                self.service.check_account(account, **kwargs), timeout=CHECK_TIMEOUT
            )
        except Busy:
            raise
        except ServiceError as exc:
            side, text = split_role(str(exc), role)
            return None, text, side
        except TimeoutError:
            return None, f"the server did not answer within {int(CHECK_TIMEOUT)} seconds", role
        except Exception:
            log.exception("check_account failed unexpectedly")
            return None, "something went wrong on our side while checking the account", role
        return listed, None, role

    async def new_page(self, request: Request) -> Response:
        await self.user(request)
        return self._wizard(request, "source", AccountForm(), AccountForm(), None)

    def sign_in_providers(self) -> list[dict[str, str]]:
        """The "Sign in with ..." buttons (issue 16): the providers the operator set up."""
        providers = getattr(self.service, "sign_in_providers", None)
        if providers is None:
            return []
        try:
            return list(providers())
        except Exception:  # a broken providers file must not take every page down
            log.exception("the OAuth2 providers cannot be read")
            return []

    async def signed_in_account(
        self, uid: int, form: AccountForm, acc: Account | None, role: str
    ) -> tuple[Account | None, str | None]:
        """The account of a form signed in with OAuth2, from the server (with its grant;
        the form's fields are only shown), or a message when the sign-in is gone."""
        if acc is None or not form.oauth:
            return acc, None
        try:
            return await self.call(self.service.signed_in, uid, form.oauth, role), None
        except ServiceError:
            who = "source" if role == "source" else "destination"
            return None, (
                f"Your sign-in to the {who} mailbox has expired or was used already. "
                f"Please sign in with {form.oauth_name or 'your provider'} again."
            )

    async def new_post(self, request: Request) -> Response:
        """The order's three steps (source, destination, folders) and their way back."""
        uid = await self.user(request)
        form = await self.form(request)
        action = form.get("action")
        if isinstance(action, str) and action.startswith("oauth_"):
            # "Sign in with Google / Microsoft": off to the provider (web/signin.py).
            return await self.sign_ins.start_order(request, uid, form, action)
        src = AccountForm.from_form(form, "source")
        dst = AccountForm.from_form(form, "dest")
        plan = parse_plan(form.get("plan"))
        if action == "signout_source":
            return self._wizard(request, "source", AccountForm(), dst, None)
        if action == "signout_dest" and plan is not None:
            return self._wizard(request, "dest", src, AccountForm(), plan)

        if action == "back_source":
            return self._wizard(request, "source", src, dst, plan)
        if action == "back_dest" and plan is not None:
            return self._wizard(request, "dest", src, dst, plan)

        src_acc, src_errors = src.validate("source")
        src_acc, gone = await self.signed_in_account(uid, src, src_acc, "source")
        if gone is not None:
            return self._wizard(request, "source", AccountForm(), dst, None, status=400, error=gone)
        if action == "check_source" or src_acc is None:
            return await self._source_step(request, src, dst, src_acc, src_errors)
        if plan is None:  # the page was tampered with or is very old: start over
            return self._wizard(
                request,
                "source",
                src,
                dst,
                None,
                status=400,
                error="Please check the source mailbox again.",
            )
        dst_acc, dst_errors = dst.validate("dest")
        dst_acc, gone = await self.signed_in_account(uid, dst, dst_acc, "dest")
        if gone is not None:
            return self._wizard(request, "dest", src, AccountForm(), plan, status=400, error=gone)
        if action == "check_dest" or dst_acc is None:
            return await self._dest_step(request, src, dst, plan, src_acc, dst_acc, dst_errors)
        if action == "preview":
            return await self._preview_step(request, form, src, dst, plan, src_acc, dst_acc)
        if action != "start":
            return self._wizard(request, "source", src, dst, None, status=400)
        return await self._start_step(request, uid, form, src, dst, plan, src_acc, dst_acc)

    async def _source_step(
        self,
        request: Request,
        src: AccountForm,
        dst: AccountForm,
        src_acc: Account | None,
        src_errors: Any,
    ) -> Response:
        """Check the source account; on to the destination step with its folders."""
        if src_errors:
            return self._wizard(request, "source", src, dst, None, status=400, errors=src_errors)
        assert src_acc is not None
        folders, err, _side = await self.check(
            src_acc, "source", user_id=request.session.get("uid")
        )
        if folders is None:
            return self._wizard(
                request,
                "source",
                src,
                dst,
                None,
                status=400,
                error=f"We could not use the source mailbox: {err}",
            )
        if not folders:
            return self._wizard(
                request,
                "source",
                src,
                dst,
                None,
                status=400,
                error="The source mailbox has no folders that can be copied.",
            )
        # Tens of thousands of folders take a while to sort and render: off the event
        # loop, which keeps serving everyone (issue 14, class 3).
        return await run_in_threadpool(
            lambda: self._wizard(request, "dest", src, dst, folders_to_plan(folders))
        )

    async def _dest_step(
        self,
        request: Request,
        src: AccountForm,
        dst: AccountForm,
        plan: Any,
        src_acc: Account,
        dst_acc: Account | None,
        dst_errors: Any,
    ) -> Response:
        """Check the destination (and the source again); on to the folders step."""
        if dst_errors:
            return self._wizard(request, "dest", src, dst, plan, status=400, errors=dst_errors)
        assert dst_acc is not None
        if same_account(src_acc, dst_acc):
            return self._wizard(
                request,
                "dest",
                src,
                dst,
                plan,
                status=400,
                error="The destination is the same mailbox as the source. "
                "Choose the mailbox the mail should go to.",
            )
        # Both logins at once: the folder names become exactly those the transfer
        # will use on this destination (namespace, separator).
        folders, err, side = await self.check(
            src_acc, "source", dest=dst_acc, user_id=request.session.get("uid")
        )
        if folders is None:
            who = "destination" if side == "dest" else "source"
            return self._wizard(
                request,
                "dest",
                src,
                dst,
                plan,
                status=400,
                error=f"We could not use the {who} mailbox: {err}",
            )
        return await run_in_threadpool(
            lambda: self._wizard(request, "folders", src, dst, folders_to_plan(folders))
        )

    async def _preview_step(
        self,
        request: Request,
        form: Any,
        src: AccountForm,
        dst: AccountForm,
        plan: Any,
        src_acc: Account,
        dst_acc: Account,
    ) -> Response:
        """The folder step again, its names and counts after the options (issue 17): the
        same check as the destination step, planned with the rules and filters."""
        selected = {s for s in form.getlist("folder") if isinstance(s, str)}
        options = OptionsForm.from_form(form)
        rules = options.to_folders()
        if options.errors:
            return self._wizard(
                request,
                "folders",
                src,
                dst,
                plan,
                status=400,
                selected=selected,
                error="Please correct the options below.",
                options=options,
            )
        folders, err, side = await self.check(
            src_acc,
            "source",
            dest=dst_acc,
            user_id=request.session.get("uid"),
            folders={"include": [], "exclude": [], **rules},
        )
        if folders is None:
            who = "destination" if side == "dest" else "source"
            return self._wizard(
                request,
                "folders",
                src,
                dst,
                plan,
                status=400,
                selected=selected,
                error=f"We could not use the {who} mailbox: {plain(str(err))}",
                options=options,
            )
        planned = folders_to_plan(folders)
        for f in planned:
            f["reasons"] = [reason_words(r) for r in f["reasons"]]
        return await run_in_threadpool(
            lambda: self._wizard(
                request, "folders", src, dst, planned, selected=selected, options=options
            )
        )

    async def _start_step(
        self,
        request: Request,
        uid: int,
        form: Any,
        src: AccountForm,
        dst: AccountForm,
        plan: Any,
        src_acc: Account,
        dst_acc: Account,
    ) -> Response:
        """The ticked folders: start the transfer and go to its page."""
        selected = [s for s in form.getlist("folder") if isinstance(s, str)]
        options = OptionsForm.from_form(form)
        rules = options.to_folders()  # issue 17: the API's rules and filters
        try:
            spec = selection_to_folders([f["name"] for f in plan], selected)
        except ValueError:
            return self._wizard(
                request,
                "folders",
                src,
                dst,
                plan,
                status=400,
                selected=set(selected),
                error="Select at least one folder to copy.",
                options=options,
            )
        if options.errors:
            return self._wizard(
                request,
                "folders",
                src,
                dst,
                plan,
                status=400,
                selected=set(selected),
                error="Please correct the options below.",
                options=options,
            )
        if rules:
            spec = {**(spec or {"include": [], "exclude": []}), **rules}
        billing = getattr(self.service, "billing", None)
        quote_id = form.get("quote_id")
        if billing is not None and billing.enabled and not quote_id:
            # Issue 20: the price first (web/billing_pages.py), then the order.
            return await quote_step(self, request, uid, form, src_acc, dst_acc, spec)
        try:
            # Issue 17: "keep in sync until I switch" (web/staged.py); asked only when set.
            plan_kw: dict[str, Any] = (
                {"schedule": sched} if (sched := schedule_from_form(form)) else {}
            )
            if isinstance(quote_id, str) and quote_id:
                plan_kw["quote_id"] = quote_id
            view = await self.call(
                functools.partial(self.service.create_transfer, **plan_kw),
                uid,
                src_acc,
                dst_acc,
                spec,
            )
        except AlreadyActive as exc:
            # A reload or Back of this step, or the same order twice: open the one.
            flash(request, ALREADY_RUNNING)
            return RedirectResponse(f"/transfers/{exc.job_id}", 303)
        except (ServiceError, ScheduleFormError) as exc:
            return self._wizard(
                request,
                "folders",
                src,
                dst,
                plan,
                status=400,
                selected=set(selected),
                error=f"The transfer could not be started: {plain(str(exc))}",
                options=options,
            )
        used = getattr(self.service, "used_sign_ins", None)
        if used is not None and (src.oauth or dst.oauth):  # the job holds the grants now
            await self.call(used, uid, [src.oauth, dst.oauth])
        if view.status == JobStatus.AWAITING_PAYMENT:  # issue 20: nothing runs unpaid
            flash(request, "Your transfer is ordered: it starts once it is paid for.")
            return RedirectResponse(f"/transfers/{view.id}/pay", 303)
        # "running": shown only while the job runs (base.html; job.js hides it at the end).
        flash(
            request,
            "Your transfer is on its way. You can close this page: it keeps running.",
            "running",
        )
        return RedirectResponse(f"/transfers/{view.id}", 303)

    async def _report(self, uid: int, job: dict[str, Any]) -> dict[str, Any] | None:
        if job["status"] not in TERMINAL:
            return None
        try:
            return await self.call(self.service.report, uid, job["id"])
        except ServiceError:
            return None

    async def _receipt_ready(self, uid: int, job_id: str) -> bool:
        try:
            path = await self.call(self.service.state_file, uid, job_id)
        except ServiceError:
            return False
        return Path(path).is_file()

    def _selection_text(self, folders: dict[str, Any] | None) -> str:
        if not folders:
            return "All folders"
        parts = []
        if folders.get("include"):
            parts.append("Only " + ", ".join(display_pattern(p) for p in folders["include"]))
        if folders.get("exclude"):
            parts.append("all except " + ", ".join(display_pattern(p) for p in folders["exclude"]))
        text = "; ".join(parts) or "All folders"
        text = "; ".join([text, *describe_options(folders)])  # issue 17: rules, filters
        return text[:1].upper() + text[1:]

    async def job_page(self, request: Request, job_id: str) -> Response:
        uid = await self.user(request)
        view = await self.call(self.service.get_transfer, uid, check_job_id(job_id))
        job = public_view(view)
        report = await self._report(uid, job)
        terminal = job["status"] in TERMINAL
        return self.render(
            request,
            "job.html",
            job=job,
            job_json=job,
            report=report,
            receipt=await self._receipt_ready(uid, job["id"]),
            selection=self._selection_text(job.get("folders")),
            terminal=terminal,
            can_rerun=terminal and job.get("can_rerun", True),
            sign_in_names={p["key"]: p["name"] for p in self.sign_in_providers()},
        )

    async def job_summary(self, request: Request, job_id: str) -> Response:
        """The finished part of the job page (report, receipt), fetched by job.js."""
        uid = await self.user(request)
        view = await self.call(self.service.get_transfer, uid, check_job_id(job_id))
        job = public_view(view)
        report = await self._report(uid, job)
        return self.render(
            request,
            "_summary.html",
            job=job,
            report=report,
            receipt=await self._receipt_ready(uid, job["id"]),
            terminal=job["status"] in TERMINAL,
            sign_in_names={p["key"]: p["name"] for p in self.sign_in_providers()},
        )

    async def job_events(self, request: Request, job_id: str) -> Response:
        """Server-Sent Events: ``progress`` (the job as JSON) on change, ``end`` when done,
        ``gone`` when deleted, ``reconnect`` after SSE_MAX_SECONDS (job.js opens a new
        stream at once).  The customer's ownership is checked here, by one read; after
        that the stream costs no read of its own: the process's one poller (web/live.py)
        reads every followed transfer in one query per tick and wakes this stream when
        its transfer changed."""
        uid = await self.user(request)
        job_id = check_job_id(job_id)
        first = await self.call(self.service.get_transfer, uid, job_id)
        interval = float(getattr(request.app.state, "sse_interval", SSE_INTERVAL))
        stopping = getattr(request.app.state, "stopping", None)
        hub = live.hub_of(request.app, self.service, SSE_INTERVAL)

        async def stream() -> AsyncIterator[str]:
            watch = hub.watch(uid, job_id, first)
            try:
                state = live.State(watch.state.version, live.as_data(first), first.status)
                last = ""
                last_sent = time.monotonic()
                deadline = last_sent + SSE_MAX_SECONDS
                yield "retry: 2000\n\n"
                while True:
                    now = time.monotonic()
                    if state.data != last:
                        yield f"event: progress\ndata: {state.data}\n\n"
                        last, last_sent = state.data, now
                    elif now - last_sent >= 15:
                        yield ": keep-alive\n\n"
                        last_sent = now
                    if state.status in TERMINAL:
                        yield f"event: end\ndata: {json.dumps(state.status)}\n\n"
                        return
                    if stopping is not None and stopping.is_set():
                        return  # the server is stopping; the browser reconnects later
                    if now > deadline:
                        yield "event: reconnect\ndata: null\n\n"
                        return
                    if await request.is_disconnected():
                        return
                    state = await hub.changed(watch, state.version, interval)
                    if state.gone:
                        yield "event: gone\ndata: null\n\n"
                        return
            finally:
                hub.unwatch(watch)

        return StreamingResponse(
            stream(),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
        )

    async def job_cancel(self, request: Request, job_id: str) -> Response:
        uid = await self.user(request)
        await self.form(request)
        try:
            await self.call(self.service.cancel_transfer, uid, check_job_id(job_id))
        except NotFound:
            raise
        except ServiceError as exc:
            flash(request, f"Could not cancel: {exc}", "error")
        else:
            flash(request, "The transfer is cancelled. What was copied stays copied.")
        return RedirectResponse(f"/transfers/{job_id}", 303)

    async def job_rerun(self, request: Request, job_id: str) -> Response:
        uid = await self.user(request)
        await self.form(request)
        try:
            view = await self.call(self.service.rerun_transfer, uid, check_job_id(job_id))
        except NotFound:
            raise
        except AlreadyActive as exc:
            flash(request, ALREADY_RUNNING)
            return RedirectResponse(f"/transfers/{exc.job_id}", 303)
        except ServiceError as exc:
            flash(request, f"Could not run it again: {exc}", "error")
            return RedirectResponse(f"/transfers/{job_id}", 303)
        flash(
            request,
            "Running again: only what is missing on the destination is copied.",
        )
        return RedirectResponse(f"/transfers/{view.id}", 303)

    async def job_forget(self, request: Request, job_id: str) -> Response:
        """Delete the stored passwords of an ended transfer now (no re-runs after that)."""
        uid = await self.user(request)
        await self.form(request)
        forget = getattr(self.service, "forget_credentials", None)
        if forget is None:
            raise HTTPException(404, "not available")
        try:
            await self.call(forget, uid, check_job_id(job_id))
        except NotFound:
            raise
        except ServiceError as exc:
            flash(request, f"Could not delete the passwords: {exc}", "error")
        else:
            flash(request, "The passwords of this transfer are deleted.")
        return RedirectResponse(f"/transfers/{job_id}", 303)

    async def job_report_json(self, request: Request, job_id: str) -> Response:
        uid = await self.user(request)
        report = await self.call(self.service.report, uid, check_job_id(job_id))
        body = json.dumps(report, indent=1, ensure_ascii=False)
        return Response(
            body,
            media_type="application/json",
            headers={
                "Content-Disposition": f'attachment; filename="yippiemove-{job_id}-report.json"'
            },
        )

    async def job_receipt(self, request: Request, job_id: str) -> Response:
        uid = await self.user(request)
        path = Path(await self.call(self.service.state_file, uid, check_job_id(job_id)))
        if not path.is_file():
            raise HTTPException(404, "There is no receipt yet: the transfer has not started.")
        return await run_in_threadpool(receipt_response, path, job_id)

    # -- API tokens ---------------------------------------------------------------------

    async def tokens(self, request: Request) -> Response:
        uid = await self.user(request)
        # A token just created is shown once, after the redirect (POST/redirect/GET):
        # it travels in the signed session cookie -- as secret as that cookie, which
        # already acts as this customer -- and is dropped from it by this very answer.
        new_token = request.session.pop("new_token", None)
        return await self._tokens_page(
            request, uid, new_token=new_token if isinstance(new_token, str) else None
        )

    async def _tokens_page(
        self, request: Request, uid: int, new_token: str | None = None, status: int = 200
    ) -> Response:
        tokens = await self.call(self.service.list_tokens, uid)
        return self.render(
            request,
            "tokens.html",
            status,
            tokens=sorted(tokens, key=lambda t: t.get("created") or 0, reverse=True),
            new_token=new_token,
            base_url=str(request.base_url).rstrip("/"),
        )

    async def token_create(self, request: Request) -> Response:
        uid = await self.user(request)
        form = await self.form(request)
        name = str(form.get("name", "")).strip()[:100] or "API token"
        token = await self.call(self.service.create_token, uid, name)
        request.session["new_token"] = token
        return RedirectResponse("/tokens", 303)

    async def token_revoke(self, request: Request, token_id: str) -> Response:
        uid = await self.user(request)
        await self.form(request)
        if not (token_id.isascii() and token_id.isdigit()) or len(token_id) > 18:
            raise HTTPException(404, "no such token")
        try:
            await self.call(self.service.revoke_token, uid, int(token_id))
        except ServiceError as exc:
            flash(request, f"Could not revoke the token: {exc}", "error")
        else:
            flash(request, "The token is revoked: programs using it are refused from now on.")
        return RedirectResponse("/tokens", 303)

    # -- batch --------------------------------------------------------------------------

    async def batch_page(self, request: Request) -> Response:
        uid = await self.user(request)
        done = request.session.pop("batch_done", None)
        context: dict[str, Any] = {}
        if isinstance(done, dict):
            # The outcome of the upload just made (POST/redirect/GET), shown once.
            created = []
            for job_id in done.get("created", []):
                with contextlib.suppress(ServiceError):
                    created.append(
                        public_view(await self.call(self.service.get_transfer, uid, job_id))
                    )
            context = {
                "created": created,
                "n_created": int(done.get("n_created", len(created))),
                "failed": list(done.get("failed", [])),
                "n_failed": int(done.get("n_failed", 0)),
                "line_errors": list(done.get("line_errors", [])),
                "filename": str(done.get("filename", "")),
            }
        return self.render(
            request,
            "batch.html",
            limit=BATCH_LIMIT,
            batch_columns=self.batch_columns,
            **context,
        )

    async def batch(self, request: Request) -> Response:
        uid = await self.user(request)

        def page(status: int, **context: Any) -> HTMLResponse:
            return self.render(
                request,
                "batch.html",
                status,
                limit=BATCH_LIMIT,
                batch_columns=self.batch_columns,
                **context,
            )

        try:
            form = await self.form(request)
        except HTTPException as exc:
            if exc.status_code != 413:
                raise
            return page(413, error=_too_big())
        upload = form.get("file")
        if not isinstance(upload, UploadFile) or not upload.filename:
            return page(400, error="Choose a CSV file to upload.")
        data = await upload.read(BATCH_LIMIT + 1)
        if len(data) > BATCH_LIMIT:
            return page(413, error=_too_big())
        try:
            text = data.decode("utf-8-sig")
        except UnicodeDecodeError:
            return page(
                400,
                error="The file is not UTF-8 text. Save it as “CSV UTF-8” and upload it again.",
            )
        try:
            checked = await create_from_upload(  # issue 17: a batch, checked first
                self,
                request,
                uid,
                text,
                upload.filename,
                form.get("notify_end_users") == "1",
                form.get("skip_bad") == "1",
            )
            if checked is not None:
                return checked
            rows, errors = await self.call(self.service.validate_batch_csv, text)
        except ServiceError as exc:
            return page(400, error=f"The file could not be used: {exc}")
        except Exception as exc:  # csv.Error and the like: bad input, never a 500
            log.warning("batch CSV refused: %s", exc)
            return page(400, error=f"The file could not be read as CSV: {exc}")
        skip_bad = form.get("skip_bad") == "1"
        if errors and not skip_bad:
            return page(
                400,
                error=f"{_lines(len(errors))} of {upload.filename} "
                f"{'has a problem' if len(errors) == 1 else 'have problems'}. Nothing was "
                "started: correct the file and upload it again (or tick “Start the good "
                "lines”).",
                line_errors=errors,
                good=len(rows),
            )
        if not rows:
            return page(400, error="The file has no mailbox pairs to move.", line_errors=errors)
        created: list[str] = []
        failed: list[str] = []
        tag = getattr(self.service, "tag_batch", None)  # one summary mail (issue 17)
        batch: str | None = None
        for n, (source, dest) in enumerate(rows, start=1):
            try:
                view = await self.call(self.service.create_transfer, uid, source, dest, None)
            except ServiceError as exc:
                failed.append(f"pair {n} ({source.username} → {dest.username}): {exc}")
            else:
                created.append(view.id)
                if tag is not None:
                    batch = await self.call(tag, uid, [view.id], batch)
        if not created:
            return page(400, failed=failed, line_errors=errors, filename=upload.filename)
        # Something was started: POST/redirect/GET, so that a reload or Back does not
        # upload the file again.  The outcome goes through the session cookie (small:
        # the first BATCH_SHOWN of each list, the counts of all).
        request.session["batch_done"] = {
            "created": created[:BATCH_SHOWN],
            "n_created": len(created),
            "failed": failed[:BATCH_SHOWN],
            "n_failed": len(failed),
            "line_errors": errors[:BATCH_SHOWN],
            "filename": upload.filename[:200],
        }
        return RedirectResponse("/batch", 303)

    # -- domain-wide moves (issue 16) -------------------------------------------------

    async def domain_page(self, request: Request) -> Response:
        return await self._domain(request)

    async def _domain(self, request: Request, status: int = 200, **context: Any) -> Response:
        uid = await self.user(request)
        done = request.session.pop("domain_done", None)
        if isinstance(done, dict) and not context:
            context = {
                "created": [str(j) for j in done.get("created", [])][:BATCH_SHOWN],
                "n_created": int(done.get("n_created", 0)),
                "line_errors": [str(e) for e in done.get("errors", [])][:BATCH_SHOWN],
                "failed": [str(e) for e in done.get("failed", [])][:BATCH_SHOWN],
            }
        creds = await self.call(self.service.list_domain_credentials, uid)
        return self.render(request, "domain.html", status, credentials=creds, **context)

    async def domain_credential_add(self, request: Request) -> Response:
        uid = await self.user(request)
        form = await self.form(request)
        kind = str(form.get("kind") or "")
        data: dict[str, Any] = {
            "kind": kind,
            "domain": str(form.get("domain") or ""),
            "label": str(form.get("label") or ""),
        }
        if kind == "service_account":
            upload = form.get("key_file")
            raw = b""
            if isinstance(upload, UploadFile) and upload.filename:
                raw = await upload.read(64 * 1024 + 1)
            text = raw.decode("utf-8", "replace") if raw else str(form.get("key_json") or "")
            data["key"] = text
        else:
            for name in ("tenant", "client_id", "client_secret"):
                data[name] = str(form.get(name) or "")
        try:
            view = await self.call(self.service.add_domain_credential, uid, data)
        except ServiceError as exc:
            return await self._domain(request, 400, error=f"Not stored: {exc}")
        finally:
            data.clear()
        flash(request, f"Stored {view['label']} for {view['domain']} (encrypted).")
        return RedirectResponse("/batch/domain", 303)

    async def domain_credential_delete(self, request: Request, credential_id: str) -> Response:
        uid = await self.user(request)
        await self.form(request)
        try:
            await self.call(self.service.delete_domain_credential, uid, credential_id)
        except ServiceError as exc:
            flash(request, f"Could not delete it: {exc}", "error")
        else:
            flash(request, "The credential is deleted: its key or secret is gone.")
        return RedirectResponse("/batch/domain", 303)

    async def domain_batch(self, request: Request) -> Response:
        from yippiemove.service.domainbatch import parse_user_lines

        uid = await self.user(request)
        form = await self.form(request)
        source = str(form.get("source") or "")
        dest = str(form.get("dest") or "")
        dest_side: dict[str, Any]
        if dest and dest != "server":
            dest_side = {"credential": dest}
        else:
            dest_side = {
                "host": str(form.get("dest_host") or "").strip(),
                "port": str(form.get("dest_port") or "").strip(),
                "security": str(form.get("dest_security") or "tls"),
            }
        users, bad, numbers = parse_user_lines(
            str(form.get("users") or "")[:BATCH_LIMIT], dest_is_credential="credential" in dest_side
        )
        if bad:
            return await self._domain(
                request, 400, error="Some lines are not in the expected shape.", line_errors=bad
            )
        if not users:
            return await self._domain(request, 400, error="List the addresses to move.")
        source_side: dict[str, Any] = {"credential": source}
        for name in ("host", "port", "security"):  # the provider's server unless given
            value = str(form.get(f"source_{name}") or "").strip()
            if value and (name != "security" or source_side.get("host")):
                source_side[name] = value
        request_body = {"source": source_side, "dest": dest_side, "users": users}
        try:
            result = await self.service.create_domain_batch(uid, request_body, line_numbers=numbers)
        except ServiceError as exc:
            return await self._domain(request, 400, error=f"Nothing was started: {exc}")
        finally:
            users.clear()
        if not result["created"]:
            return await self._domain(
                request,
                400,
                error="Nothing was started.",
                line_errors=result["errors"],
                failed=result["failed"],
            )
        request.session["domain_done"] = {
            "created": result["created"][:BATCH_SHOWN],
            "n_created": len(result["created"]),
            "errors": result["errors"][:BATCH_SHOWN],
            "failed": result["failed"][:BATCH_SHOWN],
        }
        return RedirectResponse("/batch/domain", 303)


#: What the web says when an order (or a re-run) names a transfer already under way.
ALREADY_RUNNING = (
    "This transfer is already running — here it is. Nothing new was started: the "
    "same source and destination are never copied twice at once."
)
#: Transfers (and failures) of a batch listed after the upload; the counts say the rest.
BATCH_SHOWN = 20


def _lines(n: int) -> str:
    return "1 line" if n == 1 else f"{n} lines"


def _too_big() -> str:
    return (
        f"The file is larger than {BATCH_LIMIT // 1024 // 1024} MB. Split it into smaller "
        "files and upload them one after the other."
    )


def build_pages_router(service: Service, templates: Jinja2Templates) -> APIRouter:
    p = Pages(service, templates)
    r = APIRouter(include_in_schema=False)
    html = {"response_class": HTMLResponse}
    r.add_api_route("/", p.home, methods=["GET"], **html)
    r.add_api_route("/signup", p.signup_page, methods=["GET"], **html)
    r.add_api_route("/signup", p.signup, methods=["POST"], **html)
    r.add_api_route("/login", p.login_page, methods=["GET"], **html)
    r.add_api_route("/login", p.login, methods=["POST"], **html)
    r.add_api_route("/logout", p.logout, methods=["POST"], **html)
    r.add_api_route("/signup/confirm", p.signup_confirm_page, methods=["GET"], **html)
    r.add_api_route("/signup/confirm", p.signup_confirm, methods=["POST"], **html)
    r.add_api_route("/account/password", p.password_page, methods=["GET"], **html)
    r.add_api_route("/account/password", p.password_change, methods=["POST"], **html)
    r.add_api_route("/transfers", p.transfers, methods=["GET"], **html)
    r.add_api_route("/transfers/new", p.new_page, methods=["GET"], **html)
    r.add_api_route("/transfers/new", p.new_post, methods=["POST"], **html)
    r.add_api_route("/transfers/{job_id}", p.job_page, methods=["GET"], **html)
    r.add_api_route("/transfers/{job_id}/summary", p.job_summary, methods=["GET"], **html)
    r.add_api_route("/transfers/{job_id}/events", p.job_events, methods=["GET"])
    r.add_api_route("/transfers/{job_id}/cancel", p.job_cancel, methods=["POST"])
    r.add_api_route("/transfers/{job_id}/rerun", p.job_rerun, methods=["POST"])
    r.add_api_route("/transfers/{job_id}/forget", p.job_forget, methods=["POST"])
    r.add_api_route("/transfers/{job_id}/report.json", p.job_report_json, methods=["GET"])
    r.add_api_route("/transfers/{job_id}/receipt", p.job_receipt, methods=["GET"])
    r.add_api_route("/tokens", p.tokens, methods=["GET"], **html)
    r.add_api_route("/tokens", p.token_create, methods=["POST"], **html)
    r.add_api_route("/tokens/{token_id}/revoke", p.token_revoke, methods=["POST"])
    r.add_api_route("/batch", p.batch_page, methods=["GET"], **html)
    r.add_api_route("/batch", p.batch, methods=["POST"], **html)
    r.add_api_route("/batch/domain", p.domain_page, methods=["GET"], **html)
    r.add_api_route("/batch/domain", p.domain_batch, methods=["POST"], **html)
    r.add_api_route("/batch/domain/credentials", p.domain_credential_add, methods=["POST"], **html)
    r.add_api_route(
        "/batch/domain/credentials/{credential_id}/delete",
        p.domain_credential_delete,
        methods=["POST"],
    )
    p.sign_ins.add_routes(r)
    add_report_pages(r, p)  # readable reports, undo (web/reports.py)
    add_resume_routes(r, p)  # issue 17: new passwords for a stopped transfer
    add_staged_routes(r, p)  # issue 17: staged moves (final pass, stop the schedule)
    add_batch_pages(r, p)  # issue 17: batches, their dashboard (web/batches.py)
    add_account_routes(r, p)  # issue 17: forgot password, address, delete (web/account.py)
    add_operator_pages(r, p)  # issue 17: the operator's console (web/operator.py)
    add_billing_pages(r, p)  # issue 20: quotes, payments, ledger (web/billing_pages.py)
    return r
