"""A customer's transfer list a page at a time (issue 18): keyset pagination on
(created, id), newest first, done in SQL, and the summary form of a transfer (no rate
history, no per-folder details).  docs/design.md "Many jobs: the job list".
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import json
import math
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

from sqlalchemy import and_, or_

from .db import Job

if TYPE_CHECKING:
    from sqlalchemy import Select

    from .core import JobView

T = TypeVar("T", bound=tuple[Any, ...])
R = TypeVar("R")

#: The page size when none is asked for, and the most one page holds.
DEFAULT_LIMIT = 50
MAX_LIMIT = 200
#: What a summary leaves out of ``progress``: the bulk of a running job's view.
HEAVY_PROGRESS = ("rate_history", "per_folder")


class BadCursor(ValueError):
    """A cursor this list did not give (or one cut short)."""


@dataclass(frozen=True)
class TransferPage:
    """One page of a customer's transfers, newest first; ``next_cursor`` asks for the
    next (older) page, None on the last one."""

    views: list[JobView]
    next_cursor: str | None


def encode_cursor(created: float, job_id: str) -> str:
    """The opaque cursor after the transfer (``created``, ``job_id``)."""
    raw = json.dumps([created, job_id], separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[float, str]:
    """(created, id) of a cursor from :func:`encode_cursor`; :class:`BadCursor` else."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        created, job_id = json.loads(raw)
    except (binascii.Error, ValueError, TypeError):
        raise BadCursor("cursor: not one this list gave (use next_cursor as it is)") from None
    if (
        not isinstance(created, (int, float))
        or isinstance(created, bool)
        or not math.isfinite(created)
        or not isinstance(job_id, str)
        or not 0 < len(job_id) <= 32
    ):
        raise BadCursor("cursor: not one this list gave (use next_cursor as it is)")
    return float(created), job_id


def check_limit(limit: int, most: int = MAX_LIMIT) -> int:
    if not isinstance(limit, int) or isinstance(limit, bool) or not 1 <= limit <= most:
        raise ValueError(f"limit: from 1 to {most}")
    return limit


def page_query(
    user_id: int,
    *,
    statuses: Collection[str] | None,
    batch_id: str | None,
    since: float | None,
    before: float | None,
    cursor: str | None,
    limit: int,
) -> Select[tuple[Job]]:
    """The SELECT of one page of a customer's transfers (``limit`` + 1 rows: the one
    more says whether there is a next page), newest first; the index
    ix_jobs_user_created serves it."""
    from sqlalchemy import select

    return keyset(
        select(Job).where(Job.user_id == user_id),
        statuses=statuses,
        batch_id=batch_id,
        since=since,
        before=before,
        cursor=cursor,
        limit=limit,
    )


def keyset(
    q: Select[T],
    *,
    statuses: Collection[str] | None = None,
    batch_id: str | None = None,
    since: float | None = None,
    before: float | None = None,
    cursor: str | None = None,
    limit: int,
) -> Select[T]:
    """``q`` (any SELECT of Job: a customer's list, the operator console's) filtered,
    after ``cursor``, newest first, ``limit`` + 1 rows.  :class:`BadCursor`."""
    if statuses is not None:
        q = q.where(Job.status.in_(sorted(statuses)))
    if batch_id is not None:
        q = q.where(Job.batch_id == batch_id)
    if since is not None:
        q = q.where(Job.created >= since)
    if before is not None:
        q = q.where(Job.created < before)
    if cursor is not None:
        created, job_id = decode_cursor(cursor)
        q = q.where(or_(Job.created < created, and_(Job.created == created, Job.id < job_id)))
    return q.order_by(Job.created.desc(), Job.id.desc()).limit(limit + 1)


def split(rows: Sequence[R], limit: int, job_of: Callable[[R], Job]) -> tuple[list[R], str | None]:
    """The rows of a :func:`keyset` query -> (the page, the cursor of the next or None)."""
    page = list(rows[:limit])
    if len(rows) <= limit or not page:
        return page, None
    last = job_of(page[-1])
    return page, encode_cursor(last.created, last.id)


def summary(view: JobView) -> JobView:
    """``view`` without what a list does not need: the rate history and the per-folder
    details (GET of one transfer has them)."""
    progress = {k: v for k, v in view.progress.items() if k not in HEAVY_PROGRESS}
    return dataclasses.replace(view, progress=progress)
