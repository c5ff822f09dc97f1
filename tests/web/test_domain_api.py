"""The REST API of domain-wide moves (issue 16) over the real Service: credentials in,
never out; a domain batch refuses other domains line by line (the batch that runs for
real is tests/service/test_domain_batch.py)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from fastapi.testclient import TestClient

from yippiemove.service.config import Settings
from yippiemove.service.core import Service
from yippiemove.service.domain import GOOGLE_TOKEN_URL
from yippiemove.web.app import create_app

API = "/api/v1"
SECRET = "App-Secret-marker-90ab"


@pytest.fixture
def real(tmp_path: Path) -> Iterator[Service]:
    svc = Service(
        Settings.load(tmp_path / "real", maintenance_interval=3600.0, egress_allow="127.0.0.0/8")
    )
    try:
        yield svc
    finally:
        svc.close()


@pytest.fixture
def client(real: Service) -> Iterator[TestClient]:
    with TestClient(create_app(real), raise_server_exceptions=False) as c:
        yield c


def token(real: Service, email: str) -> dict[str, str]:
    uid = real.create_user(email, "contract password")
    return {"Authorization": f"Bearer {real.create_token(uid, 'ci')}"}


def sa_key() -> dict[str, str]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()
    return {
        "type": "service_account",
        "private_key": pem,
        "client_email": "mover@p.iam.gserviceaccount.com",
        "token_uri": GOOGLE_TOKEN_URL,
    }


def test_credentials_go_in_and_never_come_out(client: TestClient, real: Service) -> None:
    alice, bob = token(real, "alice@example.org"), token(real, "bob@example.org")
    key = sa_key()
    r = client.post(
        f"{API}/domain-credentials",
        json={"kind": "service_account", "domain": "example.org", "key": key, "label": "G"},
        headers=alice,
    )
    assert r.status_code == 201, r.text
    google = r.json()
    assert google["principal"] == key["client_email"] and google["label"] == "G"
    r = client.post(
        f"{API}/domain-credentials",
        json={
            "kind": "client_credentials",
            "domain": "contoso.com",
            "tenant": "contoso.com",
            "client_id": "app-1",
            "client_secret": SECRET,
        },
        headers=alice,
    )
    assert r.status_code == 201, r.text
    listed = client.get(f"{API}/domain-credentials", headers=alice)
    assert [c["id"] for c in listed.json()["credentials"]] == [google["id"], r.json()["id"]]
    text = listed.text + r.text
    assert SECRET not in text and key["private_key"].splitlines()[3] not in text
    assert client.get(f"{API}/domain-credentials", headers=bob).json() == {"credentials": []}
    # A key that is not one: 400 with a reason, nothing stored.
    bad = client.post(
        f"{API}/domain-credentials",
        json={"kind": "service_account", "domain": "example.org", "key": {"type": "x"}},
        headers=alice,
    )
    assert bad.status_code == 400 and "not a service account key" in bad.json()["error"]
    # Another customer cannot delete it; its owner can.
    gone = f"{API}/domain-credentials/{google['id']}"
    assert client.delete(gone, headers=bob).status_code == 404
    assert client.delete(gone, headers=alice).status_code == 204
    assert client.delete(gone, headers=alice).status_code == 404


def test_a_domain_batch_names_each_refused_line(client: TestClient, real: Service) -> None:
    alice = token(real, "alice@example.org")
    cred = client.post(
        f"{API}/domain-credentials",
        json={"kind": "service_account", "domain": "example.org", "key": sa_key()},
        headers=alice,
    ).json()
    body: dict[str, Any] = {
        "source": {"credential": cred["id"], "host": "127.0.0.1", "port": 1993},
        "dest": {"host": "127.0.0.1", "port": 2993, "security": "tls"},
        "users": [
            {"address": "ann@example.org", "dest_password": "pw-ann"},
            "bob@other.example",
        ],
        "check": False,
    }
    r = client.post(f"{API}/domain-batches", json=body, headers=alice)
    assert r.status_code == 200, r.text
    out = r.json()
    assert len(out["created"]) == 1 and out["failed"] == []
    assert out["errors"] == [
        "line 2: bob@other.example: bob@other.example is not in example.org, the domain of "
        "this credential (its administrator cannot sign in for other domains)"
    ]
    job = client.get(f"{API}/transfers/{out['created'][0]}", headers=alice).json()
    assert job["source"]["username"] == "ann@example.org"
    shown = json.dumps(job)
    assert "pw-ann" not in shown and "PRIVATE KEY" not in shown and "private_key" not in shown
    # Another customer's credential is no credential.
    other = token(real, "mallory@example.org")
    r = client.post(f"{API}/domain-batches", json=body, headers=other)
    assert r.status_code == 404 and r.json()["error"] == "no such domain credential"


def test_a_domain_batch_that_does_not_wait_is_a_batch(client: TestClient, real: Service) -> None:
    """Issue 17: ``wait: false`` answers 202 with the batch (``GET /api/v1/batches/ID``),
    its transfers tagged with it; a line in a bad shape refuses it whole; no secret in
    any answer."""
    alice = token(real, "alice@example.org")
    cred = client.post(
        f"{API}/domain-credentials",
        json={"kind": "service_account", "domain": "example.org", "key": sa_key()},
        headers=alice,
    ).json()
    body: dict[str, Any] = {
        "source": {"credential": cred["id"], "host": "127.0.0.1", "port": 1993},
        "dest": {"host": "127.0.0.1", "port": 2993, "security": "tls"},
        "users": [{"address": "ann@example.org", "dest_password": "pw-ann"}, "bob@other.example"],
        "wait": False,
        "check": False,  # (no provider here: the pre-flight's own tests are in tests/service)
    }
    r = client.post(f"{API}/domain-batches", json=body, headers=alice)
    assert r.status_code == 400 and "line 2: bob@other.example" in r.json()["message"], r.text
    assert client.get(f"{API}/batches", headers=alice).json() == {"batches": []}
    body["users"] = body["users"][:1]
    r = client.post(f"{API}/domain-batches", json=body, headers=alice)
    assert r.status_code == 202, r.text
    batch = r.json()
    assert (
        batch["kind"] == "domain" and batch["lines"][0]["source"]["username"] == "ann@example.org"
    )
    assert batch["state"] == "running" and batch["lines"][0]["check"] == "started"
    got = client.get(f"{API}/batches/{batch['id']}", headers=alice)
    job = client.get(f"{API}/transfers/{got.json()['lines'][0]['job_id']}", headers=alice)
    assert job.json()["source"]["username"] == "ann@example.org"
    for text in (r.text, got.text):
        assert "pw-ann" not in text and "PRIVATE KEY" not in text and "private_key" not in text
