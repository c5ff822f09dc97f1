"""Live progress for many streams over the REAL Service (issue 18, web/live.py): the
event streams of a web process share one poller, which reads every followed transfer
in one query per tick, whatever the number of streams and transfers."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import delete, event

from tests.web.conftest import Browser
from tests.web.test_pages import read_events
from tests.web.test_real_service import real_account
from yippiemove.service.config import Settings
from yippiemove.service.core import Service
from yippiemove.service.db import Job
from yippiemove.web.app import create_app

TICK = 0.05


@pytest.fixture
def real(tmp_path: Path) -> Iterator[Service]:
    """A real Service whose jobs are queued but not run (no workers started)."""
    svc = Service(Settings.load(tmp_path / "real", maintenance_interval=3600.0))
    try:
        yield svc
    finally:
        svc.close()


@pytest.fixture
def live_app(real: Service) -> FastAPI:
    app = create_app(real)
    app.state.sse_interval = TICK
    return app


class JobReads:
    """Counts the SQL statements that read the jobs table (both engines of SQLite)."""

    def __init__(self, svc: Service) -> None:
        self.count = 0
        self._lock = threading.Lock()
        self.engines = {id(e): e for e in (svc.db.engine, svc.db.read_engine)}.values()
        for e in self.engines:
            event.listen(e, "before_cursor_execute", self._seen)

    def _seen(self, conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        if statement.lstrip().upper().startswith("SELECT") and " jobs" in statement:
            with self._lock:
                self.count += 1

    def reset(self) -> int:
        with self._lock:
            n, self.count = self.count, 0
            return n

    def close(self) -> None:
        for e in self.engines:
            event.remove(e, "before_cursor_execute", self._seen)


def stream_in_thread(b: Browser, url: str, out: list[list[tuple[str, Any]]]) -> threading.Thread:
    t = threading.Thread(target=lambda: out.append(read_events(b.client, url)), daemon=True)
    t.start()
    return t


def test_twenty_streams_on_five_jobs_cost_one_read_per_tick(
    real: Service, live_app: FastAPI, monkeypatch: pytest.MonkeyPatch
) -> None:
    alice = Browser(TestClient(live_app))
    alice.signup("alice@example.org")
    uid = real.authenticate("alice@example.org", "correct horse battery")
    assert uid is not None
    jobs = [real.create_transfer(uid, real_account("s"), real_account(f"d{i}")) for i in range(5)]
    reads = JobReads(real)
    results: list[list[tuple[str, Any]]] = []
    from yippiemove.web import live

    serialised = 0
    as_data = live.as_data

    def counting(view: Any) -> str:
        nonlocal serialised
        serialised += 1
        return as_data(view)

    monkeypatch.setattr(live, "as_data", counting)
    try:
        threads = [
            stream_in_thread(alice, f"/transfers/{jobs[i % 5].id}/events", results)
            for i in range(20)
        ]
        deadline = time.monotonic() + 10
        while reads.count < 20 and time.monotonic() < deadline:  # the 20 opening reads
            time.sleep(0.01)
        time.sleep(5 * TICK)  # every stream past its open
        reads.reset()
        serialised = 0
        hub = getattr(live_app.state, "progress_hub", None)
        polls = hub.polls if hub else 0
        window = 1.0
        time.sleep(window)
        n = reads.reset()
        ticks = window / TICK  # ~20
        # The old code read each stream's job at each of its ticks: ~20 x 20 = 400.
        assert n <= 2 * ticks, f"{n} reads of the jobs table in {ticks:.0f} ticks"
        assert hub is not None and hub.watched() == 5
        made = hub.polls - polls
        assert made >= 3 and abs(n - made) <= 1, (n, made)  # ONE query per poll
        assert serialised == 0  # nothing changed: nothing serialised again
    finally:
        live_app.state.stopping.set()  # every stream ends at its next tick
        for t in threads:
            t.join(timeout=10)
        reads.close()
    assert len(results) == 20
    for events in results:
        assert [name for name, _ in events] == ["progress"]
        assert events[0][1]["status"] == "queued"


def test_streams_end_when_cancelled_and_go_when_deleted(real: Service, live_app: FastAPI) -> None:
    alice = Browser(TestClient(live_app))
    alice.signup("alice@example.org")
    uid = real.authenticate("alice@example.org", "correct horse battery")
    assert uid is not None
    cancelled, deleted = (
        real.create_transfer(uid, real_account("s"), real_account(d)) for d in ("d1", "d2")
    )
    results: list[list[tuple[str, Any]]] = []
    seen: list[list[tuple[str, Any]]] = []
    threads = [
        stream_in_thread(alice, f"/transfers/{cancelled.id}/events", results),
        stream_in_thread(alice, f"/transfers/{cancelled.id}/events", results),
        stream_in_thread(alice, f"/transfers/{deleted.id}/events", seen),
    ]
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        hub = getattr(live_app.state, "progress_hub", None)
        if hub is not None and hub.streams() == 3:
            break
        time.sleep(0.01)
    real.cancel_transfer(uid, cancelled.id)
    with real.db.session() as s:
        s.execute(delete(Job).where(Job.id == deleted.id))
    for t in threads:
        t.join(timeout=10)
    assert len(results) == 2 and len(seen) == 1
    for events in results:
        names = [name for name, _ in events]
        assert names == ["progress", "progress", "end"], names
        assert events[-2][1]["status"] == "cancelled" and events[-1][1] == "cancelled"
    assert [name for name, _ in seen[0]] == ["progress", "gone"]
    assert live_app.state.progress_hub.watched() == 0


def test_watched_transfers_one_query_only_the_owners_and_as_get_shows(real: Service) -> None:
    a = real.create_user("alice@example.org", "alice password")
    b = real.create_user("bob@example.org", "bob password!")
    plain = real.create_transfer(a, real_account("s"), real_account("d1"))
    staged = real.create_transfer(
        a,
        real_account("s"),
        real_account("d2"),
        schedule={"interval": 86400, "start_at": time.time() + 3600},
    )
    reads = JobReads(real)
    try:
        views = real.watched_transfers(
            {(a, plain.id), (b, plain.id), (a, "0" * 32), (a, staged.id), (b, staged.id)}
        )
        assert reads.reset() == 1  # the jobs and their schedules: one query
        assert set(views) == {(a, plain.id), (a, staged.id)}  # never bob's view of alice's
        for key, view in views.items():
            assert view == real.get_transfer(*key)  # what GET /api/v1/transfers/{id} shows
        assert views[(a, staged.id)].schedule is not None
        assert views[(a, plain.id)].schedule is None
        assert real.watched_transfers([]) == {}
    finally:
        reads.close()


def test_a_failed_poll_is_tried_again_and_the_streams_go_on(
    app: FastAPI, alice: Browser, fake: Any
) -> None:
    from tests.web.test_pages import job_id_of, order

    jid = job_id_of(order(alice))
    real_watch = fake.watched_transfers
    calls = 0

    def flaky(watched: Any) -> Any:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise RuntimeError("database is locked")
        if calls == 3:
            fake.finish(jid)
        return real_watch(watched)

    fake.watched_transfers = flaky
    events = read_events(alice.client, f"/transfers/{jid}/events")
    assert [n for n, _ in events][-1] == "end" and events[-1][1] == "done"
    assert calls >= 3 and app.state.progress_hub.watched() == 0
