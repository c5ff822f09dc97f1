"""The REST API's batch models (issue 17, journey-batches): web/batches_api.py."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from .schemas import AccountIn, StatusName

__all__ = [
    "BatchIn",
    "BatchLineIn",
    "BatchLineOut",
    "BatchList",
    "BatchOut",
    "BatchRetryOut",
    "BatchSummaryOut",
]

BatchState = Literal["checking", "checked", "running", "done"]
LineCheck = Literal["waiting", "checking", "ok", "bad", "started", "refused"]


class BatchLineIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    source: AccountIn
    dest: AccountIn


class BatchIn(BaseModel):
    """A batch: the mailbox pairs as JSON `lines` (numbered from 1) or as a `csv` text
    (the batch page's columns: `source_host, source_port, source_security,
    source_username, source_password, dest_host, dest_port, dest_security,
    dest_username, dest_password`, a header line optional); exactly one of the two."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field("", max_length=200, pattern=r"^[^\x00-\x1f\x7f]*$")
    lines: list[BatchLineIn] | None = Field(None, min_length=1, max_length=10000)
    csv: str | None = Field(None, min_length=1, max_length=1024 * 1024)
    notify_end_users: bool = Field(
        False,
        description="mail each end user (the source user name, when it is an e-mail "
        "address) once when their mailbox is done",
    )
    autostart: bool = Field(
        True,
        description="start by itself when every line passed the pre-flight; otherwise "
        "(and when a line is bad) `POST .../start` starts the good lines",
    )


class LineProblemOut(BaseModel):
    side: Literal["source", "dest"] | None = Field(description="which account, when known")
    kind: str | None = Field(description="policy/failures.py's kind: auth, unreachable...")
    message: str = Field(description="what is wrong, in plain words")
    detail: str = Field(description="the check's own text (what the server answered)")


class BatchLineOut(BaseModel):
    line: int = Field(description="the line number in the file (or the JSON list, from 1)")
    source: dict[str, str | int] = Field(description="host, port, security, username")
    dest: dict[str, str | int] = Field(description="host, port, security, username")
    check: LineCheck = Field(
        description="the pre-flight's verdict (`ok`, `bad`), then `started`, or `refused` "
        "when its transfer could not be made"
    )
    problem: LineProblemOut | None = Field(description="why the line is bad or refused")
    job_id: str | None = Field(description="the line's transfer, once started")
    status: StatusName | None
    messages_done: int
    messages_total: int
    bytes_done: int
    bytes_total: int
    failed_messages: int
    error: str | None = Field(description="why the transfer stopped, when it did")
    price: int | None = Field(
        None,
        description="billing on (issue 20): the line's price in minor units, measured by "
        "its pre-flight (null: not priced)",
    )


class BatchTotalsOut(BaseModel):
    lines: int
    ok: int = Field(description="passed the pre-flight, not started")
    bad: int
    refused: int
    waiting: int = Field(description="not checked yet")
    queued: int
    running: int
    done: int
    failed: int
    cancelled: int
    awaiting_payment: int = Field(0, description="ordered, waiting for their payment")
    messages_done: int
    messages_total: int
    bytes_done: int
    bytes_total: int
    failed_messages: int


class BatchPriceOut(BaseModel):
    total: int = Field(description="the sum of the lines' prices (bad lines left out)")
    currency: str


class BatchSummaryOut(BaseModel):
    id: str
    name: str
    kind: Literal["csv", "domain"]
    state: BatchState
    created: float
    started: float | None
    notify_end_users: bool
    autostart: bool
    lines_total: int
    lines_checked: int = Field(description="lines the pre-flight has judged so far")
    lines_bad: int
    totals: BatchTotalsOut
    can_start: bool
    can_retry: bool
    price: BatchPriceOut | None = Field(
        None, description="billing on (issue 20): the priced lines' total"
    )


class BatchOut(BatchSummaryOut):
    lines: list[BatchLineOut]


class BatchList(BaseModel):
    batches: list[BatchSummaryOut]


class SkippedOut(BaseModel):
    line: int | None
    message: str


class BatchSettleOut(BaseModel):
    settled: list[str] = Field(description="transfers paid from the credits now (queued)")
    waiting: list[str] = Field(description="transfers still waiting: the credits ran out")
    balance: int = Field(description="the credits left, in minor units")


class BatchRetryOut(BaseModel):
    retried: list[int] = Field(description="line numbers whose transfer runs again")
    skipped: list[SkippedOut] = Field(description="failed lines that could not run again, why")
    batch: BatchOut
