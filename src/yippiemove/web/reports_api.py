"""The REST routes of readable reports and undo (web/reports.py has the pages).

No ``from __future__ import annotations`` here: FastAPI reads the endpoint annotations
(the API's ``User`` dependency, passed in) at runtime.
"""

from typing import TYPE_CHECKING, Any

from fastapi import APIRouter, Query
from starlette.concurrency import run_in_threadpool

from .api import check_job_id
from .reports import API_LIMIT, csv_response, open_receipt, page_of, valid_outcome

if TYPE_CHECKING:
    from yippiemove.service.core import Service

__all__ = ["add_report_api"]


def add_report_api(router: APIRouter, service: "Service", user_dep: Any, errors: Any) -> None:
    """The REST routes, registered on the API router (``user_dep``: its bearer-token
    user dependency; ``errors``: the error model)."""

    @router.get(
        "/transfers/{job_id}/messages",
        summary="Every message of the transfer: what was copied, already there, failed",
        responses={
            200: {"content": {"application/json": {}, "text/csv": {}}},
            404: {"model": errors, "description": "No such transfer, or it has not run"},
        },
    )
    async def list_messages(
        job_id: str,
        user: user_dep,
        offset: int = Query(0, ge=0),
        limit: int = Query(100, ge=1, le=API_LIMIT),
        outcome: str | None = Query(None, description="copied, present, altered, failed"),
        format: str = Query("json", pattern="^(json|csv)$"),
    ) -> Any:
        """Folders (counts), then messages in folder and UID order: source UID, size,
        Message-ID, outcome, destination UID, and why a message failed.  `format=csv`:
        every message as CSV (no paging).  Never a message body or a password."""
        job_id = check_job_id(job_id)
        receipt = await run_in_threadpool(open_receipt, service, user, job_id)
        if format == "csv":
            return csv_response(receipt, job_id)
        return await run_in_threadpool(page_of, receipt, offset, limit, valid_outcome(outcome))

    @router.get(
        "/transfers/{job_id}/undo",
        summary="Preview an undo: how many messages it removes, per folder",
        responses={409: {"model": errors, "description": "Running, or no password stored"}},
    )
    async def undo_preview(job_id: str, user: user_dep) -> dict[str, Any]:
        """Reads the destination only: nothing changes."""
        return await run_in_threadpool(service.undo_preview, user, check_job_id(job_id))

    @router.post(
        "/transfers/{job_id}/undo",
        summary="Undo: remove from the destination exactly the messages the job appended",
        responses={409: {"model": errors, "description": "Running, no password, or refused"}},
    )
    async def undo_apply(job_id: str, user: user_dep) -> dict[str, Any]:
        """Only those messages, only in folders whose UIDVALIDITY is unchanged (others are
        refused, saying why); messages added since and the source are never touched."""
        return await run_in_threadpool(service.undo_apply, user, check_job_id(job_id))
