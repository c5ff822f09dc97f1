"""A job's progress as JSON, written in one place.

The job process turns the engine's live counters (transfer/model.py ``Progress``) and
the per-folder progress (``Mover.folder_progress``) into one JSON line
(:func:`progress_line`); the supervisor adds rate, ETA and a rate history to it
(``ProgressTracker``) and stores it; the service starts every job with
:func:`default_progress`.  No secrets in any of it.
"""

from __future__ import annotations

import time
from typing import Any

from ..imap.connection import TRAFFIC
from ..transfer.model import Progress
from .vocab import Phase

__all__ = [
    "FOLDER_STATES",
    "default_progress",
    "folder_state",
    "interrupt_folders",
    "progress_line",
]


def default_progress() -> dict[str, Any]:
    """A job's progress before its job process says anything (the keys pages rely on)."""
    return {
        "phase": Phase.QUEUED,
        "folders_done": 0,
        "folders_total": 0,
        "messages_done": 0,
        "messages_total": 0,
        "bytes_done": 0,
        "bytes_total": 0,
        "failed": 0,
        "current": [],
        "throttled_until": None,
        "reconnects": 0,
        "rate": 0.0,
        "eta": None,
        "rate_history": [],
        "per_folder": {},
    }


#: A folder's states in the job's progress (``per_folder[name]["state"]``), in order.
FOLDER_STATES = ("waiting", "copying", "verifying", "done", "interrupted", "failed")


def folder_state(p: Progress, name: str, ended: bool = False) -> str:
    """One folder's state now: "done"/"failed" once its pass ended; before that
    "verifying", "copying" or "waiting" -- or, once the job process is ending
    (``ended``: cancelled, stopped, failed), "interrupted"."""
    if name in p.finished:
        return p.finished[name]
    if ended:
        return "interrupted"
    if name in p.verifying:
        return "verifying"
    return "copying" if name in p.current else "waiting"


def interrupt_folders(progress: dict[str, Any]) -> dict[str, Any]:
    """The job stopped before the end (cancelled, failed, put back in the queue): the
    folders that were not finished say "interrupted", never "done" (in place)."""
    per = progress.get("per_folder")
    if isinstance(per, dict):
        for f in per.values():
            if isinstance(f, dict) and f.get("state") not in ("done", "failed"):
                f["state"] = "interrupted"
    return progress


def progress_line(mover: Any, *, ended: bool = False) -> dict[str, Any]:
    """The mover's live counters, and per folder what is done (no secrets).
    ``ended``: the job process's last line after the mover stopped (module doc)."""
    p = mover.progress
    line: dict[str, Any] = {
        "type": "progress",
        "t": time.time(),
        "phase": p.phase,
        "folders_done": p.folders_done,
        "folders_total": p.folders_total,
        "messages_done": p.messages_done,
        "messages_total": p.messages_total,
        # Answered APPENDs and the bytes of those on their way (a large message, a
        # long MULTIAPPEND): progress moves as the bytes reach the destination.
        "bytes_done": p.bytes_now(),
        # Bytes that crossed the link in this job process: the supervisor's rate.
        "bytes_moved": p.bytes_moved(),
        "bytes_total": p.bytes_total,
        "failed": p.failed,
        "current": sorted(p.current),
        "failures": list(p.failures),
        # unix time until which the server throttles us (policy/retry.py), or None
        "throttled_until": p.throttled_until,
        "reconnects": p.reconnects,
        # Bytes on the wire with each server: the supervisor's proof that the servers
        # are alive (jobs/fairshare.py); not stored with the job's progress.
        "traffic": dict(TRAFFIC),
        "retry_until": p.retry_until,
    }
    plan = mover.plan
    if plan is not None:
        done = mover.folder_progress()
        per: dict[str, Any] = {}
        for fp in plan.folders:
            name = fp.source.name
            m, b, f = done.get(name, (0, 0, 0))
            state = folder_state(p, name, ended)
            per[name] = {
                "dest": fp.dest_name,
                "messages": fp.count,
                "bytes": fp.size,
                "messages_done": m,
                "bytes_done": b,
                "failed": f,
                "state": state,
            }
        line["per_folder"] = per
    return line
