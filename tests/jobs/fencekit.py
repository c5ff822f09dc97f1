"""Helpers of the fencing and checkpoint tests (tests/jobs/test_fleet_fence.py): two
``yippiemove worker`` processes on this machine that look like two hosts, a Redis for
their shared queue, and a proxy that records what each client connection writes.

* :class:`RedisServer`: Debian's ``redis-server`` on a free loopback port, no
  persistence (a small stand-in until tests/infra/redis.py, helper 1's, is on main).
* :class:`Worker`: ``yippiemove worker`` in a UTS namespace of its own
  (``unshare --uts``) whose host name is the worker's name, so that each worker's
  process identities (jobs/supervisor.py ``process_identity``: host|pid|start) name its
  own "host": the other worker does not kill its processes as local leftovers, it waits
  for the lease to expire, as a worker on another machine would.  Settings go through
  ``YIPPIEMOVE_*`` variables; the control database and the key files are shared.
* :class:`RecordingProxy`: a TCP proxy in a thread; per client connection: when it was
  accepted, every command's verb with the time its first line reached the proxy (a
  literal-aware scanner: message bytes are never taken for commands), the bytes the
  server sent; optionally the server->client direction throttled (a slow provider).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

from tests.faultproxy import _Scanner, _tag_and_verb
from tests.svckit import free_port

ROOT = Path(__file__).resolve().parents[2]


class RedisServer:
    """redis-server on 127.0.0.1:port, data in ``workdir``, no persistence."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> RedisServer:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.proc = subprocess.Popen(
            [
                "redis-server",
                "--port", str(self.port),
                "--bind", "127.0.0.1",
                "--save", "",
                "--appendonly", "no",
                "--dir", str(self.workdir),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )  # fmt: skip
        import redis

        deadline = time.monotonic() + 10
        while True:
            try:
                redis.Redis(host="127.0.0.1", port=self.port).ping()
                return self
            except redis.ConnectionError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


@dataclass
class Worker:
    """One ``yippiemove worker`` "host" (see the module doc)."""

    name: str
    data_dir: Path
    env: dict[str, str]
    log: Path
    proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Worker:
        env = dict(os.environ, **self.env, YIPPIEMOVE_HOST_NAME=self.name)
        cmd = [
            sys.executable, "-m", "yippiemove.cli", "worker",
            "--data-dir", str(self.data_dir), "--workers", "1",
        ]  # fmt: skip
        wrapped = [
            "unshare", "--uts", "sh", "-c", f'hostname {self.name} && exec "$@"', "sh", *cmd,
        ]  # fmt: skip
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen(
                wrapped,
                cwd=ROOT,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        return self

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def kill_all(self) -> None:
        """SIGKILL to the worker and its process group (the zygote); job processes have
        sessions of their own and die with it (PR_SET_PDEATHSIG)."""
        if self.proc is not None and self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGCONT)
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()

    def tail(self, n: int = 4000) -> str:
        try:
            return self.log.read_text(errors="replace")[-n:]
        except OSError:
            return ""


#: Commands that change a mailbox (RFC 3501, 4315, 6851).
WRITE_VERBS = frozenset(
    (
        "APPEND", "STORE", "UID STORE", "CREATE", "DELETE", "RENAME", "SUBSCRIBE",
        "UNSUBSCRIBE", "COPY", "UID COPY", "MOVE", "UID MOVE", "EXPUNGE", "UID EXPUNGE",
    )
)  # fmt: skip


@dataclass
class Conn:
    """What one client connection did through the proxy."""

    index: int
    accepted: float
    #: (monotonic time the command's first line arrived, verb)
    commands: list[tuple[float, str]] = field(default_factory=list)
    s2c_bytes: int = 0
    closed: float | None = None

    def writes(self) -> list[tuple[float, str]]:
        """The commands that change a mailbox, with their times."""
        return [(t, v) for t, v in self.commands if v in WRITE_VERBS]


class RecordingProxy:
    """A proxy to 127.0.0.1:``target`` recording each connection (module doc)."""

    def __init__(self, target: int, *, s2c_rate: int = 0) -> None:
        self.target = target
        self.s2c_rate = s2c_rate
        self.conns: list[Conn] = []
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._server: asyncio.base_events.Server | None = None
        self.port = 0

    def snapshot(self) -> list[Conn]:
        with self._lock:
            return [
                Conn(c.index, c.accepted, list(c.commands), c.s2c_bytes, c.closed)
                for c in self.conns
            ]

    def __enter__(self) -> RecordingProxy:
        ready = threading.Event()

        def main() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            self._server = loop.run_until_complete(
                asyncio.start_server(self._accept, "127.0.0.1", 0)
            )
            self.port = self._server.sockets[0].getsockname()[1]
            ready.set()
            loop.run_forever()
            loop.close()

        self._thread = threading.Thread(target=main, name="recording-proxy", daemon=True)
        self._thread.start()
        ready.wait(10)
        return self

    def __exit__(
        self,
        et: type[BaseException] | None,
        ev: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        loop = self._loop
        if loop is None:
            return

        async def shutdown() -> None:
            assert self._server is not None
            self._server.close()
            for task in asyncio.all_tasks():
                if task is not asyncio.current_task():
                    task.cancel()

        asyncio.run_coroutine_threadsafe(shutdown(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        assert self._thread is not None
        self._thread.join(10)

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with self._lock:
            conn = Conn(len(self.conns), time.monotonic())
            self.conns.append(conn)
        try:
            up_r, up_w = await asyncio.open_connection("127.0.0.1", self.target)
        except OSError:
            writer.transport.abort()
            return
        scanner = _Scanner()

        async def c2s() -> None:
            while data := await reader.read(1 << 16):
                now = time.monotonic()
                for seg in scanner.feed(data):
                    if seg.kind == "line" and seg.first:
                        verb = _tag_and_verb(seg.data)[1]
                        with self._lock:
                            conn.commands.append((now, verb))
                up_w.write(data)
                await up_w.drain()
            up_w.close()

        async def s2c() -> None:
            while data := await up_r.read(16384):
                writer.write(data)
                await writer.drain()
                with self._lock:
                    conn.s2c_bytes += len(data)
                if self.s2c_rate:
                    await asyncio.sleep(len(data) / self.s2c_rate)
            writer.close()

        try:
            await asyncio.gather(c2s(), s2c())
        except (OSError, asyncio.IncompleteReadError):
            pass
        finally:
            for w in (writer, up_w):
                w.transport.abort()
            with self._lock:
                conn.closed = time.monotonic()
