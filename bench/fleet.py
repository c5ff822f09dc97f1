#!/usr/bin/env python3
"""Traffic per machine: many concurrent TLS jobs through throttled links (issue 15).

    .venv/bin/python bench/fleet.py                        # 10, 50, 200, 500 jobs (long)
    .venv/bin/python bench/fleet.py --sizes 10,50          # what docs/benchmarks.md shows
    .venv/bin/python bench/fleet.py --quick                # 5 and 20 jobs, small mailboxes
    .venv/bin/python bench/fleet.py --sizes 2 --no-throttle --no-peer --no-single  # smoke
    .venv/bin/python bench/fleet.py --hosts 1,2,3 --jobs 60 --recovery  # root: worker
                                          # hosts in namespaces (bench/fleet_hosts.py)

What it builds (all on this machine, torn down at the end):

* **Provider-like servers**: one throwaway Dovecot (``yippiemove.testing.dovecot``, mail
  on tmpfs) with implicit TLS (its ``imaps`` listener; the certificate comes from the
  launcher's own test CA, made with openssl, which the movers trust with ``ca_file``),
  one source account per job and one fresh destination account per job and run.  Each
  source is a small real-world mailbox: ``--messages`` (default 150) messages of
  ``bench/corpus.py``'s ``small`` shape (realistic headers, QP text, multipart, a few
  attachments, flags, keywords, dates, exact duplicates) in 3 folders, a different seed
  per account, plus ``--real-world`` messages of ``../shared/corpus/real-world`` (bounces,
  broken MIME, bare LF/CR line endings) in INBOX.
* **Throttled links**: every connection of every job goes through
  ``bench/latency_proxy.py`` with ``--rtt-ms`` (default 40) of round trip and a cap of
  ``--rate-mbps`` (default 2 MB/s) per connection and direction; ``--proxies`` processes
  (default: one per CPU) share one port with SO_REUSEPORT.  The proxies count the bytes
  both ways (aggregate IMAP traffic, TLS records included) and their own CPU, which is
  reported apart: it is the bench's cost, not ours.
* **Runs**, for each N of ``--sizes``: ``yippiemove serve`` (embedded SQLite control
  database and queue, ``--workers N`` local workers, one process per job forked from the
  zygote) gets N transfers through the REST API (``POST /api/v1/transfers``), all at
  once; a dashboard-like client polls the job list every ``--poll`` seconds until every
  job has ended.  Then **the peer**: one Python process that runs the same N transfers
  concurrently in one asyncio loop through the transfer engine API (``prepare`` +
  ``Mover``, the same options a job gets; no service, no job processes), into fresh
  destination accounts through the same links.  Every destination of both is compared
  with its source (``bench/snapshot.py``: SHA-256 of every message's bytes, flags,
  keywords, INTERNALDATE, size, multiplicity).
* **One job alone**: ``yippiemove move`` of a ``small`` mailbox (``--single-preset``;
  20,000 messages, 157 MB, 15 folders, as ``bench/run.py``) over implicit TLS, straight to Dovecot (loopback) and
  through the proxy with ``--rtt-ms`` of round trip and no bandwidth cap, alternating,
  ``--single-runs`` times each; the ratio of the medians is the issue's "one job over a
  40 ms round trip with TLS, >= 80% of its loopback speed".

Measured per run (see docs/benchmarks.md "Traffic per machine" for the columns): wall
time (first POST to the last job's ``finished``), aggregate MB/s in + out at the proxies,
messages/s, CPU seconds of the service and its job processes (``/proc`` utime + stime +
cutime + cstime of the service process and of its zygote, which reaps every job process),
CPU seconds per GB of mail moved, PSS per job process (``/proc/PID/smaps_rollup``,
sampled every ``--sample`` seconds while it runs: shared pages divided among their
users; median and maximum of each job's peak), the service process's own CPU per job
and its peak RSS, Dovecot's CPU, the proxies' CPU, and how many CPUs were busy.

The table is printed and written to ``bench/results/fleet-<UTC time>.md`` (with a JSON
beside it); the exit status is 1 when a destination is not exact or a job failed.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(ROOT / "src"))

import corpus  # noqa: E402
import measure  # noqa: E402
import snapshot  # noqa: E402

PASSWORD = "fleet-bench-password"
CUSTOMER = "fleet-bench@example.org"
CUSTOMER_PASSWORD = "fleet bench customer password"
REAL_WORLD = ROOT.parent / "shared" / "corpus" / "real-world"
FOLDERS = (("INBOX", 0.5), ("Sent", 0.25), ("Archive", 0.25))
TICK = os.sysconf("SC_CLK_TCK")

# Dovecot for hundreds of TLS clients: one imap process per connection (as always), the
# TLS of all connections in a few imap-login processes ("high-performance mode"), and
# limits above what 500 jobs x 3 connection pairs need.
DOVECOT_SCALE = """
default_process_limit = 10000
default_client_limit = 40000
default_vsz_limit = 512M
service imap-login {
  service_count = 0
  process_min_avail = 2
  process_limit = 64
  client_limit = 20000
}
service imap {
  process_limit = 20000
}
"""


# ------------------------------------------------------------------ /proc helpers


def _stat(pid: int) -> list[bytes] | None:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            raw = f.read()
    except OSError:
        return None
    return raw[raw.rfind(b")") + 2 :].split()


def cpu_seconds(pid: int | None, children: bool = True) -> float:
    """utime + stime (+ cutime + cstime: reaped children) of a live process."""
    fields = _stat(pid) if pid else None
    if fields is None or len(fields) < 15:
        return 0.0
    ticks = int(fields[11]) + int(fields[12])
    if children:
        ticks += int(fields[13]) + int(fields[14])
    return ticks / TICK


def children_of(parents: Iterable[int]) -> dict[int, int]:
    """{pid: ppid} of the live processes whose parent is one of ``parents``: from
    ``/proc/PID/task/TID/children`` (cheap), else by a scan of ``/proc``."""
    want = set(parents)
    out: dict[int, int] = {}
    try:
        for ppid in want:
            for task in os.scandir(f"/proc/{ppid}/task"):
                with open(f"{task.path}/children") as f:
                    out.update((int(pid), ppid) for pid in f.read().split())
        return out
    except FileNotFoundError:
        if any(os.path.exists(f"/proc/{ppid}") for ppid in want):
            out.clear()  # no CONFIG_PROC_CHILDREN: scan
        else:
            return out
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            fields = _stat(int(entry.name))
            if fields and fields[0] != b"Z" and int(fields[1]) in want:
                out[int(entry.name)] = int(fields[1])
    return out


def _rollup(pid: int, key: str) -> int | None:
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                if line.startswith(key):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def pss_kb(pid: int) -> int | None:
    return _rollup(pid, "Pss:")


def rss_kb(pid: int) -> int | None:
    return _rollup(pid, "Rss:")


def cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def raise_nofile() -> tuple[int, int]:
    """Open-file limit up to what the kernel allows (as root) or the hard limit; the
    service, Dovecot and the proxies inherit it.  Returns the new (soft, hard)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = 1 << 20
    if os.geteuid() == 0:
        with contextlib.suppress(OSError, ValueError):
            want = int(Path("/proc/sys/fs/nr_open").read_text())
        with contextlib.suppress(OSError, ValueError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (want, want))
            return want, want
    with contextlib.suppress(OSError, ValueError):
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        return hard, hard
    return soft, hard


def _limit_nofile(n: int) -> None:
    """In the child before exec: soft and hard RLIMIT_NOFILE to ``n``."""
    resource.setrlimit(resource.RLIMIT_NOFILE, (n, n))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# ------------------------------------------------------------------ the links


class ProxyPool:
    """``n`` latency_proxy.py processes sharing one port (SO_REUSEPORT)."""

    def __init__(
        self,
        target: int,
        rtt_ms: float,
        rate_mbps: float,
        n: int,
        buffer_mb: float,
        listen: str = "127.0.0.1",
    ) -> None:
        self.port = free_port()
        self.procs: list[subprocess.Popen[str]] = []
        for _ in range(n):
            p = subprocess.Popen(
                [
                    sys.executable,
                    str(HERE / "latency_proxy.py"),
                    "--target",
                    f"127.0.0.1:{target}",
                    "--listen",
                    f"{listen}:{self.port}",
                    "--delay-ms",
                    str(rtt_ms / 2),
                    "--rate-mbps",
                    str(rate_mbps),
                    "--buffer-mb",
                    str(buffer_mb),
                    "--reuse-port",
                ],
                stdout=subprocess.PIPE,
                text=True,
                start_new_session=True,
            )
            self.procs.append(p)
            assert p.stdout is not None
            line = p.stdout.readline()
            if not line.startswith("LISTENING"):
                self.stop()
                raise SystemExit(f"the proxy did not start: {line!r}")

    def stop(self) -> dict[str, float]:
        """Stop them; their summed STATS (bytes up/down, connections, cpu)."""
        total: dict[str, float] = {"up": 0, "down": 0, "connections": 0, "cpu": 0.0}
        for p in self.procs:
            with contextlib.suppress(ProcessLookupError):
                p.send_signal(signal.SIGTERM)
        for p in self.procs:
            try:
                out, _ = p.communicate(timeout=30)
            except subprocess.TimeoutExpired:
                p.kill()
                out, _ = p.communicate()
            for line in out.splitlines():
                if line.startswith("STATS "):
                    for k, v in json.loads(line[6:]).items():
                        total[k] = total.get(k, 0) + v
        self.procs = []
        return total


# ------------------------------------------------------------------ mailboxes


def fleet_preset(messages: int) -> corpus.Preset:
    """``bench/corpus.py``'s ``small`` shape, ``messages`` of them, in 3 folders."""
    small = corpus.PRESETS["small"]
    return corpus.Preset(
        f"fleet-{messages}",
        messages,
        small.text_median,
        small.big_share,
        small.big_min,
        small.big_max,
        small.small_attach_share,
        FOLDERS,
    )


def real_world_messages(limit_bytes: int = 256_000) -> list[bytes]:
    """The shared real-world corpus, except the empty file and the biggest ones."""
    if not REAL_WORLD.is_dir():
        return []
    out = []
    for path in sorted(REAL_WORLD.glob("*.eml")):
        raw = path.read_bytes()
        if 0 < len(raw) <= limit_bytes:
            out.append(raw)
    return out


def load_mailboxes(server: Any, users: list[str], messages: int, real_world: int) -> None:
    from yippiemove.testing.dovecot import MaildirMessage

    preset = fleet_preset(messages)
    extra = real_world_messages() if real_world else []
    for i, user in enumerate(users):
        for folder, msgs in corpus.generate(preset, seed=corpus.SEED + i):
            server.deliver_many(user, folder, list(msgs))
        if extra:
            pick = [extra[(i * real_world + k) % len(extra)] for k in range(real_world)]
            server.deliver_many(user, "INBOX", [MaildirMessage(raw) for raw in pick])


# ------------------------------------------------------------------ results


@dataclass
class Run:
    """One measured run: N transfers by the service, or by the one-process peer."""

    mode: str  # "service" | "peer"
    jobs: int
    wall: float = 0.0
    messages: int = 0
    mail_bytes: int = 0  # sum of the sources' RFC822.SIZE
    traffic_up: int = 0  # at the proxies: towards the servers
    traffic_down: int = 0
    connections: int = 0
    reconnects: int = 0  # the movers' own count (progress "reconnects"), summed
    cpu: float = 0.0  # service + job processes, or the peer process's transfers
    startup_cpu: float = 0.0  # the peer process's start-up (interpreter, imports)
    service_cpu: float = 0.0  # the service process alone (its threads), no children
    service_rss_kb: int = 0
    service_pss_kb: int = 0
    zygote_pss_kb: int = 0
    job_pss_kb: list[int] = field(default_factory=list)
    peer_pss_kb: int = 0
    dovecot_cpu: float = 0.0
    proxy_cpu: float = 0.0
    other_cpu: float = 0.0  # busy CPU of the machine not accounted for above
    posts_s: float = 0.0  # all POSTs answered after
    events: dict[str, int] = field(default_factory=dict)  # from the service's log
    event_examples: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    not_exact: list[str] = field(default_factory=list)

    @property
    def traffic(self) -> int:
        return self.traffic_up + self.traffic_down

    @property
    def cores(self) -> float:
        return (self.cpu + self.dovecot_cpu + self.proxy_cpu) / self.wall if self.wall else 0.0

    @property
    def exact(self) -> bool:
        return not self.failed and not self.not_exact

    def summary(self) -> dict[str, Any]:
        d = asdict(self)
        d.update(traffic=self.traffic, cores=self.cores, exact=self.exact)
        return d


# ------------------------------------------------------------------ the service


class Sampler:
    """Samples PSS of the job processes and the service's PSS/RSS while a run goes."""

    def __init__(self, service_pid: int, interval: float) -> None:
        self.service_pid = service_pid
        self.interval = interval
        self.zygote: int | None = None
        self.job_peak: dict[int, int] = {}
        self.service_rss = 0
        self.service_pss = 0
        self.zygote_pss = 0
        self.running_peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def find_zygote(self) -> int | None:
        for pid in children_of([self.service_pid]):
            if "--zygote" in cmdline(pid):
                self.zygote = pid
        return self.zygote

    def _run(self) -> None:
        while not self._stop.is_set():
            self.sample()
            self._stop.wait(self.interval)

    def sample(self) -> None:
        if self.zygote is None:
            self.find_zygote()
        kids = children_of([self.service_pid] + ([self.zygote] if self.zygote else []))
        jobs = [
            pid
            for pid, ppid in kids.items()
            if pid != self.zygote
            and (ppid == self.zygote or "yippiemove.jobs.jail" in cmdline(pid))
        ]
        self.running_peak = max(self.running_peak, len(jobs))
        for pid in jobs:
            v = pss_kb(pid)
            if v is not None and v > self.job_peak.get(pid, 0):
                self.job_peak[pid] = v
        self.service_rss = max(self.service_rss, rss_kb(self.service_pid) or 0)
        self.service_pss = max(self.service_pss, pss_kb(self.service_pid) or 0)
        if self.zygote:
            self.zygote_pss = max(self.zygote_pss, pss_kb(self.zygote) or 0)

    def __enter__(self) -> Sampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def service_env() -> dict[str, str]:
    """The service's settings for the bench (YIPPIEMOVE_* variables, docs/service.md)."""
    env = dict(os.environ)
    env.update(
        {
            # one customer orders every transfer: no per-customer limits
            "YIPPIEMOVE_CUSTOMER_MAX_RUNNING": "0",
            "YIPPIEMOVE_CUSTOMER_MAX_PENDING": "0",
            # the servers are on this machine
            "YIPPIEMOVE_EGRESS_ALLOW": "127.0.0.0/8",
            "PYTHONPATH": str(ROOT / "src"),
        }
    )
    return env


def start_service(
    data: Path, workers: int, ca: str, log: Path, nofile: int | None = None
) -> tuple[subprocess.Popen[bytes], str, str]:
    """`yippiemove serve` with its own data directory; (process, base URL, API token).
    ``nofile``: the service's soft and hard RLIMIT_NOFILE (default: inherited)."""
    env = service_env()
    # The customer and its API token, written before the service starts.
    code = (
        "import sys; from yippiemove.service.config import Settings; "
        "from yippiemove.service.core import Service; "
        "s = Service(Settings.load(sys.argv[1])); "
        "uid = s.create_user(sys.argv[2], sys.argv[3]); print(s.create_token(uid, 'bench')); "
        "s.close()"
    )
    tok = subprocess.run(
        [sys.executable, "-c", code, str(data), CUSTOMER, CUSTOMER_PASSWORD],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    if tok.returncode != 0:
        raise SystemExit(f"could not create the bench's customer:\n{tok.stderr[-2000:]}")
    token = tok.stdout.strip().splitlines()[-1]
    port = free_port()
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "yippiemove.cli",
                "serve",
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--data-dir",
                str(data),
                "--workers",
                str(workers),
                "--ca-file",
                ca,
            ],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=None if nofile is None else lambda: _limit_nofile(nofile),
        )
    base = f"http://127.0.0.1:{port}"
    import httpx

    deadline = time.monotonic() + 120
    while True:
        if proc.poll() is not None:
            raise SystemExit(f"yippiemove serve exited:\n{log.read_text()[-3000:]}")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(base + "/healthz", timeout=5).status_code == 200:
                break
        if time.monotonic() > deadline:
            proc.kill()
            raise SystemExit(f"yippiemove serve did not answer:\n{log.read_text()[-3000:]}")
        time.sleep(0.2)
    return proc, base, token


def stop_service(proc: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(ProcessLookupError):
        proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=60)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def account(port: int, user: str) -> dict[str, Any]:
    return {
        "host": "127.0.0.1",
        "port": port,
        "security": "tls",
        "username": user,
        "password": PASSWORD,
    }


#: What the service's log says about its jobs (its lines are "time logger message").
LOG_EVENTS: dict[str, str] = {
    "job processes started": r"job process \d+ started",
    "restarts": r"; restarting in ",
    "leases lost": r"lease lost",
    "hung (no output)": r"no output for",
    "progress writes failed": r"cannot write progress",
    "database is locked": r"database is locked",
    "too many open files": r"Too many open files",
    "supervisor errors": r"supervisor error",
    "failed": r": failed",
}


def service_log_summary(
    log: Path, events: dict[str, str] | None = None
) -> tuple[dict[str, int], list[str]]:
    """Counts of ``events`` (default LOG_EVENTS) in the service's log, and a few example
    lines (not the starts) with job ids and times cut off."""
    import re

    events = LOG_EVENTS if events is None else events
    counts = dict.fromkeys(events, 0)
    examples: list[str] = []
    patterns = {k: re.compile(v) for k, v in events.items()}
    try:
        text = log.read_text(errors="replace")
    except OSError:
        return counts, examples
    for line in text.splitlines():
        hit = [k for k, rx in patterns.items() if rx.search(line)]
        for k in hit:
            counts[k] += 1
        if hit and hit != ["job processes started"] and len(examples) < 5:
            short = re.sub(r"^\S+ \S+ ", "", line)
            short = re.sub(r"[0-9a-f]{32}", "JOB", short)[:200]
            if short not in examples:
                examples.append(short)
    return counts, examples


def run_service(bench: Bench, pairs: list[tuple[str, str]], data: Path) -> Run:
    """N transfers through `yippiemove serve` + the REST API; the run's figures."""
    import httpx

    n = len(pairs)
    run = Run("service", n)
    log = data.parent / f"{data.name}.log"
    proc, base, token = start_service(data, n, bench.ca, log)
    try:
        sampler = Sampler(proc.pid, bench.args.sample)
        # The zygote starts with the first job: its start-up (imports) counts in the
        # run's CPU then, as the cost of the service's first job.
        sampler.find_zygote()
        proxies = bench.proxies()
        client = httpx.Client(
            base_url=base, headers={"Authorization": f"Bearer {token}"}, timeout=300
        )
        try:
            cpu0 = cpu_seconds(proc.pid) + cpu_seconds(sampler.zygote)
            own0 = cpu_seconds(proc.pid, children=False)
            dove0 = measure.group_cpu_seconds(bench.dovecot_pgid)
            busy0 = measure.system_busy_seconds()
            self0 = cpu_seconds(os.getpid(), children=False)
            with sampler:
                t0 = time.time()
                ids: list[str] = []
                for src, dst in pairs:
                    r = client.post(
                        "/api/v1/transfers",
                        json={
                            "source": account(proxies.port, src),
                            "dest": account(proxies.port, dst),
                        },
                    )
                    if r.status_code != 201:
                        raise SystemExit(f"POST /transfers: {r.status_code} {r.text[:500]}")
                    ids.append(r.json()["id"])
                run.posts_s = time.time() - t0
                pending = set(ids)
                views: dict[str, dict[str, Any]] = {}
                deadline = time.monotonic() + bench.args.timeout
                while pending:
                    time.sleep(bench.args.poll)
                    if time.monotonic() > deadline:
                        raise SystemExit(
                            f"{len(pending)} of {n} jobs not done after {bench.args.timeout} s"
                        )
                    for v in client.get("/api/v1/transfers").json()["transfers"]:
                        if v["id"] in pending and v["status"] in ("done", "failed", "cancelled"):
                            pending.discard(v["id"])
                            views[v["id"]] = v
                end = time.time()
            finished = [v.get("finished") or end for v in views.values()]
            run.wall = min(end, max(finished)) - t0
            # CPU of the service and the job processes (reaped by the zygote)
            run.cpu = cpu_seconds(proc.pid) + cpu_seconds(sampler.zygote) - cpu0
            run.service_cpu = cpu_seconds(proc.pid, children=False) - own0
            run.dovecot_cpu = measure.group_cpu_seconds(bench.dovecot_pgid) - dove0
            busy = measure.system_busy_seconds() - busy0
            bench_self = cpu_seconds(os.getpid(), children=False) - self0
        finally:
            client.close()
            stats = proxies.stop()
        run.proxy_cpu = stats["cpu"]
        run.other_cpu = max(0.0, busy - run.cpu - run.dovecot_cpu - run.proxy_cpu - bench_self)
        run.traffic_up, run.traffic_down = int(stats["up"]), int(stats["down"])
        run.connections = int(stats["connections"])
        run.job_pss_kb = sorted(sampler.job_peak.values())
        run.service_rss_kb = sampler.service_rss
        run.service_pss_kb = sampler.service_pss
        run.zygote_pss_kb = sampler.zygote_pss
        run.reconnects = sum(int(v["progress"].get("reconnects") or 0) for v in views.values())
        for jid, v in views.items():
            if v["status"] != "done":
                run.failed.append(f"{jid}: {v['status']} {v.get('error')}")
    finally:
        stop_service(proc)
    run.events, run.event_examples = service_log_summary(log)
    return run


# ------------------------------------------------------------------ the peer


def peer_child(spec: dict[str, Any]) -> None:
    """In its own process: the N transfers at once in one asyncio loop (no service)."""
    from yippiemove.accounts import make_endpoint, ssl_context
    from yippiemove.transfer.model import Progress
    from yippiemove.transfer.run import make_options, prepare

    work = Path(spec["work"])
    ctx = ssl_context(spec["ca"])
    peak = [0]
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            peak[0] = max(peak[0], pss_kb(os.getpid()) or 0)
            stop.wait(spec["sample"])

    reconnects = [0]

    async def one(i: int, src: str, dst: str) -> str | None:
        transfer = prepare(
            make_endpoint(account(spec["port"], src), ctx, False),
            make_endpoint(account(spec["port"], dst), ctx, False),
            make_options(),  # what a job gets when the operator sets no connections
        )
        state = transfer.open_state(work / f"peer-{i}.sqlite")
        try:
            mover = transfer.mover(state=state, progress=Progress(), on_event=None)
            try:
                await mover.run()
            finally:
                reconnects[0] += mover.progress.reconnects
        except Exception as exc:  # reported, not raised: the others carry on
            return f"{src} -> {dst}: {type(exc).__name__}: {exc}"
        finally:
            state.close()
        return None

    async def all_at_once() -> list[str | None]:
        return await asyncio.gather(*(one(i, s, d) for i, (s, d) in enumerate(spec["pairs"])))

    def cpu() -> float:
        ru = resource.getrusage(resource.RUSAGE_SELF)
        return ru.ru_utime + ru.ru_stime

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    cpu0 = cpu()
    t0 = time.perf_counter()
    errors = asyncio.run(all_at_once())
    elapsed = time.perf_counter() - t0
    stop.set()
    thread.join()
    print(
        json.dumps(
            {
                "elapsed": elapsed,
                # the transfers' CPU, from the first connection to the last logout (the
                # interpreter's start-up and imports before, ~0.3 s, not counted)
                "cpu": cpu() - cpu0,
                "startup_cpu": cpu0,
                "pss_kb": peak[0],
                "reconnects": reconnects[0],
                "errors": [e for e in errors if e],
            }
        )
    )


def run_peer(bench: Bench, pairs: list[tuple[str, str]], work: Path) -> Run:
    n = len(pairs)
    run = Run("peer", n)
    work.mkdir(parents=True, exist_ok=True)
    proxies = bench.proxies()
    try:
        spec = {
            "work": str(work),
            "ca": bench.ca,
            "port": proxies.port,
            "pairs": pairs,
            "sample": bench.args.sample,
        }
        dove0 = measure.group_cpu_seconds(bench.dovecot_pgid)
        busy0 = measure.system_busy_seconds()
        t0 = time.perf_counter()
        r = subprocess.run(
            [sys.executable, __file__, "--peer-child", json.dumps(spec)],
            capture_output=True,
            text=True,
            timeout=bench.args.timeout,
            env=dict(os.environ, PYTHONPATH=str(ROOT / "src")),
        )
        run.dovecot_cpu = measure.group_cpu_seconds(bench.dovecot_pgid) - dove0
        busy = measure.system_busy_seconds() - busy0
        whole = time.perf_counter() - t0
    finally:
        stats = proxies.stop()
    if r.returncode != 0:
        raise SystemExit(f"the peer failed:\n{r.stderr[-3000:]}")
    out = json.loads(r.stdout.strip().splitlines()[-1])
    run.wall, run.cpu, run.peer_pss_kb = out["elapsed"], out["cpu"], out["pss_kb"]
    run.failed = out["errors"]
    run.reconnects = out["reconnects"]
    run.proxy_cpu = stats["cpu"]
    run.traffic_up, run.traffic_down = int(stats["up"]), int(stats["down"])
    run.connections = int(stats["connections"])
    run.startup_cpu = out["startup_cpu"]
    # Dovecot and the proxies were measured over the child's whole life: counted over
    # the transfers' part only, in proportion (they idle while it starts).
    share = min(1.0, run.wall / whole) if whole else 1.0
    run.other_cpu = max(0.0, busy - out["startup_cpu"] - run.cpu - run.dovecot_cpu - run.proxy_cpu)
    run.dovecot_cpu *= share
    run.proxy_cpu *= share
    return run


# ------------------------------------------------------------------ one job alone


def run_single(bench: Bench) -> dict[str, Any]:
    """`yippiemove move` of one mailbox: loopback TLS vs TLS through --rtt-ms; and,
    as a control, through the proxy with no delay (what the proxy alone costs: it shares
    the CPUs with the mover and Dovecot)."""
    args = bench.args
    pw = bench.work / "pw"
    pw.write_text(PASSWORD)
    kinds = ("loopback", "far", "proxy0")
    times: dict[str, list[float]] = {k: [] for k in kinds}
    proxy_cpu: dict[str, list[float]] = {k: [] for k in kinds}
    not_exact: list[str] = []
    src_snap = bench.source_snapshot("single")
    for r in range(args.single_runs):
        order = kinds[r % 3 :] + kinds[: r % 3]  # rotated each round
        for kind in order:
            dst = f"single-{kind}-{r}"
            proxies = (
                bench.proxies(rate_mbps=0.0, n=1, rtt_ms=0.0 if kind == "proxy0" else None)
                if kind != "loopback"
                else None
            )
            port = proxies.port if proxies else bench.server.tls_port
            state = bench.work / f"{dst}.sqlite"
            argv = [
                sys.executable,
                "-m",
                "yippiemove.cli",
                "move",
                "--source",
                f"imaps://single@127.0.0.1:{port}",
                "--dest",
                f"imaps://{dst}@127.0.0.1:{port}",
                "--source-password-file",
                str(pw),
                "--dest-password-file",
                str(pw),
                "--ca-file",
                bench.ca,
                "--state",
                str(state),
                "--no-progress",
            ]
            try:
                t0 = time.perf_counter()
                p = subprocess.run(
                    argv,
                    capture_output=True,
                    text=True,
                    timeout=args.timeout,
                    env=dict(os.environ, PYTHONPATH=str(ROOT / "src")),
                )
                elapsed = time.perf_counter() - t0
            finally:
                if proxies:
                    proxy_cpu[kind].append(proxies.stop()["cpu"])
            if p.returncode != 0:
                raise SystemExit(f"yippiemove move ({kind}) failed:\n{p.stderr[-3000:]}")
            times[kind].append(elapsed)
            exact, why = snapshot.compare(src_snap, bench.snapshot(dst))
            if not exact:
                not_exact.append(f"{dst}: {'; '.join(why)}")
            print(f"  one job alone, {kind:<8} run {r + 1}: {elapsed:6.2f} s", flush=True)
    med = {k: statistics.median(v) for k, v in times.items()}
    return {
        "messages": src_snap.total_messages,
        "mail_bytes": src_snap.total_bytes,
        "times": times,
        "median": med,
        "ratio": med["loopback"] / med["far"],
        # the round trip alone: the far run against the same proxy without delay
        "ratio_rtt_only": med["proxy0"] / med["far"],
        "proxy_cpu": proxy_cpu,
        "not_exact": not_exact,
    }


# ------------------------------------------------------------------ the bench


class Bench:
    def __init__(self, args: argparse.Namespace, work: Path) -> None:
        self.args = args
        self.work = work
        self.server: Any = None
        self.ca = ""
        self.dovecot_pgid = 0
        self._snaps: dict[str, snapshot.Snapshot] = {}

    def proxies(
        self,
        rate_mbps: float | None = None,
        n: int | None = None,
        rtt_ms: float | None = None,
        listen: str = "127.0.0.1",
    ) -> ProxyPool:
        a = self.args
        return ProxyPool(
            self.server.tls_port,
            a.rtt_ms if rtt_ms is None else rtt_ms,
            a.rate_mbps if rate_mbps is None else rate_mbps,
            n or a.proxies,
            a.buffer_mb,
            listen,
        )

    def snapshot(self, user: str) -> snapshot.Snapshot:
        return snapshot.snapshot(self.server.port, user, PASSWORD)

    def source_snapshot(self, user: str) -> snapshot.Snapshot:
        if user not in self._snaps:
            self._snaps[user] = self.snapshot(user)
        return self._snaps[user]

    def verify(self, run: Run, pairs: list[tuple[str, str]]) -> None:
        for src, dst in pairs:
            s = self.source_snapshot(src)
            exact, why = snapshot.compare(s, self.snapshot(dst))
            if not exact:
                run.not_exact.append(f"{dst}: {'; '.join(why)}")
            run.messages += s.total_messages
            run.mail_bytes += s.total_bytes


def fmt_table(runs: list[Run], ncpu: int) -> list[str]:
    head = (
        "| run | jobs | wall s | MB/s in+out | msgs/s | CPU s | CPU s/GB | PSS/job MB median / max "
        "| service CPU ms/job | service RSS MB | Dovecot CPU s | proxy CPU s | other CPU s "
        "| CPUs busy | exact |"
    )
    lines = [head, "|" + "---|" * 15]
    for r in runs:
        gb = r.mail_bytes / 1e9
        if r.mode == "service":
            pss = (
                f"{statistics.median(r.job_pss_kb) / 1024:.1f} / {max(r.job_pss_kb) / 1024:.1f}"
                if r.job_pss_kb
                else "-"
            )
            svc = f"{1000 * r.service_cpu / r.jobs:.0f}"
            rss = f"{r.service_rss_kb / 1024:.0f}"
            name = "service"
        else:
            pss = f"{r.peer_pss_kb / 1024 / r.jobs:.1f} (one process: {r.peer_pss_kb / 1024:.0f})"
            svc, rss, name = "-", "-", "one process"
        lines.append(
            f"| {name} | {r.jobs} | {r.wall:.1f} | {r.traffic / r.wall / 1e6:.1f} | "
            f"{r.messages / r.wall:.0f} | {r.cpu:.1f} | {r.cpu / gb:.0f} | {pss} | {svc} | {rss} | "
            f"{r.dovecot_cpu:.1f} | {r.proxy_cpu:.1f} | {r.other_cpu:.1f} | {r.cores:.2f} of {ncpu} | "
            f"{'yes' if r.exact else 'NO'} |"
        )
    return lines


def main() -> int:
    ap = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    ap.add_argument("--sizes", default="10,50,200,500", help="concurrent jobs per run")
    ap.add_argument("--messages", type=int, default=150, help="messages per mailbox (150)")
    ap.add_argument(
        "--real-world",
        type=int,
        default=3,
        help="messages of ../shared/corpus/real-world added to each mailbox (3; 0: none)",
    )
    ap.add_argument("--rtt-ms", type=float, default=40.0, help="round trip of a link (40)")
    ap.add_argument("--rate-mbps", type=float, default=2.0, help="per-connection cap, MB/s (2)")
    ap.add_argument("--no-throttle", action="store_true", help="no delay, no cap (smoke test)")
    ap.add_argument("--proxies", type=int, default=os.cpu_count() or 2, help="proxy processes")
    ap.add_argument("--buffer-mb", type=float, default=4.0, help="proxy buffer per direction")
    ap.add_argument("--no-peer", action="store_true", help="skip the one-process peer")
    ap.add_argument("--no-single", action="store_true", help="skip the one-job-alone runs")
    ap.add_argument("--single-runs", type=int, default=3, help="runs of each one-job case (3)")
    ap.add_argument(
        "--single-preset",
        choices=sorted(corpus.PRESETS),
        help="bench/corpus.py preset of the one-job mailbox (default small: 20,000 messages, "
        "the issue's reference; --quick: small-2k)",
    )
    ap.add_argument("--poll", type=float, default=2.0, help="seconds between list polls (2)")
    ap.add_argument("--sample", type=float, default=0.5, help="seconds between PSS samples")
    ap.add_argument("--timeout", type=float, default=1800.0, help="seconds per run at most")
    ap.add_argument(
        "--quiet-wait",
        type=float,
        default=10.0,
        help="before each run, wait up to this long for the machine to be idle (10; 0: don't)",
    )
    ap.add_argument("--quick", action="store_true", help="sizes 5,20, 60 messages, small single")
    ap.add_argument("--workdir", default="/dev/shm" if Path("/dev/shm").is_dir() else None)
    ap.add_argument("--output", help="markdown file (default bench/results/fleet-<time>.md)")
    ap.add_argument("--keep", action="store_true", help="keep the work directory")
    ap.add_argument(
        "--hosts",
        help="root only: the same --jobs jobs by 1, 2, 3... worker hosts in network "
        "namespaces sharing PostgreSQL + Redis (e.g. 1,2,3; bench/fleet_hosts.py)",
    )
    ap.add_argument("--jobs", type=int, default=60, help="--hosts: jobs per run (60)")
    ap.add_argument(
        "--recovery",
        action="store_true",
        help="--hosts: one more run on 2 hosts, host h1 killed once every job runs",
    )
    ap.add_argument(
        "--lease-seconds", type=float, default=10.0, help="--recovery: the workers' lease (10)"
    )
    ap.add_argument("--peer-child", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.peer_child:
        peer_child(json.loads(args.peer_child))
        return 0
    if args.hosts:
        if args.no_throttle:
            args.rtt_ms, args.rate_mbps = 0.0, 0.0
        args.host_counts = [int(x) for x in args.hosts.split(",") if x.strip()]
        import fleet_hosts

        return fleet_hosts.main(args)
    if args.quick:
        if args.sizes == ap.get_default("sizes"):
            args.sizes = "5,20"
        if args.messages == ap.get_default("messages"):
            args.messages = 60
    if args.no_throttle:
        args.rtt_ms, args.rate_mbps = 0.0, 0.0
    sizes = [int(x) for x in args.sizes.split(",") if x.strip()]

    from yippiemove.testing.dovecot import DovecotServer

    # SIGTERM as Ctrl-C: the finally blocks stop the service, the proxies and Dovecot
    # (a bench started in the background ignores SIGINT).
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    nofile = raise_nofile()
    ncpu = os.cpu_count() or 1
    stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    out_md = Path(args.output) if args.output else HERE / "results" / f"fleet-{stamp}.md"
    work = Path(tempfile.mkdtemp(prefix="ymfleet-", dir=args.workdir))
    work.chmod(0o711)  # Dovecot's mail processes (user dovecot) reach the mail
    bench = Bench(args, work)
    top = max(sizes)
    sources = [f"src{i}" for i in range(top)]
    users = {u: PASSWORD for u in sources}
    for n in sizes:
        for i in range(n):
            users[f"svc{n}x{i}"] = PASSWORD
            users[f"peer{n}x{i}"] = PASSWORD
    single_preset = corpus.PRESETS[args.single_preset or ("small-2k" if args.quick else "small")]
    if not args.no_single:
        users["single"] = PASSWORD
        for r in range(args.single_runs):
            users[f"single-loopback-{r}"] = PASSWORD
            users[f"single-far-{r}"] = PASSWORD
            users[f"single-proxy0-{r}"] = PASSWORD
    runs: list[Run] = []
    single: dict[str, Any] | None = None
    load0 = os.getloadavg()
    try:
        with DovecotServer(
            work / "dovecot", users=users, mail_root=work / "mail", extra_config=DOVECOT_SCALE
        ) as server:
            bench.server, bench.ca = server, str(server.ca_file)
            bench.dovecot_pgid = server._proc.pid  # the launcher starts it in its own session
            t0 = time.monotonic()
            load_mailboxes(server, sources, args.messages, args.real_world)
            if not args.no_single:
                corpus.load(server, "single", single_preset)
            # the sources' snapshots (also builds Dovecot's indexes before any run)
            for u in sources:
                bench.source_snapshot(u)
            per = bench.source_snapshot(sources[0])
            print(
                f"{top} source mailboxes of ~{per.total_messages} messages "
                f"({per.total_bytes / 1e6:.2f} MB each) loaded in {time.monotonic() - t0:.0f} s; "
                f"links: {args.rtt_ms:g} ms round trip, "
                f"{args.rate_mbps:g} MB/s per connection (0: no cap), {args.proxies} proxy "
                f"processes; TLS on every connection; {ncpu} CPUs; open-file limit {nofile[0]}",
                flush=True,
            )
            for k, n in enumerate(sizes):
                svc_pairs = [(f"src{i}", f"svc{n}x{i}") for i in range(n)]
                peer_pairs = [(f"src{i}", f"peer{n}x{i}") for i in range(n)]
                order = ("service", "peer") if k % 2 == 0 else ("peer", "service")
                for mode in order:
                    if mode == "peer" and args.no_peer:
                        continue
                    measure.wait_for_quiet(args.quiet_wait)
                    if mode == "service":
                        run = run_service(bench, svc_pairs, work / f"svc-{n}")
                        bench.verify(run, svc_pairs)
                    else:
                        run = run_peer(bench, peer_pairs, work / f"peer-{n}")
                        bench.verify(run, peer_pairs)
                    runs.append(run)
                    print(
                        f"  {n:4d} jobs, {mode:<7}: {run.wall:7.1f} s, "
                        f"{run.traffic / run.wall / 1e6:6.1f} MB/s in+out, "
                        f"{run.messages / run.wall:6.0f} msgs/s, CPU {run.cpu:.1f} s, "
                        f"{run.cores:.2f} CPUs busy, exact: {'yes' if run.exact else 'NO'}",
                        flush=True,
                    )
                    for line in (run.failed + run.not_exact)[:5]:
                        print(f"      {line}", flush=True)
            if not args.no_single:
                single = run_single(bench)
    finally:
        if args.keep:
            print(f"work directory kept: {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    load1 = os.getloadavg()

    lines = [
        f"# bench/fleet.py, {stamp} UTC",
        "",
        f"`{' '.join(['bench/fleet.py', *sys.argv[1:]])}`: {len(sources)} source mailboxes of "
        f"{per.total_messages} messages ({per.total_bytes / 1e6:.2f} MB); links "
        f"{args.rtt_ms:g} ms round trip, {args.rate_mbps:g} MB/s per connection and direction "
        f"(0: none); implicit TLS everywhere; {ncpu} CPUs; load average {load0[0]:.2f} before, "
        f"{load1[0]:.2f} after.",
        "",
        *fmt_table(runs, ncpu),
        "",
    ]
    by = {(r.mode, r.jobs): r for r in runs}
    for n in sizes:
        s, p = by.get(("service", n)), by.get(("peer", n))
        if s and p:
            # saturated: the machine's CPUs were busy (ours, the servers', the proxies'
            # and other people's work together) at least 90% of the run
            busy = [(r.cores * r.wall + r.other_cpu) / r.wall for r in (s, p)]
            sat = "CPUs saturated" if min(busy) >= 0.9 * ncpu else "CPUs not saturated"
            lines.append(
                f"- {n} jobs: service / one process = {p.wall / s.wall:.2f} of the throughput, "
                f"{s.cpu / p.cpu:.2f}x the CPU ({sat}: machine busy {busy[0]:.2f} / "
                f"{busy[1]:.2f} of {ncpu} CPUs, of which ours + servers + proxies "
                f"{s.cores:.2f} / {p.cores:.2f}); connections {s.connections} / "
                f"{p.connections}, reconnects {s.reconnects} / {p.reconnects}"
            )
    for r in runs:
        if r.mode == "service" and r.job_pss_kb:
            lines.append(
                f"- {r.jobs} jobs through the service: peak PSS per job process median "
                f"{statistics.median(r.job_pss_kb) / 1024:.1f} MB, max {max(r.job_pss_kb) / 1024:.1f} MB "
                f"({len(r.job_pss_kb)} sampled); CPU: service process {r.service_cpu:.1f} s, "
                f"zygote and job processes {r.cpu - r.service_cpu:.1f} s; "
                f"service process PSS {r.service_pss_kb / 1024:.0f} MB, "
                f"zygote {r.zygote_pss_kb / 1024:.0f} MB; all POSTs answered after {r.posts_s:.1f} s; "
                f"{r.connections} proxied connections ({r.reconnects} reconnects); other CPU on the machine {r.other_cpu:.1f} s; "
                "service log: "
                + ", ".join(f"{k} {v}" for k, v in r.events.items() if v)
                + "".join(f"\n  - `{e}`" for e in r.event_examples)
            )
    if single:
        lines.append(
            f"- one job alone ({single['messages']} messages, {single['mail_bytes'] / 1e6:.1f} MB, "
            f"implicit TLS): loopback {single['median']['loopback']:.2f} s, "
            f"{args.rtt_ms:g} ms round trip {single['median']['far']:.2f} s (no bandwidth cap): "
            f"{single['ratio']:.2f} of its loopback speed (target >= 0.8); through the proxy "
            f"with no delay {single['median']['proxy0']:.2f} s: with the proxy in both, the "
            f"round trip leaves {single['ratio_rtt_only']:.2f} of the speed (the proxy's own "
            f"CPU, {statistics.median(single['proxy_cpu']['far']):.1f} s a run, shares the "
            f"CPUs with the mover and Dovecot); runs (s): "
            + ", ".join(
                f"{k} {' '.join(f'{t:.2f}' for t in v)}" for k, v in single["times"].items()
            )
            + ("" if not single["not_exact"] else f"; NOT exact: {single['not_exact']}")
        )
    text = "\n".join(lines) + "\n"
    print("\n" + text)
    out_md.parent.mkdir(parents=True, exist_ok=True)
    out_md.write_text(text)
    out_md.with_suffix(".json").write_text(
        json.dumps(
            {
                "args": vars(args),
                "runs": [r.summary() for r in runs],
                "single": single,
                "loadavg": [load0, load1],
                "cpus": ncpu,
            },
            indent=1,
        )
    )
    print(f"written: {out_md}")
    bad = [r for r in runs if not r.exact] or (single and single["not_exact"])
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
