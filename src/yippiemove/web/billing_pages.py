"""The billing pages (issue 20, service/billing.py): the quote step of the order, the
card payment page, the balance and its ledger (page and CSV), payments and their
receipts (HTML and PDF), an operator's grant, and Stripe's webhook.

The card is typed into Stripe.js's own element (``static/pay.js``): its number never
reaches this service, only Stripe; the page holds the PaymentIntent's client secret of
the customer's own payment, nothing else.  The CSP of a payment page allows Stripe.js's
origin (scripts, frames, its API calls) and nothing more.
"""

from __future__ import annotations

import datetime as dt
import json
import re
import secrets
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import HTMLResponse, PlainTextResponse, RedirectResponse, Response

from yippiemove.service.core import NotFound, ServiceError

from .api import check_job_id
from .security import CSP

if TYPE_CHECKING:
    from .pages import Pages

__all__ = ["add_routes", "quote_step"]

_PID = re.compile(r"[1-9][0-9]{0,17}")


def _billing(p: Pages) -> Any:
    """The service's billing when it is on, else None (stand-in services have none)."""
    billing = getattr(p.service, "billing", None)
    return billing if billing is not None and billing.enabled else None


def _pid(payment_id: str) -> int:
    if not _PID.fullmatch(payment_id):
        raise HTTPException(404, "no such payment")
    return int(payment_id)


def _stripe_csp(js_url: str) -> str:
    """The site's CSP with Stripe.js's origin allowed to load, frame and be called."""
    parts = urlsplit(js_url)
    origin = f"{parts.scheme}://{parts.netloc}"
    csp = CSP.replace("script-src 'self'", f"script-src 'self' {origin}")
    csp = csp.replace("connect-src 'self'", f"connect-src 'self' {origin}")
    return csp + f"; frame-src {origin}"


async def quote_step(
    p: Pages, request: Request, uid: int, form: Any, src: Any, dst: Any, spec: Any
) -> Response:
    """Billing on, "Start" without a quote: measure the source as the order will copy
    it, show the price line by line, and ask again (the same fields and the quote)."""
    from yippiemove.service.billing import quote_order

    try:
        quote = await quote_order(p.service, uid, src, dst, spec)
    except ServiceError as exc:
        return p.render(
            request, "order_quote.html", status=400, quote=None, error=str(exc), fields=[]
        )
    fields = [
        (k, v)
        for k, v in form.multi_items()
        if isinstance(v, str) and k not in ("csrf_token", "action", "quote_id")
    ]
    return p.render(request, "order_quote.html", quote=quote.as_dict(), fields=fields, error=None)


def add_routes(r: APIRouter, p: Pages) -> None:
    """Registers the billing pages on the pages' router."""
    from yippiemove.service.billing import receipt_of
    from yippiemove.service.receipts import ledger_csv, receipt_context, receipt_pdf

    from .billing_api import ledger_rows
    from .pages import flash

    p.templates.env.globals["billing_enabled"] = _billing(p) is not None
    # A form's one-time key (an operator's grant: the same form posted twice grants once).
    p.templates.env.globals["form_nonce"] = lambda: secrets.token_hex(12)

    def need(p: Pages) -> Any:
        billing = _billing(p)
        if billing is None:
            raise HTTPException(404, "payments are off on this service")
        return billing

    async def billing_page(request: Request) -> Response:
        uid = await p.user(request)
        billing = need(p)
        summary = await p.call(billing.summary, uid, 100)
        payments = await p.call(billing.payments, uid)
        return p.render(
            request,
            "billing.html",
            nav="billing",
            summary=summary,
            payments=[x.as_dict() for x in payments],
        )

    async def ledger_file(request: Request) -> Response:
        uid = await p.user(request)
        billing = need(p)
        summary = await p.call(billing.summary, uid, 1)
        info = await p.call(p.service.account_info, uid)
        rows = await p.call(ledger_rows, p.service, uid)
        text = ledger_csv(rows, summary["currency"], info.get("timezone") or "UTC")
        return PlainTextResponse(
            text,
            media_type="text/csv; charset=utf-8",
            headers={"Content-Disposition": 'attachment; filename="ledger.csv"'},
        )

    async def buy_bundle(request: Request, number: str) -> Response:
        uid = await p.user(request)
        await p.form(request)
        billing = need(p)
        if not number.isdigit() or not 0 < int(number) <= 1000:
            raise HTTPException(404, "no such bundle")
        try:
            checkout = await p.call(billing.checkout_bundle, uid, int(number) - 1)
        except NotFound:
            raise
        except ServiceError as exc:
            flash(request, f"The purchase could not start: {exc}", "error")
            return RedirectResponse("/billing", 303)
        return RedirectResponse(f"/payments/{checkout.payment.id}/pay", 303)

    def pay_response(request: Request, checkout: Any, back: str, **extra: Any) -> HTMLResponse:
        response = p.render(
            request,
            "pay.html",
            nav="billing",
            payment=checkout.payment.as_dict(),
            client_secret=checkout.client_secret,
            publishable_key=checkout.publishable_key,
            js_url=checkout.js_url,
            done_url=f"/payments/{checkout.payment.id}",
            back=back,
            **extra,
        )
        response.headers["content-security-policy"] = _stripe_csp(checkout.js_url)
        return response

    async def payment_pay(request: Request, payment_id: str) -> Response:
        uid = await p.user(request)
        billing = need(p)
        pid = _pid(payment_id)
        view = await p.call(billing.payment, uid, pid)
        if view.state == "succeeded":
            return RedirectResponse(f"/payments/{pid}", 303)
        checkout = await p.call(billing.checkout_payment, uid, pid)
        back = f"/transfers/{view.job_id}" if view.job_id else "/billing"
        return pay_response(request, checkout, back)

    async def transfer_pay(request: Request, job_id: str) -> Response:
        uid = await p.user(request)
        billing = need(p)
        job_id = check_job_id(job_id)
        charge = await p.call(billing.charge_of, uid, job_id)
        if charge is None or not charge["waiting"]:
            flash(request, "This transfer is not waiting for a payment.")
            return RedirectResponse(f"/transfers/{job_id}", 303)
        if charge["balance"] >= charge["price"]:
            return p.render(
                request,
                "pay.html",
                nav="transfers",
                covered=True,
                charge=charge,
                job_id=job_id,
                payment=None,
                back=f"/transfers/{job_id}",
            )
        try:
            checkout = await p.call(billing.checkout_order, uid, job_id)
        except NotFound:
            raise
        except ServiceError as exc:
            flash(request, f"The payment could not start: {exc}", "error")
            return RedirectResponse(f"/transfers/{job_id}", 303)
        return pay_response(request, checkout, f"/transfers/{job_id}", charge=charge, job_id=job_id)

    async def transfer_settle(request: Request, job_id: str) -> Response:
        uid = await p.user(request)
        await p.form(request)
        billing = need(p)
        job_id = check_job_id(job_id)
        try:
            await p.call(billing.settle, uid, job_id)
        except NotFound:
            raise
        except ServiceError as exc:
            flash(request, f"Could not pay from your credits: {exc}", "error")
            return RedirectResponse(f"/transfers/{job_id}/pay", 303)
        flash(request, "Paid from your credits: your transfer is on its way.", "running")
        return RedirectResponse(f"/transfers/{job_id}", 303)

    async def payment_page(request: Request, payment_id: str) -> Response:
        uid = await p.user(request)
        billing = need(p)
        pid = _pid(payment_id)
        view = await p.call(billing.sync, uid, pid)  # the webhook may come later
        if view.state in ("succeeded", "disputed"):
            receipt = receipt_context(await p.call(receipt_of, p.service, uid, pid))
            return p.render(
                request,
                "payment_receipt.html",
                receipt=receipt,
                pdf_url=f"/payments/{pid}/receipt.pdf",
            )
        return p.render(
            request,
            "payment.html",
            nav="billing",
            payment=view.as_dict(),
        )

    async def payment_pdf(request: Request, payment_id: str) -> Response:
        uid = await p.user(request)
        billing = need(p)
        pid = _pid(payment_id)
        await p.call(billing.payment, uid, pid)
        receipt = await p.call(receipt_of, p.service, uid, pid)
        return Response(
            receipt_pdf(receipt),
            media_type="application/pdf",
            headers={"Content-Disposition": f'inline; filename="{receipt.number}.pdf"'},
        )

    async def webhook(request: Request) -> Response:
        billing = getattr(p.service, "billing", None)
        if billing is None or not billing.enabled:
            raise HTTPException(404, "payments are off on this service")
        body = await request.body()
        try:
            done = await p.call(
                billing.handle_webhook, body, request.headers.get("stripe-signature")
            )
        except NotFound:
            raise
        except ServiceError as exc:  # refused (400), or Stripe away (503): sent again
            return Response(
                json.dumps({"error": str(exc)}),
                status_code=exc.status,
                media_type="application/json",
            )
        return Response(json.dumps({"received": True, "done": done}), media_type="application/json")

    async def operator_grant(request: Request, user_id: str) -> Response:
        from .operator import OperatorPages

        ops = OperatorPages(p)
        operator = await ops.operator(request)
        form = await p.form(request)
        need(p)
        if not user_id.isdigit():
            raise HTTPException(404, "no such customer")
        back = f"/operator/customers/{user_id}"
        try:
            amount = int(str(form.get("amount") or "").strip())
        except ValueError:
            flash(request, "Amount: a whole number of cents.", "error")
            return RedirectResponse(back, 303)
        note = str(form.get("note") or "")[:500]
        key = str(form.get("key") or "")[:100] or dt.datetime.now(dt.UTC).isoformat()
        try:
            done = await p.call(
                p.service.op_grant_credits, operator, int(user_id), amount, note, key
            )
        except NotFound:
            raise
        except ServiceError as exc:
            flash(request, f"Could not grant: {exc}", "error")
            return RedirectResponse(back, 303)
        granted = done["granted"]
        flash(request, "Credits granted." if granted else "Already granted (same request).")
        return RedirectResponse(back, 303)

    html = {"response_class": HTMLResponse}
    r.add_api_route("/billing", billing_page, methods=["GET"], **html)
    r.add_api_route("/billing/ledger.csv", ledger_file, methods=["GET"])
    r.add_api_route("/billing/bundles/{number}/buy", buy_bundle, methods=["POST"])
    r.add_api_route("/payments/{payment_id}", payment_page, methods=["GET"], **html)
    r.add_api_route("/payments/{payment_id}/pay", payment_pay, methods=["GET"], **html)
    r.add_api_route("/payments/{payment_id}/receipt.pdf", payment_pdf, methods=["GET"])
    r.add_api_route("/transfers/{job_id}/pay", transfer_pay, methods=["GET"], **html)
    r.add_api_route("/transfers/{job_id}/settle", transfer_settle, methods=["POST"])
    r.add_api_route("/stripe/webhook", webhook, methods=["POST"])
    r.add_api_route("/operator/customers/{user_id}/credits", operator_grant, methods=["POST"])
