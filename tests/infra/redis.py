"""A throwaway real Redis (Debian's redis-server) for tests: no persistence.

Stand-in (branch fleet-net) for helper 1's tests/infra/redis.py, with the part of its
API the fleet tests use: ``RedisServer().start(host=ADDR, netns=NS)``, ``.url``,
``restart()`` (again on the same address and port, its data lost), ``stop()`` (and
remove its files).  Replace it by helper 1's when merging.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Self

from ._proc import connects, free_port, kill_group, spawn, wait_until

__all__ = ["RedisServer"]


class RedisServer:
    def __init__(self) -> None:
        self.base_dir = Path(tempfile.mkdtemp(prefix="yippiemove-redis-"))
        self.host = "127.0.0.1"
        self.port = 0
        self.netns: str | None = None
        self._proc = None

    @property
    def url(self) -> str:
        return f"redis://{self.host}:{self.port}/0"

    @property
    def log_path(self) -> Path:
        return self.base_dir / "redis.log"

    def start(
        self, host: str = "127.0.0.1", port: int | None = None, netns: str | None = None
    ) -> Self:
        binary = shutil.which("redis-server")
        if binary is None:
            raise RuntimeError("redis-server is missing: apt-get install redis-server")
        self.host, self.netns = host, netns
        self.port = port or self.port or (6379 if netns else free_port(host))
        self.base_dir.mkdir(parents=True, exist_ok=True)
        argv = [
            binary,
            "--bind",
            host,
            "--port",
            str(self.port),
            "--save",
            "",
            "--appendonly",
            "no",
            "--protected-mode",
            "no",
            "--dir",
            str(self.base_dir),
        ]
        self._proc = spawn(argv, self.log_path, netns=netns)
        wait_until(
            lambda: connects(self.host, self.port), self._proc, "redis-server", self.log_path
        )
        return self

    def restart(self) -> None:
        """Kill it (its data is lost: no persistence) and start it again."""
        kill_group(self._proc)
        self._proc = None
        self.start(self.host, self.port, self.netns)

    def stop(self) -> None:
        """Stop the server and remove its files."""
        kill_group(self._proc)
        self._proc = None
        shutil.rmtree(self.base_dir, ignore_errors=True)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
