"""Least privilege for job processes (issue 14, attack class 6 "Privilege").

The job process parses what hostile servers send.  Suppose a server found a way to run
code in it: started the way the service starts a job process (the launcher, with the
service's own settings and data directory, as root), that code must not read the
credentials key, the session key or the control database, must not see another job's
files, and must not run as root.  The "hostile job" here is a probe script started by
the real launcher in place of the job module (same Popen, directory, environment,
limits and user drop); the forked (zygote) job is checked through /proc.
"""

from __future__ import annotations

import json
import os
import socket
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from yippiemove.jobs import launch
from yippiemove.jobs.launch import ExecLauncher, ZygoteLauncher
from yippiemove.service.config import Settings
from yippiemove.service.core import Service
from yippiemove.service.jobhost import supervisor_config

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="the drop happens when run as root")

#: What hostile code in a job process would try (argv: the paths to try).  It reads the
#: spec from stdin first (as the job does), then drops privileges the way the job does.
PROBE = r"""
import json, os, sys
from yippiemove.jobs.privilege import drop_privileges
args = json.loads(sys.argv[1])
if "--uid" in sys.argv:
    drop_privileges(int(sys.argv[sys.argv.index("--uid") + 1]))
out = {"uid": os.getuid(), "euid": os.geteuid(), "groups": os.getgroups()}
for name, path in args.items():
    try:
        if os.path.isdir(path):
            os.listdir(path)
        else:
            open(path, "rb").read(1)
        out[name] = "read"
    except PermissionError:
        out[name] = "denied"
    except OSError as exc:
        out[name] = type(exc).__name__
try:
    with open("mine.txt", "w") as f:
        f.write("ok")
    out["own_dir"] = "written"
except OSError as exc:
    out["own_dir"] = type(exc).__name__
print(json.dumps(out), flush=True)
"""


@pytest.fixture
def service(tmp_path: Path) -> Iterator[Service]:
    svc = Service(Settings.load(tmp_path / "svc", maintenance_interval=3600.0))
    try:
        svc.create_user("someone@example.org", "some password!")  # the database has rows
        yield svc
    finally:
        svc.close()


def targets(service: Service, other_job: Path) -> dict[str, str]:
    s = service.settings
    db = s.database_url.removeprefix("sqlite:///")
    assert Path(db).is_file()
    s.session_key()
    return {
        "credentials_key": str(s.credentials_key_file),
        "session_key": str(s.secret_key_file),
        "control_db": db,
        "other_job_dir": str(other_job),
        "other_job_state": str(other_job / "state.sqlite"),
        "jobs_dir": str(s.jobs_dir),
    }


@pytest.mark.sqlite_file("the probe tries to read the SQLite file")
def test_a_job_process_cannot_read_keys_database_or_other_jobs(
    service: Service, monkeypatch: pytest.MonkeyPatch
) -> None:
    s = service.settings
    assert Path(s.credentials_key_file).is_file()
    other = s.job_dir("other-job")
    other.mkdir(mode=0o700)
    (other / "state.sqlite").write_bytes(b"another customer's receipt")
    mine = s.job_dir("my-job")
    mine.mkdir(mode=0o700)
    probe_args = json.dumps(targets(service, other))
    monkeypatch.setattr(launch, "JAIL_MODULE", [sys.executable, "-c", PROBE, probe_args])
    launcher = ExecLauncher(supervisor_config(s))
    proc = launcher.spawn(mine)
    proc.stdin.write(b'{"spec": "with the passwords"}\n')
    proc.stdin.close()
    line = os.read(proc.stdout_fd, 65536)
    deadline = time.monotonic() + 60
    while not proc.exited() and time.monotonic() < deadline:
        time.sleep(0.02)
    rc = proc.reap()
    assert rc == 0, (mine / "job.log").read_text()
    seen = json.loads(line)
    assert seen["uid"] != 0 and seen["euid"] != 0 and seen["groups"] == []
    for name in ("credentials_key", "session_key", "control_db", "other_job_dir", "jobs_dir"):
        assert seen[name] == "denied", (name, seen)
    assert seen["other_job_state"] in ("denied", "FileNotFoundError"), seen
    assert seen["own_dir"] == "written"
    # Once reaped, the job's directory is the service's again, and its id is free.
    assert (mine / "mine.txt").stat().st_uid == os.geteuid()
    assert not launcher.uids._taken


def _status(pid: int) -> dict[str, str]:
    out = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        out[key] = value.split()
    return out  # type: ignore[return-value]


def test_a_forked_job_drops_to_its_own_user_id(service: Service) -> None:
    """The zygote's child (the default way), with a real spec on stdin: once it has its
    spec it runs as a user id of its own, no groups, no new privileges; two jobs never
    share an id."""
    s = service.settings
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(8)
    port = silent.getsockname()[1]
    launcher = ZygoteLauncher(supervisor_config(s))
    jobs = []
    try:
        for name in ("job-a", "job-b"):
            d = s.job_dir(name)
            d.mkdir(mode=0o700)
            proc = launcher.spawn(d)
            # A server that takes the connection and never greets: the job waits.
            acc = {"host": "127.0.0.1", "port": port, "security": "none", "username": name}
            spec = {
                "job_id": name,
                "source": {**acc, "password": "Secret-pw-1"},
                "dest": {**acc, "username": name + "-dest", "password": "Secret-pw-2"},
                "allow_insecure_hosts": True,
                "progress_interval": 30,
                "egress": {"allow": "127.0.0.0/8"},  # the job's own egress check
            }
            proc.stdin.write(json.dumps(spec).encode() + b"\n")
            proc.stdin.close()
            jobs.append((proc, d))
        uids = []
        for proc, _d in jobs:
            deadline = time.monotonic() + 60
            while True:
                st = _status(proc.pid)
                if st["Uid"][0] != "0" or time.monotonic() > deadline:
                    break
                time.sleep(0.05)
            assert st["Uid"] == [st["Uid"][0]] * 4 and st["Uid"][0] != "0", st["Uid"]
            assert st["Gid"][0] != "0" and st["Groups"] == [], st
            assert st["NoNewPrivs"] == ["1"]
            # Not dumpable (the credentials changed): its /proc entries stay root's, so
            # another job cannot read its memory, environment or descriptors.
            assert Path(f"/proc/{proc.pid}/environ").stat().st_uid == 0
            uids.append(int(st["Uid"][0]))
        assert len(set(uids)) == 2
        for (_proc, d), uid in zip(jobs, uids, strict=True):
            assert d.stat().st_uid == uid and (d.stat().st_mode & 0o777) == 0o700
    finally:
        for proc, _d in jobs:
            proc.signal_group(9)
            proc.reap()
        launcher.close()
        silent.close()
    for _proc, d in jobs:
        assert d.stat().st_uid == os.geteuid()


def test_a_data_dir_behind_a_private_parent_keeps_jobs_running(tmp_path: Path) -> None:
    """A data directory under a 0700 parent (e.g. /root): a job with its own id could not
    open its state, so it keeps the service's user (with a warning) rather than fail."""
    from yippiemove.jobs.privilege import JobUids, unreachable_ancestor

    locked = tmp_path / "home"
    jobs = locked / "data" / "jobs"
    work = jobs / "job-1"
    work.mkdir(parents=True)
    locked.chmod(0o700)
    assert unreachable_ancestor(jobs) == locked
    assert JobUids(jobs, 1_900_000_000).take(work) is None
    locked.chmod(0o711)
    uids = JobUids(jobs, 1_900_000_000)
    uid = uids.take(work)
    assert uid == 1_900_000_000 and work.stat().st_uid == uid
    uids.give_back(uid, work)
    assert work.stat().st_uid == os.geteuid()


def test_an_old_attempt_giving_its_id_back_leaves_the_new_attempts_directory(
    tmp_path: Path,
) -> None:
    """A job's next attempt may take its directory before the last attempt's process is
    reaped: the late give-back must not hand the directory back to the service (the new
    process, under its own id, then could not create its state: "Permission denied")."""
    from yippiemove.jobs.privilege import JobUids

    if os.geteuid() != 0:
        pytest.skip("user ids of their own need root")
    jobs = tmp_path / "data" / "jobs"
    work = jobs / "job-1"
    work.mkdir(parents=True)
    uids = JobUids(jobs, 1_900_000_000)
    old = uids.take(work)
    new = uids.take(work)  # the next attempt, before the old one is reaped
    assert old is not None and new is not None and new != old
    uids.give_back(old, work)  # the old attempt reaped late
    assert work.stat().st_uid == new
    uids.give_back(new, work)
    assert work.stat().st_uid == os.geteuid()
