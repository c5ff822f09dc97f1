"""Issue 14, attack class 4 (starvation): fair share between customers.

A hostile "IMAP server" written here drips a line every half second forever: alive by
any per-line timeout, useless as a mail server.  Through the real Service (queue,
supervisor, job processes) and a real Dovecot for the other customer:

- the drip-fed job ends (too slow) within bounds, and another customer's job, queued
  behind it on the only worker, runs and finishes exact;
- a customer's jobs beyond ``customer_max_running`` wait, queued, and the job page says
  why, while another customer's job runs;
- a run longer than ``job_max_seconds`` that moves data is checkpointed and queued
  again behind the others, and still finishes exact;
- a batch over ``batch_max_transfers`` and orders beyond ``customer_max_pending`` are
  refused with clear words (429 on the REST API).
"""

from __future__ import annotations

import logging
import socket
import socketserver
import threading
import time
from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from tests.faultproxy import Fault, FaultProxy
from tests.svckit import DST_PW, SRC_PW, account, assert_exact, big_mailbox, wait_status
from tests.transfer.test_move import populate
from tests.web.conftest import Browser
from yippiemove.jobs.fairshare import STALLED, TOO_SLOW, Liveness, LivenessRules, may_checkpoint
from yippiemove.service.core import Account, ServiceError, TooManyTransfers
from yippiemove.web.app import create_app

A, B = "a@example.org", "b@example.org"


@pytest.fixture(autouse=True)
def _loopback_allowed(monkeypatch: pytest.MonkeyPatch) -> None:
    # The egress policy (issue 14) refuses loopback unless the operator allows it.
    monkeypatch.setenv("YIPPIEMOVE_EGRESS_ALLOW", "127.0.0.0/8")


class DripServer:
    """Greets like an IMAP server, then answers every command with ``* OK`` lines, one
    every ``every`` seconds, and never with a tagged completion."""

    def __init__(self, every: float = 0.5) -> None:
        self.every = every
        self.stop = threading.Event()
        self.connections = 0
        outer = self

        class Handler(socketserver.BaseRequestHandler):
            def handle(self) -> None:
                outer.connections += 1
                sock: socket.socket = self.request
                sock.sendall(b"* OK [CAPABILITY IMAP4rev1 AUTH=PLAIN] drip ready\r\n")
                sock.settimeout(30)
                try:
                    sock.recv(4096)  # the first command, whatever it is
                    while not outer.stop.wait(outer.every):
                        sock.sendall(b"* OK x\r\n")
                except OSError:
                    pass

        class Server(socketserver.ThreadingTCPServer):
            daemon_threads = True
            allow_reuse_address = True

        self.server = Server(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def account(self, user: str = "victim") -> Account:
        return Account("127.0.0.1", self.port, "none", user, "drip-password-1")

    def close(self) -> None:
        self.stop.set()
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def drip() -> Iterator[DripServer]:
    server = DripServer()
    try:
        yield server
    finally:
        server.close()


@pytest.fixture
def server(dovecot_factory):  # type: ignore[no-untyped-def]
    return dovecot_factory(users={"src": SRC_PW, "dst": DST_PW, "dst2": DST_PW, "dst3": DST_PW})


# ---------------------------------------------------------------------- the rules alone


def test_liveness_rules() -> None:
    """Bytes from the servers are life; the job's own lines are not; a trickle is slow."""
    rules = LivenessRules(stall_seconds=2, min_rate=100, rate_window=4)
    live = Liveness(rules, now=0.0)
    for t in range(1, 4):  # progress lines, no bytes: the job talks, the servers don't
        live.update({"traffic": {"source_in": 0}}, now=float(t), wall=1e9)
    assert live.verdict(3.0) == STALLED
    live = Liveness(rules, now=0.0)
    total = 0
    for tenth in range(1, 60):  # 8 bytes every half second: alive, but 16 B/s
        if tenth % 5 == 0:
            total += 8
        live.update({"traffic": {"source_in": total}}, now=tenth / 10, wall=1e9)
        assert live.verdict(tenth / 10) in (None, TOO_SLOW)
    assert live.verdict(5.9) == TOO_SLOW and not live.moving(5.9)
    live = Liveness(rules, now=0.0)
    for t in range(1, 10):  # 1000 B/s: moving
        live.update({"traffic": {"dest_out": 1000 * t}}, now=float(t), wall=1e9)
    assert live.verdict(9.0) is None and live.moving(9.0)
    # A wait the job chose (throttled, a retry's backoff) is not a silent server.
    live.update({"traffic": {"dest_out": 9000}, "retry_until": 1e9 + 30}, now=9.5, wall=1e9)
    assert live.verdict(30.0) is None
    assert live.verdict(39.6) == STALLED
    # A run is checkpointed only once it went past what every earlier run handled.
    assert may_checkpoint({"messages_done": 5}) and not may_checkpoint({"messages_done": 0})
    assert not may_checkpoint({"messages_done": 33, "checkpoint_mark": 33})
    assert may_checkpoint({"messages_done": 34, "checkpoint_mark": 33})


# ---------------------------------------------------------------------- through the service


@pytest.mark.parametrize("workers", [1, 2])
def test_drip_fed_jobs_end_and_the_other_customer_runs(make_service, server, drip, workers):
    """As many drip-fed jobs as workers (customer A): they end as too slow within
    bounds; customer B's job, queued behind them, then runs and finishes exact."""
    populate(server)
    svc = make_service(
        ca_file=str(server.ca_file),
        job_stall_seconds=3.0,
        job_min_rate=100.0,
        job_rate_window=5.0,
        job_max_restarts=2,
    )
    svc.start(workers)
    a, b = svc.create_user(A, "long enough pass"), svc.create_user(B, "long enough pass")
    t0 = time.monotonic()
    bad = [
        svc.create_transfer(a, drip.account(f"u{i}"), account(server, f"dst{i + 2}", DST_PW))
        for i in range(workers)
    ]
    good = svc.create_transfer(b, account(server, "src", SRC_PW), account(server, "dst", DST_PW))
    for job in bad:
        view = wait_status(svc, a, job.id, timeout=60)
        assert view.status == "failed", view
        assert "too slow" in (view.error or ""), view.error
    took = time.monotonic() - t0
    assert took < 45, took  # window 5 s; a generous bound only "never" breaks
    assert drip.connections >= workers
    view = wait_status(svc, b, good.id)
    assert view.status == "done", view
    assert_exact(server, "src", SRC_PW, "dst", DST_PW)


def test_per_customer_running_limit(make_service, server, drip):
    """Customer A's third order waits (the page says why) while B's job runs."""
    populate(server)
    svc = make_service(
        ca_file=str(server.ca_file),
        customer_max_running=2,
        mailbox_wait_seconds=0.5,
        job_stall_seconds=60.0,
        job_min_rate=0.0,
    )
    app = create_app(svc)
    browser = Browser(TestClient(app))
    browser.signup(A)
    a = svc.user_id_for_email(A)
    b = svc.create_user(B, "long enough pass")
    svc.start(3)
    jobs = [
        svc.create_transfer(a, drip.account(f"u{i}"), account(server, f"dst{i + 1}", DST_PW))
        for i in range(2)
    ]
    deadline = time.monotonic() + 30
    while not all(svc.get_transfer(a, j.id).status == "running" for j in jobs):
        assert time.monotonic() < deadline, [svc.get_transfer(a, j.id) for j in jobs]
        time.sleep(0.05)
    third = svc.create_transfer(a, drip.account("u3"), account(server, "dst3", DST_PW))
    other = svc.create_transfer(b, account(server, "src", SRC_PW), account(server, "dst", DST_PW))
    want = "waiting: you have 2 transfers running (limit 2)"
    deadline = time.monotonic() + 30
    while svc.get_transfer(a, third.id).progress.get("waiting_reason") != want:
        assert time.monotonic() < deadline, svc.get_transfer(a, third.id)
        time.sleep(0.05)
    view = wait_status(svc, b, other.id)
    assert view.status == "done", view
    assert_exact(server, "src", SRC_PW, "dst", DST_PW)
    third_view = svc.get_transfer(a, third.id)
    assert third_view.status == "queued", third_view
    page = browser.get(f"/transfers/{third.id}")
    assert page.status_code == 200
    assert "Waiting: you have 2 transfers running (limit 2)" in page.text
    # One of A's jobs ends: the third one starts.
    svc.cancel_transfer(a, jobs[0].id)
    wait_status(svc, a, jobs[0].id)
    wait_status(svc, a, third.id, statuses=("running",), timeout=30)
    for j in (jobs[1], third):
        svc.cancel_transfer(a, j.id)
        wait_status(svc, a, j.id)


def test_long_moving_job_is_checkpointed_and_requeued(make_service, server, caplog):
    """Over the maximum duration but moving data: stopped cleanly, queued again behind
    the other customer's job, resumed from its state, exact in the end."""
    caplog.set_level(logging.INFO, logger="yippiemove.supervisor")
    big_mailbox(server, count=400)  # ~22 MB, read through an 8 MB/s link: a few seconds
    server.add_user("src2", SRC_PW)
    populate(server, user="src2")
    svc = make_service(ca_file=str(server.ca_file), job_connections=1, job_max_seconds=2.0)
    svc.start(1)
    a, b = svc.create_user(A, "long enough pass"), svc.create_user(B, "long enough pass")
    with FaultProxy(server.port, lambda n: [Fault.throttle(8_000_000)]) as slow:
        source = Account("127.0.0.1", slow.port, "none", "src", SRC_PW)
        long = svc.create_transfer(a, source, account(server, "dst", DST_PW))
        while svc.get_transfer(a, long.id).status != "running":
            time.sleep(0.02)
        short = svc.create_transfer(
            b, account(server, "src2", SRC_PW), account(server, "dst2", DST_PW)
        )
        view = wait_status(svc, a, long.id, timeout=180)
    assert view.status == "done", view
    checkpoints = [r for r in caplog.records if "checkpointed" in r.getMessage()]
    assert checkpoints, "the long job was never checkpointed"
    short_view = wait_status(svc, b, short.id)
    assert short_view.status == "done", short_view
    # Behind the other customer's job: that one ended first.
    assert short_view.finished < view.finished
    assert view.attempts <= 2, view  # checkpoints are not failed attempts
    assert_exact(server, "src", SRC_PW, "dst", DST_PW)
    assert_exact(server, "src2", SRC_PW, "dst2", DST_PW)


def test_batch_and_pending_limits(make_service, server):
    """A batch over its size limit and orders past the pending limit: clear refusals."""
    svc = make_service(batch_max_transfers=2, customer_max_pending=2)
    uid = svc.create_user(A, "long enough pass")
    line = "127.0.0.1,{p},starttls,src{n},pw,127.0.0.1,{p},starttls,dst{n},pw\n"
    csv = "".join(line.format(p=server.port, n=n) for n in range(3))
    with pytest.raises(ServiceError, match=r"too many transfers: at most 2 per batch"):
        svc.validate_batch_csv(csv)
    rows, errors = svc.validate_batch_csv("".join(line.format(p=server.port, n=n) for n in (1, 2)))
    assert len(rows) == 2 and not errors
    for n in range(2):  # no workers: they stay queued
        svc.create_transfer(uid, account(server, "src", SRC_PW), account(server, f"d{n}", DST_PW))
    with pytest.raises(TooManyTransfers, match=r"2 transfers queued or running \(limit 2\)"):
        svc.create_transfer(uid, account(server, "src", SRC_PW), account(server, "d9", DST_PW))
    # The REST API says so with a 429 and the same words.
    token = svc.create_token(uid, "ci")
    c = TestClient(create_app(svc))  # no lifespan: the service's workers stay off
    side = {"host": "127.0.0.1", "port": server.port, "security": "starttls"}
    body = {
        "source": dict(side, username="src", password=SRC_PW),
        "dest": dict(side, username="d8", password=DST_PW),
    }
    r = c.post("/api/v1/transfers", json=body, headers={"Authorization": f"Bearer {token}"})
    assert r.status_code == 429, r.text
    assert "limit 2" in r.text
