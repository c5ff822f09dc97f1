"""Issue 16, the web order's and the REST API's "Sign in with Google / Microsoft", over the
REAL Service, the test OAuth2 provider (tests/doubles/oauth2.py) and a Dovecot that
checks its tokens (``dovecot_oauth``): both steps signed in, the order moved exact with
the grants from the encrypted credentials; a refused consent and every misuse of
``state`` store nothing; "forget my sign-in" revokes and wipes; a consent revoked before
the job runs stops it with ``reauth`` and signing in again resumes it, exact."""

from __future__ import annotations

import html
import re
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from tests import mailcheck
from tests.doubles.oauth2 import OAuthServer
from tests.svckit import make_service, wait_status
from tests.transfer.test_move import make_message
from tests.web.conftest import Browser
from tests.web.htmlform import form_fields, with_values
from yippiemove.oauth import OAuthConfig
from yippiemove.service.core import Service
from yippiemove.service.db import Job, OAuthSignIn
from yippiemove.testing.dovecot import DovecotServer
from yippiemove.web.app import create_app

__all__ = ["make_service"]  # the fixture, used here

API = "/api/v1"
SRC, DST = "src@example.test", "dst@example.test"
NEW = "/transfers/new"


class World:
    def __init__(self, svc: Service, provider: OAuthServer, dovecot: DovecotServer) -> None:
        self.svc = svc
        self.provider = provider
        self.dovecot = dovecot
        self.app = create_app(svc)

    def browser(self, email: str = "ada@example.org") -> Browser:
        b = Browser(TestClient(self.app, base_url="http://testserver"))
        b.signup(email)
        return b

    def uid(self, email: str = "ada@example.org") -> int:
        uid = self.svc.authenticate(email, "correct horse battery")
        assert uid is not None
        return uid

    def sign_in_rows(self) -> int:
        with self.svc.db.read() as s:
            return int(s.scalar(select(func.count()).select_from(OAuthSignIn)) or 0)

    def credentials(self, job_id: str) -> dict[str, Any]:
        with self.svc.db.read() as s:
            job = s.get(Job, job_id)
            assert job is not None and job.credentials is not None
            return self.svc.box.decrypt(job.credentials)


@pytest.fixture
def world(
    oauth_server: OAuthServer,
    dovecot_oauth: DovecotServer,
    make_service: Callable[..., Service],
    tmp_path: Path,
) -> Iterator[World]:
    path = tmp_path / "providers.json"
    oauth_server.providers_json(path=path, redirect_uris=["http://testserver/oauth/callback"])
    config = OAuthConfig.from_env({"YIPPIEMOVE_OAUTH_PROVIDERS_FILE": str(path)})
    at = f"127.0.0.1:{dovecot_oauth.port}:starttls"
    svc = make_service(
        ca_file=str(dovecot_oauth.ca_file),
        oauth=config,
        oauth_imap=f"google={at},microsoft={at}",
        base_url="http://testserver",
    )
    dovecot_oauth.deliver_many(SRC, "INBOX", [make_message(i) for i in range(6)])
    dovecot_oauth.deliver_many(SRC, "Archive", [make_message(i, size=3000) for i in range(6, 9)])
    yield World(svc, oauth_server, dovecot_oauth)


def to_provider(b: Browser, page: str, action: str) -> str:
    """Press a "Sign in with ..." button of the order page: the provider's URL."""
    r = b.post(NEW, with_values(form_fields(page, NEW), action=action))
    assert r.status_code == 303, html.unescape(r.text)[:2000]
    assert r.headers["location"].startswith("http://127.0.0.1:")
    return str(r.headers["location"])


def back_from(world: World, b: Browser, url: str, address: str, allow: bool = True) -> Any:
    """Sign in at the provider and follow its redirect back to the service."""
    back = world.provider.sign_in(url, address, allow=allow)
    assert back.startswith("http://testserver/oauth/callback?"), back
    return b.get(back.removeprefix("http://testserver"), follow_redirects=False)


def order_signed_in(world: World, b: Browser) -> str:
    """The whole order: Google on the source, Microsoft on the destination; the job id."""
    r = b.get(NEW)
    page = r.text
    assert "Sign in with Google" in page and "Sign in with Microsoft" in page
    # The answer to the button is a redirect to the provider: the CSP's form-action lets
    # it go there (Chromium applies form-action to a form's redirects).
    assert f"form-action 'self' {world.provider.url}" in r.headers["content-security-policy"]
    r = back_from(world, b, to_provider(b, page, "oauth_source_google"), SRC)
    assert r.status_code == 200, html.unescape(r.text)[:3000]
    text = html.unescape(r.text)
    assert f"{SRC} Signed in with Google" in " ".join(re.sub(r"<[^>]+>", " ", text).split())
    assert "2 folders · 9 messages" in text
    r = back_from(world, b, to_provider(b, r.text, "oauth_dest_microsoft"), DST)
    assert r.status_code == 200, html.unescape(r.text)[:3000]
    text = html.unescape(r.text)
    assert "Which folders?" in text and "Signed in with Microsoft" in text
    r = b.post(NEW, with_values(form_fields(r.text, NEW), action="start"))
    assert r.status_code == 303, html.unescape(r.text)[:3000]
    return str(r.headers["location"]).rsplit("/", 1)[1]


def test_both_steps_sign_in_and_the_transfer_is_exact(world: World) -> None:
    b = world.browser()
    jid = order_signed_in(world, b)
    uid = world.uid()
    view = world.svc.get_transfer(uid, jid)
    assert view.source["username"] == SRC and view.source["oauth_provider"] == "google"
    assert view.dest["username"] == DST and view.dest["oauth_provider"] == "microsoft"
    creds = world.credentials(jid)
    assert creds["source_oauth"]["kind"] == "refresh" and creds["dest_oauth"]["provider"] == (
        "microsoft"
    )
    assert world.sign_in_rows() == 0  # used by the order: the grants live in the job only
    secrets = [creds[f"{s}_oauth"][k] for s in ("source", "dest") for k in ("refresh_token",)]
    world.svc.start(1)
    done = wait_status(world.svc, uid, jid)
    assert done.status == "done", (done.error, done.progress)
    src = mailcheck.snapshot(world.dovecot.port, SRC, "srcpass")
    dst = mailcheck.snapshot(world.dovecot.port, DST, "dstpass")
    assert dst == src and sum(len(list(c.elements())) for c in src.values()) == 9
    # No token in what the customer sees, nor in what the job wrote.
    page = b.get(f"/transfers/{jid}").text + b.get(f"/transfers/{jid}/summary").text
    written = b"".join(
        p.read_bytes() for p in world.svc.settings.job_dir(jid).rglob("*") if p.is_file()
    )
    # ...nor in clear in the control database (the grants are in the encrypted blob).
    written += b"".join(
        p.read_bytes() for p in world.svc.settings.data_dir.glob("control.sqlite*") if p.is_file()
    )
    for secret in secrets:
        assert secret not in page and secret.encode() not in written
    assert "Forget my sign-in" in page


def test_a_refused_consent_and_misused_states_store_nothing(world: World) -> None:
    b = world.browser()
    page = b.get(NEW).text
    # The customer presses Deny at the provider.
    r = back_from(world, b, to_provider(b, page, "oauth_source_google"), SRC, allow=False)
    assert r.status_code == 400
    assert "You did not allow access at Google, so nothing was stored" in html.unescape(r.text)
    assert "Where is your mail now?" in r.text  # back on the source step
    assert world.sign_in_rows() == 0

    # The same answer twice (a reload, a replay): the second finds nothing.
    back = world.provider.sign_in(to_provider(b, page, "oauth_source_google"), SRC)
    path = back.removeprefix("http://testserver")
    assert b.get(path).status_code == 200
    again = b.get(path)
    assert again.status_code == 400
    assert "expired or was already used" in html.unescape(again.text)

    # A made-up state, and none at all.
    for bad in ("/oauth/callback?state=forged&code=x", "/oauth/callback?code=x"):
        r = b.get(bad)
        assert r.status_code == 400 and "Please start" in html.unescape(r.text), bad

    # Another browser (a link planted on a victim, or a stolen answer): refused, and the
    # real sign-in is void too.
    url = to_provider(b, page, "oauth_source_google")
    back = world.provider.sign_in(url, SRC)
    eve = world.browser("eve@example.org")
    r = eve.get(back.removeprefix("http://testserver"))
    assert r.status_code == 400
    assert "another browser session" in html.unescape(r.text)
    r = b.get(back.removeprefix("http://testserver"))
    assert r.status_code == 400 and "expired or was already used" in html.unescape(r.text)

    # Expired: the provider's answer came too late.
    world.svc.settings.oauth_sign_in_seconds = 0.3
    url = to_provider(b, page, "oauth_source_google")
    time.sleep(0.5)
    r = back_from(world, b, url, SRC)
    assert r.status_code == 400 and "expired" in html.unescape(r.text)
    # Nothing kept but the one finished sign-in (unused, its grant kept for the order).
    with world.svc.db.read() as s:
        rows = list(s.scalars(select(OAuthSignIn)))
    assert [(r.status, r.address) for r in rows] == [("done", SRC)]
    # An order cannot name another customer's sign-in.
    with pytest.raises(Exception, match="no finished sign-in"):
        world.svc.signed_in(world.uid("eve@example.org"), rows[0].id, "source")
    # An unused one is deleted, its grant with it, by the maintenance round.
    world.svc.cleanup_credentials(now=time.time() + world.svc.settings.oauth_unused_seconds + 1)
    assert world.sign_in_rows() == 0


def test_forget_my_sign_in_revokes_wipes_and_a_new_sign_in_restores(world: World) -> None:
    b = world.browser()
    jid = order_signed_in(world, b)
    uid = world.uid()
    assert world.provider.live_tokens(SRC) >= 1
    b.get(f"/transfers/{jid}")
    r = b.post(f"/transfers/{jid}/forget-sign-in", {})
    assert r.status_code == 303
    # Google revokes (RFC 7009); Microsoft has no revocation endpoint (the test provider
    # plays it so): there the grant is only deleted.
    assert world.provider.live_tokens(SRC) == 0
    creds = world.credentials(jid)
    assert "source_oauth" not in creds and "dest_oauth" not in creds
    view = world.svc.get_transfer(uid, jid)
    assert view.sign_in_needed == ["source", "dest"] and view.can_rerun is False
    page = html.unescape(b.get(f"/transfers/{jid}").text)
    assert "Sign in again to Google to continue" in page
    assert "Sign in again to Microsoft to continue" in page
    # The job cannot run without them: the supervisor stops it asking for a sign-in.
    world.svc.start(1)
    stopped = wait_status(world.svc, uid, jid)
    assert stopped.status == "failed" and stopped.error_code == "reauth", stopped.error
    with pytest.raises(Exception, match="sign in again first"):
        world.svc.rerun_transfer(uid, jid)
    # A new sign-in with another account is refused; with the right ones it resumes.
    b.get(f"/transfers/{jid}")
    r = b.post(f"/transfers/{jid}/sign-in", {"side": "source"})
    assert r.status_code == 303
    r = back_from(world, b, r.headers["location"], "someone@example.test")
    assert r.status_code == 303
    flashes = html.unescape(b.get(f"/transfers/{jid}").text)
    assert "We could not use someone@example.test" in flashes or "this transfer's" in flashes
    for side, who in (("source", SRC), ("dest", DST)):
        r = b.post(f"/transfers/{jid}/sign-in", {"side": side})
        r = back_from(world, b, r.headers["location"], who)
        assert r.status_code == 303, html.unescape(r.text)[:2000]
    done = wait_status(world.svc, uid, jid, ("done",))
    assert done.runs == 2 and done.sign_in_needed == []
    assert mailcheck.snapshot(world.dovecot.port, DST, "dstpass") == mailcheck.snapshot(
        world.dovecot.port, SRC, "srcpass"
    )


def test_a_revoked_consent_stops_the_job_and_signing_in_again_resumes_it(world: World) -> None:
    b = world.browser()
    jid = order_signed_in(world, b)
    uid = world.uid()
    world.provider.revoke(SRC)  # at the provider, before the job runs
    world.svc.start(1)
    stopped = wait_status(world.svc, uid, jid)
    assert stopped.status == "failed" and stopped.error_code == "reauth"
    assert stopped.sign_in_needed == ["source"]
    assert "sign in again" in (stopped.error or "")
    assert world.svc.get_transfer(uid, jid).can_rerun is False
    page = html.unescape(b.get(f"/transfers/{jid}/summary").text)
    assert "Sign in again to Google to continue" in page
    assert 'name="side" value="source"' in page
    r = b.post(f"/transfers/{jid}/sign-in", {"side": "source"})
    r = back_from(world, b, r.headers["location"], SRC)
    assert r.status_code == 303
    assert "the transfer continues" in html.unescape(b.get(f"/transfers/{jid}").text)
    done = wait_status(world.svc, uid, jid, ("done",))
    assert done.runs == 2 and done.error_code is None
    assert mailcheck.snapshot(world.dovecot.port, DST, "dstpass") == mailcheck.snapshot(
        world.dovecot.port, SRC, "srcpass"
    )


def test_a_rotated_refresh_token_is_stored_so_a_rerun_signs_in(world: World) -> None:
    """A provider that rotates refresh tokens and lets the old one die at once (Okta,
    Auth0 and others with reuse detection; Microsoft keeps it a while): the job's
    first refresh hands out a new one.  Failed on the old code: the job process kept
    it in memory only, and the re-run signed in with the dead one ("sign in again")."""
    world.provider.rotate_refresh, world.provider.rotate_grace = True, 0.0
    b = world.browser()
    jid = order_signed_in(world, b)
    uid = world.uid()
    before = world.credentials(jid)
    world.provider.expire_access_tokens()  # the job's first login refreshes (and rotates)
    world.svc.start(1)
    assert wait_status(world.svc, uid, jid).status == "done"
    after = world.credentials(jid)
    for side in ("source", "dest"):
        assert after[f"{side}_oauth"]["refresh_token"] != before[f"{side}_oauth"]["refresh_token"]
        assert "access_token" not in after[f"{side}_oauth"]
    world.dovecot.deliver(SRC, "INBOX", make_message(40))  # new mail since
    world.svc.rerun_transfer(uid, jid)
    done = wait_status(world.svc, uid, jid, ("done", "failed"))
    assert done.status == "done" and done.runs == 2, (done.error, done.error_code)
    src = mailcheck.snapshot(world.dovecot.port, SRC, "srcpass")
    assert mailcheck.snapshot(world.dovecot.port, DST, "dstpass") == src
    assert sum(len(list(c.elements())) for c in src.values()) == 10


def test_the_rest_api_signs_in_orders_by_authorization_and_forgets(world: World) -> None:
    svc = world.svc
    alice = svc.create_user("alice@example.org", "alice password!")
    bob = svc.create_user("bob@example.org", "bob password!!")
    ha = {"Authorization": f"Bearer {svc.create_token(alice, 'ci')}"}
    hb = {"Authorization": f"Bearer {svc.create_token(bob, 'ci')}"}
    with TestClient(world.app, base_url="http://testserver") as c:
        r = c.post(f"{API}/oauth/google/authorizations", json={"login_hint": SRC}, headers=ha)
        assert r.status_code == 201, r.text
        started = r.json()
        aid = started["id"]
        assert "login_hint=src%40example.test" in started["authorization_url"]
        assert c.get(f"{API}/oauth/authorizations/{aid}", headers=ha).json()["status"] == (
            "pending"
        )
        # The user's browser (no session of ours) signs in and comes back.
        back = world.provider.sign_in(started["authorization_url"], SRC)
        with TestClient(world.app, base_url="http://testserver") as browser:
            page = browser.get(back.removeprefix("http://testserver"))
        assert page.status_code == 200 and f"signed in as <b>{SRC}</b>" in page.text
        got = c.get(f"{API}/oauth/authorizations/{aid}", headers=ha).json()
        assert got["status"] == "done" and got["account"]["username"] == SRC
        assert "token" not in str(got).replace("oauth_provider", "")
        # Bob sees nothing of it, and cannot order with it.
        assert c.get(f"{API}/oauth/authorizations/{aid}", headers=hb).status_code == 404
        dest = {
            "host": "127.0.0.1",
            "port": world.dovecot.port,
            "security": "starttls",
            "username": DST,
            "password": "dstpass",
        }
        body = {"source": {"authorization": aid}, "dest": dest}
        r = c.post(f"{API}/transfers", json=body, headers=hb)
        assert r.status_code == 400 and "source.authorization" in r.json()["error"]
        r = c.post(f"{API}/transfers", json=body, headers=ha)
        assert r.status_code == 201, r.text
        jid = r.json()["id"]
        view = c.get(f"{API}/transfers/{jid}", headers=ha).json()
        assert view["source"]["oauth_provider"] == "google" and view["sign_in_needed"] == []
        assert c.get(f"{API}/oauth/authorizations/{aid}", headers=ha).status_code == 404
        assert "source_oauth" in world.credentials(jid)

        # A sign-in no order used: DELETE revokes it at the provider (bob: 404).
        other = c.post(f"{API}/oauth/google/authorizations", headers=ha).json()
        back = world.provider.sign_in(other["authorization_url"], DST)
        with TestClient(world.app, base_url="http://testserver") as browser:
            assert browser.get(back.removeprefix("http://testserver")).status_code == 200
        assert world.provider.live_tokens(DST) >= 1
        url = f"{API}/oauth/authorizations/{other['id']}"
        assert c.delete(url, headers=hb).status_code == 404
        assert c.delete(url, headers=ha).status_code == 204
        assert world.provider.live_tokens(DST) == 0
        assert c.get(url, headers=ha).status_code == 404
        # Forgetting the job's sign-in through the API.
        r = c.delete(f"{API}/transfers/{jid}/sign-in", headers=ha)
        assert r.status_code == 200 and r.json()["sign_in_needed"] == ["source"]
        assert r.json()["source"]["signed_out"] is True
        assert "source_oauth" not in world.credentials(jid)
        # An unknown provider, a transfer that is not alice's.
        assert c.post(f"{API}/oauth/yahoo/authorizations", headers=ha).status_code == 404
        r = c.post(
            f"{API}/oauth/google/authorizations",
            json={"transfer": jid, "side": "source"},
            headers=hb,
        )
        assert r.status_code == 404
        # Alice's re-sign-in for the transfer through the API.
        r = c.post(
            f"{API}/oauth/google/authorizations",
            json={"transfer": jid, "side": "source"},
            headers=ha,
        )
        assert r.status_code == 201, r.text
        back = world.provider.sign_in(r.json()["authorization_url"], SRC)
        with TestClient(world.app, base_url="http://testserver") as browser:
            assert browser.get(back.removeprefix("http://testserver")).status_code == 200
        assert "source_oauth" in world.credentials(jid)
        assert c.get(f"{API}/transfers/{jid}", headers=ha).json()["sign_in_needed"] == []
