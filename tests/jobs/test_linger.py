"""A killed writer's unsent bytes never reach the server (issue 15, fencing).

A host's link is cut while its job process has APPEND data in its kernel's send buffer
(un-ACKed: the link is down); the process is killed (its supervisor's SIGKILL at lease
loss, or the job's own lease watchdog).  With an ordinary close the kernel keeps the
orphaned socket and retransmits: when the link heals, the data reaches the server --
after another host took the job over (tests/jobs/test_fleet.py saw all 60 messages of a
folder doubled).  A destination connection opened with ``abortive_close`` (SO_LINGER
{on, 0}, imap/connection.py) is reset instead: its unsent bytes are dropped.

The writer is the real :class:`ImapConnection` in a host of a test fleet
(tests/fleet.py); the peer is a bare TCP listener in the test process that greets it
like an IMAP server with LITERAL+ and counts what it receives.
"""

from __future__ import annotations

import socket
import sys
import threading
import time
from pathlib import Path

import pytest

from tests.fleet import Fleet
from tests.fleet_fixtures import _need_fleet

pytestmark = [pytest.mark.fleet, pytest.mark.timeout(120)]

WRITER = r"""
import asyncio, os, sys, time
from yippiemove.imap.connection import ImapConnection
from yippiemove.imap.protocol import Literal

async def main():
    host, port, abortive, go = sys.argv[1], int(sys.argv[2]), sys.argv[3] == "1", sys.argv[4]
    conn = await ImapConnection.open(host, port, security="none", abortive_close=abortive)
    print("connected", flush=True)
    while not os.path.exists(go):
        await asyncio.sleep(0.02)
    for i in range(8):  # APPENDs with LITERAL+: no answer awaited before the data
        asyncio.ensure_future(conn.submit("APPEND", "INBOX", Literal(b"x" * 65536)))
    await asyncio.sleep(0.5)
    print("written", flush=True)
    await asyncio.sleep(3600)

asyncio.run(main())
"""


class Peer:
    """A TCP listener that greets like an IMAP server and counts the bytes it gets."""

    def __init__(self, address: str) -> None:
        self.sock = socket.create_server((address, 0))
        self.port = self.sock.getsockname()[1]
        self.conn: socket.socket | None = None
        self.received = 0
        self.error: OSError | None = None
        self.eof = False
        self.lock = threading.Lock()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        conn, _ = self.sock.accept()
        self.conn = conn
        conn.sendall(b"* OK [CAPABILITY IMAP4rev1 LITERAL+] test peer\r\n")
        while True:
            try:
                data = conn.recv(1 << 16)
            except OSError as exc:
                self.error = exc
                return
            if not data:
                self.eof = True
                return
            with self.lock:
                self.received += len(data)

    def count(self) -> int:
        with self.lock:
            return self.received

    def close(self) -> None:
        for s in (self.conn, self.sock):
            if s is not None:
                s.close()


def _wait_for(pred, timeout: float, what: str) -> None:  # type: ignore[no-untyped-def]
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if pred():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def _killed_while_cut(tmp_path: Path, abortive: bool) -> tuple[int, Peer]:
    """Connect from a fleet host, cut its link, write APPEND data, SIGKILL the writer,
    heal: the bytes the peer got after the cut (waiting long enough for the kernel's
    retransmission after the heal), and the peer."""
    _need_fleet()
    with Fleet(tmp_path / "fleet") as fleet:
        host = fleet.add_host("writer")
        peer = Peer(fleet.address)
        try:
            go = tmp_path / "go"
            log = tmp_path / "writer.log"
            argv = [sys.executable, "-c", WRITER, fleet.address, str(peer.port)]
            host.run([*argv, "1" if abortive else "0", str(go)], log=log)
            _wait_for(lambda: "connected" in log.read_text(), 30, f"the writer: {log}")
            _wait_for(lambda: peer.conn is not None, 5, "the connection")
            before = peer.count()
            host.cut()
            go.touch()
            _wait_for(lambda: "written" in log.read_text(), 10, "the writes")
            host.kill_all()  # as the supervisor's SIGKILL at lease loss
            assert not host.pids()
            time.sleep(1.0)
            host.heal()
            # The orphan retransmits with exponential backoff (0.2, 0.4, 0.8, 1.6, 3.2 s
            # after the first send): well within this wait after a ~2 s cut.
            end = time.monotonic() + 10
            while time.monotonic() < end and peer.count() == before:
                time.sleep(0.1)
            time.sleep(0.5)
            got = peer.count() - before
            if got == 0 and peer.conn is not None and peer.error is None:
                # Nothing came: the connection must be gone for good (the writer's RST
                # was lost in the cut; our next segment gets one now).
                peer.conn.sendall(b"* OK still there?\r\n")
                _wait_for(lambda: peer.error is not None or peer.eof, 10, "a reset")
            return got, peer
        finally:
            peer.close()


def test_ordinary_close_delivers_a_killed_writers_bytes_after_the_heal(tmp_path: Path) -> None:
    """The hazard itself (what the old code did on every destination connection)."""
    got, _peer = _killed_while_cut(tmp_path, abortive=False)
    assert got > 0, "the orphaned socket's queued bytes should have arrived after the heal"


def test_abortive_close_drops_a_killed_writers_bytes(tmp_path: Path) -> None:
    """abortive_close: the killed writer's queued APPEND data never arrives; the peer's
    next segment is answered with a reset."""
    got, peer = _killed_while_cut(tmp_path, abortive=True)
    assert got == 0, f"{got} bytes of a killed writer reached the server after the heal"
    assert isinstance(peer.error, ConnectionResetError), (peer.error, peer.eof)
