"""bench/latency_proxy.py: the rate cap and byte counts (what bench/fleet.py's links rely
on), the delay, half-closes each way, back-pressure."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

PROXY = Path(__file__).resolve().parents[2] / "bench" / "latency_proxy.py"


@contextlib.contextmanager
def _proxy(port: int, *args: str):
    """The proxy in front of 127.0.0.1:``port``; yields (process, its port)."""
    proc = subprocess.Popen(
        [sys.executable, str(PROXY), "--target", f"127.0.0.1:{port}", *args],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline().split()
        assert line[0] == "LISTENING"
        yield proc, int(line[2])
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=10)


def _stop(proc: subprocess.Popen[str]) -> dict:
    """SIGTERM: the STATS it prints."""
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=10)
    return json.loads(next(x for x in out.splitlines() if x.startswith("STATS "))[6:])


def _read_all(sock: socket.socket) -> bytes:
    parts = []
    while data := sock.recv(65536):
        parts.append(data)
    return b"".join(parts)


def _sink() -> tuple[socket.socket, threading.Thread, list[int]]:
    """A server that reads everything, then answers b"ok" and closes."""
    srv = socket.create_server(("127.0.0.1", 0))
    got = [0]

    def serve() -> None:
        conn, _ = srv.accept()
        with conn:
            conn.settimeout(30)
            want = int(conn.recv(16).decode().strip())
            while got[0] < want:
                data = conn.recv(65536)
                if not data:
                    break
                got[0] += len(data)
            conn.sendall(b"ok")

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    return srv, t, got


def test_rate_cap_and_counts() -> None:
    srv, thread, got = _sink()
    port = srv.getsockname()[1]
    proxy = subprocess.Popen(
        [
            sys.executable,
            str(PROXY),
            "--target",
            f"127.0.0.1:{port}",
            "--delay-ms",
            "0",
            "--rate-mbps",
            "4",
            "--buffer-mb",
            "0.5",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proxy.stdout is not None
        line = proxy.stdout.readline().split()
        assert line[0] == "LISTENING"
        size = 2_000_000
        with socket.create_connection(("127.0.0.1", int(line[2])), timeout=30) as c:
            t0 = time.monotonic()
            c.sendall(f"{size:<16}".encode())
            c.sendall(b"x" * size)
            answer = c.recv(16)
            elapsed = time.monotonic() - t0
        assert answer == b"ok" and got[0] == size
        # 2 MB at 4 MB/s: half a second at least (loopback alone takes milliseconds)
        assert 0.45 <= elapsed < 5, elapsed
    finally:
        proxy.send_signal(signal.SIGTERM)
        out, _ = proxy.communicate(timeout=10)
        srv.close()
        thread.join(timeout=5)
    stats = json.loads(next(x for x in out.splitlines() if x.startswith("STATS "))[6:])
    assert stats["up"] == size + 16 and stats["down"] == 2
    assert stats["connections"] == 1 and stats["cpu"] > 0


def test_delay_and_half_close_each_way() -> None:
    """Every byte takes the delay (the first ones after the set-up's 3 x delay too), and
    an EOF is carried each way while the other direction goes on."""
    delay = 0.1
    srv = socket.create_server(("127.0.0.1", 0))
    got: dict[str, bytes] = {}

    def serve() -> None:
        # 1: the server speaks first, then half-closes; the client answers after that
        conn, _ = srv.accept()
        with conn:
            conn.settimeout(10)
            conn.sendall(b"greeting")
            conn.shutdown(socket.SHUT_WR)
            got["after server EOF"] = _read_all(conn)
        # 2: the client speaks first and half-closes; the server answers after that
        conn, _ = srv.accept()
        with conn:
            conn.settimeout(10)
            got["before client EOF"] = _read_all(conn)
            conn.sendall(b"answer")

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        with _proxy(srv.getsockname()[1], "--delay-ms", str(delay * 1000)) as (proc, port):
            with socket.create_connection(("127.0.0.1", port), timeout=10) as c:
                t0 = time.monotonic()
                first = c.recv(100)
                greeted = time.monotonic() - t0
                rest = _read_all(c)  # the server's EOF arrives
                c.sendall(b"late words")
                c.shutdown(socket.SHUT_WR)
                assert c.recv(100) == b""  # both ways ended: the proxy closed
            with socket.create_connection(("127.0.0.1", port), timeout=10) as c:
                t0 = time.monotonic()
                c.sendall(b"question")
                c.shutdown(socket.SHUT_WR)
                first2 = c.recv(100)
                answered = time.monotonic() - t0
                rest2 = _read_all(c)
            thread.join(timeout=10)
            stats = _stop(proc)
    finally:
        srv.close()
    assert first + rest == b"greeting" and got["after server EOF"] == b"late words"
    assert got["before client EOF"] == b"question" and first2 + rest2 == b"answer"
    # (a few ms of slack: the client's clock starts after the proxy accepted)
    # set-up (3 x delay: SYN, SYN-ACK, ACK), then the greeting's own delay
    assert greeted >= 4 * delay - 0.005, greeted
    # the client's first bytes are read once the upstream connection is open (3 x
    # delay), then the question and the answer take one delay each
    assert answered >= 5 * delay - 0.005, answered
    assert greeted < 4 * delay + 1 and answered < 6 * delay + 1
    assert stats["up"] == len(b"late words") + len(b"question")
    assert stats["down"] == len(b"greeting") + len(b"answer")
    assert stats["connections"] == 2


def _queues(local: int, remote: int) -> tuple[int, int]:
    """(send queue, receive queue) of the loopback TCP socket from port ``local`` to
    port ``remote`` (/proc/net/tcp)."""
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        f = line.split()
        if int(f[1].split(":")[1], 16) == local and int(f[2].split(":")[1], 16) == remote:
            tx, rx = (int(x, 16) for x in f[4].split(":"))
            return tx, rx
    raise AssertionError(f"no socket {local} -> {remote}")


def test_back_pressure_holds_at_most_the_buffer() -> None:
    """A server that does not read: the proxy holds ``--buffer-mb`` (and at most one read
    and its socket's write buffer more) and stops reading from the client; once the
    server reads, all of it arrives, exact, then the client's EOF."""
    buffer = 1_000_000
    payload = os.urandom(1 << 20) * 16  # 16 MB: more than the buffer and the sockets hold
    srv = socket.socket()
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)  # a small window
    srv.bind(("127.0.0.1", 0))
    srv.listen()
    port = srv.getsockname()[1]
    try:
        with _proxy(port, "--delay-ms", "0", "--buffer-mb", str(buffer / 1e6)) as (proc, lport):
            with socket.create_connection(("127.0.0.1", lport)) as c:
                s, _ = srv.accept()
                # send until nothing more goes (non-blocking: every byte sent is counted)
                c.setblocking(False)
                sent, still = 0, 0.0
                while still < 0.5 and sent < len(payload):
                    try:
                        sent += c.send(memoryview(payload)[sent : sent + 65536])
                        still = 0.0
                    except BlockingIOError:
                        time.sleep(0.02)
                        still += 0.02
                assert sent < len(payload)
                me, upstream = c.getsockname()[1], s.getpeername()[1]
                # what the client sent and no socket holds, the proxy holds
                in_sockets = (
                    _queues(me, lport)[0]  # the client's send queue
                    + _queues(lport, me)[1]  # the proxy's receive queue from it
                    + _queues(upstream, port)[0]  # the proxy's send queue to the server
                    + _queues(port, upstream)[1]  # the server's receive queue
                )
                held = sent - in_sockets
                c.settimeout(10)
                s.settimeout(10)
                sender = threading.Thread(
                    target=lambda: (c.sendall(payload[sent:]), c.shutdown(socket.SHUT_WR))
                )
                sender.start()
                with s:
                    received = _read_all(s)  # the server reads now; the client's EOF
                sender.join(timeout=10)
            stats = _stop(proc)
    finally:
        srv.close()
    # a full buffer (not less: the link keeps its bandwidth-delay product), plus at most
    # one read (256 kB) and what the transport buffers before it pauses the writing
    assert buffer <= held <= buffer + 256 * 1024 + 128 * 1024, held
    assert received == payload
    assert stats["up"] == len(payload) and stats["down"] == 0
