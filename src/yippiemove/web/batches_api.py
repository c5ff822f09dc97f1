"""The REST routes of batches (issue 17, journey-batches; the pages are web/batches.py).

No ``from __future__ import annotations`` here: FastAPI reads the endpoint annotations
(the API's ``User`` dependency, passed in) at runtime.
"""

from typing import TYPE_CHECKING, Any

from fastapi import APIRouter
from fastapi.responses import Response
from starlette.concurrency import run_in_threadpool

from yippiemove.service.core import Conflict, ServiceError

from .batch_schemas import BatchIn, BatchList, BatchOut, BatchRetryOut, BatchSettleOut

if TYPE_CHECKING:
    from yippiemove.service.core import Service

__all__ = ["add_batch_api", "batch_rows", "check_batch_id", "csv_download"]


def check_batch_id(batch_id: str) -> str:
    from yippiemove.service.core import NotFound

    if not (isinstance(batch_id, str) and 0 < len(batch_id) <= 32 and batch_id.isalnum()):
        raise NotFound("no such batch")
    return batch_id


class LinesRefused(ServiceError):
    """Lines of a batch that are not in a usable shape: nothing was stored."""

    status = 422


def batch_rows(service: "Service", data: BatchIn) -> list[Any]:
    """The batch's rows ``(line, source, dest)`` from its CSV or JSON lines, or
    :class:`LinesRefused` naming every bad line (never a password)."""
    from yippiemove.service.core import Account

    if (data.csv is None) == (data.lines is None):
        raise LinesRefused("give the mailbox pairs as `lines` or as `csv` (one of the two)")
    if data.csv is not None:
        rows, errors = service.parse_batch_csv(data.csv)
    else:
        rows, errors = [], []
        pinned: dict[tuple[str, int], str | None] = {}
        for n, line in enumerate(data.lines or [], start=1):
            try:
                job = service.make_spec(
                    Account.from_dict(line.source.model_dump(), "source"),
                    Account.from_dict(line.dest.model_dump(), "dest"),
                    pinned=pinned,
                )
            except ServiceError as exc:
                errors.append(f"line {n}: {exc}")
                continue
            rows.append((n, job.source, job.dest))
    if errors:
        shown = "; ".join(errors[:20]) + (
            f"; and {len(errors) - 20} more" if len(errors) > 20 else ""
        )
        raise LinesRefused(f"nothing was stored: {shown}")
    if not rows:
        raise LinesRefused("the batch has no mailbox pairs to move")
    return rows


def csv_download(text: str, batch_id: str) -> Response:
    return Response(
        text,
        media_type="text/csv; charset=utf-8",
        headers={
            "Content-Disposition": f'attachment; filename="batch-{batch_id}.csv"',
            "Cache-Control": "no-store",
        },
    )


def add_batch_api(router: APIRouter, service: "Service", user_dep: Any, errors: Any) -> None:
    """The REST routes, registered on the API router (``user_dep``: its bearer-token
    user dependency; ``errors``: the error model)."""

    not_found = {"model": errors, "description": "No such batch (or not yours)"}

    @router.post(
        "/batches",
        status_code=202,
        response_model=BatchOut,
        summary="Order a batch: its lines are checked (pre-flight) before anything starts",
        tags=["batches"],
        responses={
            400: {"model": errors, "description": "Refused by policy"},
            422: {"model": errors, "description": "Invalid body, or lines in a bad shape"},
            429: {"model": errors, "description": "Too many of your batches being checked"},
        },
    )
    async def create_batch(body: BatchIn, user: user_dep) -> dict[str, Any]:
        """Stored at once, answered 202 while every line's source and destination are
        logged in to (at most `batch_check_parallel` lines at a time); poll
        `GET /api/v1/batches/{id}`.  A bad line says its number, the side and why.
        Nothing starts until every line passed (with `autostart`), or until
        `POST .../start` starts the good ones."""
        rows = await run_in_threadpool(batch_rows, service, body)
        return await run_in_threadpool(
            lambda: service.create_batch(
                user,
                rows,
                name=body.name,
                notify_end_users=body.notify_end_users,
                autostart=body.autostart,
            )
        )

    @router.get("/batches", response_model=BatchList, summary="List your batches", tags=["batches"])
    def list_batches(user: user_dep) -> dict[str, Any]:
        return {"batches": service.list_batches(user)}

    @router.get(
        "/batches/{batch_id}",
        response_model=BatchOut,
        summary="A batch: pre-flight progress, each line's status, totals, failures",
        tags=["batches"],
        responses={404: not_found},
    )
    def get_batch(batch_id: str, user: user_dep) -> dict[str, Any]:
        return service.get_batch(user, check_batch_id(batch_id))

    @router.post(
        "/batches/{batch_id}/start",
        response_model=BatchOut,
        summary="Start the lines that passed the pre-flight",
        tags=["batches"],
        responses={
            404: not_found,
            409: {"model": errors, "description": "Still checking, or no line can start"},
        },
    )
    def start_batch(batch_id: str, user: user_dep) -> dict[str, Any]:
        return service.start_batch(user, check_batch_id(batch_id))

    @router.post(
        "/batches/{batch_id}/settle",
        response_model=BatchSettleOut,
        summary="Pay the batch's waiting transfers from your credits",
        tags=["batches", "billing"],
        responses={
            404: not_found,
            409: {
                "model": errors,
                "description": "No transfer of the batch waits for a payment, or payments "
                "are off on this service",
            },
        },
    )
    def settle_batch(batch_id: str, user: user_dep) -> dict[str, Any]:
        """Billing on (issue 20): the batch's transfers that wait for their payment are
        paid from the balance, line by line while it covers them; those still waiting
        are listed (buy credits: `POST /api/v1/credit-purchases`)."""
        batch_id = check_batch_id(batch_id)
        service.get_batch(user, batch_id)  # yours, or 404
        billing = getattr(service, "billing", None)
        if billing is None or not billing.enabled:
            raise Conflict("payments are off on this service")
        return dict(billing.settle_batch(user, batch_id))

    @router.post(
        "/batches/{batch_id}/retry-failed",
        response_model=BatchRetryOut,
        summary="Run the batch's failed transfers again (each resumes where it stopped)",
        tags=["batches"],
        responses={
            404: not_found,
            409: {"model": errors, "description": "Not started, or nothing failed"},
        },
    )
    def retry_failed(batch_id: str, user: user_dep) -> dict[str, Any]:
        """A transfer whose password was refused takes a new one first
        (`PUT /api/v1/transfers/{job_id}/credentials`); one that cannot run again is
        listed in `skipped` with the reason."""
        return service.retry_failed(user, check_batch_id(batch_id))

    @router.get(
        "/batches/{batch_id}/results.csv",
        summary="The batch's results as CSV, one row per line",
        tags=["batches"],
        response_class=Response,
        responses={200: {"content": {"text/csv": {}}}, 404: not_found},
    )
    def results_csv(batch_id: str, user: user_dep) -> Response:
        batch_id = check_batch_id(batch_id)
        return csv_download(service.batch_results_csv(user, batch_id), batch_id)

    @router.delete(
        "/batches/{batch_id}",
        status_code=204,
        response_class=Response,
        summary="Drop a batch: its lines and the passwords of lines not started",
        tags=["batches"],
        responses={
            404: not_found,
            409: {"model": errors, "description": "Still checking"},
        },
    )
    def drop_batch(batch_id: str, user: user_dep) -> Response:
        """Transfers already started stay."""
        service.drop_batch(user, check_batch_id(batch_id))
        return Response(status_code=204)
