"""A job's undo, for the web pages and the REST API (Service.undo_*); its readable
report is read from the state file by web/reports.py (transfer/receipt.py).

- :func:`undo_preview` / :func:`undo_apply`: what undoing the job removes from its
  destination (transfer/undo.py), then doing it; the result is kept beside the job's
  report (``undo.json``) and shown on the job page.  Only for an ended job whose
  passwords are still stored; never while it runs (the job's state is not written then).
  The undo talks to the destination only, with the job's stored destination password,
  through the same egress policy as the job.

Nothing here holds a secret past the call; the results hold none.
"""

from __future__ import annotations

import asyncio
import json
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..accounts import make_endpoint, pin_endpoint, ssl_context
from ..imap.errors import ImapError
from ..jobs.vocab import TERMINAL
from ..policy.egress import EgressRefused
from ..transfer import undo as engine
from ..transfer.report import write_report
from .core import Conflict, NotFound, ServiceError

if TYPE_CHECKING:
    from ..transfer.model import Endpoint
    from .core import Service

__all__ = ["undo_apply", "undo_preview", "undo_result"]

log = logging.getLogger("yippiemove.service")

UNDO_TIMEOUT = 60.0  # seconds without an answer from the destination


def _dest(service: Service, user_id: int, job_id: str) -> tuple[Path, Endpoint]:
    """The job's state file and its destination as an endpoint (stored password)."""
    service.get_transfer(user_id, job_id)  # NotFound: not the customer's
    with service.db.session() as s:
        job = service._own(s, user_id, job_id)
        if job.status not in TERMINAL:
            raise Conflict("the transfer is still running: cancel it or let it end first")
        if job.credentials is None:
            raise Conflict(
                "the passwords of this transfer are deleted: undo needs the destination's password"
            )
        secrets = service.box.decrypt(job.credentials)
        account = dict(job.dest)
    if secrets.get("dest_oauth") is not None:
        raise Conflict("undo is not available yet for a destination signed in with OAuth2")
    account["password"] = secrets.get("dest_password") or ""
    del secrets
    path = service.settings.job_dir(job_id) / "state.sqlite"
    if not path.is_file():
        raise NotFound("no state file yet: the transfer has not run, there is nothing to undo")
    settings = service.settings
    ep = make_endpoint(account, ssl_context(settings.ca_file), settings.allow_insecure_hosts)
    try:
        ep = pin_endpoint(ep, service.egress, service.resolve)
    except EgressRefused as exc:
        raise ServiceError(f"dest.host: {exc}") from None
    except ImapError as exc:
        raise ServiceError(f"destination: {exc}") from None
    return path, ep


def _run(coro: Any) -> engine.UndoPlan:
    try:
        plan: engine.UndoPlan = asyncio.run(coro)
    except engine.UndoError as exc:
        raise Conflict(str(exc)) from None
    except ImapError as exc:
        raise ServiceError(f"destination: {exc}") from None
    except OSError as exc:
        raise ServiceError(f"destination: {exc.strerror or exc}") from None
    return plan


def undo_preview(service: Service, user_id: int, job_id: str) -> dict[str, Any]:
    """Per destination folder, how many messages an undo removes (changes nothing)."""
    path, ep = _dest(service, user_id, job_id)
    return _run(engine.preview(path, ep, timeout=UNDO_TIMEOUT)).as_dict()


def undo_apply(service: Service, user_id: int, job_id: str) -> dict[str, Any]:
    """Remove the job's messages from its destination; what was removed, per folder."""
    import time

    path, ep = _dest(service, user_id, job_id)
    plan = _run(engine.apply(path, ep, timeout=UNDO_TIMEOUT))
    engine.forget_removed(path, plan)
    result = dict(plan.as_dict(), finished=time.time())
    try:
        write_report(service.settings.job_dir(job_id) / "undo.json", result)
    except OSError:
        log.warning("cannot write the undo result of %s", job_id, exc_info=True)
    log.info("undo of %s: %d message(s) removed", job_id, plan.removed)
    return result


def undo_result(service: Service, user_id: int, job_id: str) -> dict[str, Any] | None:
    """The last undo's result, if the job was undone."""
    service.get_transfer(user_id, job_id)
    try:
        data: dict[str, Any] = json.loads(
            (service.settings.job_dir(job_id) / "undo.json").read_text(encoding="utf-8")
        )
    except (OSError, ValueError):
        return None
    return data
