"""Account URLs as people type them."""

from __future__ import annotations

import pytest

from yippiemove.accounts import AccountURLError, parse_account_url, resolve_account
from yippiemove.imap.connection import is_loopback


@pytest.mark.parametrize(
    ("url", "scheme", "user", "host", "port", "security"),
    [
        ("imap://bob@mail.example.org", "imap", "bob", "mail.example.org", 143, "starttls"),
        ("imaps://bob@mail.example.org", "imaps", "bob", "mail.example.org", 993, "tls"),
        ("IMAPS://bob@example.org:10993/", "imaps", "bob", "example.org", 10993, "tls"),
        (
            "imap://bob@example.org@mail.example.org:143",
            "imap",
            "bob@example.org",
            "mail.example.org",
            143,
            "starttls",
        ),
        (
            "imap://bob%40example.org@127.0.0.1:1143",
            "imap",
            "bob@example.org",
            "127.0.0.1",
            1143,
            "starttls",
        ),
        ("imap://u@[::1]:143", "imap", "u", "::1", 143, "starttls"),
    ],
)
def test_parse_good(url, scheme, user, host, port, security):
    a = parse_account_url(url)
    assert (a.scheme, a.user, a.host, a.port, a.security) == (scheme, user, host, port, security)


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("mail.example.org", "must look like imap://USER@HOST:PORT"),
        ("pop3://u@h", "unknown scheme 'pop3'"),
        ("imap://mail.example.org", "has no user name"),
        ("imap://u:secret@h", "do not put the password in the URL"),
        ("imap://u@h:0", "is not a number 1-65535"),
        ("imap://u@h:99999", "is not a number 1-65535"),
        ("imap://u@h:abc", "is not a number 1-65535"),
        ("imap://u@bad_host", "is not a valid host name"),
        ("imap://u@h/INBOX", "path, query or fragment is not allowed"),
        ("imap://u@[::1", "unterminated IPv6 address"),
    ],
)
def test_parse_bad_names_the_problem(url, message):
    with pytest.raises(AccountURLError) as e:
        parse_account_url(url, what="--source")
    assert message in str(e.value)
    assert "secret" not in str(e.value)


def test_loopback_endpoint_allows_plain_auth_only_there():
    assert parse_account_url("imap://u@127.0.0.1").endpoint("pw").allow_insecure_auth
    assert parse_account_url("imap://u@localhost").endpoint("pw").allow_insecure_auth
    assert not parse_account_url("imap://u@mail.example.org").endpoint("pw").allow_insecure_auth
    assert (
        parse_account_url("imap://u@mail.example.org")
        .endpoint("pw", allow_insecure_auth=True)
        .allow_insecure_auth
    )


def test_endpoint_repr_hides_password():
    ep = parse_account_url("imap://u@h").endpoint("hunter2")
    assert "hunter2" not in repr(ep) and "hunter2" not in ep.label


@pytest.mark.parametrize(
    ("host", "loop"),
    [
        ("127.0.0.1", True),
        ("127.3.4.5", True),
        ("::1", True),
        ("localhost", True),
        ("10.0.0.1", False),
        ("example.org", False),
        ("[::1]", True),
    ],
)
def test_is_loopback(host, loop):
    assert is_loopback(host) is loop


# ------------------------------------------------------- bare addresses and presets


@pytest.mark.parametrize(
    ("text", "preset", "url", "key"),
    [
        ("ada@gmail.com", None, ("imaps", "ada@gmail.com", "imap.gmail.com", 993), "gmail"),
        (
            " Bo@Hotmail.com ",
            None,
            ("imaps", "Bo@Hotmail.com", "outlook.office365.com", 993),
            "outlook",
        ),
        ("bob@web.de", None, ("imaps", "bob", "imap.web.de", 993), "webde"),
        ("h@gmx.ch", None, ("imaps", "h@gmx.ch", "imap.gmx.net", 993), "gmx"),
        # A custom domain with a forced preset.
        (
            "boss@corp.example",
            "google-workspace",
            ("imaps", "boss@corp.example", "imap.gmail.com", 993),
            "google-workspace",
        ),
        # A URL keeps its own server; the preset comes from the host, else generic.
        ("imaps://ada@imap.gmail.com", None, ("imaps", "ada", "imap.gmail.com", 993), "gmail"),
        (
            "imaps://boss@corp.example@imap.gmail.com",
            None,
            ("imaps", "boss@corp.example", "imap.gmail.com", 993),
            "google-workspace",
        ),
        ("imap://u@127.0.0.1:1143", None, ("imap", "u", "127.0.0.1", 1143), "generic"),
        ("imap://u@127.0.0.1:1143", "icloud", ("imap", "u", "127.0.0.1", 1143), "icloud"),
    ],
)
def test_resolve_account(text, preset, url, key):
    acc, prov = resolve_account(text, what="--source", preset=preset)
    assert (acc.scheme, acc.user, acc.host, acc.port) == url
    assert prov.key == key


@pytest.mark.parametrize(
    ("text", "preset", "message"),
    [
        ("alice@example.org", None, "no preset for example.org; give an imaps://USER@HOST URL"),
        ("alice@Example.ORG", None, "no preset for example.org"),
        ("alice@gmail.com", "nope", "unknown preset 'nope'"),
        ("alice@example.org", "generic", "the 'generic' preset has no server"),
        ("mail.example.org", None, "must look like imap://USER@HOST:PORT"),
        ("@gmail.com", None, "is neither an e-mail address nor an imap URL"),
        ("a b@gmail.com", None, "is neither an e-mail address nor an imap URL"),
    ],
)
def test_resolve_account_errors(text, preset, message):
    with pytest.raises(AccountURLError) as e:
        resolve_account(text, what="--source", preset=preset)
    assert message in str(e.value)


def test_make_endpoint_with_an_oauth_grant_signs_in_with_tokens_not_a_password():
    from yippiemove.accounts import make_endpoint
    from yippiemove.oauth import GrantTokenSource, OAuthConfig

    grant = {"kind": "refresh", "provider": "google", "refresh_token": "MARKER-refresh"}
    account = {
        "host": "imap.gmail.com",
        "port": 993,
        "security": "tls",
        "username": "alice@gmail.com",
        "password": "ignored",
        "oauth": grant,
    }
    ep = make_endpoint(account, None, False, oauth_config=OAuthConfig.from_env({}))
    assert isinstance(ep.oauth, GrantTokenSource) and ep.password == ""
    assert "MARKER" not in repr(ep) and "MARKER" not in repr(ep.oauth)
    plain = make_endpoint({**account, "oauth": None}, None, False)
    assert plain.oauth is None and plain.password == "ignored"
