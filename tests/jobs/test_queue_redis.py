"""The job queue on a real Redis (Huey's RedisHuey behind our JobQueue), as a fleet uses
it: ids enqueued by one process reach consumers in two other processes, each once;
delayed enqueues wait their delay; the queue URL through make_queue."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time
from pathlib import Path

from tests.infra.redis import RedisServer
from yippiemove.jobs.queue import HueyQueue, make_queue

_CONSUMER = textwrap.dedent(
    """
    import os, sys, time
    from yippiemove.jobs.queue import HueyQueue

    out = open(sys.argv[2], "a", buffering=1)
    def runner(job_id):
        out.write(f"{job_id} {os.getpid()}\\n")
        time.sleep(0.05)
    q = HueyQueue.redis(sys.argv[1])
    q.start(2, runner)
    print("started", flush=True)
    try:
        sys.stdin.read()  # until the test closes our stdin
    finally:
        q.stop(timeout=10)
    """
)


def _wait(pred, timeout: float = 30.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not pred():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def _lines(path: Path) -> list[tuple[str, str]]:
    if not path.exists():
        return []
    return [tuple(line.split()) for line in path.read_text().splitlines() if line]  # type: ignore[misc]


def test_ids_from_one_process_reach_two_consumer_processes_each_once(
    redis_server: RedisServer, tmp_path: Path
) -> None:
    log = tmp_path / "delivered"
    consumers = [
        subprocess.Popen(
            [sys.executable, "-c", _CONSUMER, redis_server.url, str(log)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    try:
        for c in consumers:
            assert c.stdout is not None and c.stdout.readline().strip() == "started"
        q = make_queue(redis_server.url, tmp_path)  # the web process's side
        assert isinstance(q, HueyQueue)
        ids = [f"job-{i:02d}" for i in range(40)]
        for job_id in ids:
            q.enqueue(job_id)
        _wait(lambda: len(_lines(log)) >= len(ids))
        time.sleep(0.3)  # nothing more comes
        got = _lines(log)
        assert sorted(j for j, _ in got) == ids  # every id, once
        assert {pid for _, pid in got} == {str(c.pid) for c in consumers}  # both worked
        assert q.pending() == 0
    finally:
        for c in consumers:
            assert c.stdin is not None
            c.stdin.close()
        for c in consumers:
            c.wait(30)
    assert [c.returncode for c in consumers] == [0, 0]


def test_a_delayed_enqueue_waits_its_delay_and_survives_a_new_queue_object(
    redis_server: RedisServer,
) -> None:
    got: list[tuple[str, float]] = []
    HueyQueue.redis(redis_server.url).enqueue("later", delay=2.0)  # e.g. a requeue
    t0 = time.monotonic()
    q = HueyQueue.redis(redis_server.url)
    q.start(1, lambda job_id: got.append((job_id, time.monotonic() - t0)))
    try:
        _wait(lambda: bool(got), timeout=15)
    finally:
        q.stop()
    ((job_id, after),) = got
    assert job_id == "later" and after >= 1.5


def test_a_redis_restart_that_keeps_its_data_keeps_the_queue(
    redis_server: RedisServer,
) -> None:
    q = HueyQueue.redis(redis_server.url)
    q.enqueue("kept")
    redis_server.restart(keep_data=True)
    assert HueyQueue.redis(redis_server.url).pending() == 1
    redis_server.restart(keep_data=False)
    assert HueyQueue.redis(redis_server.url).pending() == 0
