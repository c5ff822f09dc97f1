"""A second host for real: `yippiemove worker --database-url postgresql://... --queue-url
redis://...` in a process of its own, with a data directory of its own and the shared
keys, runs a transfer ordered through another Service on the same PostgreSQL and Redis;
the destination is exact."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

from tests.infra.fixtures import PgDatabase
from tests.infra.redis import RedisServer
from tests.svckit import DST_PW, SRC_PW, account, assert_exact, big_mailbox, wait_status
from yippiemove.service.db import Job

ROOT = Path(__file__).resolve().parents[2]


def test_a_worker_host_on_postgres_and_redis_runs_a_transfer_exactly(
    make_service, dovecot_factory, postgres: PgDatabase, redis_server: RedisServer, tmp_path
):
    server = dovecot_factory(users={"src": SRC_PW, "dst": DST_PW})
    big_mailbox(server, count=60)
    web = make_service(
        ca_file=str(server.ca_file), database_url=postgres.url, queue_url=redis_server.url
    )
    uid = web.create_user("owner@example.org", "long enough pass")
    job = web.create_transfer(uid, account(server, "src", SRC_PW), account(server, "dst", DST_PW))
    log = tmp_path / "worker.log"
    env = dict(
        os.environ,
        YIPPIEMOVE_CA_FILE=str(server.ca_file),
        YIPPIEMOVE_CREDENTIALS_KEY_FILE=str(web.settings.credentials_key_file),
        YIPPIEMOVE_SECRET_KEY_FILE=str(web.settings.secret_key_file),
        YIPPIEMOVE_PROGRESS_INTERVAL="0.2",
        YIPPIEMOVE_JOB_CONNECTIONS="1",
    )
    env.pop("YIPPIEMOVE_DATABASE_URL", None)
    argv = [sys.executable, "-m", "yippiemove.cli", "worker", "--workers", "1"]
    argv += ["--data-dir", str(tmp_path / "host2")]
    argv += ["--database-url", postgres.url, "--queue-url", redis_server.url]
    with open(log, "ab") as out:
        proc = subprocess.Popen(
            argv, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    try:
        view = wait_status(web, uid, job.id, timeout=120)
        assert view.status == "done", (view, log.read_text()[-3000:])
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0, log.read_text()[-3000:]
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert_exact(server, "src", SRC_PW, "dst", DST_PW)
    # It ran on the worker host: its job directory is there, none on the web side.
    assert (tmp_path / "host2" / "jobs" / job.id).is_dir()
    assert not web.settings.job_dir(job.id).exists()
    with web.db.read() as s:
        assert s.get(Job, job.id).status == "done"  # type: ignore[union-attr]
    assert not (tmp_path / "host2" / "control.sqlite").exists()
    assert not (tmp_path / "host2" / "queue.sqlite").exists()
