#!/usr/bin/env python3
"""Hundreds of transfers on one machine (issue 18): N jobs submitted at once through
the REST API of one `yippiemove serve`, a dashboard polling the job list meanwhile.

    .venv/bin/python bench/many_jobs.py                          # 10, 50, 100 jobs
    .venv/bin/python bench/many_jobs.py --sizes 10,50,100,200,500 --json out.json
    .venv/bin/python bench/many_jobs.py --sizes 100 --messages 20 --nofile 1024  # the test

What it builds (on this machine, torn down at the end): one throwaway Dovecot
(``yippiemove.testing.dovecot``, mail on tmpfs, process limits for thousands of
concurrent logins), one source account per job with a small mailbox (``--messages``,
default 150, of ``bench/corpus.py``'s messages with short texts in 3 folders: 0.61 MB; a few
distinct mailboxes generated once and written straight into the Maildirs, so 500
sources load in seconds), and one fresh destination account per job and size.

For each N of ``--sizes``: a fresh ``yippiemove serve`` (embedded defaults: SQLite
control database, local worker pool, ``--workers N``; under ``--nofile`` soft and hard
RLIMIT_NOFILE when given) gets N transfers through ``POST /api/v1/transfers``, all at
once from ``--post-threads`` client threads; meanwhile a dashboard polls
``GET /api/v1/transfers?limit=50`` every ``--poll`` seconds, another client GETs one
random transfer every 0.25 s, and the bench asks for one running and one queued job
every ``--end-poll`` (2) s to see when every job has ended (then reads the whole list,
``view=summary``, once).  Measured:

* wall: first POST to the last job's ``finished``; done / failed, and failed for a
  service-side reason ("internal error", "Too many open files", "database is locked"
  in the job's error);
* aggregate msgs/s and MB/s (the sources' messages and RFC822.SIZE over the wall), and
  as a ratio of the best size of the same run (the issue's target: >= 0.9 at 500);
* PSS per job: the peak of ``/proc/PID/smaps_rollup`` of each job process (the
  service's descendants under its zygote), sampled every ``--sample`` s; median, max;
* service CPU: utime + stime of the serve process itself (its threads; not the zygote
  nor the jobs, which are its children), per job and per job-second (job-seconds: the
  sum over jobs of finished - started);
* API latency during the burst: every POST (p50 / p99 / max), a job's GET and the list
  page (p50 / p99), and when the last POST was accepted;
* the service's log: "database is locked", "Too many open files", lease losses...

Verification (after each run, outside the measured time): every done job's destination
is compared with its source by ``bench/snapshot.py`` -- an independent imaplib client,
per folder the multiset of (SHA-256 of the message's bytes, flags + keywords,
INTERNALDATE, RFC822.SIZE).  This is the full check, not a sample: 200 mailboxes of
150 messages take about 4 s on 4 threads, small next to the run.  (A failed job is
counted as failed; its destination is partial by nature and is not compared.)

The exit status is 1 when a job did not end ``done``, a destination is not exact, or the
service's log shows a lock or descriptor error.  ``--json FILE`` writes every figure.
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import os
import random
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(ROOT / "src"))

import corpus  # noqa: E402
import fleet  # noqa: E402
import measure  # noqa: E402
import snapshot  # noqa: E402

PASSWORD = fleet.PASSWORD
#: How many different mailboxes are generated; source i gets mailbox i % DISTINCT.
DISTINCT = 8
#: A failed job's error that is the service's fault, not the customer's mailbox's (also
#: whatever the project's own classifier calls "internal": job process, lease...).
SERVICE_SIDE = re.compile(r"internal error|Too many open files|database is locked", re.I)


def service_side(error: str) -> bool:
    if SERVICE_SIDE.search(error):
        return True
    try:
        from yippiemove.policy.failures import kind_of_text
    except ImportError:  # older code
        return False
    return kind_of_text(error) == "internal"


ENDED = ("done", "failed", "cancelled")
#: What the service's log says (bench/fleet.py's list, and the descriptor budget's
#: visible waits: not failures, but worth knowing under --nofile).
LOG_EVENTS = dict(
    fleet.LOG_EVENTS,
    **{
        "internal errors": r"internal error",
        "waited for descriptors": r"limit of open files",
    },
)


# ------------------------------------------------------------------ figures


def pct(values: list[float], q: float) -> float:
    """The ``q`` quantile (0..1) of ``values``, nearest rank; 0 when empty."""
    if not values:
        return 0.0
    s = sorted(values)
    return s[min(len(s) - 1, max(0, round(q * len(s) + 0.5) - 1))]


@dataclass
class Size:
    """One run: N transfers at once through the service."""

    jobs: int
    nofile: int | None = None
    workers: int = 0  # serve --workers
    wall: float = 0.0
    done: int = 0
    failed: int = 0
    failed_service: int = 0
    messages: int = 0
    mail_bytes: int = 0
    job_pss_kb: list[int] = field(default_factory=list)
    running_peak: int = 0
    service_cpu: float = 0.0
    total_cpu: float = 0.0  # serve, zygote and job processes
    #: worker processes running the jobs beside `serve --workers 0` (0: serve runs them)
    supervisors: int = 0
    dovecot_cpu: float = 0.0
    other_cpu: float = 0.0  # busy CPU of the machine not ours, Dovecot's or the bench's
    cpu_window: float = 0.0  # seconds over which the CPU figures were taken
    job_seconds: float = 0.0
    #: Supervision alone (``--throttle``): the service's CPU while every job ran and none
    #: started or ended (from the last start to the first end), per job-second; None
    #: when that window is shorter than 2 s (jobs did not all run at once).
    steady_window: float = 0.0
    steady_cpu: float = 0.0
    posts_s: float = 0.0  # all POSTs accepted after
    post_rejected: int = 0  # answers other than 201 (retried)
    post_lat: list[float] = field(default_factory=list)
    get_lat: list[float] = field(default_factory=list)
    list_lat: list[float] = field(default_factory=list)
    events: dict[str, int] = field(default_factory=dict)
    event_examples: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)  # failed jobs' errors (a few)
    statuses: list[str] = field(default_factory=list)  # each pair's job's end, in order
    not_exact: list[str] = field(default_factory=list)

    @property
    def msgs_s(self) -> float:
        return self.messages / self.wall if self.wall else 0.0

    @property
    def mb_s(self) -> float:
        return self.mail_bytes / 1e6 / self.wall if self.wall else 0.0

    @property
    def supervision_ms_per_job_s(self) -> float | None:
        if self.steady_window < 2.0:
            return None
        return 1000 * self.steady_cpu / (self.jobs * self.steady_window)

    @property
    def lock_errors(self) -> int:
        return self.events.get("database is locked", 0)

    @property
    def fd_errors(self) -> int:
        return self.events.get("too many open files", 0)

    @property
    def fd_waits(self) -> int:
        return self.events.get("waited for descriptors", 0)

    @property
    def ok(self) -> bool:
        return (
            self.done == self.jobs
            and not self.not_exact
            and not self.lock_errors
            and not self.fd_errors
        )

    def figures(self) -> dict[str, Any]:
        d = asdict(self)
        for k in ("post_lat", "get_lat", "list_lat"):
            lat = d.pop(k)
            d[k] = {
                "n": len(lat),
                "p50": pct(lat, 0.5),
                "p99": pct(lat, 0.99),
                "max": max(lat, default=0.0),
            }
        d["job_pss_kb"] = {
            "n": len(self.job_pss_kb),
            "median": statistics.median(self.job_pss_kb) if self.job_pss_kb else 0,
            "max": max(self.job_pss_kb, default=0),
        }
        d.update(
            msgs_s=self.msgs_s,
            mb_s=self.mb_s,
            lock_errors=self.lock_errors,
            fd_errors=self.fd_errors,
            fd_waits=self.fd_waits,
            service_cpu_ms_per_job=1000 * self.service_cpu / self.jobs,
            service_cpu_ms_per_job_s=(
                1000 * self.service_cpu / self.job_seconds if self.job_seconds else 0.0
            ),
            supervision_ms_per_job_s=self.supervision_ms_per_job_s,
            ok=self.ok,
        )
        return d


# ------------------------------------------------------------------ mailboxes


def preset(messages: int) -> corpus.Preset:
    """``bench/corpus.py``'s messages (realistic headers, QP text, flags, keywords,
    dates, duplicates) with short texts and 2% with small attachments, in 3 folders:
    150 messages are 0.61 MB over IMAP (CRLF), near the issue's "~550 KB" mailbox."""
    return corpus.Preset(f"many-{messages}", messages, 200, 0.0, 0, 0, 0.02, fleet.FOLDERS)


def load_sources(server: Any, users: list[str], messages: int) -> None:
    """``DISTINCT`` mailboxes generated once, written into every source's Maildir."""
    preset_ = preset(messages)
    boxes = [
        [(folder, list(msgs)) for folder, msgs in corpus.generate(preset_, seed=corpus.SEED + k)]
        for k in range(min(DISTINCT, len(users)))
    ]
    for i, user in enumerate(users):
        for folder, msgs in boxes[i % len(boxes)]:
            server.deliver_many(user, folder, msgs)


# ------------------------------------------------------------------ one run


class Clients:
    """The dashboard (list page every ``poll`` s) and a job watcher (a random job's GET
    every 0.25 s), each on its own connection, timing every answer."""

    def __init__(self, base: str, token: str, poll: float) -> None:
        self.base, self.headers, self.poll = base, {"Authorization": f"Bearer {token}"}, poll
        self.ids: list[str] = []  # accepted so far (appended by the POST threads)
        self.list_lat: list[float] = []
        self.get_lat: list[float] = []
        self._stop = threading.Event()
        self._threads = [
            threading.Thread(target=self._dashboard, daemon=True),
            threading.Thread(target=self._watcher, daemon=True),
        ]

    def _loop(self, every: float, request: Any, out: list[float]) -> None:
        import httpx

        with httpx.Client(base_url=self.base, headers=self.headers, timeout=120) as c:
            while not self._stop.is_set():
                t = time.perf_counter()
                if request(c):
                    out.append(time.perf_counter() - t)
                self._stop.wait(max(0.0, every - (time.perf_counter() - t)))

    def _dashboard(self) -> None:
        def page(c: Any) -> bool:
            return c.get("/api/v1/transfers", params={"limit": 50}).status_code == 200

        self._loop(self.poll, page, self.list_lat)

    def _watcher(self) -> None:
        rng = random.Random(18)

        def one(c: Any) -> bool:
            if not self.ids:
                return False
            return c.get(f"/api/v1/transfers/{rng.choice(self.ids)}").status_code == 200

        self._loop(0.25, one, self.get_lat)

    def __enter__(self) -> Clients:
        for t in self._threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for t in self._threads:
            t.join()


def submit(client: Any, body: dict[str, Any], run: Size, lock: threading.Lock) -> str:
    """POST one transfer until it is accepted (201); every answer's time is kept."""
    for attempt in range(60):
        t = time.perf_counter()
        r = client.post("/api/v1/transfers", json=body)
        lat = time.perf_counter() - t
        with lock:
            run.post_lat.append(lat)
            if r.status_code != 201:
                run.post_rejected += 1
        if r.status_code == 201:
            return str(r.json()["id"])
        if r.status_code < 500 and r.status_code != 429:
            raise SystemExit(f"POST /transfers: {r.status_code} {r.text[:500]}")
        time.sleep(min(2.0, 0.1 * (attempt + 1)))
    raise SystemExit("POST /transfers: not accepted after 60 tries")


def all_views(client: Any) -> list[dict[str, Any]]:
    """Every transfer of the customer, a summary page at a time."""
    views: list[dict[str, Any]] = []
    cursor = None
    while True:
        params: dict[str, Any] = {"limit": 200, "view": "summary"}
        if cursor:
            params["cursor"] = cursor
        body = client.get("/api/v1/transfers", params=params).json()
        views.extend(body["transfers"])
        cursor = body.get("next_cursor")
        if not cursor:
            return views


def account(
    args: argparse.Namespace, server: Any, user: str, via: int | None = None
) -> dict[str, Any]:
    port = via or (server.tls_port if args.security == "tls" else server.port)
    return {
        "host": "127.0.0.1",
        "port": port,
        "security": args.security,
        "username": user,
        "password": PASSWORD,
    }


def workers_for(args: argparse.Namespace, n: int) -> int:
    """``--workers``, else one per job, but no more than the service takes under
    ``--nofile`` (it refuses to start with more: jobs/descriptors.py)."""
    if args.workers:
        return int(args.workers)
    if args.nofile is None:
        return n
    try:
        from yippiemove.jobs.descriptors import FdBudget
    except ImportError:  # code before issue 18's descriptor budget
        return n
    return max(1, min(n, FdBudget().capacity(args.nofile)))


def run_size(
    args: argparse.Namespace, server: Any, pairs: list[tuple[str, str]], data: Path
) -> Size:
    import httpx

    n = len(pairs)
    run = Size(n, args.nofile, workers_for(args, n))
    run.supervisors = args.supervisors
    log = data.parent / f"{data.name}.log"
    proc, base, token = fleet.start_service(
        data,
        0 if args.supervisors else run.workers,
        str(server.ca_file),
        log,
        nofile=args.nofile,
    )
    # --supervisors K: the web and API in `serve --workers 0`, the jobs in K `yippiemove
    # worker` processes on the same data directory (SQLite control database and queue).
    workers = [
        start_worker(args, data, i, -(-run.workers // args.supervisors), str(server.ca_file))
        for i in range(args.supervisors)
    ]
    logs = [log] + [w[1] for w in workers]
    supervising = [w[0] for w in workers] or [proc]
    try:
        samplers = [fleet.Sampler(p.pid, args.sample) for p in supervising]
        for one in samplers:
            one.find_zygote()
        client = httpx.Client(
            base_url=base,
            headers={"Authorization": f"Bearer {token}"},
            timeout=300,
            limits=httpx.Limits(max_connections=args.post_threads + 1),
        )
        lock = threading.Lock()
        try:
            own0 = own_cpu(proc, supervising)
            all0 = all_cpu(proc, supervising, samplers)
            dove0 = measure.group_cpu_seconds(server._proc.pid)
            busy0 = measure.system_busy_seconds()
            self0 = fleet.cpu_seconds(os.getpid(), children=False)
            with contextlib.ExitStack() as sampling, Clients(base, token, args.poll) as clients:
                for one in samplers:
                    sampling.enter_context(one)
                via = None
                if args.throttle:
                    # Every source connection through a link of --throttle bytes/s: jobs
                    # that wait on their servers, as with real providers.
                    target = server.tls_port if args.security == "tls" else server.port
                    links = fleet.ProxyPool(target, 0.0, args.throttle / 1e6, 1, 1.0)
                    sampling.callback(links.stop)
                    via = links.port
                cpu_samples = sampling.enter_context(
                    CpuSamples(lambda: own_cpu(proc, supervising), args.sample)
                )
                t0 = time.time()

                def post(pair: tuple[str, str]) -> str:
                    body = {
                        "source": account(args, server, pair[0], via),
                        "dest": account(args, server, pair[1]),
                    }
                    jid = submit(client, body, run, lock)
                    clients.ids.append(jid)
                    return jid

                with ThreadPoolExecutor(args.post_threads) as pool:
                    ids = list(pool.map(post, pairs))
                run.posts_s = time.time() - t0
                pending = set(ids)
                views: dict[str, dict[str, Any]] = {}
                deadline = time.monotonic() + args.timeout
                while pending:
                    time.sleep(args.end_poll)
                    if time.monotonic() > deadline:
                        raise SystemExit(
                            f"{len(pending)} of {n} jobs not ended after {args.timeout} s"
                        )
                    # Cheap while jobs run: one page of each unended status (the
                    # bench's own watching must not be the load it measures); the
                    # whole list only once none seems left (a job that changed status
                    # between the two reads is caught there).
                    if any(
                        client.get(
                            "/api/v1/transfers",
                            params={"limit": 1, "view": "summary", "status": st},
                        ).json()["transfers"]
                        for st in ("running", "queued")
                    ):
                        continue
                    for v in all_views(client):
                        if v["id"] in pending and v["status"] in ENDED:
                            pending.discard(v["id"])
                            views[v["id"]] = v
                end = time.time()
            run.service_cpu = own_cpu(proc, supervising) - own0
            run.total_cpu = all_cpu(proc, supervising, samplers) - all0
            run.dovecot_cpu = measure.group_cpu_seconds(server._proc.pid) - dove0
            busy = measure.system_busy_seconds() - busy0
            mine = fleet.cpu_seconds(os.getpid(), children=False) - self0
            run.other_cpu = max(0.0, busy - run.total_cpu - run.dovecot_cpu - mine)
            run.cpu_window = end - t0
            run.list_lat, run.get_lat = clients.list_lat, clients.get_lat
        finally:
            client.close()
        finished = [v.get("finished") or end for v in views.values()]
        run.wall = min(end, max(finished)) - t0
        run.job_seconds = sum(
            v["finished"] - v["started"]
            for v in views.values()
            if v.get("finished") and v.get("started")
        )
        starts = [v["started"] for v in views.values() if v.get("started")]
        ends = [v["finished"] for v in views.values() if v.get("finished")]
        if len(starts) == n and ends and min(ends) - max(starts) >= 2.0:
            a, b = max(starts) + 0.5, min(ends) - 0.5  # clear of the edges' own work
            run.steady_window = b - a
            run.steady_cpu = cpu_samples.at(b) - cpu_samples.at(a)
        run.job_pss_kb = sorted(v for one in samplers for v in one.job_peak.values())
        run.running_peak = sum(one.running_peak for one in samplers)
        run.statuses = [views[jid]["status"] for jid in ids]
        for jid, v in views.items():
            if v["status"] == "done":
                run.done += 1
                continue
            run.failed += 1
            error = str(v.get("error") or "")
            if service_side(error):
                run.failed_service += 1
            if len(run.errors) < 10:
                run.errors.append(f"{jid}: {v['status']} {error[:200]}")
    finally:
        for w in workers:
            fleet.stop_service(w[0])
        fleet.stop_service(proc)
    for one_log in logs:
        events, examples = fleet.service_log_summary(one_log, LOG_EVENTS)
        for k, v in events.items():
            run.events[k] = run.events.get(k, 0) + v
        run.event_examples.extend(examples[: max(0, 5 - len(run.event_examples))])
    return run


def start_worker(
    args: argparse.Namespace, data: Path, i: int, workers: int, ca: str
) -> tuple[subprocess.Popen[bytes], Path]:
    """One `yippiemove worker` process on the service's data directory; (process, log)."""
    log = data.parent / f"{data.name}-worker{i}.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "yippiemove.cli",
                "worker",
                "--data-dir",
                str(data),
                "--workers",
                str(workers),
                "--host-name",
                f"bench-worker-{i}",
                "--ca-file",
                ca,
            ],
            env=fleet.service_env(),
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=None if args.nofile is None else lambda: fleet._limit_nofile(args.nofile),
        )
    return proc, log


class CpuSamples:
    """``read()`` (a CPU-seconds counter) every ``every`` seconds on a thread, with the
    wall time; ``at(t)``: the counter at time ``t``, interpolated."""

    def __init__(self, read: Any, every: float) -> None:
        self.read = read
        self.every = every
        self.points: list[tuple[float, float]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def __enter__(self) -> CpuSamples:
        self.points.append((time.time(), self.read()))
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _loop(self) -> None:
        while not self._stop.wait(self.every):
            with contextlib.suppress(Exception):  # the process ended
                self.points.append((time.time(), self.read()))

    def at(self, t: float) -> float:
        pts = self.points
        for (t0, c0), (t1, c1) in itertools.pairwise(pts):
            if t0 <= t <= t1:
                return c0 + (c1 - c0) * (t - t0) / (t1 - t0) if t1 > t0 else c1
        return pts[-1][1] if t > pts[-1][0] else pts[0][1]


def own_cpu(serve: subprocess.Popen[bytes], supervising: list[subprocess.Popen[bytes]]) -> float:
    """CPU seconds of the service's own processes (serve and the worker processes; not
    the zygotes nor the jobs)."""
    procs = {p.pid for p in [serve, *supervising]}
    return sum(fleet.cpu_seconds(pid, children=False) for pid in procs)


def all_cpu(
    serve: subprocess.Popen[bytes],
    supervising: list[subprocess.Popen[bytes]],
    samplers: list[Any],
) -> float:
    """CPU seconds of serve, the worker processes, their zygotes and the jobs."""
    procs = {p.pid for p in [serve, *supervising]}
    return sum(fleet.cpu_seconds(pid) for pid in procs) + sum(
        fleet.cpu_seconds(one.zygote) for one in samplers
    )


def verify(
    server: Any, run: Size, pairs: list[tuple[str, str]], sources: dict[str, snapshot.Snapshot]
) -> None:
    """Every done job's destination against its source (bench/snapshot.py), 4 at a
    time; the figures count the done jobs' mail (a failed job is counted as failed, and
    its partial destination is not compared)."""
    pairs = [p for p, status in zip(pairs, run.statuses, strict=True) if status == "done"]

    def check(pair: tuple[str, str]) -> str | None:
        exact, why = snapshot.compare(
            sources[pair[0]], snapshot.snapshot(server.port, pair[1], PASSWORD)
        )
        return None if exact else f"{pair[1]}: {'; '.join(why)}"

    with ThreadPoolExecutor(4) as pool:
        run.not_exact = [w for w in pool.map(check, pairs) if w]
    run.messages = sum(sources[s].total_messages for s, _ in pairs)
    run.mail_bytes = sum(sources[s].total_bytes for s, _ in pairs)


# ------------------------------------------------------------------ the table


def fmt_table(runs: list[Size]) -> list[str]:
    best = max((r.msgs_s for r in runs), default=0.0) or 1.0
    lines = [
        "| jobs | wall s | done / failed (service-side) | msgs/s | MB/s | of best "
        "| PSS/job MB median / max | service CPU ms/job | service CPU ms/job-s "
        "| supervision ms/job-s (all running) "
        "| POST p50 / p99 / max s | GET job p50 / p99 s | GET list p50 / p99 s "
        "| all POSTs accepted after s | lock errors | fd errors (waits) | done ones exact "
        "| others' CPUs |",
        "|" + "---|" * 18,
    ]
    for r in runs:
        pss = (
            f"{statistics.median(r.job_pss_kb) / 1024:.1f} / {max(r.job_pss_kb) / 1024:.1f}"
            if r.job_pss_kb
            else "-"
        )
        per_js = f"{1000 * r.service_cpu / r.job_seconds:.2f}" if r.job_seconds else "-"
        sup = r.supervision_ms_per_job_s
        steady = "-" if sup is None else f"{sup:.3f} ({r.steady_window:.0f} s)"
        lines.append(
            f"| {r.jobs}{f' ({r.workers} workers)' if r.workers < r.jobs else ''}"
            f"{f' in {r.supervisors} worker processes' if r.supervisors else ''} "
            f"| {r.wall:.1f} | {r.done} / {r.failed} ({r.failed_service}) "
            f"| {r.msgs_s:,.0f} | {r.mb_s:.2f} | {r.msgs_s / best:.2f} | {pss} "
            f"| {1000 * r.service_cpu / r.jobs:.0f} | {per_js} "
            f"| {steady} "
            f"| {pct(r.post_lat, 0.5):.3f} / {pct(r.post_lat, 0.99):.3f} / "
            f"{max(r.post_lat, default=0):.3f} "
            f"| {pct(r.get_lat, 0.5):.3f} / {pct(r.get_lat, 0.99):.3f} "
            f"| {pct(r.list_lat, 0.5):.3f} / {pct(r.list_lat, 0.99):.3f} "
            f"| {r.posts_s:.1f} | {r.lock_errors} | {r.fd_errors} ({r.fd_waits}) "
            f"| {'yes' if not r.not_exact else 'NO'} "
            f"| {r.other_cpu / r.cpu_window if r.cpu_window else 0:.2f} |"
        )
    return lines


def main() -> int:
    ap = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    ap.add_argument("--sizes", default="10,50,100", help="concurrent jobs per run (10,50,100)")
    ap.add_argument("--messages", type=int, default=150, help="messages per mailbox (150)")
    ap.add_argument(
        "--nofile", type=int, help="the service's soft and hard open-file limit (default: ours)"
    )
    ap.add_argument(
        "--workers",
        type=int,
        help="serve --workers (default: one per job, at most what --nofile allows)",
    )
    ap.add_argument("--security", choices=("tls", "starttls", "none"), default="tls")
    ap.add_argument(
        "--throttle",
        type=int,
        default=0,
        help="bytes/s of each source connection (bench/latency_proxy.py --rate-mbps; 0: "
        "none): jobs that wait on "
        "their servers; the table's supervision column is measured while all run",
    )
    ap.add_argument(
        "--supervisors",
        type=int,
        default=0,
        help="run the jobs in this many `yippiemove worker` processes beside a "
        "`serve --workers 0` (0: all in serve, the default)",
    )
    ap.add_argument("--post-threads", type=int, default=8, help="clients POSTing at once (8)")
    ap.add_argument("--poll", type=float, default=1.0, help="dashboard: list page every (1 s)")
    ap.add_argument(
        "--end-poll", type=float, default=2.0, help="seeing the end: summaries every (2 s)"
    )
    ap.add_argument("--sample", type=float, default=0.5, help="seconds between PSS samples")
    ap.add_argument("--timeout", type=float, default=1800.0, help="seconds per run at most")
    ap.add_argument("--json", help="write every figure to this file")
    ap.add_argument("--workdir", default="/dev/shm" if Path("/dev/shm").is_dir() else None)
    ap.add_argument("--keep", action="store_true", help="keep the work directory")
    args = ap.parse_args()
    sizes = [int(x) for x in args.sizes.split(",") if x.strip()]

    import json

    from yippiemove.testing.dovecot import DovecotServer

    # SIGTERM as Ctrl-C: the finally blocks stop the service and Dovecot.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    ours = fleet.raise_nofile()  # Dovecot's; the service gets --nofile when given
    stamp = datetime.now(UTC).strftime("%Y-%m-%d %H:%M")
    work = Path(tempfile.mkdtemp(prefix="ymmany-", dir=args.workdir))
    work.chmod(0o711)  # Dovecot's mail processes (user dovecot) reach the mail
    top = max(sizes)
    srcs = [f"src{i}" for i in range(top)]
    users = {u: PASSWORD for u in srcs}
    for k, n in enumerate(sizes):
        users.update({f"dst{k}x{i}": PASSWORD for i in range(n)})
    runs: list[Size] = []
    load0 = os.getloadavg()
    try:
        with DovecotServer(
            work / "dovecot",
            users=users,
            mail_root=work / "mail",
            extra_config=fleet.DOVECOT_SCALE,
        ) as server:
            t = time.monotonic()
            load_sources(server, srcs, args.messages)
            loaded = time.monotonic() - t
            with ThreadPoolExecutor(4) as pool:  # also builds Dovecot's indexes
                sources = dict(
                    zip(
                        srcs,
                        pool.map(lambda u: snapshot.snapshot(server.port, u, PASSWORD), srcs),
                        strict=True,
                    )
                )
            one = sources[srcs[0]]
            print(
                f"{top} source mailboxes of {one.total_messages} messages "
                f"({one.total_bytes / 1e6:.2f} MB, {len(one.folders)} folders) loaded in "
                f"{loaded:.1f} s, read back in {time.monotonic() - t - loaded:.1f} s; "
                f"{os.cpu_count()} CPUs; service open-file limit "
                f"{args.nofile or ours[0]}; security {args.security}",
                flush=True,
            )
            for k, n in enumerate(sizes):
                pairs = [(srcs[i], f"dst{k}x{i}") for i in range(n)]
                run = run_size(args, server, pairs, work / f"svc-{k}-{n}")
                verify(server, run, pairs, sources)
                runs.append(run)
                print(
                    f"  {n:4d} jobs ({run.workers} workers{f' in {run.supervisors} worker processes' if run.supervisors else ''}): {run.wall:6.1f} s, {run.done} done, {run.failed} failed "
                    f"({run.failed_service} service-side), {run.msgs_s:,.0f} msgs/s, "
                    f"{run.mb_s:.2f} MB/s, service CPU {run.service_cpu:.1f} s, "
                    f"lock errors {run.lock_errors}, fd errors {run.fd_errors}, "
                    f"exact: {'yes' if not run.not_exact else 'NO'}",
                    flush=True,
                )
                for line in (run.errors + run.not_exact + run.event_examples)[:8]:
                    print(f"      {line}", flush=True)
    finally:
        if args.keep:
            print(f"work directory kept: {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    load1 = os.getloadavg()
    lines = [
        f"bench/many_jobs.py {' '.join(sys.argv[1:])} -- {stamp} UTC, {os.cpu_count()} CPUs, "
        f"load average {load0[0]:.2f} before, {load1[0]:.2f} after; {args.messages} messages "
        f"({one.total_bytes / 1e6:.2f} MB) a mailbox",
        "",
        *fmt_table(runs),
    ]
    print("\n" + "\n".join(lines))
    if args.json:
        best = max((r.msgs_s for r in runs), default=0.0) or 1.0
        Path(args.json).write_text(
            json.dumps(
                {
                    "args": vars(args),
                    "when": stamp,
                    "cpus": os.cpu_count(),
                    "loadavg": [load0, load1],
                    "mailbox": {
                        "messages": one.total_messages,
                        "bytes": one.total_bytes,
                        "folders": len(one.folders),
                    },
                    "runs": [dict(r.figures(), of_best=r.msgs_s / best) for r in runs],
                },
                indent=1,
            )
        )
    return 0 if all(r.ok for r in runs) else 1


if __name__ == "__main__":
    sys.exit(main())
