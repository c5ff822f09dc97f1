"""Admission by processor pressure (issue 18, jobs/admission.py): past the floor, a job
starts only while the machine's processors are not saturated; the others wait, queued and
shown waiting, in order; job processes run niced.

The pressure comes from a file written by the test in the format of the kernel's
``/proc/pressure/cpu`` (the one seam: the test cannot saturate this machine's processors
on demand), read by the real service, with real job processes and a real Dovecot."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.faultproxy import Fault, FaultProxy
from tests.svckit import (
    DST_PW,
    SRC_PW,
    account,
    assert_exact,
    big_mailbox,
    jail_pid,
    wait_status,
)
from tests.transfer.test_move import populate
from yippiemove.jobs import admission
from yippiemove.jobs.admission import Admission, CpuPressure, default_floor
from yippiemove.service.core import Account, Service


class PsiFile:
    """``/proc/pressure/cpu`` as the kernel gives it: its "some" total as of the moment it
    is read.  ``saturated``: the total grows as fast as time passes (a task always
    waited), else it stands still.

    A named pipe whose content a thread writes when a reader opens it, so the total is
    that of the read's moment like the kernel's.  (It was a file rewritten every 50 ms:
    when its writer thread was held up for a period on a busy machine, two readings half
    a second apart saw the same total, "no pressure", and a job was admitted while
    saturated: a clean-clone CI run after session 12.)"""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.total = 0.0
        self.saturated = False
        self._at = time.monotonic()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        os.mkfifo(path)
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()

    def _content(self) -> bytes:
        with self._lock:
            now = time.monotonic()
            if self.saturated:
                self.total += (now - self._at) * 1e6
            self._at = now
            return (
                f"some avg10=0.00 avg60=0.00 avg300=0.00 total={int(self.total)}\n"
                "full avg10=0.00 avg60=0.00 avg300=0.00 total=0\n"
            ).encode()

    def set_saturated(self, value: bool) -> None:
        self._content()  # the total up to now counts with the state it had
        self.saturated = value

    def _loop(self) -> None:
        while not self._stop.is_set():
            fd = os.open(self.path, os.O_WRONLY)  # waits for a reader
            try:
                if not self._stop.is_set():
                    os.write(fd, self._content())
            except BrokenPipeError:
                pass
            finally:
                os.close(fd)

    def close(self) -> None:
        self._stop.set()
        # Unblock the writer waiting for a reader: be that reader.
        fd = os.open(self.path, os.O_RDONLY | os.O_NONBLOCK)
        self._thread.join(timeout=5)
        os.close(fd)


@pytest.fixture
def psi(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[PsiFile]:
    f = PsiFile(tmp_path / "pressure-cpu")
    monkeypatch.setattr(admission, "PSI_PATH", f.path)
    yield f
    f.close()


class FakePressure(CpuPressure):
    def __init__(self) -> None:
        self.value: float | None = 0.0
        self.reads = 0
        self.source = "fake"

    def read(self) -> float | None:
        self.reads += 1
        return self.value


# ---------------------------------------------------------------------- units


def test_pressure_is_the_share_of_time_some_task_waited(tmp_path: Path) -> None:
    path = tmp_path / "cpu"
    clock = [100.0]

    def write(total: int) -> None:
        path.write_text(
            f"some avg10=1.00 avg60=2.00 avg300=3.00 total={total}\n"
            "full avg10=0.00 avg60=0.00 avg300=0.00 total=5\n"
        )

    write(1_000_000)
    p = CpuPressure(psi=path, clock=lambda: clock[0])
    assert p.source == "psi"
    assert p.read() is None  # the first reading is the baseline
    clock[0] += 2.0
    write(1_000_000 + 1_200_000)  # 1.2 s of 2 s: 60 %
    assert p.read() == pytest.approx(0.6)
    clock[0] += 1.0
    write(2_200_000 + 5_000_000)  # more than the time passed: capped
    assert p.read() == 1.0


def test_without_psi_the_busy_share_of_proc_stat_is_read(tmp_path: Path) -> None:
    stat = tmp_path / "stat"
    stat.write_text("cpu  100 0 100 700 100 0 0 0 0 0\ncpu0 1 2 3\n")
    p = CpuPressure(psi=tmp_path / "missing", stat=stat)
    assert p.source == "stat"
    assert p.read() is None
    # 200 more ticks: 150 busy (user, system), 50 idle.
    stat.write_text("cpu  200 0 150 750 100 0 0 0 0 0\n")
    assert p.read() == pytest.approx(0.75)


def test_unreadable_pressure_admits() -> None:
    p = CpuPressure(psi=Path("/nonexistent/psi"), stat=Path("/nonexistent/stat"))
    assert p.read() is None
    stop = threading.Event()
    adm = Admission(0.5, 1, p, period=0.0, stopping=stop)
    assert adm.enter() and adm.enter()  # nothing to go by: no one waits


def test_floor_then_pressure_then_a_quarter_more_per_period() -> None:
    clock = [0.0]
    fake = FakePressure()
    stop = threading.Event()
    adm = Admission(0.5, 4, fake, period=0.5, clock=lambda: clock[0], stopping=stop)
    fake.value = 0.9  # saturated: only the floor runs
    for _ in range(4):
        assert adm.enter()
    assert adm.running == 4
    waiter = threading.Thread(target=adm.enter)
    waiter.start()
    time.sleep(0.2)
    assert adm.running == 4 and adm.waiting == 1
    # Calm: the next measurement lets the waiter (and a quarter of 4 = 1) start.
    fake.value = 0.1
    clock[0] += 0.6
    waiter.join(timeout=5)
    assert not waiter.is_alive() and adm.running == 5
    # No new measurement within the period, no allowance left: the next one waits.
    fake.value = 0.1
    late = threading.Thread(target=adm.enter)
    late.start()
    time.sleep(0.3)
    assert adm.running == 5
    clock[0] += 0.6
    late.join(timeout=5)
    assert adm.running == 6
    # 6 running, calm: one measurement admits max(1, 6 // 4) = 1, then the next period.
    reads = fake.reads
    clock[0] += 0.6
    assert adm.enter()
    assert fake.reads == reads + 1 and adm.running == 7


def test_jobs_wait_in_order_and_a_leave_lets_the_first_in() -> None:
    fake = FakePressure()
    fake.value = 1.0
    stop = threading.Event()
    adm = Admission(0.5, 1, fake, period=0.05, stopping=stop)
    assert adm.enter()
    order: list[int] = []

    def wait(i: int) -> None:
        assert adm.enter()
        order.append(i)

    threads = []
    for i in range(5):
        t = threading.Thread(target=wait, args=(i,))
        t.start()
        threads.append(t)
        while adm.waiting < i + 1:
            time.sleep(0.005)
    for _ in range(5):
        adm.leave()  # one running job ends: the first in line starts
        deadline = time.monotonic() + 5
        while adm.running < 1 or len(order) < 5 - adm.waiting:
            assert time.monotonic() < deadline
            time.sleep(0.005)
    for t in threads:
        t.join(timeout=5)
    assert order == [0, 1, 2, 3, 4]


def test_stopping_releases_every_waiter_without_admitting() -> None:
    fake = FakePressure()
    fake.value = 1.0
    stop = threading.Event()
    adm = Admission(0.5, 1, fake, period=0.05, stopping=stop)
    assert adm.enter()
    results: list[bool] = []
    threads = [threading.Thread(target=lambda: results.append(adm.enter())) for _ in range(4)]
    for t in threads:
        t.start()
    while adm.waiting < 4:
        time.sleep(0.005)
    t0 = time.monotonic()
    stop.set()
    adm.wake_all()
    for t in threads:
        t.join(timeout=5)
    assert results == [False] * 4 and adm.waiting == 0 and adm.running == 1
    assert time.monotonic() - t0 < 1.0  # not the 2 s nap of those not first in line


def test_limit_zero_is_no_admission_control() -> None:
    fake = FakePressure()
    fake.value = 1.0
    adm = Admission(0.0, 1, fake)
    assert all(adm.enter() for _ in range(50))
    assert fake.reads == 0


def test_default_floor_is_four_per_processor() -> None:
    assert default_floor(2) == 8
    assert default_floor(None) == 4 * (os.cpu_count() or 1)


# ---------------------------------------------------------------------- the service


def test_saturated_processors_hold_jobs_queued_and_visible_until_calm(
    make_service: Callable[..., Service], dovecot_factory, psi: PsiFile
) -> None:
    """Failed on the code before admission: every job started at once (and with the
    first admission, which waited after taking the message: the messages were gone)."""
    users = {f"{side}{i}": pw for i in range(3) for side, pw in (("src", SRC_PW), ("dst", DST_PW))}
    server = dovecot_factory(users=users)
    big_mailbox(server, "src0", count=200)  # behind a slow link: runs while the test looks
    for i in (1, 2):
        populate(server, f"src{i}")
    psi.set_saturated(True)
    svc = make_service(
        ca_file=str(server.ca_file),
        job_admission_floor=1,
        job_admission_pressure=0.8,
        job_nice=7,
        job_connections=1,
    )
    svc.start(workers=3)
    uid = svc.create_user("ada@example.org", "a long password 1")
    with FaultProxy(server.port, lambda _n: [Fault.throttle(200_000)]) as slow:
        first = svc.create_transfer(
            uid,
            account(server, "src0", SRC_PW),
            Account("127.0.0.1", slow.port, "none", "dst0", DST_PW),
        )
        deadline = time.monotonic() + 30
        while jail_pid(svc, first.id) is None:
            assert time.monotonic() < deadline, svc.get_transfer(uid, first.id)
            time.sleep(0.02)
        # Job processes run niced (the setting), the service does not.
        assert os.getpriority(os.PRIO_PROCESS, jail_pid(svc, first.id)) == 7
        assert os.getpriority(os.PRIO_PROCESS, 0) == 0
        later = [
            svc.create_transfer(
                uid, account(server, f"src{i}", SRC_PW), account(server, f"dst{i}", DST_PW)
            )
            for i in (1, 2)
        ]
        time.sleep(1.5)  # a few measurements of a saturated machine: still waiting
        views = [svc.get_transfer(uid, j.id) for j in later]
        assert [v.status for v in views] == ["queued", "queued"]
        # Their messages stay in the queue (the fleet's sweep sees them; another machine
        # with idle processors may take them): no consumer took them to wait.
        waiting = svc.queue.waiting_ids()
        assert waiting is not None and {j.id for j in later} <= waiting, waiting
        assert svc.get_transfer(uid, first.id).status == "running"
        assert svc.supervisor.admission.running == 1
        assert svc.supervisor.admission.waiting == 2

        psi.set_saturated(False)  # calm: they start, the first still running
        for j in later:
            assert wait_status(svc, uid, j.id, timeout=60).status == "done"
        assert svc.get_transfer(uid, first.id).status == "running"
        svc.cancel_transfer(uid, first.id)
        assert wait_status(svc, uid, first.id, timeout=30).status == "cancelled"
    for i in (1, 2):
        assert_exact(server, f"src{i}", SRC_PW, f"dst{i}", DST_PW)
