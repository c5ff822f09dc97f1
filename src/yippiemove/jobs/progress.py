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
from .vocab import Phase

__all__ = ["default_progress", "progress_line"]


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


def progress_line(mover: Any) -> dict[str, Any]:
    """The mover's live counters, and per folder what is done (no secrets)."""
    p = mover.progress
    line: dict[str, Any] = {
        "type": "progress",
        "t": time.time(),
        "phase": p.phase,
        "folders_done": p.folders_done,
        "folders_total": p.folders_total,
        "messages_done": p.messages_done,
        "messages_total": p.messages_total,
        "bytes_done": p.bytes_done,
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
        current = set(p.current)
        per: dict[str, Any] = {}
        for fp in plan.folders:
            name = fp.source.name
            m, b, f = done.get(name, (0, 0, 0))
            state = "copying" if name in current else ("done" if name in done else "waiting")
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
