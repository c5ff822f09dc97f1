"""Helpers for the service and job tests: a service factory, an SMTP sink, mailboxes.

Fixtures are defined here and imported by tests/service/conftest.py and
tests/jobs/conftest.py, so both directories share them without touching the top-level
conftest.
"""

from __future__ import annotations

import email
import email.policy
import random
import socket
import threading
import time
from collections.abc import Callable, Iterator
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest

from tests import mailcheck
from tests.transfer.test_move import FLAG_SETS, make_message
from yippiemove.service.config import Settings
from yippiemove.service.core import Account, JobView, Service
from yippiemove.testing.dovecot import DovecotServer, MaildirMessage

#: Marker passwords: grepped for in every file the service writes.
SRC_PW = "Src-Marker-pw-7c1e9a44"
DST_PW = "Dst-Marker-pw-b20f6d31"

#: Fast knobs for tests (the defaults are for production).
FAST = {
    "progress_interval": 0.05,
    "restart_delay": 0.2,
    "maintenance_interval": 3600.0,
    "job_kill_grace": 5.0,
    # The test servers are on loopback, which the egress policy refuses by default.
    "egress_allow": "127.0.0.0/8",
    # Job processes at the service's priority, as before admission (issue 18): on the
    # busy test machine niced jobs would lose the processors to the pytest workers and
    # the timing of the tests written before would change.  tests/jobs/test_admission.py
    # checks the nice value itself.
    "job_nice": 0,
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class SmtpSink:
    """A local SMTP server (aiosmtpd) that keeps every message it receives."""

    def __init__(self) -> None:
        from aiosmtpd.controller import Controller

        self.messages: list[EmailMessage] = []
        self.envelopes: list[tuple[str, list[str]]] = []
        self._cond = threading.Condition()
        self.port = free_port()
        self.controller = Controller(self, hostname="127.0.0.1", port=self.port)

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        msg = email.message_from_bytes(envelope.content, policy=email.policy.default)
        assert isinstance(msg, EmailMessage)
        with self._cond:
            self.messages.append(msg)
            self.envelopes.append((envelope.mail_from, list(envelope.rcpt_tos)))
            self._cond.notify_all()
        return "250 OK"

    def wait_for(
        self, predicate: Callable[[EmailMessage], bool], timeout: float = 15
    ) -> EmailMessage:
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                for m in self.messages:
                    if predicate(m):
                        return m
                left = deadline - time.monotonic()
                if left <= 0:
                    subjects = [m["Subject"] for m in self.messages]
                    raise AssertionError(f"no such mail within {timeout} s; got {subjects}")
                self._cond.wait(left)


@pytest.fixture
def smtp_sink() -> Iterator[SmtpSink]:
    sink = SmtpSink()
    sink.controller.start()
    try:
        yield sink
    finally:
        # A test that asked for ``make_service`` before ``smtp_sink`` has its sink stopped
        # first: mail still queued would hang its service's teardown (notifier.flush, 10 s).
        for svc in _LIVE_SERVICES:
            svc.notifier.flush()
        sink.controller.stop()


#: The services of ``make_service`` not yet stopped (this process's tests).
_LIVE_SERVICES: list[Service] = []


@pytest.fixture
def make_service(tmp_path: Path) -> Iterator[Callable[..., Service]]:
    """``make_service(**settings)``: a Service on ``tmp_path/data``; stopped at teardown."""
    services: list[Service] = []

    def make(**overrides: Any) -> Service:
        values = dict(FAST)
        values.update(overrides)
        svc = Service(Settings.load(tmp_path / "data", **values))
        services.append(svc)
        _LIVE_SERVICES.append(svc)
        return svc

    yield make
    try:
        for svc in reversed(services):
            svc.stop(timeout=15)
            svc.close()
    finally:
        for svc in services:
            _LIVE_SERVICES.remove(svc)


def mailing_service(
    make_service: Callable[..., Service], server: DovecotServer, smtp_sink: SmtpSink, **kw: Any
) -> Service:
    """A service (``make_service``) trusting ``server``'s CA that mails through ``smtp_sink``."""
    return make_service(
        ca_file=str(server.ca_file),
        smtp_host="127.0.0.1",
        smtp_port=smtp_sink.port,
        smtp_from="moves@yippiemove.example",
        **kw,
    )


def account(server: DovecotServer, user: str, password: str, security: str = "starttls") -> Account:
    return Account("127.0.0.1", server.port, security, user, password)


def wait_status(
    svc: Service,
    user_id: int,
    job_id: str,
    statuses: tuple[str, ...] = ("done", "failed", "cancelled"),
    timeout: float = 120,
) -> JobView:
    deadline = time.monotonic() + timeout
    while True:
        view = svc.get_transfer(user_id, job_id)
        if view.status in statuses:
            return view
        if time.monotonic() > deadline:
            raise AssertionError(f"job still {view.status} after {timeout} s: {view.progress}")
        time.sleep(0.05)


def wait_progress(
    svc: Service, user_id: int, job_id: str, fraction: float, timeout: float = 60
) -> JobView:
    """Until the job has copied ``fraction`` of its bytes (and is still running)."""
    deadline = time.monotonic() + timeout
    while True:
        view = svc.get_transfer(user_id, job_id)
        p = view.progress
        if (
            view.status == "running"
            and p["bytes_total"]
            and p["bytes_done"] >= fraction * p["bytes_total"]
        ):
            return view
        if view.status in ("done", "failed", "cancelled"):
            raise AssertionError(f"the job ended ({view.status}) before it could be interrupted")
        if time.monotonic() > deadline:
            raise AssertionError(f"no progress within {timeout} s: {view.status} {p}")
        time.sleep(0.02)


def big_mailbox(
    server: DovecotServer, user: str = "src", count: int = 1600, seed: int = 42
) -> None:
    """~90 MB in two folders: long enough to be interrupted mid-transfer."""
    rng = random.Random(seed)
    items = [
        MaildirMessage(
            make_message(i, size=rng.choice((300, 3000, 30000, 150000))), FLAG_SETS[i % 6]
        )
        for i in range(count)
    ]
    half = count * 3 // 5
    server.deliver_many(user, "INBOX", items[:half])
    server.deliver_many(user, "Big/Folder", items[half:])


def assert_exact(
    server: DovecotServer, src_user: str, src_pw: str, dst_user: str, dst_pw: str
) -> dict[str, Any]:
    """Every source folder is on the destination with exactly the same messages."""
    src = mailcheck.snapshot(server.port, src_user, src_pw)
    dst = mailcheck.snapshot(server.port, dst_user, dst_pw)
    assert set(src) <= set(dst), f"missing folders: {set(src) - set(dst)}"
    for folder, msgs in src.items():
        assert dst[folder] == msgs, f"folder {folder!r} differs"
    return src


def files_containing(top: Path, needle: bytes) -> list[Path]:
    """Every file under ``top`` whose bytes contain ``needle``."""
    hits = []
    for path in top.rglob("*"):
        if path.is_file() and needle in path.read_bytes():
            hits.append(path)
    return hits


def jail_pid(svc: Service, job_id: str) -> int | None:
    from yippiemove.service.db import Job

    with svc.db.session() as s:
        job = s.get(Job, job_id)
        ident = job.jail if job is not None else None
    return int(ident.split("|")[1]) if ident else None


def pid_alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
    except OSError:
        return False
    return state != "Z"


def wait_gone(pid: int, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while pid_alive(pid):
        if time.monotonic() > deadline:
            raise AssertionError(f"process {pid} is still alive")
        time.sleep(0.02)
