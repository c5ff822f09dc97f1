"""Chromium pays for transfers (issue 20): the price step, the card page, the receipt.

Everything is real except Stripe's edge: ``yippiemove serve`` with billing on, a real
Dovecot, a real localstripe (tests/stripekit.py) whose webhooks reach the service's
``POST /stripe/webhook``, and the page's Stripe.js loaded from tests/web/stripe_edge.py
(a Stripe.js double, and Stripe's confirm endpoint in front of localstripe: localstripe's
own fake Stripe.js cannot pay with a typed card).  The card is typed into the double's
inputs, as a customer types it into Stripe's element.

- ``test_the_edge_answers_as_stripe``: the double's rules, without a browser.
- ``test_pay_by_card_then_it_runs``: price -> order -> card -> receipt (page and PDF) ->
  the transfer runs, exact -> the ledger: one purchase and one spend, still one after
  localstripe's webhook has been applied too.
- ``test_a_declined_card_then_another``: the decline is shown, nothing runs, then
  "Try another card" pays and it runs.
- ``test_a_double_clicked_pay_button_charges_once``.
- ``test_a_bundle_then_an_order_paid_by_credits``.

Screenshots go to ``YIPPIEMOVE_SCREENSHOTS`` if set.
"""

from __future__ import annotations

import json
import re
import secrets
import shutil
import sqlite3
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from subprocess import Popen
from typing import Any

import httpx
import pytest
from playwright.sync_api import Page, expect

from tests import mailcheck
from tests.stripekit import DECLINED_CARD, GOOD_CARD, LocalStripe, WebhookSink, local_stripe
from tests.svckit import assert_exact
from tests.transfer.test_move import populate
from tests.web.browser import free_port
from tests.web.stripe_edge import StripeEdge
from tests.web.test_browser import (
    dovecot_account,
    fill_account,
    page,
    serve,
    shot,
    sign_up,
    stop,
)

__all__ = ["local_stripe", "page"]  # fixtures, used below

pytestmark = pytest.mark.timeout(300)

PRICE = "$5.00"  # the band of a mailbox up to 1 MB (the source is far smaller)
BUNDLE_PRICE, BUNDLE_CREDIT = "$40.00", "$50.00"


# -- the module's Stripe: localstripe, its edge, a sink of its webhooks ---------------------


@pytest.fixture(scope="module")
def edge(local_stripe: LocalStripe) -> Iterator[StripeEdge]:
    with StripeEdge(local_stripe) as e:
        yield e


@pytest.fixture(scope="module")
def sink(local_stripe: LocalStripe) -> Iterator[WebhookSink]:
    """Every event localstripe sends (to know when it has sent one to the service too)."""
    with WebhookSink() as s:
        local_stripe.add_webhook(s.url + "/events", "whsec_sink", name="sink")
        yield s


@dataclass
class Shop:
    base: str
    server: Any  # the Dovecot
    data: Path
    proc: Popen[bytes]
    log: Path

    def events_handled(self) -> set[str]:
        """The ids of the webhook events the service has applied (its stripe_events)."""
        con = sqlite3.connect(f"file:{self.data / 'control.sqlite'}?mode=ro", uri=True)
        try:
            return {row[0] for row in con.execute("SELECT id FROM stripe_events")}
        finally:
            con.close()


@pytest.fixture
def shop(
    dovecot_factory: Callable[..., Any],
    tmp_path: Path,
    local_stripe: LocalStripe,
    edge: StripeEdge,
    sink: WebhookSink,
) -> Iterator[Shop]:
    """A Dovecot (src, and empty dst), and ``yippiemove serve`` charging for transfers,
    its webhook registered at localstripe (replacing the last test's)."""
    server = dovecot_factory(separator="/", users={"src": "srcpass", "dst": "dstpass"})
    populate(server, "src")
    webhook_secret = "whsec_" + secrets.token_hex(16)
    port = free_port()
    env = {
        "YIPPIEMOVE_BILLING_ENABLED": "1",
        "YIPPIEMOVE_PRICE_BANDS": "1MB:500,*:2500",
        "YIPPIEMOVE_PRICE_BUNDLES": "5000:4000",
        "YIPPIEMOVE_STRIPE_SECRET_KEY": local_stripe.secret_key,
        "YIPPIEMOVE_STRIPE_PUBLISHABLE_KEY": local_stripe.publishable_key,
        "YIPPIEMOVE_STRIPE_WEBHOOK_SECRET": webhook_secret,
        "YIPPIEMOVE_STRIPE_API_BASE": local_stripe.api_base,
        "YIPPIEMOVE_STRIPE_JS_URL": edge.js_url,
    }
    log = tmp_path / "serve.log"
    # The data directory outside pytest's base directory: another pytest session starting
    # on this machine makes that 0700 again, and a job process (its own user id, when
    # root) could then not reach its state by path (tests/conftest.py _job_dirs_reachable).
    data = Path(tempfile.mkdtemp(prefix="yippiemove-pay-"))
    data.chmod(0o711)
    try:
        proc = serve(data, port, server.ca_file, log, env)
        base = f"http://127.0.0.1:{port}"
        local_stripe.add_webhook(base + "/stripe/webhook", webhook_secret, name="service")
        try:
            yield Shop(base, server, data, proc, log)
        except BaseException:
            print(log.read_text()[-5000:])
            raise
        finally:
            stop(proc)
    finally:
        shutil.rmtree(data, ignore_errors=True)


# -- steps ----------------------------------------------------------------------------------


def to_the_price(page: Page, shop: Shop) -> None:
    """The order's steps up to its price (src -> dst, every folder)."""
    page.goto(shop.base + "/transfers/new")
    fill_account(page, "source", dovecot_account(shop.server, "src", "srcpass"))
    page.click("button:has-text('Check and continue')")
    page.wait_for_selector("input[name=dest_username]")
    fill_account(page, "dest", dovecot_account(shop.server, "dst", "dstpass"))
    page.click("button:has-text('Check and continue')")
    page.wait_for_selector("input[name=folder]")
    page.click("button:has-text('See the price →')")
    expect(page.locator("[data-quote]")).to_be_visible()


def order_and_pay(page: Page, shop: Shop) -> str:
    """Price, then "Order and pay": the card page of the new transfer; its id."""
    to_the_price(page, shop)
    expect(page.locator("[data-quote-price]")).to_have_text(PRICE)
    expect(page.locator("[data-quote-to-pay]")).to_have_text(PRICE)
    page.click("button:has-text('Order and pay →')")
    page.wait_for_url(re.compile(r"/transfers/[^/]+/pay$"))
    expect(page.locator("[data-amount]")).to_have_text(PRICE)
    return page.url.rsplit("/", 2)[1]


def type_card(page: Page, number: str, expiry: str = "12 / 34", cvc: str = "123") -> None:
    page.fill("[data-stripe-field=number]", number)
    page.fill("[data-stripe-field=expiry]", expiry)
    page.fill("[data-stripe-field=cvc]", cvc)


def card_shown(number: str) -> str:
    return " ".join(number[i : i + 4] for i in range(0, len(number), 4))


def receipt_reference(page: Page) -> str:
    """On a receipt page: the PaymentIntent it was paid by."""
    page.wait_for_url(re.compile(r"/payments/\d+$"))
    expect(page.locator("[data-payment-receipt]")).to_be_visible()
    return page.inner_text("[data-reference]").strip()


def runs_to_the_end(page: Page, shop: Shop, job_id: str) -> None:
    page.goto(f"{shop.base}/transfers/{job_id}")
    expect(page.locator("[data-summary] .outcome")).to_contain_text("All done", timeout=120_000)
    assert_exact(shop.server, "src", "srcpass", "dst", "dstpass")


def ledger_kinds(page: Page, shop: Shop) -> list[str]:
    page.goto(shop.base + "/billing")
    return page.locator("[data-ledger] tr[data-entry]").evaluate_all(
        "rows => rows.map(r => r.dataset.kind)"
    )


def webhook_applied(shop: Shop, sink: WebhookSink, intent_id: str) -> None:
    """Waits until localstripe's payment_intent.succeeded of ``intent_id`` has been sent
    and the service has applied it (its event id stored)."""
    delivery = sink.wait_for("payment_intent.succeeded", intent_id, timeout=20)
    event_id = json.loads(delivery.body)["id"]
    deadline = time.monotonic() + 20
    while event_id not in shop.events_handled():
        assert time.monotonic() < deadline, "the service never applied the webhook"
        time.sleep(0.1)


def intent_at_localstripe(stripe: LocalStripe, intent_id: str) -> dict[str, Any]:
    with httpx.Client(auth=(stripe.secret_key, ""), timeout=10, trust_env=False) as http:
        answer = http.get(f"{stripe.api_base}/v1/payment_intents/{intent_id}")
        answer.raise_for_status()
        return answer.json()


def destination_count(shop: Shop) -> int:
    snap = mailcheck.snapshot(shop.server.port, "dst", "dstpass")
    return sum(sum(c.values()) for c in snap.values())


# -- the edge itself --------------------------------------------------------------------------


def test_the_edge_answers_as_stripe(local_stripe: LocalStripe, edge: StripeEdge) -> None:
    gateway = local_stripe.gateway("whsec_x")

    def new_intent() -> Any:
        return gateway.create_intent(
            amount=500,
            currency="usd",
            idempotency_key=secrets.token_hex(8),
            metadata={},
            description="test",
        )

    def confirm(intent: Any, card: str = GOOD_CARD, **over: str) -> httpx.Response:
        form = {
            "key": local_stripe.publishable_key,
            "client_secret": intent.client_secret,
            "payment_method_data[type]": "card",
            "payment_method_data[card][number]": card,
            "payment_method_data[card][exp_month]": "12",
            "payment_method_data[card][exp_year]": "34",
            "payment_method_data[card][cvc]": "123",
            **over,
        }
        return httpx.post(f"{edge.url}/v1/payment_intents/{intent.id}/confirm", data=form)

    js = httpx.get(edge.js_url)
    assert js.status_code == 200 and "confirmCardPayment" in js.text
    assert js.headers["access-control-allow-origin"] == "*"
    pre = httpx.options(f"{edge.url}/v1/payment_intents/pi_x/confirm")
    assert pre.status_code == 204 and pre.headers["access-control-allow-origin"] == "*"

    one = new_intent()
    assert confirm(one, key=local_stripe.secret_key).status_code == 401  # not the pk
    assert confirm(one, client_secret=new_intent().client_secret).status_code == 400
    assert edge.charges[one.id] == 0
    paid = confirm(one)
    assert paid.status_code == 200 and paid.json()["status"] == "succeeded"
    again = confirm(one)
    assert again.status_code == 400
    assert again.json()["error"]["code"] == "payment_intent_unexpected_state"
    assert edge.charges[one.id] == 1 and edge.confirms[one.id] == 4

    two = new_intent()
    declined = confirm(two, DECLINED_CARD)
    assert declined.status_code == 402
    error = declined.json()["error"]
    assert (error["type"], error["code"]) == ("card_error", "card_declined")
    assert error["message"] == "Your card was declined."
    assert error["payment_intent"]["status"] == "requires_payment_method"
    assert edge.charges[two.id] == 0
    unknown = httpx.post(
        f"{edge.url}/v1/payment_intents/pi_nothere/confirm",
        data={
            "key": local_stripe.publishable_key,
            "client_secret": "pi_nothere_secret_x",
            "payment_method_data[type]": "card",
            "payment_method_data[card][number]": GOOD_CARD,
            "payment_method_data[card][exp_month]": "1",
            "payment_method_data[card][exp_year]": "40",
            "payment_method_data[card][cvc]": "1",
        },
    )
    assert unknown.status_code == 404


# -- in Chromium --------------------------------------------------------------------------------


def test_pay_by_card_then_it_runs(
    page: Page, shop: Shop, edge: StripeEdge, sink: WebhookSink, local_stripe: LocalStripe
) -> None:
    sign_up(page, shop.base, "ada@example.org")
    to_the_price(page, shop)
    expect(page.locator("[data-quote-price]")).to_have_text(PRICE)
    expect(page.locator("[data-quote-to-pay]")).to_have_text(PRICE)
    expect(page.locator("[data-order-button]")).to_have_text("Order and pay →")
    shot(page, "pay-01-price")
    page.click("button:has-text('Order and pay →')")
    page.wait_for_url(re.compile(r"/transfers/[^/]+/pay$"))
    job_id = page.url.rsplit("/", 2)[1]
    expect(page.locator("[data-amount]")).to_have_text(PRICE)
    expect(page.locator("[data-pay-button]")).to_have_text(f"Pay {PRICE}")
    # The card is Stripe's: inputs with no name, outside what our form posts.
    expect(page.locator("#card-element [data-stripe-field]")).to_have_count(3)
    assert page.locator("#card-element input[name]").count() == 0
    type_card(page, card_shown(GOOD_CARD))
    shot(page, "pay-02-card")
    page.click("[data-pay-button]")

    intent_id = receipt_reference(page)
    assert intent_id.startswith("pi_")
    expect(page.locator("[data-receipt-number]")).to_have_text(re.compile(r"^YM-\d{4}-\d{6}$"))
    expect(page.locator("[data-receipt-total]")).to_contain_text("5.00")
    expect(page.locator("[data-card]")).to_contain_text("4242")
    shot(page, "pay-03-receipt")
    assert edge.charges[intent_id] == 1
    assert intent_at_localstripe(local_stripe, intent_id)["status"] == "succeeded"

    pdf_url = page.get_attribute("[data-receipt-pdf]", "href")
    assert pdf_url
    pdf = page.request.get(shop.base + pdf_url)
    assert pdf.ok and pdf.headers["content-type"] == "application/pdf"
    assert pdf.body().startswith(b"%PDF")

    runs_to_the_end(page, shop, job_id)
    expect(page.locator("[data-status-badge]")).to_have_text("Finished")

    assert sorted(ledger_kinds(page, shop)) == ["purchase", "spend"]
    expect(page.locator("[data-balance]")).to_have_attribute("data-balance", "0")
    expect(page.locator("tr[data-payment-row]")).to_have_count(1)
    expect(page.locator("tr[data-payment-row]")).to_have_attribute("data-state", "succeeded")
    # localstripe's webhook comes a second later: applied too, and still one purchase.
    webhook_applied(shop, sink, intent_id)
    assert sorted(ledger_kinds(page, shop)) == ["purchase", "spend"]
    assert page.errors == []  # type: ignore[attr-defined]


def test_a_declined_card_then_another(
    page: Page, shop: Shop, edge: StripeEdge, local_stripe: LocalStripe
) -> None:
    sign_up(page, shop.base, "bo@example.org")
    job_id = order_and_pay(page, shop)
    first_secret = page.get_attribute("#pay-form", "data-secret") or ""
    first_intent = first_secret.split("_secret_")[0]
    type_card(page, card_shown(DECLINED_CARD))
    page.click("[data-pay-button]")
    expect(page.locator("[data-pay-error]")).to_have_text(
        "Your card was declined. Nothing was charged."
    )
    expect(page.locator("[data-pay-button]")).to_have_text("Try another card")
    shot(page, "pay-04-declined")
    assert edge.confirms[first_intent] == 1 and edge.charges[first_intent] == 0

    # Meanwhile the transfer waits, and nothing is copied.
    other = page.context.new_page()
    other.goto(f"{shop.base}/transfers/{job_id}")
    expect(other.locator("[data-status-badge]")).to_have_text("Waiting for payment")
    expect(other.locator("[data-awaiting-payment]")).to_be_visible()
    time.sleep(3)
    other.reload()
    expect(other.locator("[data-status-badge]")).to_have_text("Waiting for payment")
    other.close()
    assert destination_count(shop) == 0

    page.click("[data-pay-button]")  # "Try another card": a new attempt, a new intent
    page.wait_for_load_state()
    expect(page.locator("[data-pay-button]")).to_have_text(f"Pay {PRICE}")
    expect(page.locator("[data-payment-failure]")).to_contain_text("declined")
    second_secret = page.get_attribute("#pay-form", "data-secret") or ""
    assert second_secret and second_secret != first_secret
    assert intent_at_localstripe(local_stripe, first_intent)["status"] == "canceled"
    type_card(page, card_shown(GOOD_CARD))
    page.click("[data-pay-button]")
    intent_id = receipt_reference(page)
    assert intent_id == second_secret.split("_secret_")[0]
    assert edge.charges[intent_id] == 1
    runs_to_the_end(page, shop, job_id)
    assert sorted(ledger_kinds(page, shop)) == ["purchase", "spend"]
    assert page.errors == []  # type: ignore[attr-defined]


def test_a_double_clicked_pay_button_charges_once(
    page: Page, shop: Shop, edge: StripeEdge, sink: WebhookSink, local_stripe: LocalStripe
) -> None:
    sign_up(page, shop.base, "cy@example.org")
    order_and_pay(page, shop)
    intent_id = (page.get_attribute("#pay-form", "data-secret") or "").split("_secret_")[0]
    type_card(page, card_shown(GOOD_CARD))
    page.dblclick("[data-pay-button]")
    assert receipt_reference(page) == intent_id
    assert edge.confirms[intent_id] == 1  # the page sent one confirmation
    assert edge.charges[intent_id] == 1
    charges = intent_at_localstripe(local_stripe, intent_id)["charges"]["data"]
    assert [c["status"] for c in charges] == ["succeeded"]
    webhook_applied(shop, sink, intent_id)
    assert ledger_kinds(page, shop).count("purchase") == 1
    assert page.errors == []  # type: ignore[attr-defined]


def test_a_bundle_then_an_order_paid_by_credits(page: Page, shop: Shop, edge: StripeEdge) -> None:
    sign_up(page, shop.base, "di@example.org")
    page.goto(shop.base + "/billing")
    expect(page.locator("[data-balance]")).to_have_attribute("data-balance", "0")
    expect(page.locator("[data-bundles]")).to_contain_text(f"{BUNDLE_CREDIT} of credits for")
    page.click("[data-buy='1']")
    page.wait_for_url(re.compile(r"/payments/\d+/pay$"))
    expect(page.locator("[data-amount]")).to_have_text(BUNDLE_PRICE)
    type_card(page, card_shown(GOOD_CARD))
    page.click("[data-pay-button]")
    intent_id = receipt_reference(page)
    expect(page.locator("[data-receipt-total]")).to_contain_text("40.00")
    expect(page.locator("[data-receipt-lines]")).to_contain_text(f"Credit added: {BUNDLE_CREDIT}")
    assert edge.charges[intent_id] == 1
    assert ledger_kinds(page, shop) == ["purchase"]
    expect(page.locator("[data-balance]")).to_have_attribute("data-balance", "5000")

    to_the_price(page, shop)
    expect(page.locator("[data-quote-price]")).to_have_text(PRICE)
    expect(page.locator("[data-quote-credits]")).to_have_text(f"-{PRICE}")
    expect(page.locator("[data-quote-to-pay]")).to_have_text("$0.00")
    expect(page.locator("[data-quote]")).to_contain_text("your credits cover it")
    expect(page.locator("[data-order-button]")).to_have_text("Order")
    shot(page, "pay-05-covered")
    confirms = sum(edge.confirms.values())
    page.click("[data-order-button]")
    page.wait_for_url(re.compile(r"/transfers/[0-9a-f-]+$"))
    job_id = page.url.rsplit("/", 1)[1]
    runs_to_the_end(page, shop, job_id)
    assert sum(edge.confirms.values()) == confirms  # no card this time
    assert ledger_kinds(page, shop) == ["spend", "purchase"]
    expect(page.locator("[data-balance]")).to_have_attribute("data-balance", "4500")
    assert page.errors == []  # type: ignore[attr-defined]
