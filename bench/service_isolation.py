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
sampled every 200 ms (reading smaps_rollup costs CPU too); per job process its peak, for the single processes theirs.  Every
destination is then checked message by message (``tests/mailcheck.py``, imaplib).

Run it (needs Debian's dovecot-imapd, as the tests do)::

    .venv/bin/python bench/service_isolation.py                 # 8 jobs x 400 messages, 3 rounds
    .venv/bin/python bench/service_isolation.py --jobs 4 --messages 1000 --connections 2
    .venv/bin/python bench/service_isolation.py --output /tmp/iso.json

It takes about a minute with the defaults; figures are medians of ``--repeat`` rounds
(the order of the three ways is rotated each round).  Figures depend on the machine: compare the
rows of one run, not runs on different machines.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import resource
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

    def __init__(self, pids: Any, interval: float = 0.2) -> None:
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
    """Runs in its own process: the service, or the movers (only they imported)."""
    from yippiemove.transfer.engine import Mover
    from yippiemove.transfer.model import Options
    from yippiemove.transfer.state import State

    spec = json.loads(args.child)
    work = Path(spec["work"])
    pairs = spec["pairs"]
    if spec["mode"].startswith("service"):
        print(json.dumps(run_service(work, spec["port"], spec["ca_file"], pairs, spec)))
        return
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


def run_in_child(mode: str, pairs: list[tuple[str, str]], common: dict[str, Any]) -> dict[str, Any]:
    spec = dict(common, mode=mode, pairs=pairs)
    before = _cpu(resource.RUSAGE_CHILDREN)
    r = subprocess.run(
        [sys.executable, __file__, "--child", json.dumps(spec)],
        capture_output=True,
        text=True,
        timeout=1800,
    )
    if r.returncode != 0:
        raise SystemExit(f"{mode} run failed:\n{r.stderr[-3000:]}")
    out = json.loads(r.stdout.strip().splitlines()[-1])
    # The child and its children: start-up and imports included (for the service: the
    # service process and its job processes).
    out["cpu"] = _cpu(resource.RUSAGE_CHILDREN) - before
    return out


# ---------------------------------------------------------------------- through the service


def run_service(
    work: Path, port: int, ca_file: str, pairs: list[tuple[str, str]], spec: dict[str, Any]
) -> dict[str, Any]:
    """All transfers through a fresh service at once; timed until the last one is done."""
    from yippiemove.service.config import Settings
    from yippiemove.service.core import Account, Service

    n = len(pairs)
    spawn = spec["mode"].partition("-")[2] or "fork"
    settings = Settings.load(
        work / f"service-data-{spawn}",
        ca_file=ca_file,
        workers=n,
        job_connections=spec["connections"],
        progress_interval=0.5,
        job_spawn=spawn,
    )
    svc = Service(settings)
    svc.start(n)
    try:
        try:
            uid = svc.user_id_for_email("bench@example.org")
        except Exception:
            uid = svc.create_user("bench@example.org", "bench password")
        self0 = _cpu(resource.RUSAGE_SELF)
        me = os.getpid()

        def pids() -> list[int]:
            zygote = getattr(svc.supervisor.launcher, "zygote_pid", None)
            helpers = [me] + ([zygote] if zygote else [])
            return helpers + list(svc.supervisor.running_jails().values())

        with PeakSampler(pids) as sampler:
            t0 = time.perf_counter()
            wall0 = time.time()
            jobs = [
                svc.create_transfer(
                    uid,
                    Account("127.0.0.1", port, "starttls", src, PASSWORD),
                    Account("127.0.0.1", port, "starttls", dst, PASSWORD),
                )
                for src, dst in pairs
            ]
            pending = {j.id for j in jobs}
            pending_all = set(pending)
            while pending:
                time.sleep(0.2)  # a page polling its progress; finer would load the service
                for v in svc.list_transfers(uid):
                    if v.id in pending and v.status in ("done", "failed", "cancelled"):
                        if v.status != "done":
                            raise SystemExit(f"job {v.id} {v.status}: {v.error}")
                        pending.discard(v.id)
            elapsed = time.perf_counter() - t0
        cpu_service = _cpu(resource.RUSAGE_SELF) - self0
        # The end as the service recorded it (the polling above may lag by its period).
        finished = max(v.finished or 0 for v in svc.list_transfers(uid) if v.id in pending_all)
        elapsed = min(elapsed, finished - wall0)
        # CPU of each job process, measured where it was reaped (wait4).
        cpu_jobs = sum(
            v.progress.get("cpu_seconds", 0.0)
            for v in svc.list_transfers(uid)
            if v.id in {j.id for j in jobs}
        )
        zygote = getattr(svc.supervisor.launcher, "zygote_pid", None)
    finally:
        svc.stop()
        svc.close()
    service_pss = sampler.peak.pop(me, 0)
    zygote_pss = sampler.peak.pop(zygote, 0) if zygote else 0
    return {
        "elapsed": elapsed,
        "job_pss_kb": sorted(sampler.peak.values()),
        "service_pss_kb": service_pss,
        "zygote_pss_kb": zygote_pss,
        # The job processes, and the service process itself (supervisor threads,
        # database, this run's polling and sampling).
        "cpu_jobs": cpu_jobs,
        "cpu_service": cpu_service,
    }


def _cpu(who: int) -> float:
    ru = resource.getrusage(who)
    return ru.ru_utime + ru.ru_stime


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
    ap.add_argument("--repeat", type=int, default=3, help="rounds; figures are medians")
    ap.add_argument("--workdir", default="/dev/shm" if Path("/dev/shm").is_dir() else None)
    ap.add_argument("--output", help="also write the figures to this JSON file")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        single_process_child(args)
        return

    from tests import mailcheck

    from yippiemove.testing.dovecot import DovecotServer, MaildirMessage

    n, rounds = args.jobs, args.repeat
    modes = ("service-fork", "service-exec", "sequential", "concurrent")
    work = Path(tempfile.mkdtemp(prefix="ymiso-", dir=args.workdir))
    work.chmod(0o711)  # Dovecot's mail processes (user dovecot) must reach the mail
    users = {f"src{i}": PASSWORD for i in range(n)}
    for r in range(rounds):
        for mode in modes:
            users.update({f"{mode[-4:]}{r}x{i}": PASSWORD for i in range(n)})
    load_before = os.getloadavg()
    runs: dict[str, list[dict[str, Any]]] = {m: [] for m in modes}
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
                f"{args.connections} connection(s) per side per transfer; {os.cpu_count()} CPUs; "
                f"{rounds} round(s); load average before: {load_before[0]:.2f}",
                flush=True,
            )
            startup = jail_startup_seconds()
            for r in range(rounds):
                for k in range(len(modes)):
                    mode = modes[(r + k) % len(modes)]  # rotate the order each round
                    pairs = [(f"src{i}", f"{mode[-4:]}{r}x{i}") for i in range(n)]
                    res = run_in_child(mode, pairs, common)
                    runs[mode].append(res)
                    print(f"  round {r + 1}: {mode:<10} {res['elapsed']:6.2f} s", flush=True)

            # Every copy exact, message by message.
            for i in range(n):
                want = mailcheck.snapshot(server.port, f"src{i}", PASSWORD)
                for r in range(rounds):
                    for mode in modes:
                        user = f"{mode[-4:]}{r}x{i}"
                        got = mailcheck.snapshot(server.port, user, PASSWORD)
                        if any(got.get(f) != msgs for f, msgs in want.items()):
                            raise SystemExit(f"{user} is not an exact copy of src{i}")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    load_after = os.getloadavg()

    elapsed = {m: statistics.median(x["elapsed"] for x in runs[m]) for m in modes}

    def row(name: str, t: float) -> str:
        return (
            f"  {name:<34} {t:7.2f} s  {total_bytes / t / 1e6:7.1f} MB/s  "
            f"{total_msgs / t:8.0f} msgs/s"
        )

    print(f"\nThroughput (all transfers, wall clock, median of {rounds}):")
    print(row(f"service, fork ({n} job processes)", elapsed["service-fork"]))
    print(row(f"service, exec ({n} job processes)", elapsed["service-exec"]))
    print(row("one process, one after another", elapsed["sequential"]))
    print(row(f"one process, {n} at once", elapsed["concurrent"]))
    print("\nClient CPU time (user + sys, median; Dovecot's not included):")
    for mode in ("service-fork", "service-exec"):
        jobs = statistics.median(x["cpu_jobs"] for x in runs[mode])
        own = statistics.median(x["cpu_service"] for x in runs[mode])
        print(
            f"  service, {mode[8:]}: {jobs:.2f} s in the {n} job processes "
            f"({jobs / n:.2f} s each) + {own:.2f} s in the service process"
        )
    for mode, name in (("sequential", "one after another"), ("concurrent", f"{n} at once")):
        print(f"  one process, {name}: {statistics.median(x['cpu'] for x in runs[mode]):.2f} s")
    print("\nMemory (PSS, peak):")
    for mode in ("service-fork", "service-exec"):
        job_pss = [k / 1024 for x in runs[mode] for k in x["job_pss_kb"]]
        own = max(x["service_pss_kb"] or 0 for x in runs[mode]) / 1024
        zyg = max(x["zygote_pss_kb"] or 0 for x in runs[mode]) / 1024
        print(
            f"  service, {mode[8:]}: per job process median {statistics.median(job_pss):.1f} MB "
            f"(max {max(job_pss):.1f}); {n} jobs {statistics.median(job_pss) * n:.1f} MB; "
            f"the service process {own:.1f} MB" + (f", its zygote {zyg:.1f} MB" if zyg else "")
        )
    for mode, name in (("sequential", "one after another"), ("concurrent", f"{n} at once")):
        pss = statistics.median(x["pss_kb"] for x in runs[mode]) / 1024
        print(f"  one process, {name}: {pss:.1f} MB")
    print(f"\nExec'd job process start-up (interpreter + imports): {startup * 1000:.0f} ms")
    for mode in ("service-fork", "service-exec"):
        print(
            f"Service ({mode[8:]}) vs one process one after another: "
            f"{elapsed['sequential'] / elapsed[mode]:.2f}x the throughput; "
            f"vs one process all at once: {elapsed['concurrent'] / elapsed[mode]:.2f}x"
        )
    print(f"Load average after: {load_after[0]:.2f} (other work on the machine skews figures)")
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
                    "rounds": runs,
                    "median_elapsed": elapsed,
                    "jail_startup_s": startup,
                    "loadavg": [load_before, load_after],
                },
                indent=1,
            )
        )


if __name__ == "__main__":
    main()
