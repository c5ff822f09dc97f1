"""The billing pages (issue 20, web/billing_pages.py) over the real Service with billing
on, a real Dovecot and a real local Stripe: the order's price step, the card page (its
CSP, its secret), paying from credits, the ledger page and CSV, receipts, an operator's
grant, and customers kept apart.  The card typed in Chromium: test_browser_payments.py."""

from __future__ import annotations

import csv
import html
import io
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from tests.stripekit import LocalStripe, intent_id_of, local_stripe
from tests.transfer.test_move import make_message
from tests.web.conftest import Browser
from tests.web.htmlform import form_fields, with_values
from yippiemove.service.config import Settings
from yippiemove.service.core import Service
from yippiemove.testing.dovecot import DovecotServer
from yippiemove.web.app import create_app

__all__ = ["local_stripe"]  # the fixture

PASSWORD = "correct horse battery"


@pytest.fixture
def mailbox(dovecot: DovecotServer) -> DovecotServer:
    dovecot.deliver_many("src", "INBOX", [make_message(i, size=3000) for i in range(4)])
    return dovecot


@pytest.fixture
def svc(tmp_path: Path, mailbox: DovecotServer, local_stripe: LocalStripe) -> Iterator[Service]:
    service = Service(
        Settings.load(
            tmp_path / "svc",
            ca_file=str(mailbox.ca_file),
            maintenance_interval=3600.0,
            egress_allow="127.0.0.0/8",
            billing_enabled=True,
            price_bands="1MB:700,*:2500",
            price_bundles="5000:4000",
            stripe_secret_key=local_stripe.secret_key,
            stripe_publishable_key=local_stripe.publishable_key,
            stripe_webhook_secret="whsec_pages",
            stripe_api_base=local_stripe.api_base,
            stripe_js_url=local_stripe.js_url,
        )
    )
    try:
        yield service
    finally:
        service.close()


def order_to_quote(b: Browser, mailbox: DovecotServer, dest_user: str = "dst") -> Any:
    """The three steps of a new transfer, then "See the price": the quote page."""
    page = b.get("/transfers/new").text
    src = {
        "source_preset": "other",
        "source_host": "127.0.0.1",
        "source_port": str(mailbox.port),
        "source_security": "starttls",
        "source_username": "src",
        "source_password": "srcpass",
    }
    r = b.post(
        "/transfers/new",
        with_values(form_fields(page, "/transfers/new"), **src, action="check_source"),
    )
    assert r.status_code == 200, html.unescape(r.text)
    dst = {
        "dest_preset": "other",
        "dest_host": "127.0.0.1",
        "dest_port": str(mailbox.port),
        "dest_security": "starttls",
        "dest_username": dest_user,
        "dest_password": "dstpass",
    }
    r = b.post(
        "/transfers/new",
        with_values(form_fields(r.text, "/transfers/new"), **dst, action="check_dest"),
    )
    assert r.status_code == 200, html.unescape(r.text)
    assert "See the price" in r.text and "Start transfer" not in r.text
    return b.post(
        "/transfers/new", with_values(form_fields(r.text, "/transfers/new"), action="start")
    )


def test_the_order_shows_its_price_then_waits_for_its_payment(
    svc: Service, mailbox: DovecotServer, local_stripe: LocalStripe
) -> None:
    b = Browser(TestClient(create_app(svc)))
    b.signup("ada@example.org")
    uid = svc.authenticate("ada@example.org", PASSWORD)
    assert uid is not None
    r = order_to_quote(b, mailbox)
    assert r.status_code == 200, html.unescape(r.text)
    text = html.unescape(r.text)
    assert "4 messages" in text and "$7.00" in text and "Order and pay" in text
    assert svc.list_transfers(uid) == []  # nothing ordered yet
    fields = form_fields(r.text, "/transfers/new")
    assert re.fullmatch(r"[0-9a-f]{32}", dict(fields)["quote_id"])
    # A forged quote id: refused, naming it; nothing ordered.
    forged = b.post("/transfers/new", with_values(fields, quote_id="0" * 32, action="start"))
    assert forged.status_code == 400 and "no such quote" in html.unescape(forged.text)
    assert svc.list_transfers(uid) == []
    r = b.post("/transfers/new", with_values(fields, action="start"))
    assert r.status_code == 303 and r.headers["location"].endswith("/pay"), r.headers
    job_id = r.headers["location"].split("/")[2]
    assert svc.get_transfer(uid, job_id).status == "awaiting_payment"
    # Ordering again from the same page (Back, a reload): the one waiting order.
    again = b.post("/transfers/new", with_values(fields, action="start"))
    assert again.status_code == 303 and job_id in again.headers["location"]
    assert len(svc.list_transfers(uid)) == 1
    # The card page: Stripe.js allowed by its CSP (and nothing else new), the secret of
    # this payment's intent, which localstripe knows for 700.
    pay = b.get(f"/transfers/{job_id}/pay")
    assert pay.status_code == 200, pay.text
    csp = pay.headers["content-security-policy"]
    origin = local_stripe.api_base
    assert f"script-src 'self' {origin}" in csp and f"frame-src {origin}" in csp
    secret = re.search(r'data-secret="([^"]+)"', pay.text)
    assert secret is not None
    gateway = local_stripe.gateway("whsec_pages")
    assert gateway.retrieve_intent(intent_id_of(secret.group(1))).amount == 700
    assert b.get(f"/transfers/{job_id}/pay").text.count(secret.group(1)) == 1  # same intent
    job_page = html.unescape(b.get(f"/transfers/{job_id}").text)
    assert "Waiting for payment" in job_page and "data-awaiting-payment" in job_page
    # Paid (as the browser would), the payment page reads it back: the receipt.
    assert local_stripe.pay(secret.group(1)) == "succeeded"
    pid = re.search(r'data-payment-id="(\d+)"', pay.text)
    assert pid is not None
    receipt = html.unescape(b.get(f"/payments/{pid.group(1)}").text)
    assert "Receipt" in receipt and "$7.00" in receipt and "visa 4242" in receipt
    pdf = b.get(f"/payments/{pid.group(1)}/receipt.pdf")
    assert pdf.status_code == 200 and pdf.content.startswith(b"%PDF")
    assert pdf.headers["content-type"] == "application/pdf"
    assert svc.get_transfer(uid, job_id).status == "queued"
    # The ledger: the purchase and the spend, as a page and as CSV.
    page = html.unescape(b.get("/billing").text)
    assert 'data-kind="purchase"' in page and 'data-kind="spend"' in page
    rows = list(csv.DictReader(io.StringIO(b.get("/billing/ledger.csv").text)))
    assert [(r["kind"], r["amount"], r["balance"]) for r in rows] == [
        ("spend", "-7.00", "0.00"),
        ("purchase", "7.00", "7.00"),
    ]


def test_credits_pay_an_order_and_customers_are_kept_apart(
    svc: Service, mailbox: DovecotServer
) -> None:
    ada = Browser(TestClient(create_app(svc)))
    ada.signup("ada@example.org")
    uid = svc.authenticate("ada@example.org", PASSWORD)
    assert uid is not None
    r = order_to_quote(ada, mailbox)
    r = ada.post(
        "/transfers/new", with_values(form_fields(r.text, "/transfers/new"), action="start")
    )
    job_id = r.headers["location"].split("/")[2]
    svc.billing.grant(uid, 1000, "ops@example.org", "goodwill", key="g1")
    pay = html.unescape(ada.get(f"/transfers/{job_id}/pay").text)
    assert "Pay from my credits" in pay and "data-secret" not in pay
    bob = Browser(TestClient(create_app(svc)))
    bob.signup("bob@example.org")
    missing = "0" * 32
    for path in (f"/transfers/{job_id}/pay", f"/transfers/{missing}/pay"):
        assert bob.get(path).status_code == 404, path
    assert bob.post(f"/transfers/{job_id}/settle", {}).status_code == 404
    assert svc.get_transfer(uid, job_id).status == "awaiting_payment"
    r = ada.post(f"/transfers/{job_id}/settle", {})
    assert r.status_code == 303 and r.headers["location"] == f"/transfers/{job_id}"
    assert svc.get_transfer(uid, job_id).status == "queued"
    assert svc.billing.summary(uid)["balance"] == 300
    # Bob's billing page holds nothing of Ada's.
    page = bob.get("/billing").text
    assert "goodwill" not in page and 'data-balance="0"' in page
    # A payment of Ada's (a bundle) is the 404 of a missing one for Bob.
    checkout = svc.billing.checkout_bundle(uid, 0)
    for path in (
        f"/payments/{checkout.payment.id}",
        f"/payments/{checkout.payment.id}/pay",
        f"/payments/{checkout.payment.id}/receipt.pdf",
        "/payments/999999",
    ):
        assert bob.get(path).status_code == 404, path
    assert ada.get(f"/payments/{checkout.payment.id}/pay").status_code == 200


def test_an_operator_grants_credits_from_the_console(svc: Service, mailbox: DovecotServer) -> None:
    ops = Browser(TestClient(create_app(svc)))
    ops.signup("ops@example.org")
    svc.set_role("ops@example.org", "operator")
    cust = svc.create_user("cust@example.org", PASSWORD)
    page = ops.get(f"/operator/customers/{cust}").text
    assert "data-grant-form" in page
    fields = form_fields(page, f"/operator/customers/{cust}/credits")
    r = ops.post(
        f"/operator/customers/{cust}/credits",
        with_values(fields, amount="2500", note="sorry for the wait"),
    )
    assert r.status_code == 303
    again = ops.post(
        f"/operator/customers/{cust}/credits",
        with_values(fields, amount="2500", note="sorry for the wait"),
    )
    assert again.status_code == 303  # the same form twice (a double click): once
    summary = svc.billing.summary(cust)
    assert summary["balance"] == 2500
    assert [(e["kind"], e["note"]) for e in summary["entries"]] == [("grant", "sorry for the wait")]
    log = svc.audit_log(svc.authenticate("ops@example.org", PASSWORD) or 0)
    assert any(row["action"] == "grant_credits" for row in log["entries"]), log
    # A customer cannot grant themselves anything.
    cb = Browser(TestClient(create_app(svc)))
    cb.signup("cust2@example.org")
    me = svc.authenticate("cust2@example.org", PASSWORD)
    assert me is not None
    r = cb.post(f"/operator/customers/{me}/credits", {"amount": "100000", "note": "me"})
    assert r.status_code == 404 and svc.billing.summary(me)["balance"] == 0


def test_a_batch_page_shows_its_prices_and_pays_the_waiting_lines_from_credits(
    svc: Service, mailbox: DovecotServer
) -> None:
    from yippiemove.service.core import Account

    svc.start(0)  # the pre-flight runs in the background; no worker
    b = Browser(TestClient(create_app(svc)))
    b.signup("ada@example.org")
    uid = svc.authenticate("ada@example.org", PASSWORD)
    assert uid is not None
    src = Account("127.0.0.1", mailbox.port, "starttls", "src", "srcpass")
    rows = [
        (1, src, Account("127.0.0.1", mailbox.port, "starttls", "dst", "dstpass")),
        (2, src, Account("127.0.0.1", mailbox.port, "starttls", "dst", "dstpass2")),
    ]
    bid = svc.create_batch(uid, rows, autostart=False)["id"]
    svc.wait_preflights(60)
    page = html.unescape(b.get(f"/batches/{bid}").text)
    assert "data-batch-price>$7.00<" in page, page[:3000]  # line 2's password is wrong
    assert page.count("data-line-price>$7.00<") == 1
    r = b.post(f"/batches/{bid}/start", {})
    assert r.status_code == 303
    page = html.unescape(b.get(f"/batches/{bid}").text)
    assert "data-batch-awaiting" in page and "1 transfer of this batch waits" in page
    svc.billing.grant(uid, 700, "ops@example.org", "", key="batch")
    r = b.post(f"/batches/{bid}/settle", {})
    assert r.status_code == 303
    page = html.unescape(b.get(f"/batches/{bid}").text)
    assert "1 transfer paid from your credits." in page and "data-batch-awaiting" not in page
    assert svc.get_batch(uid, bid)["totals"]["queued"] == 1
