"""Stripe's edge for the browser tests: what a payment page talks to at Stripe, on one
local origin, in front of localstripe (tests/stripekit.py).

js.stripe.com and api.stripe.com are not reachable here, and localstripe's own fake
Stripe.js cannot pay with a card typed into its Element (docs/billing.md).  So this
small threaded HTTP server plays both, faithfully to what a browser sees:

- ``GET /v3/``: a Stripe.js double (``stripe_js_double.js``): ``Stripe(pk)``,
  ``elements().create("card").mount(...)`` (plain inputs marked
  ``data-stripe-field``, never named) and ``confirmCardPayment(secret,
  {payment_method: {card}})``, which posts to the edge as Stripe.js posts to Stripe.
- ``POST /v1/payment_intents/<pi>/confirm`` with ``key``, ``client_secret`` and
  ``payment_method_data[...]`` (form-encoded): the key must be the publishable key and
  the secret the intent's (read back from localstripe with the secret key); then, with
  the secret key, a PaymentMethod is made at localstripe, attached to the intent and
  the intent confirmed.  Answers as Stripe does: 200 and the intent; 402 and a
  ``card_error`` for a decline; 401 for an unknown key (Stripe's "Invalid API Key");
  404 for an unknown intent; 400 for a wrong client secret; 400
  ``payment_intent_unexpected_state`` for an intent that already succeeded (or was
  cancelled), so a second confirmation never charges twice.  Confirmations of one
  intent are taken one at a time, as Stripe locks an intent while it confirms it.
- CORS: the page's origin is the service's, so every answer carries
  ``Access-Control-Allow-Origin: *`` and an ``OPTIONS`` preflight is answered.

Counters for the tests: :attr:`StripeEdge.confirms` (every confirmation request
received, by intent) and :attr:`StripeEdge.charges` (those that charged, by intent).

Point the service at it with ``YIPPIEMOVE_STRIPE_JS_URL=edge.js_url``: the payment
page's CSP allows that origin for scripts, frames and calls, and the API is there too.

A limitation of localstripe (1.15.10) that shows through: an intent whose charge was
declined cannot be confirmed again (it stays ``requires_payment_method``), where Stripe
would take another card.  The service never does that: a declined attempt's intent is
cancelled and a new one made (service/billing.py ``_next_attempt``).
"""

from __future__ import annotations

import json
import re
import threading
from collections import Counter
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

import httpx

from tests.stripekit import LocalStripe, _Quiet, _Server

__all__ = ["StripeEdge"]

JS_FILE = Path(__file__).with_name("stripe_js_double.js")
_CONFIRM = re.compile(r"/v1/payment_intents/(pi_[A-Za-z0-9]+)/confirm")
_CORS = {
    "Access-Control-Allow-Origin": "*",
    "Access-Control-Allow-Methods": "GET, POST, OPTIONS",
    "Access-Control-Allow-Headers": "Content-Type, Authorization, Stripe-Version",
    "Access-Control-Max-Age": "600",
}

Answer = tuple[int, dict[str, Any]]


def _error(status: int, message: str, **fields: Any) -> Answer:
    return status, {"error": {"type": "invalid_request_error", "message": message, **fields}}


class StripeEdge(_Server):
    """Stripe.js and Stripe's confirm endpoint, on one origin, over ``stripe``."""

    def __init__(self, stripe: LocalStripe) -> None:
        self.stripe = stripe
        self.confirms: Counter[str] = Counter()
        self.charges: Counter[str] = Counter()
        self._lock = threading.Lock()
        self._intent_locks: dict[str, threading.Lock] = {}
        self._js = JS_FILE.read_bytes()
        super().__init__(_EdgeHandler)

    @property
    def js_url(self) -> str:
        """Where the payment page loads Stripe.js from (``YIPPIEMOVE_STRIPE_JS_URL``)."""
        return self.url + "/v3/"

    def __enter__(self) -> StripeEdge:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _intent_lock(self, intent_id: str) -> threading.Lock:
        with self._lock:
            return self._intent_locks.setdefault(intent_id, threading.Lock())

    def confirm(self, intent_id: str, form: dict[str, str]) -> Answer:
        """``POST /v1/payment_intents/<id>/confirm`` as Stripe answers a publishable key."""
        with self._lock:
            self.confirms[intent_id] += 1
        if form.get("key") != self.stripe.publishable_key:
            return _error(401, "Invalid API Key provided.")
        card = {
            name: form.get(f"payment_method_data[card][{name}]", "")
            for name in ("number", "exp_month", "exp_year", "cvc")
        }
        if form.get("payment_method_data[type]") != "card" or not all(card.values()):
            return _error(
                400, "Missing required param: payment_method_data.", param="payment_method_data"
            )
        if len(card["exp_year"]) == 2:  # Stripe takes a two-digit year
            card["exp_year"] = "20" + card["exp_year"]
        with (
            self._intent_lock(intent_id),
            httpx.Client(
                base_url=self.stripe.api_base,
                auth=(self.stripe.secret_key, ""),
                timeout=15.0,
                trust_env=False,
            ) as http,
        ):
            found = http.get(f"/v1/payment_intents/{intent_id}")
            if found.status_code == 404:
                return _error(
                    404, f"No such payment_intent: '{intent_id}'", code="resource_missing"
                )
            found.raise_for_status()
            intent = found.json()
            if form.get("client_secret") != intent.get("client_secret"):
                return _error(
                    400,
                    "The client_secret provided does not match the client_secret associated "
                    "with the PaymentIntent.",
                    param="client_secret",
                )
            if intent["status"] in ("succeeded", "canceled", "processing", "requires_capture"):
                return _error(
                    400,
                    "You cannot confirm this PaymentIntent because it has a status of "
                    f"{intent['status']}.",
                    code="payment_intent_unexpected_state",
                    payment_intent=intent,
                )
            method = http.post(
                "/v1/payment_methods",
                data={"type": "card", **{f"card[{k}]": v for k, v in card.items()}},
            )
            if method.status_code != 200:
                return self._card_error(http, intent_id, method)
            attach = http.post(
                f"/v1/payment_intents/{intent_id}", data={"payment_method": method.json()["id"]}
            )
            if attach.status_code != 200:
                return self._card_error(http, intent_id, attach)
            done = http.post(f"/v1/payment_intents/{intent_id}/confirm")
            if done.status_code != 200:
                return self._card_error(http, intent_id, done)
            intent = done.json()
            if intent.get("status") == "succeeded":
                with self._lock:
                    self.charges[intent_id] += 1
            return 200, intent

    def _card_error(self, http: httpx.Client, intent_id: str, answer: httpx.Response) -> Answer:
        """localstripe's refusal as Stripe words it to Stripe.js: a decline is a
        ``card_error`` (402) with the intent as it is now."""
        try:
            error = dict(answer.json().get("error") or {})
        except ValueError:
            error = {}
        error.setdefault("message", "The payment failed.")
        status = answer.status_code
        if status == 402:
            error["type"] = "card_error"
            error.setdefault("code", "card_declined")
            if error["code"] == "card_declined":
                error.setdefault("decline_code", "generic_decline")
            now = http.get(f"/v1/payment_intents/{intent_id}")
            if now.status_code == 200:
                error["payment_intent"] = now.json()
        return status, {"error": error}


class _EdgeHandler(_Quiet):
    def _send(self, status: int, content_type: str, body: bytes) -> None:
        self._answer(status, {**_CORS, "Content-Type": content_type}, body)

    def _json(self, answer: Answer) -> None:
        status, body = answer
        self._send(status, "application/json", json.dumps(body).encode())

    def do_OPTIONS(self) -> None:
        self._answer(204, _CORS, b"")

    def do_GET(self) -> None:
        edge: StripeEdge = self.server.owner  # type: ignore[attr-defined]
        if self.path.split("?", 1)[0] in ("/v3", "/v3/"):
            self._send(200, "application/javascript; charset=utf-8", edge._js)
        else:
            self._json(_error(404, f"Unrecognized request URL (GET: {self.path})."))

    def do_POST(self) -> None:
        edge: StripeEdge = self.server.owner  # type: ignore[attr-defined]
        body = self._body()
        m = _CONFIRM.fullmatch(self.path)
        if m is None:
            self._json(_error(404, f"Unrecognized request URL (POST: {self.path})."))
            return
        if not self.headers.get("Content-Type", "").startswith("application/x-www-form-urlencoded"):
            self._json(_error(400, "Send the parameters form-encoded."))
            return
        form = dict(parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True))
        try:
            answer = edge.confirm(m.group(1), form)
        except httpx.HTTPError as exc:
            answer = 500, {"error": {"type": "api_error", "message": f"localstripe: {exc}"}}
        self._json(answer)
