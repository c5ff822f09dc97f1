"""Starting job processes: exec a fresh interpreter, or fork from a preloaded zygote.

Both give a job process the same isolation (see :mod:`yippiemove.jobs.jail`): its own
session and process group, limits on open files and address space, no core dumps, death
with its parent, a private working directory, a clean environment, and its spec (with the
passwords) only on its own stdin pipe.

- ``exec`` (``Settings.job_spawn = "exec"``): ``python -P -m yippiemove.jobs.jail``, a
  new interpreter per job.  Limits are set with ``prlimit(2)`` before the job gets its
  spec; it dies with the supervisor thread that started it.  Costlier per job to start
  (see docs/performance.md, "Job process start-up").
- ``fork`` (the default): one zygote per service process (``python -P -m
  yippiemove.jobs.jail --zygote FD``), single-threaded, with the mover imported, forks each
  job.  The child sets its own session, limits and death signal (tied to the zygote,
  which dies with the service); siblings share the imported code copy-on-write.  If the
  zygote cannot be started, jobs are exec'd instead.

The supervisor sees a :class:`JailProcess` either way.
"""

from __future__ import annotations

import abc
import contextlib
import json
import logging
import os
import resource
import signal
import socket
import subprocess
import sys
import threading
from pathlib import Path
from typing import IO, Any

from .descriptors import job_open_files
from .ports import SupervisorConfig
from .privilege import JobUids

log = logging.getLogger("yippiemove.launch")

__all__ = [
    "ExecLauncher",
    "JailProcess",
    "Launcher",
    "ZygoteLauncher",
    "jail_env",
    "make_launcher",
    "set_limits",
]

JAIL_MODULE = [sys.executable, "-P", "-m", "yippiemove.jobs.jail"]


def jail_env() -> dict[str, str]:
    """A clean environment: nothing of the service's (no keys, no SMTP password)."""
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "LANG": "C.UTF-8",
        "MALLOC_ARENA_MAX": "2",  # a tight address-space limit and glibc's 64 MB arenas
        "PYTHONUNBUFFERED": "1",
        "PYTHONDONTWRITEBYTECODE": "1",
    }
    if os.environ.get("PYTHONPATH"):
        env["PYTHONPATH"] = os.environ["PYTHONPATH"]
    return env


def job_nice(nice: int) -> int:
    """The job processes' nice value: within 0-19, never below this process's (an
    unprivileged process may not lower it; the jobs never run ahead of the service)."""
    return max(0, min(19, nice), os.getpriority(os.PRIO_PROCESS, 0))


def set_limits(pid: int, *, max_open_files: int, max_memory: int | None) -> None:
    """A child's jail limits, set from outside (``prlimit(2)``) before it is given work:
    no core dumps, ``max_open_files`` files, ``max_memory`` bytes of address space (0 or
    None: no limit).  Used for exec'd jobs and for account checks (service/checks.py)."""
    resource.prlimit(pid, resource.RLIMIT_CORE, (0, 0))
    nofile = job_open_files(max_open_files)
    resource.prlimit(pid, resource.RLIMIT_NOFILE, (nofile, nofile))
    if max_memory:
        resource.prlimit(pid, resource.RLIMIT_AS, (max_memory, max_memory))


def _killpg(pgid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


class JailProcess(abc.ABC):
    """A running job process, as the supervisor sees it."""

    pid: int
    stdin: IO[bytes]
    stdout_fd: int
    #: CPU seconds (user + system) the process used, known once it is reaped.
    cpu: float = 0.0

    @abc.abstractmethod
    def exited(self) -> bool:
        """Whether the process has ended (its group id still reserved until reaped)."""

    @abc.abstractmethod
    def reap(self) -> int:
        """SIGKILL what is left of the group, wait for the process: its return code
        (negative: killed by that signal)."""

    def signal_group(self, sig: int) -> None:
        """Signal the job's process group (only while it has not been reaped)."""
        if not self._reaped:
            _killpg(self.pid, sig)

    _reaped = False
    #: The job's own user id (jobs/privilege.py), given back once it is reaped.
    _uid: int | None = None
    _uids: JobUids | None = None
    _workdir: Path | None = None

    def _give_back_uid(self) -> None:
        if self._uids is not None and self._workdir is not None:
            uids, self._uids = self._uids, None
            uids.give_back(self._uid, self._workdir)

    def _own(self, uids: JobUids, uid: int | None, workdir: Path) -> None:
        self._uids, self._uid, self._workdir = uids, uid, workdir


class Launcher(abc.ABC):
    #: User ids of running jobs (jobs/privilege.py); shared by a launcher and its fallback.
    uids: JobUids

    @abc.abstractmethod
    def spawn(self, workdir: Path) -> JailProcess:
        """Start a job process in ``workdir``; it waits for its spec on stdin."""

    def close(self) -> None:  # noqa: B027 - most launchers have nothing to stop
        """Stop helper processes (running job processes die with them)."""


# ---------------------------------------------------------------------- exec


class _ExecJail(JailProcess):
    def __init__(self, proc: subprocess.Popen[bytes]) -> None:
        self.proc = proc
        self.pid = proc.pid
        assert proc.stdin is not None and proc.stdout is not None
        self.stdin = proc.stdin
        self.stdout_fd = proc.stdout.fileno()

    def exited(self) -> bool:
        if self._reaped:
            return True
        try:
            info = os.waitid(os.P_PID, self.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
        except ChildProcessError:
            return True
        return info is not None

    def reap(self) -> int:
        if not self._reaped:
            # The leader, a zombie until waited for, still reserves the group id.
            _killpg(self.pid, signal.SIGKILL)
            _, status, usage = os.wait4(self.pid, 0)
            self.proc.returncode = os.waitstatus_to_exitcode(status)
            self.cpu = usage.ru_utime + usage.ru_stime
            self._reaped = True
            assert self.proc.stdout is not None
            self.proc.stdout.close()
            self._give_back_uid()
        assert self.proc.returncode is not None
        return self.proc.returncode


class ExecLauncher(Launcher):
    """A new interpreter per job (``python -P -m yippiemove.jobs.jail``)."""

    def __init__(self, settings: SupervisorConfig, uids: JobUids | None = None) -> None:
        self.settings = settings
        self.uids = uids or JobUids(settings.jobs_dir, settings.job_uid_base)

    def spawn(self, workdir: Path) -> JailProcess:
        uid = self.uids.take(workdir)
        try:
            jail = self._spawn(workdir, uid)
        except BaseException:
            self.uids.give_back(uid, workdir)
            raise
        jail._own(self.uids, uid, workdir)
        return jail

    def _spawn(self, workdir: Path, uid: int | None) -> JailProcess:
        s = self.settings
        logf = open(workdir / "job.log", "ab")  # handed to the child as its stderr
        os.chmod(workdir / "job.log", 0o600)
        drop = [] if uid is None else ["--uid", str(uid)]
        try:
            proc = subprocess.Popen(
                [*JAIL_MODULE, "--parent", str(os.getpid()), *drop],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=logf,
                cwd=workdir,
                env=jail_env(),
                start_new_session=True,
                close_fds=True,
            )
        finally:
            logf.close()
        jail = _ExecJail(proc)
        try:
            # Limits before the job gets any work (it waits for its spec on stdin).
            set_limits(proc.pid, max_open_files=s.job_max_open_files, max_memory=s.job_max_memory)
            if job_nice(s.job_nice) > 0:  # one thread yet: it waits for its spec on stdin
                os.setpriority(os.PRIO_PROCESS, proc.pid, job_nice(s.job_nice))
        except BaseException:
            jail.reap()
            raise
        return jail


# ---------------------------------------------------------------------- fork (zygote)


class _ForkedJail(JailProcess):
    def __init__(self, zygote: _Zygote, pid: int, stdin: IO[bytes], stdout_fd: int) -> None:
        self.zygote = zygote
        self.pid = pid
        self.stdin = stdin
        self.stdout_fd = stdout_fd

    def exited(self) -> bool:
        return self._reaped or self.zygote.returncode(self.pid) is not None

    def reap(self) -> int:
        # The zygote SIGKILLs the group before it reaps; we only wait for its word.
        if not self._reaped:
            self._rc, self.cpu = self.zygote.wait(self.pid)
            self._reaped = True
            os.close(self.stdout_fd)
            self._give_back_uid()
        return self._rc

    _rc = 0

    def signal_group(self, sig: int) -> None:
        # Once the zygote has reaped it, the group id may belong to someone else.
        if not self.exited():
            _killpg(self.pid, sig)


class _Zygote:
    """One zygote process and its control socket; a thread reads its messages."""

    def __init__(self, settings: SupervisorConfig) -> None:
        self.settings = settings
        self.ctl, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        self._cond = threading.Condition()
        self._replies: dict[str, dict[str, Any]] = {}
        self._exits: dict[int, tuple[int, float]] = {}
        self._children: set[int] = set()
        self._send_lock = threading.Lock()
        self._token = 0
        self.alive = True
        self.proc: subprocess.Popen[bytes] | None = None
        started = threading.Event()
        error: list[BaseException] = []

        def keeper() -> None:
            # The zygote's death signal is tied to the thread that forked it: this one,
            # which lives exactly as long as the zygote.
            try:
                log_fd = os.open(
                    settings.jobs_dir / "zygote.log", os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600
                )
                logf = os.fdopen(log_fd, "ab")
                try:
                    self.proc = subprocess.Popen(
                        [
                            *JAIL_MODULE,
                            "--parent",
                            str(os.getpid()),
                            "--zygote",
                            str(theirs.fileno()),
                        ],
                        stdin=subprocess.DEVNULL,
                        stdout=subprocess.DEVNULL,
                        stderr=logf,
                        cwd=settings.jobs_dir,
                        env=jail_env(),
                        start_new_session=True,
                        pass_fds=(theirs.fileno(),),
                    )
                finally:
                    logf.close()
                    theirs.close()
            except BaseException as exc:
                error.append(exc)
                started.set()
                return
            started.set()
            self._read()

        self._thread = threading.Thread(target=keeper, name="yippiemove-zygote", daemon=True)
        self._thread.start()
        started.wait()
        if error:
            raise error[0]

    def _read(self) -> None:
        try:
            while True:
                try:
                    data = self.ctl.recv(1 << 16)
                except OSError:
                    data = b""
                if not data:
                    break
                msg = json.loads(data)
                with self._cond:
                    if msg.get("op") == "exit":
                        self._exits[int(msg["pid"])] = (
                            int(msg["returncode"]),
                            float(msg.get("cpu", 0.0)),
                        )
                        self._children.discard(int(msg["pid"]))
                    else:
                        self._replies[str(msg.get("token"))] = msg
                    self._cond.notify_all()
        finally:
            with self._cond:
                self.alive = False
                # The zygote is gone, and its children with it (their death signal).
                for pid in self._children:
                    _killpg(pid, signal.SIGKILL)
                    self._exits.setdefault(pid, (-signal.SIGKILL, 0.0))
                self._children.clear()
                self._cond.notify_all()
            if self.proc is not None:
                with contextlib.suppress(Exception):
                    self.proc.kill()
                self.proc.wait()
            log.warning("the zygote has ended")

    def spawn(self, workdir: Path, uid: int | None = None) -> JailProcess:
        s = self.settings
        in_r, in_w = os.pipe()
        out_r, out_w = os.pipe()
        err = os.open(workdir / "job.log", os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            with self._send_lock:
                self._token += 1
                token = str(self._token)
                request = {
                    "op": "spawn",
                    "token": token,
                    "cwd": str(workdir),
                    "nofile": s.job_max_open_files,
                    "memory": s.job_max_memory,
                    "nice": job_nice(s.job_nice),
                    "uid": uid,
                }
                socket.send_fds(self.ctl, [json.dumps(request).encode()], [in_r, out_w, err])
            with self._cond:
                if not self._cond.wait_for(
                    lambda: token in self._replies or not self.alive, timeout=30
                ):
                    raise OSError("the zygote did not answer")
                reply = self._replies.pop(token, None)
                if reply is None:
                    raise OSError("the zygote has ended")
                if reply.get("op") != "spawned":
                    code = reply.get("errno")
                    why = f"the zygote could not fork: {reply.get('error')}"
                    raise OSError(code, why) if isinstance(code, int) else OSError(why)
                pid = int(reply["pid"])
                if pid not in self._exits:
                    self._children.add(pid)
        except BaseException:
            os.close(in_w)
            os.close(out_r)
            raise
        finally:
            for fd in (in_r, out_w, err):
                os.close(fd)
        return _ForkedJail(self, pid, os.fdopen(in_w, "wb"), out_r)

    def returncode(self, pid: int) -> int | None:
        with self._cond:
            ended = self._exits.get(pid)
        return ended[0] if ended is not None else None

    def wait(self, pid: int) -> tuple[int, float]:
        """(return code, CPU seconds) of a child, once the zygote has reaped it."""
        with self._cond:
            self._cond.wait_for(lambda: pid in self._exits)
            return self._exits.pop(pid)

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.ctl.shutdown(socket.SHUT_RDWR)
        self._thread.join(timeout=10)
        self.ctl.close()


class ZygoteLauncher(Launcher):
    """Fork job processes from a preloaded zygote; exec them if it cannot be had."""

    def __init__(self, settings: SupervisorConfig) -> None:
        self.settings = settings
        self._zygote: _Zygote | None = None
        self._lock = threading.Lock()
        self.uids = JobUids(settings.jobs_dir, settings.job_uid_base)
        self._fallback = ExecLauncher(settings, self.uids)

    def _get(self) -> _Zygote | None:
        with self._lock:
            if self._zygote is None or not self._zygote.alive:
                try:
                    self._zygote = _Zygote(self.settings)
                except OSError as exc:
                    log.error("cannot start the zygote (%s); job processes are exec'd", exc)
                    self._zygote = None
            return self._zygote

    def spawn(self, workdir: Path) -> JailProcess:
        zygote = self._get()
        if zygote is not None:
            uid = self.uids.take(workdir)
            try:
                jail = zygote.spawn(workdir, uid)
            except OSError as exc:
                self.uids.give_back(uid, workdir)
                log.error("the zygote failed (%s); this job process is exec'd", exc)
            except BaseException:
                self.uids.give_back(uid, workdir)
                raise
            else:
                jail._own(self.uids, uid, workdir)
                return jail
        return self._fallback.spawn(workdir)

    @property
    def zygote_pid(self) -> int | None:
        z = self._zygote
        return z.proc.pid if z is not None and z.alive and z.proc is not None else None

    def close(self) -> None:
        with self._lock:
            zygote, self._zygote = self._zygote, None
        if zygote is not None:
            zygote.close()


def make_launcher(settings: SupervisorConfig) -> Launcher:
    if settings.job_spawn == "exec":
        return ExecLauncher(settings)
    if settings.job_spawn == "fork":
        return ZygoteLauncher(settings)
    raise ValueError(f"job_spawn must be 'fork' or 'exec', not {settings.job_spawn!r}")
