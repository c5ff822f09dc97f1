"""A fleet of test hosts on this machine: Linux network namespaces behind one bridge.

Issue 15's tests (tests/jobs/test_fleet.py) and benchmark (bench/fleet.py) need worker
hosts with addresses of their own, whose links can be cut, slowed and whose every
process can be killed at once.  :class:`Fleet` builds that with Debian's iproute2, as
root::

    with Fleet() as fleet:                     # bridge ymf<pid>b<n>, 10.X.Y.1/24
        db = fleet.add_host("db")              # netns, veth pair, 10.X.Y.10
        proc = db.run(["redis-server", ...])   # under `ip netns exec`
        db.cut(); db.heal()                    # a partition: its bridge port off, on
        db.kill_all()                          # SIGKILL to every process in the netns

Every host is a network namespace (``ip netns add``) with a veth pair: one end in the
bridge of the root namespace, the other in the namespace with 10.X.Y.(10+i)/24, ``lo``
up and a default route via the bridge's address.  The test process itself (root
namespace) reaches every host through the bridge, and every host reaches the bridge's
address, where the tests' IMAP server (Dovecot) listens.  Hosts share the machine's
process id space and file system: only the network is private.

Names: interfaces have at most 15 characters, so every name is ``ymf`` + the pid of
the process that made it + a kind letter + a counter.  :meth:`Fleet.close` removes
everything it made, also after failures; a fleet of a process that was killed (a
SIGKILLed pytest) is removed by the next :class:`Fleet` (:func:`sweep_leftovers`): the
pid in the name is dead.

Link speed: this kernel may lack ``sch_netem`` (no added delay); :meth:`Host.throttle`
uses the token bucket filter (``tbf``), which caps the rate each way, and the tests
find it there or fall back to no throttling (:func:`tbf_available`).

This module is imported by tests and by bench/: no pytest at module level.
"""

from __future__ import annotations

import contextlib
import ipaddress
import itertools
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import IO, Any, Self

__all__ = [
    "PREFIX",
    "Fleet",
    "FleetError",
    "Host",
    "Worker",
    "fleet_unavailable",
    "sweep_leftovers",
    "tbf_available",
]

#: Every interface and namespace a fleet makes starts with this.
PREFIX = "ymf"
_NAME = re.compile(rf"^{PREFIX}(\d+)[a-z]")
_counter = itertools.count()
#: The service's default job_uid_base (service/config.py).
JOB_UID_BASE = 1_900_000_000
_counter_lock = threading.Lock()


class FleetError(RuntimeError):
    """The fleet cannot be built (not root, no iproute2) or a step of it failed."""


def fleet_unavailable() -> str | None:
    """Why no fleet can be built here (None: it can): root and iproute2 are needed."""
    if os.geteuid() != 0:
        return "a fleet of network namespaces needs root (ip netns add)"
    if shutil.which("ip") is None:
        return "iproute2's `ip` is missing: apt-get install iproute2"
    return None


def _ip(*args: str, check: bool = True, netns: str | None = None) -> str:
    argv = ["ip", *(("-n", netns) if netns else ()), *args]
    done = subprocess.run(argv, capture_output=True, text=True, check=False, timeout=30)
    if check and done.returncode != 0:
        raise FleetError(f"{' '.join(argv)} failed: {done.stderr.strip() or done.stdout.strip()}")
    return done.stdout


def _bridge(*args: str) -> None:
    """``bridge ARGS`` (iproute2) in the root namespace."""
    done = subprocess.run(
        ["bridge", *args], capture_output=True, text=True, check=False, timeout=30
    )
    if done.returncode != 0:
        raise FleetError(f"bridge {' '.join(args)}: {done.stderr.strip()}")


def _tc(netns: str | None, *args: str, check: bool = True) -> bool:
    argv = [*(("ip", "netns", "exec", netns) if netns else ()), "tc", *args]
    done = subprocess.run(argv, capture_output=True, text=True, check=False, timeout=30)
    if check and done.returncode != 0:
        raise FleetError(f"{' '.join(argv)} failed: {done.stderr.strip()}")
    return done.returncode == 0


def _pid_alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_bytes().rpartition(b")")[2].split()[0]
    except (OSError, IndexError):
        return False
    return state != b"Z"


def _next_id() -> int:
    with _counter_lock:
        return next(_counter)


def netns_pids(netns: str) -> list[int]:
    """Processes whose network namespace is ``netns``."""
    done = subprocess.run(
        ["ip", "netns", "pids", netns], capture_output=True, text=True, check=False, timeout=30
    )
    return [int(p) for p in done.stdout.split() if p.isdigit()]


def _kill_netns(netns: str, timeout: float = 10.0) -> None:
    """SIGKILL every process in the namespace until none is left (children a dying
    parent started meanwhile included)."""
    deadline = time.monotonic() + timeout
    while True:
        pids = [p for p in netns_pids(netns) if p != os.getpid()]
        if not pids:
            return
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        if time.monotonic() > deadline:
            live = [p for p in pids if _pid_alive(p)]
            if live:
                raise FleetError(f"processes {live} in {netns} survive SIGKILL")
            return
        time.sleep(0.05)


def sweep_leftovers() -> list[str]:
    """Remove namespaces and interfaces of fleets whose process is dead (a killed run);
    returns their names."""
    removed: list[str] = []
    for line in _ip("netns", "list", check=False).splitlines():
        name = line.split()[0] if line.split() else ""
        m = _NAME.match(name)
        if m and not _pid_alive(int(m.group(1))):
            with contextlib.suppress(FleetError):
                _kill_netns(name)
            _ip("netns", "del", name, check=False)
            removed.append(name)
    for line in _ip("-o", "link", "show", check=False).splitlines():
        parts = line.split(":")
        if len(parts) < 2:
            continue
        name = parts[1].strip().split("@")[0]
        m = _NAME.match(name)
        if m and not _pid_alive(int(m.group(1))):
            _ip("link", "del", name, check=False)
            removed.append(name)
    return removed


def tbf_available() -> bool:
    """Whether this kernel has the token bucket filter (sch_tbf) for :meth:`Host.throttle`;
    checked once on a throwaway fleet's link."""
    global _tbf
    if _tbf is None:
        if fleet_unavailable():
            return False
        with Fleet() as fleet:
            host = fleet.add_host("probe")
            _tbf = _tc(
                host.netns,
                "qdisc",
                "add",
                "dev",
                host.inner,
                "root",
                "tbf",
                "rate",
                "1mbit",
                "burst",
                "16kb",
                "latency",
                "100ms",
                check=False,
            )
    return _tbf


_tbf: bool | None = None


def _used_networks() -> list[ipaddress.IPv4Network]:
    nets = []
    for line in _ip("-4", "-o", "addr", "show", check=False).splitlines():
        m = re.search(r"inet (\S+)", line)
        if m:
            nets.append(ipaddress.ip_interface(m.group(1)).network)
    for line in _ip("-4", "route", "show", "table", "all", check=False).splitlines():
        word = line.split()[0] if line.split() else ""
        if word in ("default", "broadcast", "local", "unreachable", "prohibit", "blackhole"):
            word = line.split()[1] if word != "default" and len(line.split()) > 1 else ""
        with contextlib.suppress(ValueError):
            if word:
                nets.append(ipaddress.ip_network(word, strict=False))
    return nets


def _pick_subnet(rng: random.Random) -> ipaddress.IPv4Network:
    used = _used_networks()
    for _ in range(500):
        net = ipaddress.ip_network(f"10.{rng.randint(16, 250)}.{rng.randint(0, 255)}.0/24")
        if not any(net.overlaps(u) for u in used if u.prefixlen > 0):
            return net
    raise FleetError("no free 10.X.Y.0/24 network for the fleet's bridge")


@dataclass
class Host:
    """One host of a :class:`Fleet`: a network namespace with an address of its own."""

    fleet: Fleet
    name: str
    index: int
    netns: str
    address: str
    #: The veth end in the bridge (root namespace) and the one in the namespace.
    outer: str
    inner: str
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)
    #: Where :meth:`run` sent each process's output (for the tests' failure messages).
    logs: list[Path] = field(default_factory=list)

    def run(
        self,
        argv: Sequence[str],
        env: Mapping[str, str] | None = None,
        *,
        log: Path | None = None,
        user: str | None = None,
        **popen: Any,
    ) -> subprocess.Popen[bytes]:
        """Start ``argv`` in this host's namespace (its own session), output to ``log``
        (default: a file in the fleet's directory), as ``user`` when given (runuser)."""
        if log is None:
            log = self.fleet.dir / f"{self.name}-{len(self.procs)}.log"
        prefix = ["ip", "netns", "exec", self.netns]
        if self.fleet.own_hostnames:
            # A host name of its own (UTS namespace): process identities name the host.
            prefix += [
                "unshare",
                "--uts",
                "--",
                "sh",
                "-c",
                'hostname "$0" && exec "$@"',
                self.hostname,
            ]
        if user is not None:
            prefix += ["runuser", "-u", user, "--"]
        out: IO[bytes]
        with open(log, "ab") as out:
            proc = subprocess.Popen(
                [*prefix, *argv],
                env=dict(env) if env is not None else None,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                **popen,
            )
        self.procs.append(proc)
        self.logs.append(log)
        return proc

    @property
    def hostname(self) -> str:
        """The host name its processes see (``uname -n``): ``<fleet tag>-<name>``."""
        return f"{self.fleet.tag}-{self.name}"

    def pids(self) -> list[int]:
        """Every process in this host's namespace."""
        return netns_pids(self.netns)

    def kill_all(self) -> None:
        """SIGKILL every process in the namespace (a host that dies)."""
        _kill_netns(self.netns)
        for proc in self.procs:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=5)

    def cut(self) -> None:
        """Cut the host off (a partition; its processes live on): its port of the bridge
        is disabled, so every frame from or to it is dropped at the "switch", as when a
        link beyond a real host fails.  Not the veth down: a veth whose peer is down
        holds the packets already handed to it and delivers them on the heal -- bytes
        that no socket of the cut-off host can take back any more (tests/jobs/
        test_linger.py), which a real partition loses."""
        _bridge("link", "set", "dev", self.outer, "state", "0")

    def heal(self) -> None:
        """Reconnect the host after :meth:`cut` (its bridge port forwarding again)."""
        _bridge("link", "set", "dev", self.outer, "state", "3")

    def throttle(self, rate: str = "2mbit", burst: str = "32kb", latency: str = "400ms") -> None:
        """Cap the link's rate both ways with tbf (``tc``; see the module docstring)."""
        for netns, dev in ((self.netns, self.inner), (None, self.outer)):
            _tc(
                netns,
                "qdisc",
                "replace",
                "dev",
                dev,
                "root",
                "tbf",
                "rate",
                rate,
                "burst",
                burst,
                "latency",
                latency,
            )

    def unthrottle(self) -> None:
        for netns, dev in ((self.netns, self.inner), (None, self.outer)):
            _tc(netns, "qdisc", "del", "dev", dev, "root", check=False)

    def log_tail(self, chars: int = 4000) -> str:
        out = []
        for log in dict.fromkeys(self.logs):
            with contextlib.suppress(OSError):
                out.append(f"--- {log.name}\n{log.read_text(errors='replace')[-chars:]}")
        return "\n".join(out)


def _env(settings: Mapping[str, Any]) -> dict[str, str]:
    out = {}
    for name, value in settings.items():
        if value is None:
            continue
        if isinstance(value, bool):
            value = "1" if value else "0"
        out["YIPPIEMOVE_" + name.upper()] = str(value)
    return out


@dataclass
class Worker:
    """A ``yippiemove worker`` process on a host (:meth:`Fleet.start_worker`)."""

    host: Host
    proc: subprocess.Popen[bytes]
    data_dir: Path
    log: Path

    @property
    def pid(self) -> int:
        """The worker's own process (``ip netns exec`` and ``unshare`` exec into it)."""
        return self.proc.pid

    def job_dirs(self) -> set[str]:
        """Ids of the jobs this host ran (they have a directory in its data dir)."""
        jobs = self.data_dir / "jobs"
        return {p.name for p in jobs.iterdir() if p.is_dir()} if jobs.is_dir() else set()

    def wait_ready(self, timeout: float = 90.0) -> None:
        """Until its queue consumers run (its log says so); a start can take half a
        minute on a loaded machine."""
        deadline = time.monotonic() + timeout
        while True:
            with contextlib.suppress(OSError):
                if "worker thread" in self.log.read_text(errors="replace"):
                    return
            if self.proc.poll() is not None:
                raise FleetError(f"the worker on {self.host.name} exited\n{self.tail()}")
            if time.monotonic() > deadline:
                raise FleetError(f"the worker on {self.host.name} did not start\n{self.tail()}")
            time.sleep(0.05)

    def stop(self, timeout: float = 30.0) -> None:
        """SIGTERM (running jobs go back to the queue), SIGKILL after ``timeout``."""
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.host.kill_all()

    def tail(self, chars: int = 6000) -> str:
        try:
            lines = self.log.read_text(errors="replace").splitlines()
        except OSError:
            lines = ["(no log)"]
        # Tracebacks shortened to their last line (a cut-off host logs many).
        kept = [
            line
            for line in lines
            if line.strip() and not line.startswith((" ", "Traceback", "The above", "\t"))
        ]
        text = "\n".join(kept)[-chars:]
        return f"--- worker on {self.host.name} (pid {self.proc.pid}) {self.log}\n{text}"


class Fleet:
    """A bridge in the root namespace and hosts (namespaces) on it; see the module
    docstring.  A context manager; :meth:`close` removes everything."""

    def __init__(
        self,
        directory: Path | None = None,
        *,
        seed: int | None = None,
        own_hostnames: bool = True,
    ) -> None:
        why = fleet_unavailable()
        if why:
            raise FleetError(why)
        sweep_leftovers()
        self._own_dir = directory is None
        self.dir = Path(directory or tempfile.mkdtemp(prefix="yippiemove-fleet-"))
        self.dir.mkdir(parents=True, exist_ok=True)
        os.chmod(self.dir, 0o711)  # job processes with user ids of their own pass through
        self.tag = f"{PREFIX}{os.getpid()}"
        n = _next_id()
        self.bridge = f"{self.tag}b{n}"
        self.hosts: dict[str, Host] = {}
        self._next_if = n * 100
        self._closed = False
        self._extra_close: list[Any] = []
        #: Processes run on a host see the host's own name (:attr:`Host.hostname`), as on
        #: separate machines: a host cannot take another's processes for its own.
        self.own_hostnames = own_hostnames
        #: YIPPIEMOVE_* settings every worker gets (:meth:`configure`).
        self.service_env: dict[str, str] = {}
        self.workers: list[Worker] = []
        rng = random.Random(seed)
        try:
            self.network = _pick_subnet(rng)
            self.address = str(self.network[1])
            _ip("link", "add", self.bridge, "type", "bridge")
            _ip("addr", "add", f"{self.address}/24", "dev", self.bridge)
            _ip("link", "set", self.bridge, "up")
        except BaseException:
            self.close()
            raise

    # ------------------------------------------------------------------ hosts

    def add_host(self, name: str) -> Host:
        """A new host: namespace, veth pair in the bridge, address 10.X.Y.(10+i)."""
        if name in self.hosts:
            raise FleetError(f"the fleet has a host named {name!r} already")
        index = len(self.hosts)
        if index > 200:
            raise FleetError("at most 200 hosts per fleet")
        k = self._next_if
        self._next_if += 1
        netns = f"{self.tag}n{k}-{name}"
        outer, inner = f"{self.tag}v{k}", f"{self.tag}p{k}"
        if len(outer) > 15 or len(inner) > 15:
            raise FleetError(f"interface name {outer!r} is longer than 15 characters")
        address = str(self.network[10 + index])
        host = Host(self, name, index, netns, address, outer, inner)
        self.hosts[name] = host
        _ip("netns", "add", netns)
        _ip("link", "add", outer, "type", "veth", "peer", "name", inner)
        _ip("link", "set", inner, "netns", netns)
        _ip("link", "set", outer, "master", self.bridge)
        _ip("link", "set", outer, "up")
        _ip("addr", "add", f"{address}/24", "dev", inner, netns=netns)
        _ip("link", "set", inner, "up", netns=netns)
        _ip("link", "set", "lo", "up", netns=netns)
        _ip("route", "add", "default", "via", self.address, netns=netns)
        return host

    def host(self, name: str) -> Host:
        return self.hosts[name]

    # ------------------------------------------------------------------ the service

    def configure(self, **settings: Any) -> None:
        """Settings every worker of the fleet gets (the service's field names:
        ``database_url``, ``queue_url``, ``credentials_key_file``...); as
        ``YIPPIEMOVE_<FIELD>`` environment variables (service/config.py)."""
        self.service_env.update(_env(settings))

    def start_worker(self, host: Host, workers: int = 2, **settings: Any) -> Worker:
        """``yippiemove worker --workers N`` on ``host`` with the fleet's settings, a data
        directory of its own (``<fleet dir>/data-<host>``), its host name and address,
        and ``settings`` on top; output in ``<fleet dir>/worker-<host>-<n>.log``."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("YIPPIEMOVE_")}
        data = self.dir / f"data-{host.name}"
        env.update(self.service_env)
        env.update(
            _env(
                {
                    "data_dir": data,
                    "host_name": host.name,
                    "host_address": host.address,
                    # As root, job processes get user ids job_uid_base + slot, allocated
                    # per host: hosts sharing this machine get ranges of their own.
                    "job_uid_base": JOB_UID_BASE + (host.index + 1) * 65536,
                    **settings,
                }
            )
        )
        log = self.dir / f"worker-{host.name}-{_next_id()}.log"
        argv = [sys.executable, "-m", "yippiemove.cli", "worker", "--workers", str(workers)]
        proc = host.run(argv, env, log=log)
        worker = Worker(host, proc, data, log)
        self.workers.append(worker)
        return worker

    def worker_logs(self, chars: int = 6000) -> str:
        """The end of every worker's log (for a failing test's message)."""
        return "\n".join(w.tail(chars) for w in self.workers)

    def on_close(self, fn: Any) -> None:
        """Call ``fn()`` at :meth:`close`, before the hosts go (services' stops)."""
        self._extra_close.append(fn)

    # ------------------------------------------------------------------ teardown

    def close(self) -> None:
        """Stop every process of every host, remove namespaces, veths and the bridge.
        Safe to call twice and after a failure half-way."""
        if self._closed:
            return
        self._closed = True
        errors: list[str] = []
        for fn in reversed(self._extra_close):
            try:
                fn()
            except Exception as exc:  # go on removing the rest
                errors.append(f"{fn}: {exc}")
        for host in self.hosts.values():
            with contextlib.suppress(FleetError):
                host.heal()
            try:
                host.kill_all()
            except FleetError as exc:
                errors.append(str(exc))
            _ip("netns", "del", host.netns, check=False)
            _ip("link", "del", host.outer, check=False)
        _ip("link", "del", self.bridge, check=False)
        if self._own_dir:
            shutil.rmtree(self.dir, ignore_errors=True)
        if errors:
            raise FleetError("; ".join(errors))

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
