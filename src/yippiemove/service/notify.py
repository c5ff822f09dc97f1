"""E-mail to a job's owner when it starts, completes or fails (smtplib).

Policy (issue 17, docs/design.md "Customer journey: rough edges and e-mail"): the start
mail goes out only once a run has lasted a minute (the supervisor's timer), a batch's
jobs send no mail of their own but one summary when the last one ends, numbers carry
thousands separators (1,234) and times are in the customer's time zone (``timezone``
of the view: an IANA name, UTC when unset or unknown), named.

Mail goes out from one background thread, so a slow or dead SMTP server never holds up
a job's supervisor; failures are logged and dropped (a transfer does not fail because
its notification could not be sent).  Without ``smtp_host`` nothing is sent.
Messages carry account labels and counts only: never a password.
"""

from __future__ import annotations

import datetime as dt
import logging
import queue
import smtplib
import ssl
import threading
from email.message import EmailMessage
from email.utils import formatdate, make_msgid
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from .config import Settings

log = logging.getLogger("yippiemove.notify")

__all__ = ["Notifier"]


class Notifier:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._queue: queue.Queue[EmailMessage | None] = queue.Queue()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    @property
    def enabled(self) -> bool:
        return bool(self.settings.smtp_host)

    # ------------------------------------------------------------------ messages

    def job_started(self, to: str, job: dict[str, Any]) -> None:
        since = _when(job.get("started"), job.get("timezone"))
        self._send(
            to,
            f"Your mailbox transfer {_route(job)} has started",
            f"We started copying {_src(job)} to {_dst(job)}"
            + (f" at {since}" if since else "")
            + ".\n\n"
            f"Follow it here: {self._link(job)}\n",
        )

    def job_done(self, to: str, job: dict[str, Any]) -> None:
        p = job.get("progress") or {}
        body = (
            f"Your mailbox transfer from {_src(job)} to {_dst(job)} is complete.\n\n"
            f"Messages: {_num(p.get('messages_done', 0))} of "
            f"{_num(p.get('messages_total', 0))}, {_mb(p.get('bytes_done', 0))} MB.\n"
        )
        ended = _when(job.get("finished"), job.get("timezone"))
        if ended:
            body += f"Finished: {ended}.\n"
        if job.get("error"):
            body += f"\nNote: {job['error']}\n"
        body += f"\nThe full report: {self._link(job)}\n"
        self._send(to, f"Your mailbox transfer {_route(job)} is complete", body)

    def job_failed(self, to: str, job: dict[str, Any]) -> None:
        self._send(
            to,
            f"Your mailbox transfer {_route(job)} failed",
            f"Copying {_src(job)} to {_dst(job)} stopped:\n\n    {job.get('error')}\n\n"
            "Nothing already copied is lost, and running the transfer again resumes it "
            f"without duplicates.\n\nDetails: {self._link(job)}\n",
        )

    def batch_done(self, to: str, batch: dict[str, Any]) -> None:
        """One mail for a whole batch, when its last job has ended (not one per job)."""
        jobs: list[dict[str, Any]] = batch.get("jobs") or []
        counts: dict[str, int] = {}
        for j in jobs:
            counts[j["status"]] = counts.get(j["status"], 0) + 1
        done = sum(int((j.get("progress") or {}).get("messages_done") or 0) for j in jobs)
        size = sum(int((j.get("progress") or {}).get("bytes_done") or 0) for j in jobs)
        ended = max((j.get("finished") or 0 for j in jobs), default=0) or None
        tz = batch.get("timezone")
        parts = [f"{_num(counts[s])} {s}" for s in ("done", "failed", "cancelled") if counts.get(s)]
        body = (
            f"Your batch of {_num(len(jobs))} mailbox transfers has ended: "
            f"{', '.join(parts) or 'nothing ran'}.\n\n"
            f"Messages copied: {_num(done)}, {_mb(size)} MB."
            + (f" Last one ended: {_when(ended, tz)}." if ended else "")
            + "\n\n"
        )
        for j in jobs:
            line = f"- {j['status']}: {_src(j)} -> {_dst(j)}  {self._link(j)}"
            if j.get("status") == "failed" and j.get("error"):
                line += f"\n    {j['error']}"
            body += line + "\n"
        failed = counts.get("failed", 0)
        if failed:
            body += (
                "\nNothing already copied is lost: running a failed transfer again resumes "
                "it without duplicates.\n"
            )
        subject = f"Your batch of {_num(len(jobs))} mailbox transfers has ended"
        if failed:
            subject += f" ({_num(failed)} failed)"
        self._send(to, subject, body)

    def signup_confirm(self, to: str, link: str) -> None:
        self._send(
            to,
            "Finish creating your yippiemove account",
            "Someone (you, we hope) asked to create a yippiemove account for this address.\n\n"
            f"To finish, open this link within a day:\n\n    {link}\n\n"
            "If it was not you, ignore this message: nothing happens without the link.\n",
        )

    def signup_exists(self, to: str, login_link: str) -> None:
        self._send(
            to,
            "Someone tried to sign up with your address",
            "Someone (you, perhaps) asked to create a yippiemove account for this address, "
            "but it has one already, so nothing was changed.\n\n"
            f"To use your account, log in here: {login_link}\n\n"
            "If it was not you, you need not do anything: your account and password are "
            "unchanged.\n",
        )

    # -- issue 17, account lifecycle (service/account.py) ---------------------------------

    def password_reset(self, to: str, link: str, minutes: int) -> None:
        self._send(
            to,
            "Reset your yippiemove password",
            "Someone (you, we hope) asked to reset the password of the yippiemove account "
            "of this address.\n\n"
            f"To choose a new password, open this link within {_num(minutes)} minutes "
            f"(it works once):\n\n    {link}\n\n"
            "If it was not you, ignore this message: your password stays as it is.\n",
        )

    def password_was_reset(self, to: str, login_link: str) -> None:
        self._send(
            to,
            "Your yippiemove password was changed",
            "The password of your yippiemove account was just set from a reset link, and "
            "every browser logged into it was logged out.  Your API tokens still work "
            "(revoke them on the API tokens page if you did not make them).\n\n"
            f"Log in: {login_link}\n\n"
            "If it was not you, reset your password again at once and check the "
            "mailbox of this address: whoever can read it can reset the password.\n",
        )

    def email_change_confirm(self, to: str, old: str, link: str) -> None:
        self._send(
            to,
            "Confirm your new address for yippiemove",
            f"The yippiemove account of {old} asked to use this address from now on.\n\n"
            f"To confirm, open this link within a day (it works once):\n\n    {link}\n\n"
            "Until then the account keeps its old address.  If it was not you, ignore "
            "this message: nothing changes without the link.\n",
        )

    def email_change_taken(self, to: str, login_link: str) -> None:
        self._send(
            to,
            "Someone tried to move a yippiemove account to your address",
            "Someone asked to use this address for their yippiemove account, but this "
            "address has an account already, so nothing was changed.\n\n"
            f"Your account: {login_link}\n",
        )

    def email_changed(self, to: str, new: str) -> None:
        self._send(
            to,
            "Your yippiemove account has a new address",
            f"The yippiemove account of this address now uses {new}: its mail goes there, "
            "and you log in with it.\n\n"
            "If it was not you, write to the service's operator at once.\n",
        )

    def account_deleted(self, to: str) -> None:
        self._send(
            to,
            "Your yippiemove account is deleted",
            "Your yippiemove account is deleted, as you asked: its transfers were stopped, "
            "and its transfers, reports, receipts, stored passwords, sign-ins and API "
            "tokens are gone.  Messages already copied stay in your destination "
            "mailboxes.\n\nGoodbye, and thank you for moving with us.\n",
        )

    def _link(self, job: dict[str, Any]) -> str:
        return f"{self.settings.base_url.rstrip('/')}/transfers/{job['id']}"

    # ------------------------------------------------------------------ sending

    def _send(self, to: str, subject: str, body: str) -> None:
        if not self.enabled or not to:
            return
        msg = EmailMessage()
        msg["From"] = self.settings.smtp_from
        msg["To"] = to
        msg["Subject"] = subject
        msg["Date"] = formatdate(localtime=True)
        msg["Message-ID"] = make_msgid(domain=self.settings.smtp_from.rpartition("@")[2] or None)
        msg["Auto-Submitted"] = "auto-generated"
        msg.set_content(body)
        with self._lock:
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(
                    target=self._loop, name="yippiemove-notify", daemon=True
                )
                self._thread.start()
        self._queue.put(msg)

    def send_now(self, msg: EmailMessage) -> None:
        """Deliver one message synchronously (raises on SMTP errors)."""
        s = self.settings
        assert s.smtp_host
        with smtplib.SMTP(s.smtp_host, s.smtp_port, timeout=30) as smtp:
            if s.smtp_starttls:
                smtp.starttls(context=ssl.create_default_context(cafile=s.ca_file))
            if s.smtp_username:
                password = ""
                if s.smtp_password_file:
                    password = s.smtp_password_file.read_text().rstrip("\r\n")
                smtp.login(s.smtp_username, password)
            smtp.send_message(msg)

    def _loop(self) -> None:
        while True:
            msg = self._queue.get()
            try:
                if msg is None:
                    return
                try:
                    self.send_now(msg)
                except (OSError, smtplib.SMTPException) as exc:
                    log.warning("could not send mail to %s: %s", msg["To"], exc)
            finally:
                self._queue.task_done()

    def flush(self, timeout: float = 10.0) -> None:
        """Wait (bounded) until queued mail has been handed to the SMTP server."""
        import time

        deadline = time.monotonic() + timeout
        while self._queue.unfinished_tasks and time.monotonic() < deadline:
            time.sleep(0.02)


def _src(job: dict[str, Any]) -> str:
    a = job["source"]
    return f"{a['username']} on {a['host']}"


def _dst(job: dict[str, Any]) -> str:
    a = job["dest"]
    return f"{a['username']} on {a['host']}"


def _route(job: dict[str, Any]) -> str:
    return f"({job['source']['username']} \u2192 {job['dest']['username']})"


def _mb(n: int) -> str:
    return f"{n / 1e6:,.1f}"


def _num(n: Any) -> str:
    """1234 -> "1,234" (issue 17: thousands separators)."""
    try:
        return f"{int(n):,}"
    except (TypeError, ValueError):
        return "0"


def _zone(name: Any) -> tuple[dt.tzinfo, str]:
    if isinstance(name, str) and name:
        try:
            return ZoneInfo(name), name
        except (ZoneInfoNotFoundError, ValueError):
            pass
    return dt.UTC, "UTC"


def _when(ts: Any, timezone: Any) -> str:
    """A time in the customer's zone, named: "2026-12-06 23:50 (Europe/Paris)"."""
    if not ts:
        return ""
    tz, name = _zone(timezone)
    try:
        t = dt.datetime.fromtimestamp(float(ts), tz)
    except (TypeError, ValueError, OverflowError, OSError):
        return ""
    return f"{t:%Y-%m-%d %H:%M} ({name})"
