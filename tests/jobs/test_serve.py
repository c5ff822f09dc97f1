"""`yippiemove serve` as a real process: killed with -9 mid-transfer, started again; CLI."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
from click.testing import CliRunner

from tests.svckit import (
    DST_PW,
    SRC_PW,
    account,
    assert_exact,
    big_mailbox,
    free_port,
    jail_pid,
    wait_gone,
    wait_progress,
    wait_status,
)
from yippiemove.cli import main
from yippiemove.jobs.supervisor import identity_dead
from yippiemove.service.db import Job

ROOT = Path(__file__).resolve().parents[2]


def _serve(data: Path, port: int, ca_file: Path, log: Path) -> subprocess.Popen[bytes]:
    env = dict(
        os.environ,
        YIPPIEMOVE_CA_FILE=str(ca_file),
        YIPPIEMOVE_PROGRESS_INTERVAL="0.2",
        YIPPIEMOVE_JOB_CONNECTIONS="1",
        YIPPIEMOVE_RESTART_DELAY="0.2",
    )
    with open(log, "ab") as out:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "yippiemove.cli",
                "serve",
                "--data-dir",
                str(data),
                "--port",
                str(port),
                "--workers",
                "1",
                "--app",
                "tests.service.stub_app:create_app",
            ],
            cwd=ROOT,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    deadline = time.monotonic() + 30
    while True:
        try:
            r = httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1)
            if r.status_code == 200:
                assert r.json()["data_dir"] == str(data)
                return proc
        except httpx.HTTPError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise AssertionError("serve did not come up:\n" + log.read_text()[-3000:])
        time.sleep(0.05)


def _children_of(pid: int) -> list[int]:
    out = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rpartition(")")[2].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            out.append(int(stat.parent.name))
    return out


def _reap(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def test_kill_9_of_the_whole_service_then_restart_resumes_exactly(
    make_service, dovecot_factory, tmp_path
):
    server = dovecot_factory(users={"src": SRC_PW, "dst": DST_PW})
    big_mailbox(server)
    # The test's own view of the same data directory (not running any jobs).
    svc = make_service(ca_file=str(server.ca_file))
    data = svc.settings.data_dir
    uid = svc.create_user("owner@example.org", "long enough pass")
    job = svc.create_transfer(uid, account(server, "src", SRC_PW), account(server, "dst", DST_PW))
    log = tmp_path / "serve.log"

    first = _serve(data, free_port(), server.ca_file, log)
    try:
        wait_progress(svc, uid, job.id, 0.15)
        pid = jail_pid(svc, job.id)
        assert pid is not None
        helpers = _children_of(first.pid)  # the zygote (job processes are its children)
        assert helpers
        os.kill(first.pid, signal.SIGKILL)  # the whole service, not its process group
        first.wait()
        wait_gone(pid, timeout=5)  # the job process died with its supervisor
        for helper in helpers:
            wait_gone(helper, timeout=5)
    finally:
        _reap(first)
    view = svc.get_transfer(uid, job.id)
    assert view.status == "running"
    assert view.progress["messages_done"] < view.progress["messages_total"]
    with svc.db.session() as s:
        assert identity_dead(s.get(Job, job.id).lease_owner)

    second = _serve(data, free_port(), server.ca_file, log)
    try:
        view = wait_status(svc, uid, job.id, timeout=120)
        assert view.status == "done", (view, log.read_text()[-3000:])
        assert view.attempts == 2 and view.error is None
        # SIGTERM: a clean shutdown.
        second.send_signal(signal.SIGTERM)
        assert second.wait(timeout=30) == 0, log.read_text()[-3000:]
    finally:
        _reap(second)
    assert_exact(server, "src", SRC_PW, "dst", DST_PW)
    report = svc.report(uid, job.id)
    assert report["totals"]["failed"] == 0
    assert report["totals"]["copied"] + report["totals"]["already_present"] == 1600
    assert "resuming it" in log.read_text()


def test_operator_cli_creates_users_and_tokens(tmp_path, make_service):
    data = tmp_path / "data"
    pw = tmp_path / "pw"
    pw.write_text("a long password\n")
    runner = CliRunner()
    r = runner.invoke(
        main,
        ["user", "create", "Ops@Example.org", "--password-file", str(pw), "--data-dir", str(data)],
    )
    assert r.exit_code == 0, r.output
    assert "created customer ops@example.org" in r.output
    r = runner.invoke(
        main,
        ["user", "create", "ops@example.org", "--password-file", str(pw), "--data-dir", str(data)],
    )
    assert r.exit_code == 2 and "exists already" in r.output
    r = runner.invoke(
        main, ["token", "create", "ops@example.org", "--name", "ci", "--data-dir", str(data)]
    )
    assert r.exit_code == 0, r.output
    token = r.stdout.strip().splitlines()[-1]
    svc = make_service()
    uid = svc.authenticate("ops@example.org", "a long password")
    assert uid is not None and svc.user_for_token(token) == uid
    assert svc.list_tokens(uid)[0]["name"] == "ci"
    r = runner.invoke(main, ["token", "create", "nobody@example.org", "--data-dir", str(data)])
    assert r.exit_code == 2 and "no customer" in r.output


def test_serve_without_the_web_app_fails_clearly(tmp_path):
    r = CliRunner().invoke(
        main,
        ["serve", "--data-dir", str(tmp_path), "--app", "yippiemove.web.no_such_module:create_app"],
    )
    assert r.exit_code == 2
    assert "the web front door (yippiemove.web.no_such_module) cannot be loaded" in r.output


def test_serve_shows_its_egress_policy_and_refuses_a_bad_network(tmp_path):
    port = free_port()
    log = tmp_path / "serve.log"
    env = dict(os.environ, YIPPIEMOVE_EGRESS_ALLOW="")
    args = [sys.executable, "-m", "yippiemove.cli", "serve", "--data-dir", str(tmp_path / "d")]
    args += ["--port", str(port), "--workers", "1", "--app", "tests.service.stub_app:create_app"]
    args += ["--egress-allow", "10.0.0.0/8", "--egress-allow", "fd00::/8"]
    args += ["--egress-deny", "10.9.0.0/16"]
    with open(log, "ab") as out:
        proc = subprocess.Popen(
            args, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    try:
        deadline = time.monotonic() + 30
        while "is running at" not in log.read_text():
            assert proc.poll() is None and time.monotonic() < deadline, log.read_text()[-3000:]
            time.sleep(0.05)
        line = next(x for x in log.read_text().splitlines() if "is running at" in x)
        assert "egress: public addresses only; allow 10.0.0.0/8,fd00::/8; deny 10.9.0.0/16" in line
    finally:
        _reap(proc)
    r = CliRunner().invoke(
        main, ["serve", "--data-dir", str(tmp_path / "e"), "--egress-allow", "10.0.0.0/33"]
    )
    assert r.exit_code != 0 and "'10.0.0.0/33' is not an address or a CIDR network" in r.output
