"""E-mail to a job's owner when it starts, completes or fails (smtplib).

Mail goes out from one background thread, so a slow or dead SMTP server never holds up
a job's supervisor; failures are logged and dropped (a transfer does not fail because
its notification could not be sent).  Without ``smtp_host`` nothing is sent.
Messages carry account labels and counts only: never a password.
"""

from __future__ import annotations

import logging
import queue
import smtplib
import ssl
import threading
from email.message import EmailMessage
from email.utils import formatdate, make_msgid
from typing import Any

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
        self._send(
            to,
            f"Your mailbox transfer {_route(job)} has started",
            f"We started copying {_src(job)} to {_dst(job)}.\n\n"
            f"Follow it here: {self._link(job)}\n",
        )

    def job_done(self, to: str, job: dict[str, Any]) -> None:
        p = job.get("progress") or {}
        body = (
            f"Your mailbox transfer from {_src(job)} to {_dst(job)} is complete.\n\n"
            f"Messages: {p.get('messages_done', 0)} of {p.get('messages_total', 0)}, "
            f"{_mb(p.get('bytes_done', 0))} MB.\n"
        )
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
    return f"{n / 1e6:.1f}"
