"""Running a mover as a child process and measuring it (Linux, standard library only).

* wall time: from just before ``fork`` until ``wait4`` returns;
* the mover's CPU time: the ``rusage`` that ``os.wait4`` returns for the child (user +
  system seconds of the child and of any children it waited for);
* the mover's peak RSS: its ``VmHWM`` (/proc/PID/status), polled every 20 ms while it
  runs -- not ``ru_maxrss``, which Linux carries over from the forking parent (this
  harness) across fork and exec;
* the server's CPU time: Dovecot's master leads its own process group (the launcher
  starts it with ``start_new_session``), and every Dovecot process is a child of the
  master.  Summing ``utime + stime + cutime + cstime`` over the live members of that
  group (``/proc/PID/stat``) gives all CPU time the server has used so far: processes
  that exited were reaped by the master and live on in its ``cutime``/``cstime``.  The
  difference before/after a run is the server's share of that run.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "ChildResult",
    "group_cpu_seconds",
    "process_cpu_seconds",
    "run_child",
    "settle",
    "system_busy_seconds",
    "wait_for_quiet",
]

_TICK = os.sysconf("SC_CLK_TCK")


def _stat_fields(pid: str | int) -> list[bytes] | None:
    """Fields of /proc/PID/stat after the command name: [state, ppid, pgrp, ...]."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except OSError:
        return None
    return stat[stat.rfind(b")") + 2 :].split()


def _cpu_ticks(fields: list[bytes]) -> int:
    # utime, stime, cutime, cstime are fields 14-17 of stat, 11-14 after the name
    return int(fields[11]) + int(fields[12]) + int(fields[13]) + int(fields[14])


def group_cpu_seconds(pgid: int) -> float:
    """CPU seconds used so far by process group ``pgid`` (live members + reaped children)."""
    ticks = 0
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        fields = _stat_fields(entry.name)
        if fields is not None and len(fields) > 14 and int(fields[2]) == pgid:
            ticks += _cpu_ticks(fields)
    return ticks / _TICK


def system_busy_seconds() -> float:
    """CPU seconds all CPUs have spent busy since boot (/proc/stat, minus idle and iowait)."""
    with open("/proc/stat") as f:
        fields = [int(x) for x in f.readline().split()[1:]]
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)
    # guest time is already counted in user/nice
    return (sum(fields[:8]) - idle) / _TICK


def wait_for_quiet(max_wait: float, threshold: float = 0.15, window: float = 0.5) -> float:
    """Wait (at most ``max_wait`` s) until the machine's CPUs were busy less than
    ``threshold`` CPUs on average over ``window`` s, so that a run does not start in the
    middle of somebody else's work.  Returns the seconds waited."""
    start = time.monotonic()
    while True:
        b0 = system_busy_seconds()
        time.sleep(window)
        if (system_busy_seconds() - b0) / window < threshold:
            break
        if time.monotonic() - start >= max_wait:
            break
    return time.monotonic() - start


def process_cpu_seconds(pid: int) -> float:
    """CPU seconds of one live process (and its reaped children)."""
    fields = _stat_fields(pid)
    return _cpu_ticks(fields) / _TICK if fields is not None and len(fields) > 14 else 0.0


def _group_commands(pgid: int) -> list[str]:
    out = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat", "rb") as f:
                stat = f.read()
        except OSError:
            continue
        fields = stat[stat.rfind(b")") + 2 :].split()
        if len(fields) > 2 and int(fields[2]) == pgid and fields[0] != b"Z":
            out.append(stat[stat.find(b"(") + 1 : stat.rfind(b")")].decode(errors="replace"))
    return out


def settle(pgid: int, busy: Sequence[str] = ("imap",), timeout: float = 5.0) -> None:
    """Wait until no process of the group runs one of ``busy``: the IMAP sessions are over.

    (Idle imap-login processes may stay; their CPU time is counted all the same.)
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not any(c in busy for c in _group_commands(pgid)):
            return
        time.sleep(0.02)


def _vm_hwm(pid: int) -> int:
    """Peak resident set of a live process's current program (VmHWM), in bytes."""
    try:
        with open(f"/proc/{pid}/status", "rb") as f:
            for line in f:
                if line.startswith(b"VmHWM:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return 0


class GroupWatch:
    """Per-program CPU time of a process group, sampled (for a breakdown only).

    Each scan records every member's own utime+stime; a process that exits between
    two scans loses the time it used since the last one, so the breakdown can be a
    little short of the exact total from :func:`group_cpu_seconds`.
    """

    def __init__(self, pgid: int) -> None:
        self.pgid = pgid
        self.first: dict[int, int] = {}
        self.last: dict[int, tuple[str, int]] = {}
        self.scan(initial=True)

    def scan(self, initial: bool = False) -> None:
        for entry in os.scandir("/proc"):
            if not entry.name.isdigit():
                continue
            try:
                with open(f"/proc/{entry.name}/stat", "rb") as f:
                    stat = f.read()
            except OSError:
                continue
            fields = stat[stat.rfind(b")") + 2 :].split()
            if len(fields) < 15 or int(fields[2]) != self.pgid:
                continue
            pid = int(entry.name)
            comm = stat[stat.find(b"(") + 1 : stat.rfind(b")")].decode(errors="replace")
            ticks = int(fields[11]) + int(fields[12])
            if initial:
                self.first[pid] = ticks
            self.last[pid] = (comm, ticks)

    def breakdown(self) -> dict[str, float]:
        out: dict[str, float] = {}
        for pid, (comm, ticks) in self.last.items():
            used = (ticks - self.first.get(pid, 0)) / _TICK
            if used > 0:
                out[comm] = round(out.get(comm, 0.0) + used, 2)
        return dict(sorted(out.items(), key=lambda kv: -kv[1]))


@dataclass
class ChildResult:
    argv: list[str]
    exit_code: int | None  # None: killed after the timeout
    wall_s: float
    user_s: float
    sys_s: float
    peak_rss_bytes: int
    timed_out: bool
    log_tail: str
    server_breakdown: dict[str, float]

    @property
    def cpu_s(self) -> float:
        return self.user_s + self.sys_s


def _tail(path: Path, lines: int = 15) -> str:
    try:
        text = path.read_bytes()[-20_000:].decode("utf-8", "replace")
    except OSError:
        return ""
    return "\n".join(text.rstrip("\n").splitlines()[-lines:])


def run_child(
    argv: Sequence[str],
    *,
    log: Path,
    timeout: float,
    env: dict[str, str] | None = None,
    cwd: Path | None = None,
    watch_pgid: int | None = None,
) -> ChildResult:
    """Run argv (stdout+stderr to ``log``), wait at most ``timeout`` s, measure it.

    The child gets its own session, so a timeout kills it and everything it started.

    Peak RSS is the child's VmHWM, read every 20 ms while it runs: ``ru_maxrss`` from
    wait4 is no use here, because Linux carries the high-water mark of the forking
    process (this harness, 100+ MB after generating a corpus) across fork and exec.
    With ``watch_pgid`` the CPU time of that process group is broken down by program
    name (sampled every 0.1 s).
    """
    done: dict[str, object] = {}
    watch = GroupWatch(watch_pgid) if watch_pgid is not None else None
    with open(log, "wb") as out:
        start = time.perf_counter()
        proc = subprocess.Popen(
            list(argv),
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env=env,
            cwd=cwd,
            close_fds=True,
        )

    def waiter() -> None:
        _pid, status, usage = os.wait4(proc.pid, 0)
        done["end"] = time.perf_counter()
        done["status"] = status
        done["usage"] = usage

    thread = threading.Thread(target=waiter, name=f"wait4-{proc.pid}", daemon=True)
    thread.start()
    deadline = start + timeout
    peak = 0
    next_scan = 0.0
    while thread.is_alive():
        now = time.perf_counter()
        if now >= deadline:
            break
        peak = max(peak, _vm_hwm(proc.pid))
        if watch is not None and now >= next_scan:
            watch.scan()
            next_scan = now + 0.1
        thread.join(0.02)
    timed_out = thread.is_alive()
    if timed_out:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        thread.join(30)
    if watch is not None:
        watch.scan()
    status = done.get("status")
    usage = done.get("usage")
    end = done.get("end", time.perf_counter())
    assert isinstance(end, float)
    code = os.waitstatus_to_exitcode(status) if isinstance(status, int) else None
    # wait4 reaped it: keep Popen from trying again
    proc.returncode = code if code is not None else -9
    # anything the child left behind in its session goes too
    if _group_commands(proc.pid):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
    return ChildResult(
        argv=list(argv),
        exit_code=None if timed_out else code,
        wall_s=end - start,
        user_s=getattr(usage, "ru_utime", 0.0),
        sys_s=getattr(usage, "ru_stime", 0.0),
        peak_rss_bytes=peak,
        timed_out=timed_out,
        log_tail=_tail(log),
        server_breakdown=watch.breakdown() if watch is not None else {},
    )
