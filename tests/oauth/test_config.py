"""OAuth2 settings: built-in providers, the environment, the providers file, stdin form."""

from __future__ import annotations

import asyncio
import json
from urllib.parse import parse_qs, urlsplit

import pytest

from yippiemove.imap.errors import ConsentRevoked
from yippiemove.oauth import GOOGLE, OAuthConfig, OAuthConfigError, OAuthProvider
from yippiemove.oauth.flows import Pending, begin
from yippiemove.oauth.http import check_url
from yippiemove.oauth.tokens import GrantError, GrantTokenSource, check_grant, redact_grant


def test_defaults_from_an_empty_environment():
    cfg = OAuthConfig.from_env({})
    g, m = cfg.get("google"), cfg.get("microsoft")
    assert g.authorize_url == "https://accounts.google.com/o/oauth2/v2/auth"
    assert g.token_url == "https://oauth2.googleapis.com/token"
    assert g.revoke_url == "https://oauth2.googleapis.com/revoke"
    assert g.device_url is None
    assert "https://mail.google.com/" in g.scopes
    assert m.authorize_url == "https://login.microsoftonline.com/common/oauth2/v2.0/authorize"
    assert m.token_url == "https://login.microsoftonline.com/common/oauth2/v2.0/token"
    assert m.device_url == "https://login.microsoftonline.com/common/oauth2/v2.0/devicecode"
    assert "https://outlook.office.com/IMAP.AccessAsUser.All" in m.scopes
    assert "offline_access" in m.scopes
    assert m.app_scopes == ("https://outlook.office365.com/.default",)
    assert m.token_url_for("contoso.com") == (
        "https://login.microsoftonline.com/contoso.com/oauth2/v2.0/token"
    )
    assert cfg.configured() == []
    with pytest.raises(OAuthConfigError, match="yahoo"):
        cfg.get("yahoo")


def test_environment_client_ids_secret_files_and_tenant(tmp_path):
    secret = tmp_path / "ms-secret"
    secret.write_text("s3cr3t-value\n")
    cfg = OAuthConfig.from_env(
        {
            "YIPPIEMOVE_GOOGLE_CLIENT_ID": "gid",
            "YIPPIEMOVE_MICROSOFT_CLIENT_ID": "mid",
            "YIPPIEMOVE_MICROSOFT_CLIENT_SECRET_FILE": str(secret),
            "YIPPIEMOVE_MICROSOFT_TENANT": "organizations",
        }
    )
    m = cfg.get("microsoft")
    assert (m.client_id, m.client_secret) == ("mid", "s3cr3t-value")
    assert "/organizations/" in m.token_url
    assert "s3cr3t-value" not in repr(m) and "s3cr3t-value" not in repr(cfg)
    assert cfg.configured() == ["google", "microsoft"]
    with pytest.raises(OAuthConfigError, match="cannot read"):
        OAuthConfig.from_env({"YIPPIEMOVE_GOOGLE_CLIENT_SECRET_FILE": str(tmp_path / "none")})


def test_providers_file_overrides_endpoints_as_a_set(tmp_path):
    f = tmp_path / "providers.json"
    f.write_text(
        json.dumps(
            {
                "google": {
                    "authorize_url": "http://127.0.0.1:9/authorize",
                    "token_url": "http://127.0.0.1:9/token",
                    "client_id": "test-client",
                },
                "example": {
                    "name": "Example",
                    "authorize_url": "https://id.example/a",
                    "token_url": "https://id.example/t",
                    "scopes": "imap offline",
                },
            }
        )
    )
    cfg = OAuthConfig.from_env({"YIPPIEMOVE_OAUTH_PROVIDERS_FILE": str(f)})
    g = cfg.get("google")
    assert g.token_url == "http://127.0.0.1:9/token" and g.client_id == "test-client"
    # The real Google's other endpoints are not kept beside the test server's.
    assert g.revoke_url is None and g.userinfo_url is None
    assert g.scopes == GOOGLE.scopes  # not an endpoint: kept
    assert cfg.get("example").scopes == ("imap", "offline")
    # The job process's stdin form round-trips.
    assert OAuthConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg


@pytest.mark.parametrize(
    "data, match",
    [
        ({"google": {"tokn_url": "https://x/t"}}, "unknown field"),
        ({"new": {"token_url": "https://x/t"}}, "authorize_url is missing"),
        ({"google": {"scopes": [1]}}, "must be strings"),
        ([1, 2], "expected an object"),
    ],
)
def test_providers_file_mistakes_are_named(tmp_path, data, match):
    f = tmp_path / "p.json"
    f.write_text(json.dumps(data))
    with pytest.raises(OAuthConfigError, match=match):
        OAuthConfig.from_env({"YIPPIEMOVE_OAUTH_PROVIDERS_FILE": str(f)})


def test_urls_must_be_https_except_loopback():
    assert check_url("https://oauth2.googleapis.com/token", "x")
    assert check_url("http://127.0.0.1:8080/token", "x")
    assert check_url("http://[::1]:8080/token", "x")
    for bad in ("http://oauth2.googleapis.com/token", "ftp://x/y", "https:///t", "/token"):
        with pytest.raises(OAuthConfigError):
            check_url(bad, "x")


def test_begin_builds_a_pkce_s256_url_with_state():
    prov = OAuthProvider.from_dict("google", {"client_id": "cid"}, GOOGLE)
    p = begin(prov, "http://127.0.0.1:5555/", login_hint="alice@gmail.com")
    q = {k: v[0] for k, v in parse_qs(urlsplit(p.url).query).items()}
    assert p.url.startswith(GOOGLE.authorize_url + "?")
    assert q["client_id"] == "cid" and q["response_type"] == "code"
    assert q["code_challenge_method"] == "S256" and len(q["code_challenge"]) == 43
    assert q["code_challenge"] != p.code_verifier and p.code_verifier not in p.url
    assert q["state"] == p.state and len(p.state) >= 32
    assert q["redirect_uri"] == "http://127.0.0.1:5555/"
    assert q["access_type"] == "offline" and q["prompt"] == "consent"
    assert q["login_hint"] == "alice@gmail.com"
    assert "https://mail.google.com/" in q["scope"].split()
    assert p.code_verifier not in repr(p)
    assert Pending.from_dict(p.as_dict()) == p
    assert begin(prov, "http://127.0.0.1:5555/").state != p.state


def test_grants_are_checked_and_redacted():
    good = {"kind": "refresh", "provider": "google", "refresh_token": "MARKER-rt"}
    assert check_grant(good) == good
    assert "MARKER-rt" not in json.dumps(redact_grant(good))
    for bad, match in [
        ({"kind": "password"}, "unknown grant kind"),
        ({"kind": "refresh", "provider": "google"}, "refresh_token"),
        ({"kind": "static"}, "access_token"),
        ({"kind": "service_account", "provider": "google", "subject": "a@b"}, "key"),
        ({"kind": "client_credentials", "provider": "microsoft", "tenant": "t"}, "client_id"),
        ({**good, "expires_at": "soon"}, "expires_at"),
    ]:
        with pytest.raises(GrantError, match=match) as info:
            check_grant(bad)
        assert "MARKER" not in str(info.value)
    src = GrantTokenSource(good, OAuthConfig.from_env({}))
    assert "MARKER" not in repr(src)


def test_a_static_token_is_given_then_cannot_be_renewed():
    src = GrantTokenSource({"kind": "static", "access_token": "tok"}, None)
    assert asyncio.run(src.access_token()) == "tok"
    with pytest.raises(ConsentRevoked, match="sign in again"):
        asyncio.run(src.access_token(refresh=True))
