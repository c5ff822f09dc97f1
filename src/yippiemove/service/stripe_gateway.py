"""Our only seam to Stripe (issue 20, docs/billing.md, "Stripe gateway").

Everything the billing core needs from Stripe goes through :class:`StripeGateway`:
creating a PaymentIntent for an order, reading it back, and checking and reading a
webhook's event.  Answers come back as small frozen dataclasses (:class:`Intent`,
:class:`Event`), never as the library's objects, and every failure as a
:class:`GatewayError` that says whether trying again may help (``transient``).

- One ``stripe.StripeClient`` per gateway, never the library's module-wide key: several
  services with different keys (and local Stripes) live in one test process.
- Secrets (the secret key, the webhook secret, an intent's client secret) are never in a
  repr, a str or an error message: Stripe's own messages are scrubbed of anything shaped
  like a key before they are put in ours, and the library's debug log records (they
  hold whole response bodies, client secrets included) are dropped.
- localstripe (the tests' Stripe) refuses a PaymentIntent's ``description``:
  ``send_description=False`` leaves it out.
"""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import stripe

__all__ = [
    "BadSignature",
    "Event",
    "GatewayError",
    "Intent",
    "StripeGateway",
]

TOLERANCE = 300  # seconds: a webhook's signed timestamp may be this old (Stripe's default)

# Anything shaped like a Stripe secret: API keys (secret, restricted, publishable: the
# publishable one is not secret, but a message never needs it), webhook secrets, and an
# intent's or a setup's client secret.
_SECRET_SHAPES = re.compile(
    r"\b(?:sk|rk|pk)_(?:test|live)_[A-Za-z0-9_*]+"
    r"|\bwhsec_[A-Za-z0-9_*]+"
    r"|\b(?:pi|seti)_[A-Za-z0-9]+_secret_[A-Za-z0-9*]+"
)


class _DropStripeDebug(logging.Filter):
    """Drops the ``stripe`` logger's debug records: they carry whole request and response
    bodies ("API response body"), and a PaymentIntent's body holds its client secret."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno > logging.DEBUG


def _install_log_filter() -> None:
    logger = logging.getLogger("stripe")
    if not any(isinstance(f, _DropStripeDebug) for f in logger.filters):
        logger.addFilter(_DropStripeDebug())


_install_log_filter()


class GatewayError(Exception):
    """Stripe said no, or could not be reached.

    ``transient``: trying the same call again later may succeed (network errors,
    timeouts, rate limits, Stripe's 5xx, lock conflicts); False for everything that
    will fail again the same way (a declined card, an invalid request, a bad key).
    ``code`` is Stripe's error code when it gave one (``card_declined``,
    ``resource_missing``...), ``http_status`` the HTTP status when there was an answer.
    """

    def __init__(
        self,
        message: str,
        *,
        transient: bool,
        code: str | None = None,
        http_status: int | None = None,
    ) -> None:
        super().__init__(message)
        self.transient = transient
        self.code = code
        self.http_status = http_status


class BadSignature(GatewayError):
    """A webhook's request was refused: ``reason`` is one of ``missing`` (no
    Stripe-Signature header), ``malformed`` (the header cannot be read), ``mismatch`` (no
    v1 signature matches the body), ``too_old`` (signed longer ago than the tolerance),
    ``not_json`` (signed, but the body is not a JSON event)."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message, transient=False, code=reason)
        self.reason = reason


@dataclass(frozen=True)
class Intent:
    """A PaymentIntent as we use it.  ``amount`` is in minor units; ``failure`` is the
    last payment error's message; ``card`` is e.g. ``"visa 4242"`` once it succeeded and
    Stripe said with which card."""

    id: str
    client_secret: str = field(repr=False)
    status: str
    amount: int
    currency: str
    failure: str | None
    card: str | None


@dataclass(frozen=True)
class Event:
    """A webhook's event, normalised.

    - The object is a PaymentIntent (``payment_intent.*``): ``intent`` and
      ``intent_id``, ``amount``, ``status`` (the intent's), ``failure`` (its last payment
      error).
    - A Charge (``charge.*``): ``charge_id``, ``intent_id`` (its payment_intent, when
      set), ``status``, ``failure`` (its failure message); ``amount`` is the refunded
      amount for ``charge.refunded``, else the charge's.
    - A Dispute (``charge.dispute.*``): ``intent_id`` (its payment_intent, when set),
      ``charge_id``, ``amount`` (disputed), ``status`` (``needs_response``, ``won``,
      ``lost``...), ``failure`` (its reason: ``fraudulent``...).
    - Anything else: the id, type and time only.
    """

    id: str
    type: str
    intent_id: str | None
    intent: Intent | None
    failure: str | None
    amount: int | None
    charge_id: str | None = None
    status: str | None = None
    created: int | None = None


class _Hidden:
    """Holds secrets out of sight: its repr is never its value (a gateway's ``vars()``)."""

    __slots__ = ("value",)

    def __init__(self, value: tuple[str, str]) -> None:
        self.value = value

    def __repr__(self) -> str:
        return "<hidden>"


class StripeGateway:
    """Stripe, through one ``stripe.StripeClient`` of our own."""

    def __init__(
        self,
        secret_key: str,
        webhook_secret: str,
        *,
        api_base: str | None = None,
        timeout: float = 20.0,
        max_network_retries: int = 2,
        send_description: bool = True,
    ) -> None:
        if not secret_key:
            raise ValueError("StripeGateway: the secret key is empty")
        if not webhook_secret:
            raise ValueError("StripeGateway: the webhook secret is empty")
        self._secrets = _Hidden((secret_key, webhook_secret))
        self._api_base = api_base.rstrip("/") if api_base else None
        self._send_description = send_description
        self._client = stripe.StripeClient(
            secret_key,
            base_addresses={"api": self._api_base} if self._api_base else None,
            max_network_retries=max_network_retries,
            http_client=stripe.RequestsClient(timeout=timeout),
        )

    def __repr__(self) -> str:
        return f"StripeGateway(api_base={self._api_base or 'stripe'!r})"

    __str__ = __repr__

    # -- PaymentIntents --------------------------------------------------------------

    def create_intent(
        self,
        *,
        amount: int,
        currency: str,
        idempotency_key: str,
        metadata: dict[str, str],
        description: str,
    ) -> Intent:
        """A new PaymentIntent for a card, to be confirmed in the browser.  The
        ``idempotency_key`` goes as the request's Idempotency-Key (also on the library's
        own retries): with real Stripe, the same key again answers the same intent."""
        if not idempotency_key:
            raise ValueError("create_intent: the idempotency key is empty")
        params: dict[str, Any] = {
            "amount": amount,
            "currency": currency,
            "payment_method_types": ["card"],
            "metadata": dict(metadata),
        }
        if self._send_description:
            params["description"] = description
        obj = self._call(
            "create a PaymentIntent",
            lambda: self._client.v1.payment_intents.create(
                params=params,  # type: ignore[arg-type]
                options={"idempotency_key": idempotency_key},
            ),
        )
        return self._intent(obj)

    def retrieve_intent(self, intent_id: str) -> Intent:
        """The PaymentIntent as Stripe has it now (with its charge and payment method, for
        the card's brand and last four digits)."""
        if not intent_id:
            raise ValueError("retrieve_intent: the intent id is empty")
        obj = self._call(
            "read a PaymentIntent",
            lambda: self._client.v1.payment_intents.retrieve(
                intent_id, params={"expand": ["latest_charge", "payment_method"]}
            ),
        )
        return self._intent(obj)

    # -- webhooks --------------------------------------------------------------------

    def cancel_intent(self, intent_id: str) -> Intent:
        """Cancel a PaymentIntent that will not be used again (a declined attempt, before
        the next one is made): nobody can confirm it after this, not even a page left
        open with its client secret."""
        if not intent_id:
            raise ValueError("cancel_intent: the intent id is empty")
        obj = self._call(
            "cancel a PaymentIntent",
            lambda: self._client.v1.payment_intents.cancel(intent_id),
        )
        return self._intent(obj)

    def parse_event(self, payload: bytes, signature_header: str | None) -> Event:
        """The event of a webhook's request, once its Stripe-Signature is checked (the
        library's check of the v1 HMAC, then the timestamp against :data:`TOLERANCE`).
        Refused with :class:`BadSignature` (its ``reason`` says why)."""
        if not signature_header or not signature_header.strip():
            raise BadSignature("missing", "webhook refused: no Stripe-Signature header")
        timestamp = _signed_timestamp(signature_header)
        if timestamp is None:
            raise BadSignature(
                "malformed", "webhook refused: the Stripe-Signature header has no t= and v1="
            )
        try:
            text = payload.decode("utf-8")
        except UnicodeDecodeError:
            raise BadSignature("not_json", "webhook refused: the body is not UTF-8") from None
        try:
            # The signature only: the age is checked below, so that each refusal says why.
            stripe.WebhookSignature.verify_header(
                text, signature_header, self._secrets.value[1], tolerance=None
            )
        except stripe.SignatureVerificationError:
            raise BadSignature(
                "mismatch", "webhook refused: the signature does not match the body"
            ) from None
        age = time.time() - timestamp
        if age > TOLERANCE:
            raise BadSignature(
                "too_old",
                f"webhook refused: signed {int(age)} s ago, more than the tolerance "
                f"of {TOLERANCE} s",
            )
        try:
            data = json.loads(text)
        except ValueError:
            raise BadSignature("not_json", "webhook refused: the body is not JSON") from None
        if (
            not isinstance(data, dict)
            or not isinstance(data.get("id"), str)
            or not isinstance(data.get("type"), str)
        ):
            raise BadSignature(
                "not_json", "webhook refused: the body is not an event (no id or type)"
            )
        return _event(data)

    # -- inside ----------------------------------------------------------------------

    def _call(self, what: str, call: Any) -> Any:
        try:
            return call()
        except stripe.StripeError as e:
            raise self._error(what, e) from None

    def _error(self, what: str, e: stripe.StripeError) -> GatewayError:
        status = e.http_status
        code = e.code
        # The library's classes: APIConnectionError (no answer, timeout), RateLimitError
        # (429), APIError (5xx, 409 "in use", an answer it cannot read).  The others
        # (InvalidRequestError, CardError, AuthenticationError, PermissionError,
        # IdempotencyError...) fail again the same way.
        transient = isinstance(
            e, stripe.APIConnectionError | stripe.RateLimitError | stripe.APIError
        )
        kind = type(e).__name__
        parts = [f"could not {what}: Stripe {kind}"]
        if code:
            parts.append(f"[{code}]")
        if status is not None:
            parts.append(f"(HTTP {status})")
        message = " ".join(parts)
        detail = self._scrub(e.user_message or "")
        if detail:
            message += f": {detail}"
        return GatewayError(message, transient=transient, code=code, http_status=status)

    def _scrub(self, text: str) -> str:
        for secret in self._secrets.value:
            if secret:
                text = text.replace(secret, "[hidden]")
        return _SECRET_SHAPES.sub("[hidden]", text)

    def _intent(self, obj: Any) -> Intent:
        return _intent(_plain(obj))


# -- normalising (plain dicts: the library's objects and a webhook's JSON alike) --------


def _plain(obj: Any) -> dict[str, Any]:
    """A library object (a StripeObject) as plain dicts and lists."""
    if isinstance(obj, stripe.StripeObject):
        return obj.to_dict()
    if isinstance(obj, Mapping):
        return dict(obj)
    raise GatewayError(f"Stripe answered a {type(obj).__name__}, not an object", transient=False)


def _str(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _id_of(value: Any) -> str | None:
    """An expandable field: an id, or the expanded object's id."""
    if isinstance(value, Mapping):
        return _str(value.get("id"))
    return _str(value)


def _card_of(card: Any) -> str | None:
    if not isinstance(card, Mapping):
        return None
    brand, last4 = _str(card.get("brand")), _str(card.get("last4"))
    if brand and last4:
        return f"{brand} {last4}"
    return None


def _intent(d: Mapping[str, Any]) -> Intent:
    intent_id = _str(d.get("id"))
    if intent_id is None or d.get("object", "payment_intent") != "payment_intent":
        raise GatewayError("Stripe answered something that is not a PaymentIntent", transient=False)
    error = d.get("last_payment_error")
    failure = None
    if isinstance(error, Mapping):
        failure = _str(error.get("message")) or _str(error.get("code"))
    status = _str(d.get("status")) or "unknown"
    card = None
    if status == "succeeded":
        charge = d.get("latest_charge")
        if isinstance(charge, Mapping):
            details = charge.get("payment_method_details")
            if isinstance(details, Mapping):
                card = _card_of(details.get("card"))
        method = d.get("payment_method")
        if card is None and isinstance(method, Mapping):
            card = _card_of(method.get("card"))
    return Intent(
        id=intent_id,
        client_secret=_str(d.get("client_secret")) or "",
        status=status,
        amount=_int(d.get("amount")) or 0,
        currency=_str(d.get("currency")) or "",
        failure=failure,
        card=card,
    )


def _event(data: Mapping[str, Any]) -> Event:
    event_id, event_type = data["id"], data["type"]
    created = _int(data.get("created"))
    inner = data.get("data")
    obj = inner.get("object") if isinstance(inner, Mapping) else None
    kind = obj.get("object") if isinstance(obj, Mapping) else None
    if not isinstance(obj, Mapping) or not isinstance(kind, str):
        return Event(event_id, event_type, None, None, None, None, created=created)
    if kind == "payment_intent":
        intent = _intent(obj)
        return Event(
            event_id,
            event_type,
            intent.id,
            intent,
            intent.failure,
            intent.amount,
            charge_id=_id_of(obj.get("latest_charge")),
            status=intent.status,
            created=created,
        )
    if kind == "charge":
        amount = _int(obj.get("amount"))
        if event_type == "charge.refunded":
            amount = _int(obj.get("amount_refunded"))
        return Event(
            event_id,
            event_type,
            _id_of(obj.get("payment_intent")),
            None,
            _str(obj.get("failure_message")),
            amount,
            charge_id=_str(obj.get("id")),
            status=_str(obj.get("status")),
            created=created,
        )
    if kind == "dispute":
        return Event(
            event_id,
            event_type,
            _id_of(obj.get("payment_intent")),
            None,
            _str(obj.get("reason")),
            _int(obj.get("amount")),
            charge_id=_id_of(obj.get("charge")),
            status=_str(obj.get("status")),
            created=created,
        )
    return Event(event_id, event_type, None, None, None, None, created=created)


def _signed_timestamp(header: str) -> int | None:
    """The ``t=`` of a Stripe-Signature header, if it also has a ``v1=``."""
    timestamp: int | None = None
    has_v1 = False
    for item in header.split(","):
        name, sep, value = item.strip().partition("=")
        if not sep:
            continue
        if name == "t" and timestamp is None:
            try:
                timestamp = int(value)
            except ValueError:
                return None
        elif name == "v1" and value:
            has_v1 = True
    return timestamp if has_v1 else None
