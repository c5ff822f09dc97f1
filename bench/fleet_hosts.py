"""``bench/fleet.py --hosts 1,2,3``: the same N jobs run by 1, 2, 3 worker hosts (issue 15).

Root only (network namespaces).  Built with tests/fleet.py: a bridge in the root
namespace, a ``db`` host (namespace) running PostgreSQL and Redis (tests/infra), and
worker hosts ``h1``..``hK``, each running ``yippiemove worker --workers N/K`` against
that shared control database and queue.  The provider-like servers stay in the root
namespace: one Dovecot (implicit TLS, its certificate names the bridge's address too)
behind ``bench/latency_proxy.py`` processes listening on the bridge's address, so every
job's connections cross the veth links and the throttled proxies.  Jobs are submitted
by a control :class:`~yippiemove.service.core.Service` in this process (the Service
API, as tests/fleet_fixtures.py does; no workers of its own) into a fresh PostgreSQL
database per run, and polled there until they all ended; every destination is then
compared with its source (bench/snapshot.py).

Per host count: wall (first submit to the last job's end), aggregate MB/s at the
proxies, CPU seconds of every process in the worker hosts' namespaces (workers, their
zygotes and job processes: utime+stime of the live ones plus what they reaped, from
the workers' start to the end; so the workers' start-up counts), CPU s per GB, the
db host's CPU (PostgreSQL + Redis), and the speed-up against one host.

``--recovery``: one more run on 2 hosts with ``--lease-seconds`` leases; when every job
is running, host h1 is killed (SIGKILL to every process in its namespace,
``Host.kill_all``); measured: seconds until every job h1 was running runs on another
host (or has ended there), and that all of them end exact.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))

import fleet as fb  # noqa: E402

FINAL = ("done", "failed", "cancelled")


@dataclass
class HostRun:
    hosts: int
    jobs: int
    workers_per_host: int
    wall: float = 0.0
    messages: int = 0
    mail_bytes: int = 0
    traffic: int = 0
    cpu: float = 0.0  # every process of the worker hosts
    db_cpu: float = 0.0  # PostgreSQL + Redis on the db host
    proxy_cpu: float = 0.0
    dovecot_cpu: float = 0.0
    busy: float = 0.0  # the machine's busy CPU seconds during the run
    per_host: dict[str, int] = field(default_factory=dict)  # jobs per host (Job.host)
    failed: list[str] = field(default_factory=list)
    not_exact: list[str] = field(default_factory=list)
    # --recovery
    killed: str = ""
    orphans: int = 0
    takeover_s: float | None = None
    takeover_each: list[float] = field(default_factory=list)

    @property
    def exact(self) -> bool:
        return not self.failed and not self.not_exact


def netns_cpu(netns: str) -> float:
    """CPU seconds of every live process in a namespace, with what each reaped."""
    from tests.fleet import netns_pids

    return sum(fb.cpu_seconds(pid) for pid in netns_pids(netns))


class HostsBench:
    def __init__(self, args: argparse.Namespace, work: Path) -> None:
        from tests.fleet import Fleet
        from tests.infra.postgres import PostgresServer
        from tests.infra.redis import RedisServer

        self.args = args
        self.work = work
        self.net = Fleet(work / "fleet")
        self.db = self.net.add_host("db")
        self.hosts = [self.net.add_host(f"h{i + 1}") for i in range(max(args.host_counts))]
        self.postgres = PostgresServer()
        self.net.on_close(self.postgres.stop)
        self.postgres.start(host=self.db.address, netns=self.db.netns)
        self.redis = RedisServer()
        self.net.on_close(self.redis.stop)
        self.redis.start(host=self.db.address, netns=self.db.netns)
        self.databases = 0

    def close(self) -> None:
        self.net.close()

    def control(self, tag: str) -> tuple[Any, int, str]:
        """A fresh database, an emptied queue, a control Service on them and the
        customer; the fleet configured for it.  (service, user id, database URL)."""
        import redis

        from yippiemove.service.config import Settings
        from yippiemove.service.core import Service

        self.databases += 1
        url = self.postgres.create_database(f"bench{self.databases}")
        redis.Redis.from_url(self.redis.url).flushall()
        settings = Settings.load(
            self.work / f"control-{tag}",
            database_url=url,
            queue_url=self.redis.url,
            egress_allow="10.0.0.0/8",
            customer_max_running=0,
            customer_max_pending=0,
        )
        service = Service(settings)
        self.net.configure(
            database_url=url,
            queue_url=self.redis.url,
            credentials_key_file=settings.credentials_key_file,
            secret_key_file=settings.secret_key_file,
        )
        uid = service.create_user(fb.CUSTOMER, fb.CUSTOMER_PASSWORD)
        return service, uid, url


def _rows(service: Any) -> dict[str, tuple[str, str | None]]:
    from yippiemove.service.db import Job

    with service.db.read() as s:
        return {j.id: (j.status, j.host) for j in s.query(Job).all()}


def run_hosts(
    bench: fb.Bench,
    hb: HostsBench,
    k: int,
    pairs: list[tuple[str, str]],
    recovery: bool = False,
) -> HostRun:
    """The jobs of ``pairs`` run by workers on ``k`` hosts; with ``recovery``, host h1
    is killed once every job runs."""
    from yippiemove.service.core import Account

    args = bench.args
    n = len(pairs)
    per = max(1, -(-n // k))
    run = HostRun(k, n, per)
    tag = f"{k}{'r' if recovery else ''}"
    service, uid, _ = hb.control(tag)
    settings: dict[str, Any] = {
        "egress_allow": "10.0.0.0/8",
        "customer_max_running": 0,
        "ca_file": bench.ca,
    }
    if recovery:
        settings.update(
            lease_seconds=args.lease_seconds,
            recovery_interval=1.0,
            maintenance_interval=1.0,
            host_heartbeat_interval=1.0,
        )
    hosts = hb.hosts[:k]
    proxies = bench.proxies(listen=hb.net.address)
    try:
        workers = [hb.net.start_worker(h, per, **settings) for h in hosts]
        for w in workers:
            w.wait_ready(timeout=180)
        cpu0 = sum(netns_cpu(h.netns) for h in hosts)
        db0 = netns_cpu(hb.db.netns)
        dove0 = fb.measure.group_cpu_seconds(bench.dovecot_pgid)
        busy0 = fb.measure.system_busy_seconds()
        t0 = time.time()
        ids = []
        for src, dst in pairs:
            view = service.create_transfer(
                uid,
                Account(hb.net.address, proxies.port, "tls", src, fb.PASSWORD),
                Account(hb.net.address, proxies.port, "tls", dst, fb.PASSWORD),
            )
            ids.append(view.id)
        killed_at = 0.0
        orphans: set[str] = set()
        taken: dict[str, float] = {}
        deadline = time.monotonic() + args.timeout
        while True:
            rows = _rows(service)
            if recovery and not killed_at:
                running = [j for j in ids if rows[j][0] == "running"]
                mine = [j for j in running if rows[j][1] == hosts[0].name]
                if len(running) == n and mine:
                    hosts[0].kill_all()
                    killed_at = time.time()
                    orphans = set(mine)
                    run.killed, run.orphans = hosts[0].name, len(orphans)
            if killed_at:
                for j in orphans - taken.keys():
                    status, host = rows[j]
                    if host and host != hosts[0].name and status in ("running", *FINAL):
                        taken[j] = time.time() - killed_at
            if all(rows[j][0] in FINAL for j in ids):
                break
            if time.monotonic() > deadline:
                left = [j for j in ids if rows[j][0] not in FINAL]
                run.failed.append(f"{len(left)} of {n} not ended after {args.timeout} s")
                break
            time.sleep(0.2)
        views = {j: service.get_transfer(uid, j) for j in ids}
        end = time.time()
        finished = [v.finished or end for v in views.values()]
        run.wall = min(end, max(finished)) - t0
        run.cpu = sum(netns_cpu(h.netns) for h in hosts) - cpu0
        run.db_cpu = netns_cpu(hb.db.netns) - db0
        run.dovecot_cpu = fb.measure.group_cpu_seconds(bench.dovecot_pgid) - dove0
        run.busy = fb.measure.system_busy_seconds() - busy0
        rows = _rows(service)
        for j in ids:
            h = rows[j][1] or "?"
            run.per_host[h] = run.per_host.get(h, 0) + 1
        for j, v in views.items():
            if v.status != "done":
                run.failed.append(f"{j}: {v.status} {v.error}")
        if recovery:
            run.takeover_each = sorted(taken.values())
            if orphans and len(taken) == len(orphans):
                run.takeover_s = max(taken.values())
    finally:
        for w in hb.net.workers:
            w.stop(timeout=30)
        for h in hosts:
            h.kill_all()
        hb.net.workers.clear()
        stats = proxies.stop()
        service.close()
    run.proxy_cpu = stats["cpu"]
    run.traffic = int(stats["up"] + stats["down"])
    sample = fb.Run("hosts", n)
    bench.verify(sample, pairs)
    run.messages, run.mail_bytes = sample.messages, sample.mail_bytes
    run.not_exact = sample.not_exact
    return run


def table(runs: list[HostRun]) -> list[str]:
    base = next((r for r in runs if r.hosts == 1 and not r.killed), None)
    lines = [
        "| hosts | jobs | workers/host | wall s | MB/s in+out | msgs/s | CPU s (hosts) "
        "| CPU s/GB | db CPU s | Dovecot CPU s | proxy CPU s | machine busy CPUs | speed-up "
        "| jobs per host | exact |",
        "|" + "---|" * 15,
    ]
    for r in runs:
        if r.killed:
            continue
        gb = r.mail_bytes / 1e9
        up = f"{base.wall / r.wall:.2f}x" if base and r.wall else "-"
        lines.append(
            f"| {r.hosts} | {r.jobs} | {r.workers_per_host} | {r.wall:.1f} | "
            f"{r.traffic / r.wall / 1e6:.1f} | {r.messages / r.wall:.0f} | {r.cpu:.1f} | "
            f"{r.cpu / gb:.0f} | {r.db_cpu:.1f} | {r.dovecot_cpu:.1f} | {r.proxy_cpu:.1f} | "
            f"{r.busy / r.wall:.2f} | {up} | "
            + ", ".join(f"{h} {c}" for h, c in sorted(r.per_host.items()))
            + f" | {'yes' if r.exact else 'NO'} |"
        )
    return lines


def main(args: argparse.Namespace) -> int:
    """``--hosts``: see the module docstring."""
    import json
    import shutil
    import signal
    import tempfile
    from datetime import UTC, datetime

    if os.geteuid() != 0:
        print("bench/fleet.py --hosts needs root (network namespaces: ip netns)", file=sys.stderr)
        return 2
    from tests.fleet import fleet_unavailable

    why = fleet_unavailable()
    if why:
        print(f"bench/fleet.py --hosts: {why}", file=sys.stderr)
        return 2
    from yippiemove.testing.dovecot import DovecotServer

    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    fb.raise_nofile()
    n = args.jobs
    stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    out_md = Path(args.output) if args.output else HERE / "results" / f"fleet-hosts-{stamp}.md"
    work = Path(tempfile.mkdtemp(prefix="ymfleeth-", dir=args.workdir))
    work.chmod(0o711)
    bench = fb.Bench(args, work)
    sources = [f"src{i}" for i in range(n)]
    users = {u: fb.PASSWORD for u in sources}
    for k in args.host_counts:
        users.update({f"h{k}x{i}": fb.PASSWORD for i in range(n)})
    if args.recovery:
        users.update({f"rx{i}": fb.PASSWORD for i in range(n)})
    runs: list[HostRun] = []
    load0 = os.getloadavg()
    hb = HostsBench(args, work)
    try:
        with DovecotServer(
            work / "dovecot",
            users=users,
            mail_root=work / "mail",
            extra_config=fb.DOVECOT_SCALE,
            tls_addresses=[hb.net.address],
        ) as server:
            bench.server, bench.ca = server, str(server.ca_file)
            bench.dovecot_pgid = server._proc.pid
            os.chmod(bench.ca, 0o644)
            fb.load_mailboxes(server, sources, args.messages, args.real_world)
            for u in sources:
                bench.source_snapshot(u)
            per = bench.source_snapshot(sources[0])
            print(
                f"{n} source mailboxes of ~{per.total_messages} messages "
                f"({per.total_bytes / 1e6:.2f} MB each); links {args.rtt_ms:g} ms, "
                f"{args.rate_mbps:g} MB/s per connection; hosts on bridge {hb.net.address}",
                flush=True,
            )
            plan = [(k, False) for k in args.host_counts]
            if args.recovery:
                plan.append((min(2, max(args.host_counts)), True))
            for k, rec in plan:
                prefix = "rx" if rec else f"h{k}x"
                pairs = [(f"src{i}", f"{prefix}{i}") for i in range(n)]
                fb.measure.wait_for_quiet(args.quiet_wait)
                run = run_hosts(bench, hb, k, pairs, rec)
                runs.append(run)
                line = (
                    f"  {k} host(s), {n} jobs: {run.wall:.1f} s, "
                    f"{run.traffic / max(run.wall, 1e-9) / 1e6:.1f} MB/s, CPU {run.cpu:.1f} s, "
                    f"jobs per host {run.per_host}, exact: {'yes' if run.exact else 'NO'}"
                )
                if rec:
                    line += (
                        f"; killed {run.killed} running {run.orphans} jobs, all running "
                        f"elsewhere after {run.takeover_s} s (lease {args.lease_seconds:g} s)"
                    )
                print(line, flush=True)
                for bad in (run.failed + run.not_exact)[:5]:
                    print(f"      {bad}", flush=True)
    finally:
        hb.close()
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    load1 = os.getloadavg()
    lines = [
        f"# bench/fleet.py --hosts, {stamp} UTC",
        "",
        f"`{' '.join(['bench/fleet.py', *sys.argv[1:]])}`: {n} jobs of {per.total_messages} "
        f"messages ({per.total_bytes / 1e6:.2f} MB) each; links {args.rtt_ms:g} ms round trip, "
        f"{args.rate_mbps:g} MB/s per connection; implicit TLS; {os.cpu_count()} CPUs shared "
        f"by every host; load average {load0[0]:.2f} before, {load1[0]:.2f} after.",
        "",
        *table(runs),
        "",
    ]
    for r in runs:
        if r.killed:
            each = r.takeover_each
            lines.append(
                f"- recovery: {r.hosts} hosts, lease {args.lease_seconds:g} s; {r.killed} killed "
                f"while running {r.orphans} of {r.jobs} jobs; all running elsewhere after "
                + (f"{r.takeover_s:.1f} s" if r.takeover_s is not None else "NEVER")
                + (
                    f" (median {statistics.median(each):.1f} s, first {each[0]:.1f} s)"
                    if each
                    else ""
                )
                + f"; target lease + 10 = {args.lease_seconds + 10:g} s; run wall {r.wall:.1f} s; "
                f"exact: {'yes' if r.exact else 'NO'}"
            )
    text = "\n".join(lines) + "\n"
    print("\n" + text)
    out_md.parent.mkdir(parents=True, exist_ok=True)
    out_md.write_text(text)
    out_md.with_suffix(".json").write_text(
        json.dumps({"args": vars(args), "runs": [vars(r) for r in runs]}, indent=1, default=str)
    )
    print(f"written: {out_md}")
    return 0 if all(r.exact for r in runs) else 1
