"""GrantTokenSource and the sign-in flows against the test provider (tests/doubles/oauth2.py):
every grant kind gets a token, refresh ahead of expiry, refusals, transient failures,
answers that are too large or redirect."""

from __future__ import annotations

import asyncio
import json
import threading
import time
import types
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

import pytest

from tests.doubles.oauth2 import OAuthServer
from yippiemove.imap.errors import AuthenticationError, ConsentRevoked
from yippiemove.oauth import GrantTokenSource, OAuthConfig, TokenEndpointUnavailable, flows, tokens

USER = "alice@example.test"


@pytest.fixture
def config(oauth_server: OAuthServer, tmp_path) -> OAuthConfig:
    path = tmp_path / "providers.json"
    oauth_server.providers_json(path=path)
    return OAuthConfig.from_env({"YIPPIEMOVE_OAUTH_PROVIDERS_FILE": str(path)})


def consent(server: OAuthServer, config: OAuthConfig, key: str = "google") -> tuple[dict, str]:
    """A user's consent through begin -> the provider's Allow -> finish."""
    prov = config.get(key)
    redirect = "http://127.0.0.1:9/cb"
    pending = flows.begin(prov, redirect, login_hint=USER)
    location = server.sign_in(pending.url, USER)
    q = {k: v[0] for k, v in parse_qs(urlsplit(location).query).items()}
    assert q["state"] == pending.state
    return asyncio.run(flows.finish(prov, pending, q["code"], redirect, state=q["state"]))


def introspect(server: OAuthServer, token: str) -> dict:
    return server.introspect(token)


def test_authorization_code_with_pkce_gives_a_refresh_grant_and_the_address(oauth_server, config):
    grant, address = consent(oauth_server, config)
    assert address == USER
    assert grant["kind"] == "refresh" and grant["provider"] == "google"
    assert grant["refresh_token"] and grant["access_token"] and grant["expires_at"] > time.time()
    src = GrantTokenSource(grant, config)
    # the access token of the exchange is used while fresh: nothing asked
    assert asyncio.run(src.access_token()) == grant["access_token"] and src.fetched == 0


def test_finish_refuses_a_foreign_state(oauth_server, config):
    prov = config.get("google")
    pending = flows.begin(prov, "http://127.0.0.1:9/cb")
    with pytest.raises(flows.FlowError, match="state"):
        asyncio.run(flows.finish(prov, pending, "code", "http://127.0.0.1:9/cb", state="other"))


def test_refresh_grant_renews_ahead_of_expiry(oauth_server, config, monkeypatch):
    oauth_server.access_lifetime = 2
    grant, _ = consent(oauth_server, config, "microsoft")
    del grant["access_token"], grant["expires_at"]
    src = GrantTokenSource(grant, config)
    # The token source's clock, not the machine's: the test does not depend on how
    # busy the machine is (the provider's own clock keeps the first token valid).
    now = [time.time()]
    monkeypatch.setattr(tokens, "time", types.SimpleNamespace(time=lambda: now[0]))

    async def run() -> list[str]:
        seen = [await src.access_token()]
        now[0] += 1.85  # 10% of 2 s = 0.2 s ahead: still valid at 1.85 s, but renewed
        seen.append(await src.access_token())
        seen.append(await src.access_token())
        return seen

    first, second, third = asyncio.run(run())
    assert first != second == third
    assert src.fetched == 2 and oauth_server.refreshed == 2
    assert introspect(oauth_server, second)["active"] is True
    assert introspect(oauth_server, first)["active"] is True  # renewed before it died


def test_refresh_true_renews_once_for_connections_refused_together(oauth_server, config):
    grant, _ = consent(oauth_server, config)
    src = GrantTokenSource(grant, config)

    async def run() -> set[str]:
        old = await src.access_token()
        got = await asyncio.gather(*(src.access_token(refresh=True) for _ in range(5)))
        assert old not in got
        return set(got)

    assert len(asyncio.run(run())) == 1 and src.fetched == 1


def test_rotated_refresh_token_is_handed_to_on_rotate(oauth_server, config):
    oauth_server.rotate_refresh = True
    grant, _ = consent(oauth_server, config, "microsoft")
    rotated: list[dict] = []
    src = GrantTokenSource(grant, config, on_rotate=rotated.append)
    asyncio.run(src.access_token(refresh=True))
    assert len(rotated) == 1 and rotated[0]["refresh_token"] != grant["refresh_token"]
    assert src.grant["refresh_token"] == rotated[0]["refresh_token"]


def test_revoked_consent_is_consent_revoked(oauth_server, config):
    grant, _ = consent(oauth_server, config)
    oauth_server.revoke(USER)
    src = GrantTokenSource(grant, config)
    with pytest.raises(ConsentRevoked, match="sign in again") as info:
        asyncio.run(src.access_token(refresh=True))
    assert "invalid_grant" in str(info.value)
    assert grant["refresh_token"] not in str(info.value)


def test_service_account_jwt_bearer_gives_the_subjects_token(oauth_server, config):
    key = oauth_server.add_service_account(domains=["example.test"])
    grant = {"kind": "service_account", "provider": "google", "key": key, "subject": USER}
    src = GrantTokenSource(grant, config)
    token = asyncio.run(src.access_token())
    info = introspect(oauth_server, token)
    assert info["active"] is True and info.get("email", info.get("username")) == USER
    assert key["private_key"] not in repr(src)
    # outside the delegated domain: refused, permanently
    bad = GrantTokenSource({**grant, "subject": "eve@elsewhere.test"}, config)
    with pytest.raises(AuthenticationError):
        asyncio.run(bad.access_token())
    oauth_server.revoke(key["client_email"])
    with pytest.raises(ConsentRevoked):
        asyncio.run(src.access_token(refresh=True))


def test_client_credentials_give_an_application_token(oauth_server, config):
    oauth_server.add_client("tenant-app", "app-secret", app_domain="example.test")
    grant = {
        "kind": "client_credentials",
        "provider": "microsoft",
        "tenant": "example.test",
        "client_id": "tenant-app",
        "client_secret": "app-secret",
    }
    src = GrantTokenSource(grant, config)
    token = asyncio.run(src.access_token())
    assert introspect(oauth_server, token)["active"] is True
    wrong = GrantTokenSource({**grant, "client_secret": "nope"}, config)
    with pytest.raises(ConsentRevoked, match="invalid_client"):
        asyncio.run(wrong.access_token())


def test_device_flow(oauth_server, config):
    prov = config.get("microsoft")
    shown: list[flows.DeviceCode] = []

    def show(code: flows.DeviceCode) -> None:
        shown.append(code)
        threading.Timer(0.3, oauth_server.approve_device, (code.user_code, USER)).start()

    grant, address = asyncio.run(flows.device_flow(prov, show, max_wait=20))
    assert address == USER and grant["kind"] == "refresh"
    assert shown and shown[0].verification_uri.startswith(oauth_server.url)


def test_google_has_no_device_flow_for_mail():
    prov = OAuthConfig.from_env({"YIPPIEMOVE_GOOGLE_CLIENT_ID": "x"}).get("google")
    with pytest.raises(flows.FlowError, match="browser"):
        asyncio.run(flows.device_flow(prov, lambda code: None))


# ------------------------------------------------------- a misbehaving token endpoint


class _Scripted(BaseHTTPRequestHandler):
    script: list[tuple[int, dict[str, str], bytes]]
    hits: list[str]

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length", "0")))
        self.hits.append(self.path)
        status, headers, body = self.script.pop(0) if len(self.script) > 1 else self.script[0]
        self.send_response(status)
        for k, v in headers.items():
            self.send_header(k, v)
        if "Content-Length" not in headers:
            self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format, *args) -> None:
        return


@pytest.fixture
def scripted() -> Iterator[tuple[ThreadingHTTPServer, list, list]]:
    script: list = []
    hits: list = []
    handler = type("H", (_Scripted,), {"script": script, "hits": hits})
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    t = threading.Thread(target=httpd.serve_forever, daemon=True)
    t.start()
    yield httpd, script, hits
    httpd.shutdown()
    httpd.server_close()


def _config_at(httpd: ThreadingHTTPServer) -> OAuthConfig:
    url = f"http://127.0.0.1:{httpd.server_address[1]}"
    return OAuthConfig.from_dict(
        {
            "providers": {
                "google": {
                    "authorize_url": url + "/authorize",
                    "token_url": url + "/token",
                    "client_id": "c",
                }
            }
        }
    )


GRANT = {"kind": "refresh", "provider": "google", "refresh_token": "MARKER-rt"}
OK = (200, {"Content-Type": "application/json"}, json.dumps(
    {"access_token": "fresh", "token_type": "Bearer", "expires_in": 3600}
).encode())  # fmt: skip


def test_transient_500_is_retried(scripted, monkeypatch):
    monkeypatch.setattr(tokens, "RETRY_WAITS", (0.05, 0.05))
    httpd, script, hits = scripted
    script[:] = [(500, {}, b"oops"), (503, {}, b"busy"), OK]
    src = GrantTokenSource(GRANT, _config_at(httpd))
    assert asyncio.run(src.access_token()) == "fresh" and len(hits) == 3


def test_a_token_endpoint_that_keeps_failing_is_transient_unavailability(scripted, monkeypatch):
    monkeypatch.setattr(tokens, "RETRY_WAITS", (0.05, 0.05))
    httpd, script, hits = scripted
    script[:] = [(502, {}, b"bad gateway")]
    src = GrantTokenSource(GRANT, _config_at(httpd))
    with pytest.raises(TokenEndpointUnavailable, match="HTTP 502") as info:
        asyncio.run(src.access_token())
    assert info.value.transient and len(hits) == 3 and "MARKER" not in str(info.value)


def test_redirects_are_not_followed(scripted, monkeypatch):
    monkeypatch.setattr(tokens, "RETRY_WAITS", ())
    httpd, script, hits = scripted
    port = httpd.server_address[1]
    script[:] = [(307, {"Location": f"http://127.0.0.1:{port}/elsewhere"}, b""), OK]
    src = GrantTokenSource(GRANT, _config_at(httpd))
    with pytest.raises(AuthenticationError):
        asyncio.run(src.access_token())
    assert hits == ["/token"]  # the refresh token was not sent on


def test_an_oversized_answer_is_refused(scripted, monkeypatch):
    monkeypatch.setattr(tokens, "RETRY_WAITS", ())
    httpd, script, _ = scripted
    huge = b'{"access_token": "' + b"x" * (2 * 1024 * 1024) + b'"}'
    script[:] = [(200, {"Content-Type": "application/json"}, huge)]
    src = GrantTokenSource(GRANT, _config_at(httpd))
    with pytest.raises(TokenEndpointUnavailable, match="larger than"):
        asyncio.run(src.access_token())
    # a lying Content-Length does not help either
    script[:] = [(200, {"Content-Type": "application/json", "Content-Length": "10"}, huge)]
    with pytest.raises((TokenEndpointUnavailable, AuthenticationError)):
        asyncio.run(GrantTokenSource(GRANT, _config_at(httpd)).access_token())


def test_revoke_forgets_the_sign_in_at_the_provider(oauth_server, config):
    grant, _ = consent(oauth_server, config)
    src = GrantTokenSource(grant, config)
    assert oauth_server.live_tokens(USER) == 1
    assert asyncio.run(src.revoke()) is True
    assert oauth_server.live_tokens(USER) == 0
    with pytest.raises(ConsentRevoked):
        asyncio.run(src.access_token(refresh=True))
    # nothing to revoke for a static token, or without a revocation endpoint
    assert (
        asyncio.run(GrantTokenSource({"kind": "static", "access_token": "t"}, None).revoke())
        is False
    )
