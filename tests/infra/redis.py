"""A throwaway real Redis server (Debian's ``redis-server``) for tests.

    with RedisServer().start() as r:             # free port on 127.0.0.1
        r.url                                    # redis://127.0.0.1:PORT/0
        r.restart(keep_data=False); r.kill(); r.stop()

A throwaway configuration in a temporary directory: no persistence (unless a restart
asks to keep the data: ``SAVE`` before the stop, loaded at the next start), protected
mode off (it listens on ``host`` only, for tests), a unix socket in the temporary
directory through which the test process reaches it even inside ``netns``.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path
from types import TracebackType

from tests.infra._proc import alive, free_port, kill_tree, url_host, wait_for, wrap

__all__ = ["INSTALL_HINT", "RedisServer", "redis_missing"]

INSTALL_HINT = "apt-get install redis-server (Debian's package)"


def redis_missing() -> str | None:
    if shutil.which("redis-server") is None:
        return f"redis-server not found: {INSTALL_HINT}"
    return None


class RedisServer:
    def __init__(self) -> None:
        self.host = "127.0.0.1"
        self.port = 0
        self.netns: str | None = None
        self.dir: Path | None = None
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://{url_host(self.host)}:{self.port}/0"

    @property
    def socket_path(self) -> Path:
        assert self.dir is not None
        return self.dir / "redis.sock"

    @property
    def log_path(self) -> Path:
        assert self.dir is not None
        return self.dir / "redis.log"

    def client(self):  # type: ignore[no-untyped-def]
        """A redis-py client over the unix socket (works from outside ``netns``)."""
        import redis

        return redis.Redis(unix_socket_path=str(self.socket_path), socket_timeout=5)

    def start(
        self, host: str = "127.0.0.1", port: int | None = None, netns: str | None = None
    ) -> RedisServer:
        missing = redis_missing()
        if missing:
            raise RuntimeError(missing)
        self.host, self.netns = host, netns
        self.port = port or free_port(host)
        self.dir = Path(tempfile.mkdtemp(prefix="yippiemove-redis-"))
        os.chmod(self.dir, 0o700)
        conf = {
            "bind": host,
            "port": str(self.port),
            "protected-mode": "no",
            "daemonize": "no",
            "dir": str(self.dir),
            "dbfilename": "dump.rdb",
            "save": '""',
            "appendonly": "no",
            "unixsocket": str(self.socket_path),
            "unixsocketperm": "700",
            "logfile": str(self.log_path),
            "loglevel": "warning",
        }
        (self.dir / "redis.conf").write_text("".join(f"{k} {v}\n" for k, v in conf.items()))
        self._launch()
        return self

    def _launch(self) -> None:
        assert self.dir is not None
        self.proc = subprocess.Popen(
            wrap(["redis-server", str(self.dir / "redis.conf")], netns=self.netns),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

        def ready() -> bool:
            assert self.proc is not None
            if self.proc.poll() is not None:
                log = self.log_path.read_text() if self.log_path.exists() else ""
                raise RuntimeError(f"redis-server exited ({self.proc.returncode}):\n{log}")
            try:
                return bool(self.client().ping())
            except Exception:
                return False

        wait_for(ready, 30, "redis-server")

    def _shutdown(self, save: bool) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        if save:
            self.client().save()  # the dump the next start loads
        self.proc.terminate()  # no save points configured: SIGTERM saves nothing
        try:
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            kill_tree(self.proc.pid)
            self.proc.wait()

    def stop(self) -> None:
        if self.dir is None:
            return
        self._shutdown(save=False)
        shutil.rmtree(self.dir, ignore_errors=True)
        self.dir = None

    def restart(self, keep_data: bool = False) -> None:
        """Stop and start on the same address: with ``keep_data`` the keys survive (an
        RDB dump is written at shutdown and loaded at start), else they are gone."""
        assert self.dir is not None
        self._shutdown(save=keep_data)
        if not keep_data:
            (self.dir / "dump.rdb").unlink(missing_ok=True)
        self._launch()

    def kill(self) -> None:
        """SIGKILL (a crash: everything in memory is lost)."""
        if self.proc is not None and alive(self.proc.pid):
            kill_tree(self.proc.pid)
        if self.proc is not None:
            self.proc.wait()

    def __enter__(self) -> RedisServer:
        if self.dir is None:
            self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
