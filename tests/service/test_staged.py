"""Staged moves until cut-over (issue 17, service/staged.py) on the real service with job
processes and a real Dovecot: a first pass, top-ups that pick up the mail the old
mailbox received meanwhile, a final pass on the customer's word -> exact, each pass's
figures in the history, the passwords kept while the schedule runs and deleted after
the final pass; a scheduled start; two schedulers on one control database fire each pass
once; a cancelled schedule deletes the passwords.

Time is moved by handing ``fire_due_passes`` a later ``now`` (the interval is an hour):
no test waits for a clock."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from sqlalchemy import select

from tests.infra.fixtures import PgDatabase
from tests.svckit import SmtpSink, account, assert_exact
from tests.transfer.test_move import make_message, populate
from yippiemove.service.core import Conflict, JobView, Service, ServiceError
from yippiemove.service.db import Job, StagedSchedule
from yippiemove.testing.dovecot import DovecotServer

HOUR = 3600.0
USERS = {"src": "srcpass", "dst": "dstpass"}


def wait_run(svc: Service, uid: int, job_id: str, runs: int, timeout: float = 90) -> JobView:
    """Until run ``runs`` of the job has ended (its pass recorded)."""
    deadline = time.monotonic() + timeout
    while True:
        view = svc.get_transfer(uid, job_id)
        done = view.schedule is not None and len(view.schedule["passes"]) >= runs
        if view.runs == runs and view.status in ("done", "failed", "cancelled") and done:
            return view
        if time.monotonic() > deadline:
            raise AssertionError(f"run {runs} did not end: {view.status} run {view.runs}")
        time.sleep(0.1)


def blob(svc: Service, job_id: str) -> bytes | None:
    with svc.db.read() as s:
        job = s.get(Job, job_id)
        assert job is not None
        return job.credentials


@pytest.mark.source_writes("the old mailbox receives new mail between the passes")
def test_first_pass_two_top_ups_and_a_final_pass_pick_up_new_mail_and_end_exact(
    make_service: Callable[..., Service],
    dovecot_factory: Callable[..., DovecotServer],
    smtp_sink: SmtpSink,
) -> None:
    server = dovecot_factory(separator="/", users=USERS)
    populate(server, "src")
    svc = make_service(
        ca_file=str(server.ca_file),
        staged_min_interval=60.0,
        smtp_host="127.0.0.1",
        smtp_port=smtp_sink.port,
    )
    svc.start(workers=1)
    uid = svc.create_user("ada@example.org", "correct horse battery")
    src, dst = account(server, "src", "srcpass"), account(server, "dst", "dstpass")

    job = svc.create_transfer(uid, src, dst, schedule={"interval": HOUR})
    assert job.schedule is not None and job.schedule["state"] == "syncing"
    first = wait_run(svc, uid, job.id, 1)
    assert first.status == "done"
    sched = first.schedule
    assert sched is not None
    assert sched["state"] == "syncing" and sched["next_kind"] == "top-up"
    assert sched["next_run_at"] == pytest.approx(first.finished + HOUR, abs=2)
    assert sched["credentials_kept"] is True and sched["credentials_until"] is None
    [p1] = sched["passes"]
    assert p1["kind"] == "first" and p1["outcome"] == "done"
    assert p1["copied"] > 0 and p1["already_present"] == 0 and p1["bytes"] > 0
    total = p1["copied"]
    # Kept while the schedule runs: no expiry set (the retention does not run).
    assert first.credentials_expire is None and blob(svc, job.id) is not None
    # Not due yet: nothing fires.
    assert svc.fire_due_passes() == []

    # Mail keeps arriving at the old mailbox; the top-ups pick it up, copy nothing twice.
    for runs, new in ((2, 2), (3, 1)):
        for k in range(new):
            server.deliver("src", "INBOX", make_message(9000 + 10 * runs + k))
        assert svc.fire_due_passes(now=time.time() + HOUR + 5) == [job.id]
        view = wait_run(svc, uid, job.id, runs)
        assert view.status == "done"
        p = view.schedule["passes"][-1]  # type: ignore[index]
        assert (p["kind"], p["number"], p["outcome"]) == ("top-up", runs, "done")
        assert p["copied"] == new and p["already_present"] == total
        total += new
        assert blob(svc, job.id) is not None

    # The customer switched their MX: one last message, the final pass by button.
    server.deliver("src", "Projects", make_message(9900))  # a new folder too
    svc.final_pass(uid, job.id)
    final = wait_run(svc, uid, job.id, 4)
    assert final.status == "done"
    sched = final.schedule
    assert sched is not None and sched["state"] == "done" and sched["next_run_at"] is None
    last = sched["passes"][-1]
    assert (last["kind"], last["copied"], last["already_present"]) == ("final", 1, total)
    assert [p["kind"] for p in sched["passes"]] == ["first", "top-up", "top-up", "final"]
    # Exact, with the new mail; the passwords are gone; no more passes, ever.
    assert_exact(server, "src", "srcpass", "dst", "dstpass")
    assert blob(svc, job.id) is None and final.can_rerun is False
    assert sched["credentials_kept"] is False
    assert svc.fire_due_passes(now=time.time() + 30 * 86400) == []
    with pytest.raises(Conflict):
        svc.final_pass(uid, job.id)
    # Mail: the first pass and the final one said "complete"; the top-ups said nothing.
    svc.notifier.flush()
    smtp_sink.wait_for(lambda m: "complete" in str(m["Subject"]))
    time.sleep(0.5)
    subjects = [str(m["Subject"]) for m in smtp_sink.messages]
    assert len(subjects) == 2 and all("complete" in x for x in subjects), subjects


def test_a_scheduled_start_waits_then_runs_and_a_final_time_ends_it(
    make_service: Callable[..., Service], dovecot_factory: Callable[..., DovecotServer]
) -> None:
    server = dovecot_factory(separator="/", users=USERS)
    server.deliver("src", "INBOX", make_message(1))
    svc = make_service(ca_file=str(server.ca_file), staged_min_interval=60.0)
    svc.start(workers=1)
    uid = svc.create_user("ada@example.org", "correct horse battery")
    src, dst = account(server, "src", "srcpass"), account(server, "dst", "dstpass")
    now = time.time()
    start, final_at = now + HOUR, now + 2 * HOUR
    job = svc.create_transfer(
        uid, src, dst, schedule={"interval": 4 * HOUR, "start_at": start, "final_at": final_at}
    )
    assert job.status == "queued" and job.schedule is not None
    assert job.schedule["state"] == "scheduled" and job.schedule["next_kind"] == "first"
    assert job.schedule["next_run_at"] == start
    assert job.schedule["credentials_until"] == final_at
    # Not in the queue, and the recovery sweeps do not put it there.
    assert job.id not in (svc.queue.waiting_ids() or set())
    assert svc.requeue_lost() == [] and svc.requeue_lost() == []
    assert svc.recover(startup=True) == []
    assert job.id not in (svc.queue.waiting_ids() or set())
    assert svc.get_transfer(uid, job.id).status == "queued"
    assert svc.fire_due_passes(now=start - 1) == []

    assert svc.fire_due_passes(now=start + 1) == [job.id]
    first = wait_run(svc, uid, job.id, 1)
    assert first.schedule is not None and first.schedule["passes"][0]["kind"] == "first"
    # The final time comes before another interval: the next pass is the final one, then.
    assert first.schedule["next_run_at"] == final_at
    assert first.schedule["next_kind"] == "final"
    assert svc.fire_due_passes(now=final_at + 1) == [job.id]
    final = wait_run(svc, uid, job.id, 2)
    assert final.schedule is not None and final.schedule["state"] == "done"
    assert [p["kind"] for p in final.schedule["passes"]] == ["first", "final"]
    assert blob(svc, job.id) is None


def race_schedulers(a: Service, b: Service, rounds: int = 25) -> None:
    """Two Service objects (two processes, two hosts of a fleet) on one control database,
    racing for the same due pass from two threads, ``rounds`` times: each pass is fired
    exactly once (one enqueue, one new run)."""
    uid = a.create_user("ada@example.org", "correct horse battery")
    at = time.time() + HOUR
    job = a.create_transfer(
        uid, account_of("src"), account_of("dst"), schedule={"interval": HOUR, "start_at": at}
    )
    enqueued: list[str] = []
    for svc in (a, b):
        svc._enqueue = lambda job_id, delay=0.0: enqueued.append(job_id) or True  # type: ignore[method-assign]

    for n in range(rounds):
        if n:  # as if the pass before ended: the job done, the next pass due
            with a.db.session() as s:
                row = s.get(Job, job.id)
                sched = s.get(StagedSchedule, job.id)
                assert row is not None and sched is not None
                row.status = "done"
                sched.state, sched.next_run_at = "syncing", at + n
        barrier = threading.Barrier(2)
        won: list[list[str]] = []

        def race(svc: Service, barrier: threading.Barrier, won: list[list[str]], t: float) -> None:
            barrier.wait()
            won.append(svc.fire_due_passes(now=t))

        threads = [
            threading.Thread(target=race, args=(svc, barrier, won, at + n + 1)) for svc in (a, b)
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        assert sorted(len(w) for w in won) == [0, 1], won
    assert enqueued == [job.id] * rounds
    with a.db.read() as s:
        row = s.get(Job, job.id)
        assert row is not None and row.runs == rounds  # one new run per pass, no more
        assert row.status == "queued"


def test_two_schedulers_on_one_database_fire_each_pass_once(
    make_service: Callable[..., Service],
) -> None:
    a = make_service(staged_min_interval=60.0)
    b = make_service(staged_min_interval=60.0)  # same data dir: same control database
    race_schedulers(a, b)


def test_two_schedulers_on_one_postgres_database_fire_each_pass_once(
    make_service: Callable[..., Service], postgres: PgDatabase
) -> None:
    """The fleet's database: READ COMMITTED, the loser's UPDATE re-checks and matches 0."""
    a = make_service(staged_min_interval=60.0, database_url=postgres.url)
    b = make_service(staged_min_interval=60.0, database_url=postgres.url)
    race_schedulers(a, b)


def test_cancel_the_schedule_deletes_the_passwords_and_stops_the_passes(
    make_service: Callable[..., Service], dovecot_factory: Callable[..., DovecotServer]
) -> None:
    server = dovecot_factory(separator="/", users=USERS)
    server.deliver("src", "INBOX", make_message(1))
    svc = make_service(ca_file=str(server.ca_file), staged_min_interval=60.0)
    svc.start(workers=1)
    uid = svc.create_user("ada@example.org", "correct horse battery")
    src, dst = account(server, "src", "srcpass"), account(server, "dst", "dstpass")
    job = svc.create_transfer(uid, src, dst, schedule={"interval": HOUR})
    wait_run(svc, uid, job.id, 1)
    assert blob(svc, job.id) is not None
    view = svc.cancel_schedule(uid, job.id)
    assert view.schedule is not None and view.schedule["state"] == "cancelled"
    assert view.schedule["next_run_at"] is None and view.schedule["credentials_kept"] is False
    assert blob(svc, job.id) is None and view.can_rerun is False
    assert svc.fire_due_passes(now=time.time() + 30 * 86400) == []
    with pytest.raises(Conflict):
        svc.cancel_schedule(uid, job.id)
    # A scheduled start cancelled before it came: the job is cancelled, nothing ran.
    later = svc.create_transfer(
        uid,
        account(server, "src", "srcpass"),
        account(server, "dst2", "x"),
        schedule={"interval": HOUR, "start_at": time.time() + HOUR},
    )
    view = svc.cancel_schedule(uid, later.id)
    assert view.status == "cancelled" and blob(svc, later.id) is None


@pytest.mark.parametrize(
    ("schedule", "field"),
    [
        ({"interval": 59}, "schedule.interval"),
        ({}, "schedule.interval"),
        ({"interval": "often"}, "schedule.interval"),
        ({"interval": 3600, "start_at": 1.0}, "schedule.start_at"),
        ({"interval": 3600, "final_at": 2.0}, "schedule.final_at"),
        ({"interval": 3600, "every": 2}, "schedule.every"),
        ({"interval": 3600, "final_at": time.time() + 400 * 86400}, "schedule.final_at"),
    ],
)
def test_a_bad_schedule_is_refused_naming_the_field(
    make_service: Callable[..., Service], tmp_path: Path, schedule: dict[str, object], field: str
) -> None:
    svc = make_service(staged_min_interval=60.0)
    uid = svc.create_user("ada@example.org", "correct horse battery")
    src = account_of("src")
    with pytest.raises(ServiceError, match=field):
        svc.create_transfer(uid, src, account_of("dst"), schedule=schedule)
    with svc.db.read() as s:
        assert s.scalars(select(Job)).all() == []


def account_of(user: str):  # type: ignore[no-untyped-def]
    from yippiemove.service.core import Account

    return Account("127.0.0.1", 1143, "starttls", user, "pw")
