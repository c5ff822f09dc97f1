"""Domain credentials (issue 16): a Google service account key and a Microsoft 365
application, stored encrypted, never shown back, deletable, per customer; domain batches
checked line by line (no server contacted here: tests/service/test_domain_batch.py runs
them for real)."""

from __future__ import annotations

import json
import sqlite3
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from yippiemove.service.core import NotFound, ServiceError
from yippiemove.service.domain import GOOGLE_TOKEN_URL

CLIENT_SECRET = "Ms-Client-Secret-marker-5d1f"


def pem(key: Any) -> str:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()


@pytest.fixture(scope="module")
def sa_key() -> dict[str, str]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return {
        "type": "service_account",
        "project_id": "p",
        "private_key_id": "kid1",
        "private_key": pem(key),
        "client_email": "mover@p.iam.gserviceaccount.com",
        "client_id": "1234",
        "token_uri": GOOGLE_TOKEN_URL,
    }


def private_marker(sa_key: dict[str, str]) -> str:
    return sa_key["private_key"].splitlines()[5]


def test_a_service_account_key_is_stored_encrypted_and_never_shown(
    make_service: Any, sa_key: dict[str, str]
) -> None:
    svc = make_service()
    alice = svc.create_user("alice@example.com", "correct horse battery")
    bob = svc.create_user("bob@example.com", "correct horse battery")
    view = svc.add_domain_credential(
        alice,
        {"kind": "service_account", "domain": "Example.ORG", "key": json.dumps(sa_key)},
    )
    assert view["kind"] == "service_account" and view["provider"] == "google"
    assert view["principal"] == sa_key["client_email"]
    assert view["label"] == sa_key["client_email"] and view["domain"] == "example.org"
    shown = json.dumps([view, svc.list_domain_credentials(alice)])
    assert private_marker(sa_key) not in shown and "private_key" not in shown
    # Encrypted at rest: the database file does not hold the key.
    svc.db.checkpoint()
    raw = b"".join(p.read_bytes() for p in (svc.settings.data_dir).glob("*.sqlite*"))
    assert private_marker(sa_key).encode() not in raw
    # Per customer: bob sees nothing and cannot delete it.
    assert svc.list_domain_credentials(bob) == []
    with pytest.raises(NotFound):
        svc.delete_domain_credential(bob, view["id"])
    with pytest.raises(NotFound):
        svc.get_domain_credential(bob, view["id"])
    svc.delete_domain_credential(alice, view["id"])
    assert svc.list_domain_credentials(alice) == []


def test_a_microsoft_application_is_stored_and_its_secret_never_shown(make_service: Any) -> None:
    svc = make_service()
    alice = svc.create_user("alice@example.com", "correct horse battery")
    view = svc.add_domain_credential(
        alice,
        {
            "kind": "client_credentials",
            "domain": "contoso.com",
            "label": "Contoso mover",
            "tenant": "contoso.onmicrosoft.com",
            "client_id": "11111111-2222-3333-4444-555555555555",
            "client_secret": CLIENT_SECRET,
        },
    )
    assert view["provider"] == "microsoft" and view["tenant"] == "contoso.onmicrosoft.com"
    assert view["label"] == "Contoso mover"
    assert CLIENT_SECRET not in json.dumps(svc.list_domain_credentials(alice))


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"kind": "password"}, "kind: must be one of"),
        ({"domain": "not a domain"}, "domain: 'not a domain' is not a domain name"),
        ({"key": "{not json"}, "key: is not the JSON of a service account key"),
        ({"key": {"type": "authorized_user"}}, "not a service account key"),
        (
            {"key.private_key": "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n"},
            "key.private_key: cannot be read",
        ),
        ({"key.private_key": "ec"}, "key.private_key: is not an RSA key"),
        (
            {"key.token_uri": "https://evil.example/token"},
            "key.token_uri: 'https://evil.example/token' is not the token endpoint",
        ),
        ({"extra": 1}, "extra: unknown field"),
    ],
)
def test_bad_service_account_keys_are_refused_clearly(
    make_service: Any, sa_key: dict[str, str], change: dict[str, Any], message: str
) -> None:
    svc = make_service()
    alice = svc.create_user("alice@example.com", "correct horse battery")
    data: dict[str, Any] = {"kind": "service_account", "domain": "example.org", "key": dict(sa_key)}
    for k, v in change.items():
        if k.startswith("key."):
            if v == "ec":
                v = pem(ec.generate_private_key(ec.SECP256R1()))
            data["key"][k[4:]] = v
        else:
            data[k] = v
    with pytest.raises(ServiceError, match=message) as info:
        svc.add_domain_credential(alice, data)
    assert private_marker(sa_key) not in str(info.value)
    assert svc.list_domain_credentials(alice) == []


def test_a_domain_batch_gives_each_job_its_own_grant_and_refuses_other_domains(
    make_service: Any, sa_key: dict[str, str]
) -> None:
    import asyncio

    svc = make_service()
    alice = svc.create_user("alice@example.com", "correct horse battery")
    src = svc.add_domain_credential(
        alice, {"kind": "service_account", "domain": "example.org", "key": sa_key}
    )
    dst = svc.add_domain_credential(
        alice,
        {
            "kind": "client_credentials",
            "domain": "contoso.com",
            "tenant": "contoso.com",
            "client_id": "app-1",
            "client_secret": CLIENT_SECRET,
        },
    )
    request = {
        "source": {"credential": src["id"], "host": "imap.old.example"},
        "dest": {"credential": dst["id"], "host": "imap.new.example"},
        "users": [
            "ann@example.org",
            "bob@other.example",
            {"address": "cy@EXAMPLE.org", "dest_address": "cyril@contoso.com"},
            "ann@example.org",
            {"address": "dee@example.org", "dest_address": "dee@elsewhere.com"},
        ],
    }
    result = asyncio.run(svc.create_domain_batch(alice, request, check=False))
    assert result["failed"] == []
    assert result["errors"] == [
        "line 2: bob@other.example: bob@other.example is not in example.org, the domain of "
        "this credential (its administrator cannot sign in for other domains)",
        "line 4: ann@example.org: is in the list twice",
        "line 5: dee@example.org: dee@elsewhere.com is not in contoso.com, the domain of "
        "this credential (its administrator cannot sign in for other domains)",
    ]
    assert len(result["created"]) == 2
    views = {svc.get_transfer(alice, j).source["username"]: j for j in result["created"]}
    assert set(views) == {"ann@example.org", "cy@example.org"}
    grants = svc.supervisor.store.oauth_grants(views["cy@example.org"])
    assert grants[0] is not None and grants[1] is not None
    assert grants[0]["kind"] == "service_account" and grants[0]["subject"] == "cy@example.org"
    assert grants[0]["key"]["client_email"] == sa_key["client_email"]
    assert grants[1] == {
        "kind": "client_credentials",
        "provider": "microsoft",
        "tenant": "contoso.com",
        "client_id": "app-1",
        "client_secret": CLIENT_SECRET,
    }
    assert svc.get_transfer(alice, views["cy@example.org"]).dest["username"] == "cyril@contoso.com"
    # The credential's deletion leaves the jobs' own grants; the job's are wiped with it.
    svc.delete_domain_credential(alice, src["id"])
    svc.cancel_transfer(alice, views["ann@example.org"])
    svc.forget_credentials(alice, views["ann@example.org"])
    assert svc.supervisor.store.oauth_grants(views["ann@example.org"]) == (None, None)
    assert svc.supervisor.store.oauth_grants(views["cy@example.org"])[0] is not None
    # Nothing secret in what the service stored in clear.
    with sqlite3.connect(svc.settings.data_dir / "control.sqlite") as db:
        dump = "\n".join(db.iterdump())
    assert CLIENT_SECRET not in dump and private_marker(sa_key) not in dump


def test_a_domain_batch_with_destination_passwords(
    make_service: Any, sa_key: dict[str, str]
) -> None:
    svc = make_service()
    alice = svc.create_user("alice@example.com", "correct horse battery")
    src = svc.add_domain_credential(
        alice, {"kind": "service_account", "domain": "example.org", "key": sa_key}
    )
    lines, errors, _ = svc.validate_domain_batch(
        alice,
        {
            "source": {"credential": src["id"]},
            "dest": {"host": "imap.new.example", "port": "993", "security": "tls"},
            "users": [
                {"address": "ann@example.org", "dest_username": "ann", "dest_password": "pw-1"},
                {"address": "bob@example.org"},
            ],
        },
    )
    assert errors == [
        "line 2: bob@example.org: dest_password: is required (the destination is not a "
        "domain credential)"
    ]
    (line,) = lines
    # The source's server is the provider's (Google Workspace's preset).
    assert (line.source.host, line.source.port, line.source.security) == (
        "imap.gmail.com",
        993,
        "tls",
    )
    assert line.source.password == "" and line.source.oauth is not None
    assert (line.dest.username, line.dest.password, line.dest.oauth) == ("ann", "pw-1", None)
    assert "pw-1" not in repr(line) and private_marker(sa_key) not in repr(line)
    with pytest.raises(ServiceError, match=r"source\.credential: is required"):
        svc.validate_domain_batch(
            alice, {"source": {"host": "x.example"}, "dest": {"host": "y"}, "users": ["a@b.c"]}
        )
    with pytest.raises(NotFound):
        svc.validate_domain_batch(
            alice, {"source": {"credential": "nope"}, "dest": {"host": "y"}, "users": ["a@b.c"]}
        )
