"""OAuth2 client side (issue 16, contract 3).

STAND-IN written on the oauth-web branch so that the service can be built against the
contract's names before oauth-client's package is merged; that package replaces this
one (take theirs on a merge conflict).  authlib (with httpx) does the OAuth2 work.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from ..imap.errors import ConsentRevoked

__all__ = ["GrantTokenSource", "OAuthConfig", "OAuthProvider"]


@dataclass(frozen=True)
class OAuthProvider:
    key: str
    name: str
    authorize_url: str
    token_url: str
    device_url: str | None = None
    revoke_url: str | None = None
    userinfo_url: str | None = None
    scopes: tuple[str, ...] = ()
    client_id: str = ""
    client_secret: str | None = field(default=None, repr=False)

    def to_dict(self) -> dict[str, Any]:
        return {
            "key": self.key,
            "name": self.name,
            "authorize_url": self.authorize_url,
            "token_url": self.token_url,
            "device_url": self.device_url,
            "revoke_url": self.revoke_url,
            "userinfo_url": self.userinfo_url,
            "scopes": list(self.scopes),
            "client_id": self.client_id,
            "client_secret": self.client_secret,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> OAuthProvider:
        known = {f for f in cls.__dataclass_fields__}
        values = {k: v for k, v in data.items() if k in known}
        values["scopes"] = tuple(values.get("scopes") or ())
        return cls(**values)


_MS = "https://login.microsoftonline.com/{tenant}/oauth2/v2.0"
_DEFAULTS: dict[str, dict[str, Any]] = {
    "google": {
        "name": "Google",
        "authorize_url": "https://accounts.google.com/o/oauth2/v2/auth",
        "token_url": "https://oauth2.googleapis.com/token",
        "device_url": "https://oauth2.googleapis.com/device/code",
        "revoke_url": "https://oauth2.googleapis.com/revoke",
        "userinfo_url": "https://openidconnect.googleapis.com/v1/userinfo",
        "scopes": ["https://mail.google.com/", "openid", "email"],
    },
    "microsoft": {
        "name": "Microsoft",
        "authorize_url": _MS + "/authorize",
        "token_url": _MS + "/token",
        "device_url": _MS + "/devicecode",
        "revoke_url": None,
        "userinfo_url": "https://graph.microsoft.com/oidc/userinfo",
        "scopes": [
            "https://outlook.office.com/IMAP.AccessAsUser.All",
            "offline_access",
            "openid",
            "email",
        ],
    },
}


def _secret_file(path: str | None) -> str | None:
    return Path(path).read_text(encoding="utf-8").strip() if path else None


@dataclass(frozen=True)
class OAuthConfig:
    providers: dict[str, OAuthProvider] = field(default_factory=dict, repr=False)

    def get(self, key: str) -> OAuthProvider | None:
        return self.providers.get(key)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> OAuthConfig:
        env = os.environ if env is None else env
        tenant = env.get("YIPPIEMOVE_MICROSOFT_TENANT") or "common"
        out: dict[str, OAuthProvider] = {}
        for key, prefix in (("google", "GOOGLE"), ("microsoft", "MICROSOFT")):
            client_id = env.get(f"YIPPIEMOVE_{prefix}_CLIENT_ID")
            if not client_id:
                continue
            base = dict(_DEFAULTS[key])
            for url in ("authorize_url", "token_url", "device_url"):
                if base.get(url):
                    base[url] = base[url].format(tenant=tenant)
            out[key] = OAuthProvider.from_dict(
                dict(
                    base,
                    key=key,
                    client_id=client_id,
                    client_secret=_secret_file(env.get(f"YIPPIEMOVE_{prefix}_CLIENT_SECRET_FILE")),
                )
            )
        path = env.get("YIPPIEMOVE_OAUTH_PROVIDERS_FILE")
        if path:
            for key, data in json.loads(Path(path).read_text(encoding="utf-8")).items():
                old = out.get(key)
                base = old.to_dict() if old else dict(_DEFAULTS.get(key, {}), key=key)
                base.update(data)
                base.setdefault("name", key.title())
                out[key] = OAuthProvider.from_dict(base)
        return cls(out)

    def to_dict(self) -> dict[str, Any]:
        return {k: p.to_dict() for k, p in self.providers.items()}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None) -> OAuthConfig:
        return cls({k: OAuthProvider.from_dict(v) for k, v in (data or {}).items()})


class GrantTokenSource:
    """A TokenSource from a grant: cached access token, refreshed ahead of expiry."""

    def __init__(
        self,
        grant: Mapping[str, Any],
        config: OAuthConfig,
        *,
        on_rotate: Callable[[dict[str, Any]], None] | None = None,
    ) -> None:
        self._grant = dict(grant)
        self._config = config
        self._on_rotate = on_rotate
        self._lock = asyncio.Lock()

    def __repr__(self) -> str:
        return f"GrantTokenSource({self._grant.get('kind')!r}, {self._grant.get('provider')!r})"

    async def access_token(self, *, refresh: bool = False) -> str:
        async with self._lock:
            g = self._grant
            if g.get("kind") == "static":
                return str(g["access_token"])
            token = g.get("access_token")
            expires = float(g.get("expires_at") or 0)
            if token and not refresh and expires - time.time() > 5:
                return str(token)
            await self._refresh()
            return str(self._grant["access_token"])

    async def _refresh(self) -> None:
        from authlib.integrations.httpx_client import AsyncOAuth2Client, OAuthError

        provider = self._config.get(str(self._grant.get("provider")))
        if provider is None:
            raise ConsentRevoked(
                f"the service has no OAuth2 provider {self._grant.get('provider')!r}; "
                "sign in again"
            )
        async with AsyncOAuth2Client(
            provider.client_id, provider.client_secret, timeout=20
        ) as client:
            try:
                tok = await client.refresh_token(
                    provider.token_url, refresh_token=self._grant["refresh_token"]
                )
            except OAuthError as exc:
                raise ConsentRevoked(
                    f"{provider.name} refused to renew the sign-in ({exc.error}); sign in again"
                ) from None
        new = dict(self._grant, access_token=tok["access_token"])
        if tok.get("expires_in"):
            new["expires_at"] = time.time() + float(tok["expires_in"])
        if tok.get("refresh_token") and tok["refresh_token"] != self._grant["refresh_token"]:
            new["refresh_token"] = tok["refresh_token"]
            if self._on_rotate is not None:
                self._on_rotate(dict(new))
        self._grant = new


def with_provider(config: OAuthConfig, provider: OAuthProvider) -> OAuthConfig:
    return replace(config, providers=dict(config.providers, **{provider.key: provider}))
