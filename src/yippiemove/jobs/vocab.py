"""The service's words, spelled once: job status, progress phase, an account's TLS mode.

``StrEnum`` members *are* their strings: the control database, the JSON of the API and
the templates keep exactly the values they had (``JobStatus.DONE == "done"``), and a
value read back from the database compares equal to the member.
"""

from __future__ import annotations

from enum import StrEnum

from ..imap.connection import is_loopback

__all__ = [
    "TERMINAL",
    "JobStatus",
    "Phase",
    "Security",
    "endpoint_security",
]


class JobStatus(StrEnum):
    """A transfer's status in the control database (``Job.status``)."""

    QUEUED = "queued"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"
    CANCELLED = "cancelled"


#: The statuses a job ends in (a re-run puts it back to ``queued``).
TERMINAL: tuple[JobStatus, ...] = (JobStatus.DONE, JobStatus.FAILED, JobStatus.CANCELLED)


class Phase(StrEnum):
    """``progress["phase"]``: what a job is doing (the engine's phases and the service's).

    The engine (transfer/model.py ``Progress.phase``) says connecting, planning, copying,
    done; the service adds the others.  A job that ended has its status as its phase.
    """

    QUEUED = "queued"
    RESUMING = "resuming"
    CONNECTING = "connecting"
    PLANNING = "planning"
    COPYING = "copying"
    VERIFYING = "verifying"
    INTERRUPTED = "interrupted"
    DONE = "done"
    FAILED = "failed"
    CANCELLED = "cancelled"


class Security(StrEnum):
    """How an account of the service is reached (the web form's and the API's choices).

    The connection layer has its own, finer vocabulary (imap/connection.py: ``tls``,
    ``starttls``, ``require-starttls``, ``none``); :func:`endpoint_security` is the one
    place that maps one to the other.
    """

    TLS = "tls"
    STARTTLS = "starttls"
    NONE = "none"

    @property
    def default_port(self) -> int:
        """993 for TLS from the first byte (IMAPS), else 143."""
        return 993 if self is Security.TLS else 143


def endpoint_security(security: str, host: str) -> str:
    """The connection's security mode for an account's ``security`` on ``host``.

    ``starttls`` *requires* STARTTLS except on loopback (so a password never goes out in
    the clear because a server or a man in the middle left STARTTLS out); ``none`` is
    plain text, which validation only lets through for loopback hosts unless the operator
    allowed insecure hosts.
    """
    mode = Security(security)
    if mode is Security.STARTTLS:
        return "starttls" if is_loopback(host) else "require-starttls"
    return str(mode)
