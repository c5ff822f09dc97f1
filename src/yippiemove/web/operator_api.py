"""The operators' REST API, /api/v1/operator/... (issue 17; service/operator.py).

Only for API tokens of an operator (``yippiemove user set-role EMAIL operator``): any
other valid token gets 404, the answer of a path that does not exist, so the console's
existence does not show to customers (no token at all is 401, like every API route).
Nothing here ever contains a credential: jobs are ``OperatorJobOut`` (a whitelist).

No ``from __future__ import annotations`` here: FastAPI reads the endpoint annotations
(the API's ``User`` dependency, passed in) at runtime.
"""

import functools
from typing import TYPE_CHECKING, Annotated, Any

from fastapi import APIRouter, Depends, Path, Query
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException

from yippiemove.jobs.vocab import JobStatus
from yippiemove.service.operator import LIST_MAX

from .api import check_job_id
from .reports import API_LIMIT, open_receipt, page_of, valid_outcome
from .schemas import _unset

if TYPE_CHECKING:
    from yippiemove.service.core import Service

__all__ = ["OPERATOR_PREFIX", "add_operator_api", "is_operator"]

OPERATOR_PREFIX = "/operator"
_TAG = ["operator"]


def is_operator(service: Any, user_id: int) -> bool:
    """Whether the (logged-in or token) user is an operator; a service without operators
    (the tests' stand-ins) has none."""
    check = getattr(service, "is_operator", None)
    return bool(check is not None and check(user_id))


# -- models -------------------------------------------------------------------------------


class SideOut(BaseModel):
    host: str | None = None
    port: int | None = None
    security: str | None = None
    username: str | None = None


class OperatorJobOut(BaseModel):
    """A job as operators see it: never a credential, not even masked."""

    id: str
    user_id: int
    email: str = Field(description="the customer's address")
    status: str
    phase: str | None = Field(None, description="`held`: queued, its customer is suspended")
    held: bool
    batch_id: str | None = None
    source: SideOut
    dest: SideOut
    created: float
    started: float | None = None
    finished: float | None = None
    messages_done: int
    messages_total: int
    bytes_done: int
    error: str | None = None
    runs: int
    attempts: int
    host: str | None = Field(None, description="the worker host that runs it, or ran it last")
    cancel_requested: bool


class CustomerOut(BaseModel):
    id: int
    email: str
    role: str = Field(description="`customer` or `operator`")
    created: float
    suspended: bool
    suspended_reason: str | None = None
    suspended_at: float | None = None
    jobs: dict[str, int] = Field(description="the customer's jobs per status")


class BatchOut(BaseModel):
    id: str
    jobs: dict[str, int] = Field(description="the batch's jobs per status")


class CustomerDetailOut(CustomerOut):
    transfers: list[OperatorJobOut]
    batches: list[BatchOut]


class CustomerList(BaseModel):
    customers: list[CustomerOut]


class OperatorJobList(BaseModel):
    """One page of all customers' transfers, newest first."""

    transfers: list[OperatorJobOut]
    next_cursor: str | None = Field(
        None,
        exclude_if=_unset,
        description="there are older transfers: pass it as `cursor` for the next page; "
        "absent on the last page",
    )


class SuspendIn(BaseModel):
    reason: str = Field(min_length=1, max_length=500, description="why (kept, and audited)")


class CancelIn(BaseModel):
    reason: str = Field("", max_length=500, description="why (audited)")


class LocalPoolOut(BaseModel):
    host: str
    workers: int
    consuming: bool
    draining: bool


class QueueOut(BaseModel):
    queued: int = Field(description="jobs queued (held ones included)")
    held: int = Field(description="queued jobs of suspended customers: not started")
    running: int
    queue_messages: int | None = Field(
        None, description="messages waiting in the job queue (null: the queue cannot tell)"
    )
    hosts: list[dict[str, Any]] = Field(
        description="worker hosts: name, role, address, capacity, version, heartbeat age, "
        "state (up, draining, drained, gone), running job ids"
    )
    local: LocalPoolOut = Field(description="this process's worker pool")


class AuditEntryOut(BaseModel):
    id: int
    when: float
    operator_id: int | None = Field(None, description="null: the command line")
    operator_email: str
    action: str = Field(
        description="set_role, cancel, requeue, suspend, unsuspend, read_report, grant_credits"
    )
    target_kind: str = Field(description="`customer` or `job`")
    target_id: str
    detail: dict[str, Any]


class AuditLog(BaseModel):
    total: int
    entries: list[AuditEntryOut]


class OperatorReportOut(BaseModel):
    transfer: OperatorJobOut
    report: dict[str, Any] | None = Field(
        None, description="the mover's report of the latest run (null: not run yet)"
    )
    messages: dict[str, Any] | None = Field(
        None, description="folders and messages, as GET /transfers/{job_id}/messages"
    )


# -- routes -------------------------------------------------------------------------------


def add_operator_api(router: APIRouter, service: "Service", user_dep: Any, errors: Any) -> None:
    """The operators' routes, registered on the API router (``user_dep``: its
    bearer-token user dependency; ``errors``: the error model)."""

    def api_operator(user: user_dep) -> int:
        if not is_operator(service, user):
            raise HTTPException(404, "not found")  # what a missing path answers
        return int(user)

    Operator = Annotated[int, Depends(api_operator)]
    p = OPERATOR_PREFIX
    not_found = {404: {"model": errors, "description": "Not an operator, or no such object"}}
    conflict = {409: {"model": errors, "description": "Not possible in the current state"}}

    @router.get(p + "/customers", tags=_TAG, summary="Customers", response_model=CustomerList)
    async def customers(
        op: Operator, q: str = Query("", max_length=320, description="part of the address")
    ) -> dict[str, Any]:
        """Every customer (or those whose address contains `q`), with their jobs per status
        and whether they are suspended."""
        return {"customers": await run_in_threadpool(service.op_customers, op, q)}

    @router.get(
        p + "/customers/{user_id}",
        tags=_TAG,
        summary="A customer, their transfers and batches",
        response_model=CustomerDetailOut,
        responses=not_found,
    )
    async def customer(op: Operator, user_id: Annotated[int, Path(ge=1)]) -> dict[str, Any]:
        return await run_in_threadpool(service.op_customer, op, user_id)

    @router.post(
        p + "/customers/{user_id}/suspend",
        tags=_TAG,
        summary="Suspend a customer",
        response_model=CustomerOut,
        responses={**not_found, **conflict},
    )
    async def suspend(
        op: Operator, user_id: Annotated[int, Path(ge=1)], body: SuspendIn
    ) -> dict[str, Any]:
        """They cannot log in or use their API tokens (403) any more; their running
        transfers are cancelled (their passwords deleted when they stop) and their queued
        ones held (not started).  Audited."""
        return await run_in_threadpool(service.op_suspend, op, user_id, body.reason)

    @router.post(
        p + "/customers/{user_id}/unsuspend",
        tags=_TAG,
        summary="Unsuspend a customer",
        response_model=CustomerOut,
        responses={**not_found, **conflict},
    )
    async def unsuspend(op: Operator, user_id: Annotated[int, Path(ge=1)]) -> dict[str, Any]:
        """They can log in and use their tokens again; their held transfers go back to
        the queue.  Audited."""
        return await run_in_threadpool(service.op_unsuspend, op, user_id)

    @router.get(
        p + "/transfers",
        tags=_TAG,
        summary="All customers' transfers",
        response_model=OperatorJobList,
        responses={400: {"model": errors, "description": "A `cursor` this list did not give"}},
    )
    async def transfers(
        op: Operator,
        status: JobStatus | None = None,
        user_id: int | None = Query(None, ge=1, description="one customer's"),
        batch_id: str | None = Query(None, max_length=32, description="one batch's"),
        limit: int = Query(LIST_MAX, ge=1, le=LIST_MAX, description="transfers per page"),
        cursor: str | None = Query(
            None,
            max_length=200,
            description="the `next_cursor` of the page before (opaque); none: the first page",
        ),
    ) -> dict[str, Any]:
        """Newest first, a page at a time (500 by default): follow `next_cursor` until it
        is absent.  Transfers ordered meanwhile come on the first page and never shift
        the pages after a cursor."""
        rows, nxt = await run_in_threadpool(
            functools.partial(
                service.op_job_page,
                op,
                str(status) if status else None,
                user_id,
                batch_id,
                cursor=cursor,
                limit=limit,
            )
        )
        return {"transfers": rows, "next_cursor": nxt}

    @router.get(
        p + "/transfers/{job_id}",
        tags=_TAG,
        summary="One transfer, any customer's",
        response_model=OperatorJobOut,
        responses=not_found,
    )
    async def transfer(op: Operator, job_id: str) -> dict[str, Any]:
        return await run_in_threadpool(service.op_job, op, check_job_id(job_id))

    @router.get(
        p + "/transfers/{job_id}/report",
        tags=_TAG,
        summary="A transfer's report, read-only",
        response_model=OperatorReportOut,
        responses=not_found,
    )
    async def report(
        op: Operator,
        job_id: str,
        offset: int = Query(0, ge=0),
        limit: int = Query(100, ge=1, le=API_LIMIT),
        outcome: str | None = Query(None, description="copied, present, altered, failed"),
    ) -> dict[str, Any]:
        """The mover's report and the messages, as the customer sees them (never a
        password or a message body).  Reading it is audited."""
        from yippiemove.service.core import ServiceError

        owner, row = await run_in_threadpool(service.op_report, op, check_job_id(job_id))
        out: dict[str, Any] = {"transfer": row, "report": None, "messages": None}
        try:
            out["report"] = await run_in_threadpool(service.report, owner, row["id"])
            receipt = await run_in_threadpool(open_receipt, service, owner, row["id"])
            out["messages"] = await run_in_threadpool(
                page_of, receipt, offset, limit, valid_outcome(outcome)
            )
        except ServiceError:  # not run yet
            pass
        return out

    @router.post(
        p + "/transfers/{job_id}/cancel",
        tags=_TAG,
        summary="Cancel any transfer",
        response_model=OperatorJobOut,
        responses={**not_found, **conflict},
    )
    async def cancel(op: Operator, job_id: str, body: CancelIn | None = None) -> dict[str, Any]:
        """Queued: cancelled at once; running: stopped by its worker within seconds.
        Audited (with the reason, if given)."""
        reason = body.reason if body is not None else ""
        return await run_in_threadpool(service.op_cancel, op, check_job_id(job_id), reason)

    @router.post(
        p + "/transfers/{job_id}/requeue",
        tags=_TAG,
        summary="Requeue any transfer",
        response_model=OperatorJobOut,
        responses={**not_found, **conflict},
    )
    async def requeue(op: Operator, job_id: str) -> dict[str, Any]:
        """Ended: runs again (only what is missing is copied; needs its stored
        passwords); queued: handed to the queue again.  Running: 409.  Audited."""
        return await run_in_threadpool(service.op_requeue, op, check_job_id(job_id))

    @router.get(p + "/queue", tags=_TAG, summary="Queue and worker state", response_model=QueueOut)
    async def queue(op: Operator) -> dict[str, Any]:
        return await run_in_threadpool(service.op_queue, op)

    @router.get(p + "/audit", tags=_TAG, summary="The audit log", response_model=AuditLog)
    async def audit(
        op: Operator,
        limit: int = Query(100, ge=1, le=500),
        offset: int = Query(0, ge=0),
    ) -> dict[str, Any]:
        """Every operator action, newest first: who, when, what, on what (never a secret)."""
        return await run_in_threadpool(service.audit_log, op, limit, offset)
