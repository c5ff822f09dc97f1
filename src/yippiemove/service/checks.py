"""Account checks and folder listings out of the web process, and how many run at once.

A check talks to a server the customer named: untrusted protocol work.  It runs in a
short-lived child process (:mod:`yippiemove.service.checkproc`) with the jail's isolation
and limits (:func:`yippiemove.jobs.launch.jail_env`, :func:`~yippiemove.jobs.launch.set_limits`:
a clean environment, its own session, ``check_max_memory`` bytes of address space), killed
after ``check_timeout`` seconds; the web process only reads a small JSON answer (at most
:data:`MAX_ANSWER` bytes).  :class:`CheckSlots` caps the checks in flight per customer
(``checks_per_user``) and in all (``checks_total``): more is :class:`TooManyChecks` (429).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
import sys
import threading
from collections.abc import Iterator
from typing import Any

from ..jobs.launch import jail_env, set_limits

log = logging.getLogger("yippiemove.service.checks")

__all__ = ["MAX_ANSWER", "CheckFailed", "CheckSlots", "TooManyChecks", "run_check"]

CHECK_MODULE = [sys.executable, "-P", "-m", "yippiemove.service.checkproc"]
#: Largest answer read from a check process (a folder list of ~100,000 folders).
MAX_ANSWER = 32 * 1024 * 1024
#: Open files of a check process (two connections, the interpreter's own).
CHECK_OPEN_FILES = 256
EXIT_MEMORY = 3  # checkproc.EXIT_MEMORY (not imported: that would load the mover here)


class TooManyChecks(Exception):
    """More checks in flight than the settings allow (for this customer or in all)."""

    def __init__(self, message: str, per_user: bool) -> None:
        super().__init__(message)
        self.per_user = per_user


class CheckFailed(Exception):
    """The check process did not give an answer: time or memory limit, or a crash.
    The message is for the customer."""


class CheckSlots:
    """Counts checks in flight, per customer and in all; thread-safe (the service may be
    used from several event loops and threads)."""

    def __init__(self, per_user: int, total: int) -> None:
        self.per_user = per_user
        self.total = total
        self._lock = threading.Lock()
        self._all = 0
        self._users: dict[int, int] = {}

    @contextlib.contextmanager
    def slot(self, user_id: int | None) -> Iterator[None]:
        with self._lock:
            mine = self._users.get(user_id, 0) if user_id is not None else 0
            if user_id is not None and self.per_user and mine >= self.per_user:
                raise TooManyChecks(
                    f"you already have {mine} account check(s) under way (at most "
                    f"{self.per_user} at a time); wait for them to finish and try again",
                    per_user=True,
                )
            if self.total and self._all >= self.total:
                raise TooManyChecks(
                    "the service is busy checking other accounts; try again in a minute",
                    per_user=False,
                )
            self._all += 1
            if user_id is not None:
                self._users[user_id] = mine + 1
        try:
            yield
        finally:
            with self._lock:
                self._all -= 1
                if user_id is not None:
                    left = self._users.get(user_id, 1) - 1
                    if left > 0:
                        self._users[user_id] = left
                    else:
                        self._users.pop(user_id, None)

    @property
    def in_flight(self) -> int:
        return self._all


async def _read_capped(stream: asyncio.StreamReader, limit: int) -> bytes:
    out = bytearray()
    while True:
        chunk = await stream.read(65536)
        if not chunk:
            return bytes(out)
        out += chunk
        if len(out) > limit:
            raise CheckFailed("the server's answer was too large to show")


def _kill(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)


async def run_check(
    request: dict[str, Any], *, timeout: float, max_memory: int | None
) -> dict[str, Any]:
    """Run one check (``request`` as :mod:`~yippiemove.service.checkproc` reads it) in a
    limited child process; its JSON answer, or :class:`CheckFailed`."""
    proc = await asyncio.create_subprocess_exec(
        *CHECK_MODULE,
        "--parent",
        str(os.getpid()),
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=jail_env(),
        start_new_session=True,
        close_fds=True,
    )
    try:
        # Limits before it is given any work (it waits for its request on stdin).
        set_limits(proc.pid, max_open_files=CHECK_OPEN_FILES, max_memory=max_memory)
        assert proc.stdin is not None and proc.stdout is not None and proc.stderr is not None
        proc.stdin.write(json.dumps(request).encode())
        await proc.stdin.drain()
        proc.stdin.close()

        async def answer() -> tuple[bytes, bytes, int]:
            assert proc.stdout is not None and proc.stderr is not None
            out, err = await asyncio.gather(
                _read_capped(proc.stdout, MAX_ANSWER), _read_capped(proc.stderr, MAX_ANSWER)
            )
            return out, err, await proc.wait()

        try:
            out, err, code = await asyncio.wait_for(answer(), timeout)
        except TimeoutError:
            raise CheckFailed(f"the server did not answer within {timeout:g} seconds") from None
    except BaseException:
        _kill(proc.pid)
        with contextlib.suppress(Exception):
            await asyncio.wait_for(proc.wait(), 5)
        raise
    _kill(proc.pid)  # anything it left behind in its process group
    if code == 0 and out:
        try:
            result = json.loads(out)
        except ValueError:
            result = None
        if isinstance(result, dict):
            return result
    if code == EXIT_MEMORY or code == -signal.SIGKILL:
        mb = (max_memory or 0) // (1024 * 1024)
        raise CheckFailed(
            f"checking this server needed more memory than the service allows ({mb} MB)"
        )
    log.warning(
        "account check process ended with %s: %s", code, err[-2000:].decode("utf-8", "replace")
    )
    raise CheckFailed("something went wrong on our side while checking the account")
