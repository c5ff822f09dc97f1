"""The web front door: ``create_app(service)`` -> a FastAPI app with the pages and /api/v1.

See docs/web.md.  Everything the app knows about customers, jobs and mailboxes comes from
``yippiemove.service.core.Service`` (docs/service-contract.md).
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import signal
import threading
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates
from starlette.exceptions import HTTPException as StarletteHTTPException

from yippiemove.service.auth import AuthStore
from yippiemove.service.core import AlreadyActive, ServiceError
from yippiemove.service.db import Database

from . import fmt
from .api import API_PREFIX, build_api_router
from .docs import add_docs, one_error_shape
from .pages import BATCH_LIMIT, SSE_INTERVAL, LoginRequired, build_pages_router
from .schemas import error_body, validation_message
from .security import (
    BodyLimitMiddleware,
    CsrfError,
    SecurityHeadersMiddleware,
    csrf_token,
)
from .sessions import ServerSessionMiddleware
from .signin import hide_callback_queries

if TYPE_CHECKING:
    from yippiemove.service.config import Settings
    from yippiemove.service.core import Service

__all__ = ["create_app"]

log = logging.getLogger("yippiemove.web")

HERE = Path(__file__).resolve().parent
TEMPLATES = HERE / "templates"
STATIC = HERE / "static"
SESSION_COOKIE = "yippiemove_session"
SESSION_MAX_AGE = 14 * 24 * 3600
BODY_LIMIT = 256 * 1024  # any request but a batch upload

_TITLES = {
    400: "That did not work",
    401: "Please log in",
    403: "Not allowed",
    404: "Not found",
    405: "Not allowed",
    409: "Not possible right now",
    413: "Too large",
    422: "That did not work",
    429: "Too many attempts",
}


def _auth_store(service: Service, settings: Settings) -> AuthStore:
    """The service's sessions and throttle (in its control database); a stand-in
    service without one (tests' fakes) gets a store on ``settings.database_url``."""
    store = getattr(service, "auth", None)
    if isinstance(store, AuthStore):
        return store
    return AuthStore(Database(settings.database_url))


def _static_version() -> str:
    h = hashlib.sha256()
    for p in sorted(STATIC.iterdir()):
        if p.is_file():
            h.update(p.name.encode() + p.read_bytes())
    return h.hexdigest()[:10]


def _watch_shutdown(stopping: threading.Event) -> Callable[[], None]:
    """Set ``stopping`` when the server is told to stop (SIGTERM, SIGINT).

    A server shutting down gracefully (uvicorn) waits for open responses to finish, and
    a live event stream never finishes by itself; the streams watch this flag and end.
    The server's own handlers (installed before the app starts) are wrapped, not
    replaced.  Returns a function that restores them.
    """
    if threading.current_thread() is not threading.main_thread():
        return lambda: None
    previous: dict[int, Any] = {}
    for sig in (signal.SIGTERM, signal.SIGINT):
        prev = signal.getsignal(sig)
        if not callable(prev):
            continue

        def handler(signum: int, frame: Any, prev: Callable[..., Any] = prev) -> None:
            stopping.set()
            prev(signum, frame)

        previous[sig] = prev
        signal.signal(sig, handler)

    def restore() -> None:
        for sig, prev in previous.items():
            with contextlib.suppress(ValueError):
                signal.signal(sig, prev)

    return restore


def _is_api(request: Request) -> bool:
    path = request.url.path
    return path == API_PREFIX or path.startswith(API_PREFIX + "/") or path == "/openapi.json"


def create_app(service: Service, *, settings: Settings | None = None) -> FastAPI:
    """The web app for ``service``: pages at /, the REST API at /api/v1 (docs/web.md).

    Long for a reason: it wires the middleware, exception handlers and lifespan hooks
    as closures over the one app; each is short."""
    if settings is None:
        settings = getattr(service, "settings", None)
    if settings is None:
        from yippiemove.service.config import Settings

        settings = Settings.load()

    stopping = threading.Event()
    hide_callback_queries()  # the OAuth2 answer's code and state stay out of the access log

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        stopping.clear()
        restore = _watch_shutdown(stopping)
        try:
            yield
        finally:
            stopping.set()
            restore()

    app = FastAPI(
        lifespan=lifespan,
        title="yippiemove",
        version="1",
        summary="Move a mailbox from one IMAP account to another, exactly.",
        description=(
            "Order and follow mailbox transfers.  Authenticate with an API token from the "
            "Tokens page: `Authorization: Bearer TOKEN`.  Errors are JSON "
            '`{"code": "...", "message": "..."}` (the `ErrorOut` schema, whatever the '
            "status).  Passwords are write-only.  This description is also served as a "
            "page at `/docs`."
        ),
        docs_url=None,  # FastAPI's pages load from a CDN and run inline scripts: see docs.py
        redoc_url=None,
    )
    one_error_shape(app)
    app.state.service = service
    app.state.settings = settings
    app.state.sse_interval = SSE_INTERVAL
    app.state.stopping = stopping  # set when the server stops: live streams end
    app.state.auth = _auth_store(service, settings)
    app.state.trust_proxy = bool(getattr(settings, "trust_proxy", False))
    app.state.session_cookie = SESSION_COOKIE

    templates = Jinja2Templates(directory=str(TEMPLATES))
    templates.env.filters.update(fmt.FILTERS)
    templates.env.globals["percent"] = fmt.percent
    templates.env.globals["static_version"] = _static_version()
    templates.env.globals["api_prefix"] = API_PREFIX

    app.include_router(build_api_router(service))
    app.include_router(build_pages_router(service, templates))
    app.mount("/static", StaticFiles(directory=str(STATIC)), name="static")
    add_docs(app)

    @app.get("/healthz", include_in_schema=False)
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    # -- errors: JSON {"error"} for the API, a page for people --------------------------

    def error_page(request: Request, status: int, message: str) -> Response:
        context: dict[str, Any] = {
            "title": _TITLES.get(status, "Something went wrong"),
            "message": message,
            "status": status,
            "csrf": csrf_token(request) if "session" in request.scope else "",
            "user_email": getattr(request.state, "user_email", None),
            "flashes": [],
        }
        return templates.TemplateResponse(request, "error.html", context, status_code=status)

    def api_error(status: int, message: str, **extra: Any) -> JSONResponse:
        headers = extra.pop("headers", None)
        body = error_body(status, message, **extra)
        return JSONResponse(body, status_code=status, headers=headers)

    @app.exception_handler(ServiceError)
    async def on_service_error(request: Request, exc: ServiceError) -> Response:
        status = int(getattr(exc, "status", 400) or 400)
        message = str(exc) or "the request was refused"
        if _is_api(request):
            if isinstance(exc, AlreadyActive):  # names the transfer under way
                return api_error(status, message, code="already_active", id=exc.job_id)
            return api_error(status, message)
        if status == 404:
            message = "There is no such page or transfer in your account."
        return error_page(request, status, message)

    @app.exception_handler(RequestValidationError)
    async def on_validation_error(request: Request, exc: RequestValidationError) -> Response:
        errors = exc.errors()
        message, items = validation_message(errors)
        ctype = request.headers.get("content-type", "")
        if message.startswith("the request body must be") and "json" not in ctype.lower():
            message += " (send JSON with Content-Type: application/json)"
        status = 400 if any(e.get("type") == "json_invalid" for e in errors) else 422
        if _is_api(request):
            return api_error(status, message, errors=items)
        return error_page(request, 400, message)

    @app.exception_handler(StarletteHTTPException)
    async def on_http_error(request: Request, exc: StarletteHTTPException) -> Response:
        message = str(exc.detail) if exc.detail else "error"
        if exc.status_code == 404 and message == "Not Found":
            message = "There is no such page." if not _is_api(request) else "not found"
        if exc.status_code == 405 and message == "Method Not Allowed":
            message = "method not allowed"
        if _is_api(request):
            return api_error(exc.status_code, message, headers=exc.headers)
        return error_page(request, exc.status_code, message[:1].upper() + message[1:])

    @app.exception_handler(CsrfError)
    async def on_csrf(request: Request, exc: CsrfError) -> Response:
        return error_page(
            request,
            403,
            "This form has expired or was sent from another site. Go back, reload the page "
            "and try again. (Cookies must be enabled.)",
        )

    @app.exception_handler(LoginRequired)
    async def on_login_required(request: Request, exc: LoginRequired) -> Response:
        if request.url.path.endswith("/events") or request.url.path.endswith("/summary"):
            return HTMLResponse("Please log in.", status_code=401)
        from urllib.parse import quote

        return RedirectResponse(f"/login?next={quote(exc.next_path, safe='/')}", 303)

    @app.exception_handler(Exception)
    async def on_bug(request: Request, exc: Exception) -> Response:
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        if _is_api(request):
            return api_error(500, "internal error; the operator can find it in the log")
        return error_page(request, 500, "Something went wrong on our side. Please try again.")

    # -- middleware (the last added runs first) -------------------------------------------
    app.add_middleware(
        ServerSessionMiddleware,
        store=app.state.auth,
        cookie=SESSION_COOKIE,
        max_age=SESSION_MAX_AGE,
        trust_proxy=app.state.trust_proxy,
        always_secure=str(getattr(settings, "base_url", "")).startswith("https://"),
    )
    app.add_middleware(
        BodyLimitMiddleware,
        default=BODY_LIMIT,
        per_path={"/batch": BATCH_LIMIT + 64 * 1024},
    )
    app.add_middleware(SecurityHeadersMiddleware)
    return app
