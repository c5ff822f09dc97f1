#!/usr/bin/env python3
"""yippiemove benchmark: yippiemove vs mbsync vs Dovecot's dsync, on a throwaway Dovecot.

    .venv/bin/python bench/run.py [--preset small|mixed|all] [--runs 3] [--quick]

See bench/README.md for what is measured and how the peers are configured.
"""

from __future__ import annotations

import argparse
import compileall
import contextlib
import hashlib
import inspect
import io
import json
import os
import platform
import pstats
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

import corpus
import imapsync_peer
import measure
import snapshot
from yippiemove.testing.dovecot import DovecotServer

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
PASSWORD = "bench-pw"
SOURCE_USER = "src"

YM, MBSYNC, DSYNC, IMAPSYNC = "yippiemove", "mbsync", "dsync", "imapsync"
#: yippiemove as of --baseline-rev, measured beside the code under test in the same run.
BASE = f"{YM}-base"
MOVERS = (YM, MBSYNC, DSYNC)
#: --no-literal-plus: imapsync too (the issue's reference for that case)
NOLP_MOVERS = (YM, IMAPSYNC, MBSYNC, DSYNC)
#: --no-literal-plus: the capabilities taken out of Dovecot's list (imap_capability)
NOLP_REMOVED = ("LITERAL+", "MULTIAPPEND")
#: the variant through latency_proxy.py --nagle --delay-ms 0: a server without TCP_NODELAY
NAGLE = "@nagle"
#: --with-plain: a mover's twin without TLS (plain port, plain configuration), e.g.
#: "yippiemove+plain", measured in the same run as the mover over the run's --security
PLAIN = "+plain"

#: --security: how every mover connects (the exactness check always reads the plain port)
SECURITY_MODES = ("tls", "starttls", "none")
SECURITY_TEXT = {
    "tls": "implicit TLS (imaps port), verified against the server's CA",
    "starttls": "STARTTLS on the plain port, verified against the server's CA",
    "none": "none (plain IMAP)",
}
#: how the targets name a mode
SECURITY_LABEL = {"tls": "TLS", "starttls": "STARTTLS", "none": "plain"}

# Goals from the issue tracker; printed beside the figures, never asserted.
GOAL_MIXED_VS_MBSYNC = 1.5  # x mbsync MB/s
GOAL_SMALL_VS_MBSYNC = 4.0  # x mbsync msgs/s
GOAL_MB_PER_CPU_S = 250.0  # mixed
GOAL_MSGS_PER_CPU_S = 10_000.0  # small
GOAL_RSS_BASE = 100e6  # bytes, plus the largest message
GOAL_RTT_SHARE = 0.5  # of loopback throughput, mixed, plain IMAP
GOAL_RTT_SHARE_TLS = 0.8  # the same with TLS (--security tls or starttls)
GOAL_TLS_VS_PLAIN_MB_S = 0.70  # mixed: yippiemove's TLS MB/s / its plain MB/s
GOAL_TLS_VS_PLAIN_CPU = 1.5  # every preset: its TLS mover CPU / its plain mover CPU, at most
GOAL_NOLP_MS_PER_MSG = 2.0  # --no-literal-plus, loopback
# A run during which other processes used more CPU than this share of its wall time
# (and at least 0.3 s) is repeated (--retry-noisy times at most).
NOISE_SHARE = 0.10


# --------------------------------------------------------------------------- helpers


def log(msg: str) -> None:
    print(msg, flush=True)


def _run_text(argv: Sequence[str], timeout: float = 30) -> str:
    try:
        done = subprocess.run(
            list(argv), capture_output=True, text=True, timeout=timeout, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"unavailable ({exc})"
    return (done.stdout or done.stderr).strip()


def ensure_mbsync() -> str | None:
    """Path of mbsync; installs Debian's isync with apt-get when it is missing."""
    path = shutil.which("mbsync")
    if path:
        return path
    log("mbsync not found: installing isync with apt-get ...")
    prefix: list[str] = []
    if os.geteuid() != 0:
        if not shutil.which("sudo"):
            log("  not root and no sudo: skipping mbsync")
            return None
        prefix = ["sudo", "-n"]
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    install = [*prefix, "apt-get", "install", "-y", "-q", "--no-install-recommends", "isync"]
    for attempt in range(2):
        try:
            done = subprocess.run(install, env=env, capture_output=True, text=True, timeout=600)
        except (OSError, subprocess.TimeoutExpired) as exc:
            log(f"  apt-get failed: {exc}")
            return None
        if done.returncode == 0:
            break
        if attempt == 0:
            with contextlib.suppress(OSError, subprocess.TimeoutExpired):
                subprocess.run(
                    [*prefix, "apt-get", "update", "-q"],
                    env=env,
                    capture_output=True,
                    timeout=600,
                )
        else:
            log(f"  apt-get install isync failed: {done.stderr.strip()[-500:]}")
    return shutil.which("mbsync")


def yippiemove_argv(code_dir: Path | None = None) -> list[str]:
    """How to start yippiemove: from the session's code snapshot, or as installed."""
    if code_dir is not None:
        return [sys.executable, "-m", "yippiemove.cli"]
    exe = Path(sys.executable).parent / "yippiemove"
    if exe.exists():
        return [str(exe)]
    found = shutil.which("yippiemove")
    return [found] if found else [sys.executable, "-m", "yippiemove.cli"]


def _fs_type(path: Path) -> str:
    """File system type of the mount that holds ``path`` (symlinks resolved)."""
    real = os.path.realpath(path)
    best, fstype = "", "unknown"
    with contextlib.suppress(OSError), open("/proc/mounts") as f:
        for line in f:
            parts = line.split()
            if len(parts) < 3:
                continue
            mnt = parts[1]
            inside = real == mnt or real.startswith(mnt.rstrip("/") + "/")
            if inside and len(mnt) >= len(best):
                best, fstype = mnt, parts[2]
    return fstype


def _tree_hash(root: Path) -> str:
    """SHA-256 over the package's .py files (names relative to root), 16 hex digits."""
    h = hashlib.sha256()
    for p in sorted(root.rglob("*.py")):
        if "__pycache__" not in p.parts:
            h.update(str(p.relative_to(root)).encode() + b"\0" + p.read_bytes())
    return h.hexdigest()[:16]


def snapshot_code(dest: Path, rev: str | None = None) -> Path:
    """Copy src/yippiemove (of the working tree, or of git revision ``rev``) to
    dest/yippiemove: every run of the session then runs the same code, even while
    people edit and commit the working tree."""
    if rev is None:
        shutil.copytree(
            REPO / "src" / "yippiemove",
            dest / "yippiemove",
            ignore=shutil.ignore_patterns("__pycache__", "*.pyc"),
        )
    else:
        dest.mkdir(parents=True, exist_ok=True)
        archive = subprocess.run(
            ["git", "-C", str(REPO), "archive", "--format=tar", rev, "src/yippiemove"],
            capture_output=True,
            timeout=60,
            check=True,
        ).stdout
        with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
            tar.extractall(dest, filter="data")
        shutil.move(str(dest / "src" / "yippiemove"), str(dest / "yippiemove"))
        shutil.rmtree(dest / "src")
    return dest


def machine_info(mbsync: str | None, workdir: Path) -> dict[str, Any]:
    cpu_model = ""
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                cpu_model = line.split(":", 1)[1].strip()
                break
    mem = ""
    with contextlib.suppress(OSError), open("/proc/meminfo") as f:
        mem = f.readline().split(":", 1)[1].strip()
    try:
        from importlib.metadata import version

        ym_version = version("yippiemove")
    except Exception:  # pragma: no cover - metadata missing
        ym_version = "unknown"
    git = _run_text(["git", "-C", str(REPO), "rev-parse", "HEAD"])
    dirty = _run_text(["git", "-C", str(REPO), "status", "--porcelain", "--", "src"])
    return {
        "nproc": os.cpu_count(),
        "cpus_usable": len(os.sched_getaffinity(0)),
        "cpu_model": cpu_model,
        "memory": mem,
        "kernel": platform.release(),
        "os": _run_text(["sh", "-c", ". /etc/os-release && echo $PRETTY_NAME"]),
        "python": platform.python_version(),
        "dovecot": _run_text(["dovecot", "--version"]),
        "mbsync": _run_text([mbsync, "--version"]) if mbsync else "not installed",
        "yippiemove": ym_version,
        "git_commit": git,
        "src_uncommitted_changes": dirty.splitlines() if dirty else [],
        "src_tree_sha256": _tree_hash(REPO / "src" / "yippiemove"),
        "workdir_fs": _fs_type(workdir),
    }


def _median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else float("nan")


def variant_security(variant: str, security: str) -> str:
    """How a variant connects: the run's ``--security``, or "none" for a ``+plain`` twin."""
    return "none" if variant.split("@", 1)[0].endswith(PLAIN) else security


def variant_mover(variant: str) -> str:
    """The mover a variant runs: "mbsync+plain" -> "mbsync" (yippiemove's variants keep
    their names: they are told apart with ``startswith(YM)``)."""
    return variant.split("@", 1)[0].removesuffix(PLAIN)


# --------------------------------------------------------------------------- runs


@dataclass
class RunResult:
    variant: str  # "yippiemove", "mbsync", "dsync", "yippiemove@40ms"
    run: int
    ok: bool
    exit_code: int | None
    wall_s: float
    mb_s: float
    msgs_s: float
    mover_cpu_s: float
    mover_user_s: float
    mover_sys_s: float
    server_cpu_s: float
    mover_peak_rss_mb: float
    exact: bool
    reasons: list[str] = field(default_factory=list)
    proxy_cpu_s: float | None = None
    #: yippiemove's own count, from its last line ("Done: N messages, N copied, ...")
    report_totals: dict[str, Any] | None = None
    #: Dovecot's CPU by program (imap, imap-login = TLS, auth ...), sampled: approximate
    server_cpu_by_program: dict[str, float] = field(default_factory=dict)
    #: CPU time the rest of the machine used during the run (noise; should be ~0)
    other_cpu_s: float = 0.0
    #: seconds spent waiting for the machine to be idle before the run
    quiet_wait_s: float = 0.0
    dest_messages: int = 0
    log_tail: str = ""
    #: how the mover connected: "tls", "starttls" or "none" (--security; "none" for +plain)
    security: str = ""


class PresetBench:
    """One corpus on one Dovecot; every mover, several times, alternating."""

    def __init__(
        self,
        preset: corpus.Preset,
        args: argparse.Namespace,
        workdir: Path,
        mbsync: str | None,
        latency: bool,
        code_dir: Path | None = None,
        base_dir: Path | None = None,
    ) -> None:
        self.code_dir = code_dir
        #: the code of --baseline-rev (variant BASE), if asked for
        self.base_dir = base_dir
        self.preset = preset
        self.args = args
        self.dir = workdir / preset.name
        self.mbsync = mbsync
        self.latency = latency
        kwargs: dict[str, Any] = {}
        if "mail_root" in inspect.signature(DovecotServer).parameters:
            # the launcher keeps its sockets in /tmp and the mail where we say: tmpfs
            kwargs["mail_root"] = workdir / "mail"
        self.server = DovecotServer(self.dir / "dovecot", users={SOURCE_USER: PASSWORD}, **kwargs)
        self.proxy: subprocess.Popen[str] | None = None
        self.proxy_port = 0
        self._proxy_log: IO[bytes] | None = None
        self.nagle_proxy: subprocess.Popen[str] | None = None
        self.nagle_port = 0
        self._nagle_log: IO[bytes] | None = None
        #: --no-literal-plus: Dovecot's capabilities as advertised (after the trim)
        self.capabilities: list[str] = []
        #: (script, version) of imapsync, when it is a mover
        self.imapsync: tuple[Path, str] | None = None
        self.pw_file = self.dir / "password"
        self.source: snapshot.Snapshot | None = None

    # ----------------------------------------------------------------- set-up

    def port(self, security: str) -> int:
        """The server's port for a security mode: imaps for implicit TLS, else the plain
        port (STARTTLS is negotiated on it)."""
        return self.server.tls_port if security == "tls" else self.server.port

    def start(self) -> dict[str, Any]:
        self.dir.mkdir(parents=True)
        self.pw_file.write_text(PASSWORD + "\n")
        self.server.start()
        if self.args.no_literal_plus:
            self._trim_capabilities()
        fsync = _run_text(["doveconf", "-c", str(self.server.config_path), "-h", "mail_fsync"])
        if fsync != "never":
            raise RuntimeError(f"Dovecot's mail_fsync is {fsync!r}, expected 'never'")
        log(
            f"[{self.preset.name}] Dovecot on 127.0.0.1:{self.server.port} (plain, STARTTLS) "
            f"and :{self.server.tls_port} (imaps), mail_fsync=never; movers: "
            f"{SECURITY_TEXT[self.args.security]}"
            + (", and +plain twins on the plain port" if self.args.with_plain else "")
        )
        t0 = time.perf_counter()
        stats = corpus.load(self.server, SOURCE_USER, self.preset)
        load_s = time.perf_counter() - t0
        mail_fs = _fs_type(self.server.maildir(SOURCE_USER))
        if mail_fs != "tmpfs":
            log(
                f"WARNING: the mail is on {mail_fs}, not tmpfs "
                f"({os.path.realpath(self.server.maildir(SOURCE_USER))}): figures include the disk"
            )
        log(
            f"[{self.preset.name}] corpus: {stats.messages} messages, "
            f"{stats.stored_bytes / 1e6:.1f} MB stored on {mail_fs}, generated+delivered in "
            f"{load_s:.1f} s"
        )
        t0 = time.perf_counter()
        self.source = snapshot.snapshot(self.server.port, SOURCE_USER, PASSWORD)
        snap_s = time.perf_counter() - t0
        if self.source.total_messages != stats.messages:
            raise RuntimeError(
                f"source shows {self.source.total_messages} messages, {stats.messages} delivered"
            )
        log(
            f"[{self.preset.name}] source over IMAP: {self.source.total_messages} messages, "
            f"{self.source.total_bytes / 1e6:.1f} MB in {len(self.source.folders)} folders "
            f"(snapshot {snap_s:.1f} s)"
        )
        if self.latency:
            self.proxy, self.proxy_port, self._proxy_log = self._start_proxy(
                self.args.rtt_ms / 2, "proxy"
            )
        if self.args.no_literal_plus and YM in self.args.movers:
            self.nagle_proxy, self.nagle_port, self._nagle_log = self._start_proxy(
                0.0, "nagle-proxy", nagle=True
            )
        return {
            **stats.as_dict(),
            "load_seconds": round(load_s, 2),
            "mail_dir": os.path.realpath(self.server.maildir(SOURCE_USER)),
            "mail_fs": mail_fs,
            "imap_messages": self.source.total_messages,
            "imap_bytes": self.source.total_bytes,
            "imap_largest_bytes": self.source.largest,
            "imap_folders": sorted(self.source.folders),
            **({"capabilities": self.capabilities} if self.args.no_literal_plus else {}),
        }

    def _probe_capabilities(self) -> list[str]:
        import imaplib

        c = imaplib.IMAP4("127.0.0.1", self.server.port)
        try:
            c.login(SOURCE_USER, PASSWORD)
            typ, data = c.capability()
            return data[0].decode().split() if typ == "OK" and data and data[0] else []
        finally:
            with contextlib.suppress(Exception):
                c.logout()

    def _trim_capabilities(self) -> None:
        """Restart Dovecot with ``imap_capability`` = its own list less LITERAL+ and
        MULTIAPPEND, and check that the list advertised after login is that."""
        caps = self._probe_capabilities()
        keep = [c for c in caps if c.upper() not in NOLP_REMOVED]
        self.server.stop()
        self.server.extra_config = (
            self.server.extra_config + "\nimap_capability = " + " ".join(keep) + "\n"
        )
        self.server.start()
        self.capabilities = self._probe_capabilities()
        left = [c for c in self.capabilities if c.upper() in NOLP_REMOVED]
        if left or not self.capabilities:
            raise RuntimeError(f"imap_capability did not take: {self.capabilities}")
        log(
            f"[{self.preset.name}] Dovecot without {' and '.join(NOLP_REMOVED)}: "
            + " ".join(self.capabilities)
        )

    def _start_proxy(
        self, delay_ms: float, name: str, *, nagle: bool = False
    ) -> tuple[subprocess.Popen[str], int, IO[bytes]]:
        plog = open(self.dir / f"{name}.log", "wb")
        proc = subprocess.Popen(
            [
                sys.executable,
                str(HERE / "latency_proxy.py"),
                "--target",
                # the port of the run's security mode: the proxy relays the TLS bytes
                f"127.0.0.1:{self.port(self.args.security)}",
                "--delay-ms",
                str(delay_ms),
                *(["--nagle"] if nagle else []),
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=plog,
            text=True,
            start_new_session=True,
        )
        assert proc.stdout is not None
        deadline = time.monotonic() + 15
        line = ""
        while time.monotonic() < deadline and not line:
            line = proc.stdout.readline()
        m = re.match(r"LISTENING (\S+) (\d+)", line)
        if not m:
            raise RuntimeError(f"latency proxy did not start: {line!r}")
        port = int(m.group(2))
        what = "Nagle on towards the client" if nagle else f"+{delay_ms:g} ms each way"
        log(f"[{self.preset.name}] {name}: {what} on :{port}")
        return proc, port, plog

    @staticmethod
    def _stop_proxy(proc: subprocess.Popen[str] | None, plog: IO[bytes] | None) -> None:
        if proc is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(5)
            if proc.stdout is not None:
                proc.stdout.close()
        if plog is not None:
            plog.close()

    def stop(self) -> None:
        self._stop_proxy(self.proxy, self._proxy_log)
        self.proxy, self._proxy_log = None, None
        self._stop_proxy(self.nagle_proxy, self._nagle_log)
        self.nagle_proxy, self._nagle_log = None, None
        self.server.stop()

    # ----------------------------------------------------------------- movers

    def variants(self) -> list[str]:
        out: list[str] = []
        for m in self.args.movers:
            if (m == MBSYNC and not self.mbsync) or (m == IMAPSYNC and not self.imapsync):
                continue
            out.append(m)
            if m == YM and self.base_dir is not None:
                out.append(BASE)
            if self.args.with_plain:
                out.append(m + PLAIN)
        if self.nagle_proxy is not None and YM in self.args.movers:
            out.append(YM + NAGLE)
            if self.base_dir is not None:
                out.append(BASE + NAGLE)
        if self.latency and YM in self.args.movers:
            out.append(f"{YM}@{self.args.rtt_ms:g}ms")
            if self.base_dir is not None:
                out.append(f"{BASE}@{self.args.rtt_ms:g}ms")
        return out

    def _argv(self, variant: str, dest_user: str, rdir: Path) -> list[str]:
        security = variant_security(variant, self.args.security)
        mover = variant_mover(variant)
        port = self.port(security)
        ca = str(self.server.ca_file)
        if variant.startswith(YM):
            # the proxies relay to the port of the run's security mode (no +plain twin
            # goes through them)
            if variant.endswith(NAGLE):
                port = self.nagle_port
            elif "@" in variant:
                port = self.proxy_port
            scheme = "imaps" if security == "tls" else "imap"
            return [
                *yippiemove_argv(self.base_dir if variant.startswith(BASE) else self.code_dir),
                "move",
                "--source",
                f"{scheme}://{SOURCE_USER}@127.0.0.1:{port}",
                "--dest",
                f"{scheme}://{dest_user}@127.0.0.1:{port}",
                "--source-password-file",
                str(self.pw_file),
                "--dest-password-file",
                str(self.pw_file),
                "--ca-file",
                ca,
                "--state",
                str(rdir / "state.sqlite"),
                "--no-progress",
                *(["--no-starttls"] if security == "none" else []),
                *self.args.yippiemove_arg,
            ]
        if mover == IMAPSYNC:
            assert self.imapsync is not None
            return imapsync_peer.imapsync_argv(
                self.imapsync[0],
                port,
                SOURCE_USER,
                dest_user,
                self.pw_file,
                rdir,
                security=security,
                ca=ca,
            )
        if mover == MBSYNC:
            assert self.mbsync is not None
            (rdir / "mbsync-state").mkdir()
            rc = rdir / "mbsyncrc"
            rc.write_text(mbsyncrc(port, ca, dest_user, rdir / "mbsync-state", security=security))
            rc.chmod(0o600)
            return [self.mbsync, "-c", str(rc), "move"]
        if mover == DSYNC:
            conf = rdir / "dsync.conf"
            conf.write_text(dsync_conf(self.server.config_path, port, ca, security=security))
            return [
                "doveadm",
                "-c",
                str(conf),
                "backup",
                "-R",
                "-u",
                dest_user,
                "imapc:",
            ]
        raise ValueError(variant)

    def _env(self, variant: str) -> dict[str, str] | None:
        code = self.base_dir if variant.startswith(BASE) else self.code_dir
        if code is None or not variant.startswith(YM):
            return None
        return {**os.environ, "PYTHONPATH": str(code)}

    def run_once(self, variant: str, run: int, attempt: int = 0) -> RunResult:
        assert self.source is not None
        safe = re.sub(r"[^A-Za-z0-9]+", "-", variant).strip("-")
        dest_user = f"dst-{safe}-{run}-{attempt}"
        rdir = self.dir / "runs" / f"{safe}-{run}-{attempt}"
        rdir.mkdir(parents=True)
        self.server.add_user(dest_user, PASSWORD)
        argv = self._argv(variant, dest_user, rdir)
        measure.settle(self.server.pid)
        waited = measure.wait_for_quiet(self.args.quiet_wait) if self.args.quiet_wait > 0 else 0.0
        cpu0 = measure.group_cpu_seconds(self.server.pid)
        proxy = self.nagle_proxy if variant.endswith(NAGLE) else self.proxy
        proxy0 = measure.process_cpu_seconds(proxy.pid) if proxy else 0.0
        busy0 = measure.system_busy_seconds()
        child = measure.run_child(
            argv,
            log=rdir / "output.log",
            timeout=self.args.timeout,
            env=self._env(variant),
            watch_pgid=self.server.pid,
        )
        busy = measure.system_busy_seconds() - busy0
        measure.settle(self.server.pid)
        server_cpu = measure.group_cpu_seconds(self.server.pid) - cpu0
        proxy_cpu = (
            measure.process_cpu_seconds(proxy.pid) - proxy0 if proxy and "@" in variant else None
        )
        ok = child.exit_code == 0
        reasons: list[str] = []
        if child.timed_out:
            reasons.append(f"killed after {self.args.timeout:.0f} s")
        elif child.exit_code != 0:
            reasons.append(f"exit status {child.exit_code}")
        dest_messages = 0
        try:
            dest = snapshot.snapshot(self.server.port, dest_user, PASSWORD)
            dest_messages = dest.total_messages
            exact, why = snapshot.compare(self.source, dest)
            reasons += why
        except Exception as exc:  # the check must not stop the benchmark
            exact = False
            reasons.append(f"snapshot of the destination failed: {exc}")
        exact = exact and ok
        totals = None
        if variant.startswith(YM):
            # its last line: "Done: N messages, N copied, N already there, N failed"
            m = re.search(
                r"Done: (\d+) messages, (\d+) copied, (\d+) already there, (\d+) failed",
                child.log_tail,
            )
            if m:
                keys = ("messages", "copied", "already_there", "failed")
                totals = dict(zip(keys, (int(g) for g in m.groups()), strict=True))
        wall = child.wall_s
        result = RunResult(
            variant=variant,
            run=run,
            ok=ok,
            exit_code=child.exit_code,
            wall_s=round(wall, 3),
            mb_s=round(self.source.total_bytes / 1e6 / wall, 2),
            msgs_s=round(self.source.total_messages / wall, 1),
            mover_cpu_s=round(child.cpu_s, 3),
            mover_user_s=round(child.user_s, 3),
            mover_sys_s=round(child.sys_s, 3),
            server_cpu_s=round(server_cpu, 2),
            mover_peak_rss_mb=round(child.peak_rss_bytes / 1e6, 1),
            server_cpu_by_program=child.server_breakdown,
            exact=exact,
            reasons=reasons,
            proxy_cpu_s=round(proxy_cpu, 2) if proxy_cpu is not None else None,
            other_cpu_s=round(max(0.0, busy - child.cpu_s - server_cpu - (proxy_cpu or 0)), 2),
            quiet_wait_s=round(waited, 1),
            dest_messages=dest_messages,
            report_totals=totals,
            log_tail="" if exact else child.log_tail,
            security=variant_security(variant, self.args.security),
        )
        # free the tmpfs for the next run
        shutil.rmtree(self.server.base_dir / "mail" / dest_user, ignore_errors=True)
        if not self.args.keep:
            shutil.rmtree(rdir, ignore_errors=True)
        return result

    def profile_once(self) -> dict[str, Any]:
        """One extra yippiemove run under cProfile (CPU-time clock): where its CPU goes."""
        dest_user = "dst-profile"
        rdir = self.dir / "runs" / "profile"
        rdir.mkdir(parents=True)
        self.server.add_user(dest_user, PASSWORD)
        argv = self._argv(YM, dest_user, rdir)[len(yippiemove_argv(self.code_dir)) :]
        prof = rdir / "yippiemove.prof"
        argv = [sys.executable, str(HERE / "profile_yippiemove.py"), str(prof), *argv]
        child = measure.run_child(
            argv, log=rdir / "output.log", timeout=self.args.timeout, env=self._env(YM)
        )
        out: dict[str, Any] = {"wall_s": round(child.wall_s, 3), "cpu_s": round(child.cpu_s, 3)}
        if prof.exists():
            st = pstats.Stats(str(prof))
            rows = []
            for (fname, line, func), (_cc, nc, tt, ct, _callers) in st.stats.items():
                rows.append((tt, ct, nc, f"{Path(fname).name}:{line}({func})"))
            rows.sort(reverse=True)
            total = sum(r[0] for r in rows) or 1.0
            out["profile_total_s"] = round(total, 3)
            out["top_tottime"] = [
                {
                    "tottime_s": round(tt, 3),
                    "share": round(tt / total, 4),
                    "cumtime_s": round(ct, 3),
                    "calls": nc,
                    "function": fn,
                }
                for tt, ct, nc, fn in rows[:30]
            ]
        shutil.rmtree(self.server.base_dir / "mail" / dest_user, ignore_errors=True)
        if not self.args.keep:
            shutil.rmtree(rdir, ignore_errors=True)
        return out


def mbsyncrc(port: int, ca: str, dest_user: str, state_dir: Path, *, security: str) -> str:
    """mbsync's configuration; ``port`` is the one of ``security`` (imaps for "tls")."""
    # Host "localhost": isync 1.4 checks the certificate's DNS names only, not IP SANs.
    verify = f"CertificateFile {ca}\nSystemCertificates no\n"
    tls = {
        "tls": "SSLType IMAPS\n" + verify,
        "starttls": "SSLType STARTTLS\n" + verify,
        "none": "SSLType None\nAuthMechs LOGIN\n",
    }[security]

    def account(name: str, user: str) -> str:
        return (
            f"IMAPAccount {name}\nHost localhost\nPort {port}\nUser {user}\n"
            f"Pass {PASSWORD}\n{tls}\n"
            f"IMAPStore {name}\nAccount {name}\n\n"
        )

    return (
        account("far", SOURCE_USER)
        + account("near", dest_user)
        + "Channel move\nFar :far:\nNear :near:\nPatterns INBOX *\nSync Pull\n"
        "Create Near\nExpunge None\nCopyArrivalDate yes\n"
        f"SyncState {state_dir}/\n"
    )


def dsync_conf(server_conf: Path, port: int, ca: str, *, security: str) -> str:
    """dsync's configuration (only its source is over IMAP: imapc); ``port`` is the one
    of ``security`` (imaps for "tls")."""
    # Dovecot's documented IMAP migration: dsync pulls from the old server over imapc.
    verify = f"imapc_ssl_verify = yes\nssl_client_ca_file = {ca}\n"
    tls = {
        "tls": "imapc_ssl = imaps\n" + verify,
        "starttls": "imapc_ssl = starttls\n" + verify,
        "none": "imapc_ssl = no\n",
    }[security]
    return (
        f"!include {server_conf}\n"
        "imapc_host = 127.0.0.1\n"
        f"imapc_port = {port}\n"
        f"imapc_user = {SOURCE_USER}\n"
        f"imapc_password = {PASSWORD}\n" + tls + "imapc_features = rfc822.size fetch-headers\n"
        "mail_prefetch_count = 20\n"
    )


# --------------------------------------------------------------------------- summary


def summarise(runs: list[RunResult]) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for variant in dict.fromkeys(r.variant for r in runs):
        rs = [r for r in runs if r.variant == variant]
        good = [r for r in rs if r.ok] or rs
        reasons: list[str] = []
        for r in rs:
            if not r.exact:
                reasons = r.reasons
                break
        out[variant] = {
            "runs": len(rs),
            "failed_runs": sum(1 for r in rs if not r.ok),
            "wall_s": _median([r.wall_s for r in good]),
            "mb_s": _median([r.mb_s for r in good]),
            "msgs_s": _median([r.msgs_s for r in good]),
            "ms_per_msg": round(1000 / _median([r.msgs_s for r in good]), 3)
            if _median([r.msgs_s for r in good])
            else None,
            "mover_cpu_s": _median([r.mover_cpu_s for r in good]),
            "mover_user_s": _median([r.mover_user_s for r in good]),
            "mover_sys_s": _median([r.mover_sys_s for r in good]),
            "server_cpu_s": _median([r.server_cpu_s for r in good]),
            "mover_peak_rss_mb": max(r.mover_peak_rss_mb for r in good),
            "other_cpu_s": _median([r.other_cpu_s for r in good]),
            "server_cpu_by_program": {
                prog: round(_median([r.server_cpu_by_program.get(prog, 0.0) for r in good]), 2)
                for prog in dict.fromkeys(p for r in good for p in r.server_cpu_by_program)
            },
            "exact": all(r.exact for r in rs),
            "not_exact_reasons": reasons,
            "wall_s_all": [r.wall_s for r in rs],
        }
    return out


def ratios(summary: dict[str, dict[str, Any]], rtt_variant: str) -> dict[str, float]:
    out: dict[str, float] = {}
    # --with-plain: what TLS costs each mover, same corpus, same run (yippiemove's is a
    # target; the peers' are informative)
    for mover in (YM, MBSYNC, DSYNC, IMAPSYNC):
        t, p = summary.get(mover), summary.get(mover + PLAIN)
        if t and p and p["mb_s"] > 0 and p["mover_cpu_s"] > 0:
            out[f"{mover}/{mover}{PLAIN} MB/s"] = round(t["mb_s"] / p["mb_s"], 3)
            out[f"{mover}/{mover}{PLAIN} mover CPU s"] = round(
                t["mover_cpu_s"] / p["mover_cpu_s"], 3
            )
    ym = summary.get(YM)
    if not ym:
        return out
    for peer in (MBSYNC, DSYNC, IMAPSYNC):
        p = summary.get(peer)
        if p and p["mb_s"] > 0:
            out[f"yippiemove/{peer} MB/s"] = round(ym["mb_s"] / p["mb_s"], 2)
            out[f"yippiemove/{peer} msgs/s"] = round(ym["msgs_s"] / p["msgs_s"], 2)
    lat = summary.get(rtt_variant)
    if lat and ym["mb_s"] > 0:
        out[f"{rtt_variant}/loopback throughput"] = round(lat["mb_s"] / ym["mb_s"], 3)
    nagle = summary.get(YM + NAGLE)
    imapsync = summary.get(IMAPSYNC)
    if nagle and imapsync and imapsync["msgs_s"] > 0:
        out[f"{YM}{NAGLE}/{IMAPSYNC} msgs/s"] = round(nagle["msgs_s"] / imapsync["msgs_s"], 2)
    # --baseline-rev: the code under test against the baseline, same corpus, same run.
    pairs = [
        (YM, BASE),
        (rtt_variant, rtt_variant.replace(YM, BASE, 1)),
        (YM + NAGLE, BASE + NAGLE),
    ]
    for mine, base in pairs:
        b, m = summary.get(base), summary.get(mine)
        if b and m and b["mb_s"] > 0 and m["mover_cpu_s"] > 0:
            out[f"{mine}/{base} MB/s"] = round(m["mb_s"] / b["mb_s"], 3)
            out[f"{base}/{mine} mover CPU s"] = round(b["mover_cpu_s"] / m["mover_cpu_s"], 3)
    return out


def targets(
    shape: str,
    summary: dict[str, dict[str, Any]],
    rat: dict[str, float],
    src_bytes: int,
    src_msgs: int,
    largest: int,
    rtt_variant: str,
    security: str = "none",
) -> list[dict[str, Any]]:
    """The goals of the issues, for the variants of the run's ``security`` (yippiemove
    against mbsync: both over it); with ``+plain`` twins also what TLS costs."""
    out: list[dict[str, Any]] = []
    label = SECURITY_LABEL[security]
    tls = security != "none"

    def add(goal: str, value: float | None, threshold: float, higher: bool = True) -> None:
        met = None if value is None else (value >= threshold if higher else value <= threshold)
        out.append({"goal": goal, "value": value, "threshold": threshold, "met": met})

    ym = summary.get(YM)
    if shape == "small-2k":
        for variant in (YM, YM + NAGLE):
            s = summary.get(variant)
            add(
                f"{variant} <= 2 ms per message (no LITERAL+/MULTIAPPEND)",
                s["ms_per_msg"] if s else None,
                GOAL_NOLP_MS_PER_MSG,
                higher=False,
            )
        add("yippiemove msgs/s >= imapsync", rat.get("yippiemove/imapsync msgs/s"), 1.0)
        add(
            f"{YM}{NAGLE} msgs/s >= imapsync",
            rat.get(f"{YM}{NAGLE}/{IMAPSYNC} msgs/s"),
            1.0,
        )
    if shape == "mixed":
        add(
            f"yippiemove MB/s >= 1.5 x mbsync ({label})",
            rat.get("yippiemove/mbsync MB/s"),
            GOAL_MIXED_VS_MBSYNC,
        )
        cpu = ym["mover_cpu_s"] if ym else None
        add(
            "yippiemove >= 250 MB per mover CPU-second",
            round(src_bytes / 1e6 / cpu, 1) if cpu else None,
            GOAL_MB_PER_CPU_S,
        )
        share = GOAL_RTT_SHARE_TLS if tls else GOAL_RTT_SHARE
        add(
            f"{rtt_variant} >= {share:.0%} of loopback MB/s ({label}; the goal is "
            f"{GOAL_RTT_SHARE_TLS:.0%} with TLS, {GOAL_RTT_SHARE:.0%} plain)",
            rat.get(f"{rtt_variant}/loopback throughput"),
            share,
        )
        if tls:
            add(
                f"yippiemove ({label}) MB/s >= 70% of its plain MB/s",
                rat.get(f"{YM}/{YM}{PLAIN} MB/s"),
                GOAL_TLS_VS_PLAIN_MB_S,
            )
    if shape == "small":
        add(
            f"yippiemove msgs/s >= 4 x mbsync ({label})",
            rat.get("yippiemove/mbsync msgs/s"),
            GOAL_SMALL_VS_MBSYNC,
        )
        cpu = ym["mover_cpu_s"] if ym else None
        add(
            "yippiemove >= 10,000 messages per mover CPU-second",
            round(src_msgs / cpu) if cpu else None,
            GOAL_MSGS_PER_CPU_S,
        )
    if tls:
        add(
            f"yippiemove mover CPU with {label} <= 1.5x its plain CPU",
            rat.get(f"{YM}/{YM}{PLAIN} mover CPU s"),
            GOAL_TLS_VS_PLAIN_CPU,
            higher=False,
        )
    if ym:
        add(
            "yippiemove peak RSS <= 100 MB + largest message (MB)",
            ym["mover_peak_rss_mb"],
            round((GOAL_RSS_BASE + largest) / 1e6, 1),
            higher=False,
        )
    return out


def print_table(
    name: str,
    info: dict[str, Any],
    summary: dict[str, dict[str, Any]],
    rat: dict[str, float],
    tgt: list[dict[str, Any]],
    runs: int,
    security: str | None = None,
) -> None:
    log("")
    log(
        f"=== {name}: {info['imap_messages']} messages, {info['imap_bytes'] / 1e6:.1f} MB "
        f"(largest {info['imap_largest_bytes'] / 1e6:.2f} MB), medians of {runs} runs"
        + (f"; security: {SECURITY_TEXT[security]}" if security else "")
        + (f" ({PLAIN}: plain IMAP)" if any(v.endswith(PLAIN) for v in summary) else "")
        + " ==="
    )
    head = (
        f"{'mover':<22}{'wall s':>8}{'MB/s':>8}{'msgs/s':>9}{'ms/msg':>8}{'mover CPU s':>13}"
        f"{'server CPU s':>14}{'peak RSS MB':>13}{'CPU/wall':>10}{'cores':>7}  exact"
    )
    log(head)
    log("-" * len(head))
    for variant, s in summary.items():
        cpu_wall = s["mover_cpu_s"] / s["wall_s"] if s["wall_s"] else float("nan")
        cores = (s["mover_cpu_s"] + s["server_cpu_s"]) / s["wall_s"] if s["wall_s"] else 0.0
        exact = "yes" if s["exact"] else "NO"
        if s["failed_runs"]:
            exact += f" ({s['failed_runs']} failed)"
        log(
            f"{variant:<22}{s['wall_s']:>8.2f}{s['mb_s']:>8.1f}{s['msgs_s']:>9.0f}"
            f"{s['ms_per_msg'] or 0:>8.2f}"
            f"{s['mover_cpu_s']:>13.2f}{s['server_cpu_s']:>14.2f}{s['mover_peak_rss_mb']:>13.1f}"
            f"{cpu_wall:>9.0%}{cores:>7.2f}  {exact}"
        )
    noisy = [
        f"{v} {s['other_cpu_s']:.1f} s"
        for v, s in summary.items()
        if s["other_cpu_s"] > 0.1 * s["wall_s"] and s["other_cpu_s"] > 0.2
    ]
    if noisy:
        log("warning: other processes used CPU during the runs (median): " + ", ".join(noisy))
    for variant, s in summary.items():
        parts = [f"{k} {v:.2f}" for k, v in s["server_cpu_by_program"].items() if v >= 0.05]
        if parts:
            log(f"server CPU s by program, {variant}: " + ", ".join(parts))
    if rat:
        log("ratios: " + "; ".join(f"{k} {v:.2f}x" for k, v in rat.items()))
    for t in tgt:
        met = {True: "met", False: "NOT met", None: "n/a"}[t["met"]]
        value = "n/a" if t["value"] is None else f"{t['value']:g}"
        log(f"target: {t['goal']}: {value} (goal {t['threshold']:g}) -> {met}")
    for variant, s in summary.items():
        if not s["exact"]:
            log(f"not exact: {variant}: " + "; ".join(s["not_exact_reasons"][:6]))


# --------------------------------------------------------------------------- main


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(
        description="Benchmark yippiemove against mbsync and dsync on a throwaway Dovecot."
    )
    ap.add_argument("--preset", choices=("small", "mixed", "small-2k", "all"), default=None)
    ap.add_argument("--runs", type=int, default=3, help="runs per mover (default 3)")
    ap.add_argument("--quick", action="store_true", help="tiny corpora, for a smoke test")
    ap.add_argument(
        "--movers",
        default=None,
        help="comma-separated subset of yippiemove,mbsync,dsync,imapsync (default: the "
        "first three; with --no-literal-plus all four)",
    )
    ap.add_argument(
        "--no-literal-plus",
        action="store_true",
        help="Dovecot without LITERAL+ and MULTIAPPEND (imap_capability), preset small-2k "
        "(2,000 messages), movers yippiemove, imapsync, mbsync, dsync, plus yippiemove "
        "through a proxy that leaves Nagle on (yippiemove@nagle); ms per message",
    )
    ap.add_argument("--imapsync", metavar="FILE", help="the imapsync script to run")
    ap.add_argument(
        "--imapsync-git",
        metavar="DIR",
        help="a git clone of imapsync to take the script from (default $IMAPSYNC_GIT or "
        f"{imapsync_peer.DEFAULT_GIT})",
    )
    ap.add_argument("--imapsync-rev", default="HEAD", help="its revision (default HEAD)")
    ap.add_argument(
        "--latency-presets",
        default="small,mixed",
        help="presets that also get a yippiemove run through the latency proxy ('' = none)",
    )
    ap.add_argument("--rtt-ms", type=float, default=40.0, help="round-trip time to add")
    ap.add_argument("--timeout", type=float, default=1800.0, help="seconds per mover run")
    ap.add_argument(
        "--yippiemove-arg",
        action="append",
        default=[],
        metavar="ARG",
        help="extra argument for `yippiemove move` (repeatable), e.g. --yippiemove-arg=--connections=4",
    )
    ap.add_argument(
        "--quiet-wait",
        type=float,
        default=30.0,
        metavar="S",
        help="before each run wait up to S seconds for the machine to be idle (0: don't)",
    )
    ap.add_argument(
        "--retry-noisy",
        type=int,
        default=2,
        metavar="N",
        help="repeat a run up to N times when other processes used >10%% of its wall "
        "time in CPU (default 2; the discarded runs stay in the JSON)",
    )
    ap.add_argument("--profile", action="store_true", help="one extra cProfile'd yippiemove run")
    sec = ap.add_mutually_exclusive_group()
    sec.add_argument(
        "--security",
        choices=SECURITY_MODES,
        help="how every connection of every mover is secured: tls = implicit TLS on the "
        "imaps port (the default: every real provider speaks TLS), starttls, none = plain "
        "IMAP; certificates verified against the server's CA",
    )
    sec.add_argument(
        "--plain",
        dest="security",
        action="store_const",
        const="none",
        help="= --security none (yippiemove --no-starttls, mbsync SSLType None, dsync "
        "imapc_ssl = no): the conditions of the issue's reference figures",
    )
    sec.add_argument(
        "--starttls",
        dest="security",
        action="store_const",
        const="starttls",
        help="= --security starttls",
    )
    sec.add_argument(
        "--tls",
        dest="security",
        action="store_const",
        const="starttls",
        help="the old spelling of --starttls (= --security starttls, NOT implicit TLS)",
    )
    ap.add_argument(
        "--with-plain",
        action="store_true",
        help="also measure each mover without TLS in the same run, alternating with the "
        "others (variants <mover>+plain: the plain port and configuration); ratios and "
        "targets of what TLS costs. Needs --security tls or starttls",
    )
    ap.add_argument(
        "--code-rev",
        metavar="REV",
        help="benchmark yippiemove as of this git revision (default: the working tree "
        "at the start)",
    )
    ap.add_argument(
        "--baseline-rev",
        metavar="REV",
        help=f"also measure yippiemove as of this git revision ({BASE!r}), alternating "
        "with the code under test in the same run: before/after figures of a change",
    )
    ap.add_argument(
        "--live-code",
        action="store_true",
        help="run yippiemove from the working tree as it is at each run, instead of a "
        "snapshot of src/ taken at the start",
    )
    ap.add_argument("--workdir", default="/dev/shm", help="where the mail lives (tmpfs)")
    ap.add_argument("--keep", action="store_true", help="keep the work directory")
    ap.add_argument("--output", help="JSON file (default bench/results/<timestamp>.json)")
    args = ap.parse_args(argv)
    if args.movers is None:
        args.movers = ",".join(NOLP_MOVERS if args.no_literal_plus else MOVERS)
    if args.preset is None:
        args.preset = "small-2k" if args.no_literal_plus else "all"
    args.movers = [m.strip() for m in args.movers.split(",") if m.strip()]
    bad = [m for m in args.movers if m not in NOLP_MOVERS]
    if bad:
        ap.error(f"unknown movers: {', '.join(bad)}")
    if args.runs < 1:
        ap.error("--runs must be at least 1")
    if args.security is None:
        # the default, set here: argparse's exclusive group does not see an explicit value
        # equal to a default, and would let "--security tls --plain" through
        args.security = "tls"
    if args.with_plain and args.security == "none":
        ap.error("--with-plain compares TLS with plain IMAP: not with --security none/--plain")
    args.latency_presets = {p.strip() for p in args.latency_presets.split(",") if p.strip()}
    return args


def _presets(args: argparse.Namespace) -> Iterator[tuple[str, corpus.Preset]]:
    shapes: tuple[str, ...] = ("small", "mixed") if args.preset == "all" else (args.preset,)
    for shape in shapes:
        yield shape, corpus.PRESETS[f"{shape}-quick" if args.quick else shape]


def _on_sigterm(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, _on_sigterm)
    started = datetime.now(UTC)
    mbsync = ensure_mbsync() if MBSYNC in args.movers else None
    if IMAPSYNC in args.movers:
        log("imapsync: preparing (script from its git clone, Perl modules from Debian) ...")
    if DSYNC in args.movers and not shutil.which("doveadm"):
        log("doveadm not found: skipping dsync")
        args.movers = [m for m in args.movers if m != DSYNC]

    base = Path(args.workdir)
    if not base.is_dir():
        base = Path(tempfile.gettempdir())
    workdir = Path(tempfile.mkdtemp(prefix="ymbench-", dir=base))
    # Dovecot's mail processes run as the `dovecot` user and must traverse this tree.
    workdir.chmod(0o711)
    (workdir / "tmp").mkdir(mode=0o711)
    (workdir / "tmp").chmod(0o711)
    # Launchers without mail_root keep the mail in their private dir from mkdtemp().
    tempfile.tempdir = str(workdir / "tmp")
    info = machine_info(mbsync, workdir)
    imapsync = None
    if IMAPSYNC in args.movers:
        imapsync = imapsync_peer.ensure_imapsync(
            workdir,
            script=args.imapsync,
            git_dir=args.imapsync_git,
            rev=args.imapsync_rev,
            log=log,
        )
        info["imapsync"] = f"imapsync {imapsync[1]}" if imapsync else None
    code_dir = None if args.live_code else snapshot_code(workdir / "code", args.code_rev)
    if code_dir is not None:
        # byte-compile now, so that the first measured run does not pay for it
        compileall.compile_dir(code_dir / "yippiemove", quiet=1)
    base_dir = None
    if args.baseline_rev:
        base_dir = snapshot_code(workdir / "base-code", args.baseline_rev)
        compileall.compile_dir(base_dir / "yippiemove", quiet=1)
    mode = "snapshot of src/ at start"
    if code_dir is None:
        mode = "live working tree"
    elif args.code_rev:
        mode = f"git revision {args.code_rev}"
    code = {
        "mode": mode,
        "sha256": _tree_hash(REPO / "src" / "yippiemove")
        if code_dir is None
        else _tree_hash(code_dir / "yippiemove"),
        "git_head": info["git_commit"],
        "code_rev": _run_text(["git", "-C", str(REPO), "rev-parse", args.code_rev])
        if args.code_rev
        else None,
        "baseline_rev": _run_text(["git", "-C", str(REPO), "rev-parse", args.baseline_rev])
        if args.baseline_rev
        else None,
        "uncommitted_at_start": info["src_uncommitted_changes"],
    }
    if info["workdir_fs"] != "tmpfs":
        log(f"warning: {workdir} is on {info['workdir_fs']}, not tmpfs")
    log(
        f"code: {code['mode']} {code['sha256']} (git {str(code['git_head'])[:10]}"
        + (", with uncommitted changes)" if code["uncommitted_at_start"] else ")")
    )
    log(
        f"machine: {info['nproc']} CPUs ({info['cpu_model']}), Python {info['python']}, "
        f"Dovecot {info['dovecot']}, {info['mbsync']}; work dir {workdir} ({info['workdir_fs']})"
    )
    results: dict[str, Any] = {
        "started": started.isoformat(timespec="seconds"),
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "machine": info,
        "code": code,
        "config": {
            "runs": args.runs,
            "quick": args.quick,
            "movers": args.movers,
            "rtt_ms": args.rtt_ms,
            "security": args.security,
            "security_detail": SECURITY_TEXT[args.security],
            "with_plain": args.with_plain,
            "no_literal_plus": args.no_literal_plus,
            "quiet_wait_s": args.quiet_wait,
            "retry_noisy": args.retry_noisy,
            "yippiemove_args": args.yippiemove_arg,
            # of the run's mode (port 0: the server's port of that mode, chosen at start)
            "mbsyncrc": mbsyncrc(0, "CA", "DEST", Path("STATE"), security=args.security).replace(
                PASSWORD, "***"
            ),
            "dsync_conf": dsync_conf(Path("SERVER.conf"), 0, "CA", security=args.security).replace(
                PASSWORD, "***"
            ),
            **(
                {
                    "mbsyncrc_plain": mbsyncrc(
                        0, "CA", "DEST", Path("STATE"), security="none"
                    ).replace(PASSWORD, "***"),
                    "dsync_conf_plain": dsync_conf(
                        Path("SERVER.conf"), 0, "CA", security="none"
                    ).replace(PASSWORD, "***"),
                }
                if args.with_plain
                else {}
            ),
            "units": "MB = 10^6 bytes; bytes are the source's RFC822.SIZE sum (CRLF form)",
        },
        "presets": {},
    }
    out_path = Path(args.output) if args.output else None
    if out_path is None:
        stamp = started.strftime("%Y%m%dT%H%M%SZ")
        suffix = (
            ("-nolp" if args.no_literal_plus else "")
            + ("-quick" if args.quick else "")
            + {"tls": "-tls", "starttls": "-starttls", "none": "-plain"}[args.security]
        )
        out_path = HERE / "results" / f"{stamp}{suffix}.json"
    out_path.parent.mkdir(parents=True, exist_ok=True)

    def save() -> None:
        results["finished"] = datetime.now(UTC).isoformat(timespec="seconds")
        tmp = out_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(results, indent=1, ensure_ascii=False) + "\n")
        tmp.replace(out_path)

    rtt_variant = f"{YM}@{args.rtt_ms:g}ms"
    tables: list[tuple[str, dict[str, Any], dict[str, Any], dict[str, float], list[Any]]] = []
    try:
        for shape, preset in _presets(args):
            bench = PresetBench(
                preset,
                args,
                workdir,
                mbsync,
                latency=shape in args.latency_presets,
                code_dir=code_dir,
                base_dir=base_dir,
            )
            bench.imapsync = imapsync
            try:
                corpus_info = bench.start()
                runs: list[RunResult] = []
                discarded: list[RunResult] = []
                variants = bench.variants()
                for r in range(args.runs):
                    k = r % len(variants)
                    for variant in variants[k:] + variants[:k]:
                        for attempt in range(args.retry_noisy + 1):
                            res = bench.run_once(variant, r + 1, attempt)
                            noisy = res.other_cpu_s > max(0.3, NOISE_SHARE * res.wall_s)
                            log(
                                f"[{preset.name}] run {r + 1}/{args.runs} {variant:<20} "
                                f"{res.wall_s:7.2f} s {res.mb_s:7.1f} MB/s "
                                f"{res.msgs_s:7.0f} msgs/s cpu {res.mover_cpu_s:6.2f} s "
                                f"server {res.server_cpu_s:6.2f} s "
                                f"rss {res.mover_peak_rss_mb:6.1f} MB "
                                + (
                                    "exact"
                                    if res.exact
                                    else "NOT exact: " + "; ".join(res.reasons[:3])
                                )
                                + (f" [others used {res.other_cpu_s:.1f} CPU s]" if noisy else "")
                            )
                            if not noisy or attempt == args.retry_noisy:
                                runs.append(res)
                                break
                            discarded.append(res)
                            log("    disturbed by other processes: discarded, running it again")
                profile = bench.profile_once() if args.profile and YM in args.movers else None
            finally:
                bench.stop()
                if not args.keep:
                    shutil.rmtree(bench.dir, ignore_errors=True)
            summary = summarise(runs)
            rat = ratios(summary, rtt_variant)
            tgt = targets(
                shape,
                summary,
                rat,
                corpus_info["imap_bytes"],
                corpus_info["imap_messages"],
                corpus_info["imap_largest_bytes"],
                rtt_variant,
                security=args.security,
            )
            results["presets"][preset.name] = {
                "corpus": corpus_info,
                "summary": summary,
                "ratios": rat,
                "targets": tgt,
                "runs": [asdict(r) for r in runs],
                "discarded_runs": [asdict(r) for r in discarded],
                **({"profile": profile} if profile else {}),
            }
            save()
            tables.append((preset.name, corpus_info, summary, rat, tgt))
            print_table(preset.name, corpus_info, summary, rat, tgt, args.runs, args.security)
            if profile and "top_tottime" in profile:
                log(
                    f"cProfile (CPU clock) of one yippiemove run: {profile['cpu_s']} CPU s "
                    "including the profiler's overhead; top functions by own time, with their "
                    "share of the profile:"
                )
                for row in profile["top_tottime"][:15]:
                    log(
                        f"  {row['tottime_s']:8.3f} s {row['share']:6.1%} {row['calls']:>9} calls"
                        f"  {row['function']}"
                    )
    finally:
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)
        else:
            log(f"work directory kept: {workdir}")
    if len(tables) > 1:
        log("\n(all presets again)")
        for name, ci, summary, rat, tgt in tables:
            print_table(name, ci, summary, rat, tgt, args.runs, args.security)
    live = _tree_hash(REPO / "src" / "yippiemove")
    if not args.code_rev and live != code["sha256"]:
        code["working_tree_at_end"] = live
        log(
            "note: src/yippiemove changed during the session"
            + (" (the runs used the snapshot taken at the start)" if code_dir else "!")
        )
    save()
    log(f"\nresults: {out_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
