"""Fencing, the job process's side: no write to the destination outside the lease.

The supervisor holds the job's lease in the control database and renews it; another
worker host takes the job over once the lease has expired there.  A supervisor that is
frozen (SIGSTOP), cut off from the database or just slow cannot stop its job process in
time, so the job process stops itself: the supervisor keeps the job's stdin open after
the spec and writes a *lease line* each time a renewal has committed::

    {"lease_until": <CLOCK_MONOTONIC deadline>, "token": <fencing token>}

The deadline is the supervisor's monotonic time taken *before* the renewal's database
write, plus the lease, minus a safety margin: it always falls before the lease's expiry
in the database, however slow the write was.  (CLOCK_MONOTONIC is one clock for every
process of the machine, so the two processes agree on it; wall clocks need not.)

:class:`LeaseGate` keeps the latest deadline (fed by :meth:`LeaseGate.feed` from an
asyncio reader on stdin) and is the transfer's ``write_gate``
(transfer/model.py ``Options.write_gate``): the destination's connection awaits it before
every command that can change a mailbox (APPEND and MULTIAPPEND, STORE, CREATE...).
Within the lease it returns at once; past it, it waits up to ``wait`` seconds for a
renewal, then raises :class:`LeaseLost`: the transfer stops, its state is flushed, and the
job exits with the result ``lease lost`` (not an error of the customer's servers).

The gate stops *new* writes; bytes already written sit in the kernel's send buffer while
a link is down, and would still reach the server after another host took the job over.
So the destination connections close abortively (``SO_LINGER`` 0, imap/connection.py:
a dying process's unsent bytes are dropped), and :class:`LeaseWatchdog`, a thread beside
the gate, ends the job process the moment the gate would refuse (deadline + ``wait``
without a renewal; the deadline alone once stdin is closed): it prints the lease-lost
result line if stdout takes it at once, then calls ``os._exit`` -- whatever the event loop is
doing (a write blocked behind a frozen supervisor's full pipe, a graceful LOGOUT that
would flush the queued APPENDs once the link heals).  The state database is WAL:
committed work survives, as after any kill.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import select
import threading
import time
from collections.abc import Callable

log = logging.getLogger("yippiemove.fence")

__all__ = [
    "LeaseGate",
    "LeaseLost",
    "LeaseWatchdog",
    "lease_line",
    "lost_exit",
    "read_first_line",
]


class LeaseLost(Exception):
    """The job's lease ran out without a renewal: another host may own the job now."""


def lease_line(deadline: float, token: int, progress_every: float | None = None) -> bytes:
    """A lease line for the job's stdin (see the module doc); ``progress_every``: the
    seconds between two progress lines the supervisor asks for now (issue 18: with many
    jobs, each reports less often, so that supervision costs what the events do)."""
    msg: dict[str, float | int] = {"lease_until": deadline, "token": token}
    if progress_every is not None:
        msg["progress_every"] = round(progress_every, 3)
    return json.dumps(msg).encode() + b"\n"


def read_first_line(fd: int, limit: int = 1 << 24) -> tuple[bytes, bytes]:
    """The first line of ``fd`` (the spec) and whatever was read after it: the spec is
    read without a buffered reader, which would swallow the lease lines behind it."""
    buf = b""
    while b"\n" not in buf:
        chunk = os.read(fd, 1 << 16)
        if not chunk:
            return buf, b""
        buf += chunk
        if len(buf) > limit:
            raise ValueError("the job spec is too long")
    line, _, rest = buf.partition(b"\n")
    return line, rest


class LeaseGate:
    """The latest lease deadline the supervisor sent, and the write gate on it."""

    def __init__(self, wait: float = 5.0) -> None:
        self.wait = wait
        #: CLOCK_MONOTONIC deadline of the last lease line; None before the first.
        self.deadline: float | None = None
        self.token: int | None = None
        #: Seconds between progress lines the supervisor asked for (None: the spec's).
        self.progress_every: float | None = None
        self._buf = b""
        self._renewed: asyncio.Event | None = None
        self.eof = False

    def valid(self, now: float | None = None) -> bool:
        now = time.monotonic() if now is None else now
        return self.deadline is not None and now < self.deadline

    def feed(self, data: bytes) -> None:
        """Bytes from stdin: parse complete lease lines, keep the latest deadline."""
        self._buf += data
        *lines, self._buf = self._buf.split(b"\n")
        if len(self._buf) > 4096:  # not a lease line: nothing that long is sent
            self._buf = b""
        for raw in lines:
            try:
                msg = json.loads(raw)
                deadline = float(msg["lease_until"])
                token = int(msg["token"])
            except (ValueError, KeyError, TypeError):
                continue
            if self.token is not None and token != self.token:
                # A line from another claim cannot reach this process; be strict anyway.
                log.error("lease line with token %d, expected %d: ignored", token, self.token)
                continue
            self.token = token
            if self.deadline is None or deadline > self.deadline:
                self.deadline = deadline
            every = msg.get("progress_every")
            if isinstance(every, int | float) and 0.01 <= every <= 3600:
                self.progress_every = float(every)
        if self._renewed is not None:
            self._renewed.set()

    def attach(self, fd: int = 0) -> None:
        """Read lease lines from ``fd`` in the running event loop (call from a coroutine)."""
        loop = asyncio.get_running_loop()
        self._renewed = asyncio.Event()
        os.set_blocking(fd, False)

        def readable() -> None:
            try:
                data = os.read(fd, 1 << 12)
            except BlockingIOError:
                return
            except OSError:
                data = b""
            if not data:
                self.eof = True  # the supervisor closed it: no renewal comes any more
                loop.remove_reader(fd)
                return
            self.feed(data)

        loop.add_reader(fd, readable)

    def detach(self, fd: int = 0) -> None:
        with contextlib.suppress(Exception):
            asyncio.get_running_loop().remove_reader(fd)

    async def __call__(self) -> None:
        """Return while the lease holds; past it wait up to ``wait`` s for a renewal,
        then raise :class:`LeaseLost`."""
        if self.valid():
            return
        end = time.monotonic() + self.wait
        while not self.valid():
            remaining = end - time.monotonic()
            if remaining <= 0 or self.eof:
                raise LeaseLost(
                    "the job's lease expired without a renewal (another worker host may "
                    "run it now); stopped before writing to the destination"
                )
            if self._renewed is None:
                self._renewed = asyncio.Event()
            self._renewed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._renewed.wait(), min(remaining, 0.25))


#: Stack of the watchdog's thread (bytes): it runs a clock loop and two system calls.
_STACK = 256 * 1024


class LeaseWatchdog:
    """Ends the job process once its lease is lost (module doc): a daemon thread that
    calls ``on_lost()`` when :class:`LeaseGate` would raise :class:`LeaseLost`, i.e. at
    the deadline plus the gate's ``wait`` without a renewal (at the deadline once stdin
    is closed), and never earlier than ``wait`` after :meth:`arm`: the event loop that
    reads the lease lines gets that long to read those queued while it started.

    ``on_lost`` must not return (it exits the process; :func:`lost_exit`).  Nothing
    fires before :meth:`arm` (no destination connection exists before the transfer
    runs, and none is written without a deadline) or after :meth:`stop`.
    """

    def __init__(self, gate: LeaseGate, on_lost: Callable[[], None]) -> None:
        self.gate = gate
        self.on_lost = on_lost
        self._stop = threading.Event()
        self._armed_at: float | None = None
        self._thread: threading.Thread | None = None

    def arm(self) -> None:
        if self._thread is not None:
            return
        self._armed_at = time.monotonic()
        self._thread = threading.Thread(target=self._watch, name="lease-watchdog", daemon=True)
        # A small stack: the job's address space is limited, and this loop needs little.
        old = threading.stack_size(_STACK)
        try:
            self._thread.start()
        finally:
            threading.stack_size(old)

    def stop(self) -> None:
        self._stop.set()

    def limit(self) -> float | None:
        """When the lease counts as lost if no renewal comes (None: no deadline yet)."""
        gate = self.gate
        deadline = gate.deadline
        if deadline is None or self._armed_at is None:
            return None
        grace = 0.0 if gate.eof else gate.wait
        return max(deadline, self._armed_at) + grace

    def _watch(self) -> None:
        while not self._stop.is_set():
            limit = self.limit()
            now = time.monotonic()
            if limit is not None and now >= limit and not self.gate.valid(now):
                if not self._stop.is_set():
                    self.on_lost()
                return
            pause = 0.25 if limit is None else min(max(limit - now, 0.01), 0.5)
            self._stop.wait(pause)


def lost_exit(result: bytes, status: int, note: bytes = b"", *, mid_line: bool = False) -> None:
    """Print ``result`` (a JSON line) on stdout if the pipe takes it now, ``note`` on
    stderr, and end the process at once with ``status`` (no cleanup: its sockets are
    closed by the kernel -- reset, for the abortive ones).  Raw writes: the main thread
    may hold the buffered streams' locks, blocked on a full pipe.  ``mid_line``: the
    main thread may have left a line half-written: end it first (the supervisor skips
    the fragment)."""
    try:
        if note:
            os.write(2, note)
        poll = select.poll()
        poll.register(1, select.POLLOUT)
        if poll.poll(200):
            os.write(1, (b"\n" if mid_line else b"") + result.rstrip(b"\n") + b"\n")
    except OSError:
        pass
    finally:
        os._exit(status)
