"""A seeded campaign of ``kill -9`` against the service: its job processes, and all of it.

A real ``yippiemove serve`` (a separate process, as in tests/jobs/test_serve.py) runs
the transfers; the test orders them through its own Service object on the same data
directory.  Each trial is one transfer of a random mailbox (the generator of
tests/transfer/test_kill_campaign.py: folders, twins, shared and missing Message-IDs,
flags, messages of 100 kB-1 MB) whose source is reached through a throttled proxy (a
few MB/s: a real link's pace).  While it runs, its job process is killed with SIGKILL at
seeded random moments (1-2 times; each time the supervisor must start it again and it
resumes from its state file), and in some trials the whole service (``serve``, its
zygote and so its job processes) is killed with SIGKILL too and started again: the job
must be taken over and resume.  Each transfer must end ``done`` with no error, exact
(tests/mailcheck.py), with a report that says every message was copied or already
present, after as many job processes as kills that hit a running one, plus one.

Quick: 6 trials (about 40 s).  Long: ``--campaign-long`` (30 trials;
``YIPPIEMOVE_KILL_TRIALS`` / ``YIPPIEMOVE_KILL_SEED`` / ``YIPPIEMOVE_KILL_FIRST`` as for
the CLI campaign).  See docs/faults.md, "Killed processes and a full disk".
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.jobs.test_serve import _reap, _serve
from tests.svckit import free_port, pid_alive, wait_gone
from tests.transfer.test_kill_campaign import (
    RATES,
    Midway,
    Timing,
    exactness,
    load_source,
    midway,
    report_problem,
    slow_link,
)
from yippiemove.service.core import Account, Service
from yippiemove.service.db import Job

QUICK = 6
LONG = 30
SEED = 20240708
PW = "pw"  # tests/transfer/test_kill_campaign.py's helpers log in with it
OWNER = "owner@example.org"


@dataclass
class Tally:
    trials: int = 0
    messages: int = 0
    job_kills: int = 0
    service_kills: int = 0
    #: service kills while the job's process was running (the others hit an idle service)
    service_kills_mid_job: int = 0
    #: planned job kills that found the job ended already
    missed: int = 0
    exact: int = 0
    problems: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def line(self, seed: int) -> str:
        return (
            f"service kill campaign (seed {seed}): {self.trials} trials, {self.messages} "
            f"messages, {self.job_kills} kill -9 of a job process ({self.missed} planned "
            f"ones came after the job had ended), {self.service_kills} kill -9 of the whole "
            f"service ({self.service_kills_mid_job} while a job ran); {self.exact} of "
            f"{self.trials} ended done and exact, {len(self.problems)} not; "
            f"{self.seconds:.0f} s"
        )


class Serve:
    """``yippiemove serve`` on one data directory; killed and started again at will."""

    def __init__(self, data: Path, ca_file: Path, log: Path) -> None:
        self.data, self.ca_file, self.log = data, ca_file, log
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        try:
            self.proc = _serve(self.data, free_port(), self.ca_file, self.log)
        except AssertionError as exc:  # not a trial's failure: the campaign cannot go on
            raise RuntimeError(str(exc)) from None

    def kill(self) -> None:
        """SIGKILL to serve and its process group (the zygote); its job processes have
        sessions of their own and die with their parent (PR_SET_PDEATHSIG)."""
        assert self.proc is not None
        os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait()

    def stop(self) -> None:
        if self.proc is not None:
            _reap(self.proc)

    def tail(self) -> str:
        return self.log.read_text(errors="replace")[-3000:]


def job_row(svc: Service, job_id: str) -> tuple[str, str | None, int]:
    """(status, the job process's identity "host|pid|start", attempts)."""
    with svc.db.read() as s:
        job = s.get(Job, job_id)
        assert job is not None
        return job.status, job.jail, job.attempts or 0


def wait_new_jail(
    svc: Service, job_id: str, seen: set[str], timeout: float = 60
) -> tuple[int, float] | None:
    """A job process not seen before, alive: (pid, when it was noticed); None when the
    job ended first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status, jail, _ = job_row(svc, job_id)
        if jail and jail not in seen:
            pid = int(jail.split("|")[1])
            seen.add(jail)
            if pid_alive(pid):
                return pid, time.monotonic()
        if status in ("done", "failed", "cancelled"):
            return None
        time.sleep(0.01)
    raise AssertionError(f"no job process for {job_id} within {timeout} s: {job_row(svc, job_id)}")


def wait_end(svc: Service, job_id: str, timeout: float = 180) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status, _, _ = job_row(svc, job_id)
        if status in ("done", "failed", "cancelled"):
            return status
        time.sleep(0.05)
    raise AssertionError(f"job {job_id} did not end within {timeout} s")


def source_account(port: int, user: str) -> Account:
    return Account("127.0.0.1", port, "none", user, PW)  # through the proxy: plain text


def calibrate(svc: Service, uid: int, server: Any) -> Timing:
    """Once per campaign, through the service: a typical mailbox over a slow and a fast
    link, then a re-run of the second (it finds everything there); from the moment the
    job process is seen to the job's end."""
    _, _, size = load_source(server, "calsrc", random.Random("calibration"), 1)
    seconds: list[float] = []
    for rate, dst in ((RATES[0], "caldst"), (RATES[-1], "caldst2")):
        with slow_link(server.port, rate) as link:
            job = svc.create_transfer(
                uid,
                source_account(link.port, "calsrc"),
                Account("127.0.0.1", server.port, "starttls", dst, PW),
            )
            seen: set[str] = set()
            for again in range(1 + (dst == "caldst2")):
                if again:
                    svc.rerun_transfer(uid, job.id)
                started = wait_new_jail(svc, job.id, seen)
                assert started is not None
                assert wait_end(svc, job.id) == "done"
                seconds.append(time.monotonic() - started[1])
    slow, fast, fixed = seconds
    copying = [max(0.05, t - fixed) for t in (slow, fast)]
    return Timing.fit(fixed, size, (RATES[0], copying[0]), (RATES[-1], copying[1]))


def run_trial(
    svc: Service,
    uid: int,
    serve: Serve,
    server: Any,
    seed: int,
    i: int,
    timing: Timing,
    tally: Tally,
) -> None:
    rng = random.Random(f"service-{seed}-{i}")
    src, dst = f"s{i}", f"d{i}"
    _, count, size = load_source(server, src, rng, 100_000 * (i + 1))
    rate = rng.choice(RATES)

    def estimate(left: int) -> float:  # serve runs a job with one connection
        return timing.estimate(left, rate, 1)

    # The events, in order: 1-2 kills of the job process, and in every other trial one
    # kill of the whole service among them.  Each comes after a random share of how long
    # the job process it hits should take for what is left to copy, from its start.
    events = ["job"] * rng.randint(1, 2)
    if i % 2:
        events.insert(rng.randint(0, len(events)), "service")
    shares = [rng.uniform(0.05, 1.0) for _ in events]
    delays: list[float] = []

    def where() -> str:
        plan = ", ".join(f"{e} at {d} s" for e, d in zip(events, delays, strict=False))
        return (
            f"trial {i} (rng service-{seed}-{i}: {count} messages, {size} bytes, "
            f"{rate / 1e6:.0f} MB/s, ~{estimate(size):.1f} s; kills: {plan})"
        )

    tally.trials += 1
    tally.messages += count
    hits = 0  # kills that hit a running job process
    try:
        with slow_link(server.port, rate) as link:
            job = svc.create_transfer(
                uid,
                source_account(link.port, src),
                Account("127.0.0.1", server.port, "starttls", dst, PW),
            )
            seen: set[str] = set()
            there = Midway(None, 0, 0)
            for event, share in zip(events, shares, strict=True):
                delay = share * estimate(size - there.size)
                delays.append(round(delay, 2))
                started = wait_new_jail(svc, job.id, seen)
                if started is None:  # the job ended before this kill
                    if event == "job":
                        tally.missed += 1
                        continue
                    serve.kill()
                    tally.service_kills += 1
                    serve.start()
                    continue
                pid, t0 = started
                time.sleep(max(0.0, t0 + delay - time.monotonic()))
                running = pid_alive(pid)
                if event == "job":
                    try:
                        if not running:
                            raise ProcessLookupError
                        os.kill(pid, signal.SIGKILL)
                        tally.job_kills += 1
                        hits += 1
                    except ProcessLookupError:  # it ended (and was reaped) first
                        tally.missed += 1
                    wait_gone(pid)
                else:
                    serve.kill()
                    wait_gone(pid)  # died with the service
                    tally.service_kills += 1
                    if running:
                        tally.service_kills_mid_job += 1
                        hits += 1
                    serve.start()  # takes the job over: Service.recover at start-up
                there = midway(server.port, src, dst)
                if there.doubled is not None:
                    tally.problems.append(f"{where()}: after a kill: {there.doubled}")
                    return
            status = wait_end(svc, job.id)
    except AssertionError as exc:  # a job process that never came, a job that never ended
        tally.problems.append(f"{where()}: {exc}\n{serve.tail()}")
        return
    view = svc.get_transfer(uid, job.id)
    if status != "done" or view.error is not None:
        tally.problems.append(f"{where()}: ended {status}: {view.error}\n{serve.tail()}")
        return
    if view.attempts != hits + 1:
        tally.problems.append(f"{where()}: {view.attempts} job processes for {hits} kills that hit")
        return
    why = exactness(server.port, src, dst) or report_problem(svc.report(uid, job.id), count)
    if why is not None:
        tally.problems.append(f"{where()}: {why}")
        return
    tally.exact += 1


def test_kill_campaign_service(make_service, dovecot_factory, tmp_path, request, capsys):
    long = request.config.getoption("--campaign-long")
    trials = int(os.environ.get("YIPPIEMOVE_KILL_TRIALS", LONG if long else QUICK))
    seed = int(os.environ.get("YIPPIEMOVE_KILL_SEED", SEED))
    first = int(os.environ.get("YIPPIEMOVE_KILL_FIRST", 0))
    users = {f"{p}{i}": PW for i in range(first, first + trials) for p in ("s", "d")}
    users.update(calsrc=PW, caldst=PW, caldst2=PW)
    server = dovecot_factory(users=users)
    # The test's own view of the data directory (it runs no jobs: serve does).
    svc = make_service(ca_file=str(server.ca_file))
    uid = svc.create_user(OWNER, "long enough pass")
    serve = Serve(svc.settings.data_dir, server.ca_file, tmp_path / "serve.log")
    serve.start()
    t0 = time.monotonic()
    tally = Tally()
    try:
        timing = calibrate(svc, uid, server)
        for i in range(first, first + trials):
            run_trial(svc, uid, serve, server, seed, i, timing, tally)
    finally:
        serve.stop()
    tally.seconds = time.monotonic() - t0
    with capsys.disabled():
        print("\n" + tally.line(seed))
        print(f"  calibration: {timing}")
    assert not tally.problems, "\n\n".join(tally.problems)
    assert tally.exact == trials
    assert tally.job_kills >= trials // 2
    if trials >= 4:
        assert tally.service_kills_mid_job >= 1
    log = (tmp_path / "serve.log").read_text(errors="replace")
    assert "Traceback" not in log, log[-3000:]
