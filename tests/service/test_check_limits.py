"""Issue 14, attack class 2: a hostile server cannot make the web process allocate
without bound, and account checks run under a time limit and a cap on checks in flight.

The "web process" here is the test process: the Service runs in it exactly as in uvicorn.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from yippiemove.service.core import Account, Busy, ServiceError

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]

#: A generous bound on how much the web process may grow during one hostile check: the
#: attack asks for 2 GB.
RSS_BOUND = 200 * 1024 * 1024


@pytest.fixture(autouse=True)
def _loopback_allowed(monkeypatch: pytest.MonkeyPatch) -> None:
    # The fake servers listen on 127.0.0.1 (see the egress policy, issue 14).
    monkeypatch.setenv("YIPPIEMOVE_EGRESS_ALLOW", "127.0.0.0/8")


def _peak_rss() -> int:
    """This process's peak resident size (VmHWM), in bytes."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmHWM in /proc/self/status")


def _reset_peak_rss() -> None:
    with contextlib.suppress(OSError), open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # resets VmHWM to the current RSS (Linux >= 4.0)


async def _huge_greeting(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    writer.write(b"* OK {2000000000}\r\n" + b"x" * 70_000)
    await writer.drain()
    await _drain_until_closed(reader, writer)


async def _huge_list(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    writer.write(b"* OK [CAPABILITY IMAP4rev1 AUTH=PLAIN] hostile server ready\r\n")
    await writer.drain()
    while line := await reader.readline():
        tag, _, rest = line.partition(b" ")
        cmd = rest.split(b" ", 1)[0].strip().upper()
        if cmd == b"LIST":
            writer.write(b'* LIST () "/" {2000000000}\r\n' + b"x" * 70_000)
            await writer.drain()
            break
        if cmd == b"CAPABILITY":
            writer.write(b"* CAPABILITY IMAP4rev1 AUTH=PLAIN\r\n")
        if cmd == b"LOGOUT":
            writer.write(b"* BYE\r\n" + tag + b" OK bye\r\n")
            break
        writer.write(tag + b" OK done\r\n")
        await writer.drain()
    await _drain_until_closed(reader, writer)


async def _silent_after_greeting(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter
) -> None:
    writer.write(b"* OK [CAPABILITY IMAP4rev1 AUTH=PLAIN] ready\r\n")
    await writer.drain()
    await _drain_until_closed(reader, writer)


async def _drain_until_closed(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    with contextlib.suppress(Exception):
        while await reader.read(65536):
            pass
    writer.close()


async def _serving(handler: Handler) -> tuple[asyncio.Server, int]:
    server = await asyncio.start_server(handler, "127.0.0.1", 0)
    return server, server.sockets[0].getsockname()[1]


def _account(port: int) -> Account:
    return Account("127.0.0.1", port, "none", "victim", "Hostile-check-pw-1")


@pytest.mark.parametrize("handler", [_huge_greeting, _huge_list], ids=["greeting", "list"])
def test_a_huge_literal_costs_the_web_process_nothing(make_service: Any, handler: Handler) -> None:
    svc = make_service()

    async def go() -> str:
        server, port = await _serving(handler)
        try:
            with pytest.raises(ServiceError) as info:
                await svc.check_account(_account(port), role="source", user_id=1)
            return str(info.value)
        finally:
            server.close()

    _reset_peak_rss()
    before = _peak_rss()
    started = time.monotonic()
    msg = asyncio.run(go())
    grown = _peak_rss() - before
    assert grown < RSS_BOUND, f"the web process grew by {grown >> 20} MB"
    assert msg.startswith("source: ")
    assert "literal of 2000000000 bytes" in msg and "at most 65536 bytes" in msg, msg
    assert time.monotonic() - started < 15  # refused at once, not at a timeout


def test_a_check_that_hangs_ends_at_the_time_limit(make_service: Any) -> None:
    svc = make_service(check_timeout=2.0)

    async def go() -> str:
        server, port = await _serving(_silent_after_greeting)
        try:
            with pytest.raises(ServiceError) as info:
                await svc.check_account(_account(port), role="source")
            return str(info.value)
        finally:
            server.close()

    started = time.monotonic()
    msg = asyncio.run(go())
    took = time.monotonic() - started
    assert "did not answer within 2 seconds" in msg, msg
    assert took < 15, took  # the mover's own idle timeout would take 60 s
    assert svc.checks.in_flight == 0


def test_too_many_checks_in_flight_is_429(make_service: Any) -> None:
    svc = make_service(check_timeout=30.0, checks_per_user=2, checks_total=3)

    async def go() -> tuple[str, str]:
        server, port = await _serving(_silent_after_greeting)
        alice = [
            asyncio.create_task(svc.check_account(_account(port), role="source", user_id=1))
            for _ in range(2)
        ]
        try:
            while svc.checks.in_flight < 2:
                await asyncio.sleep(0.01)
            # Alice's third check: refused at once with a clear text.
            with pytest.raises(Busy) as mine:
                await svc.check_account(_account(port), role="source", user_id=1)
            # Bob still gets his check; a fourth in all is refused.
            bob = asyncio.create_task(svc.check_account(_account(port), role="source", user_id=2))
            while svc.checks.in_flight < 3:
                await asyncio.sleep(0.01)
            with pytest.raises(Busy) as anyone:
                await svc.check_account(_account(port), role="source", user_id=3)
            alice.append(bob)
            return str(mine.value), str(anyone.value)
        finally:
            for t in alice:
                t.cancel()
            await asyncio.gather(*alice, return_exceptions=True)
            server.close()

    mine, anyone = asyncio.run(go())
    assert Busy.status == 429
    assert "at most 2 at a time" in mine
    assert "busy" in anyone
    assert svc.checks.in_flight == 0


async def _endless_list(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Small lines, no end: only the check process's memory limit stops this one."""
    writer.write(b"* OK [CAPABILITY IMAP4rev1 AUTH=PLAIN] hostile server ready\r\n")
    await writer.drain()
    with contextlib.suppress(Exception):
        while line := await reader.readline():
            tag, _, rest = line.partition(b" ")
            cmd = rest.split(b" ", 1)[0].strip().upper()
            if cmd == b"LIST":
                batch = b"".join(b'* LIST () "/" "folder%d"\r\n' % i for i in range(10_000))
                while True:
                    writer.write(batch)
                    await writer.drain()
            writer.write(tag + b" OK done\r\n")
            await writer.drain()
    writer.close()


def test_a_check_over_its_memory_limit_fails_alone(make_service: Any) -> None:
    svc = make_service(check_max_memory=200 * 1024 * 1024, check_timeout=120.0)

    async def go() -> str:
        server, port = await _serving(_endless_list)
        try:
            with pytest.raises(ServiceError) as info:
                await svc.check_account(_account(port), role="source", user_id=1)
            return str(info.value)
        finally:
            server.close()

    _reset_peak_rss()
    before = _peak_rss()
    msg = asyncio.run(go())
    assert _peak_rss() - before < RSS_BOUND
    assert "more memory than the service allows (200 MB)" in msg, msg
