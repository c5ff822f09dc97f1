"""The job page's "new password" form (issue 17): a failed or cancelled transfer takes a
new password for either side, checked on the spot, and continues where it stopped.

Only the password changes (service/resume.py says why); the form shows the account it is
for.  A refused password is said in a flash message and nothing is stored.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from fastapi import APIRouter, Request
from fastapi.responses import RedirectResponse, Response
from starlette.exceptions import HTTPException

from yippiemove.service.core import AlreadyActive, NotFound, ServiceError

from .api import check_job_id

if TYPE_CHECKING:
    from .pages import Pages

SIDES = ("source", "dest")


def add_routes(r: APIRouter, p: Pages) -> None:
    """``POST /transfers/{id}/credentials`` (form fields ``source_password``,
    ``dest_password``; an empty one is left as it is)."""
    from .pages import ALREADY_RUNNING, flash

    async def job_credentials(request: Request, job_id: str) -> Response:
        uid = await p.user(request)
        form = await p.form(request)
        update = getattr(p.service, "update_credentials", None)
        if update is None:
            raise HTTPException(404, "not available")
        passwords = {
            side: value
            for side in SIDES
            if isinstance(value := form.get(f"{side}_password"), str) and value
        }
        url = f"/transfers/{check_job_id(job_id)}"
        try:
            view = await update(uid, job_id, passwords)
        except NotFound:
            raise
        except AlreadyActive as exc:
            flash(request, ALREADY_RUNNING)
            return RedirectResponse(f"/transfers/{exc.job_id}", 303)
        except ServiceError as exc:
            detail = getattr(exc, "detail", "")
            flash(request, f"{exc} Details: {detail}" if detail else str(exc), "error")
            return RedirectResponse(url, 303)
        finally:
            del passwords
        if view.status in ("queued", "running"):
            flash(
                request,
                "The new password works. The transfer continues where it stopped: "
                "nothing is copied twice.",
            )
        else:
            flash(request, "The new password works and is stored.")
        return RedirectResponse(url, 303)

    r.add_api_route("/transfers/{job_id}/credentials", job_credentials, methods=["POST"])
