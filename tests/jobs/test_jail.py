"""The job process on its own: spec on stdin, progress on stdout, dies with its parent."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time

from tests.svckit import DST_PW, SRC_PW, assert_exact, pid_alive, wait_gone
from tests.transfer.test_move import populate

JAIL = [sys.executable, "-P", "-m", "yippiemove.jobs.jail"]


def test_jail_runs_a_job_from_its_stdin(dovecot_factory, tmp_path):
    server = dovecot_factory(users={"src": SRC_PW, "dst": DST_PW})
    populate(server)
    spec = {
        "job_id": "t1",
        "source": {
            "host": "127.0.0.1",
            "port": server.port,
            "security": "starttls",
            "username": "src",
            "password": SRC_PW,
        },
        "dest": {
            "host": "127.0.0.1",
            "port": server.port,
            "security": "starttls",
            "username": "dst",
            "password": DST_PW,
        },
        "folders": None,
        "ca_file": str(server.ca_file),
        "progress_interval": 0.05,
        "egress": {"allow": "127.0.0.0/8"},  # the job's own egress check: loopback allowed
    }
    work = tmp_path / "job"
    work.mkdir(mode=0o700)
    r = subprocess.run(
        [*JAIL, "--parent", str(os.getpid())],
        input=json.dumps(spec).encode() + b"\n",
        capture_output=True,
        cwd=work,
        timeout=120,
    )
    assert r.returncode == 0, r.stderr.decode()
    lines = [json.loads(x) for x in r.stdout.decode().splitlines()]
    assert lines[0]["type"] == "progress"
    result = lines[-1]
    assert result["type"] == "result" and result["status"] == "done" and result["exit"] == 0
    assert result["totals"]["copied"] == result["totals"]["source_count"] > 0
    assert any("per_folder" in x for x in lines[:-1]) or len(lines) == 2
    for secret in (SRC_PW, DST_PW):
        assert secret not in r.stdout.decode() and secret not in r.stderr.decode()
        for f in work.iterdir():
            assert secret.encode() not in f.read_bytes(), f
    report = json.loads((work / "report.json").read_text())
    assert report["status"] == "done" and report["source"].startswith("imap://src@127.0.0.1")
    assert (work / "state.sqlite").exists()
    assert_exact(server, "src", SRC_PW, "dst", DST_PW)


def test_jail_refuses_to_run_under_another_parent(tmp_path):
    r = subprocess.run(
        [*JAIL, "--parent", "1"], input=b"{}\n", capture_output=True, cwd=tmp_path, timeout=30
    )
    assert r.returncode == 2
    assert r.stdout == b""


def test_jail_dies_with_its_supervisor(tmp_path):
    """PR_SET_PDEATHSIG: a job process never outlives the process that started it."""
    # The job's stdin stays open here, so only the death signal can end the job process.
    r, w = os.pipe()
    supervisor = textwrap.dedent(
        f"""
        import os, subprocess, sys, time
        p = subprocess.Popen(
            {JAIL!r} + ["--parent", str(os.getpid())],
            stdin={r}, start_new_session=True, cwd={str(tmp_path)!r},
        )
        print(p.pid, flush=True)
        time.sleep(60)
        """
    )
    sup = subprocess.Popen(
        [sys.executable, "-c", supervisor],
        stdout=subprocess.PIPE,
        start_new_session=True,
        pass_fds=(r,),
    )
    os.close(r)
    try:
        assert sup.stdout is not None
        jail = int(sup.stdout.readline())
        # Let the jail get past its start-up (it then waits for its spec on stdin).
        deadline = time.monotonic() + 10
        while b"yippiemove.jobs.jail" not in _cmdline(jail) and time.monotonic() < deadline:
            time.sleep(0.01)
        time.sleep(0.5)
        assert pid_alive(jail)
        assert os.getsid(jail) == jail  # its own session and process group
        os.kill(sup.pid, signal.SIGKILL)
        sup.wait()
        wait_gone(jail, timeout=5)
    finally:
        os.close(w)
        if sup.poll() is None:
            sup.kill()
            sup.wait()


def _cmdline(pid: int) -> bytes:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read()
    except OSError:
        return b""
