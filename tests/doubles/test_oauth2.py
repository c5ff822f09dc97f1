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
    DEVICE_GRANT,
    JWT_BEARER_GRANT,
    OAuthServer,
    b64url,
    jwt_decode,
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
    # Dovecot logs the refusals, never the tokens or the introspection credentials
    log = dovecot_oauth.log_path.read_text()
    assert "oauth2 failed: Introspection failed: Provided token is not valid" in log
    for secret in (expired, live, other, oauth_server.resource_credentials[1]):
        assert secret not in log


@pytest.mark.parametrize("mechanism", ["XOAUTH2", "OAUTHBEARER"])
def test_dovecot_provider_down_is_a_temporary_failure(
    dovecot_oauth: DovecotServer, oauth_server: OAuthServer, mechanism: str
) -> None:
    """No error challenge then: Dovecot could not ask, so the token is not refused."""
    oauth_server.add_client("web", "web-secret", [REDIRECT])
    token = code_flow(oauth_server, "src@example.test")["access_token"]
    oauth_server.stop()
    payload = (xoauth2 if mechanism == "XOAUTH2" else oauthbearer)("src@example.test", token)
    lines = sasl(dovecot_oauth.port, mechanism, payload)
    assert len(lines) == 1, lines
    assert lines[0].startswith(b"a NO [UNAVAILABLE] Temporary authentication failure."), lines


def cancel_after_challenge(port: int, mechanism: str, payload: bytes) -> list[bytes]:
    """AUTHENTICATE with a bad token, answering the error challenge with "*"."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        reader = s.makefile("rb")
        reader.readline()
        s.sendall(
            b"a AUTHENTICATE " + mechanism.encode() + b" " + base64.b64encode(payload) + b"\r\n"
        )
        lines = [reader.readline()]
        assert lines[0].startswith(b"+ "), lines
        s.sendall(b"*\r\n")
        lines.append(reader.readline())
        return lines


def test_dovecot_cancel_after_the_error_challenge(dovecot_oauth: DovecotServer) -> None:
    lines = cancel_after_challenge(dovecot_oauth.port, "XOAUTH2", xoauth2("src@example.test", "x"))
    assert lines[1] == b"a BAD Authentication aborted by client.\r\n"


def test_dovecot_oauth2_settings(
    dovecot_oauth: DovecotServer, oauth_server: OAuthServer, tmp_path: Any
) -> None:
    """The introspection secret stays out of dovecot.conf (its own 0600 file); users
    added later log in with passwords and tokens alike."""
    import os
    import stat

    secret = oauth_server.resource_credentials[1]
    assert secret not in dovecot_oauth.config_path.read_text()
    ext = re.search(r"args = (\S+oauth2\.conf\.ext)", dovecot_oauth.config_path.read_text())
    assert ext is not None and secret in open(ext[1]).read()
    assert stat.S_IMODE(os.stat(ext[1]).st_mode) == 0o600
    dovecot_oauth.add_user("late@example.test", "latepass")
    oauth_server.add_client("web", "web-secret", [REDIRECT])
    token = code_flow(oauth_server, "late@example.test")["access_token"]
    assert sasl(dovecot_oauth.port, "XOAUTH2", xoauth2("late@example.test", token))[-1].startswith(
        b"a OK"
    )
    with pytest.raises(ValueError):
        DovecotServer(tmp_path / "x", oauth2_introspection_url="http://h/\nx")


def app_token(provider: OAuthServer, domain: str = "example.test") -> str:
    provider.add_client("app", "app-secret", app_domain=domain)
    r = httpx.post(
        provider.url + "/tenant/oauth2/v2.0/token",
        data={"grant_type": "client_credentials",
              "scope": "https://outlook.office365.com/.default"},
        auth=("app", "app-secret"),
    )  # fmt: skip
    return str(r.json()["access_token"])


def test_dovecot_application_tokens(
    oauth_server: OAuthServer, dovecot_factory: Any, dovecot_oauth: DovecotServer
) -> None:
    """With oauth2_app_tokens, a client-credentials token opens any mailbox of its domain
    (Microsoft 365 application access); without it, such a token is refused cleanly."""
    oauth_server.add_client("web", "web-secret", [REDIRECT])
    token = app_token(oauth_server)
    assert refused(dovecot_oauth, "XOAUTH2", "src@example.test", token) == XOAUTH2_REFUSAL
    server = dovecot_factory(
        users={"a@example.test": "pw", "b@example.test": "pw", "c@other.test": "pw"},
        oauth2_introspection_url=oauth_server.dovecot_introspection_url,
        oauth2_app_tokens=True,
    )
    for user in ("a@example.test", "b@example.test"):
        for mechanism, make in (("XOAUTH2", xoauth2), ("OAUTHBEARER", oauthbearer)):
            assert sasl(server.port, mechanism, make(user, token))[-1].startswith(b"a OK")
    assert refused(server, "XOAUTH2", "c@other.test", token) == XOAUTH2_REFUSAL
    user_token = code_flow(oauth_server, "a@example.test")["access_token"]
    assert sasl(server.port, "XOAUTH2", xoauth2("a@example.test", user_token))[-1].startswith(
        b"a OK"
    )
    # a user's token is no application's: not for the other users of the domain
    assert refused(server, "XOAUTH2", "b@example.test", user_token) == XOAUTH2_REFUSAL
    assert refused(server, "OAUTHBEARER", "a@example.test", "made-up") == OAUTHBEARER_REFUSAL
    oauth_server.revoke("app")
    assert refused(server, "XOAUTH2", "a@example.test", token) == XOAUTH2_REFUSAL


def test_dovecot_refuses_a_query_in_the_introspection_url(tmp_path: Any) -> None:
    """Dovecot 2.3.19's auth process panics on one (introspection_mode post)."""
    with pytest.raises(ValueError, match="query"):
        DovecotServer(tmp_path / "d", oauth2_introspection_url="http://h:1/introspect?x=1")


def test_dovecot_without_oauth2_offers_no_token_mechanisms(dovecot: DovecotServer) -> None:
    greeting = capabilities(dovecot.port)
    assert "XOAUTH2" not in greeting and "OAUTHBEARER" not in greeting


# --------------------------------------------------------------------------- authorization code


def test_code_flow_through_the_html_page(provider: OAuthServer) -> None:
    """The whole flow as a browser and a web client do it; the id_token is checked with
    joserfc (authlib's JOSE) against the provider's JWKS."""
    from joserfc import jwt
    from joserfc.jwk import KeySet

    verifier, challenge = pkce()
    url = authorize_url(provider, "web", challenge, login_hint="Alice@Example.test", nonce="n-1")
    page = httpx.get(url)
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    assert 'value="Alice@Example.test"' in page.text  # login_hint fills the field
    r = browser_sign_in(url, "Alice@Example.test")
    assert r.status_code == 302
    location = r.headers["location"]
    assert location.startswith(REDIRECT + "?")
    q = query_of(location)
    assert q["state"] == "st-123"
    r = httpx.post(
        provider.token_url,
        data={"grant_type": "authorization_code", "code": q["code"], "redirect_uri": REDIRECT,
              "code_verifier": verifier},
        auth=("web", "web-secret"),  # client_secret_basic
    )  # fmt: skip
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["token_type"] == "Bearer" and body["expires_in"] == 3600
    assert body["refresh_token"] and body["access_token"] != body["refresh_token"]
    assert provider.issued == 1
    keys = KeySet.import_key_set(httpx.get(provider.jwks_url).json())
    claims = jwt.decode(body["id_token"], keys).claims
    jwt.JWTClaimsRegistry(exp={"essential": True}).validate(claims)
    assert claims["email"] == "alice@example.test" and claims["aud"] == "web"
    assert claims["iss"] == provider.url and claims["nonce"] == "n-1"
    info = httpx.get(
        provider.userinfo_url, headers={"Authorization": "Bearer " + body["access_token"]}
    )
    assert info.json()["email"] == "alice@example.test"
    assert info.json()["sub"] == claims["sub"] == introspect(provider, body["access_token"])["sub"]


def test_deny_redirects_with_access_denied(provider: OAuthServer) -> None:
    url = authorize_url(provider, "web", pkce()[1])
    r = browser_sign_in(url, "alice@example.test", decision="deny")
    assert r.status_code == 302
    assert query_of(r.headers["location"]) == {
        "error": "access_denied", "error_description": "The user denied access", "state": "st-123"
    }  # fmt: skip


def test_pkce_is_required_and_verified(provider: OAuthServer) -> None:
    # no challenge: the error goes back to the client, with its state
    r = httpx.get(authorize_url(provider, "web", None))
    assert r.status_code == 302
    q = query_of(r.headers["location"])
    assert q["error"] == "invalid_request" and q["state"] == "st-123"
    # plain is not S256
    r = httpx.get(authorize_url(provider, "web", "abc", code_challenge_method="plain"))
    assert query_of(r.headers["location"])["error"] == "invalid_request"
    # a wrong verifier, then a missing one
    _, challenge = pkce()
    code = query_of(provider.sign_in(authorize_url(provider, "web", challenge), "a@x.test"))["code"]
    form = {"grant_type": "authorization_code", "code": code, "redirect_uri": REDIRECT,
            "client_id": "web", "client_secret": "web-secret"}  # fmt: skip
    r = httpx.post(provider.token_url, data=form | {"code_verifier": pkce()[0]})
    assert r.status_code == 400 and r.json()["error"] == "invalid_grant"
    r = httpx.post(provider.token_url, data=form)
    assert r.status_code == 400 and r.json()["error"] == "invalid_request"
    assert provider.issued == 0


def test_redirect_uri_must_be_registered_and_match(provider: OAuthServer) -> None:
    verifier, challenge = pkce()
    # an unregistered redirect_uri: an error page, never a redirect (RFC 6749 4.1.2.1)
    for bad in ("http://evil.test/cb", "http://127.0.0.1:8123/other", REDIRECT + "?x=1"):
        r = httpx.get(authorize_url(provider, "web", challenge, redirect_uri=bad))
        assert r.status_code == 400 and "redirect_uri_mismatch" in r.text
        assert "location" not in r.headers
    r = httpx.get(authorize_url(provider, "nobody", challenge))
    assert r.status_code == 400 and "invalid_client" in r.text
    # a loopback registration without a port takes any port (RFC 8252 7.3), same path
    url = authorize_url(provider, "cli", challenge, redirect_uri="http://127.0.0.1:49152/")
    location = provider.sign_in(url, "a@x.test")
    assert location.startswith("http://127.0.0.1:49152/?code=")
    # the token request must name the same redirect_uri
    r = httpx.post(
        provider.token_url,
        data={"grant_type": "authorization_code", "code": query_of(location)["code"],
              "redirect_uri": "http://127.0.0.1:49153/", "code_verifier": verifier,
              "client_id": "cli"},
    )  # fmt: skip
    assert r.status_code == 400 and r.json()["error"] == "invalid_grant"


def test_code_is_single_use_and_a_reuse_revokes_its_tokens(provider: OAuthServer) -> None:
    verifier, challenge = pkce()
    code = query_of(provider.sign_in(authorize_url(provider, "web", challenge), "a@x.test"))["code"]
    form = {"grant_type": "authorization_code", "code": code, "redirect_uri": REDIRECT,
            "code_verifier": verifier, "client_id": "web", "client_secret": "web-secret"}  # fmt: skip
    first = httpx.post(provider.token_url, data=form)
    assert first.status_code == 200
    second = httpx.post(provider.token_url, data=form)
    assert second.status_code == 400 and second.json()["error"] == "invalid_grant"
    assert introspect(provider, first.json()["access_token"]) == {"active": False}
    r = httpx.post(
        provider.token_url,
        data={"grant_type": "refresh_token", "refresh_token": first.json()["refresh_token"]},
        auth=("web", "web-secret"),
    )
    assert r.status_code == 400 and r.json()["error"] == "invalid_grant"


def test_code_expires(provider: OAuthServer) -> None:
    provider.code_lifetime = 0
    verifier, challenge = pkce()
    code = query_of(provider.sign_in(authorize_url(provider, "web", challenge), "a@x.test"))["code"]
    r = httpx.post(
        provider.token_url,
        data={"grant_type": "authorization_code", "code": code, "redirect_uri": REDIRECT,
              "code_verifier": verifier, "client_id": "web", "client_secret": "web-secret"},
    )  # fmt: skip
    assert r.status_code == 400 and r.json() == {
        "error": "invalid_grant", "error_description": "The authorization code has expired."
    }  # fmt: skip


def test_client_authentication(provider: OAuthServer) -> None:
    verifier, challenge = pkce()
    code = query_of(provider.sign_in(authorize_url(provider, "web", challenge), "a@x.test"))["code"]
    form = {"grant_type": "authorization_code", "code": code, "redirect_uri": REDIRECT,
            "code_verifier": verifier}  # fmt: skip
    for auth in (("web", "wrong"), ("nobody", "x")):
        r = httpx.post(provider.token_url, data=form, auth=auth)
        assert r.status_code == 401 and r.json()["error"] == "invalid_client"
        assert "www-authenticate" in r.headers
    r = httpx.post(provider.token_url, data=form | {"client_id": "web"})  # no secret
    assert r.status_code == 401 and r.json()["error"] == "invalid_client"
    r = httpx.post(provider.token_url, data=form, auth=("web", "web-secret"))
    assert r.status_code == 200
    r = httpx.post(provider.token_url, data={"grant_type": "password"}, auth=("web", "web-secret"))
    assert r.status_code == 400 and r.json()["error"] == "unsupported_grant_type"


# --------------------------------------------------------------------------- refresh, expiry, revocation


def refresh(provider: OAuthServer, token: str) -> httpx.Response:
    return httpx.post(
        provider.token_url,
        data={"grant_type": "refresh_token", "refresh_token": token},
        auth=("web", "web-secret"),
    )


def test_refresh_and_expiry(provider: OAuthServer) -> None:
    provider.access_lifetime = 0.3
    body = code_flow(provider, "a@x.test")
    assert body["expires_in"] == 0.3
    live = introspect(provider, body["access_token"])
    assert live["active"] is True and live["email"] == live["username"] == "a@x.test"
    assert live["scope"] == "https://mail.google.com/ openid email"
    assert live["sub"] and live["exp"] <= time.time() + 1
    time.sleep(0.35)
    assert introspect(provider, body["access_token"]) == {"active": False}
    provider.access_lifetime = 2
    r = refresh(provider, body["refresh_token"])
    assert r.status_code == 200
    fresh = r.json()
    assert fresh["expires_in"] == 2 and "refresh_token" not in fresh  # no rotation
    assert introspect(provider, fresh["access_token"])["active"] is True
    assert provider.refreshed == 1 and provider.issued == 2
    assert provider.introspected == 3
    # the knob: expired at once without waiting
    assert provider.expire_access_tokens("a@x.test") == 1
    assert introspect(provider, fresh["access_token"]) == {"active": False}
    # a refresh token is the client's own
    provider.add_client("other", "other-secret", [REDIRECT])
    r = httpx.post(
        provider.token_url,
        data={"grant_type": "refresh_token", "refresh_token": body["refresh_token"]},
        auth=("other", "other-secret"),
    )
    assert r.status_code == 400 and r.json()["error"] == "invalid_grant"


def test_token_endpoint_outage(provider: OAuthServer) -> None:
    body = code_flow(provider, "a@x.test")
    provider.fail_token_requests(2)
    for _ in range(2):
        r = refresh(provider, body["refresh_token"])
        assert r.status_code == 503 and r.json()["error"] == "temporarily_unavailable"
    assert refresh(provider, body["refresh_token"]).status_code == 200
    assert provider.refreshed == 1


def test_rotating_refresh_tokens_keep_a_grace_period(provider: OAuthServer) -> None:
    provider.rotate_refresh = True
    provider.rotate_grace = 0.3
    first = code_flow(provider, "a@x.test")["refresh_token"]
    r = refresh(provider, first)
    second = r.json()["refresh_token"]
    assert second != first
    assert refresh(provider, first).status_code == 200  # within the grace period
    time.sleep(0.35)
    assert refresh(provider, first).json()["error"] == "invalid_grant"
    assert refresh(provider, second).status_code == 200


def test_revoke_a_user_kills_every_token(provider: OAuthServer) -> None:
    a = code_flow(provider, "a@x.test")
    a2 = code_flow(provider, "a@x.test")
    b = code_flow(provider, "b@x.test")
    assert provider.live_tokens("a@x.test") == 2
    provider.revoke("A@x.test")
    assert provider.live_tokens("a@x.test") == 0
    for body in (a, a2):
        assert introspect(provider, body["access_token"]) == {"active": False}
        r = refresh(provider, body["refresh_token"])
        assert r.status_code == 400
        assert r.json() == {"error": "invalid_grant",
                            "error_description": "Token has been expired or revoked."}  # fmt: skip
    assert introspect(provider, b["access_token"])["active"] is True
    assert refresh(provider, b["refresh_token"]).status_code == 200
    r = httpx.get(provider.userinfo_url, headers={"Authorization": "Bearer " + a["access_token"]})
    assert r.status_code == 401 and "invalid_token" in r.headers["www-authenticate"]
    # a new consent works again
    assert introspect(provider, code_flow(provider, "a@x.test")["access_token"])["active"]


def test_revocation_endpoint(provider: OAuthServer) -> None:
    """RFC 7009: revoking a refresh token takes its access tokens along; unknown: 200."""
    body = code_flow(provider, "a@x.test")
    other = code_flow(provider, "a@x.test")
    r = httpx.post(provider.revoke_url, data={"token": body["refresh_token"]},
                   auth=("web", "web-secret"))  # fmt: skip
    assert r.status_code == 200
    assert introspect(provider, body["access_token"]) == {"active": False}
    assert refresh(provider, body["refresh_token"]).json()["error"] == "invalid_grant"
    assert introspect(provider, other["access_token"])["active"] is True  # another grant
    r = httpx.post(provider.revoke_url, data={"token": other["access_token"],
                   "token_type_hint": "access_token"}, auth=("web", "web-secret"))  # fmt: skip
    assert r.status_code == 200
    assert introspect(provider, other["access_token"]) == {"active": False}
    assert refresh(provider, other["refresh_token"]).status_code == 200  # only the access token
    r = httpx.post(provider.revoke_url, data={"token": "unknown"}, auth=("web", "web-secret"))
    assert r.status_code == 200
    r = httpx.post(provider.revoke_url, data={"token": "x"}, auth=("web", "bad"))
    assert r.status_code == 401


def test_introspection_needs_the_resource_servers_credentials(provider: OAuthServer) -> None:
    token = code_flow(provider, "a@x.test")["access_token"]
    for auth in (None, ("imap-server", "wrong"), ("web", "web-secret")):
        r = httpx.post(provider.introspection_url, data={"token": token}, auth=auth)
        assert r.status_code == 401 and r.json()["error"] == "invalid_client"
    assert provider.introspected == 0
    assert introspect(provider, "") == {"active": False}
    assert introspect(provider, token)["active"] is True
    creds = urllib.parse.urlsplit(provider.introspection_url_with_credentials)
    assert (creds.username, creds.password) == provider.resource_credentials
    # Dovecot's: a placeholder for the attribute a token lacks
    r = httpx.post(provider.url + "/dovecot/introspect", data={"token": token},
                   auth=provider.resource_credentials)  # fmt: skip
    assert r.json()["email"] == "a@x.test" and r.json()["app_user"] == "-@-"


# --------------------------------------------------------------------------- JWT bearer (RFC 7523)


def assertion(key: dict[str, str], subject: str | None, **overrides: Any) -> str:
    """A service-account assertion as Google's client libraries make it, signed with
    authlib (the library yippiemove's client side uses)."""
    from authlib.oauth2.rfc7523 import JWTBearerGrant
    from joserfc.jwk import RSAKey

    now = int(time.time())
    claims = {"scope": "https://mail.google.com/"} | overrides.pop("claims", {})
    kwargs: dict[str, Any] = {"issued_at": now, "expires_at": now + 3600} | overrides
    raw = JWTBearerGrant.sign(
        RSAKey.import_key(key["private_key"]),
        issuer=kwargs.pop("issuer", key["client_email"]),
        audience=kwargs.pop("audience", key["token_uri"]),
        subject=subject,
        claims=claims,
        header={"alg": "RS256", "kid": key["private_key_id"]},
        **kwargs,
    )
    return raw.decode() if isinstance(raw, bytes) else str(raw)


def jwt_grant(provider: OAuthServer, token: str) -> httpx.Response:
    return httpx.post(provider.token_url, data={"grant_type": JWT_BEARER_GRANT, "assertion": token})


def test_jwt_bearer_service_account(provider: OAuthServer) -> None:
    key = provider.add_service_account(domains=["example.test"])
    assert key["type"] == "service_account" and key["token_uri"] == provider.token_url
    assert "BEGIN PRIVATE KEY" in key["private_key"]
    r = jwt_grant(provider, assertion(key, "carol@example.test"))
    assert r.status_code == 200, r.text
    body = r.json()
    assert "refresh_token" not in body and body["token_type"] == "Bearer"
    info = introspect(provider, body["access_token"])
    assert info["active"] and info["email"] == "carol@example.test"
    assert info["client_id"] == key["client_email"]
    # outside the delegated domain
    r = jwt_grant(provider, assertion(key, "mallory@elsewhere.test"))
    assert r.status_code == 400 and r.json()["error"] == "unauthorized_client"
    # signed with another key
    other = provider.add_service_account()
    forged = assertion(other | {"client_email": key["client_email"]}, "carol@example.test")
    r = jwt_grant(provider, forged)
    assert r.status_code == 400 and r.json()["error"] == "invalid_grant"
    # wrong audience, expired, too long-lived
    for bad in (
        assertion(key, "carol@example.test", audience="https://oauth2.googleapis.com/token"),
        assertion(key, "carol@example.test", issued_at=int(time.time()) - 4000,
                  expires_at=int(time.time()) - 400),
        assertion(key, "carol@example.test", expires_at=int(time.time()) + 7200),
        "not.a.jwt",
    ):  # fmt: skip
        r = jwt_grant(provider, bad)
        assert r.status_code == 400 and r.json()["error"] == "invalid_grant", r.text
    # the admin removes the account (or its key): invalid_grant, and its tokens die
    provider.revoke(key["client_email"])
    assert introspect(provider, body["access_token"]) == {"active": False}
    r = jwt_grant(provider, assertion(key, "carol@example.test"))
    assert r.status_code == 400 and r.json()["error"] == "invalid_grant"


def test_jwt_decode_checks_signature_and_algorithm(provider: OAuthServer) -> None:
    key = provider.add_service_account()
    token = assertion(key, None)
    header, claims = jwt_decode(token, None)
    assert header["alg"] == "RS256" and claims["iss"] == key["client_email"]
    tampered = token.rsplit(".", 1)[0] + "." + b64url(b"\0" * 256)
    from cryptography.hazmat.primitives.serialization import load_pem_private_key

    public = load_pem_private_key(key["private_key"].encode(), None).public_key()
    jwt_decode(token, public)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="signature"):
        jwt_decode(tampered, public)  # type: ignore[arg-type]
    none_alg = b64url(b'{"alg":"none"}') + "." + token.split(".")[1] + "."
    with pytest.raises(ValueError, match="RS256"):
        jwt_decode(none_alg, None)


# --------------------------------------------------------------------------- client credentials


def test_client_credentials(provider: OAuthServer) -> None:
    provider.add_client("app", "app-secret", app_domain="Example.test")
    r = httpx.post(
        provider.url + "/tenant-1/oauth2/v2.0/token",  # Microsoft's spelling
        data={"grant_type": "client_credentials", "client_id": "app", "client_secret": "app-secret",
              "scope": "https://outlook.office365.com/.default"},
    )  # fmt: skip
    assert r.status_code == 200, r.text
    body = r.json()
    assert "refresh_token" not in body and "id_token" not in body
    info = introspect(provider, body["access_token"])
    assert info["active"] and info["app_domain"] == "example.test" and "email" not in info
    # a client without application access, and a wrong secret
    r = httpx.post(provider.token_url, data={"grant_type": "client_credentials"},
                   auth=("web", "web-secret"))  # fmt: skip
    assert r.status_code == 400 and r.json()["error"] == "unauthorized_client"
    r = httpx.post(provider.token_url, data={"grant_type": "client_credentials"},
                   auth=("app", "nope"))  # fmt: skip
    assert r.status_code == 401 and r.json()["error"] == "invalid_client"
    provider.revoke("app")
    assert introspect(provider, body["access_token"]) == {"active": False}


# --------------------------------------------------------------------------- device flow


def test_device_flow(provider: OAuthServer) -> None:
    provider.device_interval = 0
    r = httpx.post(
        provider.device_url, data={"client_id": "cli", "scope": "https://mail.google.com/"}
    )
    assert r.status_code == 200, r.text
    dev = r.json()
    assert dev["verification_uri"] == provider.verification_url and dev["interval"] == 0
    poll = {"grant_type": DEVICE_GRANT, "device_code": dev["device_code"], "client_id": "cli"}
    r = httpx.post(provider.token_url, data=poll)
    assert r.status_code == 400 and r.json()["error"] == "authorization_pending"
    # the user opens the page and approves
    with httpx.Client() as http:
        page = http.get(dev["verification_uri_complete"])
        assert page.status_code == 200 and dev["user_code"] in page.text
        done = http.post(provider.verification_url, data={"user_code": dev["user_code"],
                         "email": "Dave@x.test", "decision": "allow"})  # fmt: skip
        assert "Done" in done.text
    r = httpx.post(provider.token_url, data=poll)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["refresh_token"] and jwt_decode(body["id_token"], None)[1]["email"] == "dave@x.test"
    r = httpx.post(provider.token_url, data=poll)  # the device code is spent
    assert r.status_code == 400 and r.json()["error"] == "invalid_grant"


def test_device_flow_slow_down_deny_and_expiry(provider: OAuthServer) -> None:
    provider.device_interval = 5

    def start() -> tuple[dict[str, Any], dict[str, str]]:
        dev = httpx.post(provider.device_url, data={"client_id": "cli"}).json()
        return dev, {"grant_type": DEVICE_GRANT, "device_code": dev["device_code"],
                     "client_id": "cli"}  # fmt: skip

    dev, poll = start()
    assert httpx.post(provider.token_url, data=poll).json()["error"] == "authorization_pending"
    assert httpx.post(provider.token_url, data=poll).json()["error"] == "slow_down"
    provider.approve_device(dev["user_code"].lower(), "erin@x.test")  # the knob
    assert httpx.post(provider.token_url, data=poll).status_code == 200
    dev, poll = start()
    provider.deny_device(dev["user_code"])
    assert httpx.post(provider.token_url, data=poll).json()["error"] == "access_denied"
    provider.device_lifetime = 0
    dev, poll = start()
    assert httpx.post(provider.token_url, data=poll).json()["error"] == "expired_token"
    with pytest.raises(KeyError):
        provider.approve_device("NOPE-NOPE", "x@x.test")
    r = httpx.post(provider.device_url, data={"client_id": "nobody"})
    assert r.status_code == 401 and r.json()["error"] == "invalid_client"


# --------------------------------------------------------------------------- providers file


def test_providers_json(oauth_server: OAuthServer, tmp_path: Any) -> None:
    path = tmp_path / "providers.json"
    text = oauth_server.providers_json(path=path)
    assert json.loads(path.read_text()) == json.loads(text)
    google, microsoft = json.loads(text)["google"], json.loads(text)["microsoft"]
    assert google["token_url"] == oauth_server.token_url
    assert microsoft["token_url"].endswith("/common/oauth2/v2.0/token")
    assert "https://mail.google.com/" in google["scopes"]
    assert "offline_access" in microsoft["scopes"]
    # as the real ones: no device flow for Google's mail scope, no revocation or userinfo
    # endpoint at Microsoft, which puts the tenant in its paths
    assert google["device_url"] is None and google["revoke_url"] == oauth_server.revoke_url
    assert microsoft["revoke_url"] is None and microsoft["userinfo_url"] is None
    assert microsoft["tenant_token_url"] == oauth_server.url + "/{tenant}/oauth2/v2.0/token"
    # the registered clients work at Microsoft's paths, with a loopback redirect on any port
    verifier, challenge = pkce()
    redirect = "http://127.0.0.1:40000/oauth/callback"
    url = microsoft["authorize_url"] + "?" + urllib.parse.urlencode(
        {"response_type": "code", "client_id": microsoft["client_id"], "redirect_uri": redirect,
         "code_challenge": challenge, "code_challenge_method": "S256", "state": "s"}
    )  # fmt: skip
    code = query_of(browser_sign_in(url, "f@x.test").headers["location"])["code"]
    r = httpx.post(
        microsoft["token_url"],
        data={"grant_type": "authorization_code", "code": code, "redirect_uri": redirect,
              "code_verifier": verifier, "client_id": microsoft["client_id"],
              "client_secret": microsoft["client_secret"]},
    )  # fmt: skip
    assert r.status_code == 200, r.text
    r = httpx.post(microsoft["device_url"], data={"client_id": microsoft["client_id"]})
    assert r.status_code == 200


def test_server_stops_cleanly() -> None:
    server = OAuthServer().start()
    url = server.token_url
    with httpx.Client() as http:  # a kept-alive connection, as Dovecot keeps them
        assert http.post(url, data={}).status_code == 401
        server.stop()
        server.stop()
        with pytest.raises(httpx.TransportError):
            http.post(url, data={})
    assert not server.running


# --------------------------------------------------------------------------- the Gmail double


class Wire:
    """A raw IMAP connection: send a line, read up to the tagged answer."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        self.reader = self.sock.makefile("rb")
        self.greeting = self.reader.readline()

    def command(self, line: bytes, tag: bytes = b"a") -> list[bytes]:
        self.sock.sendall(tag + b" " + line + b"\r\n")
        out = []
        while True:
            got = self.reader.readline()
            if not got:
                return out
            out.append(got)
            if got.startswith(b"+"):
                self.sock.sendall(b"\r\n")
            elif got.startswith(tag + b" "):
                return out

    def close(self) -> None:
        self.sock.close()


def gmail_token(provider: OAuthServer, address: str) -> str:
    return str(code_flow(provider, address)["access_token"])


@pytest.mark.parametrize("mechanism", ["XOAUTH2", "OAUTHBEARER"])
def test_gmail_double_takes_tokens(gmail_oauth: Any, provider: OAuthServer, mechanism: str) -> None:
    wire = Wire(gmail_oauth.port)
    caps = wire.command(b"CAPABILITY")[0]
    assert b"AUTH=XOAUTH2 AUTH=PLAIN AUTH=OAUTHBEARER" in caps
    token = gmail_token(provider, "src@gmail.test")
    payload = (xoauth2 if mechanism == "XOAUTH2" else oauthbearer)("src@gmail.test", token)
    lines = wire.command(b"AUTHENTICATE " + mechanism.encode() + b" " + base64.b64encode(payload))
    assert lines[-1] == b"a OK src@gmail.test authenticated (Success)\r\n", lines
    assert wire.command(b"SELECT INBOX", b"b")[-1].startswith(b"b OK")
    wire.close()
    # without SASL-IR: the server asks with "+ "
    wire = Wire(gmail_oauth.port)
    wire.sock.sendall(b"c AUTHENTICATE " + mechanism.encode() + b"\r\n")
    assert wire.reader.readline() == b"+ \r\n"
    wire.sock.sendall(base64.b64encode(payload) + b"\r\n")
    assert wire.reader.readline().startswith(b"* CAPABILITY ")
    assert wire.reader.readline().startswith(b"c OK")
    wire.close()


@pytest.mark.parametrize("mechanism", ["XOAUTH2", "OAUTHBEARER"])
def test_gmail_double_refuses_bad_tokens(
    gmail_oauth: Any, provider: OAuthServer, mechanism: str
) -> None:
    make = xoauth2 if mechanism == "XOAUTH2" else oauthbearer
    want = (
        {"status": "401", "schemes": "bearer mac", "scope": "https://mail.google.com/"}
        if mechanism == "XOAUTH2"
        else {"status": "invalid_token", "schemes": "bearer", "scope": "https://mail.google.com/"}
    )
    live = gmail_token(provider, "src@gmail.test")
    expired = gmail_token(provider, "src@gmail.test")
    provider.expire_access_tokens()
    live = gmail_token(provider, "src@gmail.test")
    revoked = gmail_token(provider, "dst@gmail.test")
    provider.revoke("dst@gmail.test")
    # a token for another scope (Microsoft's IMAP scope, say)
    verifier, challenge = pkce()
    url = authorize_url(
        provider, "web", challenge, scope="https://outlook.office.com/IMAP.AccessAsUser.All"
    )
    code = query_of(provider.sign_in(url, "src@gmail.test"))["code"]
    other_scope = httpx.post(provider.token_url, data={
        "grant_type": "authorization_code", "code": code, "redirect_uri": REDIRECT,
        "code_verifier": verifier, "client_id": "web", "client_secret": "web-secret",
    }).json()["access_token"]  # fmt: skip
    for user, token in (
        ("src@gmail.test", expired),
        ("dst@gmail.test", revoked),
        ("src@gmail.test", "ya29.made-up"),
        ("dst@gmail.test", live),  # someone else's
        ("src@gmail.test", other_scope),
        ("nobody@gmail.test", live),
    ):
        wire = Wire(gmail_oauth.port)
        lines = wire.command(b"AUTHENTICATE " + mechanism.encode() + b" "
                             + base64.b64encode(make(user, token)))  # fmt: skip
        assert len(lines) == 2, (user, lines)
        assert challenge_of(lines) == want
        assert lines[1] == b"a NO [AUTHENTICATIONFAILED] Invalid credentials (Failure)\r\n"
        wire.close()
    wire = Wire(gmail_oauth.port)
    lines = wire.command(b"AUTHENTICATE " + mechanism.encode() + b" " + base64.b64encode(b"junk"))
    assert lines[-1].startswith(b"a BAD")
    # passwords still work
    assert wire.command(b"LOGIN src@gmail.test srcpass", b"b")[-1].startswith(b"b OK")
    wire.close()


def test_gmail_double_microsoft_style_bye_on_expiry(
    gmail_oauth: Any, provider: OAuthServer
) -> None:
    gmail_oauth.bye_on_expiry = True
    gmail_oauth.oauth_mechanisms = ("XOAUTH2",)
    provider.access_lifetime = 0.5
    wire = Wire(gmail_oauth.port)
    caps = wire.command(b"CAPABILITY")[0]
    assert b"AUTH=XOAUTH2" in caps and b"OAUTHBEARER" not in caps
    token = gmail_token(provider, "src@gmail.test")
    lines = wire.command(
        b"AUTHENTICATE XOAUTH2 " + base64.b64encode(xoauth2("src@gmail.test", token))
    )
    assert lines[-1].startswith(b"a OK")
    assert wire.command(b"NOOP", b"b")[-1].startswith(b"b OK")
    time.sleep(0.6)
    lines = wire.command(b"NOOP", b"c")
    assert lines == [b"* BYE Session invalidated - AccessTokenExpired\r\n"]
    assert wire.reader.readline() == b""  # closed
    wire.close()
    # a password session is not affected
    wire = Wire(gmail_oauth.port)
    assert wire.command(b"LOGIN src@gmail.test srcpass")[-1].startswith(b"a OK")
    assert wire.command(b"NOOP", b"b")[-1].startswith(b"b OK")
    wire.close()


def test_gmail_double_takes_app_and_service_account_tokens(
    gmail_oauth: Any, provider: OAuthServer
) -> None:
    """A Workspace service account's token for the user, and an application token
    (client credentials) for any user of its domain."""
    key = provider.add_service_account(domains=["gmail.test"])
    sa = jwt_grant(provider, assertion(key, "src@gmail.test")).json()["access_token"]
    provider.add_client("app", "app-secret", app_domain="gmail.test")
    app = httpx.post(provider.token_url, data={"grant_type": "client_credentials",
                     "scope": "https://mail.google.com/"}, auth=("app", "app-secret")).json()  # fmt: skip
    for user, token in (("src@gmail.test", sa), ("dst@gmail.test", app["access_token"])):
        wire = Wire(gmail_oauth.port)
        lines = wire.command(b"AUTHENTICATE XOAUTH2 " + base64.b64encode(xoauth2(user, token)))
        assert lines[-1].startswith(b"a OK"), lines
        wire.close()


def test_gmail_double_cancel_after_the_error_challenge(gmail_oauth: Any) -> None:
    lines = cancel_after_challenge(gmail_oauth.port, "XOAUTH2", xoauth2("src@gmail.test", "x"))
    assert lines[1] == b"a BAD AUTHENTICATE cancelled\r\n"


def test_gmail_double_provider_down_is_a_temporary_failure(
    gmail_oauth: Any, provider: OAuthServer
) -> None:
    token = gmail_token(provider, "src@gmail.test")
    provider.stop()
    wire = Wire(gmail_oauth.port)
    lines = wire.command(
        b"AUTHENTICATE XOAUTH2 " + base64.b64encode(xoauth2("src@gmail.test", token))
    )
    assert lines == [b"a NO [UNAVAILABLE] Temporary System Error\r\n"]
    wire.close()


def test_gmail_double_without_a_provider_offers_plain_only() -> None:
    from tests.doubles.gmail import GmailServer

    with GmailServer(users={"me@gmail.test": "pw"}) as gmail:
        wire = Wire(gmail.port)
        caps = wire.command(b"CAPABILITY")[0]
        assert b"AUTH=PLAIN" in caps and b"XOAUTH2" not in caps
        lines = wire.command(
            b"AUTHENTICATE XOAUTH2 " + base64.b64encode(xoauth2("me@gmail.test", "t")), b"b"
        )
        assert lines[-1].startswith(b"b NO [CANNOT]")
        wire.close()


def test_refresh_tokens_only_for_offline_access(oauth_server: OAuthServer) -> None:
    """Google gives a refresh token only to access_type=offline, Microsoft only with the
    offline_access scope (the clients providers_json registers behave so)."""
    providers = json.loads(oauth_server.providers_json())
    redirect = "http://127.0.0.1:40000/cb"

    def exchange(key: str, scope: str, **extra: str) -> dict[str, Any]:
        p = providers[key]
        verifier, challenge = pkce()
        params = {
            "response_type": "code",
            "client_id": p["client_id"],
            "redirect_uri": redirect,
            "code_challenge": challenge,
            "code_challenge_method": "S256",
            "scope": scope,
        }
        url = p["authorize_url"] + "?" + urllib.parse.urlencode(params | extra)
        code = query_of(oauth_server.sign_in(url, "g@x.test"))["code"]
        r = httpx.post(
            p["token_url"],
            data={
                "grant_type": "authorization_code",
                "code": code,
                "redirect_uri": redirect,
                "code_verifier": verifier,
                "client_id": p["client_id"],
                "client_secret": p["client_secret"],
            },
        )
        assert r.status_code == 200, r.text
        return dict(r.json())  # fmt: skip

    google = " ".join(providers["google"]["scopes"])
    assert "refresh_token" not in exchange("google", google)
    assert "refresh_token" in exchange("google", google, access_type="offline", prompt="consent")
    ms = " ".join(providers["microsoft"]["scopes"])
    assert "refresh_token" in exchange("microsoft", ms)
    body = exchange("microsoft", ms.replace("offline_access", "").strip())
    assert "refresh_token" not in body
    assert jwt_decode(body["id_token"], None)[1]["preferred_username"] == "g@x.test"
    # the device flow (Microsoft's) too
    oauth_server.device_interval = 0
    for scope, refresh in ((ms, True), ("https://outlook.office.com/IMAP.AccessAsUser.All", False)):
        dev = httpx.post(providers["microsoft"]["device_url"], data={
            "client_id": providers["microsoft"]["client_id"], "scope": scope}).json()  # fmt: skip
        oauth_server.approve_device(dev["user_code"], "g@x.test")
        r = httpx.post(providers["microsoft"]["token_url"], data={
            "grant_type": DEVICE_GRANT, "device_code": dev["device_code"],
            "client_id": providers["microsoft"]["client_id"],
            "client_secret": providers["microsoft"]["client_secret"]})  # fmt: skip
        assert ("refresh_token" in r.json()) is refresh
