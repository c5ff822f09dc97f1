"""pytest fixtures of the real servers (imported by tests/conftest.py).

- ``postgres_server``: one PostgreSQL server for the session;
- ``postgres``: a fresh, empty database on it per test (``postgres.url``, a plain
  ``postgresql://`` URL; ``postgres.server`` the server; ``postgres.new_database()``
  another one);
- ``redis_server``: a Redis server per test.

Missing binaries fail the test (never skip: CI must run these), naming the Debian
package.  ``YIPPIEMOVE_TEST_DATABASE=postgresql`` runs every test's service on a fresh
PostgreSQL database instead of its SQLite file (docs/testing.md), except those marked
``sqlite_file`` (they read the SQLite file itself).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest

from tests.infra._proc import alive
from tests.infra.postgres import PostgresServer, postgres_missing
from tests.infra.redis import RedisServer, redis_missing

__all__ = ["PgDatabase", "postgres", "postgres_server", "redis_server", "test_database_env"]


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    missing = postgres_missing()
    if missing:
        pytest.fail(f"these tests need a real PostgreSQL: {missing}", pytrace=False)
    server = PostgresServer().start()
    try:
        yield server
    finally:
        server.stop()


@dataclass
class PgDatabase:
    """A database of its own on the session's server."""

    server: PostgresServer
    name: str
    url: str
    others: list[str] = field(default_factory=list)

    def new_database(self) -> str:
        url = self.server.create_database()
        self.others.append(url.rsplit("/", 1)[1])
        return url


def _fresh(server: PostgresServer) -> PgDatabase:
    url = server.create_database()
    return PgDatabase(server, url.rsplit("/", 1)[1], url)


@pytest.fixture
def postgres(postgres_server: PostgresServer) -> Iterator[PgDatabase]:
    db = _fresh(postgres_server)
    yield db
    if postgres_server.dir is None:
        return
    pid = postgres_server.pid()
    if pid is None or not alive(pid):  # a test killed the session's server: start it again
        postgres_server.restart()
    for name in [db.name, *db.others]:
        try:
            postgres_server.drop_database(name)
        except Exception:
            pass  # the session's end removes it all


@pytest.fixture
def redis_server() -> Iterator[RedisServer]:
    missing = redis_missing()
    if missing:
        pytest.fail(f"these tests need a real Redis: {missing}", pytrace=False)
    server = RedisServer().start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(autouse=True)
def test_database_env(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    """With ``YIPPIEMOVE_TEST_DATABASE=postgresql``: the test's services use a fresh
    PostgreSQL database (YIPPIEMOVE_DATABASE_URL) instead of SQLite."""
    if os.environ.get("YIPPIEMOVE_TEST_DATABASE", "sqlite") != "postgresql":
        return
    if request.node.get_closest_marker("sqlite_file") is not None:
        return
    server: PostgresServer = request.getfixturevalue("postgres_server")
    db = _fresh(server)
    monkeypatch.setenv("YIPPIEMOVE_DATABASE_URL", db.url)
    request.addfinalizer(lambda: _drop_quietly(server, db.name))


def _drop_quietly(server: PostgresServer, name: str) -> None:
    try:
        server.drop_database(name)
    except Exception:
        pass
