"""The service's words, spelled once: job status, progress phase, an account's TLS mode
(that one lives with the accounts, accounts.py, and is re-exported here).

``StrEnum`` members *are* their strings: the control database, the JSON of the API and
the templates keep exactly the values they had (``JobStatus.DONE == "done"``), and a
value read back from the database compares equal to the member.
"""

from __future__ import annotations

from enum import StrEnum

from ..accounts import Security, endpoint_security
from ..transfer.model import Phase as EnginePhase

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
    #: Billing on (issue 20, service/billing.py): ordered, priced, not yet paid for.  Never
    #: enqueued from here: only a payment (or credits) makes it ``queued``.
    AWAITING_PAYMENT = "awaiting_payment"


#: The statuses a job ends in (a re-run puts it back to ``queued``).
TERMINAL: tuple[JobStatus, ...] = (JobStatus.DONE, JobStatus.FAILED, JobStatus.CANCELLED)


class Phase(StrEnum):
    """``progress["phase"]``: what a job is doing (the engine's phases and the service's).

    The engine (transfer/model.py ``Progress.phase``) says connecting, planning, copying,
    done; the service adds the others.  A job that ended has its status as its phase.
    """

    QUEUED = "queued"
    #: Queued, and another transfer runs into the same destination mailbox
    #: (``progress["waiting_for"]`` names it); it starts when that one ends.
    WAITING = "waiting"
    RESUMING = "resuming"
    #: Queued, and its customer is suspended by an operator: no worker starts it
    #: (service/operator.py); it goes back to ``queued`` when they are unsuspended.
    HELD = "held"
    # The engine's own, spelled once in transfer/model.py:
    CONNECTING = EnginePhase.CONNECTING.value
    PLANNING = EnginePhase.PLANNING.value
    COPYING = EnginePhase.COPYING.value
    VERIFYING = "verifying"
    INTERRUPTED = "interrupted"
    DONE = EnginePhase.DONE.value
    FAILED = "failed"
    CANCELLED = "cancelled"
