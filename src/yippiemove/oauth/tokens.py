"""Grants and the access tokens they give: :class:`GrantTokenSource`.

A *grant* is the secret stored (encrypted, like a password) instead of a password: a
JSON-able dict, one of

- ``{"kind": "refresh", "provider": KEY, "refresh_token": ..., "access_token"?: ...,
  "expires_at"?: float}``: a user's consent (authorization code or device flow);
- ``{"kind": "service_account", "provider": KEY, "key": {client_email, private_key,
  token_uri}, "subject": ADDRESS}``: Google domain-wide delegation (JWT bearer, RFC 7523);
- ``{"kind": "client_credentials", "provider": KEY, "tenant": ..., "client_id": ...,
  "client_secret": ...}``: Microsoft 365 application access;
- ``{"kind": "static", "access_token": ...}``: a token obtained elsewhere (a token file).

The OAuth2 protocol work is authlib's (``AsyncOAuth2Client`` for refresh and client
credentials, ``AsyncAssertionClient`` + ``JWTBearerGrant.sign`` for the JWT bearer
grant); this module decides when to ask, retries what is transient and turns the
provider's refusals into :class:`~yippiemove.imap.errors.ConsentRevoked`.  No token or
secret is ever in a message, a log line or a ``repr``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import httpx
from joserfc.errors import JoseError
from joserfc.jwk import RSAKey

from ..imap.errors import AuthenticationError, ConnectError, ConsentRevoked
from ._authlib import AsyncAssertionClient, AsyncOAuth2Client, OAuthError
from .config import OAuthConfig, OAuthConfigError, OAuthProvider
from .http import check_url, client_kwargs

__all__ = [
    "GRANT_KINDS",
    "GrantError",
    "GrantTokenSource",
    "Rotate",
    "TokenEndpointUnavailable",
    "check_grant",
    "redact_grant",
]

log = logging.getLogger(__name__)

GRANT_KINDS = ("refresh", "service_account", "client_credentials", "static")

#: Attempts at the token endpoint when it fails transiently (connection, timeout, 5xx,
#: 429), with these waits (seconds) between them.
RETRY_WAITS = (0.5, 2.0)

_SECRET_FIELDS = ("refresh_token", "access_token", "client_secret", "key")


class GrantError(ValueError):
    """A grant dict is malformed; the message names the field, never a value."""


class TokenEndpointUnavailable(ConnectError):
    """The provider's token endpoint could not be reached or failed (5xx, 429, timeout)
    after a few attempts: transient, the transfer's retry policy tries again later."""


def redact_grant(grant: Mapping[str, Any]) -> dict[str, Any]:
    """``grant`` with its secrets replaced by ``"***"`` (for a log line or an error)."""
    return {k: ("***" if k in _SECRET_FIELDS else v) for k, v in grant.items()}


def _need_str(grant: Mapping[str, Any], name: str, kind: str) -> str:
    v = grant.get(name)
    if not isinstance(v, str) or not v:
        raise GrantError(f"a {kind!r} grant needs a non-empty string {name!r}")
    return v


def check_grant(grant: object) -> dict[str, Any]:
    """``grant`` as a checked dict, or :class:`GrantError` naming what is wrong."""
    if not isinstance(grant, Mapping):
        raise GrantError("a grant must be a JSON object")
    kind = grant.get("kind")
    if kind not in GRANT_KINDS:
        raise GrantError(f"unknown grant kind {kind!r} (known: {', '.join(GRANT_KINDS)})")
    out = dict(grant)
    _need_str(out, "access_token" if kind == "static" else "provider", kind)
    if kind == "refresh":
        _need_str(out, "refresh_token", kind)
        if out.get("access_token") is not None:
            _need_str(out, "access_token", kind)
        exp = out.get("expires_at")
        if exp is not None and (isinstance(exp, bool) or not isinstance(exp, int | float)):
            raise GrantError("'expires_at' must be a number (seconds since the epoch)")
    elif kind == "service_account":
        key = out.get("key")
        if not isinstance(key, Mapping):
            raise GrantError("a 'service_account' grant needs its 'key' (the JSON key file)")
        for name in ("client_email", "private_key"):
            _need_str(key, name, "service_account key")
        _need_str(out, "subject", kind)
    elif kind == "client_credentials":
        for name in ("tenant", "client_id", "client_secret"):
            _need_str(out, name, kind)
    return out


Rotate = Callable[[dict[str, Any]], Awaitable[None] | None]


class GrantTokenSource:
    """Access tokens from a grant (implements ``transfer.model.TokenSource``).

    The token is cached and renewed ahead of its expiry: 60 s before, or 10% of its
    lifetime when that is less (a 2 s token is renewed 0.2 s ahead).  ``refresh=True``
    (the server refused the last token) renews it now -- once for all the connections
    that saw it refused at the same moment.  A provider that refuses the grant
    (``invalid_grant``, HTTP 401) raises :class:`ConsentRevoked`; a token endpoint that
    fails transiently is asked again (:data:`RETRY_WAITS`), then
    :class:`TokenEndpointUnavailable`.

    ``on_rotate(grant)`` is called with the new grant when the provider hands out a new
    refresh token (Microsoft rotates them), so that the caller stores it instead of the
    old one.  ``repr`` shows the kind and provider only.
    """

    def __init__(
        self,
        grant: Mapping[str, Any],
        config: OAuthConfig | None,
        *,
        on_rotate: Rotate | None = None,
        verify: Any = True,
    ) -> None:
        self._grant = check_grant(grant)
        self.kind: str = self._grant["kind"]
        self._provider: OAuthProvider | None = None
        if self.kind != "static":
            if config is None:
                raise OAuthConfigError("OAuth2 sign-in needs the operator's OAuth2 settings")
            self._provider = config.get(self._grant["provider"])
        self._on_rotate = on_rotate
        self._verify = verify
        self._token: str | None = self._grant.get("access_token")
        self._expires_at: float | None = self._grant.get("expires_at")
        self._renew_at: float | None = None
        if self._token is not None and self._expires_at is not None:
            left = self._expires_at - time.time()
            self._renew_at = self._expires_at - min(60.0, max(left, 0.0) * 0.1)
        self._generation = 0
        self._locks: dict[int, asyncio.Lock] = {}
        #: How many tokens were fetched from the provider (tests, logs).
        self.fetched = 0

    def __repr__(self) -> str:
        prov = self._grant.get("provider", "")
        return f"GrantTokenSource(kind={self.kind!r}, provider={prov!r})"

    @property
    def grant(self) -> dict[str, Any]:
        """The grant as it stands now (a rotated refresh token included)."""
        return dict(self._grant)

    @property
    def provider(self) -> OAuthProvider | None:
        return self._provider

    def _lock(self) -> asyncio.Lock:
        loop = id(asyncio.get_running_loop())
        lock = self._locks.get(loop)
        if lock is None:
            self._locks = {loop: asyncio.Lock()}  # an old loop's lock is dropped
            lock = self._locks[loop]
        return lock

    def _fresh(self) -> bool:
        return self._token is not None and (self._renew_at is None or time.time() < self._renew_at)

    async def access_token(self, *, refresh: bool = False) -> str:
        """A valid access token (see the class)."""
        seen = self._generation
        if not refresh and self._fresh():
            assert self._token is not None
            return self._token
        async with self._lock():
            if self._generation != seen and self._token is not None:
                return self._token  # renewed by another connection meanwhile
            if not refresh and self._fresh():
                assert self._token is not None
                return self._token
            if self.kind == "static":
                raise ConsentRevoked(
                    "the access token given (token file) was refused or has expired and "
                    "cannot be renewed: get a new one, or sign in again with OAuth2"
                )
            await self._fetch()
            assert self._token is not None
            return self._token

    async def _fetch(self) -> None:
        attempt = 0
        while True:
            started = time.time()
            try:
                token = await self._request()
                break
            except OAuthError as exc:
                raise self._refusal(exc.error, getattr(exc, "description", None)) from None
            except httpx.HTTPStatusError as exc:
                status = exc.response.status_code
                if status == 401:
                    raise self._refusal("unauthorized", None) from None
                if status < 500 and status != 429:
                    raise AuthenticationError(
                        f"{self._name()}'s token endpoint answered HTTP {status}"
                    ) from None
                why = f"HTTP {status}"
            except (httpx.TransportError, ValueError) as exc:
                why = type(exc).__name__ if not str(exc) else str(exc)
            if attempt >= len(RETRY_WAITS):
                raise TokenEndpointUnavailable(
                    f"{self._name()}'s token endpoint failed ({why}) after {attempt + 1} attempts"
                )
            log.info("token endpoint of %s failed (%s); trying again", self._name(), why)
            await asyncio.sleep(RETRY_WAITS[attempt])
            attempt += 1
        access = token.get("access_token")
        if not isinstance(access, str) or not access:
            raise AuthenticationError(f"{self._name()}'s token answer holds no access token")
        lifetime = token.get("expires_in")
        try:
            life = float(lifetime) if lifetime is not None else 3600.0
        except (TypeError, ValueError):
            life = 3600.0
        self._token = access
        self._expires_at = started + life
        self._renew_at = self._expires_at - min(60.0, life * 0.1)
        self._generation += 1
        self.fetched += 1
        self._grant["access_token"] = access
        self._grant["expires_at"] = self._expires_at
        new_refresh = token.get("refresh_token")
        if (
            self.kind == "refresh"
            and isinstance(new_refresh, str)
            and new_refresh
            and new_refresh != self._grant["refresh_token"]
        ):
            self._grant["refresh_token"] = new_refresh
            if self._on_rotate is not None:
                result = self._on_rotate(dict(self._grant))
                if asyncio.iscoroutine(result):
                    await result

    def _name(self) -> str:
        return self._provider.name if self._provider is not None else "the provider"

    def _refusal(self, error: str | None, description: str | None) -> AuthenticationError:
        what = {
            "refresh": "the sign-in (refresh token)",
            "service_account": "the service account's delegation",
            "client_credentials": "the application's credentials",
        }.get(self.kind, "the grant")
        if error in ("invalid_grant", "unauthorized", "invalid_client", "access_denied"):
            return ConsentRevoked(
                f"{self._name()} refused {what} ({error}): the consent was revoked or "
                "has expired; sign in again"
            )
        return AuthenticationError(
            f"{self._name()} refused the token request ({error or 'unknown error'}"
            f"{': ' + description[:200] if description else ''})"
        )

    async def _request(self) -> Mapping[str, Any]:
        prov = self._provider
        assert prov is not None
        g = self._grant
        kw = client_kwargs(self._verify)
        if self.kind == "refresh":
            url = check_url(prov.token_url, f"{prov.name} token URL")
            async with AsyncOAuth2Client(
                client_id=prov.client_id,
                client_secret=prov.client_secret,
                token_endpoint_auth_method="client_secret_post" if prov.client_secret else "none",
                **kw,
            ) as client:
                return await client.refresh_token(url, refresh_token=g["refresh_token"])
        if self.kind == "client_credentials":
            url = check_url(prov.token_url_for(g["tenant"]), f"{prov.name} token URL")
            async with AsyncOAuth2Client(
                client_id=g["client_id"],
                client_secret=g["client_secret"],
                token_endpoint_auth_method="client_secret_post",
                scope=" ".join(prov.app_scopes) or None,
                **kw,
            ) as client:
                return await client.fetch_token(url, grant_type="client_credentials")
        # service_account: a JWT signed with the key, sub = the mailbox (RFC 7523 2.1)
        key = g["key"]
        token_uri = str(key.get("token_uri") or prov.token_url)
        url = check_url(token_uri, "the service account's token_uri")
        try:
            private = RSAKey.import_key(key["private_key"])
        except (ValueError, TypeError, JoseError):
            raise GrantError("the service account's private_key is not an RSA key") from None
        header = {"alg": "RS256"}
        if isinstance(key.get("private_key_id"), str):
            header["kid"] = key["private_key_id"]
        async with AsyncAssertionClient(
            token_endpoint=url,
            issuer=key["client_email"],
            subject=g["subject"],
            audience=url,
            scope=" ".join(prov.app_scopes) or None,
            key=private,
            header=header,
            **kw,
        ) as client:
            return await client.refresh_token()

    async def revoke(self) -> bool:
        """Revoke the refresh token at the provider (RFC 7009), when it has an endpoint;
        True when it said yes.  Failures are not raised (forgetting goes on anyway)."""
        prov = self._provider
        if self.kind != "refresh" or prov is None or not prov.revoke_url:
            return False
        with contextlib.suppress(httpx.HTTPError, OAuthConfigError):
            url = check_url(prov.revoke_url, f"{prov.name} revocation URL")
            async with AsyncOAuth2Client(
                client_id=prov.client_id,
                client_secret=prov.client_secret,
                revocation_endpoint_auth_method=(
                    "client_secret_post" if prov.client_secret else "none"
                ),
                **client_kwargs(self._verify),
            ) as client:
                resp = await client.revoke_token(
                    url, token=self._grant["refresh_token"], token_type_hint="refresh_token"
                )
                return bool(resp.status_code == 200)
        return False
