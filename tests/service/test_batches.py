"""Batches as first-class objects (issue 17, "a domain at a time"), over the REST API of
the real service with job processes and a real Dovecot:

- the pre-flight logs in to every line's two accounts before anything starts: a wrong
  password (line 3) and a closed port (line 2) are caught with their line number, side
  and plain reason, and no transfer exists; the good lines start on request and end
  exact; the fixed lines, ordered again, start by themselves and end exact;
- the checks run in parallel, bounded: N slow lines take about one line's time;
- retry-failed re-runs the failed transfers only;
- the results CSV (its content, the formula guard), one summary mail for the batch and
  one notice per end user when asked for.
"""

from __future__ import annotations

import asyncio
import csv
import io
import socket
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient

from tests.svckit import SmtpSink, assert_exact, wait_status
from tests.transfer.test_move import populate
from yippiemove.service.core import Service
from yippiemove.service.db import BatchLine, Job
from yippiemove.testing.dovecot import DovecotServer
from yippiemove.web.app import create_app

API = "/api/v1"


def acc(server: DovecotServer | int, user: str, password: str) -> dict[str, Any]:
    return {
        "host": "127.0.0.1",
        "port": server if isinstance(server, int) else server.port,
        "security": "starttls",
        "username": user,
        "password": password,
    }


def line(src: dict[str, Any], dst: dict[str, Any]) -> dict[str, Any]:
    return {"source": src, "dest": dst}


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def silent_port() -> Iterator[int]:
    """A port that accepts connections and never says a word (a server that hangs)."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(64)
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        sock.settimeout(0.2)
        while not stop.is_set():
            try:
                conn, _ = sock.accept()
            except OSError:
                continue
            held.append(conn)

    t = threading.Thread(target=accept, daemon=True)
    t.start()
    try:
        yield int(sock.getsockname()[1])
    finally:
        stop.set()
        t.join(2)
        for c in held:
            c.close()
        sock.close()


def wait_batch(
    c: TestClient, h: dict[str, str], bid: str, states: tuple[str, ...], timeout: float = 90
) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        view = c.get(f"{API}/batches/{bid}", headers=h).json()
        if view["state"] in states:
            return view
        if time.monotonic() > deadline:
            raise AssertionError(f"batch still {view['state']}: {view}")
        time.sleep(0.1)


def jobs_of(svc: Service) -> list[Job]:
    with svc.db.read() as s:
        return list(s.query(Job).all())


def test_preflight_catches_bad_lines_starts_nothing_then_good_and_fixed_lines_end_exact(
    make_service: Callable[..., Service], dovecot_factory: Callable[..., DovecotServer]
) -> None:
    users = {f"src{i}": f"srcpw{i}" for i in range(1, 5)}
    users.update({f"dst{i}": f"dstpw{i}" for i in range(1, 5)})
    server = dovecot_factory(separator="/", users=users)
    for i in range(1, 5):
        populate(server, f"src{i}")
    svc = make_service(ca_file=str(server.ca_file))
    svc.start(workers=2)
    uid = svc.create_user("ada@example.org", "correct horse battery")
    h = {"Authorization": f"Bearer {svc.create_token(uid, 'ci')}"}
    port = closed_port()
    with TestClient(create_app(svc)) as c:
        body = {
            "name": "example.org, first wave",
            "lines": [
                line(acc(server, "src1", "srcpw1"), acc(server, "dst1", "dstpw1")),
                line(acc(server, "src2", "srcpw2"), acc(port, "dst2", "dstpw2")),
                line(acc(server, "src3", "Wrong-pw-3"), acc(server, "dst3", "dstpw3")),
                line(acc(server, "src4", "srcpw4"), acc(server, "dst4", "dstpw4")),
                line(acc(server, "=HYPERLINK(1)", "x"), acc(server, "dst4", "dstpw4")),
            ],
        }
        r = c.post(f"{API}/batches", json=body, headers=h)
        assert r.status_code == 202, r.text
        assert "Wrong-pw-3" not in r.text and "srcpw1" not in r.text
        bid = r.json()["id"]
        assert r.json()["state"] == "checking" and r.json()["lines_total"] == 5
        view = wait_batch(c, h, bid, ("checked", "running"))
        assert view["state"] == "checked", view  # a bad line: nothing starts by itself
        assert jobs_of(svc) == []
        by_line = {v["line"]: v for v in view["lines"]}
        assert [by_line[n]["check"] for n in (1, 2, 3, 4, 5)] == ["ok", "bad", "bad", "ok", "bad"]
        p2, p3 = by_line[2]["problem"], by_line[3]["problem"]
        assert p2["side"] == "dest" and p2["kind"] == "unreachable", p2
        assert p2["message"] == "We could not reach the destination mailbox's server."
        assert f"port {port} did not answer" in p2["detail"]
        assert p3["side"] == "source" and p3["kind"] == "auth", p3
        assert p3["message"] == "The source mailbox refused the user name or password."
        assert "AUTHENTICATIONFAILED" in p3["detail"]
        assert view["totals"]["bad"] == 3 and view["totals"]["ok"] == 2
        assert view["can_start"] and not view["can_retry"]
        text = c.get(f"{API}/batches/{bid}", headers=h).text
        assert "Wrong-pw-3" not in text and "dstpw" not in text

        # Results before anything started: the CSV names the bad lines, formula guarded.
        r = c.get(f"{API}/batches/{bid}/results.csv", headers=h)
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/csv")
        rows = list(csv.DictReader(io.StringIO(r.text)))
        assert [row["line"] for row in rows] == ["1", "2", "3", "4", "5"]
        assert rows[2]["preflight"] == "bad"
        assert rows[2]["problem"].startswith("The source mailbox refused the user name")
        assert rows[4]["source_username"] == "'=HYPERLINK(1)"
        assert "Wrong-pw-3" not in r.text

        # "Start the good ones": lines 1 and 4 only; their stored passwords are wiped.
        r = c.post(f"{API}/batches/{bid}/start", headers=h)
        assert r.status_code == 200, r.text
        started = {v["line"]: v["job_id"] for v in r.json()["lines"] if v["job_id"]}
        assert set(started) == {1, 4}
        with svc.db.read() as s:
            creds = {ln.line: ln.credentials for ln in s.query(BatchLine).all()}
        assert creds[1] is None and creds[4] is None and creds[3] is not None
        assert {j.batch_id for j in jobs_of(svc)} == {bid}
        for jid in started.values():
            assert wait_status(svc, uid, jid).status == "done"
        view = wait_batch(c, h, bid, ("done",))
        assert view["totals"]["done"] == 2 and view["totals"]["messages_done"] > 0
        assert_exact(server, "src1", "srcpw1", "dst1", "dstpw1")
        assert_exact(server, "src4", "srcpw4", "dst4", "dstpw4")

        # The customer fixes the two lines and orders them again: they start by themselves.
        server.add_user("dst2", "dstpw2")
        fixed = {
            "lines": [
                line(acc(server, "src2", "srcpw2"), acc(server, "dst2", "dstpw2")),
                line(acc(server, "src3", "srcpw3"), acc(server, "dst3", "dstpw3")),
            ]
        }
        r = c.post(f"{API}/batches", json=fixed, headers=h)
        assert r.status_code == 202, r.text
        view = wait_batch(c, h, r.json()["id"], ("done",), timeout=120)
        assert view["totals"]["done"] == 2, view
        assert_exact(server, "src2", "srcpw2", "dst2", "dstpw2")
        assert_exact(server, "src3", "srcpw3", "dst3", "dstpw3")

        listed = c.get(f"{API}/batches", headers=h).json()["batches"]
        assert {b["id"] for b in listed} == {bid, r.json()["id"]}
        assert "lines" not in listed[0]

        # Another customer sees none of it.
        bob = svc.create_user("bob@example.org", "correct horse battery")
        hb = {"Authorization": f"Bearer {svc.create_token(bob, 'ci')}"}
        assert c.get(f"{API}/batches/{bid}", headers=hb).status_code == 404
        assert c.post(f"{API}/batches/{bid}/start", headers=hb).status_code == 404
        assert c.get(f"{API}/batches", headers=hb).json() == {"batches": []}


def test_preflight_checks_lines_in_parallel_with_a_bound(
    make_service: Callable[..., Service], silent_port: int
) -> None:
    """Six lines whose server never answers (each check waits ``T`` seconds) take about
    one check's time with a bound of 8, not six; with a bound of 2, about three."""
    timeout = 1.5
    svc = make_service(batch_check_parallel=8, checks_total=16)
    svc.check_connect_timeout = timeout
    svc.start(workers=0)  # web and API only: the pre-flight runs, no job would
    uid = svc.create_user("ada@example.org", "correct horse battery")
    rows = svc.parse_batch_csv(
        "\n".join(
            f"127.0.0.1,{silent_port},starttls,u{i},pw{i},127.0.0.1,{silent_port},starttls,d{i},pw"
            for i in range(6)
        )
    )[0]
    assert len(rows) == 6
    t0 = time.monotonic()
    view = svc.create_batch(uid, rows)
    svc.wait_preflights(60)
    elapsed = time.monotonic() - t0
    view = svc.get_batch(uid, view["id"])
    assert view["state"] == "checked" and view["lines_bad"] == 6
    assert all(v["problem"]["kind"] == "unreachable" for v in view["lines"]), view["lines"]
    assert all(v["problem"]["side"] == "source" for v in view["lines"])
    # Sequential would be 6 T = 9 s; in parallel one T plus the processes' start-up.
    print(f"6 slow lines: {elapsed:.2f} s with a bound of 8")
    assert elapsed < 0.6 * 6 * timeout, elapsed

    svc.settings.batch_check_parallel = 2
    t0 = time.monotonic()
    view = svc.create_batch(uid, rows)
    svc.wait_preflights(60)
    bounded = time.monotonic() - t0
    assert svc.get_batch(uid, view["id"])["lines_bad"] == 6
    print(f"6 slow lines: {bounded:.2f} s with a bound of 2")
    assert bounded >= 3 * timeout - 0.2, bounded  # three rounds of two
    assert bounded > elapsed + timeout * 0.8, (elapsed, bounded)


def test_retry_failed_reruns_only_the_failed_lines_and_end_users_get_a_notice(
    make_service: Callable[..., Service],
    dovecot_factory: Callable[..., DovecotServer],
    smtp_sink: SmtpSink,
) -> None:
    server = dovecot_factory(
        separator="/",
        users={
            "ann@example.org": "annpw",
            "bob@example.org": "bobpw",
            "ann-new": "annnew",
            "bob-new": "bobnew",
        },
    )
    populate(server, "ann@example.org")
    populate(server, "bob@example.org")
    svc = make_service(
        ca_file=str(server.ca_file),
        smtp_host="127.0.0.1",
        smtp_port=smtp_sink.port,
        smtp_from="moves@yippiemove.example",
    )
    svc.start(workers=2)
    uid = svc.create_user("admin@example.org", "correct horse battery")
    h = {"Authorization": f"Bearer {svc.create_token(uid, 'ci')}"}
    text = (
        "source_host,source_port,source_security,source_username,source_password,"
        "dest_host,dest_port,dest_security,dest_username,dest_password\n"
        f"127.0.0.1,{server.port},starttls,ann@example.org,annpw,"
        f"127.0.0.1,{server.port},starttls,ann-new,annnew\n"
        f"127.0.0.1,{server.port},starttls,bob@example.org,bobpw,"
        f"127.0.0.1,{server.port},starttls,bob-new,bobnew\n"
    )
    with TestClient(create_app(svc)) as c:
        r = c.post(
            f"{API}/batches",
            json={"csv": text, "autostart": False, "notify_end_users": True},
            headers=h,
        )
        assert r.status_code == 202, r.text
        bid = r.json()["id"]
        view = wait_batch(c, h, bid, ("checked",))
        assert view["totals"]["ok"] == 2 and [v["line"] for v in view["lines"]] == [2, 3]
        # Bob's destination password changes between the pre-flight and the start.
        server.add_user("bob-new", "changed-pw")
        view = c.post(f"{API}/batches/{bid}/start", headers=h).json()
        jobs = {v["line"]: v["job_id"] for v in view["lines"]}
        assert wait_status(svc, uid, jobs[2]).status == "done"
        assert wait_status(svc, uid, jobs[3]).status == "failed"
        view = wait_batch(c, h, bid, ("done",))
        assert view["totals"]["failed"] == 1 and view["can_retry"]
        failed = next(v for v in view["lines"] if v["status"] == "failed")
        assert failed["line"] == 3 and failed["error"]
        smtp_sink.wait_for(lambda m: "batch" in m["Subject"] and "1 failed" in m["Subject"])
        notice = smtp_sink.wait_for(lambda m: m["To"] == "ann@example.org")
        assert notice["Subject"] == "Your mailbox has been moved"

        server.add_user("bob-new", "bobnew")  # the admin puts it back
        r = c.post(f"{API}/batches/{bid}/retry-failed", headers=h)
        assert r.status_code == 200, r.text
        assert r.json()["retried"] == [3] and r.json()["skipped"] == []
        assert wait_status(svc, uid, jobs[3]).status == "done"
        runs = {j.id: j.runs for j in jobs_of(svc)}
        assert runs == {jobs[2]: 1, jobs[3]: 2}  # the good line did not run again
        assert_exact(server, "ann@example.org", "annpw", "ann-new", "annnew")
        assert_exact(server, "bob@example.org", "bobpw", "bob-new", "bobnew")
        # Nothing failed now: a second retry has nothing to do.
        assert c.post(f"{API}/batches/{bid}/retry-failed", headers=h).status_code == 409
        smtp_sink.wait_for(lambda m: m["To"] == "bob@example.org")
        mails = [m["To"] for m in smtp_sink.messages]
        assert mails.count("ann@example.org") == 1 and mails.count("bob@example.org") == 1

        rows = list(
            csv.DictReader(io.StringIO(c.get(f"{API}/batches/{bid}/results.csv", headers=h).text))
        )
        assert [(r["line"], r["status"]) for r in rows] == [("2", "done"), ("3", "done")]
        assert int(rows[0]["messages_done"]) == int(rows[0]["messages_total"]) > 0

        # Dropped: the batch is gone, its transfers stay.
        assert c.delete(f"{API}/batches/{bid}", headers=h).status_code == 204
        assert c.get(f"{API}/batches/{bid}", headers=h).status_code == 404
        assert len(jobs_of(svc)) == 2


def test_a_batch_body_in_a_bad_shape_is_refused_whole(make_service: Callable[..., Service]) -> None:
    svc = make_service()
    uid = svc.create_user("ada@example.org", "correct horse battery")
    h = {"Authorization": f"Bearer {svc.create_token(uid, 'ci')}"}
    with TestClient(create_app(svc)) as c:
        r = c.post(f"{API}/batches", json={"csv": "a,b\n"}, headers=h)
        assert r.status_code == 422 and "line 1" in r.json()["message"], r.text
        r = c.post(f"{API}/batches", json={"name": "x"}, headers=h)
        assert r.status_code == 422 and r.json()["code"]
        r = c.post(
            f"{API}/batches",
            json={"lines": [line(acc(1143, "a", "p"), acc(1143, "a", "p"))]},
            headers=h,
        )
        assert r.status_code == 422 and "line 1: dest" in r.json()["message"], r.text
        assert c.get(f"{API}/batches", headers=h).json() == {"batches": []}
        assert c.get(f"{API}/batches/nonexistent0", headers=h).status_code == 404
        # Batches being checked at once, per customer (this service does not run: they
        # stay "checking"): one more is 429 and stores nothing.
        body = {"lines": [line(acc(1143, "a", "p"), acc(1144, "b", "p"))]}
        for _ in range(4):
            assert c.post(f"{API}/batches", json=body, headers=h).status_code == 202
        r = c.post(f"{API}/batches", json=body, headers=h)
        assert r.status_code == 429 and "4 batches being checked" in r.json()["message"], r.text
        assert len(c.get(f"{API}/batches", headers=h).json()["batches"]) == 4


def test_another_customers_batch_is_like_a_missing_one(
    make_service: Callable[..., Service],
) -> None:
    """Every route of a batch by id (found by walking the app's routes: pages and REST)
    answers bob exactly as for a batch that does not exist, and changes nothing; the
    listings show him nothing of alice's."""
    from tests.web.test_route_isolation import BATCH_ROUTES

    svc = make_service()
    alice = svc.create_user("alice@example.org", "correct horse battery")
    bob = svc.create_user("bob@example.org", "correct horse battery")
    rows = svc.parse_batch_csv(
        "imap.example.org,993,tls,ann@alice-corp.example,pw-1,"
        "imap.example.net,993,tls,ann@new.example,pw-2\n"
    )[0]
    bid = svc.create_batch(alice, rows, name="alice-corp move", check=False, autostart=False)["id"]
    before = svc.get_batch(alice, bid)
    missing = "feedfacefeedface"
    app = create_app(svc)
    routes = {(m, p) for m, p in BATCH_ROUTES if "{batch_id}" in p}
    assert len(routes) == 12  # issue 20: settle, pages and REST
    with TestClient(app) as c:
        hb = {"Authorization": f"Bearer {svc.create_token(bob, 'ci')}"}
        # Bob logged in to the pages too (a web session with its CSRF token).
        page = c.get("/login").text
        csrf = page.split('name="csrf_token" value="', 1)[1].split('"', 1)[0]
        r = c.post(
            "/login",
            data={
                "email": "bob@example.org",
                "password": "correct horse battery",
                "csrf_token": csrf,
            },
            follow_redirects=False,
        )
        assert r.status_code == 303, r.text
        csrf = c.get("/batches").text.split('name="csrf_token" value="', 1)
        token = csrf[1].split('"', 1)[0] if len(csrf) > 1 else ""
        for method, route in sorted(routes):
            answers = []
            for some in (bid, missing):
                path = route.format(batch_id=some)
                if path.startswith(API):
                    r = c.request(method, path, headers=hb)
                elif method == "GET":
                    r = c.get(path)
                else:
                    r = c.post(path, data={"csrf_token": token}, follow_redirects=False)
                    if r.status_code == 303:  # a flash, then the page it names
                        r = c.get(r.headers["location"])
                answers.append((r.status_code, r.text.replace(some, "X")))
            assert answers[0] == answers[1], (method, route)
            assert answers[0][0] == 404, (method, route, answers[0][0])
            assert "alice-corp" not in answers[0][1]
        for path in ("/batches", f"{API}/batches"):
            r = c.get(path, headers=hb)
            assert r.status_code == 200 and bid not in r.text and "alice-corp" not in r.text
    assert svc.get_batch(alice, bid) == before


def test_a_preflight_interrupted_by_a_stop_resumes_at_start(
    make_service: Callable[..., Service],
) -> None:
    """The web process stopped while it checked a batch: the next start checks the lines
    without a verdict, and a verdict already stored is kept (counted once)."""
    svc = make_service()
    uid = svc.create_user("ada@example.org", "correct horse battery")
    port = closed_port()
    rows = svc.parse_batch_csv(
        "\n".join(
            f"127.0.0.1,{port},starttls,u{i},pw{i},127.0.0.1,{port},starttls,d{i},pw"
            for i in range(3)
        )
    )[0]
    bid = svc.create_batch(uid, rows)["id"]  # stored by a service that does not run
    assert svc.get_batch(uid, bid)["state"] == "checking"
    svc.start(workers=0)  # the next start checks it
    svc.wait_preflights(60)
    view = svc.get_batch(uid, bid)
    assert view["state"] == "checked" and (view["lines_checked"], view["lines_bad"]) == (3, 3)
    asyncio.run(svc._check_line(bid, 1))  # a second pre-flight's late verdict
    assert svc.get_batch(uid, bid)["lines_checked"] == 3
    assert svc.resume_preflights() == []
