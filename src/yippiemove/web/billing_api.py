"""The REST routes of billing (issue 20, service/billing.py, docs/billing.md): quotes,
paying a waiting transfer (by card or from credits), the balance and its ledger, credit
bundles, payments and their receipts, and the operators' grants.

Money is always an integer of minor units (cents) with its ``currency``.  A Stripe
client secret is in the answer of the payment it belongs to only: never logged, never
stored.  Stripe's webhook (``POST /stripe/webhook``) is a web route, not the API's.

No ``from __future__ import annotations`` here: FastAPI reads the endpoint annotations
(the API's ``User`` dependency, passed in) at runtime.
"""

import re
from typing import TYPE_CHECKING, Annotated, Any, Literal

from fastapi import APIRouter, Depends, Path, Query, Response
from pydantic import BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException

from yippiemove.service.billing import quote_order, receipt_of
from yippiemove.service.core import Conflict
from yippiemove.service.receipts import LedgerRow, ledger_csv

from .api import check_job_id, to_account
from .operator_api import OPERATOR_PREFIX, is_operator
from .schemas import AnyAccountIn, FoldersIn, WholeInt

if TYPE_CHECKING:
    from yippiemove.service.core import Service

__all__ = ["LEDGER_CSV_MAX", "add_billing_api", "ledger_rows"]

_TAG = ["billing"]
#: Entries in the ledger's CSV at most (newest first).
LEDGER_CSV_MAX = 10_000
#: A page of the ledger, read in these steps (the ledger's own limit).
_PAGE = 1000
_PAYMENT_ID = re.compile(r"[0-9]{1,18}")
#: Payment states that have a receipt, and the receipt's status.
_OFF = "payments are off on this service"


# -- models -------------------------------------------------------------------------------


class QuoteIn(BaseModel):
    """What an order would copy: the source (measured now, as the order would list it)
    and the folder choice; `dest` only changes which folders the rules pick."""

    model_config = ConfigDict(extra="forbid")

    source: AnyAccountIn
    dest: AnyAccountIn | None = None
    folders: FoldersIn | None = None


class QuoteLineOut(BaseModel):
    text: str = Field(description="the reason, for a person (a band, a free allowance...)")
    amount: int = Field(description="minor units; negative: credits used")


class QuoteOut(BaseModel):
    """A stored price: order with its `id` as `quote_id` before `expires_at` and the
    order keeps this price."""

    id: str = Field(description="the order's `quote_id`")
    currency: str = Field(examples=["usd"])
    price: int = Field(description="what the transfer costs (minor units)")
    credits_used: int = Field(description="of the price, what your balance covers now")
    to_pay: int = Field(description="the rest, to pay by card")
    lines: list[QuoteLineOut]
    bytes: int = Field(description="the size measured (the folders the order would copy)")
    messages: int = Field(description="the messages counted")
    expires_at: float = Field(description="unix time")


class PaymentOut(BaseModel):
    """A card payment (through Stripe)."""

    id: int
    purpose: Literal["order", "bundle"] = Field(
        description="`order`: a transfer's price; `bundle`: credits bought"
    )
    transfer: str | None = Field(None, description="the transfer it pays for (`order`)")
    amount: int = Field(description="charged to the card (minor units)")
    credit: int = Field(description="added to the balance when it succeeds (minor units)")
    currency: str
    description: str
    state: str = Field(description="new | processing | succeeded | failed | disputed | refunded")
    failure: str | None = Field(None, description="why it failed, for a person")
    card: str | None = Field(None, description="e.g. `visa 4242`, once paid")
    created_at: float
    paid_at: float | None = None


class CheckoutOut(PaymentOut):
    """A payment and what a page needs to take it with Stripe.js (Elements)."""

    client_secret: str | None = Field(
        description="the PaymentIntent's client secret (confirm the card with it); null "
        "when already paid.  Only in this answer: keep it out of logs"
    )
    publishable_key: str = Field(description="Stripe's publishable key of this service")


class PaymentList(BaseModel):
    payments: list[PaymentOut] = Field(description="newest first (at most 200)")


class SettledOut(BaseModel):
    id: str
    status: str = Field(description="`queued`: paid from the balance, it runs")


class LedgerEntryOut(BaseModel):
    id: int
    created_at: float
    kind: str = Field(description="grant | purchase | spend | refund | adjust")
    amount: int = Field(description="minor units, negative for a spend")
    balance_after: int = Field(description="the balance after this entry")
    note: str | None = None
    order_id: str | None = None
    job_id: str | None = Field(None, description="the transfer it concerns")
    payment_id: str | None = Field(None, description="the payment it concerns")


class BundleOut(BaseModel):
    number: int = Field(description="buy it with `POST /api/v1/credit-purchases`")
    credit: int = Field(description="credit added (minor units)")
    price: int = Field(description="what it costs (minor units)")
    discount_percent: int


class BillingOut(BaseModel):
    enabled: bool = Field(description="the service charges for transfers")
    currency: str
    balance: int = Field(description="minor units")
    company: str | None = Field(None, description="the company whose balance you share")
    entries: list[LedgerEntryOut] = Field(
        description="newest first; the next page: `before` = the last one's `id`"
    )
    bundles: list[BundleOut]


class CreditPurchaseIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    bundle: WholeInt = Field(ge=1, le=1000, description="the bundle's `number`")


class GrantIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    amount: WholeInt = Field(gt=0, le=10**12, description="minor units (cents)")
    note: str = Field("", max_length=500, description="why (in the ledger and the audit log)")
    key: str = Field(
        min_length=1,
        max_length=100,
        pattern=r"^[^\x00-\x1f\x7f]+$",
        description="new for each grant you mean: a request retried with the same key grants once",
    )


class GrantOut(BaseModel):
    granted: bool = Field(description="false: this key granted already (nothing more)")
    balance: int = Field(description="the customer's balance now (minor units)")


# -- receipts -----------------------------------------------------------------------------


def ledger_rows(service: Any, user: int) -> list[LedgerRow]:
    rows: list[LedgerRow] = []
    before: int | None = None
    while len(rows) < LEDGER_CSV_MAX:
        limit = min(_PAGE, LEDGER_CSV_MAX - len(rows))
        page = service.billing.summary(user, limit=limit, before_id=before)["entries"]
        rows += [LedgerRow(**{k: e[k] for k in LedgerRow.__dataclass_fields__}) for e in page]
        if len(page) < limit:
            break
        before = page[-1]["id"]
    return rows


def _payment_id(raw: str) -> int:
    """Ids that cannot be a payment's get the same 404 as other customers' payments."""
    if not _PAYMENT_ID.fullmatch(raw):
        raise HTTPException(404, "no such payment")
    return int(raw)


# -- routes -------------------------------------------------------------------------------


def add_billing_api(router: APIRouter, service: "Service", user_dep: Any, errors: Any) -> None:
    """The routes, registered on the API router (``user_dep``: its bearer-token user
    dependency; ``errors``: the error model)."""
    svc: Any = service

    def err(text: str) -> dict[str, Any]:
        return {"model": errors, "description": text}

    no_job = err("No such transfer (or not yours)")
    no_payment = err("No such payment (or not yours)")
    stripe_down = err("Stripe could not be reached (or refused the call): nothing was charged")

    def waiting_job(user: int, job_id: str) -> str:
        """The customer's transfer (404 first, whatever the service charges), then 409
        when the service does not charge."""
        job_id = check_job_id(job_id)
        svc.get_transfer(user, job_id)
        if not svc.billing.enabled:
            raise Conflict(_OFF)
        return job_id

    @router.post(
        "/quotes",
        status_code=201,
        response_model=QuoteOut,
        tags=_TAG,
        summary="Price a transfer before ordering it",
        responses={
            400: err(
                "The source cannot be measured (the reason named: a refused password, an "
                "unreachable server...), refused by policy, or bad folder rules"
            ),
            404: err("No such authorization (or not yours)"),
            409: err(f"The service does not charge for transfers ({_OFF}): no quote is needed"),
            429: err("Too many account checks under way: try later"),
        },
    )
    async def create_quote(body: QuoteIn, user: user_dep) -> dict[str, Any]:
        """Logs in to `source` and measures what the order would copy (the folders it
        selects, after its filters), then prices it line by line, your credits first.
        The quote is stored: order (`POST /api/v1/transfers`) with the same source and
        `folders` and `quote_id` = its `id` before it expires, and the order keeps
        this price."""
        source = to_account(body.source, service, user, "source")
        dest = to_account(body.dest, service, user, "dest") if body.dest is not None else None
        folders = body.folders.model_dump(mode="json") if body.folders is not None else None
        quote = await quote_order(service, user, source, dest, folders)
        return quote.as_dict()

    @router.post(
        "/transfers/{job_id}/payment",
        response_model=CheckoutOut,
        tags=_TAG,
        summary="Pay for a waiting transfer by card",
        responses={
            404: no_job,
            409: err(
                f"Not waiting for a payment, {_OFF}, or your credits cover it (settle instead)"
            ),
            503: stripe_down,
        },
    )
    def pay_transfer(job_id: str, user: user_dep) -> dict[str, Any]:
        """The card payment of an `awaiting_payment` transfer: what its price is short
        of your balance.  Made once: calling again answers the same payment and
        PaymentIntent (never a second charge).  Confirm the card with Stripe.js and
        `client_secret`; once it succeeds the transfer is queued."""
        job_id = waiting_job(user, job_id)
        return dict(svc.billing.checkout_order(user, job_id).as_dict())

    @router.post(
        "/transfers/{job_id}/settle",
        response_model=SettledOut,
        tags=_TAG,
        summary="Pay for a waiting transfer from your credits",
        responses={
            402: err("Your balance does not cover the price: pay by card"),
            404: no_job,
            409: err(f"Not waiting for a payment, or {_OFF}"),
        },
    )
    def settle_transfer(job_id: str, user: user_dep) -> dict[str, Any]:
        """Spends the price of an `awaiting_payment` transfer from your balance
        (credits bought or granted since the order); the transfer is queued."""
        job_id = waiting_job(user, job_id)
        svc.billing.settle(user, job_id)
        return {"id": job_id, "status": svc.get_transfer(user, job_id).status}

    @router.get(
        "/billing",
        response_model=BillingOut,
        tags=_TAG,
        summary="Your balance, its ledger and the credit bundles",
    )
    def billing(
        user: user_dep,
        limit: Annotated[int, Query(ge=1, le=_PAGE, description="entries per page")] = 100,
        before: Annotated[
            int | None,
            Query(
                ge=1,
                le=2**63 - 1,
                description="the `id` of the last entry of the page before",
            ),
        ] = None,
    ) -> dict[str, Any]:
        """The entries newest first, each with the balance after it.  A company's
        members share its balance (`company`)."""
        return dict(svc.billing.summary(user, limit=limit, before_id=before))

    @router.get(
        "/billing/ledger.csv",
        tags=_TAG,
        summary="Your ledger as CSV",
        response_class=Response,
        responses={200: {"content": {"text/csv": {}}}},
    )
    def ledger(user: user_dep) -> Response:
        """Columns date (ISO 8601 in your time zone), kind, amount, balance (plain
        decimals of the currency), note, transfer, payment; newest first, at most
        10000 entries."""
        rows = ledger_rows(svc, user)
        zone = svc.account_info(user).get("timezone") or "UTC"
        text = ledger_csv(rows, svc.billing.prices.currency, zone)
        return Response(
            text,
            media_type="text/csv; charset=utf-8",
            headers={"Content-Disposition": 'attachment; filename="yippiemove-ledger.csv"'},
        )

    @router.post(
        "/credit-purchases",
        response_model=CheckoutOut,
        tags=_TAG,
        summary="Buy a bundle of credits by card",
        responses={404: err("No such bundle"), 409: err(_OFF), 503: stripe_down},
    )
    def buy_bundle(body: CreditPurchaseIn, user: user_dep) -> dict[str, Any]:
        """A card payment of the bundle (its `number` in `GET /api/v1/billing`).
        Asking again within the hour answers the same unpaid payment (a retry buys
        once).  Once it succeeds the credit is in your balance."""
        return dict(svc.billing.checkout_bundle(user, int(body.bundle) - 1).as_dict())

    @router.get("/payments", response_model=PaymentList, tags=_TAG, summary="Your card payments")
    def payments(user: user_dep) -> dict[str, Any]:
        return {"payments": [p.as_dict() for p in svc.billing.payments(user)]}

    @router.get(
        "/payments/{payment_id}",
        response_model=PaymentOut,
        tags=_TAG,
        summary="A card payment",
        responses={404: no_payment},
    )
    def payment(payment_id: str, user: user_dep) -> dict[str, Any]:
        """Read from Stripe first while it is not settled, so a payment just made shows
        `succeeded` before Stripe's webhook arrives."""
        return dict(svc.billing.sync(user, _payment_id(payment_id)).as_dict())

    @router.get(
        "/payments/{payment_id}/receipt.pdf",
        tags=_TAG,
        summary="A paid payment's receipt (PDF)",
        response_class=Response,
        responses={
            200: {"content": {"application/pdf": {}}},
            404: no_payment,
            409: err("Not paid: no receipt"),
        },
    )
    async def receipt_pdf(payment_id: str, user: user_dep) -> Response:
        from yippiemove.service.receipts import receipt_pdf as render

        view = await run_in_threadpool(svc.billing.sync, user, _payment_id(payment_id))
        receipt = await run_in_threadpool(receipt_of, service, user, view.id)
        pdf = await run_in_threadpool(render, receipt)
        return Response(
            pdf,
            media_type="application/pdf",
            headers={"Content-Disposition": f'attachment; filename="{receipt.number}.pdf"'},
        )

    # -- operators (the 404 of a missing path for anyone else: web/operator_api.py) ----

    def api_operator(user: user_dep) -> int:
        if not is_operator(service, user):
            raise HTTPException(404, "not found")
        return int(user)

    Operator = Annotated[int, Depends(api_operator)]

    @router.post(
        OPERATOR_PREFIX + "/customers/{user_id}/credits",
        response_model=GrantOut,
        tags=["operator"],
        summary="Grant credits to a customer",
        responses={404: err("Not an operator, or no such customer"), 409: err(_OFF)},
    )
    def grant(op: Operator, user_id: Annotated[int, Path(ge=1)], body: GrantIn) -> dict[str, Any]:
        """A `grant` entry in the customer's ledger (their company's, if they share
        one).  A request retried with the same `key` grants once (`granted` false).
        Audited (`grant_credits`)."""
        return dict(svc.op_grant_credits(op, user_id, int(body.amount), body.note, body.key))
