"""Server-side web sessions: the cookie holds a random id only (docs/security.md).

``request.session`` is a small dict as with Starlette's signed-cookie sessions, but it
lives in the control database (``service/auth.py``): logging out deletes it, and a
password change deletes the account's other sessions, so an old cookie is refused at
once.  The id changes whenever the logged-in customer changes (log-in, log-out): a
session id planted before log-in is worthless after it.

The cookie is ``Secure`` whenever the request came over https; behind a reverse proxy,
the proxy's ``X-Forwarded-Proto`` (and ``X-Forwarded-For`` for the client address) are
believed only with the ``trust_proxy`` setting.
"""

from __future__ import annotations

import json
import secrets
from typing import TYPE_CHECKING, Any

from starlette.concurrency import run_in_threadpool
from starlette.datastructures import Headers, MutableHeaders
from starlette.requests import HTTPConnection
from starlette.types import ASGIApp, Message, Receive, Scope, Send

if TYPE_CHECKING:
    from yippiemove.service.auth import AuthStore

__all__ = ["ServerSessionMiddleware", "client_host", "is_https"]


def is_https(scope: Scope, trust_proxy: bool) -> bool:
    """Whether the browser talks to us over https (a trusted proxy may say so)."""
    if scope.get("scheme") in ("https", "wss"):
        return True
    if trust_proxy:
        proto = Headers(scope=scope).get("x-forwarded-proto", "")
        return proto.split(",")[0].strip().lower() == "https"
    return False


def client_host(scope: Scope, trust_proxy: bool) -> str | None:
    """The client's address: the peer, or behind a trusted proxy the address it saw
    (the right-most ``X-Forwarded-For`` entry: the one our proxy appended)."""
    if trust_proxy:
        forwarded = Headers(scope=scope).get("x-forwarded-for", "")
        last = forwarded.split(",")[-1].strip()
        if last:
            return last
    client = scope.get("client")
    return client[0] if client else None


def _uid(data: dict[str, Any]) -> int | None:
    uid = data.get("uid")
    return uid if isinstance(uid, int) and not isinstance(uid, bool) else None


class ServerSessionMiddleware:
    def __init__(
        self,
        app: ASGIApp,
        store: AuthStore,
        cookie: str,
        max_age: int,
        trust_proxy: bool = False,
        always_secure: bool = False,
    ) -> None:
        self.app = app
        self.store = store
        self.cookie = cookie
        self.max_age = max_age
        self.trust_proxy = trust_proxy
        self.always_secure = always_secure

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        sid = HTTPConnection(scope).cookies.get(self.cookie) or None
        loaded = await run_in_threadpool(self.store.session_load, sid) if sid else None
        if loaded is None:
            old_uid, data = None, {}
            known = False
        else:
            old_uid, data = loaded
            known = True
        before = json.dumps(data, sort_keys=True, default=str)
        scope["session"] = data
        secure = self.always_secure or is_https(scope, self.trust_proxy)

        async def send_wrapper(message: Message) -> None:
            if message["type"] == "http.response.start":
                session: dict[str, Any] = scope["session"]
                uid = _uid(session)
                after = json.dumps(session, sort_keys=True, default=str)
                headers = MutableHeaders(scope=message)
                if not session:
                    if known and sid:
                        await run_in_threadpool(self.store.session_delete, sid)
                    if sid:
                        headers.append("Set-Cookie", self._cookie("", 0, secure))
                elif not known or uid != old_uid or after != before:
                    new_sid = sid if known and uid == old_uid else None
                    if new_sid is None:
                        if known and sid:  # log-in or log-out: the old id is void
                            await run_in_threadpool(self.store.session_delete, sid)
                        new_sid = secrets.token_urlsafe(32)
                    await run_in_threadpool(self.store.session_save, new_sid, uid, session)
                    headers.append("Set-Cookie", self._cookie(new_sid, self.max_age, secure))
            await send(message)

        await self.app(scope, receive, send_wrapper)

    def _cookie(self, value: str, max_age: int, secure: bool) -> str:
        parts = [f"{self.cookie}={value}", "Path=/", f"Max-Age={max_age}", "HttpOnly"]
        parts.append("SameSite=Lax")
        if secure:
            parts.append("Secure")
        return "; ".join(parts)
