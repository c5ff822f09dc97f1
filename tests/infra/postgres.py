"""A throwaway real PostgreSQL server (Debian's ``postgresql`` package) for tests.

    with PostgresServer().start() as pg:        # free port on 127.0.0.1
        pg.url                                   # postgresql://yippiemove@127.0.0.1:PORT/yippiemove
        url = pg.create_database()               # a fresh database of its own
        pg.restart(); pg.kill(); pg.stop()

``initdb`` in a temporary directory owned by the ``postgres`` user (PostgreSQL refuses
to run as root: as root every command runs through ``runuser -u postgres``), trust
authentication (a test server), fsync off, small buffers, its unix socket in the
temporary directory.  With ``netns`` every process runs under ``ip netns exec NETNS``,
listening on ``host`` there; the test process still reaches it through the unix socket
(:attr:`admin_url`), which no network namespace hides.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import signal
import tempfile
import uuid
from pathlib import Path
from types import TracebackType

from tests.infra._proc import alive, free_port, kill_tree, run, url_host, wrap

__all__ = ["INSTALL_HINT", "PostgresServer", "postgres_bin", "postgres_missing"]

INSTALL_HINT = "apt-get install postgresql (Debian's package: initdb, pg_ctl, postgres)"
#: The user the server runs as when the tests run as root.
PG_USER = "postgres"
#: The database superuser and the default database the URL names.
ROLE = "yippiemove"
DATABASE = "yippiemove"


def postgres_bin() -> Path | None:
    """The newest /usr/lib/postgresql/*/bin with initdb, pg_ctl and postgres."""
    found = []
    for d in glob.glob("/usr/lib/postgresql/*/bin"):
        try:
            version = float(Path(d).parent.name)
        except ValueError:
            continue
        if all(os.access(Path(d) / b, os.X_OK) for b in ("initdb", "pg_ctl", "postgres")):
            found.append((version, Path(d)))
    return max(found)[1] if found else None


def postgres_missing() -> str | None:
    """Why no test PostgreSQL can be started here, or None."""
    if postgres_bin() is None:
        return f"PostgreSQL binaries not found under /usr/lib/postgresql/*/bin: {INSTALL_HINT}"
    if os.geteuid() == 0:
        try:
            pwd.getpwnam(PG_USER)
        except KeyError:
            return f"no {PG_USER!r} user to run PostgreSQL as (root cannot): {INSTALL_HINT}"
        if shutil.which("runuser") is None:
            return "runuser (util-linux) is needed to run PostgreSQL as a user"
    return None


class PostgresServer:
    def __init__(self) -> None:
        self.host = "127.0.0.1"
        self.port = 0
        self.netns: str | None = None
        self.dir: Path | None = None
        self._running = False

    # ------------------------------------------------------------------ paths

    @property
    def data(self) -> Path:
        assert self.dir is not None
        return self.dir / "data"

    @property
    def log_path(self) -> Path:
        assert self.dir is not None
        return self.dir / "postgres.log"

    @property
    def url(self) -> str:
        """Plain libpq URL of the default database, over TCP (as hosts use it)."""
        return self.url_for(DATABASE)

    def url_for(self, database: str) -> str:
        return f"postgresql://{ROLE}@{url_host(self.host)}:{self.port}/{database}"

    def admin_url(self, database: str = DATABASE) -> str:
        """The database over the unix socket (reachable from outside ``netns`` too)."""
        return f"postgresql://{ROLE}@/{database}?host={self.dir}&port={self.port}"

    # ------------------------------------------------------------------ life

    def _cmd(self, *argv: str) -> list[str]:
        bindir = postgres_bin()
        assert bindir is not None
        return wrap([str(bindir / argv[0]), *argv[1:]], netns=self.netns, user=PG_USER)

    def start(
        self, host: str = "127.0.0.1", port: int | None = None, netns: str | None = None
    ) -> PostgresServer:
        missing = postgres_missing()
        if missing:
            raise RuntimeError(missing)
        self.host, self.netns = host, netns
        self.port = port or free_port(host)
        self.dir = Path(tempfile.mkdtemp(prefix="yippiemove-pg-"))
        os.chmod(self.dir, 0o700)
        if os.geteuid() == 0:
            pw = pwd.getpwnam(PG_USER)
            os.chown(self.dir, pw.pw_uid, pw.pw_gid)
        run(
            self._cmd(
                "initdb", "-D", str(self.data), "-U", ROLE, "--auth=trust", "-E", "UTF8",
                "--locale=C", "--no-sync", "--no-instructions",
            )
        )  # fmt: skip
        conf = {
            "listen_addresses": f"'{host}'",
            "port": str(self.port),
            "unix_socket_directories": f"'{self.dir}'",
            "fsync": "off",
            "synchronous_commit": "off",
            "full_page_writes": "off",
            "shared_buffers": "16MB",
            "max_connections": "300",
            "logging_collector": "off",
            "log_min_messages": "warning",
        }
        with open(self.data / "postgresql.conf", "a") as f:
            f.write("\n# tests/infra/postgres.py\n")
            f.writelines(f"{k} = {v}\n" for k, v in conf.items())
        # A test server: every client trusted (hosts in namespaces connect over veths).
        (self.data / "pg_hba.conf").write_text(
            "local all all trust\nhost all all 0.0.0.0/0 trust\nhost all all ::/0 trust\n"
        )
        self._pg_ctl_start()
        self._psql_admin("postgres", f"CREATE DATABASE {DATABASE}")
        return self

    def _pg_ctl_start(self) -> None:
        run(self._cmd("pg_ctl", "-D", str(self.data), "-l", str(self.log_path), "-w",
                      "-t", "60", "start"))  # fmt: skip
        self._running = True

    def _psql_admin(self, database: str, sql: str) -> None:
        import psycopg

        with psycopg.connect(
            user=ROLE, dbname=database, host=str(self.dir), port=self.port, autocommit=True
        ) as conn:
            conn.execute(sql)  # type: ignore[arg-type]

    def pid(self) -> int | None:
        """The postmaster's pid (from postmaster.pid), or None."""
        try:
            return int((self.data / "postmaster.pid").read_text().split("\n", 1)[0])
        except (OSError, ValueError):
            return None

    def stop(self) -> None:
        """Stop the server (fast) and remove its files."""
        if self.dir is None:
            return
        if self._running:
            try:
                run(self._cmd("pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "stop"))
            except RuntimeError:
                pid = self.pid()
                if pid is not None and alive(pid):
                    kill_tree(pid)
            self._running = False
        shutil.rmtree(self.dir, ignore_errors=True)
        self.dir = None

    def restart(self) -> None:
        """``pg_ctl restart -m fast``: every client connection is cut, data kept."""
        if self._running:
            run(self._cmd("pg_ctl", "-D", str(self.data), "-l", str(self.log_path), "-m",
                          "fast", "-w", "-t", "60", "restart"))  # fmt: skip
        else:
            self._pg_ctl_start()

    def kill(self) -> None:
        """SIGKILL the postmaster and its processes (a crash; :meth:`restart` recovers)."""
        pid = self.pid()
        if pid is not None and alive(pid):
            kill_tree(pid)
        # Nobody may reap the dead postmaster (a container's pid 1 often does not): its
        # zombie's pid would pass PostgreSQL's "is the lock file's server alive" check.
        (self.data / "postmaster.pid").unlink(missing_ok=True)
        assert self.dir is not None
        for lock in self.dir.glob(".s.PGSQL.*.lock"):
            lock.unlink(missing_ok=True)
        self._running = False

    def terminate(self) -> None:
        """SIGTERM (a smart shutdown)."""
        pid = self.pid()
        if pid is not None:
            os.kill(pid, signal.SIGTERM)

    # ------------------------------------------------------------------ databases

    def create_database(self, name: str | None = None, template: str | None = None) -> str:
        """A new database (a copy of ``template`` if given); returns its :attr:`url`."""
        name = name or f"t_{uuid.uuid4().hex[:16]}"
        sql = f'CREATE DATABASE "{name}"'
        if template:
            sql += f' TEMPLATE "{template}"'
        self._psql_admin("postgres", sql)
        return self.url_for(name)

    def drop_database(self, name: str) -> None:
        self._psql_admin("postgres", f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    def __enter__(self) -> PostgresServer:
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
