"""Staged moves on the web (issue 17, service/staged.py): the order's last step offers
"keep in sync until I switch" (top-up interval, an optional start and final time in the
customer's time zone); the job page shows the schedule, the next pass, how long the
passwords are kept, each pass's figures, and the buttons "Final pass now" and "Stop the
schedule".
"""

from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from fastapi import APIRouter, Request
from fastapi.responses import RedirectResponse, Response
from starlette.exceptions import HTTPException

from yippiemove.service.core import NotFound, ServiceError

from .api import check_job_id

if TYPE_CHECKING:
    from .pages import Pages

#: The intervals the order offers (seconds), from the service's minimum up.
INTERVALS = (3600, 2 * 3600, 4 * 3600, 6 * 3600, 12 * 3600, 24 * 3600)
#: The one offered when the customer picks none.
DEFAULT_INTERVAL = 6 * 3600


class ScheduleFormError(ValueError):
    """A field of the order's schedule that cannot be read; the message says which."""


def _label(seconds: float) -> str:
    if seconds >= 3600 and seconds % 3600 == 0:
        n = int(seconds // 3600)
        return "every hour" if n == 1 else f"every {n} hours"
    if seconds >= 60 and seconds % 60 == 0:
        n = int(seconds // 60)
        return "every minute" if n == 1 else f"every {n} minutes"
    return f"every {seconds:g} seconds"


def interval_choices(minimum: float) -> list[dict[str, Any]]:
    """``[{"seconds", "label", "default"}]``: the service's minimum first when it is
    shorter than an hour (a test service), then the hours that it allows."""
    values = [float(s) for s in INTERVALS if s >= minimum]
    if not values or values[0] > minimum:
        values.insert(0, float(minimum))
    default = DEFAULT_INTERVAL if DEFAULT_INTERVAL in values else values[0]
    return [{"seconds": v, "label": _label(v), "default": v == default} for v in values]


def _local_time(text: str, zone: str, field: str) -> float | None:
    """A ``datetime-local`` value (``2026-12-08T18:00``) in the customer's time zone
    (the browser's, sent by app.js; UTC when unknown) as a unix time."""
    text = text.strip()
    if not text:
        return None
    try:
        naive = dt.datetime.fromisoformat(text)
    except ValueError:
        raise ScheduleFormError(f"{field}: is not a date and time") from None
    try:
        tz: dt.tzinfo = ZoneInfo(zone) if zone else dt.UTC
    except (ZoneInfoNotFoundError, ValueError):
        tz = dt.UTC
    return naive.replace(tzinfo=tz).timestamp() if naive.tzinfo is None else naive.timestamp()


def schedule_from_form(form: Any) -> dict[str, Any] | None:
    """The order's schedule (None: one pass, the box not ticked); ScheduleFormError for
    a field that cannot be read (the service checks the values)."""
    if form.get("staged") != "1":
        return None
    zone = str(form.get("timezone", "") or "")[:64]
    try:
        interval = float(str(form.get("staged_interval", "") or DEFAULT_INTERVAL))
    except ValueError:
        raise ScheduleFormError("Top-up passes: pick how often") from None
    final = str(form.get("staged_final_mode", "button"))
    return {
        "interval": interval,
        "start_at": _local_time(str(form.get("staged_start", "") or ""), zone, "First pass"),
        "final_at": (
            _local_time(str(form.get("staged_final", "") or ""), zone, "Final pass")
            if final == "time"
            else None
        ),
    }


def add_routes(r: APIRouter, p: Pages) -> None:
    """``POST /transfers/{id}/final-pass`` and ``POST /transfers/{id}/schedule/cancel``;
    the order form's interval choices as the templates' ``staged_intervals()``."""
    from .pages import flash

    settings = getattr(p.service, "settings", None)
    minimum = float(getattr(settings, "staged_min_interval", 3600.0))
    p.templates.env.globals["staged_intervals"] = lambda: interval_choices(minimum)

    async def act(request: Request, job_id: str, name: str, done: str, what: str) -> Response:
        uid = await p.user(request)
        await p.form(request)
        method = getattr(p.service, name, None)
        if method is None:
            raise HTTPException(404, "not available")
        url = f"/transfers/{check_job_id(job_id)}"
        try:
            await p.call(method, uid, job_id)
        except NotFound:
            raise
        except ServiceError as exc:
            flash(request, f"Could not {what}: {exc}", "error")
        else:
            flash(request, done)
        return RedirectResponse(url, 303)

    async def final_pass(request: Request, job_id: str) -> Response:
        return await act(
            request,
            job_id,
            "final_pass",
            "The final pass is on its way. When it ends the move is complete and your "
            "passwords are deleted.",
            "start the final pass",
        )

    async def cancel_schedule(request: Request, job_id: str) -> Response:
        return await act(
            request,
            job_id,
            "cancel_schedule",
            "The schedule is stopped: no more passes. What was copied stays; your "
            "passwords are deleted.",
            "stop the schedule",
        )

    r.add_api_route("/transfers/{job_id}/final-pass", final_pass, methods=["POST"])
    r.add_api_route("/transfers/{job_id}/schedule/cancel", cancel_schedule, methods=["POST"])
