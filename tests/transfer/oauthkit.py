"""Helpers of the OAuth2 transfer tests: the operator's settings pointing at the test
provider, a user's consent through the real authorization-code flow (PKCE, the
provider's Allow without a browser), and a token source on the grant it gives."""

from __future__ import annotations

import asyncio
import urllib.parse
from pathlib import Path
from typing import Any

from tests.doubles.oauth2 import OAuthServer
from yippiemove.oauth import GrantTokenSource, OAuthConfig, flows

REDIRECT = "http://127.0.0.1:9/callback"


def config_for(server: OAuthServer, tmp_path: Path) -> OAuthConfig:
    """The operator's settings with "google" and "microsoft" at the test provider."""
    path = tmp_path / "oauth-providers.json"
    if not path.exists():
        server.providers_json(path=path)
    return OAuthConfig.from_env({"YIPPIEMOVE_OAUTH_PROVIDERS_FILE": str(path)})


def sign_in(
    server: OAuthServer, config: OAuthConfig, address: str, key: str = "google"
) -> dict[str, Any]:
    """``address`` consents (authorization code + PKCE); the refresh grant."""
    provider = config.get(key)
    pending = flows.begin(provider, REDIRECT, login_hint=address)
    back = urllib.parse.urlsplit(server.sign_in(pending.url, address))
    query = dict(urllib.parse.parse_qsl(back.query))
    grant, who = asyncio.run(
        flows.finish(provider, pending, query["code"], REDIRECT, state=query["state"])
    )
    assert who == address
    return grant


def token_source(server: OAuthServer, tmp_path: Path, address: str) -> GrantTokenSource:
    config = config_for(server, tmp_path)
    return GrantTokenSource(sign_in(server, config, address), config)
