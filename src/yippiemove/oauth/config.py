"""Operator settings of the OAuth2 providers: endpoints, scopes, the registered client.

Endpoints and client ids are the operator's (environment, a providers file), never a
customer's input: :meth:`OAuthConfig.from_env`.  The job process gets the settings on
its stdin (:meth:`OAuthConfig.to_dict` / :meth:`OAuthConfig.from_dict`), the client
secrets with them (stdin is not visible in ``/proc``).

Endpoints, as the providers document them (docs/providers.md, "OAuth2", cites the pages):

- Google: authorization ``https://accounts.google.com/o/oauth2/v2/auth``, token
  ``https://oauth2.googleapis.com/token``, revocation ``https://oauth2.googleapis.com/revoke``,
  userinfo ``https://openidconnect.googleapis.com/v1/userinfo``; scope
  ``https://mail.google.com/`` (IMAP) plus ``openid email``; a refresh token only with
  ``access_type=offline`` (and ``prompt=consent`` to get one again).  Google's device flow
  does not allow the mail scope: the CLI uses a loopback redirect.
- Microsoft identity platform v2: ``https://login.microsoftonline.com/{tenant}/oauth2/v2.0/
  authorize|token|devicecode``; scopes ``https://outlook.office.com/IMAP.AccessAsUser.All
  offline_access openid email``; application access (client credentials):
  ``https://outlook.office365.com/.default``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

__all__ = [
    "GOOGLE",
    "MICROSOFT",
    "OAuthConfig",
    "OAuthConfigError",
    "OAuthProvider",
    "microsoft",
]


class OAuthConfigError(ValueError):
    """The OAuth2 settings are incomplete or malformed; the message says which."""


@dataclass(frozen=True)
class OAuthProvider:
    """One OAuth2 provider as the operator registered the application with it.

    ``client_secret`` never shows in ``repr``."""

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
    #: Extra parameters of the authorization request (Google: ``access_type=offline``).
    authorize_params: Mapping[str, str] = field(default_factory=dict)
    #: Scopes of application access (client credentials), e.g. Microsoft's ``.default``.
    app_scopes: tuple[str, ...] = ()
    #: Token URL of another tenant (client credentials): ``{tenant}`` is replaced.
    tenant_token_url: str | None = None

    @property
    def configured(self) -> bool:
        """A client id is set (without one no user can sign in)."""
        return bool(self.client_id)

    def token_url_for(self, tenant: str | None) -> str:
        """The token endpoint of ``tenant`` (client credentials), else :attr:`token_url`."""
        if tenant and self.tenant_token_url:
            return self.tenant_token_url.replace("{tenant}", tenant)
        return self.token_url

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["scopes"] = list(self.scopes)
        out["app_scopes"] = list(self.app_scopes)
        out["authorize_params"] = dict(self.authorize_params)
        return out

    @classmethod
    def from_dict(
        cls, key: str, data: Mapping[str, Any], base: OAuthProvider | None = None
    ) -> OAuthProvider:
        """A provider from its JSON form; fields not given are ``base``'s.  Unknown
        fields are an error (a typo would silently keep a default endpoint)."""
        if not isinstance(data, Mapping):
            raise OAuthConfigError(f"OAuth2 provider {key!r}: expected an object")
        known = {f for f in cls.__dataclass_fields__ if f != "key"}
        unknown = sorted(set(data) - known - {"key"})
        if unknown:
            raise OAuthConfigError(
                f"OAuth2 provider {key!r}: unknown field(s) {', '.join(unknown)}"
            )
        values: dict[str, Any] = {}
        for name in known:
            if name not in data:
                continue
            v = data[name]
            if name in ("scopes", "app_scopes"):
                if isinstance(v, str):
                    v = v.split()
                if not isinstance(v, list | tuple) or not all(isinstance(s, str) for s in v):
                    raise OAuthConfigError(f"OAuth2 provider {key!r}: {name} must be strings")
                v = tuple(v)
            elif name == "authorize_params":
                if not isinstance(v, Mapping):
                    raise OAuthConfigError(f"OAuth2 provider {key!r}: {name} must be an object")
                v = {str(a): str(b) for a, b in v.items()}
            elif v is not None and not isinstance(v, str):
                raise OAuthConfigError(f"OAuth2 provider {key!r}: {name} must be a string")
            values[name] = v
        if base is not None:
            if any(f in data for f in _ENDPOINTS):
                # Endpoints come as a set: one not given is not left at the built-in's
                # (a test server's token URL beside Google's real revocation URL).
                for f in _ENDPOINTS:
                    values.setdefault(f, None)
                for need in ("authorize_url", "token_url"):
                    if not values.get(need):
                        raise OAuthConfigError(f"OAuth2 provider {key!r}: {need} is missing")
            return replace(base, **values)
        for need in ("authorize_url", "token_url"):
            if not values.get(need):
                raise OAuthConfigError(f"OAuth2 provider {key!r}: {need} is missing")
        values.setdefault("name", key)
        return cls(key=key, **values)


_ENDPOINTS = (
    "authorize_url",
    "token_url",
    "device_url",
    "revoke_url",
    "userinfo_url",
    "tenant_token_url",
)

GOOGLE = OAuthProvider(
    key="google",
    name="Google",
    authorize_url="https://accounts.google.com/o/oauth2/v2/auth",
    token_url="https://oauth2.googleapis.com/token",
    device_url=None,  # Google's device flow does not allow the mail scope
    revoke_url="https://oauth2.googleapis.com/revoke",
    userinfo_url="https://openidconnect.googleapis.com/v1/userinfo",
    scopes=("https://mail.google.com/", "openid", "email"),
    authorize_params={"access_type": "offline", "prompt": "consent"},
    app_scopes=("https://mail.google.com/",),  # service accounts (domain-wide delegation)
)

_MS = "https://login.microsoftonline.com/{tenant}/oauth2/v2.0/"


def microsoft(tenant: str = "common") -> OAuthProvider:
    """Microsoft identity platform v2 for ``tenant`` (``common``: work and personal
    accounts; ``organizations``; ``consumers``; or a tenant id / domain)."""
    base = _MS.replace("{tenant}", tenant)
    return OAuthProvider(
        key="microsoft",
        name="Microsoft",
        authorize_url=base + "authorize",
        token_url=base + "token",
        device_url=base + "devicecode",
        revoke_url=None,  # Microsoft has no RFC 7009 endpoint
        userinfo_url=None,  # the id_token's email / preferred_username names the account
        scopes=(
            "https://outlook.office.com/IMAP.AccessAsUser.All",
            "offline_access",
            "openid",
            "email",
        ),
        app_scopes=("https://outlook.office365.com/.default",),
        tenant_token_url=_MS + "token",
    )


MICROSOFT = microsoft()


def _read_secret_file(env: str, path: str) -> str:
    try:
        text = Path(path).read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise OAuthConfigError(f"{env}: cannot read {path!r}: {exc.strerror}") from None
    if not text:
        raise OAuthConfigError(f"{env}: {path!r} is empty")
    return text


@dataclass(frozen=True)
class OAuthConfig:
    """The operator's OAuth2 providers by key ("google", "microsoft", ...)."""

    providers: Mapping[str, OAuthProvider] = field(default_factory=dict)

    def get(self, key: str) -> OAuthProvider:
        """The provider ``key``; :class:`OAuthConfigError` when unknown."""
        try:
            return self.providers[key]
        except KeyError:
            known = ", ".join(sorted(self.providers)) or "none"
            raise OAuthConfigError(
                f"no OAuth2 provider {key!r} is configured (known: {known})"
            ) from None

    def configured(self) -> list[str]:
        """Keys of the providers with a client id, i.e. that users can sign in with."""
        return sorted(k for k, p in self.providers.items() if p.configured)

    def to_dict(self) -> dict[str, Any]:
        return {"providers": {k: p.to_dict() for k, p in self.providers.items()}}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> OAuthConfig:
        provs = data.get("providers", {}) if isinstance(data, Mapping) else None
        if not isinstance(provs, Mapping):
            raise OAuthConfigError("OAuth2 settings: 'providers' must be an object")
        out: dict[str, OAuthProvider] = {}
        for key, value in provs.items():
            out[str(key)] = OAuthProvider.from_dict(str(key), value)
        return cls(out)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> OAuthConfig:
        """The settings from the environment:

        ``YIPPIEMOVE_GOOGLE_CLIENT_ID``, ``YIPPIEMOVE_GOOGLE_CLIENT_SECRET_FILE``,
        ``YIPPIEMOVE_MICROSOFT_CLIENT_ID``, ``YIPPIEMOVE_MICROSOFT_CLIENT_SECRET_FILE``,
        ``YIPPIEMOVE_MICROSOFT_TENANT`` (default ``common``) and
        ``YIPPIEMOVE_OAUTH_PROVIDERS_FILE``: a JSON object ``{KEY: {field: value}}`` whose
        fields override those of the built-in provider ``KEY`` or define a new one (then
        ``authorize_url`` and ``token_url`` are required).  Endpoints come as a set: a
        file that gives any endpoint URL of a built-in provider replaces them all (those
        it leaves out are unset, never left pointing at the real provider).  Secrets come from files,
        never from the environment's values themselves.
        """
        env = os.environ if env is None else env
        google = GOOGLE
        ms = microsoft(env.get("YIPPIEMOVE_MICROSOFT_TENANT") or "common")
        provs: dict[str, OAuthProvider] = {}
        for base, prefix in ((google, "GOOGLE"), (ms, "MICROSOFT")):
            cid = env.get(f"YIPPIEMOVE_{prefix}_CLIENT_ID", "").strip()
            secret_env = f"YIPPIEMOVE_{prefix}_CLIENT_SECRET_FILE"
            secret = _read_secret_file(secret_env, env[secret_env]) if env.get(secret_env) else None
            provs[base.key] = replace(base, client_id=cid, client_secret=secret)
        path = env.get("YIPPIEMOVE_OAUTH_PROVIDERS_FILE")
        if path:
            try:
                data = json.loads(Path(path).read_text(encoding="utf-8"))
            except OSError as exc:
                raise OAuthConfigError(
                    f"YIPPIEMOVE_OAUTH_PROVIDERS_FILE: cannot read {path!r}: {exc.strerror}"
                ) from None
            except ValueError as exc:
                raise OAuthConfigError(
                    f"YIPPIEMOVE_OAUTH_PROVIDERS_FILE {path!r} is not JSON: {exc}"
                ) from None
            if not isinstance(data, Mapping):
                raise OAuthConfigError(
                    f"YIPPIEMOVE_OAUTH_PROVIDERS_FILE {path!r}: expected an object of providers"
                )
            for key, value in data.items():
                provs[str(key)] = OAuthProvider.from_dict(str(key), value, provs.get(str(key)))
        return cls(provs)
