"""The batch dashboard pages (issue 17, journey-batches; REST in web/batches_api.py).

- ``POST /batch`` (the upload of web/pages.py) stores a batch and starts its
  pre-flight, then shows ``/batches/ID``;
- ``GET /batches``: the customer's batches; ``GET /batches/ID``: the pre-flight's
  progress, each line's status, totals and failures (the page reloads itself while
  lines are checked or transfers run);
- ``POST /batches/ID/start`` (the good lines), ``POST /batches/ID/retry-failed``,
  ``POST /batches/ID/drop``, ``GET /batches/ID/results.csv``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from yippiemove.service.core import NotFound, ServiceError

from .batches_api import check_batch_id, csv_download

if TYPE_CHECKING:
    from .pages import Pages

__all__ = ["add_batch_pages", "create_from_upload"]

#: What the pages call a batch's state and a line's pre-flight verdict.
LABELS: dict[str, dict[str, str]] = {
    "state_labels": {
        "checking": "Checking the lines",
        "checked": "Checked, not started",
        "running": "Running",
        "done": "Finished",
    },
    "check_labels": {
        "waiting": "Waiting for its check",
        "checking": "Checking…",
        "ok": "Passed the check",
        "bad": "Did not pass",
        "started": "Started",
        "refused": "Not started",
    },
}

#: Seconds between reloads of a batch page while its lines are checked or run.
REFRESH = 2


async def create_from_upload(
    pages: Pages,
    request: Request,
    uid: int,
    text: str,
    filename: str,
    notify_end_users: bool,
    skip_bad: bool,
) -> Response | None:
    """The upload of the batch page as a batch (when the service has batches): lines in
    a bad shape refuse the file (unless ``skip_bad``); the rest is stored and checked.
    None: the service has no batches (the page's own path)."""
    from .pages import BATCH_SHOWN, _lines

    service: Any = pages.service
    if not hasattr(service, "create_batch"):
        return None
    rows, errors = await pages.call(service.parse_batch_csv, text)
    if errors and not skip_bad:
        return pages.render(
            request,
            "batch.html",
            400,
            limit=pages_limit(),
            batch_columns=pages.batch_columns,
            error=f"{_lines(len(errors))} of {filename} "
            f"{'is' if len(errors) == 1 else 'are'} not in the right shape. Nothing was "
            "stored: correct the file and upload it again (or tick “Leave out lines that "
            "are not in the right shape”).",
            line_errors=errors,
            good=len(rows),
        )
    if not rows:
        return pages.render(
            request,
            "batch.html",
            400,
            limit=pages_limit(),
            batch_columns=pages.batch_columns,
            error="The file has no mailbox pairs to move.",
            line_errors=errors,
        )

    def create() -> dict[str, Any]:
        return service.create_batch(
            uid,
            rows,
            name=filename,
            notify_end_users=notify_end_users,
            autostart=not errors,
        )

    view = await pages.call(create)
    if errors:
        request.session["batch_shape_errors"] = errors[:BATCH_SHOWN]
    return RedirectResponse(f"/batches/{view['id']}", 303)


def pages_limit() -> int:
    from .pages import BATCH_LIMIT

    return BATCH_LIMIT


class BatchPages:
    def __init__(self, pages: Pages) -> None:
        self.p = pages

    async def index(self, request: Request) -> Response:
        uid = await self.p.user(request)
        batches = await self.p.call(self.p.service.list_batches, uid)
        return self.p.render(request, "batches.html", batches=batches, **LABELS)

    async def show(self, request: Request, batch_id: str) -> Response:
        uid = await self.p.user(request)
        batch = await self.p.call(self.p.service.get_batch, uid, check_batch_id(batch_id))
        live = batch["state"] in ("checking", "running")
        return self.p.render(
            request,
            "batch_view.html",
            batch=batch,
            refresh=REFRESH if live else None,
            shape_errors=request.session.pop("batch_shape_errors", None) or [],
            **LABELS,
        )

    async def start(self, request: Request, batch_id: str) -> Response:
        from .pages import flash

        uid = await self.p.user(request)
        await self.p.form(request)
        batch_id = check_batch_id(batch_id)

        def started(view: dict[str, Any]) -> int:
            return sum(1 for v in view["lines"] if v["job_id"])

        try:
            before = started(await self.p.call(self.p.service.get_batch, uid, batch_id))
            view = await self.p.call(self.p.service.start_batch, uid, batch_id)
        except ServiceError as exc:
            flash(request, f"Nothing was started: {exc}", "error")
        else:
            n = started(view) - before
            flash(request, f"{n} transfer{'s' if n != 1 else ''} started.")
            refused = [v for v in view["lines"] if v["check"] == "refused"]
            if refused:
                flash(request, f"{len(refused)} line(s) could not start: see below.", "error")
        return RedirectResponse(f"/batches/{batch_id}", 303)

    async def settle(self, request: Request, batch_id: str) -> Response:
        """Billing on (issue 20): pay the batch's waiting transfers from the credits."""
        from .pages import flash

        uid = await self.p.user(request)
        await self.p.form(request)
        batch_id = check_batch_id(batch_id)
        billing = getattr(self.p.service, "billing", None)
        if billing is None or not billing.enabled:
            raise HTTPException(404, "payments are off on this service")
        try:
            out = await self.p.call(billing.settle_batch, uid, batch_id)
        except NotFound:
            raise
        except ServiceError as exc:
            flash(request, f"Nothing was paid: {exc}", "error")
        else:
            n, left = len(out["settled"]), len(out["waiting"])
            flash(request, f"{n} transfer{'s' if n != 1 else ''} paid from your credits.")
            if left:
                flash(
                    request,
                    f"{left} still wait: buy credits for them on the Billing page.",
                    "error",
                )
        return RedirectResponse(f"/batches/{batch_id}", 303)

    async def retry(self, request: Request, batch_id: str) -> Response:
        from .pages import flash

        uid = await self.p.user(request)
        await self.p.form(request)
        batch_id = check_batch_id(batch_id)
        try:
            out = await self.p.call(self.p.service.retry_failed, uid, batch_id)
        except ServiceError as exc:
            flash(request, f"Nothing was retried: {exc}", "error")
        else:
            n = len(out["retried"])
            flash(request, f"{n} failed transfer{'s' if n != 1 else ''} running again.")
            for s in out["skipped"][:20]:
                where = f"Line {s['line']}: " if s["line"] else ""
                flash(request, f"{where}{s['message']}", "error")
        return RedirectResponse(f"/batches/{batch_id}", 303)

    async def drop(self, request: Request, batch_id: str) -> Response:
        from .pages import flash

        uid = await self.p.user(request)
        await self.p.form(request)
        try:
            await self.p.call(self.p.service.drop_batch, uid, check_batch_id(batch_id))
        except ServiceError as exc:
            flash(request, f"Not dropped: {exc}", "error")
            return RedirectResponse(f"/batches/{batch_id}", 303)
        flash(request, "The batch is dropped, with the passwords of lines never started.")
        return RedirectResponse("/batches", 303)

    async def results(self, request: Request, batch_id: str) -> Response:
        uid = await self.p.user(request)
        batch_id = check_batch_id(batch_id)
        text = await self.p.call(self.p.service.batch_results_csv, uid, batch_id)
        return csv_download(text, batch_id)


def add_batch_pages(r: APIRouter, pages: Pages) -> None:
    b = BatchPages(pages)
    html = {"response_class": HTMLResponse}
    r.add_api_route("/batches", b.index, methods=["GET"], **html)
    r.add_api_route("/batches/{batch_id}", b.show, methods=["GET"], **html)
    r.add_api_route("/batches/{batch_id}/start", b.start, methods=["POST"])
    r.add_api_route("/batches/{batch_id}/retry-failed", b.retry, methods=["POST"])
    r.add_api_route("/batches/{batch_id}/settle", b.settle, methods=["POST"])  # issue 20
    r.add_api_route("/batches/{batch_id}/drop", b.drop, methods=["POST"])
    r.add_api_route("/batches/{batch_id}/results.csv", b.results, methods=["GET"])
