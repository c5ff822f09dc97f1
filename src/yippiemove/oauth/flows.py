"""Getting a user's consent: authorization code with PKCE, the device flow, a loopback
redirect for the command line.

- :func:`begin` / :func:`finish`: the authorization-code flow (RFC 6749 4.1) with PKCE
  S256 (RFC 7636) and ``state``: ``begin`` gives the URL to send the user to and what
  to keep until they come back (:class:`Pending`), ``finish`` exchanges the code for a
  *refresh* grant and says whose account it is (the id_token's ``email``, else the
  provider's userinfo).  The web order uses these with its own redirect URI.
- :func:`loopback_flow`: the same for a terminal, the redirect going to a one-shot
  HTTP server on 127.0.0.1 at a random port (RFC 8252 7.3); Google requires it.
- :func:`device_flow`: RFC 8628 (Microsoft offers it; Google not for the mail scope).

authlib builds the authorization URL, the PKCE challenge and the token requests; the
device flow's polling follows RFC 8628 3.4-3.5 (authlib has no client for it).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import html
import json
import threading
import time
import webbrowser
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, HTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
from authlib.common.security import generate_token

from ..imap.errors import AuthenticationError
from ._authlib import AsyncOAuth2Client, OAuthError
from .config import OAuthProvider
from .http import check_url, client_kwargs

__all__ = [
    "DEVICE_GRANT",
    "FlowError",
    "Pending",
    "begin",
    "device_flow",
    "finish",
    "loopback_flow",
]

DEVICE_GRANT = "urn:ietf:params:oauth:grant-type:device_code"


class FlowError(AuthenticationError):
    """A sign-in did not complete (refused, timed out, state mismatch, no address)."""


@dataclass(frozen=True)
class Pending:
    """A sign-in under way: the URL to send the user to, and what to keep (server-side,
    e.g. in the session) until they come back.  ``code_verifier`` is not in ``repr``."""

    url: str
    state: str
    code_verifier: str = field(repr=False)

    def as_dict(self) -> dict[str, str]:
        return {"url": self.url, "state": self.state, "code_verifier": self.code_verifier}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Pending:
        return cls(str(data["url"]), str(data["state"]), str(data["code_verifier"]))


def _client(provider: OAuthProvider, redirect_uri: str | None, verify: Any) -> AsyncOAuth2Client:
    return AsyncOAuth2Client(
        client_id=provider.client_id,
        client_secret=provider.client_secret,
        token_endpoint_auth_method="client_secret_post" if provider.client_secret else "none",
        scope=" ".join(provider.scopes),
        redirect_uri=redirect_uri,
        code_challenge_method="S256",
        **client_kwargs(verify),
    )


def _need_client(provider: OAuthProvider) -> None:
    if not provider.configured:
        raise FlowError(
            f"OAuth2 sign-in with {provider.name} is not set up: the operator sets "
            f"YIPPIEMOVE_{provider.key.upper()}_CLIENT_ID (docs/providers.md, OAuth2)"
        )


def begin(provider: OAuthProvider, redirect_uri: str, *, login_hint: str | None = None) -> Pending:
    """Start an authorization-code sign-in: the authorization URL (PKCE S256, a random
    ``state``, the provider's scopes and extra parameters, ``login_hint``)."""
    _need_client(provider)
    check_url(provider.authorize_url, f"{provider.name} authorization URL")
    verifier = generate_token(64)
    state = generate_token(32)
    extra: dict[str, str] = dict(provider.authorize_params)
    if login_hint:
        extra["login_hint"] = login_hint
    client = AsyncOAuth2Client(
        client_id=provider.client_id,
        scope=" ".join(provider.scopes),
        redirect_uri=redirect_uri,
        code_challenge_method="S256",
    )
    url, _ = client.create_authorization_url(
        provider.authorize_url, state=state, code_verifier=verifier, **extra
    )
    return Pending(url, state, verifier)


def _claims(id_token: object) -> dict[str, Any]:
    """The claims of an id_token received straight from the token endpoint over TLS.

    Its signature is not checked: OpenID Connect Core 3.1.3.7 lets TLS server
    validation stand for it when the client got the token directly from the token
    endpoint, which is the case here.  Only the address is read from it."""
    if not isinstance(id_token, str) or id_token.count(".") != 2:
        return {}
    payload = id_token.split(".")[1]
    try:
        data = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    except (ValueError, binascii.Error):
        return {}
    return data if isinstance(data, dict) else {}


def _address_from(claims: Mapping[str, Any]) -> str | None:
    if claims.get("email_verified") is False:
        return None
    for name in ("email", "preferred_username", "upn"):
        v = claims.get(name)
        if isinstance(v, str) and "@" in v:
            return v.strip()
    return None


async def _address(provider: OAuthProvider, token: Mapping[str, Any], verify: Any) -> str:
    found = _address_from(_claims(token.get("id_token")))
    if found is None and provider.userinfo_url:
        url = check_url(provider.userinfo_url, f"{provider.name} userinfo URL")
        async with httpx.AsyncClient(**client_kwargs(verify)) as http:
            try:
                resp = await http.get(
                    url, headers={"Authorization": f"Bearer {token['access_token']}"}
                )
                if resp.status_code == 200:
                    data = resp.json()
                    if isinstance(data, dict):
                        found = _address_from(data)
            except (httpx.HTTPError, ValueError):
                found = None
    if found is None:
        raise FlowError(
            f"{provider.name} did not say which account signed in (no verified e-mail "
            "address in the id_token or userinfo)"
        )
    return found


def _grant(provider: OAuthProvider, token: Mapping[str, Any], started: float) -> dict[str, Any]:
    refresh = token.get("refresh_token")
    access = token.get("access_token")
    if not isinstance(refresh, str) or not refresh:
        raise FlowError(
            f"{provider.name} gave no refresh token (offline access was not granted); "
            "sign in again and allow it"
        )
    grant: dict[str, Any] = {"kind": "refresh", "provider": provider.key, "refresh_token": refresh}
    if isinstance(access, str) and access:
        grant["access_token"] = access
        try:
            grant["expires_at"] = started + float(token.get("expires_in", 3600))
        except (TypeError, ValueError):
            grant["expires_at"] = started + 3600.0
    return grant


def _token_url(provider: OAuthProvider) -> str:
    return check_url(provider.token_url, f"{provider.name} token URL")


async def finish(
    provider: OAuthProvider,
    pending: Pending,
    code: str,
    redirect_uri: str,
    *,
    state: str | None = None,
    verify: Any = True,
) -> tuple[dict[str, Any], str]:
    """Exchange the authorization ``code`` (with the PKCE verifier) for a refresh grant
    and the signed-in address.  ``state``: the one that came back, checked against
    ``pending.state`` when given (the caller must check it otherwise)."""
    if state is not None and state != pending.state:
        raise FlowError("the sign-in answer does not belong to this sign-in (state differs)")
    started = time.time()
    try:
        async with _client(provider, redirect_uri, verify) as client:
            token = await client.fetch_token(
                _token_url(provider),
                grant_type="authorization_code",
                code=code,
                code_verifier=pending.code_verifier,
            )
    except OAuthError as exc:
        raise FlowError(f"{provider.name} refused the sign-in ({exc.error})") from None
    except httpx.HTTPError as exc:
        raise FlowError(f"{provider.name}'s token endpoint failed ({type(exc).__name__})") from None
    grant = _grant(provider, token, started)
    return grant, await _address(provider, token, verify)


# ------------------------------------------------------------------- device flow


@dataclass(frozen=True)
class DeviceCode:
    """What the user is shown: go to ``verification_uri`` and type ``user_code``."""

    user_code: str
    verification_uri: str
    verification_uri_complete: str | None
    expires_in: float
    interval: float


async def device_flow(
    provider: OAuthProvider,
    show: Callable[[DeviceCode], None],
    *,
    verify: Any = True,
    max_wait: float | None = None,
) -> tuple[dict[str, Any], str]:
    """RFC 8628: ask for a device code, ``show`` it, poll the token endpoint until the
    user allowed (or refused, or the code expired)."""
    _need_client(provider)
    if not provider.device_url:
        raise FlowError(f"{provider.name} offers no device sign-in for mail; use the browser")
    url = check_url(provider.device_url, f"{provider.name} device URL")
    async with _client(provider, None, verify) as client:
        data = {"client_id": provider.client_id, "scope": " ".join(provider.scopes)}
        try:
            resp = await client.request("POST", url, data=data, withhold_token=True)
            answer = resp.json()
        except (httpx.HTTPError, ValueError) as exc:
            raise FlowError(
                f"{provider.name}'s device endpoint failed ({type(exc).__name__})"
            ) from None
        if resp.status_code != 200 or not isinstance(answer, dict) or "device_code" not in answer:
            err = answer.get("error") if isinstance(answer, dict) else None
            raise FlowError(
                f"{provider.name} refused the device sign-in ({err or resp.status_code})"
            )
        code = DeviceCode(
            user_code=str(answer.get("user_code", "")),
            verification_uri=str(answer.get("verification_uri") or answer.get("verification_url")),
            verification_uri_complete=answer.get("verification_uri_complete"),
            expires_in=float(answer.get("expires_in", 900)),
            interval=float(answer.get("interval", 5)),
        )
        show(code)
        interval = code.interval
        deadline = time.monotonic() + min(code.expires_in, max_wait or code.expires_in)
        while True:
            await asyncio.sleep(interval)
            if time.monotonic() > deadline:
                raise FlowError("the device sign-in was not completed in time; try again")
            started = time.time()
            try:
                token = await client.fetch_token(
                    _token_url(provider),
                    grant_type=DEVICE_GRANT,
                    device_code=answer["device_code"],
                )
            except OAuthError as exc:
                if exc.error == "authorization_pending":
                    continue
                if exc.error == "slow_down":
                    interval += 5  # RFC 8628 3.5
                    continue
                raise FlowError(f"{provider.name} refused the sign-in ({exc.error})") from None
            except httpx.HTTPError:
                continue  # transient; the deadline bounds it
            break
    return _grant(provider, token, started), await _address(provider, token, verify)


# ----------------------------------------------------------------- loopback flow

_DONE_PAGE = (
    "<!doctype html><meta charset=utf-8><title>yippiemove</title>"
    "<p>{msg}</p><p>You can close this window and go back to the terminal.</p>"
)


class _Catcher(HTTPServer):
    """One-shot HTTP server on 127.0.0.1 that waits for the provider's redirect."""

    answer: dict[str, str] | None = None
    expected_path = "/"

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.got = threading.Event()


class _Handler(BaseHTTPRequestHandler):
    server: _Catcher

    def do_GET(self) -> None:
        parts = urlsplit(self.path)
        if parts.path != self.server.expected_path or self.server.answer is not None:
            self.send_error(404)
            return
        q = {k: v[0] for k, v in parse_qs(parts.query).items() if v}
        if "code" not in q and "error" not in q:
            self.send_error(400)
            return
        self.server.answer = q
        msg = "Signed in." if "code" in q else f"Sign-in refused ({q.get('error', '')})."
        body = _DONE_PAGE.format(msg=html.escape(msg)).encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
        self.server.got.set()

    def log_message(self, format: str, *args: Any) -> None:  # the query holds the code
        return


async def loopback_flow(
    provider: OAuthProvider,
    show: Callable[[str], None],
    *,
    login_hint: str | None = None,
    open_browser: bool = False,
    timeout: float = 300.0,
    verify: Any = True,
) -> tuple[dict[str, Any], str]:
    """The authorization-code flow for a terminal: a one-shot HTTP server on
    127.0.0.1 at a random port takes the redirect; ``show(url)`` tells the user where
    to sign in (and the browser is opened only when ``open_browser``)."""
    _need_client(provider)
    server = _Catcher()
    port = server.server_address[1]
    redirect_uri = f"http://127.0.0.1:{port}/"
    thread = threading.Thread(target=_serve, args=(server,), daemon=True)
    thread.start()
    try:
        pending = begin(provider, redirect_uri, login_hint=login_hint)
        show(pending.url)
        if open_browser:
            webbrowser.open(pending.url)
        got = await asyncio.to_thread(server.got.wait, timeout)
        if not got or server.answer is None:
            raise FlowError(f"no sign-in within {int(timeout)} s; try again")
        answer = server.answer
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)
    if answer.get("state") != pending.state:
        raise FlowError("the sign-in answer does not belong to this sign-in (state differs)")
    if "error" in answer:
        raise FlowError(f"{provider.name} refused the sign-in ({answer['error']})")
    return await finish(provider, pending, answer["code"], redirect_uri, verify=verify)


def _serve(server: _Catcher) -> None:
    server.serve_forever(poll_interval=0.1)
