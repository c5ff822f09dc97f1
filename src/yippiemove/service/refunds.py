"""Refunds after our own failures (issue 20, service/billing.py): kept apart so that the
job host (service/jobhost.py), which ends runs, needs nothing of the service's core."""

from __future__ import annotations

import logging
from typing import Any

from sqlalchemy import select

from ..jobs.vocab import JobStatus
from ..policy.failures import kind_of_text
from . import ledger
from .db import Job, JobCharge

__all__ = ["OUR_FAILURES", "refund_failed_run"]

log = logging.getLogger(__name__)

#: Failure kinds (policy/failures.py) that are ours, not the customer's servers': a run
#: that ends failed with one of these gives its price back.
OUR_FAILURES = frozenset({"internal"})


def refund_failed_run(s: Any, job: Job) -> None:
    """In the transaction that ends ``job`` as failed: a failure on our side (policy/
    failures.py's ``internal``: a bug, not the customer's servers) gives the run's
    price back as credits, once (key ``refund:<job>:<run>``)."""
    if job.status != JobStatus.FAILED:
        return
    failure = (job.progress or {}).get("failure")
    kind = failure.get("kind") if isinstance(failure, dict) else kind_of_text(job.error)
    if kind not in OUR_FAILURES:
        return
    charge = s.scalar(
        select(JobCharge).where(JobCharge.job_id == job.id).order_by(JobCharge.run.desc()).limit(1)
    )
    if charge is None or charge.state != "paid" or charge.price <= 0:
        return
    entry = ledger.post(
        s,
        charge.account_id,
        int(charge.price),
        "refund",
        f"refund:{job.id}:{charge.run}",
        job_id=job.id,
        order_id=f"{job.id}:{charge.run}",
        actor="system",
        note=f"transfer {job.id[:8]} failed on our side: run {charge.run} refunded",
    )
    if entry is not None:
        charge.state = "refunded"
        log.info("job %s: run %d refunded (%d)", job.id, charge.run, charge.price)
