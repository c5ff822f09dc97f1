"""What isolation costs: N small transfers through the service vs. in one process.

The same N transfers (one source account each, copied to a fresh destination account) are
run three ways against one throwaway Dovecot whose mail lives on tmpfs:

1. **service**: through ``Service`` + the embedded queue with N workers, so N job
   processes ("jails") run at once, each with its own limits and state file; timed from
   the first ``create_transfer`` until the last job is ``done`` (process start-up,
   progress streaming and database writes included);
2. **one process, sequential**: the same transfers one after another with ``Mover`` in a
   single separate process (what the brief asks to compare with);
3. **one process, concurrent**: all N ``Mover`` runs at once in a single process's event
   loop (the fairer throughput baseline: same concurrency, no isolation).

Memory is PSS (``/proc/PID/smaps_rollup``: shared pages divided among their users),
sampled every 50 ms; per job process its peak, for the single processes theirs.  Every
destination is then checked message by message (``tests/mailcheck.py``, imaplib).

Run it (needs Debian's dovecot-imapd, as the tests do)::

    .venv/bin/python bench/service_isolation.py                 # 8 jobs x 400 messages
    .venv/bin/python bench/service_isolation.py --jobs 4 --messages 1000 --connections 2
    .venv/bin/python bench/service_isolation.py --output /tmp/iso.json

It takes about a minute with the defaults.  Figures depend on the machine: compare the
rows of one run, not runs on different machines.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "src"))

PASSWORD = "bench-password-1"


def pss_kb(pid: int) -> int | None:
    """Proportional set size of a process in kB (None when it is gone)."""
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                if line.startswith("Pss:"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


class PeakSampler:
    """Samples the PSS of a changing set of processes; keeps each one's peak."""

    def __init__(self, pids: Any, interval: float = 0.05) -> None:
        self.pids = pids  # callable returning the pids to sample now
        self.interval = interval
        self.peak: dict[int, int] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            for pid in list(self.pids()):
                v = pss_kb(pid)
                if v is not None and v > self.peak.get(pid, 0):
                    self.peak[pid] = v
            self._stop.wait(self.interval)

    def __enter__(self) -> PeakSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def make_message(i: int, size: int) -> bytes:
    head = (
        f"From: Sender {i} <s{i}@example.org>\r\nTo: r@example.net\r\n"
        f"Subject: bench {i}\r\nDate: Mon, 1 Jan 2018 10:00:00 +0100\r\n"
        f"Message-ID: <bench{i}@example.org>\r\n\r\n"
    ).encode()
    line = b"The quick brown fox jumps over the lazy dog 0123456789.\r\n"
    return head + line * max(1, size // len(line))


def corpus(n: int, seed: int) -> list[tuple[str, bytes]]:
    """(folder, message): mostly small mail, a few larger ones, in three folders."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        size = int(min(400_000, rng.lognormvariate(9.3, 1.0)))  # median ~11 kB, mean ~18 kB
        folder = ("INBOX", "Archive", "Sent")[i % 3]
        out.append((folder, make_message(i, size)))
    return out


# ---------------------------------------------------------------------- the single process


def endpoint(port: int, user: str, ca_file: str) -> Any:
    from yippiemove.accounts import ssl_context
    from yippiemove.transfer.model import Endpoint

    return Endpoint(
        "127.0.0.1",
        port,
        user,
        security="starttls",
        password=PASSWORD,
        ssl_context=ssl_context(ca_file),
        allow_insecure_auth=True,
    )


def single_process_child(args: argparse.Namespace) -> None:
    """Runs in its own process (only the mover imported): sequential or concurrent."""
    from yippiemove.transfer.engine import Mover
    from yippiemove.transfer.model import Options
    from yippiemove.transfer.state import State

    spec = json.loads(args.child)
    work = Path(spec["work"])
    pairs = spec["pairs"]
    opts = Options(connections=spec["connections"])

    def mover(i: int, src: str, dst: str) -> tuple[Mover, State]:
        state = State(work / f"{spec['mode']}-{i}.sqlite")
        m = Mover(
            endpoint(spec["port"], src, spec["ca_file"]),
            endpoint(spec["port"], dst, spec["ca_file"]),
            state=state,
            options=opts,
        )
        return m, state

    me = os.getpid()
    with PeakSampler(lambda: [me]) as sampler:
        t0 = time.perf_counter()
        if spec["mode"] == "sequential":
            for i, (src, dst) in enumerate(pairs):
                m, state = mover(i, src, dst)
                asyncio.run(m.run())
                state.close()
        else:

            async def all_at_once() -> None:
                movers = [mover(i, s, d) for i, (s, d) in enumerate(pairs)]
                await asyncio.gather(*(m.run() for m, _ in movers))
                for _, st in movers:
                    st.close()

            asyncio.run(all_at_once())
        elapsed = time.perf_counter() - t0
    print(json.dumps({"elapsed": elapsed, "pss_kb": sampler.peak.get(me, 0)}))


def run_single_process(
    mode: str, pairs: list[tuple[str, str]], common: dict[str, Any]
) -> dict[str, Any]:
    spec = dict(common, mode=mode, pairs=pairs)
    r = subprocess.run(
        [sys.executable, __file__, "--child", json.dumps(spec)],
        capture_output=True,
        text=True,
        timeout=1800,
    )
    if r.returncode != 0:
        raise SystemExit(f"{mode} run failed:\n{r.stderr[-3000:]}")
    return json.loads(r.stdout.strip().splitlines()[-1])


# ---------------------------------------------------------------------- through the service


def run_service(
    work: Path, port: int, ca_file: str, pairs: list[tuple[str, str]], connections: int
) -> dict[str, Any]:
    from yippiemove.service.config import Settings
    from yippiemove.service.core import Account, Service

    settings = Settings.load(
        work / "service-data",
        ca_file=ca_file,
        workers=len(pairs),
        job_connections=connections,
        progress_interval=0.5,
    )
    svc = Service(settings)
    svc.start(len(pairs))
    try:
        uid = svc.create_user("bench@example.org", "bench password")
        with PeakSampler(lambda: svc.supervisor.running_jails().values()) as sampler:
            t0 = time.perf_counter()
            jobs = [
                svc.create_transfer(
                    uid,
                    Account("127.0.0.1", port, "starttls", src, PASSWORD),
                    Account("127.0.0.1", port, "starttls", dst, PASSWORD),
                )
                for src, dst in pairs
            ]
            pending = {j.id for j in jobs}
            while pending:
                for job_id in list(pending):
                    v = svc.get_transfer(uid, job_id)
                    if v.status in ("done", "failed", "cancelled"):
                        if v.status != "done":
                            raise SystemExit(f"job {job_id} {v.status}: {v.error}")
                        pending.discard(job_id)
                time.sleep(0.02)
            elapsed = time.perf_counter() - t0
        service_pss = pss_kb(os.getpid())
    finally:
        svc.stop()
        svc.close()
    peaks = sorted(sampler.peak.values())
    return {"elapsed": elapsed, "job_pss_kb": peaks, "service_pss_kb": service_pss}


def jail_startup_seconds(runs: int = 5) -> float:
    """Start-up of one job process: interpreter, imports, prctl (it exits on empty stdin)."""
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        subprocess.run(
            [sys.executable, "-P", "-m", "yippiemove.jobs.jail", "--parent", str(os.getpid())],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            cwd=tempfile.gettempdir(),
        )
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


# ---------------------------------------------------------------------- main


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--jobs", type=int, default=8, help="concurrent transfers (default 8)")
    ap.add_argument("--messages", type=int, default=400, help="messages per mailbox (default 400)")
    ap.add_argument("--connections", type=int, default=2, help="folder workers per transfer")
    ap.add_argument("--workdir", default="/dev/shm" if Path("/dev/shm").is_dir() else None)
    ap.add_argument("--output", help="also write the figures to this JSON file")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        single_process_child(args)
        return

    from tests import mailcheck

    from yippiemove.testing.dovecot import DovecotServer, MaildirMessage

    n = args.jobs
    work = Path(tempfile.mkdtemp(prefix="ymiso-", dir=args.workdir))
    work.chmod(0o711)  # Dovecot's mail processes (user dovecot) must reach the mail
    users = {}
    for i in range(n):
        for role in ("src", "svc", "seq", "con"):
            users[f"{role}{i}"] = PASSWORD
    try:
        with DovecotServer(work / "dovecot", users=users, mail_root=work / "mail") as server:
            total_bytes = 0
            for i in range(n):
                by_folder: dict[str, list[MaildirMessage]] = {}
                for folder, raw in corpus(args.messages, seed=i):
                    by_folder.setdefault(folder, []).append(MaildirMessage(raw))
                    total_bytes += len(raw)
                for folder, items in by_folder.items():
                    server.deliver_many(f"src{i}", folder, items)
            total_msgs = n * args.messages
            ca = str(server.ca_file)
            common = {
                "work": str(work),
                "port": server.port,
                "ca_file": ca,
                "connections": args.connections,
            }
            print(
                f"{n} transfers x {args.messages} messages ({total_bytes / n / 1e6:.1f} MB each), "
                f"{total_msgs} messages, {total_bytes / 1e6:.1f} MB in all; "
                f"{args.connections} connection(s) per side per transfer; {os.cpu_count()} CPUs",
                flush=True,
            )
            startup = jail_startup_seconds()
            svc = run_service(
                work, server.port, ca, [(f"src{i}", f"svc{i}") for i in range(n)], args.connections
            )
            seq = run_single_process(
                "sequential", [(f"src{i}", f"seq{i}") for i in range(n)], common
            )
            con = run_single_process(
                "concurrent", [(f"src{i}", f"con{i}") for i in range(n)], common
            )

            # Every copy exact, message by message.
            for i in range(n):
                want = mailcheck.snapshot(server.port, f"src{i}", PASSWORD)
                for role in ("svc", "seq", "con"):
                    got = mailcheck.snapshot(server.port, f"{role}{i}", PASSWORD)
                    if any(got.get(f) != msgs for f, msgs in want.items()):
                        raise SystemExit(f"{role}{i} is not an exact copy of src{i}")
    finally:
        shutil.rmtree(work, ignore_errors=True)

    def row(name: str, elapsed: float) -> str:
        return (
            f"  {name:<34} {elapsed:7.2f} s  {total_bytes / elapsed / 1e6:7.1f} MB/s  "
            f"{total_msgs / elapsed:8.0f} msgs/s"
        )

    job_pss = [k / 1024 for k in svc["job_pss_kb"]]
    print("\nThroughput (all transfers, wall clock):")
    print(row(f"service ({n} job processes at once)", svc["elapsed"]))
    print(row("one process, one after another", seq["elapsed"]))
    print(row(f"one process, {n} at once", con["elapsed"]))
    print("\nMemory (PSS, peak):")
    print(
        f"  per job process: median {statistics.median(job_pss):.1f} MB, "
        f"max {max(job_pss):.1f} MB, all {n}: {sum(job_pss):.1f} MB"
    )
    print(f"  the service process itself: {(svc['service_pss_kb'] or 0) / 1024:.1f} MB")
    print(f"  one process, one after another: {seq['pss_kb'] / 1024:.1f} MB")
    print(f"  one process, {n} at once: {con['pss_kb'] / 1024:.1f} MB")
    print(f"\nJob process start-up (interpreter + imports): {startup * 1000:.0f} ms")
    print(
        f"Service vs one process one after another: {seq['elapsed'] / svc['elapsed']:.2f}x the "
        f"throughput; vs one process all at once: {con['elapsed'] / svc['elapsed']:.2f}x"
    )
    print("All copies verified exact (imaplib, message by message).")
    if args.output:
        Path(args.output).write_text(
            json.dumps(
                {
                    "jobs": n,
                    "messages_per_job": args.messages,
                    "bytes_total": total_bytes,
                    "connections": args.connections,
                    "cpus": os.cpu_count(),
                    "service": svc,
                    "sequential": seq,
                    "concurrent": con,
                    "jail_startup_s": startup,
                },
                indent=1,
            )
        )


if __name__ == "__main__":
    main()
