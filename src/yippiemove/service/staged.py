"""Staged moves until cut-over (issue 17): one job, many passes.

What migration customers do: a first pass now (or at ``start_at``), then *top-up*
passes every ``interval`` seconds while the old mailbox still receives mail, then a
*final* pass at ``final_at`` or when the customer says so (after switching their MX).
The job stays ONE job -- same id, same state database -- and each pass is a run of it
(the re-run path: only what is missing is copied, nothing is doubled, new mail is picked
up).  Each ended pass leaves a row with its figures (:class:`~.db.StagedPass`).

Who fires a due pass: every service process (``serve``, ``worker``) runs
:func:`fire_due` every ``staged_poll_interval`` seconds.  A pass is fired by a
conditional ``UPDATE ... SET next_run_at = NULL WHERE next_run_at = <the value read> AND
state IN (...)``: of two schedulers (two processes, two hosts of a fleet) only the one
whose UPDATE changed the row enqueues the job; the other sees 0 rows.  ``next_run_at``
is set again only when the pass ends (:func:`pass_ended`), so a pass cannot be fired
while one runs.

Credentials: a staged job's passwords are kept while its schedule runs (not expired
at each pass's end, ``credentials_expires`` stays unset) and deleted when the final pass
ends done, or when the schedule is cancelled (at once, or at the end of the pass under
way).  A pass the customer cancels stops the schedule; the passwords then follow the
ordinary retention (a re-run or resume stays possible).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Collection, Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session, object_session

from ..jobs.progress import default_progress
from ..jobs.vocab import TERMINAL, JobStatus
from .config import Settings
from .db import Database, Job, StagedPass, StagedSchedule
from .writers import holder_of_pair

if TYPE_CHECKING:
    from sqlalchemy import Select

log = logging.getLogger("yippiemove.service")

__all__ = [
    "ACTIVE",
    "KINDS",
    "STATES",
    "Schedule",
    "ScheduleError",
    "add",
    "cancel",
    "fire_due",
    "is_quiet",
    "job_cancelled",
    "new_run",
    "parse",
    "pass_ended",
    "request_final",
    "rerun",
    "starts_later",
    "view",
    "waiting_start",
]

#: scheduled: waiting for ``start_at`` (the job is queued, not enqueued); syncing: first
#: pass or top-ups; final: the final pass is queued or running; done: the final pass
#: ended done; cancelled: no more passes.
STATES = ("scheduled", "syncing", "final", "done", "cancelled")
#: States in which passes are still to come.
ACTIVE = ("scheduled", "syncing", "final")
#: A pass's kind; "re-run": a run the customer asked for after the schedule ended.
KINDS = ("first", "top-up", "final", "re-run")
#: A due pass whose pair is busy (another job of the same accounts runs) waits this long.
BUSY_RETRY = 60.0


class ScheduleError(ValueError):
    """A schedule the service refuses; the message names the field (``schedule.*``)."""


@dataclass(frozen=True)
class Schedule:
    """A checked schedule: when the first pass starts, the seconds between passes, and
    when the final one runs (None: when the customer says)."""

    interval: float
    start_at: float
    final_at: float | None


def _number(data: dict[str, Any], key: str) -> float | None:
    value = data.get(key)
    if value is None or value == "":
        return None
    if isinstance(value, bool):
        raise ScheduleError(f"schedule.{key}: must be a number")
    try:
        out = float(value)
    except (TypeError, ValueError):
        raise ScheduleError(f"schedule.{key}: must be a number") from None
    if out != out or out in (float("inf"), float("-inf")):
        raise ScheduleError(f"schedule.{key}: must be a number")
    return out


def parse(data: Any, settings: Settings, now: float) -> Schedule:
    """``{"interval": seconds, "start_at": unix time or null, "final_at": unix time or
    null}`` checked: interval at least ``staged_min_interval`` (and at most 30 days),
    start_at not in the past by more than a minute (null: now), final_at after start_at
    (null: on the customer's word) and within ``staged_max_days``."""
    if not isinstance(data, dict):
        raise ScheduleError("schedule: must be an object")
    unknown = set(data) - {"interval", "start_at", "final_at"}
    if unknown:
        raise ScheduleError(f"schedule.{sorted(unknown)[0]}: unknown field")
    interval = _number(data, "interval")
    if interval is None:
        raise ScheduleError("schedule.interval: is required (seconds between top-up passes)")
    least = settings.staged_min_interval
    if interval < least:
        raise ScheduleError(f"schedule.interval: must be at least {_duration(least)}")
    if interval > 30 * 86400:
        raise ScheduleError("schedule.interval: must be at most 30 days")
    start_at = _number(data, "start_at")
    if start_at is None or start_at < now:
        if start_at is not None and start_at < now - 60:
            raise ScheduleError("schedule.start_at: is in the past")
        start_at = now
    final_at = _number(data, "final_at")
    if final_at is not None:
        if final_at <= start_at:
            raise ScheduleError("schedule.final_at: must be after the start")
        if final_at > now + settings.staged_max_days * 86400:
            raise ScheduleError(
                f"schedule.final_at: must be within {settings.staged_max_days:g} days"
            )
    if start_at > now + settings.staged_max_days * 86400:
        raise ScheduleError(f"schedule.start_at: must be within {settings.staged_max_days:g} days")
    return Schedule(interval=interval, start_at=start_at, final_at=final_at)


def _duration(seconds: float) -> str:
    if seconds >= 3600 and seconds % 3600 == 0:
        n = int(seconds // 3600)
        return f"{n} hour{'s' if n != 1 else ''}"
    if seconds >= 60 and seconds % 60 == 0:
        n = int(seconds // 60)
        return f"{n} minute{'s' if n != 1 else ''}"
    return f"{seconds:g} seconds"


def add(s: Session, job: Job, schedule: Schedule, now: float) -> bool:
    """Give a new job its schedule; True when its first pass is for later (the job is
    then not enqueued now: :func:`fire_due` does it at ``start_at``)."""
    later = schedule.start_at > now + 1
    s.add(
        StagedSchedule(
            job_id=job.id,
            interval=schedule.interval,
            start_at=schedule.start_at,
            final_at=schedule.final_at,
            state="scheduled" if later else "syncing",
            next_run_at=schedule.start_at if later else None,
            final_requested=False,
            current_kind="first",
        )
    )
    s.flush()
    return later


def new_run(job: Job) -> None:
    """Put an ended job back in the queue for one more run (a re-run, or a pass): the
    same job, a new run, a new graph."""
    job.status = JobStatus.QUEUED
    job.error = None
    job.started = None
    job.finished = None
    job.cancel_requested = False
    job.attempts = 0
    job.runs = (job.runs or 1) + 1
    job.notified_start = False
    job.credentials_expires = None
    job.progress = default_progress()


def waiting_start(s: Session) -> set[str]:
    """Queued jobs whose first pass is for later: no queue message is owed for them."""
    return set(s.scalars(select(StagedSchedule.job_id).where(StagedSchedule.state == "scheduled")))


def starts_later(s: Session, job_id: str) -> bool:
    """Whether a queued job is a staged job whose first pass is for later."""
    sched = s.get(StagedSchedule, job_id)
    return sched is not None and sched.state == "scheduled"


def _next_kind(sched: StagedSchedule, at: float) -> str:
    if sched.final_requested or (sched.final_at is not None and at >= sched.final_at):
        return "final"
    return "first" if sched.state == "scheduled" else "top-up"


def fire_due(db: Database, enqueue: Callable[[str], object], now: float | None = None) -> list[str]:
    """Start every pass that is due; returns the ids of the jobs this call enqueued.

    Safe with any number of callers at once: each pass is fired by exactly one of
    them (the conditional UPDATE of the module's docstring)."""
    now = time.time() if now is None else now
    with db.read() as s:
        due = s.execute(
            select(StagedSchedule.job_id, StagedSchedule.next_run_at).where(
                StagedSchedule.next_run_at.is_not(None),
                StagedSchedule.next_run_at <= now,
                StagedSchedule.state.in_(ACTIVE),
            )
        ).all()
    fired: list[str] = []
    for job_id, at in due:
        with db.session() as s:
            won = s.execute(
                update(StagedSchedule)
                .where(
                    StagedSchedule.job_id == job_id,
                    StagedSchedule.next_run_at == at,
                    StagedSchedule.state.in_(ACTIVE),
                )
                .values(next_run_at=None)
                .execution_options(synchronize_session=False)
            ).rowcount
            if won != 1:
                continue  # another scheduler fired it, or the customer changed it
            sched = s.get(StagedSchedule, job_id, populate_existing=True)
            job = s.get(Job, job_id, with_for_update=True)
            if sched is None or job is None:
                continue
            kind = _next_kind(sched, now)
            if job.status in TERMINAL:
                if job.credentials is None:
                    sched.state = "cancelled"
                    log.warning("job %s: its passwords are gone; the schedule ends", job_id)
                    continue
                other = holder_of_pair(s, job.user_id, job)
                if other is not None:
                    sched.next_run_at = now + BUSY_RETRY
                    continue
                new_run(job)
            elif job.status != JobStatus.QUEUED:
                continue  # a pass runs (a re-run by hand): it sets the next one at its end
            sched.state = "final" if kind == "final" else "syncing"
            sched.current_kind = kind
        fired.append(job_id)
        enqueue(job_id)
        log.info("job %s: %s pass started by the schedule", job_id, kind)
    return fired


def pass_ended(s: Session, job: Job, status: str, now: float) -> bool:
    """A run of ``job`` ended (SqlJobStore.finish, in its transaction): record the pass
    and set the next one.  True when the schedule decided the fate of the credentials
    (kept, or deleted); False when the ordinary retention applies (no schedule, or the
    customer stopped it)."""
    sched = s.get(StagedSchedule, job.id, with_for_update=True)
    if sched is None:
        return False
    totals = (job.progress or {}).get("totals") or {}
    number = (
        s.scalar(select(func.max(StagedPass.number)).where(StagedPass.job_id == job.id)) or 0
    ) + 1
    kind = sched.current_kind
    s.add(
        StagedPass(
            job_id=job.id,
            number=number,
            kind=kind,
            started=job.started,
            finished=now,
            outcome=str(status),
            copied=int(totals.get("copied") or 0),
            already_present=int(totals.get("already_present") or 0),
            failed=int(totals.get("failed") or 0),
            bytes=int(totals.get("bytes_copied") or 0),
        )
    )
    if kind == "re-run":
        return False
    if sched.state == "cancelled":  # cancelled while this pass ran: the passwords go now
        _wipe(job)
        return True
    if status == JobStatus.CANCELLED:  # the customer stopped the pass: the schedule stops
        sched.state = "cancelled"
        sched.next_run_at = None
        return False
    if kind == "final" and status == JobStatus.DONE:
        sched.state = "done"
        sched.next_run_at = None
        _wipe(job)
        return True
    # A first pass or a top-up ended (or a final pass failed: it is tried again).
    sched.state = "syncing"
    job.credentials_expires = None
    if sched.final_requested:
        sched.next_run_at = now
    else:
        nxt = now + sched.interval
        if sched.final_at is not None and sched.final_at < nxt:
            nxt = max(sched.final_at, now)
        sched.next_run_at = nxt
    return True


def _wipe(job: Job) -> None:
    job.credentials = None
    job.credentials_expires = None


def request_final(s: Session, job: Job, now: float) -> bool:
    """The customer switched: the final pass now (or right after the pass under way).
    False when the schedule cannot take it (none, ended)."""
    sched = s.get(StagedSchedule, job.id, with_for_update=True)
    if sched is None or sched.state not in ("scheduled", "syncing"):
        return False
    sched.final_requested = True
    if sched.next_run_at is not None or job.status in TERMINAL:
        sched.next_run_at = now  # the schedulers fire it (the caller may at once)
    return True


def cancel(s: Session, job: Job) -> bool:
    """Stop the schedule: no more passes; the passwords are deleted now, or at the end
    of the pass under way.  A job still waiting for its first pass is cancelled.
    False when there is no schedule still running."""
    sched = s.get(StagedSchedule, job.id, with_for_update=True)
    if sched is None or sched.state not in ACTIVE:
        return False
    sched.state = "cancelled"
    sched.next_run_at = None
    if job.status in TERMINAL:
        _wipe(job)
    elif job.status == JobStatus.QUEUED and job.runs <= 1 and sched.current_kind == "first":
        # Not started yet (scheduled start, or queued): nothing to wait for.
        job.status = JobStatus.CANCELLED
        job.finished = time.time()
        _wipe(job)
    return True


def job_cancelled(s: Session, job: Job) -> None:
    """A queued pass was cancelled by the customer (Service.cancel_transfer)."""
    sched = s.get(StagedSchedule, job.id, with_for_update=True)
    if sched is not None and sched.state in ACTIVE:
        sched.state = "cancelled"
        sched.next_run_at = None


def rerun(s: Session, job: Job) -> None:
    """A run asked for by hand (re-run, resume with new passwords): while the schedule
    runs it is the next pass (its next time is set again when it ends); after, a
    "re-run" of the history."""
    sched = s.get(StagedSchedule, job.id, with_for_update=True)
    if sched is None:
        return
    if sched.state in ACTIVE:
        sched.next_run_at = None
        if sched.state == "scheduled":
            sched.state = "syncing"
        else:
            sched.current_kind = _next_kind(sched, time.time())
            if sched.current_kind == "final":
                sched.state = "final"
    else:
        sched.current_kind = "re-run"


def is_quiet(s: Session, job: Job) -> bool:
    """Top-up passes send no mail (the first and the final one do)."""
    sched = s.get(StagedSchedule, job.id)
    return sched is not None and sched.current_kind == "top-up" and sched.state in ACTIVE


def view(job: Job) -> dict[str, Any] | None:
    """The schedule and its pass history as pages and the API show them (None: not a
    staged job).  Read in the job's own session."""
    s = object_session(job)
    if s is None:
        return None
    sched = s.get(StagedSchedule, job.id)
    if sched is None:
        return None
    passes = s.scalars(
        select(StagedPass).where(StagedPass.job_id == job.id).order_by(StagedPass.number)
    ).all()
    return view_of(job, sched, passes)


def watched_query(ids: Collection[str]) -> Select[tuple[Job, StagedSchedule]]:
    """The jobs ``ids`` with their schedules (None: not staged) in ONE query, for
    :func:`views`: the live progress of many jobs (issue 18)."""
    return (
        select(Job, StagedSchedule)
        .outerjoin(StagedSchedule, StagedSchedule.job_id == Job.id)
        .where(Job.id.in_(sorted(ids)))
    )


def views(
    s: Session, rows: Iterable[tuple[Job, StagedSchedule | None]]
) -> dict[str, dict[str, Any] | None]:
    """:func:`view` of the rows of :func:`watched_query`; one more query, for the passes,
    only when one of them is staged (not two per job)."""
    rows = list(rows)
    out: dict[str, dict[str, Any] | None] = {job.id: None for job, _ in rows}
    scheds = {job.id: sc for job, sc in rows if sc is not None}
    if not scheds:
        return out
    passes: dict[str, list[StagedPass]] = {jid: [] for jid in scheds}
    for p in s.scalars(
        select(StagedPass)
        .where(StagedPass.job_id.in_(sorted(scheds)))
        .order_by(StagedPass.job_id, StagedPass.number)
    ):
        passes[p.job_id].append(p)
    for job, sc in rows:
        if sc is not None:
            out[job.id] = view_of(job, sc, passes[job.id])
    return out


def view_of(job: Job, sched: StagedSchedule, passes: Sequence[StagedPass]) -> dict[str, Any]:
    """:func:`view` from the rows already read."""
    active = sched.state in ACTIVE
    if not active or (job.status not in TERMINAL and sched.state != "scheduled"):
        next_kind = None  # none to come, or a pass is queued or running (current_kind)
    else:
        next_kind = _next_kind(sched, sched.next_run_at or time.time())
    kept = job.credentials is not None and active
    return {
        "state": sched.state,
        "interval": sched.interval,
        "start_at": sched.start_at,
        "final_at": sched.final_at,
        "final_requested": sched.final_requested,
        "next_run_at": sched.next_run_at if active else None,
        "next_kind": next_kind,
        "current_kind": sched.current_kind,
        "credentials_kept": kept,
        #: Until when the passwords are kept: the final pass's time, or None with
        #: ``credentials_kept`` (until the final pass the customer starts ends).
        "credentials_until": sched.final_at if kept else None,
        "passes": [
            {
                "number": p.number,
                "kind": p.kind,
                "started": p.started,
                "finished": p.finished,
                "outcome": p.outcome,
                "copied": p.copied,
                "already_present": p.already_present,
                "failed": p.failed,
                "bytes": p.bytes,
            }
            for p in passes
        ],
    }
