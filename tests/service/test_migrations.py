"""The control database's schema by Alembic migrations (service/schema.py), on SQLite and
on a real PostgreSQL: up from empty, up from the schema before issue 15 with its data
kept, the migrated schema equal to the models, ``db upgrade`` twice, two processes
starting at once, and PostgreSQL refusing a schema that is not at head."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest
from alembic import command
from click.testing import CliRunner
from sqlalchemy import create_engine, inspect, text

from tests.infra.fixtures import PgDatabase
from yippiemove.cli import main
from yippiemove.service import schema
from yippiemove.service.db import Base, Database, Job, User, driver_url, shown_url

FIXTURE = Path(__file__).parent / "data" / "control-636b9a5.sql"
HEAD = "0013"  # issue 17: staged 0006, batches 0007, operators 0008, account tokens 0009;
# issue 18: the job list's index 0010; issue 20: the credit ledger 0011, payments 0012, batch quotes 0013


def revision_and_differences(db: Database) -> tuple[str | None, list[object]]:
    with db.engine.connect() as conn:
        return schema.current_revision(conn), schema.schema_differences(conn)


def test_head_is_0013() -> None:
    assert schema.head_revision() == HEAD
    assert schema.known_revisions() == {f"{n:04d}" for n in range(1, 14)}


# ---------------------------------------------------------------------- from empty


def test_an_empty_sqlite_database_is_migrated_on_start_to_the_models(tmp_path: Path) -> None:
    db = Database(f"sqlite:///{tmp_path / 'c.sqlite'}")
    try:
        # compare_metadata finds no difference: a column added to the models without a
        # migration fails here.
        assert revision_and_differences(db) == (HEAD, [])
    finally:
        db.dispose()


def test_an_empty_postgres_database_is_created_on_start_to_the_models(
    postgres: PgDatabase,
) -> None:
    db = Database(postgres.url)
    try:
        assert db.sa_url.drivername == "postgresql+psycopg"
        assert revision_and_differences(db) == (HEAD, [])
        assert db.engine.dialect.name == "postgresql"
    finally:
        db.dispose()


def test_two_hosts_starting_on_one_empty_postgres_database_create_it_once(
    postgres: PgDatabase,
) -> None:
    start = threading.Barrier(4)
    done: list[object] = []

    def host() -> None:
        start.wait()
        db = Database(postgres.url, prepare=False)
        try:
            done.append(db.prepare())
        except Exception as exc:
            done.append(exc)
        finally:
            db.dispose()

    threads = [threading.Thread(target=host) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    made = [d for d in done if isinstance(d, schema.Upgrade)]
    assert len(done) == 4 and done.count(None) == 3 and len(made) == 1, done
    assert (made[0].before, made[0].after) == (None, HEAD)


# ---------------------------------------------------------------------- old databases


def old_sqlite(path: Path) -> str:
    con = sqlite3.connect(path)
    con.executescript(FIXTURE.read_text())
    con.close()
    return f"sqlite:///{path}"


def test_a_database_of_the_schema_before_issue_15_is_upgraded_on_start_with_its_data(
    tmp_path: Path,
) -> None:
    url = old_sqlite(tmp_path / "control.sqlite")
    before = {
        t: sqlite3.connect(tmp_path / "control.sqlite").execute(f"SELECT * FROM {t}").fetchall()
        for t in ("users", "api_tokens", "idempotency_keys", "web_sessions", "mailbox_locks")
    }
    db = Database(url)
    try:
        assert revision_and_differences(db) == (HEAD, [])
        with db.read() as s:
            assert [u.email for u in s.query(User)] == ["alice@example.org"]
            jobs = {j.id: j for j in s.query(Job)}
            running = jobs["0123456789abcdef0123456789abcdef"]
            assert running.status == "running" and running.lease_owner == "old-host|123|456"
            assert running.progress == {"phase": "copying", "messages_done": 42}
            assert running.credentials == b"\x00\xff" and running.notified_start is True
            assert jobs["fedcba9876543210fedcba9876543210"].folders == {"include": ["INBOX"]}
            # The new columns, defaulted.
            assert [(j.lease_token, j.host) for j in jobs.values()] == [(0, None), (0, None)]
        con = sqlite3.connect(tmp_path / "control.sqlite")
        for table, rows in before.items():
            after = con.execute(f"SELECT * FROM {table}").fetchall()
            width = len(rows[0]) if rows else 0  # later columns (users.timezone): empty
            assert [r[:width] for r in after] == rows, table
            # ...or their defaults: users.role "customer", users.suspended false (0008).
            defaults = (None, "customer", 0) if table == "users" else (None,)
            assert all(v in defaults for r in after for v in r[width:]), table
        assert con.execute("SELECT count(*) FROM job_checkpoints").fetchone() == (0,)
        assert con.execute("SELECT count(*) FROM worker_hosts").fetchone() == (0,)
        con.close()
    finally:
        db.dispose()


@pytest.mark.sqlite_file("also upgrades the data directory's own SQLite")
def test_db_upgrade_tells_from_which_revision_and_twice_is_a_no_op(tmp_path: Path) -> None:
    url = old_sqlite(tmp_path / "control.sqlite")
    runner = CliRunner()
    first = runner.invoke(main, ["db", "upgrade", "--database-url", url])
    assert first.exit_code == 0, first.output
    assert "recognised as revision 0001" in first.output
    assert f"upgraded from 0001 to {HEAD}" in first.output
    second = runner.invoke(main, ["db", "upgrade", "--database-url", url])
    assert second.exit_code == 0, second.output
    assert f"already at {HEAD}" in second.output and "upgraded" not in second.output
    cur = runner.invoke(main, ["db", "current", "--database-url", url])
    assert cur.exit_code == 0 and f"revision {HEAD}" in cur.output and "up to date" in cur.output
    # The data directory's own database by default.
    data = tmp_path / "data"
    r = runner.invoke(main, ["db", "upgrade", "--data-dir", str(data)])
    assert r.exit_code == 0 and f"from an empty database to {HEAD}" in r.output, r.output
    assert (data / "control.sqlite").exists()


def test_a_database_of_the_groundwork_models_is_recognised_as_0002(tmp_path: Path) -> None:
    """Made by create_all of issue 15's first models (before the migrations existed)."""
    url = f"sqlite:///{tmp_path / 'c.sqlite'}"
    engine = create_engine(url)
    Base.metadata.create_all(engine)
    engine.dispose()
    db = Database(url, prepare=False)
    try:
        done = db.prepare()
        assert (done.stamped, done.before, done.after, done.changed) == (HEAD, HEAD, HEAD, False)
        assert revision_and_differences(db) == (HEAD, [])
    finally:
        db.dispose()


# ---------------------------------------------------------------------- SQLite: two starts

_START = textwrap.dedent(
    """
    import os, sys, time
    from pathlib import Path
    from yippiemove.service import schema
    from yippiemove.service.db import Database

    # Slow the migration down, so that the other process starts while it runs.
    inner = schema._upgrade_locked
    def slow(conn):
        time.sleep(1.0)
        return inner(conn)
    schema._upgrade_locked = slow
    go = Path(sys.argv[2])
    (go.parent / f"ready.{os.getpid()}").touch()  # imports done: both start together
    while not go.exists():
        time.sleep(0.01)
    db = Database(sys.argv[1], prepare=False)
    done = db.prepare()
    print("migrated" if done is not None else "current")
    """
)


def test_two_processes_starting_on_a_fresh_sqlite_one_migrates_the_other_waits(
    tmp_path: Path,
) -> None:
    url = f"sqlite:///{tmp_path / 'control.sqlite'}"
    go = tmp_path / "go"
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", _START, url, str(go)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    deadline = time.monotonic() + 60
    while len(list(tmp_path.glob("ready.*"))) < 2 and time.monotonic() < deadline:
        time.sleep(0.02)
    go.touch()
    outs = [p.communicate(timeout=60) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    assert sorted(o.strip() for o, _ in outs) == ["current", "migrated"], outs
    db = Database(url)
    try:
        assert revision_and_differences(db) == (HEAD, [])
    finally:
        db.dispose()


# ---------------------------------------------------------------------- PostgreSQL


def _migrate_to(url: str, revision: str) -> None:
    db = Database(url, prepare=False)
    try:
        with db.engine.connect() as conn, conn.begin():
            command.upgrade(schema.alembic_config(conn), revision)
    finally:
        db.dispose()


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_the_ledger_migration_from_0010_keeps_the_data_and_matches_the_models(
    backend: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """Issue 20: a database at 0010 (the revision before the ledger) with a customer in
    it, upgraded to head: the ledger's tables are there, equal to the models, and
    usable; the customer is kept."""
    if backend == "sqlite":
        url = f"sqlite:///{tmp_path / 'c.sqlite'}"
    else:
        url = request.getfixturevalue("postgres").url
    _migrate_to(url, "0010")
    db = Database(url, prepare=False)
    try:
        with db.session() as s:
            s.add(User(email="erin@example.org", password_hash="x"))
        assert revision_and_differences(db)[0] == "0010"
        with db.engine.connect() as conn:
            assert not inspect(conn).has_table("ledger_entries")
        done = db.prepare() if backend == "sqlite" else None
        if backend == "postgresql":  # never by itself: the operator's command
            with db.engine.connect() as conn, conn.begin():
                command.upgrade(schema.alembic_config(conn), "head")
        else:
            assert done is not None and (done.before, done.after) == ("0010", HEAD)
        assert revision_and_differences(db) == (HEAD, [])
        from yippiemove.service import ledger

        with db.session() as s:
            uid = s.query(User).filter_by(email="erin@example.org").one().id
            account = ledger.account_for_user(s, uid)
            ledger.post(s, account, 500, "grant", "welcome")
            assert ledger.spend(s, account, 200, "order:1") is not None
        with db.read() as s:
            assert ledger.balance(s, account) == 300
    finally:
        db.dispose()


def test_postgres_behind_head_is_refused_naming_the_command(
    postgres: PgDatabase, tmp_path: Path
) -> None:
    _migrate_to(postgres.url, "0001")
    with pytest.raises(schema.SchemaError) as e:
        Database(postgres.url)
    message = str(e.value)
    assert "revision 0001" in message and HEAD in message
    assert f"yippiemove db upgrade --database-url {postgres.url}" in message
    # Every service command refuses the same way, before it does anything.
    pw = tmp_path / "pw"
    pw.write_text("a long enough password\n")
    runner = CliRunner()
    for argv in (
        ["user", "create", "carol@example.org", "--password-file", str(pw)],
        ["token", "create", "carol@example.org"],
    ):
        r = runner.invoke(
            main, [*argv, "--data-dir", str(tmp_path / "d"), "--database-url", postgres.url]
        )
        assert r.exit_code == 2 and "yippiemove db upgrade --database-url" in r.output, r.output
    # Then the operator's command brings it to head, data kept.
    r = runner.invoke(main, ["db", "upgrade", "--database-url", postgres.url])
    assert r.exit_code == 0 and f"upgraded from 0001 to {HEAD}" in r.output, r.output
    Database(postgres.url).dispose()


def test_postgres_newer_than_this_code_is_refused(postgres: PgDatabase) -> None:
    db = Database(postgres.url)
    with db.engine.begin() as conn:
        conn.execute(text("UPDATE alembic_version SET version_num = '0099'"))
    db.dispose()
    with pytest.raises(schema.SchemaError, match="0099, newer than this yippiemove knows"):
        Database(postgres.url)
    r = CliRunner().invoke(main, ["db", "upgrade", "--database-url", postgres.url])
    assert r.exit_code == 2 and "upgrade yippiemove on this host" in r.output


def test_postgres_with_tables_but_no_revision_is_left_to_the_operator(
    postgres: PgDatabase,
) -> None:
    engine = create_engine(driver_url(postgres.url))
    Base.metadata.create_all(engine)
    engine.dispose()
    with pytest.raises(schema.SchemaError, match="no schema revision"):
        Database(postgres.url)
    r = CliRunner().invoke(main, ["db", "upgrade", "--database-url", postgres.url])
    assert r.exit_code == 0 and f"recognised as revision {HEAD}" in r.output, r.output
    Database(postgres.url).dispose()


def test_operator_commands_against_a_plain_postgresql_url(
    postgres: PgDatabase, tmp_path: Path
) -> None:
    runner = CliRunner()
    r = runner.invoke(main, ["db", "upgrade", "--database-url", postgres.url])
    assert r.exit_code == 0 and f"from an empty database to {HEAD}" in r.output, r.output
    pw = tmp_path / "pw"
    pw.write_text("a long enough password\n")
    data = ["--data-dir", str(tmp_path / "d")]
    r = runner.invoke(
        main,
        ["user", "create", "dave@example.org", "--password-file", str(pw), *data],
        env={"YIPPIEMOVE_DATABASE_URL": postgres.url},
    )
    assert r.exit_code == 0 and "created customer dave@example.org" in r.output, r.output
    # postgres:// (as some tools write it) is the same database.
    alias = "postgres://" + postgres.url.removeprefix("postgresql://")
    r = runner.invoke(main, ["token", "create", "dave@example.org", *data, "--database-url", alias])
    assert r.exit_code == 0, r.output
    token = r.stdout.strip().splitlines()[-1]
    assert len(token) > 20
    db = Database(postgres.url)
    try:
        with db.read() as s:
            assert [u.email for u in s.query(User)] == ["dave@example.org"]
    finally:
        db.dispose()
    # Nothing went to the data directory's SQLite.
    assert not (tmp_path / "d" / "control.sqlite").exists()
    # The unix socket, as libpq writes it: ?host=/socket/dir.
    socket_url = postgres.server.admin_url(postgres.name)
    assert "?host=/" in socket_url
    r = runner.invoke(main, ["db", "current", "--database-url", socket_url])
    assert r.exit_code == 0 and f"revision {HEAD}" in r.output, r.output


# ---------------------------------------------------------------------- URLs, passwords


@pytest.mark.parametrize(
    ("written", "driver", "query"),
    [
        ("postgresql://u@db.example:5433/ym", "postgresql+psycopg", {}),
        ("postgres://u@db.example/ym", "postgresql+psycopg", {}),
        (
            "postgresql://u@/ym?host=/run/postgresql",
            "postgresql+psycopg",
            {"host": "/run/postgresql"},
        ),
        ("postgresql://u@h/ym?sslmode=require", "postgresql+psycopg", {"sslmode": "require"}),
        ("postgresql+psycopg://u@h/ym", "postgresql+psycopg", {}),
        ("sqlite:////var/lib/yippiemove/control.sqlite", "sqlite", {}),
    ],
)
def test_database_urls_as_libpq_tools_write_them(written: str, driver: str, query: dict) -> None:
    u = driver_url(written)
    assert u.drivername == driver and dict(u.query) == query


def test_a_password_never_shows(postgres_server, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    secret = "hunter2-Very-Secret"
    url = f"postgresql://yippiemove:{secret}@127.0.0.1:1/nowhere"
    assert secret not in shown_url(url) and "***" in shown_url(url)
    assert secret not in Database(f"sqlite:///{tmp_path / 'x.sqlite'}").shown_url
    r = CliRunner().invoke(main, ["db", "upgrade", "--database-url", url])
    assert r.exit_code == 2 and "cannot upgrade the control database" in r.output
    assert secret not in r.output, r.output
    r = CliRunner().invoke(
        main, ["user", "create", "x@example.org", "--data-dir", str(tmp_path / "d")],
        env={"YIPPIEMOVE_DATABASE_URL": url}, input="",
    )  # fmt: skip
    assert secret not in r.output


def test_the_password_from_pgpassword_or_pgpass_as_libpq_does(
    postgres: PgDatabase, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A role with a password, checked by the server (scram): the URL without one works
    with PGPASSWORD, or a ~/.pgpass line (PGPASSFILE), and not without."""
    server = postgres.server
    secret = "pg-Pass-1234"
    role = f"u_{postgres.name}"
    admin = create_engine(driver_url(server.admin_url(postgres.name)), isolation_level="AUTOCOMMIT")
    with admin.connect() as c:
        c.execute(text(f"CREATE ROLE {role} LOGIN PASSWORD '{secret}'"))
        c.execute(text(f'GRANT ALL ON DATABASE "{postgres.name}" TO {role}'))
        c.execute(text(f"GRANT ALL ON SCHEMA public TO {role}"))
    hba = server.data / "pg_hba.conf"
    hba.write_text(f"host all {role} 0.0.0.0/0 scram-sha-256\n" + hba.read_text())
    with admin.connect() as c:
        c.execute(text("SELECT pg_reload_conf()"))
    admin.dispose()
    url = f"postgresql://{role}@{server.host}:{server.port}/{postgres.name}"
    monkeypatch.delenv("PGPASSWORD", raising=False)
    monkeypatch.setenv("PGPASSFILE", str(tmp_path / "none"))
    with pytest.raises(Exception, match="password"):
        Database(url)
    monkeypatch.setenv("PGPASSWORD", secret)
    Database(url).dispose()
    monkeypatch.delenv("PGPASSWORD")
    pgpass = tmp_path / "pgpass"
    pgpass.write_text(f"{server.host}:{server.port}:*:{role}:{secret}\n")
    os.chmod(pgpass, 0o600)
    monkeypatch.setenv("PGPASSFILE", str(pgpass))
    db = Database(url)
    try:
        assert inspect(db.engine).has_table("jobs")
    finally:
        db.dispose()
