"""Faults on the wire, one kind at a time, between the mover and a real Dovecot.

Every transfer goes through tests/faultproxy.py (one proxy in front of the source
account, one in front of the destination account; connection 0 of each is the planning
connection, which the first folder worker then uses; 1 and up are the other workers'
(opened while the plan is made), then the reconnections).  Each test ends exact -- judged by
tests/mailcheck.py, message by message with multiplicity -- or stops with a clear
message and is then completed exactly by a re-run.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import Counter
from contextlib import contextmanager
from datetime import UTC, datetime

import pytest

from tests import mailcheck
from tests.faultproxy import (
    GMAIL_BANDWIDTH,
    GMAIL_TOO_MANY,
    OVERQUOTA,
    SERVERBUG,
    UNAVAILABLE,
    Fault,
    FaultProxy,
    ms_throttled,
)
from tests.transfer.test_move import assert_exact, make_message, populate
from yippiemove.jobs.jail import progress_line
from yippiemove.transfer.engine import Mover
from yippiemove.transfer.model import Endpoint, Options, Progress

#: The first line of a FETCH response carrying a message body (the mover asks BODY.PEEK[]).
FETCH_BODY = b"BODY[] {"
#: The mover's body fetch command (not its metadata or Message-ID fetches).
FETCH_BODY_CMD = b"BODY.PEEK[])"


@contextmanager
def proxies(dovecot, src=None, dst=None, dest_port=None):
    with (
        FaultProxy(dovecot.port, src) as ps,
        FaultProxy(dest_port or dovecot.port, dst) as pd,
    ):
        yield ps, pd


def move_via(ps, pd, tmp_path, *extra):
    """The CLI through the two proxies; (result, report, seconds)."""
    report = tmp_path / "report.json"
    report.unlink(missing_ok=True)
    t0 = time.monotonic()
    r = mailcheck.run_move(
        ps.port,
        pd.port,
        tmp_path,
        "--no-starttls",
        "--report",
        str(report),
        "--max-backoff",
        "2",
        *extra,
        timeout=180,
    )
    rep = json.loads(report.read_text()) if report.exists() else {}
    return r, rep, time.monotonic() - t0


def kinds(*proxies_):
    out: Counter[str] = Counter()
    for p in proxies_:
        out.update(p.kinds())
    return out


def details(p, kind):
    return [i.detail for i in p.injected if i.kind == kind]


# ---------------------------------------------------------------------- cuts


@pytest.mark.parametrize("connections", [1, 2])
def test_cut_in_the_middle_of_a_fetched_message(dovecot, tmp_path, connections):
    populate(dovecot)
    cut = [Fault.cut_in_literal(2, "s2c", match=FETCH_BODY)]
    # the first connection of each worker; their reconnections go through
    with proxies(dovecot, src={i: cut for i in range(connections)}) as (ps, pd):
        r, rep, _ = move_via(ps, pd, tmp_path, "--connections", str(connections))
    assert r.returncode == 0, r.stderr + r.stdout
    cuts = details(ps, "cut")
    assert len(cuts) == connections, ps.injected
    assert all("literal" in c and "BODY[]" in c for c in cuts), cuts
    assert rep["progress"]["reconnects"] >= connections
    assert "closed by the server; retrying in" in r.stderr
    assert_exact(dovecot, dovecot)


def test_cut_in_the_middle_of_an_appended_message(dovecot, tmp_path):
    populate(dovecot)
    # the 3rd message literal of the APPENDs: a partial message must not be stored
    with proxies(dovecot, dst={0: [Fault.cut_in_literal(3, "c2s", match=b"APPEND")]}) as (ps, pd):
        r, _rep, _ = move_via(ps, pd, tmp_path, "--connections", "1")
    assert r.returncode == 0, r.stderr + r.stdout
    (cut,) = details(pd, "cut")
    assert "literal" in cut and "APPEND" in cut
    assert_exact(dovecot, dovecot)


@pytest.mark.parametrize("dest_has_one_twin", [False, True])
def test_append_sent_but_answer_lost_is_not_doubled(dovecot, tmp_path, dest_has_one_twin):
    """The unknown outcome: the server stored the APPEND, its answer never came."""
    populate(dovecot)
    # INBOX holds byte-identical twins, two messages sharing a Message-ID and two
    # without one: the cases where "is it already there?" is hard.
    if dest_has_one_twin:  # and the destination had one of the twins before
        twin = make_message(1000)
        dovecot.deliver("dst", "INBOX", twin, ("\\Seen",), datetime(2010, 5, 5, tzinfo=UTC))
    with proxies(dovecot, dst={0: [Fault.cut_after_append(1)]}) as (ps, pd):
        r, rep, _ = move_via(ps, pd, tmp_path, "--folder", "INBOX", "--connections", "1")
    assert r.returncode == 0, r.stderr + r.stdout
    (cut,) = details(pd, "cut")
    assert "after APPEND #1 was sent in full, before the server's answer" in cut
    src = mailcheck.snapshot(dovecot.port, "src", "srcpass")
    dst = mailcheck.snapshot(dovecot.port, "dst", "dstpass")
    assert dst["INBOX"] == src["INBOX"]
    assert sum(src["INBOX"].values()) == 14 and max(src["INBOX"].values()) == 2  # twins
    t = rep["totals"]
    # what the lost APPEND had stored was found and claimed, not appended again
    assert t["copied"] == 0 and t["failed"] == 0, t
    assert t["already_present"] == 14


# ---------------------------------------------------------------------- stalls


@pytest.mark.parametrize(
    ("side", "conn", "fault", "said"),
    [
        (
            "src",
            0,
            Fault.stall(verb="UID FETCH", match=FETCH_BODY_CMD),
            "no answer from 127.0.0.1 for 2 s",
        ),
        ("src", 0, Fault.stall(at=0, direction="s2c"), "within 2 s"),  # no greeting
        ("dst", 0, Fault.stall(verb="APPEND"), "no answer from 127.0.0.1 for 2 s"),
        ("dst", 0, Fault.stall(at=40, direction="c2s"), "no answer from 127.0.0.1 for 2 s"),
    ],
    ids=["after-fetch", "greeting", "after-append", "mid-command"],
)
def test_stalled_connection_times_out_and_is_retried(dovecot, tmp_path, side, conn, fault, said):
    populate(dovecot)
    sched = {conn: [fault]}
    with proxies(dovecot, **{side: sched}) as (ps, pd):
        r, _rep, seconds = move_via(ps, pd, tmp_path, "--connections", "1", "--timeout", "2")
    assert r.returncode == 0, r.stderr + r.stdout
    assert kinds(ps, pd)["stall"] == 1
    assert said in r.stderr, r.stderr
    assert seconds < 60
    assert_exact(dovecot, dovecot)


# ---------------------------------------------------------------------- answers


@pytest.mark.parametrize(
    ("side", "conn", "fault", "said"),
    [
        ("dst", 0, Fault.bye("APPEND", "[UNAVAILABLE] Server shutting down."), "said BYE"),
        ("src", 0, Fault.bye("EXAMINE|SELECT", "Server shutting down."), "said BYE"),
        ("src", 0, Fault.bye("GREETING", "Too many connections, try later"), "refused the"),
        ("src", 0, Fault.answer("UID FETCH", UNAVAILABLE, match=FETCH_BODY_CMD), "UNAVAILABLE"),
        ("dst", 0, Fault.answer("APPEND", UNAVAILABLE), "UNAVAILABLE"),
        # (connection 1: the second worker's; the planning connection's own SELECTs and
        # EXAMINEs, for PERMANENTFLAGS and FLAGS, may fail without harm)
        ("dst", 1, Fault.answer("SELECT", SERVERBUG), "SERVERBUG"),
        ("src", 1, Fault.answer("EXAMINE|SELECT", "NO Server Unavailable. 15"), "Unavailable"),
        ("src", 0, Fault.answer("UID FETCH", GMAIL_BANDWIDTH, match=FETCH_BODY_CMD), "throttled"),
        ("dst", 0, Fault.answer("APPEND", ms_throttled(100, "NO")), "throttled"),
        ("src", 0, Fault.answer("UID FETCH", ms_throttled(100)), "throttled"),  # metadata
        ("src", 0, Fault.answer("LIST", UNAVAILABLE), "planning"),
        ("dst", 0, Fault.answer("CREATE", SERVERBUG, nth=2), "planning"),
    ],
    ids=[
        "bye-append",
        "bye-examine",
        "bye-greeting",
        "unavailable-fetch",
        "unavailable-append",
        "serverbug-select",
        "exchange-unavailable-examine",
        "gmail-bandwidth-fetch",
        "ms-throttled-append",
        "ms-throttled-fetch",
        "unavailable-planning",
        "serverbug-create",  # not a refused name: no other name is made for it
    ],
)
def test_temporary_answers_are_retried(dovecot, tmp_path, side, conn, fault, said):
    populate(dovecot)
    with proxies(dovecot, **{side: {conn: [fault]}}) as (ps, pd):
        r, rep, _ = move_via(ps, pd, tmp_path, "--connections", str(conn + 1))
    assert r.returncode == 0, r.stderr + r.stdout
    injected = kinds(ps, pd)
    assert injected[fault.kind] == 1, (ps.injected, pd.injected)
    # After a BYE the server closes: a command still being written may meet the closed
    # socket first, and the pass is then retried as "connection lost" (same outcome).
    lost = said == "said BYE" and "connection to 127.0.0.1 lost" in r.stderr
    assert said in r.stderr or lost, r.stderr
    assert rep["progress"]["reconnects"] >= 1
    assert rep["totals"]["failed"] == 0
    assert_exact(dovecot, dovecot)


def test_too_many_simultaneous_connections_at_login_is_waited_out(dovecot, tmp_path):
    populate(dovecot)
    refuse = [Fault.answer("LOGIN|AUTHENTICATE", GMAIL_TOO_MANY)]
    with proxies(dovecot, dst={0: refuse, 1: refuse, 2: refuse}) as (ps, pd):
        r, _rep, _ = move_via(ps, pd, tmp_path, "--connections", "2")
    assert r.returncode == 0, r.stderr + r.stdout
    assert kinds(pd)["answer"] == 3
    assert all("Too many simultaneous connections" in d for d in details(pd, "answer"))
    assert "throttled (the server refused another simultaneous connection)" in r.stderr
    assert "srcpass" not in r.stderr and "dstpass" not in r.stderr
    assert_exact(dovecot, dovecot)


def test_suggested_backoff_is_honoured_and_shown_in_progress(dovecot, tmp_path):
    """Microsoft's 'Suggested Backoff Time: 1200 milliseconds': the mover waits that long
    (the proxy sees the next connection no sooner), and its live progress -- the one the
    CLI and the service's job process show -- says until when."""
    populate(dovecot)
    wait_ms = 1200
    throttled = [Fault.answer("APPEND", ms_throttled(wait_ms))]
    samples: list[tuple[float, float | None, object]] = []

    async def main(ps, pd):
        plain = {"security": "none", "allow_insecure_auth": True}  # loopback, no TLS
        src = Endpoint("127.0.0.1", ps.port, "src", password="srcpass", **plain)
        dst = Endpoint("127.0.0.1", pd.port, "dst", password="dstpass", **plain)
        # One worker also when a busy machine makes loopback look far (far_rtt).
        opts = Options(connections=1, far_connections=1, max_backoff=30)
        mover = Mover(src, dst, options=opts, progress=Progress())
        task = asyncio.create_task(mover.run())
        while not task.done():
            line = progress_line(mover)
            samples.append((time.time(), mover.progress.throttled_until, line["throttled_until"]))
            await asyncio.sleep(0.02)
        results = await task
        return mover, results

    with proxies(dovecot, dst={0: throttled}) as (ps, pd):
        mover, results = asyncio.run(main(ps, pd))
        (inj,) = [i for i in pd.injected if i.kind == "answer"]
        accepted = list(pd.accepted)
        offset = time.time() - time.monotonic()
    assert sum(r.failed for r in results) == 0
    assert len(accepted) == 2  # planning and the worker, the worker again after the wait
    waited = accepted[1] - inj.t
    assert wait_ms / 1000 <= waited <= wait_ms / 1000 * 1.1 + 0.5, waited
    shown = {until for _, until, _ in samples if until is not None}
    assert len(shown) == 1, shown
    (until,) = shown
    assert wait_ms / 1000 <= until - (inj.t + offset) <= wait_ms / 1000 * 1.1 + 0.2
    assert all(line == until for _, u, line in samples if u is not None)
    assert all(t <= until + 0.1 for t, u, _ in samples if u is not None)
    assert mover.progress.throttled_until is None  # over
    assert mover.progress.reconnects == 1
    assert_exact(dovecot, dovecot)


def test_bandwidth_throttled_connection_still_ends_exact(dovecot, tmp_path):
    populate(dovecot)
    rate = 60_000
    slow = [Fault.throttle(rate)]
    with proxies(dovecot, src={0: slow}) as (ps, pd):
        r, rep, seconds = move_via(ps, pd, tmp_path, "--connections", "1")
    assert r.returncode == 0, r.stderr + r.stdout
    assert kinds(ps)["throttle"] == 1
    copied = rep["totals"]["bytes_copied"]
    assert copied > 50_000
    assert seconds >= copied / rate * 0.9  # the bodies came through the slow link
    assert_exact(dovecot, dovecot)


# ---------------------------------------------------------------------- permanent


QUOTA_30K = """mail_plugins = $mail_plugins quota
plugin {
  quota = count:User quota
  quota_vsizes = yes
  quota_rule = *:storage=30K
}
"""


def test_over_quota_answer_stops_the_job_clearly_then_rerun_is_exact(dovecot, tmp_path):
    populate(dovecot)
    full = [Fault.answer("APPEND", OVERQUOTA, nth=2)]
    with proxies(dovecot, dst={0: full}) as (ps, pd):
        r, rep, seconds = move_via(ps, pd, tmp_path, "--connections", "1")
        connections = pd.connections
    assert r.returncode == 2, r.stderr + r.stdout
    last = r.stderr.strip().splitlines()[-1]
    assert last.startswith("yippiemove: error: the destination mailbox is over its quota")
    assert "Quota exceeded" in last and "make room or raise the quota" in last
    assert "run the same command again to resume" in last
    assert rep["status"] == "aborted" and "over its quota" in rep["error"]
    assert connections == 1 and seconds < 30  # stopped at once, not retried
    with proxies(dovecot) as (ps, pd):
        r2, rep2, _ = move_via(ps, pd, tmp_path)
    assert r2.returncode == 0, r2.stderr + r2.stdout
    assert rep2["totals"]["copied"] > 0
    assert_exact(dovecot, dovecot)


def test_real_dovecot_quota_stops_the_job_then_rerun_is_exact(dovecot, dovecot_factory, tmp_path):
    populate(dovecot)
    dest = dovecot_factory(users={"dst": "dstpass"}, extra_config=QUOTA_30K)
    # Two workers, whatever the proxies' delay: Dovecot checks the quota when an APPEND
    # starts, so six sessions appending at once can all pass the check together.
    with proxies(dovecot, dest_port=dest.port) as (ps, pd):
        r, _rep, _ = move_via(ps, pd, tmp_path, "--connections", "2")
    assert r.returncode == 2, r.stderr + r.stdout
    last = r.stderr.strip().splitlines()[-1]
    assert "the destination mailbox is over its quota" in last, last
    assert "[OVERQUOTA]" in last and "raise the quota" in last
    stored = sum(sum(v.values()) for v in mailcheck.snapshot(dest.port, "dst", "dstpass").values())
    assert stored < 54
    # The quota is raised (here: removed); the same command completes exactly.
    dest.stop()
    dest.extra_config = ""
    dest.start()
    with proxies(dovecot, dest_port=dest.port) as (ps, pd):
        r2, _rep2, _ = move_via(ps, pd, tmp_path)
    assert r2.returncode == 0, r2.stderr + r2.stdout
    assert_exact(dovecot, dest)


def test_message_too_large_is_reported_and_the_rest_is_exact_through_faults(
    dovecot, dovecot_factory, tmp_path
):
    small = [make_message(i, size=100) for i in range(5)]
    big = [make_message(100 + i, size=20000) for i in range(2)]
    for raw in small[:3] + big[:1] + small[3:] + big[1:]:
        dovecot.deliver("src", "INBOX", raw)
    dest = dovecot_factory(users={"dst": "dstpass"}, max_message_size=10000)
    # APPEND #1 is the MULTIAPPEND group Dovecot refuses ([LIMIT], all or nothing);
    # #2 the first single APPEND, stored but its answer cut; a source body cut too.
    faults_dst = {0: [Fault.cut_after_append(2)]}
    # (source connection 1: the worker's second, after the destination's cut)
    faults_src = {1: [Fault.cut_in_literal(1, "s2c", match=FETCH_BODY)]}
    with proxies(dovecot, src=faults_src, dst=faults_dst, dest_port=dest.port) as (ps, pd):
        r, rep, _ = move_via(ps, pd, tmp_path, "--connections", "1")
    assert r.returncode == 1, r.stderr + r.stdout
    assert kinds(ps, pd)["cut"] == 2, (ps.injected, pd.injected)
    assert rep["totals"]["failed"] == 2
    for f in rep["failures"]:
        assert f["size"] > 10000 and f["message_id"].startswith("<msg10")
        assert "destination refused it" in f["reason"] and "[LIMIT]" in f["reason"]
    assert "FAILED UID" in r.stdout
    src = mailcheck.snapshot(dovecot.port, "src", "srcpass")
    dst = mailcheck.snapshot(dest.port, "dst", "dstpass")
    assert dst["INBOX"] == Counter({m: n for m, n in src["INBOX"].items() if m.size < 10000})
    # A re-run reports them again and copies nothing twice.
    with proxies(dovecot, dest_port=dest.port) as (ps, pd):
        r2, rep2, _ = move_via(ps, pd, tmp_path)
    assert r2.returncode == 1
    assert rep2["totals"]["copied"] == 0 and rep2["totals"]["failed"] == 2
    assert mailcheck.snapshot(dest.port, "dst", "dstpass") == dst


# ---------------------------------------------------------------------- effort


def test_gives_up_after_bounded_effort_then_rerun_is_exact(dovecot, tmp_path):
    populate(dovecot)

    def always_unavailable(index):
        # Connection 0 plans (its SELECT #1 is INBOX's, for PERMANENTFLAGS), then copies.
        return [Fault.answer("SELECT", UNAVAILABLE, nth=1 if index else 2)]

    with proxies(dovecot, dst=always_unavailable) as (ps, pd):
        r, rep, seconds = move_via(
            ps, pd, tmp_path, "--connections", "1", "--retries", "2", "--max-backoff", "0.5"
        )
        connections = pd.connections
    assert r.returncode == 2, r.stderr + r.stdout
    last = r.stderr.strip().splitlines()[-1]
    assert "gave up after 3 attempts in a row without progress" in last, last
    assert "UNAVAILABLE" in last and "Run the same command again later" in last
    assert connections == 3  # 3 attempts of the first folder, the first on the planning's
    assert seconds < 30
    assert rep["status"] == "aborted"
    with proxies(dovecot) as (ps, pd):
        r2, _rep2, _ = move_via(ps, pd, tmp_path)
    assert r2.returncode == 0, r2.stderr + r2.stdout
    assert_exact(dovecot, dovecot)


def test_unreachable_server_fails_at_once(dovecot, tmp_path):
    """Never reached: a wrong host or port is said at once, not retried for minutes."""
    import socket

    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    closed = s.getsockname()[1]
    s.close()
    t0 = time.monotonic()
    r = mailcheck.run_move(closed, dovecot.port, tmp_path, "--no-starttls", timeout=60)
    assert r.returncode == 2
    assert "cannot connect to 127.0.0.1" in r.stderr
    assert time.monotonic() - t0 < 15
