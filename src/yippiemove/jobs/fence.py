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
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import time

log = logging.getLogger("yippiemove.fence")

__all__ = ["LeaseGate", "LeaseLost", "lease_line", "read_first_line"]


class LeaseLost(Exception):
    """The job's lease ran out without a renewal: another host may own the job now."""


def lease_line(deadline: float, token: int) -> bytes:
    """A lease line for the job's stdin (see the module doc)."""
    return json.dumps({"lease_until": deadline, "token": token}).encode() + b"\n"


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
