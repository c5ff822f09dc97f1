"""The job queue interface on embedded Huey (SQLite): delivery, durability, stop."""

from __future__ import annotations

import threading
import time

import pytest

from yippiemove.jobs.queue import HueyQueue, make_queue


def _wait(pred, timeout=10.0):
    deadline = time.monotonic() + timeout
    while not pred():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def test_ids_reach_a_runner_on_worker_threads(tmp_path):
    q = HueyQueue.sqlite(tmp_path / "queue.sqlite")
    seen: list[tuple[str, str]] = []
    lock = threading.Lock()
    release = threading.Event()

    def runner(job_id: str) -> None:
        with lock:
            seen.append((job_id, threading.current_thread().name))
        release.wait(10)

    for i in range(3):
        q.enqueue(f"job-{i}")
    q.start(2, runner)
    try:
        _wait(lambda: len(seen) == 2)  # two workers: two jobs at a time
        time.sleep(0.2)
        assert len(seen) == 2
        release.set()
        _wait(lambda: len(seen) == 3)
    finally:
        q.stop()
    assert sorted(j for j, _ in seen) == ["job-0", "job-1", "job-2"]
    assert len({t for _, t in seen}) == 2
    assert threading.main_thread().name not in {t for _, t in seen}


def test_queue_is_durable_across_instances(tmp_path):
    path = tmp_path / "queue.sqlite"
    HueyQueue.sqlite(path).enqueue("survivor")  # e.g. the web process
    q = HueyQueue.sqlite(path)  # e.g. a restarted service
    assert q.pending() == 1
    got: list[str] = []
    q.start(1, got.append)
    try:
        _wait(lambda: got == ["survivor"])
    finally:
        q.stop()
    assert q.pending() == 0


def test_stop_waits_for_running_jobs_and_start_twice_is_refused(tmp_path):
    q = HueyQueue.sqlite(tmp_path / "queue.sqlite")
    finished = threading.Event()

    def runner(job_id: str) -> None:
        time.sleep(0.3)
        finished.set()

    q.start(1, runner)
    with pytest.raises(RuntimeError, match="already running"):
        q.start(1, runner)
    q.enqueue("slow")
    _wait(lambda: q.pending() == 0)
    q.stop(timeout=5)
    assert finished.is_set()
    assert not q.running


def test_make_queue(tmp_path):
    assert isinstance(make_queue("sqlite", tmp_path), HueyQueue)
    assert (tmp_path / "queue.sqlite").exists()
    with pytest.raises(ValueError, match="unknown queue_url"):
        make_queue("amqp://x", tmp_path)


def test_an_idle_worker_is_woken_at_once_by_a_local_enqueue(tmp_path):
    q = HueyQueue.sqlite(tmp_path / "queue.sqlite")
    q.poll_interval = q.max_poll_delay = 3.0  # polling alone: a job waits up to 3 s
    got: list[float] = []
    q.start(2, lambda job_id: got.append(time.monotonic()))
    try:
        time.sleep(1.0)  # both workers are asleep until t = 3 s
        t0 = time.monotonic()
        q.enqueue("a")
        q.enqueue("b")
        _wait(lambda: len(got) == 2, timeout=5)
        assert max(got) - t0 < 0.5
    finally:
        q.stop()
