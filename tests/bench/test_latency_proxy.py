"""bench/latency_proxy.py's rate cap and byte counts (what bench/fleet.py's links rely on)."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

PROXY = Path(__file__).resolve().parents[2] / "bench" / "latency_proxy.py"


def _sink() -> tuple[socket.socket, threading.Thread, list[int]]:
    """A server that reads everything, then answers b"ok" and closes."""
    srv = socket.create_server(("127.0.0.1", 0))
    got = [0]

    def serve() -> None:
        conn, _ = srv.accept()
        with conn:
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
        with socket.create_connection(("127.0.0.1", int(line[2]))) as c:
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
