"""The REST API of billing (issue 20, web/billing_api.py) over the REAL service with
billing on and a real Dovecot: a quote measured on the mailbox, an order that waits for
its payment, settled from credits an operator granted through the API, the balance and
its ledger (JSON and CSV), payments and their receipts, and the errors in between.  No
Stripe server: the card payments themselves are tests/service/test_payments.py's."""

from __future__ import annotations

import csv
import io
import time
from collections.abc import Callable
from typing import Any

import pypdf
import pytest
from fastapi.testclient import TestClient

from tests.svckit import DST_PW, SRC_PW, make_service
from tests.transfer.test_move import make_message
from yippiemove.service import ledger
from yippiemove.service.core import Service
from yippiemove.service.db import Payment
from yippiemove.service.receipts import LEDGER_COLUMNS
from yippiemove.web.app import create_app

__all__ = ["make_service"]  # (the fixture)

API = "/api/v1"
OWNER = "payer@example.org"
OP = "ops@example.org"
#: 1 MB for 500, anything bigger for 2500 (minor units); one bundle: 5000 of credit for 4000.
BILLING: dict[str, Any] = {
    "billing_enabled": True,
    "price_bands": "1MB:500,*:2500",
    "price_bundles": "5000:4000",
    "stripe_secret_key": "sk_test_x",
    "stripe_publishable_key": "pk_test_x",
    "stripe_webhook_secret": "whsec_x",
}


@pytest.fixture
def server(dovecot_factory: Callable[..., Any]) -> Any:
    srv = dovecot_factory(users={"src": SRC_PW, "dst": DST_PW, "src2": SRC_PW})
    for user in ("src", "src2"):
        for n in range(6):
            srv.deliver(user, "INBOX", make_message(n, size=2000))
    return srv


def acct(server: Any, user: str, password: str) -> dict[str, Any]:
    return {
        "host": "127.0.0.1",
        "port": server.port,
        "security": "starttls",
        "username": user,
        "password": password,
    }


def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


class Setup:
    def __init__(self, svc: Service) -> None:
        self.svc = svc
        self.client = TestClient(create_app(svc), raise_server_exceptions=False)
        self.uid = svc.create_user(OWNER, "long enough pass")
        self.me = auth(svc.create_token(self.uid, "ci"))
        svc.create_user(OP, "operator password")
        self.op_id = svc.set_role(OP, "operator")
        self.op = auth(svc.create_token(self.op_id, "console"))


@pytest.fixture
def billed(make_service: Callable[..., Service], server: Any) -> Setup:
    return Setup(make_service(ca_file=str(server.ca_file), **BILLING))


def add_payment(svc: Service, uid: int, **over: Any) -> int:
    """A payment row as checkout makes it (no Stripe here), changed by ``over``."""
    with svc.db.session() as s:
        row = Payment(
            account_id=ledger.account_for_user(s, uid),
            user_id=uid,
            purpose="bundle",
            amount=4000,
            credit=5000,
            currency="usd",
            description="Credit bundle (20% off)",
            state="new",
            created_at=time.time(),
        )
        for key, value in over.items():
            setattr(row, key, value)
        s.add(row)
        s.flush()
        return row.id


def test_quote_order_wait_grant_settle_and_the_ledger(billed: Setup, server: Any) -> None:
    c, me = billed.client, billed.me
    src, dst = acct(server, "src", SRC_PW), acct(server, "dst", DST_PW)

    r = c.post(f"{API}/quotes", json={"source": src}, headers=me)
    assert r.status_code == 201, r.text
    quote = r.json()
    # Measured on the server: 6 messages of about 2 kB, the first band.
    assert quote["messages"] == 6 and 12_000 <= quote["bytes"] <= 14_000, quote
    assert (quote["price"], quote["credits_used"], quote["to_pay"]) == (500, 0, 500)
    assert quote["currency"] == "usd" and quote["expires_at"] > time.time()
    assert quote["lines"][0]["amount"] == 500 and "1 MB" in quote["lines"][0]["text"]
    assert SRC_PW not in r.text

    # No quote, or a quote of another mailbox: 402, the message says why.
    r = c.post(f"{API}/transfers", json={"source": src, "dest": dst}, headers=me)
    assert r.status_code == 402, r.text
    assert r.json()["code"] == "payment_required" and "quote" in r.json()["message"]
    other = c.post(f"{API}/quotes", json={"source": acct(server, "src2", SRC_PW)}, headers=me)
    assert other.status_code == 201, other.text
    r = c.post(
        f"{API}/transfers",
        json={"source": src, "dest": dst, "quote_id": other.json()["id"]},
        headers=me,
    )
    assert r.status_code == 402 and "another source mailbox" in r.json()["message"], r.text
    r = c.post(
        f"{API}/transfers", json={"source": src, "dest": dst, "quote_id": "nope"}, headers=me
    )
    assert r.status_code == 422 and "quote_id" in r.json()["message"], r.text

    # With its quote: stored, waiting for the payment (the balance is 0).
    r = c.post(
        f"{API}/transfers", json={"source": src, "dest": dst, "quote_id": quote["id"]}, headers=me
    )
    assert r.status_code == 201, r.text
    assert r.json() == {"id": r.json()["id"], "status": "awaiting_payment"}
    job = r.json()["id"]
    view = c.get(f"{API}/transfers/{job}", headers=me).json()
    assert view["status"] == "awaiting_payment"
    assert view["charge"] == {
        "run": 1,
        "price": 500,
        "currency": "usd",
        "state": "awaiting_payment",
        "reason": None,
        "balance": 0,
        "waiting": True,
    }

    r = c.post(f"{API}/transfers/{job}/settle", headers=me)
    assert r.status_code == 402, r.text
    assert "does not cover" in r.json()["message"]

    # An operator grants credits through the API: once per key, audited.
    url = f"{API}/operator/customers/{billed.uid}/credits"
    grant = {"amount": 700, "note": "welcome", "key": "k1"}
    assert c.post(url, json=grant, headers=me).status_code == 404  # a customer: no console
    r = c.post(url, json=grant, headers=billed.op)
    assert r.status_code == 200, r.text
    assert r.json() == {"granted": True, "balance": 700}
    again = c.post(url, json=grant, headers=billed.op)
    assert again.json() == {"granted": False, "balance": 700}
    audit = c.get(f"{API}/operator/audit", headers=billed.op).json()["entries"]
    grants = [e for e in audit if e["action"] == "grant_credits"]
    assert len(grants) == 1 and grants[0]["target_id"] == str(billed.uid)
    assert grants[0]["detail"]["amount"] == 700 and grants[0]["operator_email"] == OP

    r = c.post(f"{API}/transfers/{job}/settle", headers=me)
    assert r.status_code == 200, r.text
    assert r.json() == {"id": job, "status": "queued"}
    r = c.post(f"{API}/transfers/{job}/settle", headers=me)
    assert r.status_code == 409 and "not waiting" in r.json()["message"], r.text
    charge = c.get(f"{API}/transfers/{job}", headers=me).json()["charge"]
    assert (charge["state"], charge["waiting"], charge["balance"]) == ("paid", False, 200)

    summary = c.get(f"{API}/billing", headers=me).json()
    assert (summary["enabled"], summary["currency"], summary["balance"]) == (True, "usd", 200)
    assert summary["company"] is None
    entries = [(e["kind"], e["amount"], e["balance_after"]) for e in summary["entries"]]
    assert entries == [("spend", -500, 200), ("grant", 700, 700)]
    assert summary["entries"][0]["job_id"] == job
    assert summary["bundles"] == [
        {"number": 1, "credit": 5000, "price": 4000, "discount_percent": 20}
    ]
    # Paged: the newest, then the one before it.
    first = c.get(f"{API}/billing", params={"limit": 1}, headers=me).json()["entries"]
    assert [e["kind"] for e in first] == ["spend"]
    rest = c.get(f"{API}/billing", params={"before": first[0]["id"]}, headers=me).json()
    assert [e["kind"] for e in rest["entries"]] == ["grant"]
    assert c.get(f"{API}/billing", params={"limit": 0}, headers=me).status_code == 422

    r = c.get(f"{API}/billing/ledger.csv", headers=me)
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/csv")
    rows = list(csv.reader(io.StringIO(r.text)))
    assert tuple(rows[0]) == LEDGER_COLUMNS
    body = [dict(zip(LEDGER_COLUMNS, row, strict=True)) for row in rows[1:]]
    assert [(b["kind"], b["amount"], b["balance"]) for b in body] == [
        ("spend", "-5.00", "2.00"),
        ("grant", "7.00", "7.00"),
    ]
    assert body[0]["transfer"] == job and body[1]["note"] == "welcome"
    assert body[0]["date"].endswith("+00:00")  # the customer has no time zone: UTC


def test_billing_off_quotes_are_409_and_transfers_have_no_charge(
    make_service: Callable[..., Service],
) -> None:
    setup = Setup(make_service())  # billing off (the default)
    c, me = setup.client, setup.me
    src = {
        "host": "127.0.0.1",
        "port": 1143,
        "security": "starttls",
        "username": "a",
        "password": "pw-1",
    }
    dst = {**src, "username": "b"}
    r = c.post(f"{API}/quotes", json={"source": src}, headers=me)
    assert r.status_code == 409 and "does not charge" in r.json()["message"], r.text
    r = c.post(f"{API}/transfers", json={"source": src, "dest": dst}, headers=me)
    assert r.status_code == 201 and r.json()["status"] == "queued", r.text
    job = r.json()["id"]
    assert c.get(f"{API}/transfers/{job}", headers=me).json()["charge"] is None
    for path in (f"/transfers/{job}/payment", f"/transfers/{job}/settle"):
        r = c.post(API + path, headers=me)
        assert r.status_code == 409 and "payments are off" in r.json()["message"], r.text
    r = c.post(f"{API}/credit-purchases", json={"bundle": 1}, headers=me)
    assert r.status_code == 409, r.text
    r = c.post(
        f"{API}/operator/customers/{setup.uid}/credits",
        json={"amount": 5, "key": "x"},
        headers=setup.op,
    )
    assert r.status_code == 409, r.text
    summary = c.get(f"{API}/billing", headers=me).json()
    assert (summary["enabled"], summary["balance"], summary["entries"]) == (False, 0, [])


def test_payments_are_their_owners_and_only_paid_ones_have_a_receipt(billed: Setup) -> None:
    svc, c, me = billed.svc, billed.client, billed.me
    bob = svc.create_user("bob@example.org", "long enough pass")
    bobs = auth(svc.create_token(bob, "ci"))
    unpaid = add_payment(svc, bob)
    paid_at = 1_796_000_000.0  # 2026-11-30 UTC
    paid = add_payment(
        svc, bob, state="succeeded", paid_at=paid_at, card="visa 4242", intent_id="pi_123"
    )
    for pid in (999, unpaid, "abc", "1e3"):
        for suffix in ("", "/receipt.pdf"):
            r = c.get(f"{API}/payments/{pid}{suffix}", headers=me)  # not alice's
            assert r.status_code == 404, (pid, suffix, r.text)
            assert r.json()["message"] == "no such payment"
    assert c.get(f"{API}/payments", headers=me).json() == {"payments": []}

    listed = c.get(f"{API}/payments", headers=bobs).json()["payments"]
    assert [p["id"] for p in listed] == [paid, unpaid]
    one = c.get(f"{API}/payments/{unpaid}", headers=bobs)
    assert one.status_code == 200 and one.json()["state"] == "new", one.text
    assert "client_secret" not in one.json() and "intent_id" not in one.json()
    r = c.get(f"{API}/payments/{unpaid}/receipt.pdf", headers=bobs)
    assert r.status_code == 409 and "not paid" in r.json()["message"], r.text

    r = c.get(f"{API}/payments/{paid}/receipt.pdf", headers=bobs)
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "application/pdf" and r.content.startswith(b"%PDF")
    text = pypdf.PdfReader(io.BytesIO(r.content)).pages[0].extract_text()
    number = f"YM-2026-{paid:06d}"
    assert number in text and number in r.headers["content-disposition"]
    for needle in ("bob@example.org", "pi_123", "visa 4242", "$40.00", "$50.00"):
        assert needle in text, (needle, text)


def test_a_bundle_that_does_not_exist_is_404(billed: Setup) -> None:
    r = billed.client.post(f"{API}/credit-purchases", json={"bundle": 2}, headers=billed.me)
    assert r.status_code == 404 and "bundle" in r.json()["message"], r.text
    r = billed.client.post(f"{API}/credit-purchases", json={"bundle": 0}, headers=billed.me)
    assert r.status_code == 422, r.text


def test_stripe_unreachable_is_503_and_nothing_charged(
    make_service: Callable[..., Service], server: Any
) -> None:
    pytest.importorskip("yippiemove.service.stripe_gateway")
    svc = make_service(ca_file=str(server.ca_file), **BILLING, stripe_api_base="http://127.0.0.1:9")
    setup = Setup(svc)
    c, me = setup.client, setup.me
    src, dst = acct(server, "src", SRC_PW), acct(server, "dst", DST_PW)
    quote = c.post(f"{API}/quotes", json={"source": src}, headers=me).json()
    job = c.post(
        f"{API}/transfers", json={"source": src, "dest": dst, "quote_id": quote["id"]}, headers=me
    ).json()["id"]
    for path, body in ((f"/transfers/{job}/payment", None), ("/credit-purchases", {"bundle": 1})):
        r = c.post(API + path, json=body, headers=me)
        assert r.status_code == 503, r.text
        assert r.json()["code"] == "unavailable" and "nothing was charged" in r.json()["message"]
        assert "sk_test_x" not in r.text
    assert c.get(f"{API}/transfers/{job}", headers=me).json()["status"] == "awaiting_payment"
    assert c.get(f"{API}/billing", headers=me).json()["balance"] == 0


def test_another_customers_waiting_transfer_and_ledger_are_out_of_reach(
    billed: Setup, server: Any
) -> None:
    """Bob paying for, settling or reading alice's waiting order gets what a missing
    transfer gets, and nothing of hers is in his balance, ledger or payments."""
    svc, c, me = billed.svc, billed.client, billed.me
    src, dst = acct(server, "src", SRC_PW), acct(server, "dst", DST_PW)
    quote = c.post(f"{API}/quotes", json={"source": src}, headers=me).json()
    job = c.post(
        f"{API}/transfers", json={"source": src, "dest": dst, "quote_id": quote["id"]}, headers=me
    ).json()["id"]
    svc.billing.grant(billed.uid, 300, OP, "alice's credit", key="a")
    bob = svc.create_user("bob@example.org", "long enough pass")
    bobs = auth(svc.create_token(bob, "ci"))
    svc.billing.grant(bob, 1000, OP, "bob's credit", key="b")  # enough to pay hers
    for suffix in ("/payment", "/settle"):
        theirs = c.post(f"{API}/transfers/{job}{suffix}", headers=bobs)
        missing = c.post(f"{API}/transfers/0123456789abcdef{suffix}", headers=bobs)
        assert theirs.status_code == missing.status_code == 404, theirs.text
        assert theirs.json() == missing.json()
    # Her own quote is not his to order with either.
    r = c.post(
        f"{API}/transfers", json={"source": src, "dest": dst, "quote_id": quote["id"]}, headers=bobs
    )
    assert r.status_code == 402 and "no such quote" in r.json()["message"], r.text
    assert c.get(f"{API}/transfers/{job}", headers=me).json()["status"] == "awaiting_payment"
    summary = c.get(f"{API}/billing", headers=bobs).json()
    assert summary["balance"] == 1000 and [e["note"] for e in summary["entries"]] == [
        "bob's credit"
    ]
    ledger_text = c.get(f"{API}/billing/ledger.csv", headers=bobs).text
    assert "alice" not in ledger_text and job not in ledger_text
    assert c.get(f"{API}/billing", headers=me).json()["balance"] == 300
