"""Authorization-code flow with PKCE (stand-in of contract 3: oauth-client's replaces it)."""

from __future__ import annotations

import base64
import json
import secrets
import time
from dataclasses import dataclass, field
from typing import Any

from . import OAuthProvider

__all__ = ["Pending", "begin", "finish"]


@dataclass(frozen=True)
class Pending:
    url: str
    state: str
    code_verifier: str = field(repr=False)


def begin(provider: OAuthProvider, redirect_uri: str, *, login_hint: str | None = None) -> Pending:
    from authlib.integrations.httpx_client import OAuth2Client

    verifier = secrets.token_urlsafe(48)
    state = secrets.token_urlsafe(24)
    client = OAuth2Client(
        provider.client_id,
        provider.client_secret,
        scope=" ".join(provider.scopes),
        redirect_uri=redirect_uri,
        code_challenge_method="S256",
    )
    extra: dict[str, Any] = {"access_type": "offline", "prompt": "consent"}
    if login_hint:
        extra["login_hint"] = login_hint
    url, _ = client.create_authorization_url(
        provider.authorize_url, state=state, code_verifier=verifier, **extra
    )
    return Pending(url, state, verifier)


def _claims(id_token: str) -> dict[str, Any]:
    """The id_token's claims: it came straight from the token endpoint over TLS (OpenID
    Connect Core 3.1.3.7: its signature need not be checked then)."""
    try:
        payload = id_token.split(".")[1]
        return dict(json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4))))
    except (IndexError, ValueError):
        return {}


def finish(
    provider: OAuthProvider, pending: Pending, code: str, redirect_uri: str
) -> tuple[dict[str, Any], str]:
    from authlib.integrations.httpx_client import OAuth2Client

    with OAuth2Client(
        provider.client_id, provider.client_secret, redirect_uri=redirect_uri, timeout=20
    ) as client:
        tok = client.fetch_token(
            provider.token_url, code=code, code_verifier=pending.code_verifier
        )
        address = str(_claims(str(tok.get("id_token") or "")).get("email") or "")
        if not address and provider.userinfo_url:
            address = str(client.get(provider.userinfo_url).json().get("email") or "")
    grant: dict[str, Any] = {
        "kind": "refresh",
        "provider": provider.key,
        "refresh_token": tok.get("refresh_token") or "",
        "access_token": tok["access_token"],
    }
    if tok.get("expires_in"):
        grant["expires_at"] = time.time() + float(tok["expires_in"])
    return grant, address
