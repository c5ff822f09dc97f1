"""The operator's console, /operator (issue 17; service/operator.py, docs/web.md).

Only for a logged-in operator: anyone else -- a customer, or nobody logged in -- gets
the 404 page of a path that does not exist, before anything else is looked at (the
form's CSRF token included), so the console's existence does not show.

- ``GET /operator``: queue and worker state, customers (``?q=`` part of the address),
  the latest transfers of all customers (``?status=``);
- ``GET /operator/customers/ID``: a customer, their transfers and batches, suspend
  (with a reason) or unsuspend;
- ``GET /operator/transfers/ID``: a transfer and its report, read-only (never a
  credential); cancel or requeue it;
- ``GET /operator/audit``: the audit log.
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from starlette.exceptions import HTTPException

from yippiemove.jobs.vocab import JobStatus
from yippiemove.service.core import ServiceError
from yippiemove.transfer.receipt import OUTCOMES, verification_method

from .api import check_job_id
from .operator_api import is_operator
from .reports import PAGE_SIZE, open_receipt, page_of

if TYPE_CHECKING:
    from .pages import Pages

__all__ = ["add_operator_pages"]

#: Transfers per page of the console's list.
JOBS_PAGE = 100


def flash(request: Request, text: str, kind: str = "ok") -> None:
    """A message on the next page (the pages' flash: web/pages.py)."""
    request.session.setdefault("flash", []).append([kind, text])


def _customer_id(value: str) -> int:
    """A customer id of a path; anything else is the 404 of a missing page."""
    if not (value.isascii() and value.isdigit()) or len(value) > 12:
        raise HTTPException(404, "There is no such page.")
    return int(value)


class OperatorPages:
    def __init__(self, pages: Pages) -> None:
        self.p = pages
        self.service = pages.service

    async def operator(self, request: Request) -> int:
        """The logged-in operator's id; the 404 of a missing page for anyone else."""
        uid = request.session.get("uid")
        if isinstance(uid, int) and await self.p.call(is_operator, self.service, uid):
            request.state.user_email = await self.p.call(self.service.user_email, uid)
            return uid
        raise HTTPException(404, "There is no such page.")

    def render(self, request: Request, name: str, status: int = 200, **context: Any) -> Response:
        return self.p.render(request, name, status, nav="operator", operator=True, **context)

    async def home(self, request: Request) -> Response:
        op = await self.operator(request)
        q = request.query_params.get("q", "")[:320]
        status = request.query_params.get("status") or None
        if status not in tuple(JobStatus):
            status = None
        queue = await self.p.call(self.service.op_queue, op)
        customers = await self.p.call(self.service.op_customers, op, q)
        # A page at a time (issue 18), on the customer list's keyset: "Older transfers"
        # carries the cursor; a cursor that is not one is the first page again.
        cursor = request.query_params.get("cursor") or None
        page = functools.partial(self.service.op_job_page, op, status, limit=JOBS_PAGE)
        try:
            jobs, nxt = await self.p.call(functools.partial(page, cursor=cursor))
        except ServiceError:
            jobs, nxt = await self.p.call(page)
            cursor = None
        query = {"status": status} if status else {}
        return self.render(
            request,
            "operator.html",
            queue=queue,
            customers=customers,
            jobs=jobs,
            older=f"/operator?{urlencode({**query, 'cursor': nxt})}" if nxt else None,
            newest=f"/operator?{urlencode(query)}" if cursor else None,
            q=q,
            current_status=status,
            statuses=list(JobStatus),
        )

    async def customer(self, request: Request, user_id: str) -> Response:
        op = await self.operator(request)
        uid = _customer_id(user_id)
        try:
            data = await self.p.call(self.service.op_customer, op, uid)
        except ServiceError as exc:
            raise HTTPException(404, "There is no such customer.") from exc
        return self.render(request, "operator_customer.html", customer=data)

    async def _act(self, request: Request, fn: Any, *args: Any, done: str, back: str) -> Response:
        try:
            await self.p.call(fn, *args)
        except ServiceError as exc:
            if getattr(exc, "status", 400) == 404:
                raise HTTPException(404, "There is no such page.") from exc
            flash(request, str(exc)[:1].upper() + str(exc)[1:], "error")
        else:
            flash(request, done)
        return RedirectResponse(back, 303)

    async def suspend(self, request: Request, user_id: str) -> Response:
        op = await self.operator(request)
        uid = _customer_id(user_id)
        form = await self.p.form(request)
        reason = str(form.get("reason", ""))
        return await self._act(
            request,
            self.service.op_suspend,
            op,
            uid,
            reason,
            done="Suspended: they cannot log in; running transfers cancelled, queued ones held.",
            back=f"/operator/customers/{uid}",
        )

    async def unsuspend(self, request: Request, user_id: str) -> Response:
        op = await self.operator(request)
        uid = _customer_id(user_id)
        await self.p.form(request)
        return await self._act(
            request,
            self.service.op_unsuspend,
            op,
            uid,
            done="Unsuspended: they can log in again; held transfers are queued.",
            back=f"/operator/customers/{uid}",
        )

    async def transfer(self, request: Request, job_id: str) -> Response:
        op = await self.operator(request)
        try:
            owner, job = await self.p.call(self.service.op_report, op, check_job_id(job_id))
        except ServiceError as exc:
            raise HTTPException(404, "There is no such page.") from exc
        report = data = None
        try:
            report = await self.p.call(self.service.report, owner, job["id"])
            receipt = await self.p.call(open_receipt, self.service, owner, job["id"])
            data = await self.p.call(page_of, receipt, 0, PAGE_SIZE, None)
        except ServiceError:  # not run yet
            pass
        return self.render(
            request,
            "operator_job.html",
            job=job,
            report=report,
            data=data,
            outcomes=OUTCOMES,
            verification=verification_method(report) if report else None,
        )

    async def cancel(self, request: Request, job_id: str) -> Response:
        op = await self.operator(request)
        form = await self.p.form(request)
        jid = check_job_id(job_id)
        return await self._act(
            request,
            self.service.op_cancel,
            op,
            jid,
            str(form.get("reason", "")),
            done="Cancel asked: a running transfer stops within seconds.",
            back=f"/operator/transfers/{jid}",
        )

    async def requeue(self, request: Request, job_id: str) -> Response:
        op = await self.operator(request)
        await self.p.form(request)
        jid = check_job_id(job_id)
        return await self._act(
            request,
            self.service.op_requeue,
            op,
            jid,
            done="Requeued.",
            back=f"/operator/transfers/{jid}",
        )

    async def audit(self, request: Request) -> Response:
        op = await self.operator(request)
        try:
            page = max(1, int(request.query_params.get("page", "1")))
        except ValueError:
            page = 1
        log = await self.p.call(self.service.audit_log, op, 100, (page - 1) * 100)
        return self.render(
            request,
            "operator_audit.html",
            log=log,
            page=page,
            pages=max(1, -(-log["total"] // 100)),
        )


def add_operator_pages(r: APIRouter, pages: Pages) -> None:
    op = OperatorPages(pages)
    html = {"response_class": HTMLResponse}
    r.add_api_route("/operator", op.home, methods=["GET"], **html)
    r.add_api_route("/operator/audit", op.audit, methods=["GET"], **html)
    r.add_api_route("/operator/customers/{user_id}", op.customer, methods=["GET"], **html)
    r.add_api_route("/operator/customers/{user_id}/suspend", op.suspend, methods=["POST"])
    r.add_api_route("/operator/customers/{user_id}/unsuspend", op.unsuspend, methods=["POST"])
    r.add_api_route("/operator/transfers/{job_id}", op.transfer, methods=["GET"], **html)
    r.add_api_route("/operator/transfers/{job_id}/cancel", op.cancel, methods=["POST"])
    r.add_api_route("/operator/transfers/{job_id}/requeue", op.requeue, methods=["POST"])
