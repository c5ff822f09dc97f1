"""The test servers themselves (tests/infra/): what the fleet tests rely on — a restart
keeps the data and cuts the connections, a kill is a crash the next start recovers from,
and inside a network namespace the server is reachable there only (and through its unix
socket from here)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import uuid
from collections.abc import Iterator

import psycopg
import pytest
import redis

from tests.infra.fixtures import PgDatabase
from tests.infra.postgres import PostgresServer
from tests.infra.redis import RedisServer


def test_postgres_restart_and_kill_keep_committed_data(postgres: PgDatabase) -> None:
    with psycopg.connect(postgres.url, autocommit=True) as c:
        c.execute("CREATE TABLE t (x int)")
        c.execute("INSERT INTO t VALUES (1)")
    held = psycopg.connect(postgres.url, autocommit=True)
    postgres.server.restart()
    with pytest.raises(psycopg.OperationalError):
        held.execute("SELECT 1")  # a restart cuts every connection
    held.close()
    postgres.server.kill()
    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(postgres.url, connect_timeout=2)
    postgres.server.restart()  # crash recovery
    with psycopg.connect(postgres.url) as c:
        assert c.execute("SELECT x FROM t").fetchall() == [(1,)]


def test_redis_restart_keeps_or_loses_the_data_as_asked(redis_server: RedisServer) -> None:
    c = redis.Redis.from_url(redis_server.url)
    c.set("k", "v")
    redis_server.restart(keep_data=True)
    assert redis.Redis.from_url(redis_server.url).get("k") == b"v"
    redis_server.restart(keep_data=False)
    assert redis.Redis.from_url(redis_server.url).get("k") is None
    redis_server.kill()
    with pytest.raises(redis.ConnectionError):
        redis.Redis.from_url(redis_server.url, socket_connect_timeout=2).ping()
    redis_server.restart()
    assert redis.Redis.from_url(redis_server.url).ping()


@pytest.fixture
def netns() -> Iterator[str]:
    if os.geteuid() != 0 or shutil.which("ip") is None:
        if os.environ.get("CI"):
            pytest.fail("network namespaces need root and iproute2 (apt-get install iproute2)")
        pytest.skip("network namespaces need root and iproute2")
    name = f"ymt-{uuid.uuid4().hex[:8]}"
    subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        subprocess.run(["ip", "netns", "exec", name, "ip", "link", "set", "lo", "up"], check=True)
        yield name
    finally:
        subprocess.run(["ip", "netns", "del", name], check=False)


def _in_netns(ns: str, code: str) -> str:
    out = subprocess.run(
        ["ip", "netns", "exec", ns, sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


def test_servers_in_a_network_namespace(netns: str) -> None:
    with PostgresServer().start(netns=netns) as pg, RedisServer().start(netns=netns) as rs:
        # Inside the namespace: the plain URLs work.
        assert (
            _in_netns(
                netns,
                f"import psycopg; print(psycopg.connect({pg.url!r}).execute('select 7').fetchone()[0])",
            )
            == "7"
        )
        assert (
            _in_netns(netns, f"import redis; print(redis.Redis.from_url({rs.url!r}).ping())")
            == "True"
        )
        # Out here the namespace's 127.0.0.1 is not ours; the unix sockets still reach them.
        with pytest.raises(psycopg.OperationalError):
            psycopg.connect(pg.url, connect_timeout=2)
        with psycopg.connect(pg.admin_url()) as c:
            assert c.execute("SELECT 1").fetchone() == (1,)
        assert rs.client().ping()
        pg.restart()
        rs.restart(keep_data=False)
        assert rs.client().ping()
