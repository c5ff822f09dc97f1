"""The supervisor's decisions, without processes: restart or not, progress, identities."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import pytest

from yippiemove.jobs.supervisor import (
    Outcome,
    ProgressTracker,
    Supervisor,
    identity_dead,
    process_identity,
)


@pytest.mark.parametrize(
    ("outcome", "transient", "why"),
    [
        (Outcome("exited", -signal.SIGKILL), True, "killed (SIGKILL)"),
        (Outcome("exited", -signal.SIGSEGV), True, "killed (SIGSEGV)"),
        (Outcome("exited", -9, stalled=True), True, "hung"),
        (
            Outcome("exited", 2, {"error": "connection to h closed", "transient": True}),
            True,
            "connection to h closed",
        ),
        (
            Outcome("exited", 2, {"error": "h refused the login", "transient": False}),
            False,
            "refused the login",
        ),
        (Outcome("exited", 1, None), False, "ended unexpectedly (exit status 1)"),
        (Outcome("exited", 0, {"error": None}), False, ""),
    ],
)
def test_what_is_restarted(outcome, transient, why):
    t, w = Supervisor._transient(outcome)
    assert t is transient
    assert why in w


def test_progress_tracker_rate_eta_and_bounded_history(monkeypatch):
    now = [1000.0]
    monkeypatch.setattr("yippiemove.jobs.supervisor.time.time", lambda: now[0])
    tr = ProgressTracker(max_points=8, window=10)
    for i in range(40):
        now[0] = 1000.0 + i
        tr.update({"type": "progress", "t": now[0], "bytes_done": i * 1000, "bytes_total": 100_000})
        snap = tr.snapshot(attempt=1)
    assert snap["rate"] == pytest.approx(1000.0)
    assert snap["eta"] == pytest.approx((100_000 - 39_000) / 1000.0)
    assert snap["attempt"] == 1 and "type" not in snap
    hist = snap["rate_history"]
    assert len(hist) <= 8 and hist[0][0] == 1000.0  # the whole job, at a coarser step
    assert snap["history_step"] > 1
    # A new job process counts from zero again: no negative rate.
    tr.new_attempt()
    now[0] += 1
    tr.update({"t": now[0], "bytes_done": 500, "bytes_total": 100_000})
    assert tr.snapshot()["rate"] is None  # not enough data in this attempt yet
    # Carried over from the database (a resumed job keeps its graph).
    again = ProgressTracker(tr.snapshot())
    assert again.history == tr.history and again.latest["bytes_done"] == 500


def test_process_identity_tells_dead_and_reused_pids_apart():
    me = process_identity()
    assert not identity_dead(me)
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    ident = process_identity(p.pid)
    p.wait()
    assert identity_dead(ident)
    host, pid, start = me.split("|")
    assert identity_dead(f"{host}|{pid}|{int(start) + 1}")  # same pid, another process
    assert not identity_dead(f"elsewhere.example|{os.getpid()}|1")  # other hosts: leases
    assert identity_dead(None)
