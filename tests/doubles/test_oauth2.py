"""The test OAuth2 provider (tests/doubles/oauth2.py) and the IMAP servers that accept its
tokens: every grant over real HTTP (httpx, and authlib's client where it has one), the
refusals a provider gives, and Dovecot's ``oauth2`` passdb over a raw socket."""

from __future__ import annotations

import base64
import hashlib
import json
import re
import secrets
import socket
import time
import urllib.parse
from typing import Any

import httpx
import pytest

from tests.doubles.oauth2 import (
    OAuthServer,
    b64url,
)
from yippiemove.testing.dovecot import DovecotServer

REDIRECT = "http://127.0.0.1:8123/oauth/callback"


# --------------------------------------------------------------------------- helpers


def pkce() -> tuple[str, str]:
    """(code_verifier, S256 code_challenge)."""
    verifier = secrets.token_urlsafe(48)
    return verifier, b64url(hashlib.sha256(verifier.encode()).digest())


def authorize_url(server: OAuthServer, client_id: str, challenge: str | None, **extra: str) -> str:
    params = {
        "response_type": "code",
        "client_id": client_id,
        "redirect_uri": REDIRECT,
        "scope": "https://mail.google.com/ openid email",
        "state": "st-123",
    }
    if challenge is not None:
        params |= {"code_challenge": challenge, "code_challenge_method": "S256"}
    params |= extra
    return server.authorize_url + "?" + urllib.parse.urlencode(params)


def browser_sign_in(url: str, address: str, decision: str = "allow") -> httpx.Response:
    """What a browser does: open the page, fill in the address, press the button."""
    with httpx.Client() as http:
        page = http.get(url)
        assert page.status_code == 200, page.text
        assert "Sign in as" in page.text
        request_id = re.search(r'name="request" value="([^"]+)"', page.text)
        assert request_id is not None
        return http.post(
            url.split("?")[0],
            data={"request": request_id[1], "email": address, "decision": decision},
        )


def query_of(location: str) -> dict[str, str]:
    return dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(location).query))


def code_flow(server: OAuthServer, address: str, client: str = "web") -> dict[str, Any]:
    """A whole authorization-code flow (knob sign-in); the token response."""
    verifier, challenge = pkce()
    code = query_of(server.sign_in(authorize_url(server, client, challenge), address))["code"]
    r = httpx.post(
        server.token_url,
        data={"grant_type": "authorization_code", "code": code, "redirect_uri": REDIRECT,
              "code_verifier": verifier, "client_id": client, "client_secret": "web-secret"},
    )  # fmt: skip
    assert r.status_code == 200, r.text
    return dict(r.json())


def introspect(server: OAuthServer, token: str) -> dict[str, Any]:
    r = httpx.post(
        server.introspection_url, data={"token": token}, auth=server.resource_credentials
    )
    assert r.status_code == 200, r.text
    return dict(r.json())


@pytest.fixture
def provider(oauth_server: OAuthServer) -> OAuthServer:
    """The provider with a confidential web client ``web`` and a public client ``cli``."""
    oauth_server.add_client("web", "web-secret", [REDIRECT])
    oauth_server.add_client("cli", None, ["http://127.0.0.1/"])
    return oauth_server


# --------------------------------------------------------------------------- IMAP


def sasl(port: int, mechanism: str, payload: bytes) -> list[bytes]:
    """AUTHENTICATE with an initial response (SASL-IR) on a raw socket; after an error
    challenge ("+ ...") sends the empty response RFC 7628 3.2.3 asks for.  Returns the
    lines the server sent after the greeting."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        reader = s.makefile("rb")
        assert reader.readline().startswith(b"* OK")
        s.sendall(
            b"a AUTHENTICATE " + mechanism.encode() + b" " + base64.b64encode(payload) + b"\r\n"
        )
        lines = []
        while True:
            line = reader.readline()
            if not line:
                break
            lines.append(line)
            if line.startswith(b"+"):
                s.sendall(b"\r\n")
            elif line.startswith(b"a "):
                break
        return lines


def xoauth2(user: str, token: str) -> bytes:
    return f"user={user}\x01auth=Bearer {token}\x01\x01".encode()


def oauthbearer(user: str, token: str, port: int = 143) -> bytes:
    return f"n,a={user},\x01host=127.0.0.1\x01port={port}\x01auth=Bearer {token}\x01\x01".encode()


def capabilities(port: int) -> str:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        greeting = s.makefile("rb").readline().decode()
    return greeting


def challenge_of(lines: list[bytes]) -> dict[str, Any]:
    assert lines[0].startswith(b"+ "), lines
    return dict(json.loads(base64.b64decode(lines[0][2:].strip())))


@pytest.mark.parametrize("mechanism", ["XOAUTH2", "OAUTHBEARER"])
def test_dovecot_accepts_a_live_token(
    dovecot_oauth: DovecotServer, oauth_server: OAuthServer, mechanism: str
) -> None:
    oauth_server.add_client("web", "web-secret", [REDIRECT])
    assert "AUTH=XOAUTH2" in capabilities(dovecot_oauth.port)
    assert "AUTH=OAUTHBEARER" in capabilities(dovecot_oauth.port)
    token = code_flow(oauth_server, "src@example.test")["access_token"]
    payload = (xoauth2 if mechanism == "XOAUTH2" else oauthbearer)("src@example.test", token)
    before = oauth_server.introspected
    lines = sasl(dovecot_oauth.port, mechanism, payload)
    assert len(lines) == 1 and lines[0].startswith(b"a OK "), lines
    assert oauth_server.introspected == before + 1
    # passwords still work for PLAIN (the helpers fill mailboxes that way)
    assert dovecot_oauth.check_login("dst@example.test", "dstpass")


def refused(dovecot: DovecotServer, mechanism: str, user: str, token: str) -> dict[str, Any]:
    payload = (xoauth2 if mechanism == "XOAUTH2" else oauthbearer)(user, token)
    lines = sasl(dovecot.port, mechanism, payload)
    assert len(lines) == 2, lines
    assert lines[1] == b"a NO [AUTHENTICATIONFAILED] Authentication failed.\r\n", lines
    return challenge_of(lines)


# What Dovecot 2.3.19 sends back before its NO: a SASL challenge with an RFC 7628 error.
XOAUTH2_REFUSAL = {"status": "401", "schemes": "bearer", "scope": "mail"}
OAUTHBEARER_REFUSAL = {"status": "invalid_token"}


@pytest.mark.parametrize("mechanism", ["XOAUTH2", "OAUTHBEARER"])
def test_dovecot_refuses_expired_revoked_made_up_and_foreign_tokens(
    dovecot_oauth: DovecotServer, oauth_server: OAuthServer, mechanism: str
) -> None:
    oauth_server.add_client("web", "web-secret", [REDIRECT])
    want = XOAUTH2_REFUSAL if mechanism == "XOAUTH2" else OAUTHBEARER_REFUSAL
    user = "src@example.test"
    # expired: a real lifetime running out
    oauth_server.access_lifetime = 0.3
    expired = code_flow(oauth_server, user)["access_token"]
    time.sleep(0.35)
    assert refused(dovecot_oauth, mechanism, user, expired) == want
    oauth_server.access_lifetime = 3600
    # revoked: a live token, then the user's consent goes
    live = code_flow(oauth_server, user)["access_token"]
    assert sasl(dovecot_oauth.port, mechanism, xoauth2(user, live) if mechanism == "XOAUTH2"
                else oauthbearer(user, live))[-1].startswith(b"a OK")  # fmt: skip
    oauth_server.revoke(user)
    assert refused(dovecot_oauth, mechanism, user, live) == want
    # made up
    assert refused(dovecot_oauth, mechanism, user, "ya29.made-up-token") == want
    # someone else's live token
    other = code_flow(oauth_server, "dst@example.test")["access_token"]
    assert refused(dovecot_oauth, mechanism, user, other) == want
    # and a password where a token belongs
    assert refused(dovecot_oauth, mechanism, user, "srcpass") == want


def test_dovecot_without_oauth2_offers_no_token_mechanisms(dovecot: DovecotServer) -> None:
    greeting = capabilities(dovecot.port)
    assert "XOAUTH2" not in greeting and "OAUTHBEARER" not in greeting
