"""A seeded campaign: many transfers through tests/faultproxy.py with faults at random places.

Each transfer gets a random mailbox (folders, sizes, byte-identical twins, shared and
missing Message-IDs, flags and keywords; sometimes part of it already on the
destination, some with other flags) and random faults on the first connections of both
sides (cuts at any byte, in FETCH and APPEND literals, after an APPEND before its answer,
stalls, BYE, NO [UNAVAILABLE]/[SERVERBUG], Microsoft's and Gmail's throttling answers,
a slow link).  Each must end exact (tests/mailcheck.py: message by message, with
multiplicity) or stop with a clear error and then end exact after one re-run without
faults.  The campaign prints how many faults it injected and how many transfers ended
exact.

The quick version (10 transfers) runs in the normal suite; the long one (200) with
``pytest tests/transfer/test_fault_campaign.py --campaign-long -s`` (docs/faults.md).
"""

from __future__ import annotations

import json
import os
import random
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime

import pytest

from tests import mailcheck
from tests.faultproxy import KINDS, Fault, FaultProxy, Injected, random_fault
from tests.transfer.test_move import FLAG_SETS, make_message
from yippiemove.testing.dovecot import MaildirMessage

QUICK = 10
LONG = 200
SEED = 20240611
FOLDERS = ["INBOX", "Archive/2019", "Entwürfe", "R&D", "Sent", "Lists/dev"]


@dataclass
class Tally:
    transfers: int = 0
    exact_first_run: int = 0
    stopped_then_exact: int = 0
    not_exact: list[str] = field(default_factory=list)
    injected: Counter[str] = field(default_factory=Counter)
    scheduled: Counter[str] = field(default_factory=Counter)
    stops: Counter[str] = field(default_factory=Counter)
    seconds: float = 0.0

    def line(self, seed: int) -> str:
        total = sum(self.injected.values())
        exact = self.exact_first_run + self.stopped_then_exact
        kinds = ", ".join(f"{k} {n}" for k, n in sorted(self.injected.items()))
        return (
            f"fault campaign (seed {seed}): {self.transfers} transfers, {total} faults "
            f"injected ({kinds}); {exact} of {self.transfers} ended exact: "
            f"{self.exact_first_run} on the first run, {self.stopped_then_exact} stopped "
            f"with a clear error and were exact after one re-run; {len(self.not_exact)} "
            f"not exact; {self.seconds:.0f} s"
        )


def add_message(
    items: list[MaildirMessage], rng: random.Random, n: int, n0: int, size: int, odd: float
) -> None:
    """Message ``n`` of ``size`` bytes: with chance ``odd`` without a Message-ID, as often
    with a Message-ID shared by other messages of the mailbox; random flags, a date from
    ``n``, and sometimes a byte-identical twin."""
    kind = rng.random()
    if kind < odd:
        raw = make_message(n, msgid=None, size=size)
    elif kind < 2 * odd:
        raw = make_message(n, msgid=f"<shared{n0}@x>", body=f"body {n}".encode())
    else:
        raw = make_message(n, size=size)
    flags = FLAG_SETS[rng.randrange(len(FLAG_SETS))]
    when = datetime(2000 + n % 25, 1 + n % 12, 1 + n % 28, n % 24, n % 60, tzinfo=UTC)
    items.append(MaildirMessage(raw, flags, when))
    if rng.random() < 0.08:  # a byte-identical twin
        items.append(MaildirMessage(raw, flags, when))


def mailbox(rng: random.Random, n0: int) -> dict[str, list[MaildirMessage]]:
    """A random source mailbox; message numbers start at ``n0`` (Message-IDs differ
    between transfers)."""
    out: dict[str, list[MaildirMessage]] = {}
    n = n0
    for folder in rng.sample(FOLDERS, rng.randint(1, 4)):
        items: list[MaildirMessage] = []
        for _ in range(rng.randint(0, 25)):
            n += 1
            size = rng.choice([0, 200, 1500, 5000, 20000, 70000, rng.randrange(0, 250_000)])
            add_message(items, rng, n, n0, size, odd=0.1)
        out[folder] = items
    return out


def schedule(
    rng: random.Random,
    side: str,
    connections: int,
    stream_bytes: int,
    tally: Tally,
    probability: float = 0.4,
) -> dict[int, list[Fault]]:
    """Faults for one side's first ``2 * connections + 1`` connections: the planning
    connection (0, which then becomes the first worker's), the other workers' and the
    reconnections.  Each gets one with ``probability``; connection 0 a planning fault
    (LIST, CREATE... or early bytes) or a worker's, at random."""
    out: dict[int, list[Fault]] = {}
    per_worker = stream_bytes // connections + 2000
    for i in range(2 * connections + 1):
        if rng.random() < probability:
            planning = i == 0 and rng.random() < 0.5
            kind, fault = random_fault(
                rng, side=side, planning=planning, stream_bytes=2000 if planning else per_worker
            )
            out[i] = [fault]
            tally.scheduled[kind] += 1
    return out


def dest_part(
    rng: random.Random, box: dict[str, list[MaildirMessage]]
) -> dict[str, list[MaildirMessage]]:
    """Some source messages already on the destination (a previous partial run, or
    another tool), some of them with other flags."""
    out: dict[str, list[MaildirMessage]] = {}
    for folder, items in box.items():
        part = [m for m in items if rng.random() < 0.3]
        out[folder] = [
            MaildirMessage(m.raw, FLAG_SETS[rng.randrange(len(FLAG_SETS))], m.internaldate)
            if rng.random() < 0.3
            else m
            for m in part
        ]
    return out


def exactness(port: int, src_user: str, dst_user: str) -> str | None:
    """None when every source folder's messages are on the destination exactly."""
    src = mailcheck.snapshot(port, src_user, "pw")
    dst = mailcheck.snapshot(port, dst_user, "pw")
    for folder, msgs in src.items():
        if dst.get(folder) != msgs:
            have = dst.get(folder, Counter())
            missing = sum((msgs - have).values())
            extra = sum((have - msgs).values())
            return f"folder {folder!r}: {missing} missing or different, {extra} extra"
    return None


def run_campaign(server, tmp_path, transfers: int, seed: int, first: int = 0) -> Tally:
    """Transfers ``first`` .. ``first + transfers - 1`` of the campaign ``seed``."""
    tally = Tally()
    t0 = time.monotonic()
    for i in range(first, first + transfers):
        rng = random.Random(f"{seed}-{i}")
        src_user, dst_user = f"s{i}", f"d{i}"
        box = mailbox(rng, 100_000 * (i + 1))
        for folder, items in box.items():
            server.deliver_many(src_user, folder, items)
        if rng.random() < 0.3:
            for folder, items in dest_part(rng, box).items():
                server.deliver_many(dst_user, folder, items)
        total = sum(len(m.raw) for items in box.values() for m in items)
        connections = rng.randint(1, 3)
        # Some transfers get little patience and many faults: they may give up, and
        # must then stop clearly and complete on a re-run.
        impatient = rng.random() < 0.15
        probability = 0.8 if impatient else 0.4
        src_faults = schedule(rng, "src", connections, total, tally, probability)
        dst_faults = schedule(rng, "dst", connections, total, tally, probability)
        work = tmp_path / f"t{i}"
        work.mkdir()
        report = work / "report.json"
        args = (
            "--no-starttls",
            "--connections",
            str(connections),
            "--timeout",
            "2",
            "--max-backoff",
            "1",
            "--retries",
            "1" if impatient else "5",
            "--report",
            str(report),
        )
        with FaultProxy(server.port, src_faults) as ps, FaultProxy(server.port, dst_faults) as pd:
            r = mailcheck.run_move(
                ps.port,
                pd.port,
                work,
                *args,
                source_user=src_user,
                dest_user=dst_user,
                source_password="pw",
                dest_password="pw",
                timeout=300,
            )
            tally.injected.update(category(i) for p in (ps, pd) for i in p.injected)
            where = f"transfer {i} (rng {seed}-{i}): faults src {src_faults} dst {dst_faults}"
            tally.transfers += 1
            if r.returncode == 0:
                why = exactness(server.port, src_user, dst_user)
                if why is None:
                    tally.exact_first_run += 1
                else:
                    tally.not_exact.append(f"{where}: exit 0 but {why}")
                continue
            last = (r.stderr.strip().splitlines() or [""])[-1]
            if r.returncode != 2 or not last.startswith("yippiemove: error: "):
                tally.not_exact.append(
                    f"{where}: exit {r.returncode}, not a clear stop: {r.stderr[-1500:]}"
                    f"{r.stdout[-1500:]}"
                )
                continue
            if "Traceback" in r.stderr or "pw" in last.split(": ", 2)[-1].split():
                tally.not_exact.append(f"{where}: unclear error: {last}")
                continue
            tally.stops[_stop_kind(last)] += 1
            # The same command again, faults gone (no new connection gets any).
            ps.set_schedule(None)
            pd.set_schedule(None)
            r2 = mailcheck.run_move(
                ps.port,
                pd.port,
                work,
                *args,
                source_user=src_user,
                dest_user=dst_user,
                source_password="pw",
                dest_password="pw",
                timeout=300,
            )
            why = exactness(server.port, src_user, dst_user)
            if r2.returncode == 0 and why is None:
                tally.stopped_then_exact += 1
            else:
                tally.not_exact.append(
                    f"{where}: stopped ({last}), re-run exit {r2.returncode}: {why} "
                    f"{r2.stderr[-1500:]}"
                )
        if report.exists():
            json.loads(report.read_text())  # always a complete JSON report
    tally.seconds = time.monotonic() - t0
    return tally


def category(i: Injected) -> str:
    """What a recorded fault was, for the printout."""
    if i.kind == "cut":
        if "after APPEND" in i.detail:
            return "cut after APPEND"
        return "cut in literal" if "literal" in i.detail else "cut"
    if i.kind == "answer":
        for key, name in (
            ("throttled", "MS throttled"),
            ("Too many", "too many connections"),
            ("OVERQUOTA", "OVERQUOTA"),
            ("SERVERBUG", "SERVERBUG"),
            ("UNAVAILABLE", "UNAVAILABLE"),
        ):
            if key in i.detail:
                return name
    return i.kind


def _stop_kind(line: str) -> str:
    for key in ("gave up", "over its quota", "refused the login", "cannot connect"):
        if key in line:
            return key
    return line.split(": ", 2)[-1][:40]


def test_fault_campaign(dovecot_factory, tmp_path, request, capsys):
    long = request.config.getoption("--campaign-long")
    transfers = int(os.environ.get("YIPPIEMOVE_CAMPAIGN_TRANSFERS", LONG if long else QUICK))
    seed = int(os.environ.get("YIPPIEMOVE_CAMPAIGN_SEED", SEED))
    first = int(os.environ.get("YIPPIEMOVE_CAMPAIGN_FIRST", 0))  # to replay one transfer
    users = {f"{p}{i}": "pw" for i in range(first, first + transfers) for p in ("s", "d")}
    server = dovecot_factory(users=users)
    tally = run_campaign(server, tmp_path, transfers, seed, first)
    with capsys.disabled():
        print("\n" + tally.line(seed))
        print(f"  scheduled: {dict(sorted(tally.scheduled.items()))}; stops: {dict(tally.stops)}")
    assert not tally.not_exact, "\n\n".join(tally.not_exact)
    assert tally.exact_first_run + tally.stopped_then_exact == transfers
    # the campaign did what it says: faults of (nearly) every kind happened
    assert sum(tally.injected.values()) >= transfers
    if transfers >= 100:
        assert {"cut", "cut in literal", "cut after APPEND", "stall", "bye", "throttle"} <= set(
            tally.injected
        )
        assert {"UNAVAILABLE", "SERVERBUG", "MS throttled", "too many connections"} <= set(
            tally.injected
        )
        assert set(tally.scheduled) == set(KINDS)
        assert tally.stopped_then_exact > 0  # the stop-and-re-run path was taken


@pytest.mark.parametrize("i", range(3))
def test_random_schedules_are_deterministic_from_the_seed(i):
    a = schedule(random.Random(f"x-{i}"), "src", 2, 100_000, Tally())
    b = schedule(random.Random(f"x-{i}"), "src", 2, 100_000, Tally())
    c = schedule(random.Random(f"y-{i}"), "src", 2, 100_000, Tally())
    assert a == b
    assert a != c or not a
