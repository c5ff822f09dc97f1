"""Domain batches for real (issue 16): the service's domain credentials, the test OAuth2
provider (tests/doubles/oauth2.py) and a Dovecot whose ``oauth2`` passdb checks every
token at the provider's introspection endpoint.  No user's password is given to the
service: each job signs in with its own grant, the service account acting for the
mailbox (JWT bearer, RFC 7523).  Every mailbox ends exact (tests/mailcheck.py)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

import pytest

from tests import mailcheck
from tests.doubles.oauth2 import OAuthServer
from tests.svckit import files_containing, wait_status
from tests.transfer.oauthkit import config_for
from tests.transfer.test_move import make_message
from yippiemove.service.core import Service
from yippiemove.testing.dovecot import DovecotServer, MaildirMessage

#: Source mailboxes (the guard's "src" prefix) of example.test and their new addresses.
PEOPLE = ("ann", "bob", "cy", "dee")


def src(name: str) -> str:
    return f"src-{name}@example.test"


def dst(name: str) -> str:
    return f"{name}@new.test"  # not "src-": the guard checks that sources stay untouched


def fill(server: DovecotServer, name: str, n: int) -> None:
    items = [
        MaildirMessage(make_message(100 * n + i, size=200 + 500 * i), (("\\Seen",), ())[i % 2])
        for i in range(6)
    ]
    server.deliver_many(src(name), "INBOX", items[:4])
    server.deliver_many(src(name), f"Projects/{name}", items[4:])


def dovecot_for(
    oauth_server: OAuthServer, dovecot_factory: Callable[..., DovecotServer]
) -> DovecotServer:
    users = {src(p): f"pw-{p}" for p in PEOPLE} | {dst(p): f"new-{p}" for p in PEOPLE}
    return dovecot_factory(
        users=users, oauth2_introspection_url=oauth_server.introspection_url_with_credentials
    )


def service_with_provider(
    make_service: Callable[..., Service],
    oauth_server: OAuthServer,
    server: DovecotServer,
    tmp_path: Path,
) -> Service:
    svc = make_service(oauth=config_for(oauth_server, tmp_path), ca_file=str(server.ca_file))
    svc.start(workers=2)
    return svc


def test_a_domain_batch_through_the_service_account_grant_is_exact(
    make_service: Callable[..., Service],
    oauth_server: OAuthServer,
    dovecot_factory: Callable[..., DovecotServer],
    tmp_path: Path,
) -> None:
    oauth_server.access_lifetime = 3  # tokens expire while the batch runs
    server = dovecot_for(oauth_server, dovecot_factory)
    for n, p in enumerate(PEOPLE):
        fill(server, p, n)
    old_key = oauth_server.add_service_account(domains=["example.test"])
    new_key = oauth_server.add_service_account(domains=["new.test"])
    svc = service_with_provider(make_service, oauth_server, server, tmp_path)
    uid = svc.create_user("admin@example.test", "correct horse battery")
    old = svc.add_domain_credential(
        uid, {"kind": "service_account", "domain": "example.test", "key": old_key}
    )
    new = svc.add_domain_credential(
        uid, {"kind": "service_account", "domain": "new.test", "key": new_key}
    )
    here = {"host": "127.0.0.1", "port": server.port, "security": "starttls"}
    result = asyncio.run(
        svc.create_domain_batch(
            uid,
            {
                "source": {"credential": old["id"], **here},
                "dest": {"credential": new["id"], **here},
                # "src-eve" has no mailbox: a token is had, the login is refused.
                "users": [{"address": src(p), "dest_address": dst(p)} for p in PEOPLE]
                + ["src-eve@example.test"],
            },
        )
    )
    assert result["failed"] == []
    (eve,) = result["errors"]
    assert eve.startswith("line 5: src-eve@example.test: source: ")
    assert len(result["created"]) == len(PEOPLE)
    before = oauth_server.issued
    for job_id in result["created"]:
        view = wait_status(svc, uid, job_id, timeout=120)
        assert view.status == "done", (view.error, view.progress)
    assert oauth_server.issued > before  # the jobs had their own tokens
    for p in PEOPLE:
        old_box = mailcheck.snapshot(server.port, src(p), f"pw-{p}")
        new_box = mailcheck.snapshot(server.port, dst(p), f"new-{p}")
        assert set(old_box) <= set(new_box)
        for folder, msgs in old_box.items():
            assert new_box[folder] == msgs, (p, folder)
        assert sum(len(m) for m in old_box.values()) == 6
    # The keys never landed in a file the service wrote (control DB, job dirs, logs).
    marker = old_key["private_key"].splitlines()[4].encode()
    assert files_containing(svc.settings.data_dir, marker) == []


def test_a_subject_the_service_account_may_not_act_for_is_refused_clearly(
    make_service: Callable[..., Service],
    oauth_server: OAuthServer,
    dovecot_factory: Callable[..., DovecotServer],
    tmp_path: Path,
) -> None:
    """A key whose delegation covers example.test only, stored for other.test: every
    line is refused before anything starts, saying why (the provider's refusal)."""
    server = dovecot_for(oauth_server, dovecot_factory)
    key = oauth_server.add_service_account(domains=["example.test"])
    svc = service_with_provider(make_service, oauth_server, server, tmp_path)
    uid = svc.create_user("admin@example.test", "correct horse battery")
    wrong = svc.add_domain_credential(
        uid, {"kind": "service_account", "domain": "other.test", "key": key}
    )
    here = {"host": "127.0.0.1", "port": server.port, "security": "starttls"}
    result = asyncio.run(
        svc.create_domain_batch(
            uid,
            {
                "source": {"credential": wrong["id"], **here},
                "dest": here,
                "users": [
                    {"address": "src-ann@other.test", "dest_password": "x", "dest_username": "a"},
                    {"address": "src-ann@example.test", "dest_password": "x"},
                ],
            },
        )
    )
    assert result["created"] == [] and result["failed"] == []
    first, second = result["errors"]
    assert first.startswith("line 1: src-ann@other.test: source: ")
    assert "unauthorized_client" in first and "domain-wide delegation" in first, first
    assert "password" not in first
    assert "not in other.test" in second
    assert svc.list_transfers(uid) == []


def test_a_client_credentials_batch_signs_in_as_each_mailbox_with_the_app_token(
    make_service: Callable[..., Service],
    oauth_server: OAuthServer,
    dovecot_factory: Callable[..., DovecotServer],
    tmp_path: Path,
    request: pytest.FixtureRequest,
) -> None:
    """A Microsoft 365 application (client credentials at its tenant's token endpoint):
    one app-only token, IMAP signs in as each mailbox with it.  The source is the Gmail
    double, which takes application tokens for the users of the application's domain
    (Dovecot's passdb matches a token's ``email``, which an app token has none of); the
    destination a Dovecot with each user's password.  Every INBOX arrives exact."""
    from tests.doubles.gmail import GmailServer
    from tests.source_guard import guard_sources

    oauth_server.add_client("contoso-mover", "Contoso-App-Secret-77", app_domain="contoso.test")
    people = ("ann", "bob", "cy")
    source = GmailServer(
        users={f"src-{p}@contoso.test": f"pw-{p}" for p in people},
        oauth_server=oauth_server,
        oauth_scope=None,  # the app token's scope is Microsoft's
    )
    target = dovecot_factory(users={f"{p}@new.test": f"new-{p}" for p in people})
    with (
        source,
        guard_sources(
            request,
            source,
            users=lambda: list(source._accounts),
            loaders=("add_user", "add_message", "create_label"),
            running=lambda: source.running,
        ),
    ):
        for n, p in enumerate(people):
            for i in range(4):
                source.add_message(
                    f"src-{p}@contoso.test",
                    make_message(300 + 10 * n + i, size=300 * i),
                    labels=("\\Inbox",),
                    flags=("\\Seen",) if i % 2 else (),
                )
        svc = service_with_provider(make_service, oauth_server, target, tmp_path)
        uid = svc.create_user("admin@contoso.test", "correct horse battery")
        app = svc.add_domain_credential(
            uid,
            {
                "kind": "client_credentials",
                "domain": "contoso.test",
                "tenant": "contoso.test",
                "client_id": "contoso-mover",
                "client_secret": "Contoso-App-Secret-77",
            },
        )
        result = asyncio.run(
            svc.create_domain_batch(
                uid,
                {
                    "source": {
                        "credential": app["id"],
                        "host": "127.0.0.1",
                        "port": source.port,
                        "security": "none",
                    },
                    "dest": {"host": "127.0.0.1", "port": target.port, "security": "starttls"},
                    "users": [
                        {
                            "address": f"src-{p}@contoso.test",
                            "dest_username": f"{p}@new.test",
                            "dest_password": f"new-{p}",
                        }
                        for p in people
                    ],
                },
            )
        )
        assert result["errors"] == [] and result["failed"] == [], result
        assert oauth_server.issued >= len(people)  # the checks' app tokens, one each
        for job_id in result["created"]:
            view = wait_status(svc, uid, job_id, timeout=120)
            assert view.status == "done", (view.error, view.progress)
        for p in people:
            old = mailcheck.in_utc(
                mailcheck.snapshot(source.port, f"src-{p}@contoso.test", f"pw-{p}")
            )
            new = mailcheck.in_utc(mailcheck.snapshot(target.port, f"{p}@new.test", f"new-{p}"))
            assert new["INBOX"] == old["INBOX"] and sum(old["INBOX"].values()) == 4, p
        assert files_containing(svc.settings.data_dir, b"Contoso-App-Secret-77") == []
        svc.stop(timeout=15)


def test_a_domain_batch_checked_in_the_background_is_a_batch(
    make_service: Callable[..., Service],
    oauth_server: OAuthServer,
    dovecot_factory: Callable[..., DovecotServer],
    tmp_path: Path,
) -> None:
    """Issue 17: ``wait: false`` answers at once with a batch of service/batches.py whose
    pre-flight signs in to every mailbox with its own grant; a mailbox that does not
    exist is a bad line (its number, the side), nothing starts until the customer starts
    the good ones, which end exact with the batch's folder selection."""
    server = dovecot_for(oauth_server, dovecot_factory)
    people = PEOPLE[:2]
    for n, p in enumerate(people):
        fill(server, p, n)
    old_key = oauth_server.add_service_account(domains=["example.test"])
    new_key = oauth_server.add_service_account(domains=["new.test"])
    svc = service_with_provider(make_service, oauth_server, server, tmp_path)
    uid = svc.create_user("admin@example.test", "correct horse battery")
    old = svc.add_domain_credential(
        uid, {"kind": "service_account", "domain": "example.test", "key": old_key}
    )
    new = svc.add_domain_credential(
        uid, {"kind": "service_account", "domain": "new.test", "key": new_key}
    )
    here = {"host": "127.0.0.1", "port": server.port, "security": "starttls"}
    view = asyncio.run(
        svc.create_domain_batch(
            uid,
            {
                "source": {"credential": old["id"], **here},
                "dest": {"credential": new["id"], **here},
                "users": [{"address": src(p), "dest_address": dst(p)} for p in people]
                + ["src-eve@example.test"],
                "folders": {"exclude": ["Projects/*"]},
            },
            wait=False,
        )
    )
    assert view["kind"] == "domain" and view["state"] == "checking"
    svc.wait_preflights(60)
    view = svc.get_batch(uid, view["id"])
    assert view["state"] == "checked" and svc.list_transfers(uid) == []
    assert [ln["check"] for ln in view["lines"]] == ["ok", "ok", "bad"]
    assert view["lines"][2]["problem"]["side"] == "source"
    view = svc.start_batch(uid, view["id"])
    for ln in view["lines"][:2]:
        assert wait_status(svc, uid, ln["job_id"], timeout=120).status == "done"
    for p in people:
        old_box = mailcheck.snapshot(server.port, src(p), f"pw-{p}")
        new_box = mailcheck.snapshot(server.port, dst(p), f"new-{p}")
        assert new_box["INBOX"] == old_box["INBOX"]
        assert not any(f.startswith("Projects") for f in new_box)  # the batch's folders
    marker = old_key["private_key"].splitlines()[4].encode()
    assert files_containing(svc.settings.data_dir, marker) == []


def test_a_domain_batch_with_billing_on_is_priced_by_its_checks(
    make_service: Callable[..., Service],
    oauth_server: OAuthServer,
    dovecot_factory: Callable[..., DovecotServer],
    tmp_path: Path,
) -> None:
    """Issue 20: each line's check measures its source and prices it; the lines the
    credits cover start, the others wait for their payment (before: every line was
    refused, having no quote)."""
    server = dovecot_for(oauth_server, dovecot_factory)
    for n, p in enumerate(PEOPLE):
        fill(server, p, n)
    old_key = oauth_server.add_service_account(domains=["example.test"])
    new_key = oauth_server.add_service_account(domains=["new.test"])
    svc = make_service(
        oauth=config_for(oauth_server, tmp_path),
        ca_file=str(server.ca_file),
        billing_enabled=True,
        price_bands="1MB:500,*:2500",
        stripe_secret_key="sk_test_unused",
        stripe_publishable_key="pk_test_unused",
        stripe_webhook_secret="whsec_unused",
    )
    uid = svc.create_user("admin@example.test", "correct horse battery")
    svc.billing.grant(uid, 1000, "ops@example.org", "", key="domain")
    old = svc.add_domain_credential(
        uid, {"kind": "service_account", "domain": "example.test", "key": old_key}
    )
    new = svc.add_domain_credential(
        uid, {"kind": "service_account", "domain": "new.test", "key": new_key}
    )
    here = {"host": "127.0.0.1", "port": server.port, "security": "starttls"}
    result = asyncio.run(
        svc.create_domain_batch(
            uid,
            {
                "source": {"credential": old["id"], **here},
                "dest": {"credential": new["id"], **here},
                "users": [{"address": src(p), "dest_address": dst(p)} for p in PEOPLE],
            },
        )
    )
    assert result["failed"] == [] and result["errors"] == [], result
    statuses = sorted(svc.get_transfer(uid, j).status for j in result["created"])
    assert statuses == ["awaiting_payment", "awaiting_payment", "queued", "queued"]
    assert svc.billing.summary(uid)["balance"] == 0
