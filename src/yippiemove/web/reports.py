"""Readable reports and undo, in the web and in the REST API (issue 17).

Pages (session cookie; forms carry the CSRF token):

- ``GET /transfers/ID/messages``: folders, then messages, a page at a time
  (``?page=N&outcome=failed``), with how they were verified;
- ``GET /transfers/ID/report.csv``: every message as CSV;
- ``GET /transfers/ID/receipt.html``: a printable receipt (print CSS);
- ``GET /transfers/ID/undo``: what an undo would remove, per folder, and a confirm
  button; ``POST`` there does it and shows what was removed.

REST (bearer token, web/reports_api.py): ``GET /api/v1/transfers/ID/messages`` (JSON,
``offset``/``limit``, or ``format=csv``), ``GET /api/v1/transfers/ID/undo`` (preview),
``POST`` (undo).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, Response, StreamingResponse
from starlette.concurrency import iterate_in_threadpool

from yippiemove.service.core import NotFound, ServiceError
from yippiemove.transfer.receipt import (
    OUTCOMES,
    Receipt,
    ReceiptError,
    csv_text,
    verification_method,
)

from .api import check_job_id, public_view
from .schemas import TERMINAL

if TYPE_CHECKING:
    from yippiemove.service.core import Service

    from .pages import Pages

__all__ = [
    "API_LIMIT",
    "PAGE_SIZE",
    "add_report_pages",
    "csv_response",
    "open_receipt",
    "page_of",
]

PAGE_SIZE = 100  # messages per page of the web report
API_LIMIT = 1000  # most messages per REST answer


def open_receipt(service: Service, user_id: int, job_id: str) -> Receipt:
    """The job's per-message record (its state file, read-only); NotFound before it ran."""
    path = service.state_file(user_id, job_id)
    try:
        return Receipt(Path(path))
    except ReceiptError as exc:
        raise NotFound(str(exc)) from None


def valid_outcome(value: str | None) -> str | None:
    return value if value in OUTCOMES else None


def csv_response(receipt: Receipt, job_id: str) -> StreamingResponse:
    def chunks() -> Iterator[str]:
        try:
            yield from csv_text(receipt.all_lines())
        finally:
            receipt.close()

    return StreamingResponse(
        iterate_in_threadpool(chunks()),
        media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": f'attachment; filename="yippiemove-{job_id}-messages.csv"'},
    )


def page_of(receipt: Receipt, offset: int, limit: int, outcome: str | None) -> dict[str, Any]:
    try:
        return {
            "total": receipt.count(outcome),
            "offset": offset,
            "limit": limit,
            "outcome": outcome,
            "counts": {k: receipt.count(k) for k in OUTCOMES},
            "folders": [asdict(f) for f in receipt.folders()],
            "messages": [m.as_dict() for m in receipt.lines(offset, limit, outcome)],
        }
    finally:
        receipt.close()


class ReportPages:
    """The report and undo pages, on the pages' helpers (user, call, render)."""

    def __init__(self, pages: Pages) -> None:
        self.p = pages
        self.service = pages.service

    async def _job(self, request: Request, job_id: str) -> tuple[int, dict[str, Any]]:
        uid = await self.p.user(request)
        view = await self.p.call(self.service.get_transfer, uid, check_job_id(job_id))
        return uid, public_view(view)

    async def _report(self, uid: int, job: dict[str, Any]) -> dict[str, Any] | None:
        try:
            return await self.p.call(self.service.report, uid, job["id"])
        except ServiceError:
            return None

    async def messages(self, request: Request, job_id: str) -> Response:
        uid, job = await self._job(request, job_id)
        try:
            page = max(1, int(request.query_params.get("page", "1")))
        except ValueError:
            page = 1
        outcome = valid_outcome(request.query_params.get("outcome"))
        receipt = await self.p.call(open_receipt, self.service, uid, job["id"])
        data = await self.p.call(page_of, receipt, (page - 1) * PAGE_SIZE, PAGE_SIZE, outcome)
        report = await self._report(uid, job)
        return self.p.render(
            request,
            "report.html",
            job=job,
            data=data,
            page=page,
            pages=max(1, -(-data["total"] // PAGE_SIZE)),
            outcome=outcome,
            outcomes=OUTCOMES,
            verification=verification_method(report),
            report=report,
        )

    async def csv(self, request: Request, job_id: str) -> Response:
        uid, job = await self._job(request, job_id)
        receipt = await self.p.call(open_receipt, self.service, uid, job["id"])
        return csv_response(receipt, job["id"])

    async def receipt(self, request: Request, job_id: str) -> Response:
        uid, job = await self._job(request, job_id)
        report = await self._report(uid, job)
        try:
            receipt = await self.p.call(open_receipt, self.service, uid, job["id"])
            data = await self.p.call(page_of, receipt, 0, 0, None)
        except ServiceError:
            data = None
        undone = await self.p.call(self.service.undo_result, uid, job["id"])
        return self.p.render(
            request,
            "receipt.html",
            job=job,
            report=report,
            data=data,
            undone=undone,
            verification=verification_method(report),
        )

    async def undo_page(self, request: Request, job_id: str) -> Response:
        uid, job = await self._job(request, job_id)
        error = preview = None
        if job["status"] not in TERMINAL:
            error = "The transfer is still running: cancel it or let it end first."
        else:
            try:
                preview = await self.p.call(self.service.undo_preview, uid, job["id"])
            except ServiceError as exc:
                error = str(exc)
        return self.p.render(
            request, "undo.html", job=job, preview=preview, result=None, error=error
        )

    async def undo_post(self, request: Request, job_id: str) -> Response:
        uid, job = await self._job(request, job_id)
        await self.p.form(request)
        error = result = None
        try:
            result = await self.p.call(self.service.undo_apply, uid, job["id"])
        except ServiceError as exc:
            error = str(exc)
        return self.p.render(
            request,
            "undo.html",
            status=200 if error is None else 409,
            job=job,
            preview=None,
            result=result,
            error=error,
        )


def add_report_pages(r: APIRouter, pages: Pages) -> None:
    rp = ReportPages(pages)
    html = {"response_class": HTMLResponse}
    r.add_api_route("/transfers/{job_id}/messages", rp.messages, methods=["GET"], **html)
    r.add_api_route("/transfers/{job_id}/report.csv", rp.csv, methods=["GET"])
    r.add_api_route("/transfers/{job_id}/receipt.html", rp.receipt, methods=["GET"], **html)
    r.add_api_route("/transfers/{job_id}/undo", rp.undo_page, methods=["GET"], **html)
    r.add_api_route("/transfers/{job_id}/undo", rp.undo_post, methods=["POST"], **html)
