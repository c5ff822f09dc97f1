"""Batches as first-class objects (issue 17, "a domain at a time").

A batch is a customer's list of mailbox pairs (a CSV file, or JSON lines over REST),
stored with its lines before anything starts.  Its life:

1. **checking**: the pre-flight logs in to every line's source and destination (the
   account check of service/checks.py, a limited child process per line), at most
   ``batch_check_parallel`` lines at once, in a thread of its own: the request that
   made the batch has already answered (202).  A bad line keeps its number, the side
   ("source"/"dest"), the kind (policy/failures.py) and the plain message.
2. **checked**: every line has a verdict.  When all passed and the batch was made with
   ``autostart`` it starts at once; otherwise it waits for the customer's "start the
   good lines" (:meth:`Batches.start_batch`).
3. **running**: each good line became a job (``jobs.batch_id`` = the batch's id: one
   summary mail when the last one ends, service/jobhost.py); the line's credentials are
   wiped as its job takes its own (encrypted) copy.  "done" is not stored: a running
   batch whose jobs have all ended is shown as done.

Credentials of lines not (yet) started are a Fernet token like a job's
(service/secrets.py), wiped at start, when the batch is dropped, or
``credential_retention_days`` after the pre-flight when nobody started it.

A mixin of :class:`~yippiemove.service.core.Service` (its database, credential box,
checks and transfers).
"""

from __future__ import annotations

import asyncio
import csv
import io
import logging
import re
import threading
import time
import uuid
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from sqlalchemy import delete, select

from ..jobs.vocab import TERMINAL, JobStatus
from ..policy.failures import describe, kind_of_text
from .db import Batch, BatchLine, Database, Job, PriceQuote, User

if TYPE_CHECKING:
    from .core import Account, Service

log = logging.getLogger("yippiemove.service.batches")

__all__ = ["BATCH_STATES", "LINE_CHECKS", "Batches", "end_user_notice", "results_csv"]

#: Stored states (a running batch whose jobs all ended is shown "done").
BATCH_STATES = ("checking", "checked", "running", "done")
#: A line's pre-flight verdict, then its start: ``refused`` when its job could not be
#: made (the same pair already running, too many transfers queued).
LINE_CHECKS = ("waiting", "checking", "ok", "bad", "started", "refused")
#: Seconds to wait before asking again for a check slot the whole service shares.
BUSY_WAIT = 0.25
#: A customer's batches being checked at once (each holds a thread and up to
#: ``batch_check_parallel`` checks); one more is refused (429) until one is checked.
MAX_CHECKING_PER_USER = 4
_ADDRESS = re.compile(r"\A[^@\s]+@[^@\s]+\.[^@\s]+\Z")
#: A spreadsheet runs a cell starting with one of these as a formula (CSV injection).
_FORMULA = ("=", "+", "-", "@", "\t", "\r")


def _shown(account: dict[str, Any]) -> dict[str, Any]:
    return {k: account[k] for k in ("host", "port", "security", "username") if k in account}


def _side_of(message: str) -> str | None:
    head = message.split(":", 1)[0].split(".", 1)[0].strip()
    return {"source": "source", "dest": "dest", "destination": "dest"}.get(head)


def _name(value: Any) -> str:
    return " ".join(str(value or "").split())[:200]


class Batches:
    """The batch methods of the Service (see the module)."""

    # ------------------------------------------------------------------ creating

    def create_batch(
        self: Service,
        user_id: int,
        rows: list[tuple[int, Account, Account]],
        *,
        name: str = "",
        kind: str = "csv",
        notify_end_users: bool = False,
        autostart: bool = True,
        check: bool = True,
        folders: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        """Store a batch of checked-in-form rows (``(line number, source, dest)``, as
        :meth:`parse_batch_csv` gives them) and start its pre-flight in the background;
        the batch's view (state "checking").  ``check=False`` (tests, trusted callers)
        skips the pre-flight: every line is "ok" at once.  ``folders``: the checked
        folder selection (``JobSpec.folders.as_dict()``) of every line's transfer."""
        from sqlalchemy import func

        from .core import Busy, ServiceError

        self.user_email(user_id)
        if not rows:
            raise ServiceError("the batch has no mailbox pairs to move")
        if check:
            with self.db.read() as s:
                checking = s.scalar(
                    select(func.count())
                    .select_from(Batch)
                    .where(Batch.user_id == user_id, Batch.state == "checking")
                )
            if int(checking or 0) >= MAX_CHECKING_PER_USER:
                raise Busy(
                    f"you already have {checking} batches being checked (at most "
                    f"{MAX_CHECKING_PER_USER} at a time); send this one when one is done"
                )
        limit = self.settings.batch_max_transfers
        if limit > 0 and len(rows) > limit:
            raise ServiceError(f"too many transfers: at most {limit} per batch; split the file")
        now = time.time()
        batch_id = uuid.uuid4().hex
        with self.db.session() as s:
            s.add(
                Batch(
                    id=batch_id,
                    user_id=user_id,
                    name=_name(name) or time.strftime("Batch of %Y-%m-%d %H:%M", time.gmtime(now)),
                    kind=kind,
                    state="checking" if check else "checked",
                    created=now,
                    notify_end_users=bool(notify_end_users),
                    autostart=bool(autostart),
                    lines_total=len(rows),
                    lines_checked=0 if check else len(rows),
                    lines_bad=0,
                    folders=folders,
                )
            )
            s.flush()
            for n, src, dst in rows:
                s.add(
                    BatchLine(
                        batch_id=batch_id,
                        line=int(n),
                        source=_shown(src.public()),
                        dest=_shown(dst.public()),
                        check="waiting" if check else "ok",
                        credentials=self.box.encrypt(
                            {"source": src.as_dict(), "dest": dst.as_dict()}
                        ),
                        end_user_mailed=False,
                    )
                )
        log.info("batch %s: %d line(s) for user %d", batch_id, len(rows), user_id)
        if check:
            if self._running():
                self._start_preflight(batch_id)
        elif autostart:
            self.start_batch(user_id, batch_id)
        return self.get_batch(user_id, batch_id)

    def _running(self: Service) -> bool:
        """Whether this Service runs (``start()``: ``serve``, with or without workers):
        only then does it check batches in the background; a batch stored by a Service
        that does not run is checked by the next one that starts."""
        return self._janitor is not None and not self._stopping.is_set()

    def _start_preflight(self: Service, batch_id: str) -> threading.Thread:
        thread = threading.Thread(
            target=self._preflight_thread, args=(batch_id,), name=f"preflight-{batch_id[:8]}"
        )
        thread.daemon = True
        thread.start()
        self._preflights().append(thread)
        return thread

    def resume_preflights(self: Service) -> list[str]:
        """Start again the pre-flights a stop interrupted (batches still "checking"):
        the lines without a verdict are checked; a verdict is stored once (a line
        checked twice, by two web servers of a fleet, counts once)."""
        with self.db.read() as s:
            ids = list(s.scalars(select(Batch.id).where(Batch.state == "checking")))
        for batch_id in ids:
            log.info("batch %s: resuming its pre-flight", batch_id)
            self._start_preflight(batch_id)
        return ids

    def _preflights(self: Service) -> list[threading.Thread]:
        threads: list[threading.Thread] | None = getattr(self, "_preflight_threads", None)
        if threads is None:
            threads = []
            self._preflight_threads = threads  # type: ignore[attr-defined]
        threads[:] = [t for t in threads if t.is_alive()]
        return threads

    def wait_preflights(self: Service, timeout: float | None = None) -> None:
        """Wait for the pre-flights under way in this process (tests, shutdown)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        for t in list(self._preflights()):
            t.join(None if deadline is None else max(0.0, deadline - time.monotonic()))

    def _preflight_thread(self: Service, batch_id: str) -> None:
        try:
            asyncio.run(self.preflight(batch_id))
        except Exception:  # a bug: the batch says so rather than checking forever
            log.exception("batch %s: the pre-flight failed", batch_id)
            with self.db.session() as s:
                for line in s.scalars(
                    select(BatchLine).where(
                        BatchLine.batch_id == batch_id,
                        BatchLine.check.in_(("waiting", "checking")),
                    )
                ):
                    line.check, line.kind = "bad", "internal"
                    line.message = "something went wrong on our side while checking this line"
            self._checked(batch_id)

    async def preflight(self: Service, batch_id: str) -> None:
        """Check every line not checked yet, ``batch_check_parallel`` at once."""
        with self.db.read() as s:
            numbers = list(
                s.scalars(
                    select(BatchLine.line)
                    .where(
                        BatchLine.batch_id == batch_id,
                        BatchLine.check.in_(("waiting", "checking")),
                    )
                    .order_by(BatchLine.line)
                )
            )
        bound = asyncio.Semaphore(max(1, int(self.settings.batch_check_parallel)))

        async def one(n: int) -> None:
            async with bound:
                await self._check_line(batch_id, n)

        await asyncio.gather(*(one(n) for n in numbers))
        await asyncio.to_thread(self._checked, batch_id)

    async def _check_line(self: Service, batch_id: str, n: int) -> None:
        from ..jobs import spec
        from .core import Account, Busy, ServiceError

        def load() -> tuple[dict[str, Any], int, Any] | None:
            with self.db.session() as s:
                line = s.get(BatchLine, (batch_id, n))
                batch = s.get(Batch, batch_id)
                if line is None or line.credentials is None or line.check in ("ok", "bad"):
                    return None  # dropped, or judged by another pre-flight meanwhile
                line.check = "checking"
                owner = batch.user_id if batch is not None else 0
                chosen = batch.folders if batch is not None else None
                return dict(self.box.decrypt(line.credentials)), owner, chosen

        loaded = await asyncio.to_thread(load)
        if loaded is None:
            return
        creds, owner, chosen = loaded
        src = Account.from_dict(creds["source"], "source")
        dst = Account.from_dict(creds["dest"], "dest")
        del creds, loaded
        billing = getattr(self, "billing", None)
        priced = billing is not None and billing.enabled
        folders = spec.check_folders(chosen) if chosen else None
        quote_id: str | None = None
        verdict: tuple[str, str | None, str | None, str | None]
        while True:
            try:
                # No customer cap here (the batch's own bound is the cap), the
                # service-wide one applies: a busy service makes the check wait.
                listed = await self.check_account(
                    src, role="source", dest=dst, user_id=None, folders=folders
                )
            except Busy:
                await asyncio.sleep(BUSY_WAIT)
                continue
            except ServiceError as exc:
                message = str(exc)
                verdict = ("bad", _side_of(message), kind_of_text(message, "other"), message)
            except Exception:
                log.exception("batch %s line %d: the check failed", batch_id, n)
                verdict = (
                    "bad",
                    None,
                    "internal",
                    "something went wrong on our side while checking this line",
                )
            else:
                verdict = ("ok", None, None, None)
                if priced:  # issue 20: the line's price, from what the check measured
                    chosen_ones = [f for f in listed if folders is None or f.selected]
                    quote = await asyncio.to_thread(
                        billing.make_quote,
                        owner,
                        billing.subject(owner, src, folders),
                        sum(int(f.bytes or 0) for f in chosen_ones),
                        sum(int(f.messages or 0) for f in chosen_ones),
                        None,
                        self.settings.credential_retention_days * 86400,
                    )
                    quote_id = quote.id
            break

        def store() -> None:
            with self.db.session() as s:
                line = s.get(BatchLine, (batch_id, n))
                batch = s.get(Batch, batch_id, with_for_update=True)
                if line is None or batch is None or line.check in ("ok", "bad"):
                    return  # dropped, or judged by another pre-flight meanwhile
                line.check, line.side, line.kind, line.message = verdict
                line.quote_id = quote_id
                batch.lines_checked = (batch.lines_checked or 0) + 1
                if verdict[0] == "bad":
                    batch.lines_bad = (batch.lines_bad or 0) + 1

        await asyncio.to_thread(store)

    def _checked(self: Service, batch_id: str) -> None:
        """The pre-flight ended: "checked", and started when it may start itself."""
        with self.db.session() as s:
            batch = s.get(Batch, batch_id, with_for_update=True)
            if batch is None or batch.state != "checking":
                return
            batch.state = "checked"
            user_id, go = batch.user_id, batch.autostart and not batch.lines_bad
        log.info("batch %s: pre-flight done", batch_id)
        if go:
            from .core import ServiceError

            try:
                self.start_batch(user_id, batch_id)
            except ServiceError as exc:  # every line refused at start: the page says why
                log.info("batch %s: nothing started: %s", batch_id, exc)

    # ------------------------------------------------------------------ starting

    def _own_batch(self: Service, s: Any, user_id: int, batch_id: str, lock: bool = False) -> Batch:
        from .core import NotFound

        if not isinstance(batch_id, str) or not batch_id:
            raise NotFound("no such batch")
        batch = s.get(Batch, batch_id, with_for_update=lock)
        if batch is None or batch.user_id != user_id:
            raise NotFound("no such batch")
        return batch

    def start_batch(self: Service, user_id: int, batch_id: str) -> dict[str, Any]:
        """Start the lines that passed the pre-flight (and lines refused at an earlier
        start): a job each, tagged with the batch.  Bad lines never start.  Conflict
        while the pre-flight runs, or when no line may start."""
        from ..jobs import spec
        from .core import Account, Conflict, ServiceError

        with self.db.read() as s:
            batch = self._own_batch(s, user_id, batch_id)
            if batch.state == "checking":
                raise Conflict("the batch is still being checked; start it when it is done")
            folders = spec.check_folders(batch.folders) if batch.folders else None
            lines = list(
                s.scalars(
                    select(BatchLine)
                    .where(BatchLine.batch_id == batch_id, BatchLine.check.in_(("ok", "refused")))
                    .order_by(BatchLine.line)
                )
            )
        if not any(line.credentials is not None for line in lines):
            raise Conflict("no line of this batch can start (none passed the pre-flight)")
        specs: dict[int, Any] = {}
        refused: dict[int, str] = {}
        pinned: dict[tuple[str, int], str | None] = {}
        for line in lines:
            if line.credentials is None:
                continue
            creds = self.box.decrypt(line.credentials)
            try:
                specs[line.line] = self.make_spec(
                    Account.from_dict(creds["source"], "source"),
                    Account.from_dict(creds["dest"], "dest"),
                    folders,
                    pinned=pinned,
                )
            except ServiceError as exc:
                refused[line.line] = str(exc)
            del creds
        started: list[str] = []
        waiting: list[str] = []  # billing on: ordered, waiting for their payment
        now = time.time()
        with self.db.session() as s:
            batch = self._own_batch(s, user_id, batch_id, lock=True)
            for n, job_spec in specs.items():
                line = s.get(BatchLine, (batch_id, n))
                if line is None or line.credentials is None or line.job_id is not None:
                    continue  # started meanwhile (two clicks)
                try:
                    with s.begin_nested():
                        view = self._add_job(s, user_id, job_spec, None, line.quote_id)
                        job = s.get(Job, view.id)
                        assert job is not None
                        job.batch_id = batch_id
                except ServiceError as exc:
                    refused[n] = str(exc)
                    continue
                line.job_id, line.check, line.credentials = view.id, "started", None
                line.message = line.kind = line.side = None
                if view.status == JobStatus.QUEUED:  # not one waiting for its payment
                    started.append(view.id)
                else:
                    waiting.append(view.id)
            for n, why in refused.items():
                line = s.get(BatchLine, (batch_id, n))
                if line is not None and line.job_id is None:
                    line.check, line.message, line.kind = "refused", why, kind_of_text(why)
            if started or waiting:
                batch.state = "running"
                batch.started = batch.started or now
        for job_id in started:
            self._enqueue(job_id)
        log.info("batch %s: %d job(s) started, %d refused", batch_id, len(started), len(refused))
        if not started and not waiting and refused:
            raise Conflict(
                "no line could start: " + "; ".join(f"line {n}: {m}" for n, m in refused.items())
            )
        return self.get_batch(user_id, batch_id)

    def retry_failed(self: Service, user_id: int, batch_id: str) -> dict[str, Any]:
        """Run the batch's failed jobs again (each resumes where it stopped; a job whose
        password was refused takes a new one first, on its page or
        ``PUT /api/v1/transfers/ID/credentials``), and start lines refused at start.
        ``{"retried": [line numbers], "skipped": [{"line", "message"}], "batch": view}``."""
        from .core import Conflict, ServiceError

        with self.db.session() as s:
            batch = self._own_batch(s, user_id, batch_id, lock=True)
            if batch.state not in ("running", "checked"):
                raise Conflict("the batch has not started yet")
            rows = s.execute(
                select(BatchLine.line, Job.id, Job.status)
                .join(Job, Job.id == BatchLine.job_id)
                .where(BatchLine.batch_id == batch_id)
                .order_by(BatchLine.line)
            ).all()
            has_refused = (
                s.scalar(
                    select(BatchLine.line).where(
                        BatchLine.batch_id == batch_id, BatchLine.check == "refused"
                    )
                )
                is not None
            )
        retried: list[int] = []
        skipped: list[dict[str, Any]] = []
        for n, job_id, status in rows:
            if status != JobStatus.FAILED:
                continue
            try:
                self.rerun_transfer(user_id, job_id)
            except ServiceError as exc:
                skipped.append({"line": n, "message": str(exc)})
            else:
                retried.append(n)
        if retried:
            # One more summary mail when the re-run jobs have ended.
            with self.db.session() as s:
                first = s.scalars(
                    select(Job).where(Job.batch_id == batch_id).order_by(Job.created).limit(1)
                ).first()
                if first is not None:
                    first.batch_mailed = False
        if has_refused:
            try:
                self.start_batch(user_id, batch_id)
            except Conflict as exc:
                skipped.append({"line": None, "message": str(exc)})
        if not retried and not has_refused:
            raise Conflict("no line of this batch has failed")
        return {"retried": retried, "skipped": skipped, "batch": self.get_batch(user_id, batch_id)}

    def drop_batch(self: Service, user_id: int, batch_id: str) -> None:
        """Forget a batch: its lines and their stored credentials.  Jobs already started
        stay (they are the customer's transfers)."""
        from .core import Conflict

        with self.db.session() as s:
            batch = self._own_batch(s, user_id, batch_id, lock=True)
            if batch.state == "checking":
                raise Conflict("the batch is still being checked; drop it when it is done")
            s.execute(delete(BatchLine).where(BatchLine.batch_id == batch_id))
            s.delete(batch)
        log.info("batch %s: dropped", batch_id)

    def expire_batch_credentials(self: Service, now: float | None = None) -> int:
        """Wipe the credentials of lines nobody started ``credential_retention_days``
        after their batch was made; how many."""
        now = time.time() if now is None else now
        horizon = now - self.settings.credential_retention_days * 86400.0
        with self.db.session() as s:
            old = select(Batch.id).where(Batch.created <= horizon)
            lines = list(
                s.scalars(
                    select(BatchLine).where(
                        BatchLine.batch_id.in_(old), BatchLine.credentials.is_not(None)
                    )
                )
            )
            for line in lines:
                line.credentials = None
        return len(lines)

    # ------------------------------------------------------------------ reading

    def list_batches(self: Service, user_id: int) -> list[dict[str, Any]]:
        with self.db.read() as s:
            batches = list(
                s.scalars(
                    select(Batch)
                    .where(Batch.user_id == user_id)
                    .order_by(Batch.created.desc(), Batch.id)
                )
            )
            return [_view(s, b, lines=False) for b in batches]

    def get_batch(self: Service, user_id: int, batch_id: str) -> dict[str, Any]:
        with self.db.read() as s:
            return _view(s, self._own_batch(s, user_id, batch_id), lines=True)

    def batch_results_csv(self: Service, user_id: int, batch_id: str) -> str:
        return "".join(results_csv(self.get_batch(user_id, batch_id)))


#: Kinds whose plain sentence (policy/failures.py) says more than the check's own text;
#: for the others (the same mailbox twice, a refused address...) our text is the plain one.
_PLAIN_KINDS = frozenset({"auth", "unreachable", "tls", "consent_revoked", "rate_limited"})


def _problem(line: BatchLine) -> dict[str, Any] | None:
    """Why a line is bad (or refused at start): the side, the kind, the plain message
    and, as ``detail``, the check's own text (the server's answer, never a password)."""
    if not line.message:
        return None
    plain = line.message
    if line.check == "bad" and line.kind in _PLAIN_KINDS:
        plain = str((describe(line.message, line.kind, line.side) or {})["message"])
    return {"side": line.side, "kind": line.kind, "message": plain, "detail": line.message}


def _line_view(line: BatchLine, job: Job | None) -> dict[str, Any]:
    p = (job.progress or {}) if job is not None else {}
    status = job.status if job is not None else None
    return {
        "line": line.line,
        "source": dict(line.source),
        "dest": dict(line.dest),
        "check": line.check,
        "problem": _problem(line),
        "job_id": line.job_id,
        "status": status,
        "messages_done": int(p.get("messages_done") or 0),
        "messages_total": int(p.get("messages_total") or 0),
        "bytes_done": int(p.get("bytes_done") or 0),
        "bytes_total": int(p.get("bytes_total") or 0),
        "failed_messages": int(p.get("failed") or 0),
        "error": job.error if job is not None else None,
    }


def _view(s: Any, batch: Batch, *, lines: bool) -> dict[str, Any]:
    rows = s.execute(
        select(BatchLine, Job)
        .outerjoin(Job, Job.id == BatchLine.job_id)
        .where(BatchLine.batch_id == batch.id)
        .order_by(BatchLine.line)
    ).all()
    views = [_line_view(line, job) for line, job in rows]
    quote_ids = [line.quote_id for line, _ in rows if line.quote_id]
    prices: dict[str, tuple[int, str]] = {}
    if quote_ids:
        for qid, price, cur in s.execute(
            select(PriceQuote.id, PriceQuote.price, PriceQuote.currency).where(
                PriceQuote.id.in_(quote_ids)
            )
        ):
            prices[qid] = (int(price), cur)
    for (line, _job), v in zip(rows, views, strict=True):
        v["price"] = prices[line.quote_id][0] if line.quote_id in prices else None
    totals: dict[str, int] = {
        k: 0
        for k in (
            "lines",
            "ok",
            "bad",
            "refused",
            "waiting",
            "queued",
            "running",
            "done",
            "failed",
            "cancelled",
            "awaiting_payment",
            "messages_done",
            "messages_total",
            "bytes_done",
            "bytes_total",
            "failed_messages",
        )
    }
    for v in views:
        totals["lines"] += 1
        if v["status"] is not None:
            totals[v["status"]] += 1
        elif v["check"] in ("bad", "refused", "ok"):
            totals[v["check"]] += 1
        else:
            totals["waiting"] += 1
        for k in ("messages_done", "messages_total", "bytes_done", "bytes_total"):
            totals[k] += v[k]
        totals["failed_messages"] += v["failed_messages"]
    state = batch.state
    jobs = [v for v in views if v["status"] is not None]
    if state == "running" and jobs and all(v["status"] in TERMINAL for v in jobs):
        state = "done"
    out: dict[str, Any] = {
        "id": batch.id,
        "name": batch.name,
        "kind": batch.kind,
        "state": state,
        "created": batch.created,
        "started": batch.started,
        "notify_end_users": bool(batch.notify_end_users),
        "autostart": bool(batch.autostart),
        "lines_total": batch.lines_total,
        "lines_checked": batch.lines_checked,
        "lines_bad": batch.lines_bad,
        "totals": totals,
        "can_start": state == "checked" and totals["ok"] + totals["refused"] > 0,
        "can_retry": totals["failed"] + totals["refused"] > 0 and state in ("running", "done"),
    }
    if prices:  # billing on (issue 20): the price of every line priced, and their sum
        out["price"] = {
            "total": sum(v["price"] or 0 for v in views if v["check"] != "bad"),
            "currency": next(iter(prices.values()))[1],
        }
    if lines:
        out["lines"] = views
    return out


RESULT_COLUMNS = (
    "line",
    "source_username",
    "source_host",
    "dest_username",
    "dest_host",
    "preflight",
    "status",
    "messages_done",
    "messages_total",
    "bytes_done",
    "failed_messages",
    "problem",
    "job_id",
)


def _cell(value: object) -> object:
    if isinstance(value, str) and value.startswith(_FORMULA):
        return "'" + value
    return "" if value is None else value


def results_csv(view: dict[str, Any]) -> Iterator[str]:
    """A batch's results, one CSV line per batch line (a header first); a cell that a
    spreadsheet would run as a formula gets a leading apostrophe."""
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(RESULT_COLUMNS)
    for v in view.get("lines", []):
        p = v.get("problem") or {}
        problem = p.get("message") or v.get("error") or ""
        if p.get("detail") and p["detail"] != problem:
            problem = f"{problem} ({p['detail']})"
        w.writerow(
            [
                _cell(x)
                for x in (
                    v["line"],
                    v["source"].get("username"),
                    v["source"].get("host"),
                    v["dest"].get("username"),
                    v["dest"].get("host"),
                    v["check"] if v["check"] in ("bad", "waiting", "checking") else "ok",
                    v["status"] or "not started",
                    v["messages_done"],
                    v["messages_total"],
                    v["bytes_done"],
                    v["failed_messages"],
                    problem,
                    v["job_id"],
                )
            ]
        )
    yield buf.getvalue()


def end_user_notice(db: Database, job_id: str) -> dict[str, Any] | None:
    """For the supervisor (service/jobhost.py): the end user's notice of a done job
    whose batch asked for one, claimed once; None otherwise."""
    from .jobhost import _mail_view

    with db.session() as s:
        line = s.scalars(
            select(BatchLine).where(BatchLine.job_id == job_id).with_for_update()
        ).first()
        if line is None or line.end_user_mailed:
            return None
        batch = s.get(Batch, line.batch_id)
        job = s.get(Job, job_id)
        if batch is None or job is None or not batch.notify_end_users:
            return None
        if job.status != JobStatus.DONE:
            return None
        to = str(job.source.get("username") or "")
        if not _ADDRESS.match(to):
            return None
        line.end_user_mailed = True
        user = s.get(User, job.user_id)
        return {"to": to, "job": _mail_view(job, user)}
