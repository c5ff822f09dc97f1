"""The service process's open files (issue 18): the soft limit raised at start, a budget
that makes jobs wait instead of failing, and a spawn short of descriptors put back in the
queue -- on a real service and a real Dovecot."""

from __future__ import annotations

import errno
import json
import logging
import os
import resource
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from tests.svckit import DST_PW, FAST, SRC_PW, account, assert_exact, jail_pid, wait_status
from tests.transfer.test_move import populate
from yippiemove.jobs.descriptors import HEADROOM_FDS, JOB_FDS, SPAWN_FDS, FdBudget, open_fds
from yippiemove.service.core import TooManyWorkers

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def server(dovecot_factory):
    return dovecot_factory(users={"src": SRC_PW, "dst": DST_PW})


def test_start_raises_the_soft_limit_to_the_hard_one(make_service):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    low = min(hard, 512)
    resource.setrlimit(resource.RLIMIT_NOFILE, (low, hard))
    try:
        svc = make_service()
        svc.start(0)
        assert resource.getrlimit(resource.RLIMIT_NOFILE) == (hard, hard)
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def test_more_workers_than_the_limit_holds_is_refused_naming_the_limit(make_service):
    fits = FdBudget().capacity()
    svc = make_service()
    with pytest.raises(TooManyWorkers, match=r"limit of \d+ open files"):
        svc.start(fits + 1)


def test_workers_have_no_fixed_cap_only_the_limit_of_open_files(tmp_path):
    """`worker --workers 2000` (past the old fixed cap of 1024) reaches the start, where a
    hard limit of 256 refuses it with an error naming that limit."""

    def low() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (256, 256))

    env = dict(os.environ, YIPPIEMOVE_DATA_DIR=str(tmp_path / "data"))
    proc = subprocess.run(
        [str(Path(sys.executable).parent / "yippiemove"), "worker", "--workers", "2000"],
        capture_output=True,
        text=True,
        env=env,
        preexec_fn=low,
        timeout=60,
        check=False,
    )
    assert proc.returncode != 0
    assert "limit of 256 open files" in proc.stderr


def test_a_running_job_costs_the_service_at_most_its_budget(make_service, server):
    """/proc/self/fd before and while a job runs: what JOB_FDS and SPAWN_FDS assume."""
    server.add_user("warm", DST_PW)
    populate(server)
    svc = make_service(ca_file=str(server.ca_file))
    svc.start(1)
    uid = svc.create_user("a@example.org", "long enough pass")
    warm = svc.create_transfer(uid, account(server, "src", SRC_PW), account(server, "warm", DST_PW))
    assert wait_status(svc, uid, warm.id).status == "done"
    before, pipes_before = open_fds(), _pipes()  # warm: threads, database connections
    job = svc.create_transfer(uid, account(server, "src", SRC_PW), account(server, "dst", DST_PW))
    deadline = time.monotonic() + 30
    total: list[int] = []
    pipes: list[int] = []
    while time.monotonic() < deadline:
        if jail_pid(svc, job.id) is not None:
            total.append(open_fds() - before)
            pipes.append(_pipes() - pipes_before)
        if svc.get_transfer(uid, job.id).status in ("done", "failed"):
            break
        time.sleep(0.005)
    assert wait_status(svc, uid, job.id).status == "done"
    assert total
    # The job's own (its pipes, the watch loop's epoll), steady: what JOB_FDS budgets
    # with its margin; its pipes at the peak (the spawn): what SPAWN_FDS budgets.  All
    # descriptors of the process also count what other threads open for a moment (a
    # checkpoint's files, a database connection): HEADROOM_FDS is for those.
    running = sorted(pipes)[len(pipes) // 2]
    assert 2 <= running <= JOB_FDS - 1, pipes
    assert max(pipes) <= SPAWN_FDS, pipes
    assert sorted(total)[len(total) // 2] <= SPAWN_FDS, total
    assert max(total) <= SPAWN_FDS + HEADROOM_FDS, total


def _pipes() -> int:
    """Pipes and anonymous inodes (epoll) open in this process."""
    n = 0
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue
        n += target.startswith(("pipe:", "anon_inode:"))
    return n


def test_a_spawn_short_of_descriptors_puts_the_job_back_and_it_ends_exact(
    make_service, server, caplog
):
    """EMFILE, then ENOMEM (a fork), while starting the job process: the job goes back
    to the queue twice, then runs; never failed, never "internal error"."""
    populate(server)
    svc = make_service(ca_file=str(server.ca_file))
    launcher = svc.supervisor.launcher
    real = launcher.spawn
    faults = [OSError(errno.EMFILE, "Too many open files"), OSError(errno.ENOMEM, "fork")]

    def spawn(workdir):
        if faults:
            raise faults.pop(0)
        return real(workdir)

    launcher.spawn = spawn
    caplog.set_level(logging.INFO, logger="yippiemove")
    svc.start(1)
    uid = svc.create_user("a@example.org", "long enough pass")
    job = svc.create_transfer(uid, account(server, "src", SRC_PW), account(server, "dst", DST_PW))
    view = wait_status(svc, uid, job.id)
    assert (view.status, view.error) == ("done", None)
    assert not faults
    assert_exact(server, "src", SRC_PW, "dst", DST_PW)
    lines = [r.getMessage() for r in caplog.records if "short of resources" in r.getMessage()]
    assert len(lines) == 2, lines


CHILD = textwrap.dedent(
    """
    import json, logging, resource, sys, time
    from pathlib import Path
    from tests.svckit import FAST
    from yippiemove.jobs.descriptors import HEADROOM_FDS, SPAWN_FDS, open_fds
    from yippiemove.service.config import Settings
    from yippiemove.service.core import Account, Service

    cfg = json.load(sys.stdin)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr)
    svc = Service(Settings.load(Path(cfg["data"]), **cfg["settings"]))
    svc.start(3)
    acc = lambda user, pw: Account("127.0.0.1", cfg["port"], "starttls", user, pw)
    users = [svc.create_user(f"u{i}@example.org", "long enough pass") for i in range(3)]

    def wait(pairs, seen):
        deadline = time.monotonic() + 40
        while time.monotonic() < deadline:
            views = [svc.get_transfer(u, j) for u, j in pairs]
            for v in views:
                if (v.progress or {}).get("waiting_reason", "").endswith("open files"):
                    seen.add(v.id)
            if all(v.status in ("done", "failed", "cancelled") for v in views):
                return views
            time.sleep(0.02)
        raise SystemExit(f"jobs still running: {[(v.status, v.progress) for v in views]}")

    # Warm: every worker thread has run a job (and opened its database connection).
    warm = [
        (u, svc.create_transfer(u, acc("src", cfg["src"]), acc(f"warm{i}", cfg["dst"])).id)
        for i, u in enumerate(users)
    ]
    wait(warm, set())
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    limit = open_fds() + HEADROOM_FDS + SPAWN_FDS + 2  # room for one job at a time
    resource.setrlimit(resource.RLIMIT_NOFILE, (limit, hard))
    pairs = []
    for i, u in enumerate(users):
        job = svc.create_transfer(u, acc("src", cfg["src"]), acc(f"dst{i}", cfg["dst"]))
        pairs.append((u, job.id))
    seen = set()
    views = wait(pairs, seen)
    resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    svc.stop(timeout=15)
    svc.close()
    print(json.dumps({"limit": limit, "waited": len(seen),
                      "ends": [[v.status, v.error] for v in views]}))
    """
)


def test_a_service_at_its_limit_of_open_files_makes_jobs_wait_and_all_end_exact(
    tmp_path, server
):
    """A service process whose soft limit leaves room for one job at a time, three jobs
    at once: they take turns (visibly waiting), none fails, all exact."""
    for user in ("warm0", "warm1", "warm2", "dst0", "dst1", "dst2"):
        server.add_user(user, DST_PW)
    populate(server)
    settings = dict(FAST, ca_file=str(server.ca_file))
    cfg = {
        "data": str(tmp_path / "data"),
        "settings": settings,
        "port": server.port,
        "src": SRC_PW,
        "dst": DST_PW,
    }
    proc = subprocess.run(
        [sys.executable, "-c", CHILD],
        input=json.dumps(cfg),
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=150,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["ends"] == [["done", None]] * 3, (out, proc.stderr[-3000:])
    assert out["waited"] >= 1, out
    for user in ("dst0", "dst1", "dst2"):
        assert_exact(server, "src", SRC_PW, user, DST_PW)
    assert "Too many open files" not in proc.stderr
