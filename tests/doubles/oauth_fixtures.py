"""Fixtures of issue 16's OAuth2 tests (imported by tests/conftest.py):

``oauth_server``   a fresh :class:`tests.doubles.oauth2.OAuthServer` per test (access tokens
                   live an hour unless the test sets ``oauth_server.access_lifetime = 2``:
                   it is read whenever a token is issued);
``dovecot_oauth``  a Dovecot whose ``oauth2`` passdb checks XOAUTH2/OAUTHBEARER tokens at
                   that server's introspection endpoint; users ``src@example.test`` /
                   ``srcpass`` and ``dst@example.test`` / ``dstpass`` (passwords still work
                   with PLAIN/LOGIN, so the usual helpers fill and read the mailboxes).
                   The source-untouched guard checks it like ``dovecot``.  For
                   application tokens (client credentials) too:
                   ``dovecot_factory(users=..., oauth2_introspection_url=
                   oauth_server.dovecot_introspection_url, oauth2_app_tokens=True)``;
``gmail_oauth``    the Gmail double (users ``src@gmail.test``/``srcpass``,
                   ``dst@gmail.test``/``dstpass``) taking XOAUTH2 and OAUTHBEARER tokens of
                   ``oauth_server``; set ``gmail_oauth.bye_on_expiry = True`` or
                   ``gmail_oauth.oauth_mechanisms = ("XOAUTH2",)`` (Microsoft's) as needed.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from tests.doubles.oauth2 import OAuthServer
from yippiemove.testing.dovecot import DovecotServer

#: The users of ``dovecot_oauth`` (names are e-mail addresses: the introspection's email).
OAUTH_USERS = {"src@example.test": "srcpass", "dst@example.test": "dstpass"}


@pytest.fixture
def oauth_server() -> Iterator[OAuthServer]:
    """A running test OAuth2 provider on 127.0.0.1 (fresh for each test)."""
    with OAuthServer() as server:
        yield server


@pytest.fixture
def dovecot_oauth(
    oauth_server: OAuthServer, dovecot_factory: Callable[..., DovecotServer]
) -> DovecotServer:
    """A running Dovecot accepting ``oauth_server``'s tokens (see the module docstring)."""
    return dovecot_factory(
        users=dict(OAUTH_USERS),
        oauth2_introspection_url=oauth_server.dovecot_introspection_url,
    )


@pytest.fixture
def gmail_oauth(oauth_server: OAuthServer, request: pytest.FixtureRequest) -> Iterator[Any]:
    """A running Gmail double accepting ``oauth_server``'s tokens (see the module
    docstring); fails the test if the double hit an internal error."""
    from tests.conftest import run_gmail

    yield from run_gmail(request, oauth_server=oauth_server)
