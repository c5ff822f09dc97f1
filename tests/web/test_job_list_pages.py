"""Issue 18, a job list that scales: the customer's list a page at a time (keyset on
created, id) through the REST API and the web page, over the REAL Service with jobs
made straight in the control database (nothing runs)."""

from __future__ import annotations

import html
import itertools
import re
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import event

from tests.web.conftest import Browser
from yippiemove.service.config import Settings
from yippiemove.service.core import Service, ServiceError
from yippiemove.service.db import Job
from yippiemove.web.app import create_app
from yippiemove.web.schemas import error_body

API = "/api/v1"
T0 = 1_800_000_000.0
_seq = itertools.count()


@pytest.fixture
def real(tmp_path: Path) -> Iterator[Service]:
    """A real Service, not started: the jobs made here stay as they are."""
    svc = Service(Settings.load(tmp_path / "real", maintenance_interval=3600.0))
    try:
        yield svc
    finally:
        svc.close()


@pytest.fixture
def app(real: Service) -> FastAPI:
    return create_app(real)


def progress(n: int = 60) -> dict[str, Any]:
    """A running job's progress with its bulk: a rate history and folders."""
    return {
        "phase": "copying",
        "messages_done": 10,
        "messages_total": 150,
        "rate_history": [[T0 + i, i * 1000] for i in range(n)],
        "per_folder": {f"F{i}": {"dest": f"F{i}", "messages": 50} for i in range(3)},
    }


def add_jobs(
    svc: Service,
    user_id: int,
    created: list[float],
    *,
    status: str = "running",
    batch_id: str | None = None,
) -> list[str]:
    """Jobs straight in the control database (the cheapest way to have many)."""
    ids = []
    with svc.db.session() as s:
        for when in created:
            jid = f"{next(_seq):04d}{uuid.uuid4().hex[:28]}"
            s.add(
                Job(
                    id=jid,
                    user_id=user_id,
                    status=status,
                    source={
                        "host": "127.0.0.1",
                        "port": 143,
                        "security": "starttls",
                        "username": "src",
                    },
                    dest={
                        "host": "127.0.0.1",
                        "port": 143,
                        "security": "starttls",
                        "username": "dst",
                    },
                    created=when,
                    progress=progress(),
                    batch_id=batch_id,
                )
            )
            ids.append(jid)
    return ids


def newest_first(svc: Service, ids: list[str]) -> list[str]:
    with svc.db.read() as s:
        rows = [(j.created, j.id) for j in s.query(Job).filter(Job.id.in_(ids))]
    return [jid for _c, jid in sorted(rows, reverse=True)]


def walk(c: TestClient, h: dict[str, str], query: str, between: Any = None) -> list[list[str]]:
    """Every page of ``GET /transfers?query``: the ids of each page in turn."""
    pages: list[list[str]] = []
    cursor = None
    while True:
        url = f"{API}/transfers?{query}" + (f"&cursor={cursor}" if cursor else "")
        r = c.get(url, headers=h)
        assert r.status_code == 200, r.text
        pages.append([t["id"] for t in r.json()["transfers"]])
        cursor = r.json().get("next_cursor")
        if cursor is None:
            return pages
        if between is not None:
            between()


def test_paging_through_120_transfers_gives_each_once_newest_first_inserts_or_not(
    real: Service, app: FastAPI
) -> None:
    uid = real.create_user("alice@example.org", "alice password")
    other = real.create_user("bob@example.org", "bob password!")
    h = {"Authorization": f"Bearer {real.create_token(uid, 'ci')}"}
    # Ties on `created` cut by the id, across a page boundary too (25 per page).
    times = [T0 + i for i in range(100)] + [T0 + 50.0] * 20
    ids = add_jobs(real, uid, times)
    add_jobs(real, other, [T0 + i + 0.5 for i in range(30)])  # bob's: never listed
    order = newest_first(real, ids)
    with TestClient(app) as c:
        pages = walk(c, h, "limit=25")
        assert [len(p) for p in pages] == [25, 25, 25, 25, 20]
        assert [j for p in pages for j in p] == order

        # Transfers ordered between pages (newer: the first page's) shift nothing after.
        new: list[str] = []
        later = itertools.count(1)

        def order_more() -> None:
            new.extend(add_jobs(real, uid, [T0 + 1000 + next(later) for _ in range(7)]))

        pages = walk(c, h, "limit=25", between=order_more)
        assert [j for p in pages for j in p] == order
        assert len(new) == 7 * 4
        # ...and come first on a new walk.
        pages = walk(c, h, "limit=200")
        assert pages == [newest_first(real, new) + order]


def test_a_page_reads_limit_rows_not_every_transfer(real: Service, app: FastAPI) -> None:
    """The list is cut in SQL: a page loads ``limit`` (+1) jobs whatever the account
    holds (the old list loaded all 120 for any page)."""
    uid = real.create_user("alice@example.org", "alice password")
    h = {"Authorization": f"Bearer {real.create_token(uid, 'ci')}"}
    add_jobs(real, uid, [T0 + i for i in range(120)])
    loaded: list[str] = []

    def count(target: Job, _context: Any) -> None:
        loaded.append(target.id)

    event.listen(Job, "load", count)
    try:
        with TestClient(app) as c:
            r = c.get(f"{API}/transfers?limit=10", headers=h)
            assert r.status_code == 200 and len(r.json()["transfers"]) == 10
            assert len(loaded) <= 11, len(loaded)
            loaded.clear()
            r = c.get(f"{API}/transfers?limit=10&cursor={r.json()['next_cursor']}", headers=h)
            assert len(r.json()["transfers"]) == 10 and len(loaded) <= 11, len(loaded)
    finally:
        event.remove(Job, "load", count)


def test_the_summary_has_no_rate_history_and_full_has_it(real: Service, app: FastAPI) -> None:
    uid = real.create_user("alice@example.org", "alice password")
    h = {"Authorization": f"Bearer {real.create_token(uid, 'ci')}"}
    (jid,) = add_jobs(real, uid, [T0])
    with TestClient(app) as c:
        for query in ("", "?view=summary"):
            (summary,) = c.get(f"{API}/transfers{query}", headers=h).json()["transfers"]
            assert "rate_history" not in summary["progress"]
            assert "per_folder" not in summary["progress"]
            assert summary["progress"]["messages_done"] == 10  # the counters stay
        (full,) = c.get(f"{API}/transfers?view=full", headers=h).json()["transfers"]
        one = c.get(f"{API}/transfers/{jid}", headers=h).json()
        assert full == one and len(full["progress"]["rate_history"]) == 60
        assert set(full["progress"]["per_folder"]) == {"F0", "F1", "F2"}
        # A one-page list is the shape it had before pagination: no next_cursor.
        assert set(c.get(f"{API}/transfers", headers=h).json()) == {"transfers"}


@pytest.mark.parametrize(
    "cursor",
    [
        "nonsense",
        "e30",  # {} in base64
        "WzEsMl0",  # [1,2]: an id that is not a string
        "WyJ4IiwiYSJd",  # ["x","a"]: a time that is not a number
        "WzFlOTk5LCJhIl0",  # [1e999,"a"]: not finite
        "%FF%FE",
    ],
)
def test_a_bad_cursor_is_400_in_the_one_error_shape(
    real: Service, app: FastAPI, cursor: str
) -> None:
    uid = real.create_user("alice@example.org", "alice password")
    h = {"Authorization": f"Bearer {real.create_token(uid, 'ci')}"}
    with TestClient(app) as c:
        r = c.get(f"{API}/transfers?cursor={cursor}", headers=h)
    assert r.status_code == 400, r.text
    message = "cursor: not one this list gave (use next_cursor as it is)"
    assert r.json() == error_body(400, message)


def test_limits_and_filters(real: Service, app: FastAPI) -> None:
    uid = real.create_user("alice@example.org", "alice password")
    h = {"Authorization": f"Bearer {real.create_token(uid, 'ci')}"}
    batch = add_jobs(real, uid, [T0 + i for i in range(5)], batch_id="b" * 32)
    done = add_jobs(real, uid, [T0 + 10 + i for i in range(3)], status="done")
    with TestClient(app) as c:
        for bad in ("0", "201", "x"):
            assert c.get(f"{API}/transfers?limit={bad}", headers=h).status_code == 422
        assert len(c.get(f"{API}/transfers", headers=h).json()["transfers"]) == 8
        assert walk(c, h, f"batch_id={'b' * 32}&limit=2") == [
            newest_first(real, batch)[i : i + 2] for i in (0, 2, 4)
        ]
        assert walk(c, h, "status=done") == [newest_first(real, done)]
        assert walk(c, h, f"since={T0 + 3}&before={T0 + 11}") == [
            newest_first(real, [done[0], *batch[3:]])
        ]
    with pytest.raises(ServiceError, match="limit: from 1 to 200"):
        real.transfer_page(uid, limit=201)
    assert real.count_transfers(uid) == {"running": 5, "done": 3}


def test_the_web_list_pages_by_50_with_an_older_link(real: Service, app: FastAPI) -> None:
    b = Browser(TestClient(app))
    b.signup("alice@example.org")
    uid = real.authenticate("alice@example.org", "correct horse battery")
    assert uid is not None
    ids = add_jobs(real, uid, [T0 + i for i in range(120)])
    order = newest_first(real, ids)
    seen: list[str] = []
    url: str | None = "/transfers"
    pages = 0
    while url is not None:
        page = b.get(url)
        assert page.status_code == 200
        assert '>All <span class="count">120</span>' in page.text
        seen += re.findall(r'<tr data-job="([0-9a-f]+)">', page.text)
        older = re.search(r'<a class="btn btn-small" href="([^"]+)" rel="next"', page.text)
        url = html.unescape(older.group(1)) if older else None
        pages += 1
    assert pages == 3 and seen == order
    # A cursor that is not one: the first page again (a page, not an error).
    page = b.get("/transfers?cursor=nonsense")
    assert page.status_code == 200
    assert re.findall(r'<tr data-job="([0-9a-f]+)">', page.text) == order[:50]
