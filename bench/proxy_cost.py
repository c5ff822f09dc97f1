#!/usr/bin/env python3
"""What bench/latency_proxy.py itself costs: CPU seconds and throughput of a bulk relay.

    .venv/bin/python bench/proxy_cost.py [--proxy FILE ...] [--delay-ms 0,20] [--runs 3]

Relays ``--mb`` megabytes (10^6 bytes; half each way, both directions at once) over
``--conns`` connections through the proxy: on each connection a client and a server
thread send to each other in small writes of ``--write-kb`` (a range, default 4-16 kB:
TLS records, as Dovecot's imap-login sends them), with ``TCP_NODELAY``.  With ``--rate
MB/s`` (in all) the senders keep to that pace, slower than the proxy could go, as a
mover and Dovecot are: the proxy then reads a write or a few at a time, so this
measures its cost per chunk (e.g. ``--rate 200``, the bench's TLS runs' order of
magnitude).  Without it they send as fast as they can, the proxy is the bottleneck and
reads big chunks: this measures its throughput.

For each run it prints the proxy's CPU seconds (``STATS`` ``cpu``, and that less what
it had used once listening: the relaying alone) and the throughput; with several
``--proxy`` files (e.g. ``git show main:bench/latency_proxy.py > /tmp/old.py``) the runs
alternate between them, so they share the machine's minutes.  ``--direct`` adds a run
without proxy (what the load generator reaches by itself).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
PAYLOAD = memoryview(os.urandom(64 * 1024))


def _send(sock: socket.socket, total: int, sizes: list[int], rate: float) -> None:
    """Send ``total`` bytes in writes of the given sizes (cycled), at most ``rate``
    bytes/s (0: as fast as it goes), then EOF."""
    sent = 0
    i = 0
    t0 = time.perf_counter()
    while sent < total:
        n = min(sizes[i % len(sizes)], total - sent)
        sock.sendall(PAYLOAD[:n])
        sent += n
        i += 1
        if rate:
            ahead = t0 + sent / rate - time.perf_counter()
            if ahead > 0.001:
                time.sleep(ahead)
    sock.shutdown(socket.SHUT_WR)


def _receive(sock: socket.socket, got: list[int]) -> None:
    """Read until EOF, counting."""
    buf = bytearray(1 << 20)
    n = 0
    while True:
        k = sock.recv_into(buf)
        if not k:
            break
        n += k
    got.append(n)


def relay(
    port: int, backend: socket.socket, total: int, conns: int, sizes: list[int], rate: float
) -> float:
    """``total`` bytes, half each way, over ``conns`` connections to ``port`` (accepted by
    ``backend``, directly or through the proxy), at most ``rate`` bytes/s in all (0: no
    cap); returns the seconds it took."""
    pairs = []
    for _ in range(conns):
        c = socket.create_connection(("127.0.0.1", port))
        s, _ = backend.accept()
        for x in (c, s):
            x.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        pairs.append((c, s))
    each = total // 2 // conns
    got: list[int] = []
    threads = []
    for k, (c, s) in enumerate(pairs):
        rnd = random.Random(k)
        for a, b in ((c, s), (s, c)):
            mine = [rnd.choice(sizes) for _ in range(997)]
            threads.append(threading.Thread(target=_send, args=(a, each, mine, rate / conns / 2)))
            threads.append(threading.Thread(target=_receive, args=(b, got)))
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - t0
    for c, s in pairs:
        c.close()
        s.close()
    if got != [each] * len(got) or len(got) != 2 * conns:
        raise SystemExit(f"bytes lost: {got}, wanted {each} on each of {2 * conns}")
    return elapsed


def _cpu(pid: int) -> float:
    """User + system CPU seconds of process ``pid`` so far (/proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def one_run(
    proxy: Path | None, delay_ms: float, total: int, conns: int, sizes: list[int], rate: float
) -> dict[str, float]:
    backend = socket.create_server(("127.0.0.1", 0), backlog=conns)
    target = backend.getsockname()[1]
    if proxy is None:
        seconds = relay(target, backend, total, conns, sizes, rate)
        backend.close()
        return {"seconds": seconds, "mb_s": total / 1e6 / seconds}
    proc = subprocess.Popen(
        [
            sys.executable,
            str(proxy),
            "--target",
            f"127.0.0.1:{target}",
            "--delay-ms",
            str(delay_ms),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline().split()
        if not line or line[0] != "LISTENING":
            raise SystemExit(f"{proxy} did not start: {line}")
        idle = _cpu(proc.pid)
        seconds = relay(int(line[2]), backend, total, conns, sizes, rate)
    finally:
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=30)
        backend.close()
    stats = json.loads(next(x for x in out.splitlines() if x.startswith("STATS "))[6:])
    if stats["up"] != stats["down"] or stats["up"] != total // 2 // conns * conns:
        raise SystemExit(f"the proxy counted {stats}")
    return {
        "seconds": seconds,
        "mb_s": total / 1e6 / seconds,
        "cpu": stats["cpu"],
        "relay_cpu": stats["cpu"] - idle,
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument(
        "--proxy", type=Path, action="append", help="proxy script (repeatable; default: ours)"
    )
    ap.add_argument("--direct", action="store_true", help="also a run without proxy")
    ap.add_argument("--mb", type=float, default=400.0, help="MB relayed in all (default 400)")
    ap.add_argument("--conns", type=int, default=4, help="connections (default 4)")
    ap.add_argument("--write-kb", default="4-16", help="write sizes, kB (default 4-16)")
    ap.add_argument(
        "--rate",
        type=float,
        default=0.0,
        help="MB/s in all that the senders keep to (default 0: as fast as they go)",
    )
    ap.add_argument("--delay-ms", default="0,20", help="one-way delays (default 0,20)")
    ap.add_argument("--runs", type=int, default=3, help="runs of each (default 3)")
    args = ap.parse_args(argv)
    lo, _, hi = args.write_kb.partition("-")
    sizes = list(range(int(float(lo) * 1024), int(float(hi or lo) * 1024) + 1, 512))
    proxies: list[Path | None] = list(args.proxy or [HERE / "latency_proxy.py"])
    delays = [float(x) for x in args.delay_ms.split(",")]
    total = int(args.mb * 1e6)
    cases = [(p, d) for d in delays for p in proxies]
    if args.direct:
        cases.insert(0, (None, 0.0))
    results: dict[tuple[Path | None, float], list[dict[str, float]]] = {c: [] for c in cases}
    for run in range(args.runs):
        for proxy, delay in cases:
            r = one_run(proxy, delay, total, args.conns, sizes, args.rate * 1e6)
            results[(proxy, delay)].append(r)
            name = "direct" if proxy is None else f"{proxy.name} @{delay:g} ms"
            cpu = f"  cpu {r['cpu']:.2f} s (relay {r['relay_cpu']:.2f})" if proxy else ""
            print(f"run {run + 1} {name}: {r['seconds']:.2f} s {r['mb_s']:.0f} MB/s{cpu}")
    rate = f", senders at {args.rate:g} MB/s" if args.rate else ""
    print(
        f"\nmedians, {args.mb:g} MB over {args.conns} connections, writes {args.write_kb} kB{rate}:"
    )
    for (proxy, delay), rs in results.items():
        name = "direct" if proxy is None else f"{proxy} @{delay:g} ms"
        mbs = statistics.median(r["mb_s"] for r in rs)
        line = f"  {name}: {mbs:.0f} MB/s"
        if proxy is not None:
            cpu = statistics.median(r["cpu"] for r in rs)
            relay_cpu = statistics.median(r["relay_cpu"] for r in rs)
            line += f", cpu {cpu:.2f} s (relay {relay_cpu:.2f} s)"
        print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
