#!/usr/bin/env python3
"""Scale benchmark: does yippiemove stay linear in time and bounded in memory?

    .venv/bin/python bench/scale.py              # 10k and 100k messages, one 50 MB message
    .venv/bin/python bench/scale.py --quick      # 1k and 10k, one 5 MB message (smoke test)

Issue 6 ("Big and broken mail") asks that memory stays bounded and time grows linearly
with the mailbox.  On a throwaway Dovecot whose mail lives on tmpfs (as bench/run.py),
this copies, each into a fresh destination user, with ``yippiemove move --no-starttls``:

* ``start-up``: an account with one message: the fixed cost of a run (interpreter,
  imports, logins, plan, state file), to read the two runs below net of it;
* ``N`` for each ``--sizes`` (default 10,000 and 100,000): one folder of N small
  (2-4 kB) realistic messages from bench/corpus.py's generator (fixed seed);
* ``big``: one message of at least ``--big-mb`` MB (default 50, a base64 attachment of
  random bytes) plus five small ones: its peak RSS is compared with the bound
  "100 MB + the largest message" (bench/run.py's target).

Each run is measured by bench/measure.py (wall time, the mover's user+sys CPU from
wait4, its peak RSS as VmHWM polled every 20 ms, all Dovecot CPU), and checked with
bench/snapshot.py (stdlib imaplib, bodies fetched in batches of 500 messages or 8 MB,
per message SHA-256, flags, INTERNALDATE, size, with multiplicity).  It prints a table
and the ratio time(100k)/time(10k) (linear: 10), raw and net of the start-up run, and
writes everything to bench/results/<UTC timestamp>-scale.json (git-ignored).

See bench/README.md ("Scale benchmark").
"""

from __future__ import annotations

import argparse
import compileall
import contextlib
import json
import os
import pstats
import random
import shutil
import signal
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import corpus
import measure
import run as bench_run
import snapshot
from yippiemove.testing.dovecot import DovecotServer, MaildirMessage

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
PASSWORD = "scale-pw"
SEED = 20250606
#: The folder that holds the N messages of a size case.
FOLDER = "Big"
#: Median text size for bench/corpus.py: messages of 2-4.6 kB (10th-90th percentile),
#: 3.2 kB on average, with the corpus's realistic headers (Received, DKIM, ...).
TEXT_MEDIAN = 600
#: Small messages beside the big one.
BIG_SMALL = 5
RSS_BASE = 100e6  # bytes: the bound is RSS_BASE + the largest message

log = bench_run.log


@dataclass
class Case:
    name: str  # "start-up", "10000", "100000", "big"
    user: str
    messages: int = 0  # as delivered
    imap_messages: int = 0
    imap_bytes: int = 0
    largest: int = 0
    load_s: float = 0.0
    source_snapshot_s: float = 0.0


@dataclass
class Run:
    case: str
    run: int
    exit_code: int | None
    wall_s: float
    mover_cpu_s: float
    mover_user_s: float
    mover_sys_s: float
    server_cpu_s: float
    peak_rss_mb: float
    msgs_s: float
    mb_s: float
    exact: bool
    check_s: float
    other_cpu_s: float
    quiet_wait_s: float
    reasons: list[str] = field(default_factory=list)
    log_tail: str = ""


# --------------------------------------------------------------------------- mail


def _preset(name: str, n: int, folder: str) -> corpus.Preset:
    return corpus.Preset(name, n, TEXT_MEDIAN, 0.0, 0, 0, 0.0, folders=((folder, 1.0),))


def load_small(server: DovecotServer, user: str, n: int, folder: str, name: str) -> int:
    """N small realistic messages (bench/corpus.py, fixed seed) into one folder."""
    stats = corpus.load(server, user, _preset(name, n, folder), seed=SEED)
    return stats.messages


def big_message(size: int) -> bytes:
    """A realistic message carrying one base64 attachment of random bytes, at least
    ``size`` bytes over IMAP (CRLF form)."""
    # corpus.py draws the attachment's raw size as randint(min, max) * 3 // 4, and
    # base64 then adds a line end per 76 characters (CRLF when served).
    encoded = int(size / (1 + 2 / 76)) + 4096
    preset = corpus.Preset(
        "scale-big", 1, TEXT_MEDIAN, 1.0, encoded, encoded, 0.0, folders=(("INBOX", 1.0),)
    )
    rng = random.Random(f"{SEED}/scale-big")
    raw, big = corpus._message(preset, "INBOX", 0, datetime(2024, 3, 1, 12, tzinfo=UTC), rng)
    assert big
    served = len(raw) + raw.count(b"\n")  # Dovecot serves LF as CRLF
    if served < size:
        raise RuntimeError(f"big message too small: {served} < {size}")
    return raw


# --------------------------------------------------------------------------- bench


class ScaleBench:
    def __init__(self, args: argparse.Namespace, workdir: Path, code_dir: Path | None) -> None:
        self.args = args
        self.workdir = workdir
        self.code_dir = code_dir
        self.dir = workdir / "scale"
        self.dir.mkdir(parents=True)
        self.pw_file = self.dir / "password"
        self.pw_file.write_text(PASSWORD + "\n")
        self.server = DovecotServer(self.dir / "dovecot", users={}, mail_root=workdir / "mail")
        self.cases: list[Case] = []
        self.sources: dict[str, snapshot.Snapshot] = {}

    def start(self) -> None:
        self.server.start()
        fsync = bench_run._run_text(
            ["doveconf", "-c", str(self.server.config_path), "-h", "mail_fsync"]
        )
        if fsync != "never":
            raise RuntimeError(f"Dovecot's mail_fsync is {fsync!r}, expected 'never'")
        log(f"Dovecot on 127.0.0.1:{self.server.port} (mail_fsync=never)")

    def add_case(self, name: str) -> Case:
        user = f"src-{name}"
        self.server.add_user(user, PASSWORD)
        case = Case(name, user)
        t0 = time.perf_counter()
        if name == "start-up":
            case.messages = load_small(self.server, user, 1, "INBOX", "scale-startup")
        elif name == "big":
            case.messages = load_small(self.server, user, BIG_SMALL, "INBOX", "scale-big-small")
            raw = big_message(int(self.args.big_mb * 1e6))
            self.server.deliver_many(
                user, "INBOX", [MaildirMessage(raw, ("\\Seen",), datetime(2024, 3, 1, tzinfo=UTC))]
            )
            del raw
            case.messages += 1
        else:
            n = int(name)
            case.messages = load_small(self.server, user, n, FOLDER, f"scale-{n}")
        case.load_s = round(time.perf_counter() - t0, 2)
        fs = bench_run._fs_type(self.server.maildir(user))
        if fs != "tmpfs":
            log(f"WARNING: the mail is on {fs}, not tmpfs: figures include the disk")
        # The source snapshot also builds Dovecot's index before any measured run.
        t0 = time.perf_counter()
        src = snapshot.snapshot(self.server.port, user, PASSWORD)
        case.source_snapshot_s = round(time.perf_counter() - t0, 2)
        if src.total_messages != case.messages:
            raise RuntimeError(
                f"{name}: the source shows {src.total_messages} messages, {case.messages} delivered"
            )
        case.imap_messages = src.total_messages
        case.imap_bytes = src.total_bytes
        case.largest = src.largest
        self.sources[name] = src
        log(
            f"[{name}] {case.imap_messages} messages, {case.imap_bytes / 1e6:.1f} MB over IMAP "
            f"(largest {case.largest / 1e6:.2f} MB); generated+delivered in {case.load_s} s, "
            f"source snapshot {case.source_snapshot_s} s"
        )
        self.cases.append(case)
        return case

    def _argv(self, case: Case, dest_user: str, rdir: Path) -> list[str]:
        port = self.server.port
        return [
            *bench_run.yippiemove_argv(self.code_dir),
            "move",
            "--source",
            f"imap://{case.user}@127.0.0.1:{port}",
            "--dest",
            f"imap://{dest_user}@127.0.0.1:{port}",
            "--source-password-file",
            str(self.pw_file),
            "--dest-password-file",
            str(self.pw_file),
            "--state",
            str(rdir / "state.sqlite"),
            "--no-progress",
            "--no-starttls",
            *self.args.yippiemove_arg,
        ]

    def run_once(self, case: Case, run: int) -> Run:
        dest_user = f"dst-{case.name}-{run}"
        rdir = self.dir / "runs" / f"{case.name}-{run}"
        rdir.mkdir(parents=True)
        self.server.add_user(dest_user, PASSWORD)
        argv = self._argv(case, dest_user, rdir)
        env = None if self.code_dir is None else {**os.environ, "PYTHONPATH": str(self.code_dir)}
        measure.settle(self.server.pid)
        waited = measure.wait_for_quiet(self.args.quiet_wait) if self.args.quiet_wait > 0 else 0.0
        cpu0 = measure.group_cpu_seconds(self.server.pid)
        busy0 = measure.system_busy_seconds()
        child = measure.run_child(argv, log=rdir / "output.log", timeout=self.args.timeout, env=env)
        busy = measure.system_busy_seconds() - busy0
        measure.settle(self.server.pid)
        server_cpu = measure.group_cpu_seconds(self.server.pid) - cpu0
        reasons: list[str] = []
        if child.timed_out:
            reasons.append(f"killed after {self.args.timeout:.0f} s")
        elif child.exit_code != 0:
            reasons.append(f"exit status {child.exit_code}")
        t0 = time.perf_counter()
        try:
            dest = snapshot.snapshot(self.server.port, dest_user, PASSWORD)
            exact, why = snapshot.compare(self.sources[case.name], dest)
            reasons += why
            if dest.total_messages != case.imap_messages:
                exact = False
                reasons.append(
                    f"the destination has {dest.total_messages} messages, "
                    f"the source {case.imap_messages}"
                )
            del dest
        except Exception as exc:  # the check must not stop the benchmark
            exact = False
            reasons.append(f"snapshot of the destination failed: {exc}")
        check_s = time.perf_counter() - t0
        wall = child.wall_s
        result = Run(
            case=case.name,
            run=run,
            exit_code=child.exit_code,
            wall_s=round(wall, 3),
            mover_cpu_s=round(child.cpu_s, 3),
            mover_user_s=round(child.user_s, 3),
            mover_sys_s=round(child.sys_s, 3),
            server_cpu_s=round(server_cpu, 2),
            peak_rss_mb=round(child.peak_rss_bytes / 1e6, 1),
            msgs_s=round(case.imap_messages / wall, 1),
            mb_s=round(case.imap_bytes / 1e6 / wall, 2),
            exact=exact and child.exit_code == 0,
            check_s=round(check_s, 1),
            other_cpu_s=round(max(0.0, busy - child.cpu_s - server_cpu), 2),
            quiet_wait_s=round(waited, 1),
            reasons=reasons,
            log_tail="" if exact and child.exit_code == 0 else child.log_tail,
        )
        shutil.rmtree(self.server.base_dir / "mail" / dest_user, ignore_errors=True)
        if not self.args.keep:
            shutil.rmtree(rdir, ignore_errors=True)
        return result

    def profile_once(self, case: Case) -> dict[str, Any]:
        """One extra run under cProfile with a CPU-time clock (profile_yippiemove.py):
        own CPU time per function, to see which ones grow faster than the mailbox."""
        dest_user = f"dst-{case.name}-profile"
        rdir = self.dir / "runs" / f"{case.name}-profile"
        rdir.mkdir(parents=True)
        self.server.add_user(dest_user, PASSWORD)
        argv = self._argv(case, dest_user, rdir)[len(bench_run.yippiemove_argv(self.code_dir)) :]
        prof = rdir / "yippiemove.prof"
        argv = [sys.executable, str(HERE / "profile_yippiemove.py"), str(prof), *argv]
        env = None if self.code_dir is None else {**os.environ, "PYTHONPATH": str(self.code_dir)}
        child = measure.run_child(argv, log=rdir / "output.log", timeout=self.args.timeout, env=env)
        own: dict[str, float] = {}
        if prof.exists():
            for (fname, line, func), (_cc, _nc, tt, _ct, _callers) in pstats.Stats(
                str(prof)
            ).stats.items():
                key = f"{Path(fname).name}:{line}({func})"
                own[key] = own.get(key, 0.0) + tt
        shutil.rmtree(self.server.base_dir / "mail" / dest_user, ignore_errors=True)
        if not self.args.keep:
            shutil.rmtree(rdir, ignore_errors=True)
        return {
            "exit_code": child.exit_code,
            "cpu_s": round(child.cpu_s, 3),
            "profile_total_s": round(sum(own.values()), 3),
            "own_s": {k: round(v, 4) for k, v in own.items() if v >= 0.001},
        }

    def stop(self) -> None:
        self.server.stop()


# --------------------------------------------------------------------------- summary


def summarise(cases: list[Case], runs: list[Run]) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for case in cases:
        rs = [r for r in runs if r.case == case.name]
        if not rs:
            continue
        out[case.name] = {
            "messages": case.imap_messages,
            "bytes": case.imap_bytes,
            "largest": case.largest,
            "runs": len(rs),
            "wall_s": round(statistics.median(r.wall_s for r in rs), 3),
            "msgs_s": round(statistics.median(r.msgs_s for r in rs), 1),
            "mb_s": round(statistics.median(r.mb_s for r in rs), 2),
            "mover_cpu_s": round(statistics.median(r.mover_cpu_s for r in rs), 3),
            "server_cpu_s": round(statistics.median(r.server_cpu_s for r in rs), 2),
            "peak_rss_mb": max(r.peak_rss_mb for r in rs),
            "other_cpu_s": round(statistics.median(r.other_cpu_s for r in rs), 2),
            "exact": all(r.exact for r in rs),
            "wall_s_all": [r.wall_s for r in rs],
        }
    return out


def findings(
    summary: dict[str, dict[str, Any]],
    sizes: Sequence[int],
    profiles: dict[str, dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """Linearity (the two size cases, and their profiles with --profile) and the memory
    bound (the big message)."""
    profiles = profiles or {}
    out: dict[str, Any] = {}
    base = summary.get("start-up")
    if len(sizes) >= 2 and str(sizes[0]) in summary and str(sizes[-1]) in summary:
        lo, hi = summary[str(sizes[0])], summary[str(sizes[-1])]
        factor = sizes[-1] / sizes[0]
        lin: dict[str, Any] = {
            "sizes": [sizes[0], sizes[-1]],
            "linear_would_be": factor,
            "wall_ratio": round(hi["wall_s"] / lo["wall_s"], 2),
            "cpu_ratio": round(hi["mover_cpu_s"] / lo["mover_cpu_s"], 2),
            "server_cpu_ratio": round(hi["server_cpu_s"] / lo["server_cpu_s"], 2)
            if lo["server_cpu_s"]
            else None,
            "rss_mb": [lo["peak_rss_mb"], hi["peak_rss_mb"]],
            # what each further message costs in peak memory (listing, state, results)
            "rss_bytes_per_extra_message": round(
                (hi["peak_rss_mb"] - lo["peak_rss_mb"]) * 1e6 / (sizes[-1] - sizes[0])
            ),
        }
        if base is not None:
            net_lo = lo["wall_s"] - base["wall_s"]
            net_hi = hi["wall_s"] - base["wall_s"]
            lin["startup_wall_s"] = base["wall_s"]
            lin["net_wall_ratio"] = round(net_hi / net_lo, 2) if net_lo > 0 else None
            cpu_lo = lo["mover_cpu_s"] - base["mover_cpu_s"]
            cpu_hi = hi["mover_cpu_s"] - base["mover_cpu_s"]
            lin["net_cpu_ratio"] = round(cpu_hi / cpu_lo, 2) if cpu_lo > 0 else None
        out["linearity"] = lin
    lo_p = profiles.get(str(sizes[0])) if len(sizes) >= 2 else None
    hi_p = profiles.get(str(sizes[-1])) if len(sizes) >= 2 else None
    if lo_p and hi_p and lo_p["profile_total_s"] > 0:
        factor = sizes[-1] / sizes[0]
        a, b = lo_p["own_s"], hi_p["own_s"]
        top = sorted(b, key=lambda k: -b[k])[:25]
        rows = [
            {"function": k, "own_s": [a.get(k, 0.0), b[k]], "growth": round(b[k] / a[k], 1)}
            for k in top
            if a.get(k)
        ]
        out["profile"] = {
            "total_s": [lo_p["profile_total_s"], hi_p["profile_total_s"]],
            "total_growth": round(hi_p["profile_total_s"] / lo_p["profile_total_s"], 2),
            "top_functions": rows,
            # a function of the top 25 growing 1.25 times faster than the mailbox
            "superlinear": [r for r in rows if r["growth"] > 1.25 * factor],
        }
    big = summary.get("big")
    if big is not None:
        bound = (RSS_BASE + big["largest"]) / 1e6
        out["memory"] = {
            "largest_mb": round(big["largest"] / 1e6, 1),
            "peak_rss_mb": big["peak_rss_mb"],
            "bound_mb": round(bound, 1),
            "within_bound": big["peak_rss_mb"] <= bound,
            "rss_minus_message_mb": round(big["peak_rss_mb"] - big["largest"] / 1e6, 1),
        }
    return out


def print_table(summary: dict[str, dict[str, Any]], found: dict[str, Any], runs: int) -> None:
    log("")
    log(f"=== yippiemove at scale (plain IMAP, medians of {runs} run(s); peak RSS: maximum) ===")
    head = (
        f"{'case':<10}{'messages':>10}{'MB':>9}{'largest MB':>12}{'wall s':>9}{'msgs/s':>9}"
        f"{'MB/s':>8}{'mover CPU s':>13}{'server CPU s':>14}{'peak RSS MB':>13}  exact"
    )
    log(head)
    log("-" * len(head))
    for name, s in summary.items():
        log(
            f"{name:<10}{s['messages']:>10,}{s['bytes'] / 1e6:>9.1f}{s['largest'] / 1e6:>12.2f}"
            f"{s['wall_s']:>9.2f}{s['msgs_s']:>9,.0f}{s['mb_s']:>8.1f}{s['mover_cpu_s']:>13.2f}"
            f"{s['server_cpu_s']:>14.2f}{s['peak_rss_mb']:>13.1f}  "
            + ("yes" if s["exact"] else "NO")
        )
    noisy = [
        f"{n} {s['other_cpu_s']:.1f} s"
        for n, s in summary.items()
        if s["other_cpu_s"] > max(0.3, 0.1 * s["wall_s"])
    ]
    if noisy:
        log("warning: other processes used CPU during the runs (median): " + ", ".join(noisy))
    lin = found.get("linearity")
    if lin:
        a, b = lin["sizes"]
        log(
            f"time({b:,})/time({a:,}): wall {lin['wall_ratio']:.2f}, mover CPU "
            f"{lin['cpu_ratio']:.2f} (linear: {lin['linear_would_be']:g})"
        )
        if lin.get("net_wall_ratio") is not None:
            log(
                f"  net of the start-up run ({lin['startup_wall_s']:.2f} s): wall "
                f"{lin['net_wall_ratio']:.2f}, mover CPU {lin['net_cpu_ratio']}"
            )
        log(
            f"peak RSS {lin['rss_mb'][0]:.1f} MB -> {lin['rss_mb'][1]:.1f} MB: "
            f"{lin['rss_bytes_per_extra_message']:,} bytes per further message"
        )
    prof = found.get("profile")
    if prof:
        log(
            f"cProfile (CPU clock, one run each): {prof['total_s'][0]:.2f} -> "
            f"{prof['total_s'][1]:.2f} s ({prof['total_growth']:.2f} times); own time of the "
            "top functions, smallest and largest size:"
        )
        for r in prof["top_functions"][:12]:
            log(
                f"  {r['own_s'][0]:7.3f} {r['own_s'][1]:8.3f} s  x{r['growth']:<5g} {r['function']}"
            )
        if prof["superlinear"]:
            log(
                "  growing faster than the mailbox: "
                + ", ".join(f"{r['function']} x{r['growth']:g}" for r in prof["superlinear"])
            )
        else:
            log("  none of them grows faster than the mailbox (x1.25 linear)")
    mem = found.get("memory")
    if mem:
        log(
            f"one {mem['largest_mb']:.1f} MB message: peak RSS {mem['peak_rss_mb']:.1f} MB, "
            f"bound 100 MB + the message = {mem['bound_mb']:.1f} MB -> "
            + ("within" if mem["within_bound"] else "OVER")
            + f" ({mem['rss_minus_message_mb']:.1f} MB besides the message)"
        )
    for name, s in summary.items():
        if not s["exact"]:
            log(f"not exact: {name}")


# --------------------------------------------------------------------------- main


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(
        description="yippiemove at scale: 10k vs 100k messages, and one 50 MB message."
    )
    ap.add_argument(
        "--sizes",
        default="10000,100000",
        help="message counts of the one-folder cases, smallest first (default 10000,100000)",
    )
    ap.add_argument("--big-mb", type=float, default=50.0, help="size of the big message (MB)")
    ap.add_argument("--quick", action="store_true", help="sizes 1000,10000 and a 5 MB message")
    ap.add_argument("--runs", type=int, default=1, help="runs per case (default 1)")
    ap.add_argument(
        "--cases",
        default="start-up,sizes,big",
        help="subset of start-up,sizes,big (default all three)",
    )
    ap.add_argument(
        "--profile",
        action="store_true",
        help="one extra cProfile'd run per size case: which functions grow faster than N",
    )
    ap.add_argument("--timeout", type=float, default=1800.0, help="seconds per mover run")
    ap.add_argument(
        "--quiet-wait",
        type=float,
        default=30.0,
        metavar="S",
        help="before each run wait up to S seconds for the machine to be idle (0: don't)",
    )
    ap.add_argument(
        "--yippiemove-arg",
        action="append",
        default=[],
        metavar="ARG",
        help="extra argument for `yippiemove move` (repeatable)",
    )
    ap.add_argument(
        "--live-code",
        action="store_true",
        help="run yippiemove from the working tree instead of a snapshot of src/",
    )
    ap.add_argument("--workdir", default="/dev/shm", help="where the mail lives (tmpfs)")
    ap.add_argument("--keep", action="store_true", help="keep the work directory")
    ap.add_argument("--output", help="JSON file (default bench/results/<timestamp>-scale.json)")
    args = ap.parse_args(argv)
    if args.quick:
        args.sizes = "1000,10000"
        args.big_mb = 5.0
    try:
        args.sizes = sorted(int(s) for s in args.sizes.split(",") if s.strip())
    except ValueError:
        ap.error("--sizes takes comma-separated message counts")
    if not args.sizes or min(args.sizes) < 1:
        ap.error("--sizes needs positive message counts")
    args.cases = {c.strip() for c in args.cases.split(",") if c.strip()}
    if args.cases - {"start-up", "sizes", "big"}:
        ap.error("--cases takes start-up, sizes, big")
    if args.runs < 1:
        ap.error("--runs must be at least 1")
    return args


def _on_sigterm(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, _on_sigterm)
    started = datetime.now(UTC)
    base = Path(args.workdir)
    if not base.is_dir():
        base = Path(tempfile.gettempdir())
    workdir = Path(tempfile.mkdtemp(prefix="ymscale-", dir=base))
    workdir.chmod(0o711)  # Dovecot's mail processes must traverse it
    info = bench_run.machine_info(None, workdir)
    info.pop("mbsync", None)
    code_dir = None if args.live_code else bench_run.snapshot_code(workdir / "code")
    if code_dir is not None:
        compileall.compile_dir(code_dir / "yippiemove", quiet=1)
    code = {
        "mode": "live working tree" if code_dir is None else "snapshot of src/ at start",
        "sha256": bench_run._tree_hash(
            (REPO / "src" if code_dir is None else code_dir) / "yippiemove"
        ),
        "git_head": info["git_commit"],
        "uncommitted_at_start": info["src_uncommitted_changes"],
    }
    log(
        f"code: {code['mode']} {code['sha256']} (git {str(code['git_head'])[:10]}"
        + (", with uncommitted changes)" if code["uncommitted_at_start"] else ")")
    )
    log(
        f"machine: {info['nproc']} CPUs ({info['cpu_model']}), Python {info['python']}, "
        f"Dovecot {info['dovecot']}; work dir {workdir} ({info['workdir_fs']})"
    )
    out_path = Path(args.output) if args.output else None
    if out_path is None:
        stamp = started.strftime("%Y%m%dT%H%M%SZ")
        out_path = HERE / "results" / f"{stamp}{'-quick' if args.quick else ''}-scale.json"
    out_path.parent.mkdir(parents=True, exist_ok=True)
    results: dict[str, Any] = {
        "started": started.isoformat(timespec="seconds"),
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "machine": info,
        "code": code,
        "config": {
            "sizes": args.sizes,
            "big_mb": args.big_mb,
            "runs": args.runs,
            "profile": args.profile,
            "tls": "none (plain IMAP, --no-starttls)",
            "quiet_wait_s": args.quiet_wait,
            "yippiemove_args": args.yippiemove_arg,
            "seed": SEED,
            "text_median": TEXT_MEDIAN,
            "units": "MB = 10^6 bytes; bytes are the source's RFC822.SIZE sum (CRLF form)",
        },
    }

    def save() -> None:
        results["finished"] = datetime.now(UTC).isoformat(timespec="seconds")
        tmp = out_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(results, indent=1, ensure_ascii=False) + "\n")
        tmp.replace(out_path)

    names: list[str] = []
    if "start-up" in args.cases:
        names.append("start-up")
    if "sizes" in args.cases:
        names += [str(n) for n in args.sizes]
    if "big" in args.cases:
        names.append("big")
    runs: list[Run] = []
    profiles: dict[str, dict[str, Any]] = {}
    bench = ScaleBench(args, workdir, code_dir)
    try:
        bench.start()
        for name in names:
            case = bench.add_case(name)
            for r in range(args.runs):
                res = bench.run_once(case, r + 1)
                runs.append(res)
                log(
                    f"[{name}] run {r + 1}/{args.runs}: {res.wall_s:.2f} s, "
                    f"{res.msgs_s:,.0f} msgs/s, {res.mb_s:.1f} MB/s, cpu {res.mover_cpu_s:.2f} s, "
                    f"server {res.server_cpu_s:.2f} s, rss {res.peak_rss_mb:.1f} MB, "
                    + ("exact" if res.exact else "NOT exact: " + "; ".join(res.reasons[:3]))
                    + f" (checked in {res.check_s:.0f} s)"
                    + (
                        f" [others used {res.other_cpu_s:.1f} CPU s]"
                        if res.other_cpu_s > 0.3
                        else ""
                    )
                )
            if args.profile and name not in ("start-up", "big"):
                profiles[name] = bench.profile_once(case)
                log(
                    f"[{name}] cProfile'd run: {profiles[name]['cpu_s']:.2f} CPU s "
                    f"(profile total {profiles[name]['profile_total_s']:.2f} s)"
                )
                results["profiles"] = profiles
            # free the tmpfs and the harness's memory before the next case
            bench.sources.pop(name, None)
            shutil.rmtree(bench.server.base_dir / "mail" / case.user, ignore_errors=True)
            results["cases"] = [asdict(c) for c in bench.cases]
            results["runs"] = [asdict(r) for r in runs]
            save()
    finally:
        bench.stop()
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)
        else:
            log(f"work directory kept: {workdir}")
    summary = summarise(bench.cases, runs)
    found = findings(summary, args.sizes if "sizes" in args.cases else [], profiles)
    results["summary"] = summary
    results["findings"] = found
    save()
    print_table(summary, found, args.runs)
    with contextlib.suppress(OSError):
        if bench_run._tree_hash(REPO / "src" / "yippiemove") != code["sha256"] and code_dir:
            log("note: src/yippiemove changed during the session (the runs used the snapshot)")
    log(f"\nresults: {out_path}")
    return 0 if all(r.exact for r in runs) else 1


if __name__ == "__main__":
    sys.exit(main())
