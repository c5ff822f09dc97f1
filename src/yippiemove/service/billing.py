"""Billing (issue 20, docs/billing.md): quotes, what each run of a transfer costs, card
payments through Stripe, webhooks, refunds after our failures, grants and companies.

The rules that make it safe, all in the control database:

- **Nothing runs unpaid, by construction.**  With billing on, an order is stored as
  ``awaiting_payment`` unless the same transaction spent its price from the balance (or it
  was free).  Only :meth:`Billing.apply_intent` (a succeeded payment) and
  :meth:`Billing.settle` move a job on to ``queued``, in the transaction that spends its
  price; the queue and the recovery sweeps only ever look at ``queued`` jobs.
- **Never charged twice.**  A run's charge has one payment row (``payments.charge_id`` is
  unique), made before Stripe is called, and one PaymentIntent (``intent_id`` set once,
  compare-and-set); a retried or double-clicked "pay" finds them.  The Stripe call still
  carries an idempotency key (``yippiemove-payment-<id>``) for the real Stripe.
- **Every movement is a ledger entry with a key** (service/ledger.py): ``payment:<id>``
  (the card payment's credit), ``order:<job>:<run>`` (its spend), ``refund:<job>:<run>``,
  so a replayed webhook or a second refund inserts nothing; a webhook's event id is kept
  too (``stripe_events``), in the transaction of its effects.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import time
import uuid
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from sqlalchemy import func, select, update
from sqlalchemy.exc import IntegrityError

from ..jobs.vocab import JobStatus
from . import ledger, pricing
from .core import Conflict, NotFound, ServiceError
from .db import (
    BillingAccount,
    BillingMember,
    Job,
    JobCharge,
    LedgerEntry,
    Payment,
    PriceQuote,
    StripeEvent,
    User,
)

if TYPE_CHECKING:
    from .core import Account, Service
    from .stripe_gateway import Intent, StripeGateway

log = logging.getLogger(__name__)

#: Payment states.
NEW, PROCESSING, SUCCEEDED, FAILED, DISPUTED = (
    "new",
    "processing",
    "succeeded",
    "failed",
    "disputed",
)


class PaymentRequired(ServiceError):
    """Billing is on and the order has no usable quote, or is not paid for."""

    status = 402


class PaymentsUnavailable(ServiceError):
    """Stripe could not be reached (or refused our call): nothing was charged."""

    status = 503


@dataclass(frozen=True)
class QuoteView:
    id: str
    currency: str
    price: int
    credits_used: int
    to_pay: int
    lines: list[dict[str, Any]]
    bytes: int
    messages: int
    expires_at: float

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "currency": self.currency,
            "price": self.price,
            "credits_used": self.credits_used,
            "to_pay": self.to_pay,
            "lines": self.lines,
            "bytes": self.bytes,
            "messages": self.messages,
            "expires_at": self.expires_at,
        }


@dataclass(frozen=True)
class PaymentView:
    id: int
    purpose: str
    job_id: str | None
    amount: int
    credit: int
    currency: str
    description: str
    state: str
    failure: str | None
    card: str | None
    created_at: float
    paid_at: float | None
    intent_id: str | None

    @classmethod
    def of(cls, p: Payment) -> PaymentView:
        return cls(
            p.id,
            p.purpose,
            p.job_id,
            int(p.amount),
            int(p.credit),
            p.currency,
            p.description,
            p.state,
            p.failure,
            p.card,
            p.created_at,
            p.paid_at,
            p.intent_id,
        )

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "purpose": self.purpose,
            "transfer": self.job_id,
            "amount": self.amount,
            "credit": self.credit,
            "currency": self.currency,
            "description": self.description,
            "state": self.state,
            "failure": self.failure,
            "card": self.card,
            "created_at": self.created_at,
            "paid_at": self.paid_at,
        }


@dataclass(frozen=True)
class Checkout:
    """What a payment page needs: the payment, and Stripe's client secret of its
    PaymentIntent (given only to the customer's own page, never logged or stored)."""

    payment: PaymentView
    client_secret: str | None = field(repr=False)  # never in a log line
    publishable_key: str
    js_url: str

    def as_dict(self) -> dict[str, Any]:
        return {
            **self.payment.as_dict(),
            "client_secret": self.client_secret,
            "publishable_key": self.publishable_key,
        }


def _lines(q: pricing.Quote) -> list[dict[str, Any]]:
    return [{"text": text, "amount": amount} for text, amount in q.lines]


class Billing:
    """The service's billing; ``svc.billing`` (off: every order is free and runs)."""

    def __init__(self, svc: Service, gateway: StripeGateway | None = None) -> None:
        self.svc = svc
        self.settings = svc.settings
        self.enabled = bool(svc.settings.billing_enabled)
        self.prices = svc.settings.prices()
        self._gateway = gateway

    # ------------------------------------------------------------------ helpers

    @property
    def gateway(self) -> StripeGateway:
        if self._gateway is None:
            from .stripe_gateway import StripeGateway

            s = self.settings
            self._gateway = StripeGateway(
                s.stripe_secret_key,
                s.stripe_webhook_secret,
                api_base=s.stripe_api_base or None,
                # localstripe refuses a PaymentIntent's description (tests/stripekit.py)
                send_description=not s.stripe_api_base,
            )
        return self._gateway

    def subject(self, user_id: int, source: Account, folders: dict[str, Any] | None) -> str:
        """What a quote is for: the source account and the folder choice (an HMAC, so a
        quote never shows or stores them)."""
        from ..jobs import spec

        try:
            chosen = spec.check_folders(folders) if folders is not None else None
        except spec.SpecError as exc:
            raise ServiceError(str(exc)) from None
        text = json.dumps(
            [user_id, source.host.lower(), int(source.port), source.username, chosen or None],
            sort_keys=True,
            separators=(",", ":"),
        )
        return hmac.new(self.settings.session_key(), text.encode(), hashlib.sha256).hexdigest()

    def account_of(self, s: Any, user_id: int) -> int:
        member = s.get(BillingMember, user_id)
        if member is not None:
            return member.account_id
        return ledger.account_for_user(s, user_id)

    # ------------------------------------------------------------------ quotes

    def make_quote(
        self,
        user_id: int,
        subject: str,
        mailbox_bytes: int,
        messages: int,
        rerun_of: str | None = None,
        valid_for: float | None = None,
    ) -> QuoteView:
        """Price a measured mailbox; stored, so an order naming it keeps this price for
        ``valid_for`` seconds (``quote_seconds``; a batch line's: as long as its
        passwords are kept)."""
        now = self.svc.clock()
        with self.svc.db.session() as s:
            account = self.account_of(s, user_id)
            bal = ledger.balance(s, account)
            q = pricing.quote(
                self.prices, mailbox_bytes=mailbox_bytes, messages=messages, balance=max(bal, 0)
            )
            row = PriceQuote(
                id=uuid.uuid4().hex,
                user_id=user_id,
                subject=subject,
                currency=q.currency,
                price=q.price,
                lines=[[t, a] for t, a in q.lines if a >= 0],  # not the credit: spent at the order
                bytes=int(mailbox_bytes),
                messages=int(messages),
                rerun_of=rerun_of,
                created_at=now,
                expires_at=now + (valid_for or self.settings.quote_seconds),
            )
            s.add(row)
        return QuoteView(
            row.id,
            q.currency,
            q.price,
            q.credits_used,
            q.to_pay,
            _lines(q),
            row.bytes,
            row.messages,
            row.expires_at,
        )

    # ------------------------------------------------------------------ orders

    def charge_new_job(
        self, s: Any, user_id: int, job: Job, quote_id: str | None, subject: str
    ) -> None:
        """In the order's transaction: check its quote, record the run's charge and spend
        it if the balance covers it; else the job waits (``awaiting_payment``)."""
        if not quote_id:
            raise PaymentRequired(
                "this service charges for transfers: get a quote first "
                "(POST /api/v1/quotes) and order with its quote_id"
            )
        quote = s.get(PriceQuote, str(quote_id), with_for_update=True)
        if quote is None or quote.user_id != user_id:
            raise PaymentRequired(f"quote_id: no such quote {str(quote_id)[:40]!r}")
        if quote.job_id is not None:
            raise PaymentRequired("quote_id: this quote was used by another order already")
        if quote.expires_at <= self.svc.clock():
            raise PaymentRequired("quote_id: the quote has expired; get a new one")
        if not hmac.compare_digest(quote.subject, subject):
            raise PaymentRequired(
                "quote_id: the quote is for another source mailbox or folder choice; "
                "get a quote for this order"
            )
        quote.job_id = job.id
        charge = JobCharge(
            job_id=job.id,
            run=int(job.runs or 1),
            account_id=self.account_of(s, user_id),
            quote_id=quote.id,
            currency=quote.currency,
            price=int(quote.price),
            state="awaiting_payment",
            created_at=self.svc.clock(),
        )
        s.add(charge)
        s.flush()
        self._try_settle(s, job, charge)

    def charge_rerun(self, s: Any, job: Job, *, free: bool = False) -> None:
        """In the re-run's transaction (``job.runs`` already counts the new run): free
        within ``free_rerun_days`` of a paid run, else the last run's price again (the
        mailbox was measured then), spent now or paid for before it runs."""
        # The price of the last priced run (its quote's; a free run is no price).
        last_price = s.scalar(
            select(JobCharge.price)
            .where(JobCharge.job_id == job.id, JobCharge.price > 0)
            .order_by(JobCharge.run.desc())
            .limit(1)
        )
        run = int(job.runs or 1)
        price = int(last_price) if last_price is not None else self.prices.bands[-1].amount
        paid_at = s.scalar(
            select(JobCharge.settled_at)
            .where(JobCharge.job_id == job.id, JobCharge.state == "paid")
            .order_by(JobCharge.settled_at.desc())
            .limit(1)
        )
        window = self.prices.free_rerun_days * 86400
        free = free or (paid_at is not None and self.svc.clock() - paid_at <= window)
        charge = JobCharge(
            job_id=job.id,
            run=run,
            account_id=self.account_of(s, job.user_id),
            quote_id=None,
            currency=self.prices.currency,
            price=0 if free else price,
            state="awaiting_payment",
            created_at=self.svc.clock(),
        )
        s.add(charge)
        s.flush()
        self._try_settle(s, job, charge)

    def _try_settle(self, s: Any, job: Job, charge: JobCharge, reason: str | None = None) -> bool:
        """Spend the charge from the balance if it covers it: the job is ``queued``
        (the caller enqueues after the commit); else it waits, with ``reason``."""
        now = self.svc.clock()
        if charge.price == 0:
            charge.state, charge.settled_at = "free", now
        else:
            try:
                ledger.spend(
                    s,
                    charge.account_id,
                    int(charge.price),
                    f"order:{job.id}:{charge.run}",
                    job_id=job.id,
                    order_id=f"{job.id}:{charge.run}",
                    note=f"transfer {job.id[:8]}, run {charge.run}",
                )
            except ledger.InsufficientCredit:
                charge.state = "awaiting_payment"
                if reason is not None:
                    charge.reason = reason[:500]
                job.status = JobStatus.AWAITING_PAYMENT
                return False
            charge.state, charge.settled_at = "paid", now
        charge.reason = None
        job.status = JobStatus.QUEUED
        return True

    def settle_batch(self, user_id: int, batch_id: str) -> dict[str, Any]:
        """Pay a batch's waiting orders from the balance, line by line while it covers
        them (credits bought or granted for the batch): ``{"settled": [job ids],
        "waiting": [job ids], "balance"}``; the settled ones are enqueued."""
        from .db import Batch, BatchLine

        settled: list[str] = []
        with self.svc.db.session() as s:
            batch = s.get(Batch, batch_id)
            if not isinstance(batch_id, str) or batch is None or batch.user_id != user_id:
                raise NotFound("no such batch")
            ids = list(
                s.scalars(
                    select(Job.id)
                    .join(BatchLine, BatchLine.job_id == Job.id)
                    .where(
                        BatchLine.batch_id == batch_id,
                        Job.status == JobStatus.AWAITING_PAYMENT,
                    )
                    .order_by(BatchLine.line)
                )
            )
            if not ids:
                raise Conflict("no transfer of this batch is waiting for a payment")
            waiting: list[str] = []
            for job_id in ids:
                job = s.get(Job, job_id, with_for_update=True)
                charge = self.current_charge(s, job_id)
                if job is None or charge is None:
                    continue
                if self._try_settle(s, job, charge):
                    settled.append(job_id)
                else:
                    waiting.append(job_id)
            left = ledger.balance(s, self.account_of(s, user_id))
        for job_id in settled:
            self.svc._enqueue(job_id)
        return {"settled": settled, "waiting": waiting, "balance": left}

    def current_charge(self, s: Any, job_id: str) -> JobCharge | None:
        return s.scalar(
            select(JobCharge)
            .where(JobCharge.job_id == job_id)
            .order_by(JobCharge.run.desc())
            .limit(1)
        )

    def settle(self, user_id: int, job_id: str) -> bool:
        """Pay a waiting order from the balance (credits bought or granted since);
        True when it is queued now (and enqueued)."""
        with self.svc.db.session() as s:
            job = self.svc._own(s, user_id, job_id, lock=True)
            if job.status != JobStatus.AWAITING_PAYMENT:
                raise Conflict(f"the transfer is not waiting for a payment ({job.status})")
            charge = self.current_charge(s, job_id)
            if charge is None:
                raise Conflict("the transfer has no charge to pay")
            bal = ledger.balance(s, charge.account_id)
            if bal < charge.price:
                raise PaymentRequired(
                    f"the balance ({bal}) does not cover the price ({charge.price}); pay by card"
                )
            ok = self._try_settle(s, job, charge)
        if ok:
            self.svc._enqueue(job_id)
        return ok

    # ------------------------------------------------------------------ payments

    def checkout_order(self, user_id: int, job_id: str) -> Checkout:
        """The card payment of a waiting order (made once; a retry gets the same)."""
        self._need_stripe()
        with self.svc.db.session() as s:
            job = self.svc._own(s, user_id, job_id, lock=True)
            if job.status != JobStatus.AWAITING_PAYMENT:
                raise Conflict(f"the transfer is not waiting for a payment ({job.status})")
            charge = self.current_charge(s, job_id)
            if charge is None:
                raise Conflict("the transfer has no charge to pay")
            pay = s.scalar(select(Payment).where(Payment.charge_id == charge.id))
            if pay is None:
                bal = ledger.balance(s, charge.account_id)
                amount = max(int(charge.price) - max(bal, 0), 0)
                if amount == 0:
                    raise Conflict("your credits cover this transfer: use them instead")
                pay = Payment(
                    account_id=charge.account_id,
                    user_id=user_id,
                    purpose="order",
                    charge_id=charge.id,
                    job_id=job_id,
                    amount=amount,
                    credit=amount,
                    currency=charge.currency,
                    description=f"Mailbox transfer {job_id[:8]} (run {charge.run})",
                    state=NEW,
                    created_at=self.svc.clock(),
                )
                try:
                    with s.begin_nested():
                        s.add(pay)
                except IntegrityError:  # a concurrent request made it: take theirs
                    pay = s.scalar(select(Payment).where(Payment.charge_id == charge.id))
                    if pay is None:
                        raise
            pid = pay.id
        return self._checkout(pid)

    def checkout_bundle(self, user_id: int, index: int) -> Checkout:
        """A card payment for bundle number ``index`` (0-based) of the price list.  An
        unpaid payment of the same bundle made in the last hour is reused (a double
        click buys once)."""
        self._need_stripe()
        bundles = self.prices.bundles
        if not 0 <= index < len(bundles):
            raise NotFound(f"bundle: no bundle number {index + 1}")
        b = bundles[index]
        now = self.svc.clock()
        with self.svc.db.session() as s:
            s.get(User, user_id, with_for_update=True)  # one purchase decision at a time
            account = self.account_of(s, user_id)
            pay = s.scalar(
                select(Payment)
                .where(
                    Payment.user_id == user_id,
                    Payment.purpose == "bundle",
                    Payment.credit == b.credit,
                    Payment.amount == b.amount,
                    Payment.state.in_((NEW, PROCESSING, FAILED)),
                    Payment.created_at > now - 3600,
                )
                .order_by(Payment.id.desc())
                .limit(1)
            )
            if pay is None:
                pay = Payment(
                    account_id=account,
                    user_id=user_id,
                    purpose="bundle",
                    amount=b.amount,
                    credit=b.credit,
                    currency=self.prices.currency,
                    description=f"Credit bundle ({b.discount_percent}% off)",
                    state=NEW,
                    created_at=now,
                )
                s.add(pay)
                s.flush()
            pid = pay.id
        return self._checkout(pid)

    def checkout_payment(self, user_id: int, pid: int) -> Checkout:
        """The card page of one of the customer's payments (a bundle's, an order's)."""
        self._need_stripe()
        self.payment(user_id, pid)  # theirs, or NotFound
        return self._checkout(pid)

    def _need_stripe(self) -> None:
        if not self.enabled:
            raise Conflict("payments are off on this service")

    def _checkout(self, pid: int) -> Checkout:
        """The payment's PaymentIntent, made once: created outside any transaction (a
        network call), then stored only if none was stored meanwhile; a concurrent
        caller's intent is never handed out, so only the stored one can be paid."""
        with self.svc.db.read() as s:
            pay = s.get(Payment, pid)
            assert pay is not None
            view = PaymentView.of(pay)
        gw = self.gateway
        try:
            if view.intent_id is None:
                intent = self._new_intent(view, replacing=None)
            else:
                intent = gw.retrieve_intent(view.intent_id)
                if intent.status == "requires_payment_method" and intent.failure:
                    intent = self._next_attempt(pid, intent)
        except Exception as exc:
            from .stripe_gateway import GatewayError

            if isinstance(exc, GatewayError):
                log.warning("payment %d: Stripe: %s", pid, exc)
                raise PaymentsUnavailable(
                    f"the payment service did not answer as expected ({exc}); nothing "
                    "was charged: try again in a moment"
                ) from None
            raise
        if intent.status == "succeeded" and view.state != SUCCEEDED:
            self.apply_intent(intent)  # paid, and the webhook is late: take it now
            view = self.payment_view(pid)
        secret = None if view.state == SUCCEEDED else intent.client_secret
        return Checkout(
            view, secret, self.settings.stripe_publishable_key, self.settings.stripe_js_url
        )

    def _next_attempt(self, pid: int, failed: Intent) -> Intent:
        """A declined attempt's PaymentIntent is cancelled (no page left open with its
        secret can pay it any more), then a new one is made for the next card and
        stored in its place (compare-and-set: a concurrent request's loses and reads
        the winner's).  One payment never has two intents that can be paid."""
        self.apply_intent(failed)  # its failure, shown
        gw = self.gateway
        old = gw.cancel_intent(failed.id)
        if old.status == "succeeded":  # paid after all (raced the decline)
            self.apply_intent(old)
            return old
        return self._new_intent(self.payment_view(pid), replacing=failed.id)

    def _new_intent(self, view: PaymentView, replacing: str | None) -> Intent:
        """A PaymentIntent for the payment, made outside any transaction (a network
        call) and stored in place of ``replacing`` (None: of none) by compare-and-set.
        A concurrent caller that stored another first wins: ours is cancelled (if Stripe
        made a second one) and the winner's is returned, so only the stored intent's
        secret is ever handed out."""
        gw = self.gateway
        key = f"yippiemove-payment-{view.id}"
        intent = gw.create_intent(
            amount=view.amount,
            currency=view.currency,
            idempotency_key=key if replacing is None else f"{key}-after-{replacing}",
            metadata={"payment": str(view.id), "transfer": view.job_id or ""},
            description=view.description,
        )
        expected = (
            Payment.intent_id.is_(None) if replacing is None else (Payment.intent_id == replacing)
        )
        with self.svc.db.session() as s:
            s.execute(
                update(Payment).where(Payment.id == view.id, expected).values(intent_id=intent.id)
            )
            current = s.scalar(select(Payment.intent_id).where(Payment.id == view.id))
        if current == intent.id:
            return intent
        gw.cancel_intent(intent.id)  # ours lost: nobody gets its secret
        return gw.retrieve_intent(str(current))

    def sync(self, user_id: int, pid: int) -> PaymentView:
        """Ask Stripe for the payment's state now (the page a customer returns to after
        paying: the webhook may come later) and apply it."""
        view = self.payment(user_id, pid)
        if view.intent_id and view.state not in (SUCCEEDED, DISPUTED):
            try:
                intent = self.gateway.retrieve_intent(view.intent_id)
            except Exception as exc:
                log.warning("payment %d: cannot read it from Stripe now: %s", pid, exc)
                return view
            self.apply_intent(intent)
            view = self.payment(user_id, pid)
        return view

    def apply_intent(self, intent: Intent) -> None:
        """A PaymentIntent's state, from a webhook or read back: a success credits the
        payment (once) and settles its order; a failure is recorded and shown."""
        queued: str | None = None
        with self.svc.db.session() as s:
            pay = s.scalar(select(Payment).where(Payment.intent_id == intent.id).with_for_update())
            if pay is None:
                log.info("Stripe PaymentIntent %s: not one of ours (or not stored)", intent.id)
                return
            if intent.status == "succeeded":
                if pay.state in (SUCCEEDED, DISPUTED):
                    return
                if int(intent.amount) != int(pay.amount) or intent.currency != pay.currency:
                    log.error(
                        "payment %d: Stripe says %s %s, we asked %s %s; not credited",
                        pay.id,
                        intent.amount,
                        intent.currency,
                        pay.amount,
                        pay.currency,
                    )
                    return
                pay.state, pay.paid_at, pay.failure = SUCCEEDED, self.svc.clock(), None
                pay.card = intent.card
                ledger.post(
                    s,
                    pay.account_id,
                    int(pay.credit),
                    "purchase",
                    f"payment:{pay.id}",
                    payment_id=str(pay.id),
                    job_id=pay.job_id,
                    actor="stripe",
                    note=pay.description,
                )
                if pay.charge_id is not None:
                    queued = self._settle_paid_order(s, pay)
            elif intent.status in ("processing", "requires_action", "requires_confirmation"):
                if pay.state == NEW:
                    pay.state = PROCESSING
            elif intent.status in ("requires_payment_method", "canceled"):
                if pay.state in (NEW, PROCESSING, FAILED):
                    pay.state = FAILED
                    pay.failure = (intent.failure or "the payment was not completed")[:500]
                    if pay.charge_id is not None:
                        charge = s.get(JobCharge, pay.charge_id)
                        if charge is not None and charge.state == "awaiting_payment":
                            charge.reason = f"The card payment failed: {pay.failure}"[:500]
        if queued is not None:
            self.svc._enqueue(queued)

    def _settle_paid_order(self, s: Any, pay: Payment) -> str | None:
        charge = s.get(JobCharge, pay.charge_id)
        job = s.get(Job, pay.job_id, with_for_update=True) if pay.job_id else None
        if charge is None or job is None:
            return None
        if job.status != JobStatus.AWAITING_PAYMENT or charge.state != "awaiting_payment":
            return None  # cancelled meanwhile: the credit stays in the balance
        ok = self._try_settle(
            s,
            job,
            charge,
            reason="The payment arrived, but the balance was spent on another order "
            "meanwhile: the rest is to pay.",
        )
        return job.id if ok else None

    def handle_webhook(self, payload: bytes, signature: str | None) -> str:
        """A Stripe webhook: verified by its signature, each event applied once.
        Returns what was done (for the log; the answer to Stripe is 200 either way)."""
        from .stripe_gateway import BadSignature

        if not self.enabled:
            raise NotFound("payments are off on this service")
        try:
            event = self.gateway.parse_event(payload, signature)
        except BadSignature as exc:
            text = str(exc)
            raise ServiceError(
                text if text.startswith("webhook refused") else f"webhook refused: {text}"
            ) from None
        with self.svc.db.read() as s:
            if s.get(StripeEvent, event.id) is not None:
                return f"{event.id}: already handled"
        if event.type.startswith("payment_intent.") and event.intent_id:
            # Not believed as sent (an event can be stale, out of order, or made by
            # someone holding the secret): the intent is read back from Stripe.  If
            # Stripe cannot be asked now, the event is not recorded and the answer is
            # an error, so Stripe delivers it again later.
            try:
                intent = self.gateway.retrieve_intent(event.intent_id)
            except Exception as exc:
                raise PaymentsUnavailable(
                    f"cannot read PaymentIntent {event.intent_id} back from Stripe now; "
                    "deliver the event again later"
                ) from exc
            self.apply_intent(intent)
            done = f"{event.id}: {event.type} applied"
        elif event.type == "charge.dispute.created" and event.intent_id:
            self._disputed(event.intent_id)
            done = f"{event.id}: dispute recorded"
        else:
            done = f"{event.id}: {event.type} ignored"
        # Recorded after its effects (which are keyed, so a second application of them
        # changes nothing): a crash in between makes Stripe's redelivery apply it again.
        try:
            with self.svc.db.session() as s:
                s.add(StripeEvent(id=event.id, type=event.type[:64], received_at=time.time()))
        except IntegrityError:
            return f"{event.id}: already handled"
        return done

    def _disputed(self, intent_id: str) -> None:
        """A disputed payment: recorded and shown.  If its order has not started, the
        order waits again: its spend is given back and the disputed credit taken out."""
        with self.svc.db.session() as s:
            pay = s.scalar(select(Payment).where(Payment.intent_id == intent_id).with_for_update())
            if pay is None or pay.state == DISPUTED:
                return
            pay.state = DISPUTED
            if pay.charge_id is None:
                return
            charge = s.get(JobCharge, pay.charge_id)
            job = s.get(Job, pay.job_id, with_for_update=True) if pay.job_id else None
            if charge is None or job is None:
                return
            if job.status == JobStatus.QUEUED and charge.state == "paid":
                ledger.post(
                    s,
                    charge.account_id,
                    int(charge.price),
                    "refund",
                    f"unspend:{job.id}:{charge.run}",
                    job_id=job.id,
                    actor="stripe",
                    note=f"transfer {job.id[:8]}: its payment is disputed; not run",
                )
                try:
                    ledger.post(
                        s,
                        charge.account_id,
                        -int(pay.credit),
                        "adjust",
                        f"dispute:{pay.id}",
                        payment_id=str(pay.id),
                        actor="stripe",
                        note="the card payment is disputed",
                    )
                except ledger.InsufficientCredit:
                    pass
                charge.state = "awaiting_payment"
                job.status = JobStatus.AWAITING_PAYMENT
            charge.reason = "The card payment is disputed with your bank."

    # ------------------------------------------------------------------ operators

    def grant(self, user_id: int, amount: int, actor: str, note: str, key: str) -> bool:
        """Credits given outside the console (the CLI; ``key``: one grant per key, a
        retried command grants once).  False when that key was used already.  An
        operator's grant in the console or the API is ``Service.op_grant_credits``
        (service/operator.py: audited)."""
        if isinstance(amount, bool) or not isinstance(amount, int) or amount <= 0:
            raise ServiceError("amount: a positive whole number of minor units (cents)")
        if amount > pricing.MAX_AMOUNT:
            raise ServiceError(f"amount: at most {pricing.MAX_AMOUNT}")
        with self.svc.db.session() as s:
            if s.get(User, user_id) is None:
                raise NotFound("no such customer")
            entry = ledger.post(
                s,
                self.account_of(s, user_id),
                amount,
                "grant",
                f"grant:{key}"[:255],
                actor=actor,
                note=note[:500] or None,
            )
        return entry is not None

    def create_company(self, name: str) -> int:
        name = name.strip()
        if not 0 < len(name) <= 200:
            raise ServiceError("name: 1 to 200 characters")
        with self.svc.db.session() as s:
            acc = BillingAccount(company=name, created_at=time.time())
            s.add(acc)
            s.flush()
            return acc.id

    def add_member(self, account_id: int, user_id: int) -> None:
        with self.svc.db.session() as s:
            acc = s.get(BillingAccount, account_id)
            if acc is None or acc.company is None:
                raise NotFound("no such company")
            if s.get(User, user_id) is None:
                raise NotFound("no such customer")
            row = s.get(BillingMember, user_id)
            if row is None:
                s.add(BillingMember(user_id=user_id, account_id=account_id, added_at=time.time()))
            else:
                row.account_id = account_id

    # ------------------------------------------------------------------ reading

    def summary(
        self, user_id: int, limit: int = 100, before_id: int | None = None
    ) -> dict[str, Any]:
        with self.svc.db.read() as s:
            account = self._read_account(s, user_id)
            company = None
            bal = 0
            rows: list[dict[str, Any]] = []
            if account is not None:
                acc = s.get(BillingAccount, account)
                company = acc.company if acc is not None else None
                bal = ledger.balance(s, account)
                rows = self._rows(s, account, limit, before_id)
        return {
            "enabled": self.enabled,
            "currency": self.prices.currency,
            "balance": bal,
            "company": company,
            "entries": rows,
            "bundles": [
                {
                    "number": i + 1,
                    "credit": b.credit,
                    "price": b.amount,
                    "discount_percent": b.discount_percent,
                }
                for i, b in enumerate(self.prices.bundles)
            ],
        }

    def _read_account(self, s: Any, user_id: int) -> int | None:
        member = s.get(BillingMember, user_id)
        if member is not None:
            return member.account_id
        return s.scalar(select(BillingAccount.id).where(BillingAccount.user_id == user_id))

    def _rows(
        self, s: Any, account: int, limit: int, before_id: int | None
    ) -> list[dict[str, Any]]:
        """Entries newest first, each with the balance after it."""
        page = ledger.entries(s, account, limit=limit, before_id=before_id)
        if not page:
            return []
        newest = page[0].id
        running = int(
            s.scalar(
                select(func.coalesce(func.sum(LedgerEntry.amount), 0)).where(
                    LedgerEntry.account_id == account, LedgerEntry.id <= newest
                )
            )
            or 0
        )
        out = []
        for e in page:
            out.append(
                {
                    "id": e.id,
                    "created_at": e.created_at,
                    "kind": e.kind,
                    "amount": int(e.amount),
                    "balance_after": running,
                    "note": e.note,
                    "order_id": e.order_id,
                    "job_id": e.job_id,
                    "payment_id": e.payment_id,
                }
            )
            running -= int(e.amount)
        return out

    def payment_view(self, pid: int) -> PaymentView:
        with self.svc.db.read() as s:
            pay = s.get(Payment, pid)
            if pay is None:
                raise NotFound("no such payment")
            return PaymentView.of(pay)

    def payment(self, user_id: int, pid: int) -> PaymentView:
        """A payment of the customer's account (a company's members see its payments)."""
        with self.svc.db.read() as s:
            pay = s.get(Payment, pid) if isinstance(pid, int) else None
            account = self._read_account(s, user_id)
            if pay is None or (pay.user_id != user_id and pay.account_id != account):
                raise NotFound("no such payment")
            return PaymentView.of(pay)

    def payments(self, user_id: int) -> list[PaymentView]:
        with self.svc.db.read() as s:
            account = self._read_account(s, user_id)
            q = select(Payment).where(
                (Payment.user_id == user_id) | (Payment.account_id == (account or -1))
            )
            return [PaymentView.of(p) for p in s.scalars(q.order_by(Payment.id.desc()).limit(200))]

    def charge_of(self, user_id: int, job_id: str) -> dict[str, Any] | None:
        """The current run's charge of a transfer: its price, state, why it waits."""
        with self.svc.db.read() as s:
            job = self.svc._own(s, user_id, job_id)
            charge = self.current_charge(s, job.id)
            if charge is None:
                return None
            pay = s.scalar(select(Payment).where(Payment.charge_id == charge.id))
            bal = ledger.balance(s, charge.account_id)
            return {
                "run": charge.run,
                "price": int(charge.price),
                "currency": charge.currency,
                "state": charge.state,
                "reason": charge.reason,
                "balance": bal,
                "payment": PaymentView.of(pay).as_dict() if pay is not None else None,
                "waiting": job.status == JobStatus.AWAITING_PAYMENT,
            }


async def quote_order(
    svc: Service,
    user_id: int,
    source: Account,
    dest: Account | None,
    folders: dict[str, Any] | None,
) -> QuoteView:
    """Measure the source as the order would copy it (the folder step's listing: the
    folders it selects, after its filters) and quote it.  ServiceError when the source
    cannot be read (the reason named)."""
    import asyncio

    from .listing import folder_listing

    if not svc.billing.enabled:
        raise Conflict("this service does not charge for transfers: no quote is needed")
    listed = await folder_listing(svc, user_id, source, dest, folders)
    if not listed["ok"]:
        failure = listed.get("failure") or {}
        raise ServiceError(
            "cannot measure the source mailbox: "
            + str(failure.get("message") or failure.get("title") or "it could not be read")
        )
    chosen = [f for f in listed["folders"] if folders is None or f["selected"]]
    size = sum(int(f["bytes"] or 0) for f in chosen)
    count = sum(int(f["messages"] or 0) for f in chosen)
    subject = svc.billing.subject(user_id, source, folders)
    return await asyncio.to_thread(svc.billing.make_quote, user_id, subject, size, count)


def receipt_of(svc: Service, user_id: int, pid: int) -> Any:
    """The receipt (service/receipts.py ``Receipt``) of a payment of the customer's that
    went through; Conflict while it has not."""
    from datetime import UTC, datetime

    from .receipts import Receipt, ReceiptLine, money

    view = svc.billing.payment(user_id, pid)
    if view.state not in (SUCCEEDED, DISPUTED) or view.paid_at is None:
        raise Conflict(f"the payment is not paid ({view.state}): there is no receipt for it")
    with svc.db.read() as s:
        user = s.get(User, user_id)
        zone = (user.timezone if user is not None else None) or "UTC"
        email = user.email if user is not None else ""
        acc = s.get(BillingAccount, s.get(Payment, pid).account_id)  # type: ignore[union-attr]
        company = acc.company if acc is not None else None
    lines = [ReceiptLine(view.description, view.amount)]
    if view.purpose == "bundle":
        lines.append(ReceiptLine(f"Credit added: {money(view.credit, view.currency)}", 0))
    year = datetime.fromtimestamp(view.paid_at, UTC).year
    return Receipt(
        number=f"YM-{year}-{view.id:06d}",
        payment_id=str(view.id),
        paid_at=view.paid_at,
        timezone=zone,
        customer=f"{company} ({email})" if company else email,
        seller=svc.settings.billing_seller,
        currency=view.currency,
        lines=tuple(lines),
        total=view.amount,
        card=view.card,
        reference=view.intent_id or "",
        status="disputed" if view.state == DISPUTED else "paid",
    )
