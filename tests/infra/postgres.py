"""A throwaway real PostgreSQL (Debian's postgresql, initdb + postgres) for tests.

Stand-in (branch fleet-net) for helper 1's tests/infra/postgres.py, with the part of
its API the fleet tests use: ``PostgresServer().start(host=ADDR, netns=NS)``, ``.url``,
``create_database(name) -> url``, ``restart()`` (fast: every session ends, data kept),
``stop()`` (and remove its files).  Replace it by helper 1's when merging.
PostgreSQL refuses to run as root: as root the cluster belongs to the ``postgres``
user (Debian's package makes it) and runs as that user.  Trust authentication from
anywhere: the server listens on a test address only.
"""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import subprocess
import tempfile
from pathlib import Path
from typing import Self

from ._proc import connects, free_port, kill_group, spawn, wait_until

__all__ = ["PostgresServer", "pg_bin"]

DATABASE = "yippiemove"


def pg_bin(name: str) -> str:
    for version in ("17", "16", "15", "14", "13"):
        path = Path(f"/usr/lib/postgresql/{version}/bin/{name}")
        if path.exists():
            return str(path)
    found = shutil.which(name)
    if found is None:
        raise RuntimeError(f"PostgreSQL's {name} is missing: apt-get install postgresql")
    return found


class PostgresServer:
    def __init__(self) -> None:
        self.base_dir = Path(tempfile.mkdtemp(prefix="yippiemove-pg-"))
        self.host = "127.0.0.1"
        self.port = 0
        self.netns: str | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self.user = "postgres" if os.geteuid() == 0 else None

    @property
    def data(self) -> Path:
        return self.base_dir / "data"

    @property
    def log_path(self) -> Path:
        return self.base_dir / "postgres.log"

    @property
    def url(self) -> str:
        return f"postgresql+psycopg://postgres@{self.host}:{self.port}/{DATABASE}"

    def _run(self, argv: list[str]) -> None:
        prefix = ["runuser", "-u", self.user, "--"] if self.user else []
        done = subprocess.run([*prefix, *argv], capture_output=True, text=True, check=False)
        if done.returncode != 0:
            raise RuntimeError(f"{argv[0]} failed: {done.stderr.strip()}")

    def start(
        self, host: str = "127.0.0.1", port: int | None = None, netns: str | None = None
    ) -> Self:
        self.host, self.netns = host, netns
        self.port = port or self.port or (5432 if netns else free_port(host))
        self.base_dir.mkdir(parents=True, exist_ok=True)
        if self.user:
            pw = pwd.getpwnam(self.user)
            os.chown(self.base_dir, pw.pw_uid, pw.pw_gid)
            os.chmod(self.base_dir, 0o700)
            for parent in self.base_dir.parents:  # the postgres user must get there
                if not parent.stat().st_mode & 0o001:
                    os.chmod(parent, parent.stat().st_mode | 0o011)
        fresh = not (self.data / "PG_VERSION").exists()
        if fresh:
            self._run(
                [
                    pg_bin("initdb"),
                    "-D",
                    str(self.data),
                    "-U",
                    "postgres",
                    "-A",
                    "trust",
                    "-E",
                    "UTF8",
                    "--no-sync",
                ]
            )
            with open(self.data / "pg_hba.conf", "a") as f:
                f.write("host all all 0.0.0.0/0 trust\n")
        argv = [
            pg_bin("postgres"),
            "-D",
            str(self.data),
            "-h",
            host,
            "-p",
            str(self.port),
            "-k",
            str(self.base_dir),
            "-c",
            "fsync=off",
            "-c",
            "full_page_writes=off",
            "-c",
            "synchronous_commit=off",
            "-c",
            "max_connections=200",
        ]
        if self.user:  # the log file: the server's user writes it
            self.log_path.touch()
            pw = pwd.getpwnam(self.user)
            os.chown(self.log_path, pw.pw_uid, pw.pw_gid)
        self._proc = spawn(argv, self.log_path, netns=netns, user=self.user)
        wait_until(self._ready, self._proc, "postgres", self.log_path)
        if fresh:
            self._run(
                [
                    pg_bin("createdb"),
                    "-h",
                    str(self.base_dir),
                    "-p",
                    str(self.port),
                    "-U",
                    "postgres",
                    DATABASE,
                ]
            )
        return self

    def _ready(self) -> bool:
        if not connects(self.host, self.port):
            return False
        done = subprocess.run(
            [pg_bin("pg_isready"), "-h", str(self.base_dir), "-p", str(self.port), "-q"],
            check=False,
        )
        return done.returncode == 0

    def _halt(self) -> None:
        """SIGINT: PostgreSQL's fast shutdown (every session ends, data kept)."""
        kill_group(self._proc, signal.SIGINT)
        self._proc = None

    def restart(self) -> None:
        """A fast shutdown and a start on the same address and port."""
        self._halt()
        self.start(self.host, self.port, self.netns)

    def create_database(self, name: str) -> str:
        """A new database; returns its URL."""
        import psycopg

        admin = self.url.replace("postgresql+psycopg://", "postgresql://")
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')  # type: ignore[arg-type]
        return self.url.rsplit("/", 1)[0] + "/" + name

    def stop(self) -> None:
        """Stop the server and remove its files."""
        self._halt()
        shutil.rmtree(self.base_dir, ignore_errors=True)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
