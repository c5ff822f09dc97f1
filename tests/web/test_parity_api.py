"""The REST twins of the web's steps (issue 17, parity), over the REAL Service and a real
Dovecot: account checks, folder listings (with the order's rules and filters), deleting
a transfer's stored passwords, API tokens.  Each check: a good account, a wrong
password, a closed port, an address the egress policy refuses."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from tests.transfer.test_move import make_message
from yippiemove.service.config import Settings
from yippiemove.service.core import Service
from yippiemove.testing.dovecot import DovecotServer
from yippiemove.web.app import create_app

API = "/api/v1"


@pytest.fixture
def mailbox(dovecot: DovecotServer) -> DovecotServer:
    dovecot.deliver_many("src", "INBOX", [make_message(i) for i in range(5)])
    dovecot.deliver_many("src", "Archive/2019", [make_message(i, size=5000) for i in range(5, 8)])
    dovecot.deliver_many("src", "Trash", [make_message(99)])
    return dovecot


def service(tmp_path: Path, server: DovecotServer, **settings: Any) -> Service:
    return Service(
        Settings.load(
            tmp_path / f"svc{len(list(tmp_path.iterdir()))}",
            ca_file=str(server.ca_file),
            maintenance_interval=3600.0,
            **settings,
        )
    )


@pytest.fixture
def real(tmp_path: Path, mailbox: DovecotServer) -> Iterator[Service]:
    svc = service(tmp_path, mailbox)
    try:
        yield svc
    finally:
        svc.close()


@pytest.fixture
def client(real: Service) -> Iterator[TestClient]:
    with TestClient(create_app(real), raise_server_exceptions=False) as c:
        yield c


def token(svc: Service, email: str = "ada@example.org") -> dict[str, str]:
    uid = svc.create_user(email, "ada's long password")
    return {"Authorization": f"Bearer {svc.create_token(uid, 'ci')}"}


def account(server: DovecotServer, user: str, password: str, port: int = 0) -> dict[str, Any]:
    return {
        "host": "127.0.0.1",
        "port": port or server.port,
        "security": "starttls",
        "username": user,
        "password": password,
    }


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])  # closed again when the test uses it


def test_account_check_good_wrong_password_closed_port(
    real: Service, client: TestClient, mailbox: DovecotServer
) -> None:
    h = token(real)
    good = client.post(
        f"{API}/account-checks", json={"account": account(mailbox, "src", "srcpass")}, headers=h
    )
    assert good.status_code == 200, good.text
    assert good.json() == {
        "ok": True,
        "folders": 3,
        "messages": 9,
        "bytes": good.json()["bytes"],
        "failure": None,
    }
    assert good.json()["bytes"] > 15_000

    wrong = client.post(
        f"{API}/account-checks",
        json={"account": account(mailbox, "dst", "not it"), "side": "dest"},
        headers=h,
    )
    assert wrong.status_code == 200, wrong.text
    failure = wrong.json()["failure"]
    assert wrong.json()["ok"] is False and failure["kind"] == "auth"
    assert failure["side"] == "dest"
    assert failure["message"] == "The destination mailbox refused the user name or password."
    assert "AUTHENTICATIONFAILED" in failure["detail"]  # the server's words, as detail
    assert "not it" not in wrong.text

    closed = client.post(
        f"{API}/account-checks",
        json={"account": account(mailbox, "src", "srcpass", port=closed_port())},
        headers=h,
    )
    assert closed.status_code == 200, closed.text
    failure = closed.json()["failure"]
    assert closed.json()["ok"] is False and failure["kind"] == "unreachable", failure
    assert failure["message"] == "We could not reach the source mailbox's server."
    assert "Connect call failed" not in closed.text  # never a Python text


def test_account_check_and_listing_refused_by_the_egress_policy(
    tmp_path: Path, mailbox: DovecotServer
) -> None:
    """Without the tests' loopback allowance: 400 in the one error shape, nothing tried
    (the same answer as ordering a transfer there)."""
    strict = service(tmp_path, mailbox, egress_allow="")
    try:
        h = token(strict)
        with TestClient(create_app(strict)) as c:
            src = account(mailbox, "src", "srcpass")
            for path, body in (
                ("account-checks", {"account": src}),
                ("folder-listings", {"source": src}),
                ("folder-listings", {"source": {**src, "host": "mail.example.org"}, "dest": src}),
            ):
                r = c.post(f"{API}/{path}", json=body, headers=h)
                assert r.status_code == 400, r.text
                assert r.json()["code"] == "bad_request"
                assert "this service does not connect there" in r.json()["message"]
    finally:
        strict.close()


def test_folder_listing_with_rules_and_filters(
    real: Service, client: TestClient, mailbox: DovecotServer
) -> None:
    h = token(real)
    src, dst = account(mailbox, "src", "srcpass"), account(mailbox, "dst", "dstpass")
    plain = client.post(f"{API}/folder-listings", json={"source": src, "dest": dst}, headers=h)
    assert plain.status_code == 200, plain.text
    rows = {f["name"]: f for f in plain.json()["folders"]}
    assert set(rows) == {"INBOX", "Archive/2019", "Trash"}
    assert rows["INBOX"]["messages"] == 5 and rows["Archive/2019"]["messages"] == 3
    assert rows["Trash"]["selected_by_default"] is False
    assert all(f["selected"] is None for f in rows.values())
    assert rows["Archive/2019"]["dest_name"] == "Archive/2019"

    folders = {
        "exclude": ["Trash"],
        "rename": ["Archive/2019=Old"],
        "under": "Imported",
        "larger": 2000,
    }
    ruled = client.post(
        f"{API}/folder-listings", json={"source": src, "dest": dst, "folders": folders}, headers=h
    )
    assert ruled.status_code == 200, ruled.text
    rows = {f["name"]: f for f in ruled.json()["folders"]}
    assert rows["Archive/2019"]["dest_name"] == "Imported/Old"
    assert rows["Archive/2019"]["messages"] == 3  # 5000 bytes each: larger than 2000
    assert rows["INBOX"]["messages"] == 0  # the small ones: filtered out
    assert {n: f["selected"] for n, f in rows.items()} == {
        "INBOX": True,
        "Archive/2019": True,
        "Trash": False,
    }

    wrong = client.post(
        f"{API}/folder-listings",
        json={"source": src, "dest": {**dst, "password": "nope"}},
        headers=h,
    )
    assert wrong.status_code == 200 and wrong.json()["ok"] is False
    assert wrong.json()["failure"]["kind"] == "auth"
    assert wrong.json()["failure"]["side"] == "dest"
    assert wrong.json()["folders"] == []

    closed = client.post(
        f"{API}/folder-listings",
        json={"source": account(mailbox, "src", "srcpass", port=closed_port())},
        headers=h,
    )
    assert closed.status_code == 200 and closed.json()["failure"]["kind"] == "unreachable"

    bad = client.post(
        f"{API}/folder-listings",
        json={"source": src, "folders": {"since": "2024-01-01", "before": "2023-01-01"}},
        headers=h,
    )
    assert bad.status_code == 400, bad.text
    assert bad.json()["message"].startswith("folders.")
    nothing = client.post(
        f"{API}/folder-listings",
        json={"source": src, "folders": {"include": ["Nope"]}},
        headers=h,
    )
    assert nothing.status_code == 400, nothing.text
    assert nothing.json()["message"].startswith("folders.include: no source folder matches")
    assert "--folder" not in nothing.text


def test_delete_a_transfers_stored_passwords(
    real: Service, client: TestClient, mailbox: DovecotServer
) -> None:
    h = token(real)
    src, dst = account(mailbox, "src", "srcpass"), account(mailbox, "dst", "dstpass")
    job = client.post(f"{API}/transfers", json={"source": src, "dest": dst}, headers=h).json()
    r = client.delete(f"{API}/transfers/{job['id']}/credentials", headers=h)
    assert r.status_code == 409 and r.json()["code"] == "conflict"  # still queued
    client.post(f"{API}/transfers/{job['id']}/cancel", headers=h)
    r = client.delete(f"{API}/transfers/{job['id']}/credentials", headers=h)
    assert r.status_code == 200, r.text
    assert r.json()["can_rerun"] is False and r.json()["credentials_expire"] is None
    rerun = client.post(f"{API}/transfers/{job['id']}/rerun", headers=h)
    assert rerun.status_code == 409
    other = token(real, "eve@example.org")
    r = client.delete(f"{API}/transfers/{job['id']}/credentials", headers=other)
    assert r.status_code == 404


def test_tokens_list_create_revoke(real: Service, client: TestClient) -> None:
    h = token(real)
    made = client.post(f"{API}/tokens", json={"name": "backup script"}, headers=h)
    assert made.status_code == 201, made.text
    secret = made.json()["token"]
    listed = client.get(f"{API}/tokens", headers=h).json()["tokens"]
    assert [t["name"] for t in listed] == ["backup script", "ci"]
    assert secret not in str(listed)
    new = {"Authorization": f"Bearer {secret}"}
    assert client.get(f"{API}/transfers", headers=new).status_code == 200
    default = client.post(f"{API}/tokens", headers=new)
    assert default.status_code == 201 and default.json()["name"] == "API token"

    eve = token(real, "eve@example.org")
    r = client.delete(f"{API}/tokens/{made.json()['id']}", headers=eve)
    assert r.status_code == 404  # not hers: the same answer as no such token
    assert client.get(f"{API}/tokens", headers=eve).json()["tokens"][0]["name"] == "ci"

    r = client.delete(f"{API}/tokens/{made.json()['id']}", headers=h)
    assert r.status_code == 204
    r = client.get(f"{API}/transfers", headers=new)
    assert r.status_code == 401 and r.json()["code"] == "unauthorized"
    assert client.delete(f"{API}/tokens/abc", headers=h).status_code == 404
    # Digits that are not ASCII ('²' passes str.isdigit, int() refuses it: a 500 found
    # by the fuzzer) are no token id either.
    for odd in ("%C2%B2", "%D9%A3", "%EF%BC%91"):
        r = client.delete(f"{API}/tokens/{odd}", headers=h)
        assert r.status_code == 404, (odd, r.status_code, r.text)


def test_checks_over_rest_count_against_the_same_limit_as_the_web(
    tmp_path: Path, mailbox: DovecotServer
) -> None:
    """The web's limit of checks in flight per customer holds over REST too: 429 in the
    one error shape while the customer's slot is taken, and the check once it is free."""
    svc = service(tmp_path, mailbox, checks_per_user=1)
    try:
        uid = svc.create_user("ada@example.org", "ada's long password")
        h = {"Authorization": f"Bearer {svc.create_token(uid, 'ci')}"}
        body = {"account": account(mailbox, "src", "srcpass")}
        with TestClient(create_app(svc)) as c:
            with svc.checks.slot(uid):  # a check of hers under way (the web's, say)
                for path, b in (
                    ("account-checks", body),
                    ("folder-listings", {"source": body["account"]}),
                ):
                    r = c.post(f"{API}/{path}", json=b, headers=h)
                    assert r.status_code == 429, r.text
                    assert r.json()["code"] == "too_many_requests"
                    assert "at most 1 at a time" in r.json()["message"]
            assert c.post(f"{API}/account-checks", json=body, headers=h).json()["ok"] is True
    finally:
        svc.close()
