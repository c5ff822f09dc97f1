"""Session secret, CSRF tokens and ASGI middleware for the web front door (log-in
throttling and sessions: service/auth.py, web/sessions.py)."""

from __future__ import annotations

import hmac
import os
import secrets
from pathlib import Path

from starlette.datastructures import FormData, Headers
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

CSRF_FIELD = "csrf_token"
CSRF_HEADER = "x-csrf-token"


def load_secret_key(path: Path) -> str:
    """The session signing key; created (0600) when the file does not exist yet."""
    path = Path(path)
    try:
        key = path.read_text().strip()
    except FileNotFoundError:
        path.parent.mkdir(parents=True, exist_ok=True)
        key = secrets.token_urlsafe(48)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:  # another process was faster
            return load_secret_key(path)
        with os.fdopen(fd, "w") as f:
            f.write(key + "\n")
        return key
    if len(key) < 16:
        raise RuntimeError(f"the session key in {path} is too short (at least 16 characters)")
    return key


# -- CSRF ---------------------------------------------------------------------------------


class CsrfError(Exception):
    """A form arrived without the session's token (expired page, or another site)."""


def csrf_token(request: Request) -> str:
    """The session's CSRF token, made on first use."""
    token = request.session.get("csrf")
    if not isinstance(token, str) or len(token) < 20:
        token = secrets.token_urlsafe(32)
        request.session["csrf"] = token
    return token


def check_csrf(request: Request, form: FormData | None) -> None:
    expected = request.session.get("csrf")
    sent = request.headers.get(CSRF_HEADER)
    if form is not None and not sent:
        value = form.get(CSRF_FIELD)
        sent = value if isinstance(value, str) else None
    if not expected or not sent or not hmac.compare_digest(str(expected), sent):
        raise CsrfError()


# -- middleware ---------------------------------------------------------------------------

CSP = (
    "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
    "connect-src 'self'; font-src 'self'; object-src 'none'; base-uri 'none'; "
    "form-action 'self'; frame-ancestors 'none'"
)


class SecurityHeadersMiddleware:
    """CSP (nothing loads from elsewhere), no framing, no sniffing, no caching of pages."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path: str = scope.get("path", "")

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                present = {k.lower() for k, _ in headers}

                def add(name: str, value: str) -> None:
                    if name.encode() not in present:
                        headers.append((name.encode(), value.encode()))

                add("content-security-policy", CSP)
                add("x-content-type-options", "nosniff")
                add("x-frame-options", "DENY")
                add("referrer-policy", "same-origin")
                add("permissions-policy", "camera=(), microphone=(), geolocation=()")
                if not path.startswith("/static/"):
                    add("cache-control", "no-store")
                message["headers"] = headers
            await send(message)

        await self.app(scope, receive, send_with_headers)


class BodyLimitMiddleware:
    """Refuse request bodies over a size limit (413), by Content-Length or while reading.

    The error is raised from ``receive`` as an ``HTTPException(413)``, so it surfaces where
    the endpoint reads the body and the app's handlers turn it into JSON or a page.
    """

    def __init__(self, app: ASGIApp, default: int, per_path: dict[str, int] | None = None) -> None:
        self.app = app
        self.default = default
        self.per_path = per_path or {}

    def limit_for(self, path: str) -> int:
        return self.per_path.get(path, self.default)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.limit_for(scope.get("path", ""))
        declared = Headers(scope=scope).get("content-length")
        too_big = HTTPException(413, f"the request is too large (limit {limit // 1024} KB)")
        seen = 0

        async def limited_receive() -> Message:
            nonlocal seen
            if declared is not None and declared.isascii() and declared.isdigit() and int(declared) > limit:
                raise too_big
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    raise too_big
            return message

        await self.app(scope, limited_receive, send)
