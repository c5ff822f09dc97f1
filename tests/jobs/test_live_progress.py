"""Truthful live progress (issue 17): a service job whose destination is behind a
bandwidth-capped link.  What the job shows (bytes, rate, ETA, folder states) follows the
link: bytes move while a large message is on its way, the rate is the link's, a re-run
graphs only its own samples, a cancel leaves unfinished folders "interrupted"."""

from __future__ import annotations

import time
from typing import Any

import pytest

from tests.faultproxy import Fault, FaultProxy
from tests.svckit import DST_PW, SRC_PW, account, wait_status
from tests.transfer.test_move import make_message
from yippiemove.jobs.progress import FOLDER_STATES, folder_state
from yippiemove.jobs.supervisor import ProgressTracker
from yippiemove.jobs.vocab import Phase
from yippiemove.service.core import Account
from yippiemove.testing.dovecot import MaildirMessage
from yippiemove.transfer.model import Progress, Sending
from yippiemove.web.fmt import eta_range

RATE = 500_000  # bytes/s, each way, of the link to the destination


@pytest.fixture(autouse=True)
def _loopback_allowed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("YIPPIEMOVE_EGRESS_ALLOW", "127.0.0.0/8")


@pytest.fixture
def server(dovecot_factory):  # type: ignore[no-untyped-def]
    return dovecot_factory(users={"src": SRC_PW, "dst": DST_PW})


def _mailbox(server: Any, big: int = 3_000_000, small: int = 40) -> None:
    """One ~3 MB message, and a folder of 40 messages of 10 KB."""
    server.deliver_many("src", "INBOX", [MaildirMessage(make_message(0, size=big))])
    server.deliver_many(
        "src", "Small", [MaildirMessage(make_message(i, size=10_000)) for i in range(1, small + 1)]
    )


def _watch(svc: Any, uid: int, job_id: str, timeout: float = 40) -> list[tuple[float, dict]]:
    """The job's progress as the service shows it, every 0.1 s, until it ends."""
    seen: list[tuple[float, dict]] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        view = svc.get_transfer(uid, job_id)
        seen.append((time.monotonic(), dict(view.progress, status=view.status)))
        if view.status in ("done", "failed", "cancelled"):
            return seen
        time.sleep(0.1)
    raise AssertionError(f"job not ended after {timeout} s")


def test_progress_follows_a_slow_link(make_service, server):
    """Through a 500 KB/s link: bytes move at least every 2 s, during the one large
    message too; the rate is within 35% of the link's once there is enough data; no
    ETA or rate before; folders go waiting -> copying -> done."""
    _mailbox(server, small=120)
    svc = make_service(progress_interval=0.5, job_connections=1, ca_file=str(server.ca_file))
    svc.start(1)
    uid = svc.create_user("a@example.org", "long enough pass")
    with FaultProxy(server.port, lambda n: [Fault.throttle(RATE)]) as slow:
        dest = Account("127.0.0.1", slow.port, "none", "dst", DST_PW)
        job = svc.create_transfer(uid, account(server, "src", SRC_PW), dest)
        seen = _watch(svc, uid, job.id)
        svc.stop(timeout=15)
    assert seen[-1][1]["status"] == "done", svc.get_transfer(uid, job.id).error
    running = [(t, p) for t, p in seen if p["status"] == "running" and p.get("bytes_total")]
    total = running[0][1]["bytes_total"]
    assert total > 4_000_000
    # Copying: from the first byte counted to the last one.
    copying = [(t, p) for t, p in running if 0 < p["bytes_done"] < total]
    assert copying, "no progress was ever shown between 0 and the total"
    t_first = copying[0][0]
    t_last = copying[-1][0]
    assert t_last - t_first > 6.5, "the copy was faster than the link allows"
    # Progress moves at least every ~2 s (the one 3 MB message takes ~6 s).
    last_change, last_bytes = t_first, copying[0][1]["bytes_done"]
    for t, p in copying:
        if p["bytes_done"] != last_bytes:
            assert p["bytes_done"] > last_bytes, "progress went back"
            assert t - last_change <= 2.0, f"no progress for {t - last_change:.1f} s"
            last_change, last_bytes = t, p["bytes_done"]
    # The rate: none until there is enough data, then within 35% of the link's.
    assert copying[0][1]["rate"] is None and copying[0][1]["eta"] is None
    rated = [(t, p) for t, p in copying if t - t_first >= 4 and p["rate"] is not None]
    assert len(rated) > 10
    for _, p in rated:
        assert abs(p["rate"] - RATE) <= 0.35 * RATE, p["rate"]
        lo, hi = p["eta_range"]
        assert lo <= p["eta"] <= hi
    # The ETA is about right: within 35% of what was really left, after 4 s.
    for t, p in rated:
        left = t_last - t
        if left > 2:
            assert abs(p["eta"] - left) <= 0.35 * left + 1.5, (p["eta"], left)
    states = {f: set() for f in ("INBOX", "Small")}
    for _, p in running:
        for name, f in (p.get("per_folder") or {}).items():
            states[name].add(f["state"])
    assert "copying" in states["INBOX"] and "waiting" in states["Small"], states
    assert {f["state"] for f in seen[-1][1]["per_folder"].values()} == {"done"}
    # Messages count as answered, in groups of about a second of the link (not of 8 MB):
    # the 1.2 MB folder's count moves before its end.
    counts = {p["messages_done"] for _, p in running}
    assert any(1 < n < 121 for n in counts), sorted(counts)


def test_a_rerun_graphs_only_its_own_run(make_service, server):
    """The second run's rate history starts with it: none of the first run's samples;
    its rate is that of the bytes it moves (none: everything is there already), not of
    the messages it finds there."""
    _mailbox(server, big=200_000, small=20)
    svc = make_service(progress_interval=0.2, ca_file=str(server.ca_file))
    svc.start(1)
    uid = svc.create_user("a@example.org", "long enough pass")
    src, dst = account(server, "src", SRC_PW), account(server, "dst", DST_PW)
    first = svc.create_transfer(uid, src, dst)
    done = wait_status(svc, uid, first.id, timeout=60)
    assert done.status == "done" and done.progress["rate_history"]
    first_end = done.progress["rate_history"][-1][0]
    rerun = svc.rerun_transfer(uid, first.id)
    assert rerun.progress["rate_history"] == [], rerun.progress["rate_history"]
    again = wait_status(svc, uid, first.id, timeout=60)
    assert again.status == "done"
    hist = again.progress["rate_history"]
    assert hist and all(t > first_end for t, _ in hist), (first_end, hist)
    assert all(moved == 0 for _, moved in hist)  # nothing was copied again
    assert {f["state"] for f in again.progress["per_folder"].values()} == {"done"}


def test_a_cancel_leaves_unfinished_folders_interrupted(make_service, server):
    """Cancelled while the large message is on its way: its folder and the one not
    started yet say "interrupted", never "done"."""
    _mailbox(server, big=3_000_000, small=20)
    svc = make_service(progress_interval=0.2, job_connections=1, ca_file=str(server.ca_file))
    svc.start(1)
    uid = svc.create_user("a@example.org", "long enough pass")
    with FaultProxy(server.port, lambda n: [Fault.throttle(RATE)]) as slow:
        dest = Account("127.0.0.1", slow.port, "none", "dst", DST_PW)
        job = svc.create_transfer(uid, account(server, "src", SRC_PW), dest)
        deadline = time.monotonic() + 20
        while True:
            p = svc.get_transfer(uid, job.id).progress
            per = p.get("per_folder") or {}
            if per.get("INBOX", {}).get("bytes_done", 0) > 500_000:
                break  # the large message is on its way
            assert time.monotonic() < deadline, p
            time.sleep(0.05)
        assert per["INBOX"]["state"] == "copying" and per["Small"]["state"] == "waiting"
        svc.cancel_transfer(uid, job.id)
        view = wait_status(svc, uid, job.id, timeout=30)
        svc.stop(timeout=15)
    assert view.status == "cancelled"
    states = {name: f["state"] for name, f in view.progress["per_folder"].items()}
    assert states == {"INBOX": "interrupted", "Small": "interrupted"}, states


# ---------------------------------------------------------------------- units


def test_tracker_rate_is_of_this_run_windowed_with_an_eta_range(monkeypatch):
    now = [1000.0]
    monkeypatch.setattr("yippiemove.jobs.supervisor.time.time", lambda: now[0])
    tr = ProgressTracker(window=15, min_span=3)

    def line(moved: int, done: int) -> None:
        tr.update({"t": now[0], "bytes_moved": moved, "bytes_done": done, "bytes_total": 10**7})

    # Messages found already there: bytes_done leaps, nothing moved: no rate.
    line(0, 5_000_000)
    now[0] += 1
    line(0, 6_000_000)
    snap = tr.snapshot()
    assert snap["rate"] is None and snap["eta"] is None and snap["eta_range"] is None
    for _ in range(20):  # then 100 KB/s for 20 s
        now[0] += 1
        line(tr.moved + 100_000, int(tr.latest["bytes_done"]) + 100_000)
    snap = tr.snapshot()
    assert snap["rate"] == pytest.approx(100_000)
    lo, hi = snap["eta_range"]
    assert lo <= snap["eta"] <= hi and snap["eta"] == pytest.approx(20.0)
    # A new job process of the same run counts from zero: the graph goes on.
    tr.new_attempt()
    now[0] += 1
    line(50_000, 8_050_000)
    snap = tr.snapshot()
    assert snap["rate"] is None  # not enough data in this attempt yet
    assert snap["rate_history"][-1][1] == 2_000_000 + 50_000
    # Interrupted: the folders not finished say so.
    tr.latest["per_folder"] = {"A": {"state": "done"}, "B": {"state": "copying"}}
    snap = tr.snapshot(phase=Phase.INTERRUPTED)
    assert {n: f["state"] for n, f in snap["per_folder"].items()} == {
        "A": "done",
        "B": "interrupted",
    }


def test_folder_states():
    p = Progress()
    p.current.add("A")
    p.verifying.add("B")
    p.current.add("B")
    p.finished["C"] = "failed"
    assert [folder_state(p, n) for n in "ABCD"] == ["copying", "verifying", "failed", "waiting"]
    assert [folder_state(p, n, ended=True) for n in "ABCD"] == [
        "interrupted",
        "interrupted",
        "failed",
        "interrupted",
    ]
    assert set(FOLDER_STATES) == {
        "waiting",
        "copying",
        "verifying",
        "done",
        "interrupted",
        "failed",
    }


def test_sending_counts_what_reached_the_destination():
    p = Progress(bytes_total=1000, bytes_done=100)
    delivered = [500]
    p.in_flight[1] = Sending("A", 400, 800, lambda: delivered[0])  # 100 of 400 there
    assert p.sending() == 100 and p.sending("B") == 0 and p.bytes_now() == 200
    delivered[0] = 5000
    assert p.sending() == 400 and p.bytes_now() == 500


@pytest.mark.parametrize(
    ("span", "text"),
    [
        (None, "–"),
        ([2, 6], "a few seconds"),
        ([31, 44], "about 30–50 s"),
        ([185, 230], "about 3–4 min"),
        ([180, 180], "about 3 min"),
        ([3 * 3600, 4.2 * 3600], "about 3–5 h"),
        ([2 * 86400, 2.5 * 86400], "about 2–3 d"),
    ],
)
def test_eta_range_text(span, text):
    assert eta_range(span) == text
