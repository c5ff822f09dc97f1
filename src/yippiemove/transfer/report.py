"""How a transfer ended, said once for both front doors (``yippiemove move`` and the job
process): the report, the exit status, and an exception turned into an outcome.

- :func:`build_report`: the JSON report (``yippiemove move --report``, a job's
  ``report.json``), from what the mover did.
- :class:`Exit`: 0 every selected source message is verified on the destination (exact,
  or stored altered by the server in a way the mover recognises: listed as such); 1 some
  messages failed (listed, and in the report); 2 the run could not start or was cut short.
- :func:`outcome_of`: the one mapping from an exception that ended a run to its
  status and the text the person sees.
"""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass
from enum import IntEnum
from pathlib import Path
from typing import Any, Protocol

from ..imap.errors import ImapError, ProtocolError
from .engine import PlanError
from .model import FolderResult, Plan, Progress
from .state import StateError

__all__ = [
    "Exit",
    "Outcome",
    "build_report",
    "exit_code",
    "outcome_of",
    "write_report",
]


class Exit(IntEnum):
    """Exit status of ``yippiemove move`` and of a job process."""

    OK = 0  # every selected source message is verified on the destination (exact, or
    # "stored, altered by the server" in a recognised way: not a failure, but listed)
    FAILED = 1  # some messages (or whole folders) failed; the rest is verified
    ABORTED = 2  # could not start or was cut short (see docs/faults.md)


class Ran(Protocol):
    """What a report is made from: a :class:`~yippiemove.transfer.engine.Mover` after
    (or during) its run; tests hand-make one."""

    @property
    def results(self) -> list[FolderResult]: ...
    @property
    def progress(self) -> Progress: ...
    @property
    def plan(self) -> Plan | None: ...


@dataclass(frozen=True)
class Outcome:
    """How a run that raised ended: ``status`` as the run saw it ("interrupted",
    "cancelled", or "aborted"), ``error`` the text the person sees, ``transient`` true
    when a later run may well succeed (a dropped connection after all the retries: the
    service restarts such a job), ``bug`` true for an unexpected exception (the job
    process logs its traceback)."""

    status: str
    error: str
    transient: bool = False
    bug: bool = False


def outcome_of(exc: BaseException, *, job: bool = False) -> Outcome | None:
    """The outcome of a run that ended with ``exc``, or ``None`` when ``exc`` is not a
    way a transfer ends (the caller re-raises it).

    ``job``: in the service's job process, which must always write a result: a bug or
    running out of memory become an outcome too (the CLI shows a traceback instead),
    and a state file problem is said without the service's paths.
    """
    if isinstance(exc, KeyboardInterrupt):
        return Outcome("interrupted", "interrupted; run the same command again to resume")
    if isinstance(exc, asyncio.CancelledError):  # SIGTERM to a job: a cancel
        return Outcome("cancelled", "cancelled")
    if isinstance(exc, ImapError):
        return Outcome("aborted", str(exc), transient=exc.transient)
    if isinstance(exc, ProtocolError):  # an answer that parsed but makes no sense
        return Outcome("aborted", f"a server sent an answer that is not valid IMAP: {exc}")
    if isinstance(exc, StateError):
        return Outcome("aborted", state_problem(exc) if job else str(exc))
    if isinstance(exc, PlanError):
        return Outcome("aborted", str(exc))
    if not job:
        return None
    if isinstance(exc, MemoryError) or _no_room_for_a_thread(exc):
        import resource  # only a job process that ran out of memory needs it

        limit = resource.getrlimit(resource.RLIMIT_AS)[0]
        size = f" of {limit >> 20} MiB" if limit > 0 else ""
        return Outcome("aborted", f"the transfer needs more memory than the job's limit{size}")
    if isinstance(exc, Exception):  # a bug: the traceback goes to job.log, not to the customer
        return Outcome(
            "aborted",
            f"internal error ({type(exc).__name__}); the operator can see job.log",
            bug=True,
        )
    return None


def _no_room_for_a_thread(exc: BaseException) -> bool:
    """A thread that could not start under the job's address-space limit (each needs
    room for its stack): the job ran out of memory, whichever allocation met the limit
    first (asyncio's resolver thread after the big literal, say).  CPython says so
    with a RuntimeError, not a MemoryError."""
    if not (isinstance(exc, RuntimeError) and "can't start new thread" in str(exc)):
        return False
    import resource

    return resource.getrlimit(resource.RLIMIT_AS)[0] != resource.RLIM_INFINITY


def state_problem(exc: StateError) -> str:
    """A StateError as a service customer sees it: a full disk is named plainly, without
    the service's paths (the operator finds the job's directory from its id)."""
    if exc.disk_full:
        return (
            f"cannot write the job state on the service's disk: {exc.reason}. Nothing is "
            "lost: re-run the transfer once the operator has freed some space, and it resumes"
        )
    return str(exc)


def build_report(
    mover: Ran, source: str, dest: str, started: float, status: str, error: str | None
) -> dict[str, Any]:
    """The report of a run: ``status`` is "done" when ``error`` is None, else "cancelled"
    for a cancel and "aborted" for anything else."""
    results = mover.results
    failures = [f.as_dict() for r in results for f in r.failures]
    progress = mover.progress
    plan = mover.plan
    if error is not None:
        status = "cancelled" if status == "cancelled" else "aborted"
    return {
        "version": 1,
        "source": source,
        "dest": dest,
        "started": started,
        "finished": time.time(),
        "status": status,
        "error": error,
        "totals": {
            "folders": len(results),
            "source_count": sum(r.source_count for r in results),
            "copied": sum(r.copied for r in results),
            "already_present": sum(r.present for r in results),
            "labelled": sum(r.labelled for r in results),
            "failed": len(failures) + sum(r.failed for r in results if r.error),
            "folders_failed": sum(1 for r in results if r.error),
            "verified": sum(r.verified for r in results),
            "content_verified": sum(r.content_verified for r in results),
            "altered": sum(len(r.stored_altered) for r in results),
            "bytes_copied": sum(r.bytes_copied for r in results),
        },
        "progress": {
            "messages_done": progress.messages_done,
            "messages_total": progress.messages_total,
            "bytes_done": progress.bytes_done,
            "bytes_total": progress.bytes_total,
            "failed": progress.failed,
            "reconnects": progress.reconnects,
        },
        "plan": plan.as_dict() if plan is not None else None,
        "folders": [r.as_dict() for r in results],
        "failures": failures,
        "altered_messages": [a.as_dict() for r in results for a in r.stored_altered],
    }


def exit_code(report: dict[str, Any]) -> Exit:
    """The exit status a report stands for."""
    if report["error"] is not None:
        return Exit.ABORTED
    t = report["totals"]
    return Exit.FAILED if t["failed"] or t["folders_failed"] else Exit.OK


def write_report(path: str | Path, data: dict[str, Any]) -> None:
    """Write ``data`` as JSON to ``path`` atomically (a ``.tmp`` file renamed); raises
    OSError."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=1, ensure_ascii=False), encoding="utf-8")
    tmp.replace(path)
