"""service/stripe_gateway.py against a real local Stripe (localstripe, tests/stripekit.py).

No mocks: payments go through localstripe; a recording proxy sits between the gateway
and localstripe where a test must see the requests (the Idempotency-Key) or have Stripe
answer something localstripe never does (a 503, a message that echoes the key); events
localstripe cannot send (disputes) are built here and signed with ``stripekit.sign``.
"""

from __future__ import annotations

import json
import logging
import socket
import time
from urllib.parse import parse_qs

import httpx
import pytest
import stripe

from tests.stripekit import (
    DECLINED_CARD,
    THREE_D_SECURE_CARD,
    LocalStripe,
    Recorded,
    RecordingProxy,
    WebhookSink,
    event_body,
    free_port,
    local_stripe,
    sign,
)
from yippiemove.service.stripe_gateway import (
    TOLERANCE,
    BadSignature,
    Event,
    GatewayError,
    Intent,
    StripeGateway,
)

__all__ = ["local_stripe"]  # the fixture, used below

WEBHOOK_SECRET = "whsec_Marker7d1f0c9e"


def create(gateway: StripeGateway, amount: int = 1500, key: str = "order-1:1") -> Intent:
    return gateway.create_intent(
        amount=amount,
        currency="usd",
        idempotency_key=key,
        metadata={"order": "1", "attempt": "1"},
        description="YippieMove order 1",
    )


def form(rec: Recorded) -> dict[str, list[str]]:
    return parse_qs(rec.body.decode())


# -- payments ----------------------------------------------------------------------------


def test_a_paid_intent_reads_back_succeeded_with_its_card(local_stripe: LocalStripe) -> None:
    gateway = local_stripe.gateway(WEBHOOK_SECRET)
    intent = create(gateway, amount=1500)
    assert intent.id.startswith("pi_")
    assert intent.client_secret.startswith(intent.id + "_secret_")
    assert (intent.status, intent.amount, intent.currency) == (
        "requires_payment_method",
        1500,
        "usd",
    )
    assert intent.failure is None and intent.card is None
    stored = httpx.get(
        f"{local_stripe.api_base}/v1/payment_intents/{intent.id}",
        auth=(local_stripe.secret_key, ""),
    ).json()
    assert stored["metadata"] == {"order": "1", "attempt": "1"}

    assert local_stripe.pay(intent.client_secret) == "succeeded"

    paid = gateway.retrieve_intent(intent.id)
    assert (paid.id, paid.status, paid.amount, paid.currency) == (
        intent.id,
        "succeeded",
        1500,
        "usd",
    )
    assert paid.card == "visa 4242"
    assert paid.failure is None


def test_a_declined_card_leaves_the_intent_waiting_and_names_the_decline(
    local_stripe: LocalStripe,
) -> None:
    gateway = local_stripe.gateway(WEBHOOK_SECRET)
    intent = create(gateway, amount=700)
    assert local_stripe.pay(intent.id, DECLINED_CARD) == "requires_payment_method"
    seen = gateway.retrieve_intent(intent.id)
    assert seen.status == "requires_payment_method"
    assert seen.failure == "Your card was declined."
    assert seen.card is None


def test_only_a_3d_secure_step_is_what_the_fake_stripe_js_can_do(local_stripe: LocalStripe) -> None:
    """What localstripe's fake Stripe.js ``confirmCardPayment`` sends (``_authenticate``
    with the publishable key) is refused for an intent with no card yet: it cannot take
    the card from its Element.  It passes the 3D Secure step of an intent whose 3D Secure
    card was attached and confirmed on the server (what ``pay`` does)."""
    gateway = local_stripe.gateway(WEBHOOK_SECRET)
    fresh = create(gateway, amount=300)
    answer = httpx.post(
        f"{local_stripe.api_base}/v1/payment_intents/{fresh.id}/_authenticate?success=true",
        json={"key": local_stripe.publishable_key, "client_secret": fresh.client_secret},
    )
    assert answer.status_code == 400
    assert gateway.retrieve_intent(fresh.id).status == "requires_payment_method"

    secured = create(gateway, amount=400)
    assert local_stripe.pay(secured.client_secret, THREE_D_SECURE_CARD) == "succeeded"
    assert gateway.retrieve_intent(secured.id).card == "visa 3155"


def test_the_idempotency_key_is_sent_and_the_same_on_the_librarys_retry(
    local_stripe: LocalStripe,
) -> None:
    """localstripe ignores Idempotency-Key, so the proof is the header as it arrived: the
    proxy answers the first create with a 503 (Stripe-Should-Retry), the library tries
    again, and both attempts carry our key."""
    refused: list[Recorded] = []

    def first_create_fails(rec: Recorded) -> tuple[int, dict[str, str], bytes] | None:
        if rec.method == "POST" and rec.path == "/v1/payment_intents" and not refused:
            refused.append(rec)
            body = {"error": {"type": "api_error", "message": "try again"}}
            headers = {"Content-Type": "application/json", "Stripe-Should-Retry": "true"}
            return 503, headers, json.dumps(body).encode()
        return None

    with RecordingProxy(local_stripe.api_base, first_create_fails) as proxy:
        gateway = local_stripe.gateway(WEBHOOK_SECRET, api_base=proxy.url)
        intent = create(gateway, key="order-7:attempt-1")
        again = create(gateway, key="order-7:attempt-1")  # our own retry, same key
        gateway.retrieve_intent(intent.id)

    creates = [r for r in proxy.requests if r.method == "POST" and r.path == "/v1/payment_intents"]
    assert len(creates) == 3  # the refused one, the library's retry, our retry
    assert [r.headers.get("idempotency-key") for r in creates] == ["order-7:attempt-1"] * 3
    assert intent.status == again.status == "requires_payment_method"
    # What was asked of Stripe: a card intent with our metadata, no description (off).
    sent = form(creates[1])
    assert sent["payment_method_types[0]"] == ["card"]
    assert sent["amount"] == ["1500"] and sent["currency"] == ["usd"]
    assert sent["metadata[order]"] == ["1"] and sent["metadata[attempt]"] == ["1"]
    assert "description" not in sent
    reads = [r for r in proxy.requests if r.method == "GET"]
    assert len(reads) == 1 and "idempotency-key" not in reads[0].headers


def test_the_description_is_sent_unless_switched_off(local_stripe: LocalStripe) -> None:
    """With ``send_description`` on (real Stripe), the description is sent; localstripe
    refuses it, which is why the tests switch it off."""
    with RecordingProxy(local_stripe.api_base) as proxy:
        gateway = local_stripe.gateway(WEBHOOK_SECRET, api_base=proxy.url, send_description=True)
        with pytest.raises(GatewayError) as caught:
            create(gateway)
    assert form(proxy.requests[0])["description"] == ["YippieMove order 1"]
    assert caught.value.http_status == 400 and not caught.value.transient
    assert "Unexpected description" in str(caught.value)


# -- webhooks ----------------------------------------------------------------------------


def test_a_real_webhook_parses_and_every_forgery_is_refused_with_its_reason(
    local_stripe: LocalStripe,
) -> None:
    gateway = local_stripe.gateway(WEBHOOK_SECRET)
    with WebhookSink() as sink:
        local_stripe.add_webhook(
            sink.url + "/stripe/webhook", WEBHOOK_SECRET, ["payment_intent.succeeded"]
        )
        intent = create(gateway, amount=2500)
        assert local_stripe.pay(intent.id) == "succeeded"
        delivery = sink.wait_for("payment_intent.succeeded", intent.id)

    body, header = delivery.body, delivery.signature
    assert header is not None
    event = gateway.parse_event(body, header)
    assert isinstance(event, Event)
    assert event.id.startswith("evt_") and event.type == "payment_intent.succeeded"
    assert event.intent_id == intent.id
    assert event.intent is not None and event.intent.status == "succeeded"
    assert event.amount == 2500 and event.failure is None and event.status == "succeeded"
    # Our own signing agrees with localstripe's, byte for byte.
    t = int(header.split(",")[0].removeprefix("t="))
    assert sign(body, WEBHOOK_SECRET, t) == header

    def refused(payload: bytes, sig: str | None, g: StripeGateway = gateway) -> BadSignature:
        with pytest.raises(BadSignature) as caught:
            g.parse_event(payload, sig)
        assert WEBHOOK_SECRET not in str(caught.value)
        assert not caught.value.transient
        return caught.value

    tampered = body.replace(b'"amount": 2500', b'"amount": 25000', 1)
    assert tampered != body
    e = refused(tampered, header)
    assert e.reason == "mismatch" and "does not match" in str(e)

    other = local_stripe.gateway("whsec_SomeoneElses")
    e = refused(body, header, other)
    assert e.reason == "mismatch"

    for missing in (None, "", "  "):
        e = refused(body, missing)
        assert e.reason == "missing" and "no Stripe-Signature header" in str(e)

    for garbage in ("garbage", "t=notanumber,v1=abc", f"t={t}", f"t={t},v0=abc"):
        assert refused(body, garbage).reason == "malformed"

    now = int(time.time())
    e = refused(body, sign(body, WEBHOOK_SECRET, now - TOLERANCE - 5))
    assert e.reason == "too_old" and "tolerance of 300 s" in str(e)
    assert TOLERANCE == 300
    # Just inside the tolerance: taken (so the refusal above was the age, not the re-signing).
    assert (
        gateway.parse_event(body, sign(body, WEBHOOK_SECRET, now - TOLERANCE + 20)).id == event.id
    )

    for not_json in (b"<html>nope</html>", b"[1, 2]", b'{"no": "id"}', b"\xff\xfe"):
        e = refused(not_json, sign(not_json, WEBHOOK_SECRET))
        assert e.reason == "not_json"


def test_a_declined_payment_webhook_carries_the_failure(local_stripe: LocalStripe) -> None:
    gateway = local_stripe.gateway(WEBHOOK_SECRET)
    with WebhookSink() as sink:
        local_stripe.add_webhook(sink.url, WEBHOOK_SECRET, ["payment_intent.payment_failed"])
        intent = create(gateway, amount=800)
        local_stripe.pay(intent.id, DECLINED_CARD)
        delivery = sink.wait_for("payment_intent.payment_failed", intent.id)
    event = gateway.parse_event(delivery.body, delivery.signature)
    assert (event.type, event.intent_id) == ("payment_intent.payment_failed", intent.id)
    assert event.failure == "Your card was declined."
    assert event.status == "requires_payment_method"


def dispute(intent_id: str | None, status: str = "needs_response") -> dict[str, object]:
    return {
        "id": "dp_1Mark",
        "object": "dispute",
        "amount": 1500,
        "currency": "usd",
        "charge": "ch_1Mark",
        "payment_intent": intent_id,
        "reason": "fraudulent",
        "status": status,
    }


def test_events_localstripe_never_sends_are_built_signed_and_parsed() -> None:
    gateway = StripeGateway("sk_test_unused", WEBHOOK_SECRET, api_base="http://127.0.0.1:9")

    def parse(event_type: str, obj: dict[str, object]) -> Event:
        body = event_body(event_type, obj)
        return gateway.parse_event(body, sign(body, WEBHOOK_SECRET))

    opened = parse("charge.dispute.created", dispute("pi_1Mark"))
    assert opened.type == "charge.dispute.created"
    assert (opened.intent_id, opened.charge_id, opened.amount) == ("pi_1Mark", "ch_1Mark", 1500)
    assert (opened.status, opened.failure, opened.intent) == ("needs_response", "fraudulent", None)

    lost = parse("charge.dispute.closed", dispute(None, status="lost"))
    assert lost.type == "charge.dispute.closed" and lost.status == "lost"
    assert lost.intent_id is None and lost.charge_id == "ch_1Mark"

    refunded = parse(
        "charge.refunded",
        {
            "id": "ch_2Mark",
            "object": "charge",
            "amount": 1500,
            "amount_refunded": 500,
            "payment_intent": "pi_2Mark",
            "status": "succeeded",
        },
    )
    assert (refunded.intent_id, refunded.charge_id, refunded.amount) == (
        "pi_2Mark",
        "ch_2Mark",
        500,
    )

    canceled = parse(
        "payment_intent.canceled",
        {"id": "pi_3Mark", "object": "payment_intent", "amount": 900, "currency": "usd",
         "status": "canceled", "client_secret": "pi_3Mark_secret_abc"},
    )  # fmt: skip
    assert canceled.intent_id == "pi_3Mark" and canceled.intent is not None
    assert canceled.intent.status == "canceled" and canceled.amount == 900

    unknown = parse("customer.created", {"id": "cus_1", "object": "customer"})
    assert unknown.type == "customer.created"
    assert (unknown.intent_id, unknown.intent, unknown.failure, unknown.amount) == (None,) * 4
    assert (unknown.charge_id, unknown.status) == (None, None)

    # Our signing is Stripe's: the library's own test helper computes the same header.
    body, t = b'{"id": "evt_1", "type": "x"}', 1_700_000_000
    assert sign(body, WEBHOOK_SECRET, t) == stripe.WebhookSignature.generate_signature_header(
        body.decode(), WEBHOOK_SECRET, t
    )


# -- errors ------------------------------------------------------------------------------


def test_nobody_listening_is_transient(local_stripe: LocalStripe) -> None:
    gateway = local_stripe.gateway(
        WEBHOOK_SECRET, api_base=f"http://127.0.0.1:{free_port()}", max_network_retries=0
    )
    with pytest.raises(GatewayError) as caught:
        create(gateway)
    assert caught.value.transient and caught.value.http_status is None
    assert "APIConnectionError" in str(caught.value)


def test_a_stopped_stripe_is_transient() -> None:
    with LocalStripe() as gone:
        gateway = gone.gateway(WEBHOOK_SECRET, max_network_retries=1)
        intent = create(gateway)
    with pytest.raises(GatewayError) as caught:
        gateway.retrieve_intent(intent.id)
    assert caught.value.transient


def test_a_silent_stripe_times_out_as_transient(local_stripe: LocalStripe) -> None:
    with socket.socket() as listener:  # accepts connections (the backlog), never answers
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)
        port = listener.getsockname()[1]
        gateway = local_stripe.gateway(
            WEBHOOK_SECRET, api_base=f"http://127.0.0.1:{port}", timeout=0.5, max_network_retries=0
        )
        started = time.monotonic()
        with pytest.raises(GatewayError) as caught:
            gateway.retrieve_intent("pi_1Mark")
    assert caught.value.transient
    assert time.monotonic() - started < 5


@pytest.mark.parametrize("status", [500, 502, 429])
def test_server_errors_and_rate_limits_are_transient(
    local_stripe: LocalStripe, status: int
) -> None:
    def answer(rec: Recorded) -> tuple[int, dict[str, str], bytes]:
        body = {"error": {"type": "api_error", "message": f"status {status}", "code": "x_busy"}}
        return status, {"Content-Type": "application/json"}, json.dumps(body).encode()

    with RecordingProxy(local_stripe.api_base, answer) as proxy:
        gateway = local_stripe.gateway(WEBHOOK_SECRET, api_base=proxy.url, max_network_retries=0)
        with pytest.raises(GatewayError) as caught:
            gateway.retrieve_intent("pi_1Mark")
    assert caught.value.transient and caught.value.http_status == status
    assert f"status {status}" in str(caught.value)


def test_invalid_requests_are_not_transient(local_stripe: LocalStripe) -> None:
    gateway = local_stripe.gateway(WEBHOOK_SECRET)
    with pytest.raises(GatewayError) as negative:
        create(gateway, amount=-5)
    assert not negative.value.transient and negative.value.http_status == 400
    assert "InvalidRequestError" in str(negative.value)

    with pytest.raises(GatewayError) as missing:
        gateway.retrieve_intent("pi_NoSuchIntent")
    assert not missing.value.transient and missing.value.http_status == 404

    wrong_key = StripeGateway("rk_wrong", WEBHOOK_SECRET, api_base=local_stripe.api_base)
    with pytest.raises(GatewayError) as unauthorized:
        wrong_key.retrieve_intent("pi_NoSuchIntent")
    assert not unauthorized.value.transient and unauthorized.value.http_status == 401


# -- secrets -----------------------------------------------------------------------------


def test_no_secret_in_any_repr_str_error_or_debug_log(
    local_stripe: LocalStripe, caplog: pytest.LogCaptureFixture
) -> None:
    key = local_stripe.secret_key
    gateway = local_stripe.gateway(WEBHOOK_SECRET)
    with caplog.at_level(logging.DEBUG):
        intent = create(gateway)
        local_stripe.pay(intent.id)
        paid = gateway.retrieve_intent(intent.id)
    secrets = [key, WEBHOOK_SECRET, intent.client_secret]
    assert intent.client_secret and paid.client_secret == intent.client_secret

    # Stripe's own messages may name a key ("Invalid API Key provided: sk_test_...") or a
    # client secret: the proxy answers such messages, with the key the gateway sent.
    def echo(rec: Recorded) -> tuple[int, dict[str, str], bytes]:
        sent_key = rec.headers["authorization"].removeprefix("Bearer ")
        assert sent_key == key
        message = f"Invalid API Key provided: {sent_key}; see {intent.client_secret}"
        body = {"error": {"type": "invalid_request_error", "message": message}}
        return 401, {"Content-Type": "application/json"}, json.dumps(body).encode()

    errors: list[GatewayError] = []
    with RecordingProxy(local_stripe.api_base, echo) as proxy:
        with pytest.raises(GatewayError) as echoed:
            local_stripe.gateway(WEBHOOK_SECRET, api_base=proxy.url).retrieve_intent(intent.id)
    errors.append(echoed.value)
    assert "Invalid API Key provided: [hidden]; see [hidden]" in str(echoed.value)
    with pytest.raises(GatewayError) as invalid:
        create(gateway, amount=-1)
    errors.append(invalid.value)
    with pytest.raises(GatewayError) as network:
        local_stripe.gateway(
            WEBHOOK_SECRET, api_base=f"http://127.0.0.1:{free_port()}", max_network_retries=0
        ).retrieve_intent(intent.id)
    errors.append(network.value)
    with pytest.raises(BadSignature) as forged:
        gateway.parse_event(b"{}", "t=1,v1=00")
    errors.append(forged.value)

    shown = [str(gateway), repr(gateway), repr(vars(gateway)), str(intent), repr(paid)]
    shown += [f"{e!s} {e!r} {e.args!r}" for e in errors]
    for text in shown:
        for secret in secrets:
            assert secret not in text, text
    # The library's debug records hold whole response bodies: dropped.
    logged = caplog.text + repr([r.__dict__ for r in caplog.records])
    assert intent.id in logged  # the stripe logger did log (its info records)
    for secret in secrets:
        assert secret not in logged
