"""The job process ("jail"): one transfer, alone in its own OS process.

Started by :mod:`yippiemove.jobs.launch` for the supervisor, either forked from the
zygote (``python -P -m yippiemove.jobs.jail --zygote FD``, see below; the default) or as
``python -P -m yippiemove.jobs.jail --parent PID``: in the job's private working
directory (mode 0700), in a new session (its own process group), with the job's limits
(open files, address space, no core dumps) set before it reads its spec, and killed when
its parent dies.  Why a process per job: a crash, a hang or a memory blow-up in one
transfer must never touch another transfer or the service.

Protocol
--------
- **stdin**: one JSON object (the job's spec, with the two passwords), then EOF -- or,
  for a fenced job (the spec's ``fence``), lease lines until the supervisor closes it
  (jobs/fence.py): the job writes to the destination only within its lease, else it
  stops with the result ``lease_lost``.
  Credentials never travel in argv or the environment, which other local users can
  read (``/proc/PID/cmdline``) or which leak into child processes and crash reports.
- **stdout**: JSON lines, no secrets.  ``{"type": "progress", ...}`` every
  ``progress_interval`` seconds (also a heartbeat: the supervisor kills a job that
  stays silent), and finally ``{"type": "result", "status", "exit", "error",
  "transient", "totals", "progress"}``.
- **stderr**: the mover's log (``job.log`` in the working directory).
- **files**: ``state.sqlite`` (the mover's per-job state: re-runs and resumptions are
  exact and cheap) and ``report.json`` (same shape as ``yippiemove move --report``).
- **exit status**: as ``yippiemove move``: 0 everything verified, 1 some messages failed,
  2 could not start or was cut short (SIGTERM = cancel: the run stops cleanly, the state
  is flushed and the report written).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ctypes
import dataclasses
import errno
import gc
import json
import logging
import os
import random
import resource
import select
import signal
import socket
import sys
import time
import warnings
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

from ..accounts import make_endpoint, pin_endpoint, ssl_context
from ..imap.errors import ConsentRevoked, ImapError
from ..oauth import OAuthConfig
from ..policy.egress import EgressPolicy, EgressRefused
from ..policy.failures import kind_of, side_of
from ..transfer.engine import Mover
from ..transfer.model import Endpoint, Progress, TokenSource
from ..transfer.report import Exit, build_report, exit_code, outcome_of, write_report
from ..transfer.run import Transfer, make_options, prepare, worker_counts
from ..transfer.state import State, StateError
from .descriptors import job_open_files
from .fence import LeaseGate, LeaseLost, LeaseWatchdog, lost_exit, read_first_line
from .privilege import drop_privileges
from .progress import progress_line
from .spec import JOB_RETRIES, JobSpec

log = logging.getLogger("yippiemove.jail")

PR_SET_PDEATHSIG = 1

__all__ = ["JOB_RETRIES", "main", "make_endpoint", "progress_line", "run_job"]


def _die_with_parent(parent: int) -> None:
    """SIGKILL us when the supervisor (thread) that started us dies: no orphan jobs.

    Set here rather than in a ``preexec_fn``: the service is multi-threaded, and Python
    code between fork and exec can deadlock there.  The parent check closes the window
    in which the supervisor died before the prctl.
    """
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_PDEATHSIG) failed")
    if os.getppid() != parent:
        os._exit(Exit.ABORTED)


#: True while :func:`_emit` writes (a line may be half out if the lease watchdog fires).
_emitting = False


def _emit(obj: dict[str, Any]) -> None:
    global _emitting
    _emitting = True
    sys.stdout.write(json.dumps(obj, separators=(",", ":")) + "\n")
    sys.stdout.flush()
    _emitting = False


class _OutOfMemory(MemoryError):
    """The job hit its memory limit somewhere asyncio caught it (a protocol callback)."""


async def _run(
    mover: Any,
    interval: float,
    gate: LeaseGate | None = None,
    watchdog: LeaseWatchdog | None = None,
) -> None:
    """Run the mover; print progress meanwhile; SIGTERM cancels it cleanly.

    A MemoryError in a transport callback reaches asyncio, which closes the connection:
    the mover would see a dropped connection and retry in vain.  The loop's exception
    handler spots it and stops the job at once instead.
    """
    loop = asyncio.get_running_loop()
    task = asyncio.ensure_future(mover.run())
    out_of_memory = False

    def on_error(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        nonlocal out_of_memory
        if isinstance(context.get("exception"), MemoryError):
            out_of_memory = True
            task.cancel()
            return
        loop.default_exception_handler(context)

    loop.set_exception_handler(on_error)
    loop.add_signal_handler(signal.SIGTERM, task.cancel)
    if gate is not None:
        gate.attach(0)
        if watchdog is not None:
            watchdog.arm()  # from here on a lost lease ends the process (jobs/fence.py)
    try:
        while not task.done():
            _emit(progress_line(mover))
            every = gate.progress_every if gate is not None else None
            await asyncio.wait({task}, timeout=every or interval)
        try:
            await task
        except asyncio.CancelledError:
            if out_of_memory:
                raise _OutOfMemory from None
            raise
    finally:
        if gate is not None:
            gate.detach(0)
        loop.remove_signal_handler(signal.SIGTERM)
        # The final counters, folder by folder (unfinished ones: "interrupted").
        _emit(progress_line(mover, ended=True))


def connection_options(opts: dict[str, Any]) -> dict[str, int]:
    """Worker counts for a job's Options: the operator's count (``job_connections``) for
    near and far servers alike, or none given: automatic (2, more to far servers)."""
    n = opts.get("connections")
    return worker_counts(None if n is None else int(n))


#: The sides ("source", "dest") whose OAuth2 provider refused a token (ConsentRevoked):
#: the result line names them (``"reauth"``) and the service asks the customer to sign
#: in again there (error code ``reauth``; docs/service.md).
_reauth_sides: list[str] = []


class _ConsentWatch:
    """A side's TokenSource that notes a ConsentRevoked (and lets it through)."""

    def __init__(self, inner: TokenSource, side: str) -> None:
        self._inner = inner
        self._side = side

    def __repr__(self) -> str:
        return f"_ConsentWatch({self._side})"

    async def access_token(self, *, refresh: bool = False) -> str:
        try:
            return await self._inner.access_token(refresh=refresh)
        except ConsentRevoked:
            if self._side not in _reauth_sides:
                _reauth_sides.append(self._side)
            raise


def _watch_consent(ep: Endpoint, side: str) -> Endpoint:
    if ep.oauth is None:
        return ep
    return dataclasses.replace(ep, oauth=_ConsentWatch(ep.oauth, side))


def _with_reauth(result: dict[str, Any]) -> dict[str, Any]:
    """The result line, with the sides to sign in again to when the run did not end."""
    if _reauth_sides and result.get("status") != "done":
        result["reauth"] = list(_reauth_sides)
        result["transient"] = False
    return result


def _report_grant(side: str) -> Callable[[dict[str, Any]], None]:
    """``on_rotate`` of a side's token source: the provider handed out a new refresh
    token; its line goes to the supervisor (only to it: stdout is its pipe), which
    stores it encrypted with the job's credentials."""

    def report(grant: dict[str, Any]) -> None:
        _emit({"type": "grant", "side": side, "grant": {"refresh_token": grant["refresh_token"]}})

    return report


def _transfer_from_spec(job: JobSpec) -> tuple[Transfer, float]:
    """The spec's accounts and options as a Transfer, and the progress interval."""
    ctx = ssl_context(job.ca_file)
    oauth = OAuthConfig.from_dict(job.oauth_config) if job.oauth_config else None
    source = make_endpoint(
        job.source.as_dict(),
        ctx,
        job.allow_insecure_hosts,
        oauth_config=oauth,
        on_rotate=_report_grant("source"),
    )
    dest = make_endpoint(
        job.dest.as_dict(),
        ctx,
        job.allow_insecure_hosts,
        oauth_config=oauth,
        on_rotate=_report_grant("dest"),
    )
    source, dest = _watch_consent(source, "source"), _watch_consent(dest, "dest")
    # The egress policy, enforced here too (a DNS answer may have changed since the
    # order was checked): resolve once, check, connect only to that address.
    egress = EgressPolicy.from_settings(job.egress_allow, job.egress_deny, job.egress_own)
    source, dest = pin_endpoint(source, egress), pin_endpoint(dest, egress)
    chosen = job.folders  # parsed and checked once, by JobSpec
    options = make_options(
        include=chosen.include if chosen else (),
        exclude=chosen.exclude if chosen else (),
        rules=chosen.rules if chosen else None,
        filters=chosen.filters if chosen else None,
        connections=job.connections,
        retries=job.retries,
        idle_timeout=job.idle_timeout,
        connect_timeout=job.connect_timeout,
    )
    # Provider presets (policy/providers.py), found by host as `yippiemove move` does for
    # an imap:// URL: connection cap and the destination's size limit.
    return prepare(source, dest, options), job.progress_interval


def run_job(spec: JobSpec | dict[str, Any], workdir: Path) -> tuple[int, dict[str, Any]]:
    """Run one transfer as the spec says (a JobSpec or its JSON dict); returns (exit
    status, result line).  A dict's passwords are taken out of it."""
    job = spec if isinstance(spec, JobSpec) else JobSpec.from_dict(spec)
    if isinstance(spec, dict):
        for side in ("source", "dest"):
            spec[side].pop("password", None)
            spec[side].pop("oauth", None)
        spec.pop("oauth_config", None)
    try:
        transfer, interval = _transfer_from_spec(job)
    except (EgressRefused, ImapError) as exc:  # refused by the egress policy, or no DNS
        log.error("job refused before connecting: %s", exc)
        transient = isinstance(exc, ImapError) and exc.transient
        return Exit.ABORTED, {
            "type": "result",
            "status": "aborted",
            "exit": int(Exit.ABORTED),
            "error": str(exc),
            "transient": transient,
            "failure": {"kind": kind_of(exc), "side": side_of(exc)},
        }
    del job
    code, result = run_transfer(transfer, workdir, interval)
    return code, _with_reauth(result)


def _run_to_end(main: Coroutine[Any, Any, None]) -> None:
    """``asyncio.run(main)``, but its end cannot turn "out of memory" into another error:
    near the memory limit (the big literal's pieces are still referenced while the loop
    closes) the default executor's shutdown cannot start its thread (RuntimeError);
    its threads are idle and end with the process."""
    loop = asyncio.new_event_loop()
    try:
        loop.run_until_complete(main)
    finally:
        try:
            pending = asyncio.all_tasks(loop)
            for task in pending:
                task.cancel()
            if pending:
                loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
            loop.run_until_complete(loop.shutdown_asyncgens())
            with contextlib.suppress(RuntimeError):
                loop.run_until_complete(loop.shutdown_default_executor())
        finally:
            loop.close()


def _lease_lost(exc: BaseException) -> LeaseLost | None:
    """The LeaseLost that ended the run, also when a task group wrapped it."""
    seen: set[int] = set()
    todo: list[BaseException | None] = [exc]
    while todo:
        e = todo.pop()
        if e is None or id(e) in seen:
            continue
        seen.add(id(e))
        if isinstance(e, LeaseLost):
            return e
        if isinstance(e, BaseExceptionGroup):
            todo.extend(e.exceptions)
        todo.extend((e.__cause__, e.__context__))
    return None


def run_transfer(
    transfer: Transfer,
    workdir: Path,
    interval: float,
    gate: LeaseGate | None = None,
    watchdog: LeaseWatchdog | None = None,
) -> tuple[int, dict[str, Any]]:
    """Run the transfer with its state and report in ``workdir``, progress lines every
    ``interval`` seconds; returns (exit status, result line).  ``gate``: the fence of a
    service job (jobs/fence.py); a lost lease ends the run as ``lease_lost``.
    ``watchdog``: armed once the gate reads lease lines (only in a job process: it ends
    the process)."""
    for note in transfer.notes:
        log.info("%s", note)
    started = time.time()
    status, error, transient = "interrupted", None, False
    #: What kind of stop, and on which account (policy/failures.py: the customer's words).
    failure: dict[str, Any] | None = None
    lost: LeaseLost | None = None
    state: State | None = None
    if gate is not None:
        transfer.options.write_gate = gate
    mover: Mover = transfer.mover(state=None, progress=Progress(), on_event=log.info)
    try:
        state = transfer.open_state(workdir / "state.sqlite")
        mover.state = state
        _run_to_end(_run(mover, interval, gate, watchdog))
        status = "done"
    except BaseException as exc:
        lost = _lease_lost(exc) if gate is not None else None
        if lost is not None:
            log.error("%s", lost)
            status, error, transient = "aborted", str(lost), True
        else:
            outcome = outcome_of(exc, job=True)
            if outcome is None:
                raise
            if outcome.bug:
                log.exception("internal error")
            status, error, transient = outcome.status, outcome.error, outcome.transient
            failure = {"kind": kind_of(exc), "side": side_of(exc)}
    finally:
        if state is not None:
            try:
                state.close()
            except StateError as exc:
                error = error or _error_text(exc)
    report = build_report(mover, transfer.source.label, transfer.dest.label, started, status, error)
    try:
        write_report(workdir / "report.json", report)
    except OSError as exc:  # a full disk: the result line below still says what happened
        log.error("cannot write report.json: %s", exc.strerror)
        for stale in ("report.json.tmp", "report.json"):  # not an older run's report
            with contextlib.suppress(OSError):
                (workdir / stale).unlink()
    code = int(exit_code(report))
    result = {
        "type": "result",
        "status": report["status"],
        "exit": code,
        "error": error,
        "transient": transient,
        "totals": report["totals"],
        "progress": report["progress"],
    }
    if failure is not None and status != "cancelled":
        result["failure"] = failure
    if lost is not None:
        # Not an error of the customer's servers: the supervisor knows what to do.
        result["lease_lost"] = True
    return code, result


def _error_text(exc: StateError) -> str:
    outcome = outcome_of(exc, job=True)
    assert outcome is not None  # a StateError always has one
    return outcome.error


def _lease_lost_exit(job_id: str) -> None:
    """The lease watchdog fired (jobs/fence.py): the lease-lost result line, if stdout
    takes it, then exit at once -- the destination sockets are reset, their unsent bytes
    dropped; the state database keeps what was committed (WAL, as after a kill)."""
    error = (
        "the job's lease expired without a renewal (another worker host may run it "
        "now); the job process stopped at once, its unsent writes dropped"
    )
    result = {
        "type": "result",
        "status": "aborted",
        "exit": int(Exit.ABORTED),
        "error": error,
        "transient": True,
        "lease_lost": True,
    }
    note = time.strftime("%Y-%m-%d %H:%M:%S") + f" job {job_id}: {error}\n"
    line = json.dumps(result, separators=(",", ":")).encode()
    lost_exit(line, Exit.ABORTED, note.encode(), mid_line=_emitting)


def _job_main(parent: int, uid: int | None = None) -> int:
    """One job, in this process: spec from stdin, progress and result on stdout.

    With ``uid``: the spec is read and TLS set up (a CA file root alone may read) as the
    service's user, then the process drops to ``uid`` for good (jobs/privilege.py)
    before it connects to anything or opens its state."""
    os.umask(0o077)
    logging.basicConfig(
        level=logging.INFO,
        format="%(asctime)s %(message)s",
        datefmt="%Y-%m-%d %H:%M:%S",
        stream=sys.stderr,
        force=True,
    )
    # Read without a buffered reader: lease lines may follow the spec (jobs/fence.py).
    line, rest = read_first_line(0)
    if not line:
        log.error("no job spec on stdin")
        return Exit.ABORTED
    spec = JobSpec.from_json(line)
    del line
    gate: LeaseGate | None = None
    watchdog: LeaseWatchdog | None = None
    job_id = spec.job_id
    if spec.fenced:
        gate = LeaseGate(spec.lease_wait)
        gate.feed(rest)
        watchdog = LeaseWatchdog(gate, lambda: _lease_lost_exit(job_id))
    else:
        sys.stdin.close()
    log.info("job %s starting in %s (pid %d)", job_id, os.getcwd(), os.getpid())
    transfer, interval = _transfer_from_spec(spec)
    del spec
    if uid is not None:
        if transfer.source.oauth is not None or transfer.dest.oauth is not None:
            warm_oauth()  # an exec'd job (the zygote's children have it already)
        drop_privileges(uid)
        _die_with_parent(parent)  # a change of credentials clears the death signal
        log.info("job %s runs as uid %d", job_id, uid)
    code, result = run_transfer(transfer, Path.cwd(), interval, gate, watchdog)
    if watchdog is not None:
        watchdog.stop()
    _emit(_with_reauth(result))
    log.info("job %s ended: %s (exit %d)", job_id, result["status"], code)
    return code


# ---------------------------------------------------------------------- the zygote
#
# Starting a job process costs CPU and memory (interpreter, asyncio, ssl, the IMAP stack;
# figures: docs/performance.md, "Job process start-up"): little for a big mailbox, most of
# the work for a small one.  The zygote pays it once: a single-threaded process that has
# imported everything and forks one child per job.  A child gets exactly what an exec'd
# job process gets -- its own session, limits, death signal, private directory, clean
# environment, its spec on its own stdin -- and shares the imported code with its siblings
# (copy-on-write).
#
# Protocol on the control socket (SOCK_SEQPACKET, ``--zygote FD``, JSON per message):
#   supervisor -> zygote: {"op": "spawn", "token", "cwd", "nofile", "memory"} with the
#                         job's stdin, stdout and stderr as SCM_RIGHTS fds;
#   zygote -> supervisor: {"op": "spawned", "token", "pid"} or {"op": "error", "token",
#                         "error"}; later {"op": "exit", "pid", "returncode", "cpu"} once the
#                         child ended, its process group was SIGKILLed and it was reaped.


def _preload() -> None:
    """Import what a job needs, so that forked children start ready.

    Everything a job runs is imported at the top of this module, so this only checks
    that it is there: keep it that way (an import hidden in a function would be paid by
    every forked job, and would not be shared copy-on-write)."""
    from .. import accounts  # noqa: F401
    from ..transfer import engine, report, run, state  # noqa: F401

    warm_oauth()


_oauth_warm = False


def warm_oauth() -> None:
    """Make one OAuth2 token request of each kind (refresh, service account) to a
    one-shot server on loopback, here, before the job drops its privileges.

    Renewing a token mid-transfer imports much that no module imports at its top (httpx
    loads httpcore, anyio's backend and certifi on its first connection; authlib its JWT
    code on its first assertion); a job process that runs under a user id of its own may
    not read the interpreter's files any more (a Python under /root): those imports would
    fail in the middle of a transfer.  Done once per process (the zygote: once for all
    its children); a failure is logged, never raised."""
    global _oauth_warm
    if _oauth_warm:
        return
    _oauth_warm = True
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # authlib's deprecation notes, not the job's
            _run_to_end(_warm_oauth())
    except Exception as exc:  # pragma: no cover - logged for the operator
        log.warning("OAuth2 warm-up failed (%s): a token renewal may fail later", exc)


async def _warm_oauth() -> None:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    from ..oauth import GrantTokenSource, OAuthConfig, OAuthProvider

    body = b'{"access_token":"warm","token_type":"Bearer","expires_in":3600}'

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        length = 0
        for line in head.split(b"\r\n"):
            if line.lower().startswith(b"content-length:"):
                length = int(line.split(b":", 1)[1])
        await reader.readexactly(length)
        writer.write(
            b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nConnection: close\r\n"
            + b"Content-Length: %d\r\n\r\n" % len(body)
            + body
        )
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(answer, "127.0.0.1", 0)
    try:
        url = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}/token"
        provider = OAuthProvider(
            key="warm", name="warm", authorize_url=url, token_url=url, client_id="warm"
        )
        config = OAuthConfig({"warm": provider})
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        pem = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ).decode()
        for grant in (
            {"kind": "refresh", "provider": "warm", "refresh_token": "warm"},
            {
                "kind": "service_account",
                "provider": "warm",
                "key": {"client_email": "warm@warm.invalid", "private_key": pem, "token_uri": url},
                "subject": "warm@warm.invalid",
            },
        ):
            await asyncio.wait_for(GrantTokenSource(grant, config).access_token(), 10)
    finally:
        server.close()
        await server.wait_closed()


def _zygote_child(fds: list[int], request: dict[str, Any], zygote: int) -> None:
    """In the forked child: become an isolated job process, run the job, exit."""
    code = Exit.ABORTED
    try:
        os.setsid()
        for target, fd in enumerate(fds):
            os.dup2(fd, target)
        os.closerange(3, 1 << 16)
        os.chdir(request["cwd"])
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
        nofile = job_open_files(int(request["nofile"]))
        resource.setrlimit(resource.RLIMIT_NOFILE, (nofile, nofile))
        if request.get("memory"):
            mem = int(request["memory"])
            resource.setrlimit(resource.RLIMIT_AS, (mem, mem))
        if request.get("nice"):  # before any thread: Linux keeps a nice value per thread
            os.setpriority(os.PRIO_PROCESS, 0, int(request["nice"]))
        _die_with_parent(zygote)
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        random.seed()  # not the zygote's sequence in every job
        gc.enable()
        sys.stdin = open(0, encoding="utf-8", closefd=False)
        sys.stdout = open(1, "w", encoding="utf-8", closefd=False)
        sys.stderr = open(2, "w", encoding="utf-8", buffering=1, closefd=False)
        uid = request.get("uid")
        code = _job_main(zygote, None if uid is None else int(uid))
    except BaseException:
        with contextlib.suppress(BaseException):
            log.exception("job process failed")
    finally:
        with contextlib.suppress(BaseException):
            sys.stdout.flush()
            sys.stderr.flush()
        os._exit(code)


def zygote_main(parent: int, control_fd: int) -> int:
    """Fork job processes on request (see above) until the control socket closes."""
    _die_with_parent(parent)
    os.umask(0o077)
    gc.disable()
    _preload()
    # Move every object to a permanent generation: the children's garbage collector
    # then never walks (and so never writes to, un-sharing) the zygote's pages.
    gc.freeze()
    ctl = socket.socket(fileno=control_fd)
    me = os.getpid()
    children: set[int] = set()

    def send(msg: dict[str, Any]) -> None:
        ctl.send(json.dumps(msg).encode())

    try:
        while True:
            ready, _, _ = select.select([ctl], [], [], 0.05)
            if ready:
                data, fds, _flags, _addr = socket.recv_fds(ctl, 1 << 16, 3)
                if not data:
                    return 0  # the supervisor is gone
                request = json.loads(data)
                try:
                    if len(fds) != 3:  # the rest were cut off: this process is out of them
                        raise OSError(
                            errno.EMFILE, f"expected 3 file descriptors, got {len(fds)}"
                        )
                    pid = os.fork()
                    if pid == 0:
                        _zygote_child(fds, request, me)
                    children.add(pid)
                    if request.get("nice"):
                        # Also from here, before the pid is told: the child's own call
                        # may come after the supervisor has published it (a test read
                        # nice 0 there once).
                        with contextlib.suppress(OSError):
                            os.setpriority(os.PRIO_PROCESS, pid, int(request["nice"]))
                    send({"op": "spawned", "token": request.get("token"), "pid": pid})
                except Exception as exc:
                    code = exc.errno if isinstance(exc, OSError) else None
                    send(
                        {
                            "op": "error",
                            "token": request.get("token"),
                            "error": str(exc),
                            "errno": code,
                        }
                    )
                finally:
                    for fd in fds:
                        os.close(fd)
            # Reap ended children: SIGKILL their group first, while the zombie still
            # holds the group id (no unrelated group can have it yet).
            while children:
                info = os.waitid(os.P_ALL, 0, os.WEXITED | os.WNOHANG | os.WNOWAIT)
                if info is None:
                    break
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(info.si_pid, signal.SIGKILL)
                _, status, usage = os.wait4(info.si_pid, 0)
                children.discard(info.si_pid)
                send(
                    {
                        "op": "exit",
                        "pid": info.si_pid,
                        "returncode": os.waitstatus_to_exitcode(status),
                        "cpu": usage.ru_utime + usage.ru_stime,
                    }
                )
    finally:
        for pid in children:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pid, signal.SIGKILL)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m yippiemove.jobs.jail")
    parser.add_argument("--parent", type=int, required=True, help="the supervisor's pid")
    parser.add_argument(
        "--zygote",
        type=int,
        metavar="FD",
        help="be the zygote: fork job processes on request from this control socket",
    )
    parser.add_argument("--uid", type=int, help="drop to this user id once set up")
    args = parser.parse_args(argv)
    if args.zygote is not None:
        return zygote_main(args.parent, args.zygote)
    _die_with_parent(args.parent)
    return _job_main(args.parent, args.uid)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
