"""The web front door over the REAL Service (yippiemove.service.core), not the fake:
API and pages, validation and isolation as the backend implements them, and the
"New transfer" steps checking real accounts on a real Dovecot."""

from __future__ import annotations

import html
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from tests.transfer.test_move import make_message
from tests.web.conftest import Browser
from tests.web.htmlform import form_fields, with_values
from yippiemove.service.config import Settings
from yippiemove.service.core import Service
from yippiemove.testing.dovecot import DovecotServer
from yippiemove.web.app import create_app
from yippiemove.web.schemas import error_body as error  # the one error shape (issue 17)

API = "/api/v1"


@pytest.fixture
def real(tmp_path: Path) -> Iterator[Service]:
    """A real Service whose jobs are queued but not run (no workers started)."""
    svc = Service(Settings.load(tmp_path / "real", maintenance_interval=3600.0))
    try:
        yield svc
    finally:
        svc.close()


@pytest.fixture
def real_app(real: Service) -> FastAPI:
    app = create_app(real)
    app.state.sse_interval = 0.01
    return app


def acc(
    user: str, host: str = "127.0.0.1", port: int = 1143, security: str = "starttls"
) -> dict[str, Any]:
    return {
        "host": host,
        "port": port,
        "security": security,
        "username": user,
        "password": "pw-123",
    }


def test_api_over_the_real_service(real: Service, real_app: FastAPI) -> None:
    a = real.create_user("alice@example.org", "alice password")
    b = real.create_user("bob@example.org", "bob password!")
    ha = {"Authorization": f"Bearer {real.create_token(a, 'ci')}"}
    hb = {"Authorization": f"Bearer {real.create_token(b, 'ci')}"}
    with TestClient(real_app) as c:
        r = c.post(f"{API}/transfers", json={"source": acc("src"), "dest": acc("dst")}, headers=ha)
        assert r.status_code == 201, r.text
        jid = r.json()["id"]
        assert r.json()["status"] == "queued"
        view = c.get(f"{API}/transfers/{jid}", headers=ha).json()
        assert view["source"] == {
            "host": "127.0.0.1",
            "port": 1143,
            "security": "starttls",
            "username": "src",
        }
        assert view["runs"] == 1 and view["can_rerun"] is False
        assert "pw-123" not in c.get(f"{API}/transfers", headers=ha).text

        # The service's own validation, passed through with its words.
        r = c.post(
            f"{API}/transfers",
            json={"source": acc("src"), "dest": acc("x", host="mail.example.org", security="none")},
            headers=ha,
        )
        assert r.status_code == 400
        assert r.json() == error(400, "dest.security: 'none' is only allowed for loopback hosts")
        r = c.post(f"{API}/transfers", json={"source": acc("src"), "dest": acc("src")}, headers=ha)
        assert (
            r.status_code == 400 and r.json()["error"] == "dest: is the same account as the source"
        )
        r = c.post(
            f"{API}/transfers",
            json={"source": acc("src", host="bad_host!"), "dest": acc("dst")},
            headers=ha,
        )
        # Issue 14 (REST contract): the schema says what a host is, so a body that breaks
        # it is a schema error (422), no longer a schema-valid body the service refuses.
        assert r.status_code == 422
        assert r.json()["error"] == (
            "source.host: must be a host name or IP address, like imap.example.org"
        )

        # Not run yet: no report, no receipt.
        no_report = "no report yet: the transfer has not run"
        assert c.get(f"{API}/transfers/{jid}/report", headers=ha).json() == {
            "code": "not_found",
            "message": no_report,
            "error": no_report,
        }
        assert c.get(f"{API}/transfers/{jid}/receipt", headers=ha).status_code == 404

        # Bob sees nothing of it, through any route, with the answer of a missing job.
        for method, suffix in [
            ("GET", ""),
            ("POST", "/cancel"),
            ("POST", "/rerun"),
            ("GET", "/report"),
            ("GET", "/receipt"),
        ]:
            theirs = c.request(method, f"{API}/transfers/{jid}{suffix}", headers=hb)
            missing = c.request(method, f"{API}/transfers/{'0' * 32}{suffix}", headers=hb)
            assert theirs.status_code == missing.status_code == 404
            assert theirs.json() == missing.json() == error(404, "no such transfer")
        assert c.get(f"{API}/transfers", headers=hb).json() == {"transfers": []}
        assert real.get_transfer(a, jid).status == "queued"

        # Cancel (queued: at once), re-run, cancel again; filters.
        r = c.post(f"{API}/transfers/{jid}/cancel", headers=ha)
        assert r.status_code == 200 and r.json()["status"] == "cancelled"
        assert r.json()["can_rerun"] is True and r.json()["credentials_expire"]
        assert c.post(f"{API}/transfers/{jid}/cancel", headers=ha).status_code == 409
        r = c.post(f"{API}/transfers/{jid}/rerun", headers=ha)
        assert r.status_code == 200 and r.json()["status"] == "queued" and r.json()["runs"] == 2
        assert c.post(f"{API}/transfers/{jid}/rerun", headers=ha).status_code == 409
        ids = [
            j["id"] for j in c.get(f"{API}/transfers?status=queued", headers=ha).json()["transfers"]
        ]
        assert ids == [jid]
        assert c.get(f"{API}/transfers?status=done", headers=ha).json() == {"transfers": []}


def test_pages_over_the_real_service(real: Service, real_app: FastAPI) -> None:
    alice, bob = Browser(TestClient(real_app)), Browser(TestClient(real_app))
    alice.signup("alice@example.org")
    bob.signup("bob@example.org")
    uid = real.authenticate("alice@example.org", "correct horse battery")
    assert uid is not None
    job = real.create_transfer(
        uid,
        *(real_account(u) for u in ("src", "dst")),  # type: ignore[misc]
    )
    page = alice.get(f"/transfers/{job.id}")
    assert page.status_code == 200 and "Waiting for a free worker" in page.text
    assert bob.client.get(f"/transfers/{job.id}").status_code == 404
    assert bob.client.get(f"/transfers/{job.id}/events").status_code == 404
    assert bob.post(f"/transfers/{job.id}/cancel", {}).status_code == 404
    assert real.get_transfer(uid, job.id).status == "queued"
    # Cancel from the page, then the outcome and the stored-passwords note with its button.
    r = alice.post(f"/transfers/{job.id}/cancel", {})
    assert r.status_code == 303
    page = alice.get(f"/transfers/{job.id}").text
    assert "Cancelled" in page and "kept, encrypted, until" in page
    r = alice.post(f"/transfers/{job.id}/forget", {})
    page = alice.get(r.headers["location"]).text
    assert "The passwords of this transfer are deleted" in page
    assert "data-rerun-form hidden" in page  # no re-run without passwords
    # Tokens with the real hashing.
    alice.get("/tokens")
    r = alice.get(alice.post("/tokens", {"name": "script"}).headers["location"])
    token = re.search(r'id="new-token">([^<]+)<', r.text).group(1)  # type: ignore[union-attr]
    assert real.user_for_token(token) == uid
    # Signing up twice, as the real service refuses it.
    b = Browser(TestClient(real_app))
    b.get("/signup")
    pw = "yet another password"
    r = b.post("/signup", {"email": "ALICE@example.org", "password": pw, "password2": pw})
    assert r.status_code == 400 and "exists already" in r.text


def real_account(user: str) -> Any:
    from yippiemove.service.core import Account

    return Account("127.0.0.1", 1143, "starttls", user, "pw-123")


# -- the three steps against a real Dovecot ------------------------------------------------


@pytest.fixture
def mailbox(dovecot: DovecotServer) -> DovecotServer:
    dovecot.deliver_many("src", "INBOX", [make_message(i) for i in range(5)])
    dovecot.deliver_many("src", "Archive/2019", [make_message(i, size=5000) for i in range(5, 8)])
    dovecot.deliver_many("src", "Trash", [make_message(99)])
    return dovecot


def test_new_transfer_steps_check_real_accounts(mailbox: DovecotServer, tmp_path: Path) -> None:
    svc = Service(
        Settings.load(tmp_path / "svc", ca_file=str(mailbox.ca_file), maintenance_interval=3600.0)
    )
    try:
        app = create_app(svc)
        b = Browser(TestClient(app))
        b.signup("ada@example.org")
        page = b.get("/transfers/new").text
        src = {
            "source_preset": "other",
            "source_host": "127.0.0.1",
            "source_port": str(mailbox.port),
            "source_security": "starttls",
            "source_username": "src",
            "source_password": "not the password",
        }
        fields = with_values(form_fields(page, "/transfers/new"), **src, action="check_source")
        r = b.post("/transfers/new", fields)
        assert r.status_code == 400
        text = html.unescape(r.text)
        assert "We could not use the source mailbox: " in text
        assert "Check the user name and password" in text
        assert "source: " not in text.split("We could not use the source mailbox: ")[1][:10]

        src["source_password"] = "srcpass"
        fields = with_values(form_fields(r.text, "/transfers/new"), **src, action="check_source")
        r = b.post("/transfers/new", fields)
        assert r.status_code == 200, html.unescape(r.text)
        assert "3 folders · 9 messages" in r.text
        dst = {
            "dest_preset": "other",
            "dest_host": "127.0.0.1",
            "dest_port": str(mailbox.port),
            "dest_security": "starttls",
            "dest_username": "dst",
            "dest_password": "wrong",
        }
        r = b.post(
            "/transfers/new",
            with_values(form_fields(r.text, "/transfers/new"), **dst, action="check_dest"),
        )
        assert r.status_code == 400
        assert "We could not use the destination mailbox" in html.unescape(r.text)
        dst["dest_password"] = "dstpass"
        r = b.post(
            "/transfers/new",
            with_values(form_fields(r.text, "/transfers/new"), **dst, action="check_dest"),
        )
        assert r.status_code == 200, html.unescape(r.text)
        rows = dict(re.findall(r'name="folder" value="([^"]+)"[^>]*?(checked)?>', r.text))
        assert rows == {"INBOX": "checked", "Archive/2019": "checked", "Trash": ""}
        r = b.post(
            "/transfers/new", with_values(form_fields(r.text, "/transfers/new"), action="start")
        )
        assert r.status_code == 303
        jid = r.headers["location"].rsplit("/", 1)[1]
        uid = svc.authenticate("ada@example.org", "correct horse battery")
        assert uid is not None
        view = svc.get_transfer(uid, jid)
        assert view.folders == {"include": [], "exclude": ["Trash"]}
        assert view.source["port"] == mailbox.port and view.dest["username"] == "dst"
    finally:
        svc.close()
