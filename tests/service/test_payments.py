"""Card payments (issue 20, service/billing.py) against a real local Stripe (localstripe,
tests/stripekit.py) and a real Dovecot: an order paid by card runs; a webhook applies
once however often it comes; a declined card leaves the order waiting, and the next
card pays it through a new PaymentIntent while the declined one can no longer be paid;
concurrent "pay" requests make one payment and one intent; a dispute before the run puts
the order back to waiting; a forged webhook is refused; Stripe away charges nothing."""

from __future__ import annotations

import asyncio
import json
import threading
from typing import Any

import pytest
from sqlalchemy import func, select

from tests import mailcheck
from tests.stripekit import (
    LocalStripe,
    WebhookSink,
    event_body,
    free_port,
    intent_id_of,
    local_stripe,
    sign,
)
from tests.svckit import DST_PW, SRC_PW, account, assert_exact, wait_status
from tests.transfer.test_move import make_message
from yippiemove.service.billing import PaymentsUnavailable, quote_order
from yippiemove.service.core import ServiceError
from yippiemove.service.db import LedgerEntry, Payment

__all__ = ["local_stripe"]  # the fixture

OWNER = "payer@example.org"
HOOK_SECRET = "whsec_test_payments"
DECLINED = "4000000000000341"


@pytest.fixture
def server(dovecot_factory):
    srv = dovecot_factory(users={"src": SRC_PW, "dst": DST_PW})
    for n in range(5):
        srv.deliver("src", "INBOX", make_message(n, size=1500))
    return srv


@pytest.fixture
def sink(local_stripe: LocalStripe):
    with WebhookSink() as s:
        local_stripe.add_webhook(s.url, HOOK_SECRET)
        yield s


def billing_settings(stripe: LocalStripe, **kw: Any) -> dict[str, Any]:
    return {
        "billing_enabled": True,
        "price_bands": "1MB:700,*:2500",
        "stripe_secret_key": stripe.secret_key,
        "stripe_publishable_key": stripe.publishable_key,
        "stripe_webhook_secret": HOOK_SECRET,
        "stripe_api_base": stripe.api_base,
        **kw,
    }


def waiting_order(svc, server) -> tuple[int, str]:
    uid = svc.create_user(OWNER, "long enough pass")
    src = account(server, "src", SRC_PW)
    q = asyncio.run(quote_order(svc, uid, src, None, None))
    job = svc.create_transfer(uid, src, account(server, "dst", DST_PW), quote_id=q.id)
    assert job.status == "awaiting_payment"
    return uid, job.id


def ledger_kinds(svc, uid) -> list[tuple[str, int]]:
    return [(e["kind"], e["amount"]) for e in svc.billing.summary(uid)["entries"]]


def test_an_order_paid_by_card_runs_and_its_webhook_applies_once(
    make_service, server, local_stripe, sink
):
    svc = make_service(ca_file=str(server.ca_file), **billing_settings(local_stripe))
    svc.start(1)
    uid, job_id = waiting_order(svc, server)
    first = svc.billing.checkout_order(uid, job_id)
    again = svc.billing.checkout_order(uid, job_id)  # a reload, a retried call
    assert first.payment.id == again.payment.id and first.client_secret == again.client_secret
    assert first.payment.amount == 700 and first.client_secret
    assert first.client_secret not in repr(first)  # a log line of it shows no secret
    intent = intent_id_of(first.client_secret)
    assert local_stripe.pay(first.client_secret) == "succeeded"
    hook = sink.wait_for("payment_intent.succeeded", intent)
    assert "received" not in svc.billing.handle_webhook(hook.body, hook.signature)
    view = wait_status(svc, uid, job_id)
    assert view.status == "done", view
    assert_exact(server, "src", SRC_PW, "dst", DST_PW)
    assert ledger_kinds(svc, uid) == [("spend", -700), ("purchase", 700)]
    paid = svc.billing.payment(uid, first.payment.id)
    assert paid.state == "succeeded" and paid.card == "visa 4242"
    # The same event again (Stripe retries until it is answered), and the page's own
    # read-back of the intent: nothing more.
    assert svc.billing.handle_webhook(hook.body, hook.signature).endswith("already handled")
    svc.billing.sync(uid, first.payment.id)
    assert ledger_kinds(svc, uid) == [("spend", -700), ("purchase", 700)]
    assert svc.billing.summary(uid)["balance"] == 0


def test_a_declined_card_leaves_the_order_waiting_and_the_next_card_pays_it(
    make_service, server, local_stripe
):
    svc = make_service(ca_file=str(server.ca_file), **billing_settings(local_stripe))
    svc.start(1)
    uid, job_id = waiting_order(svc, server)
    first = svc.billing.checkout_order(uid, job_id)
    assert first.client_secret is not None
    assert local_stripe.pay(first.client_secret, DECLINED) == "requires_payment_method"
    failed = svc.billing.sync(uid, first.payment.id)
    assert failed.state == "failed" and "declined" in (failed.failure or "").lower()
    charge = svc.billing.charge_of(uid, job_id)
    assert charge is not None and "declined" in (charge["reason"] or "").lower()
    assert svc.get_transfer(uid, job_id).status == "awaiting_payment"
    assert not any(mailcheck.snapshot(server.port, "dst", DST_PW).values())
    # The next card: a new PaymentIntent; the declined one is cancelled, so a page left
    # open with its secret cannot pay it any more (two intents paid: a double charge).
    second = svc.billing.checkout_order(uid, job_id)
    assert second.payment.id == first.payment.id
    assert second.client_secret is not None and second.client_secret != first.client_secret
    old = local_stripe.gateway(HOOK_SECRET).retrieve_intent(intent_id_of(first.client_secret))
    assert old.status == "canceled"
    assert local_stripe.pay(second.client_secret) == "succeeded"
    assert svc.billing.sync(uid, first.payment.id).state == "succeeded"
    assert wait_status(svc, uid, job_id).status == "done"
    assert ledger_kinds(svc, uid) == [("spend", -700), ("purchase", 700)]


def test_concurrent_pay_requests_make_one_payment_and_one_intent(
    make_service, server, local_stripe
):
    svc = make_service(ca_file=str(server.ca_file), **billing_settings(local_stripe))
    uid, job_id = waiting_order(svc, server)
    secrets: list[str | None] = []
    gate = threading.Barrier(6)

    def pay() -> None:
        gate.wait()
        secrets.append(svc.billing.checkout_order(uid, job_id).client_secret)

    threads = [threading.Thread(target=pay) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(secrets) == 6 and len(set(secrets)) == 1, secrets
    with svc.db.read() as s:
        assert s.scalar(select(func.count()).select_from(Payment)) == 1
        stored = s.scalar(select(Payment.intent_id))
    assert secrets[0] is not None and intent_id_of(secrets[0]) == stored


def test_a_dispute_before_the_run_puts_the_order_back_to_waiting(
    make_service, server, local_stripe
):
    svc = make_service(ca_file=str(server.ca_file), **billing_settings(local_stripe))
    uid, job_id = waiting_order(svc, server)  # not started: the job stays queued
    checkout = svc.billing.checkout_order(uid, job_id)
    assert checkout.client_secret is not None
    local_stripe.pay(checkout.client_secret)
    svc.billing.sync(uid, checkout.payment.id)
    assert svc.get_transfer(uid, job_id).status == "queued"
    intent = intent_id_of(checkout.client_secret)
    body = event_body(
        "charge.dispute.created",
        {
            "id": "dp_test1",
            "object": "dispute",
            "payment_intent": intent,
            "amount": 700,
            "charge": "ch_test1",
            "reason": "fraudulent",
            "status": "needs_response",
        },
    )
    svc.billing.handle_webhook(body, sign(body, HOOK_SECRET))
    assert svc.get_transfer(uid, job_id).status == "awaiting_payment"
    charge = svc.billing.charge_of(uid, job_id)
    assert charge is not None and "disputed" in (charge["reason"] or "")
    assert svc.billing.payment(uid, checkout.payment.id).state == "disputed"
    # Net nothing: the credit bought is taken back, the spend given back.
    assert svc.billing.summary(uid)["balance"] == 0
    assert sorted(ledger_kinds(svc, uid)) == sorted(
        [("purchase", 700), ("spend", -700), ("refund", 700), ("adjust", -700)]
    )
    # The same dispute again changes nothing.
    svc.billing.handle_webhook(body, sign(body, HOOK_SECRET))
    assert len(ledger_kinds(svc, uid)) == 4


def test_forged_webhooks_are_refused_and_change_nothing(make_service, server, local_stripe):
    svc = make_service(ca_file=str(server.ca_file), **billing_settings(local_stripe))
    uid, job_id = waiting_order(svc, server)
    checkout = svc.billing.checkout_order(uid, job_id)
    assert checkout.client_secret is not None
    intent = {
        "id": intent_id_of(checkout.client_secret),
        "object": "payment_intent",
        "status": "succeeded",
        "amount": 700,
        "currency": "usd",
    }
    body = event_body("payment_intent.succeeded", intent)
    for signature, why in (
        (None, "no stripe-signature header"),
        (sign(body, "whsec_somebody_else"), "signature"),
        (sign(body, HOOK_SECRET, timestamp=1_000_000_000), "more than the tolerance"),
    ):
        with pytest.raises(ServiceError, match="webhook refused") as exc:
            svc.billing.handle_webhook(body, signature)
        assert why in str(exc.value).lower(), (why, str(exc.value))
    tampered = body.replace(b'"amount": 700', b'"amount": 7')
    with pytest.raises(ServiceError, match="webhook refused"):
        svc.billing.handle_webhook(tampered, sign(body, HOOK_SECRET))
    assert svc.get_transfer(uid, job_id).status == "awaiting_payment"
    with svc.db.read() as s:
        assert s.scalar(select(func.count()).select_from(LedgerEntry)) == 0
    # A correctly signed event whose intent Stripe says is not paid: read back, not
    # believed (the event's copy could be stale or crafted with a leaked secret).
    svc.billing.handle_webhook(body, sign(body, HOOK_SECRET))
    assert svc.get_transfer(uid, job_id).status == "awaiting_payment"


def test_stripe_away_charges_nothing_and_a_later_try_works(make_service, server, local_stripe):
    dead = f"http://127.0.0.1:{free_port()}"
    svc = make_service(
        ca_file=str(server.ca_file), **billing_settings(local_stripe, stripe_api_base=dead)
    )
    uid, job_id = waiting_order(svc, server)
    with pytest.raises(PaymentsUnavailable, match="nothing was charged"):
        svc.billing.checkout_order(uid, job_id)
    svc.billing._gateway = None
    svc.settings.stripe_api_base = local_stripe.api_base
    checkout = svc.billing.checkout_order(uid, job_id)
    assert checkout.client_secret is not None
    with svc.db.read() as s:
        assert s.scalar(select(func.count()).select_from(Payment)) == 1


def test_the_webhook_route_verifies_and_applies(make_service, server, local_stripe, sink):
    """POST /stripe/webhook through the web app: Stripe's own delivery, signed."""
    from fastapi.testclient import TestClient

    from yippiemove.web.app import create_app

    svc = make_service(ca_file=str(server.ca_file), **billing_settings(local_stripe))
    uid, job_id = waiting_order(svc, server)
    checkout = svc.billing.checkout_order(uid, job_id)
    assert checkout.client_secret is not None
    local_stripe.pay(checkout.client_secret)
    hook = sink.wait_for("payment_intent.succeeded", intent_id_of(checkout.client_secret))
    with TestClient(create_app(svc)) as client:
        bad = client.post(
            "/stripe/webhook", content=hook.body, headers={"Stripe-Signature": "t=1,v1=00"}
        )
        assert bad.status_code == 400 and "refused" in bad.json()["error"]
        assert svc.get_transfer(uid, job_id).status == "awaiting_payment"
        ok = client.post(
            "/stripe/webhook", content=hook.body, headers={"Stripe-Signature": hook.signature or ""}
        )
        assert ok.status_code == 200, ok.text
        assert json.loads(ok.text)["received"] is True
    assert svc.get_transfer(uid, job_id).status == "queued"


def test_a_bundle_bought_by_card_adds_its_credit_once(make_service, server, local_stripe, sink):
    svc = make_service(
        ca_file=str(server.ca_file),
        **billing_settings(local_stripe, price_bundles="5000:4000,20000:15000"),
    )
    uid = svc.create_user(OWNER, "long enough pass")
    first = svc.billing.checkout_bundle(uid, 0)
    again = svc.billing.checkout_bundle(uid, 0)  # a double click on "Buy"
    assert first.payment.id == again.payment.id and first.payment.amount == 4000
    assert first.payment.credit == 5000 and first.client_secret is not None
    with pytest.raises(Exception, match="no bundle number 3"):
        svc.billing.checkout_bundle(uid, 2)
    assert local_stripe.pay(first.client_secret) == "succeeded"
    hook = sink.wait_for("payment_intent.succeeded", intent_id_of(first.client_secret))
    svc.billing.handle_webhook(hook.body, hook.signature)
    svc.billing.sync(uid, first.payment.id)
    assert ledger_kinds(svc, uid) == [("purchase", 5000)]
    # Paid: the next "Buy" is a new purchase, not the paid one again.
    assert svc.billing.checkout_bundle(uid, 0).payment.id != first.payment.id


def test_a_webhook_stripe_cannot_confirm_now_is_refused_and_applies_when_sent_again(
    make_service, server, local_stripe, sink
):
    """The event is not believed as sent; when the intent cannot be read back (Stripe
    away for a moment), the delivery gets an error (503) and is not recorded, so Stripe's
    next delivery of it applies it."""
    from yippiemove.service.stripe_gateway import StripeGateway

    svc = make_service(ca_file=str(server.ca_file), **billing_settings(local_stripe))
    uid, job_id = waiting_order(svc, server)
    checkout = svc.billing.checkout_order(uid, job_id)
    assert checkout.client_secret is not None
    local_stripe.pay(checkout.client_secret)
    hook = sink.wait_for("payment_intent.succeeded", intent_id_of(checkout.client_secret))
    working = svc.billing._gateway
    svc.billing._gateway = StripeGateway(
        local_stripe.secret_key,
        HOOK_SECRET,
        api_base=f"http://127.0.0.1:{free_port()}",
        max_network_retries=0,
    )
    with pytest.raises(PaymentsUnavailable, match="deliver the event again later"):
        svc.billing.handle_webhook(hook.body, hook.signature)
    assert svc.get_transfer(uid, job_id).status == "awaiting_payment"
    svc.billing._gateway = working
    assert svc.billing.handle_webhook(hook.body, hook.signature).endswith("applied")
    assert svc.get_transfer(uid, job_id).status == "queued"
    assert svc.billing.handle_webhook(hook.body, hook.signature).endswith("already handled")
