"""The control database's schema: Alembic migrations (service/migrations/), run in code.

- :func:`upgrade` runs the migrations to the head revision inside one transaction that
  holds the database's migration lock: SQLite's own write lock (``BEGIN IMMEDIATE``), or
  on PostgreSQL a transaction-level advisory lock; a second process starting at the same
  time waits, then finds the schema current.  A database made before the migrations
  (tables there, no ``alembic_version``) is stamped with the revision it has first.
- :func:`ensure_current` is what :class:`~yippiemove.service.db.Database` does on start
  (docs/service.md "Running a fleet"): SQLite upgrades itself (the embedded default stays
  one command); PostgreSQL is created when empty, and otherwise must already be at head
  (``yippiemove db upgrade``): hosts of two versions sharing one database must never
  migrate it behind the operator's back.

Alembic is configured in code (no alembic.ini): the scripts ship as package data.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, Engine, inspect, text

from .db import Base

__all__ = [
    "MIGRATIONS",
    "SchemaError",
    "Upgrade",
    "alembic_config",
    "current_revision",
    "ensure_current",
    "head_revision",
    "schema_differences",
    "upgrade",
]

MIGRATIONS = Path(__file__).parent / "migrations"

#: PostgreSQL advisory lock key of migrations (any constant; "yippiemove" in ASCII, cut).
_PG_LOCK = 0x79697070696D6F76 & 0x7FFFFFFFFFFFFFFF


class SchemaError(RuntimeError):
    """The control database's schema is not the one this code needs."""


@dataclass(frozen=True)
class Upgrade:
    """What :func:`upgrade` did: from which revision (None: empty database) to which;
    ``stamped``: the revision a pre-migration database was recognised as."""

    before: str | None
    after: str
    stamped: str | None = None

    @property
    def changed(self) -> bool:
        return self.before != self.after


def alembic_config(connection: Connection | None = None) -> Config:
    """Alembic's configuration, in code; ``connection`` goes to migrations/env.py."""
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS).replace("%", "%%"))
    cfg.attributes["connection"] = connection
    return cfg


def head_revision() -> str:
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    assert head is not None
    return head


def known_revisions() -> set[str]:
    return {s.revision for s in ScriptDirectory.from_config(alembic_config()).walk_revisions()}


def current_revision(conn: Connection) -> str | None:
    """The database's revision (None: no ``alembic_version``)."""
    return MigrationContext.configure(conn).get_current_revision()


def _pre_migration_revision(conn: Connection) -> str | None:
    """The revision of a database made by ``create_all`` before the migrations existed:
    None when it is empty (or already versioned), "0001" for issue 14's schema, "0002"
    for the models of issue 15's groundwork (made with create_all too), "0003" when
    ``create_all`` made it with the domain credentials of issue 16, "0004" with its
    OAuth2 sign-ins too, "0005" with issue 17's mail policy, then the newest of issue
    17's tables it has: staged moves 0006, batches 0007, operators' audit log 0008,
    account tokens 0009; then issue 18's index of the job list 0010; issue 20's ledger
    0011, its payments 0012 and batch lines' quotes 0013."""
    tables = set(inspect(conn).get_table_names())
    if "alembic_version" in tables or not tables & {"users", "jobs"}:
        return None
    columns = {c["name"] for c in inspect(conn).get_columns("jobs")}
    if "lease_token" in columns and {"worker_hosts", "job_checkpoints"} <= tables:
        if "oauth_sign_ins" in tables:
            indexes = {i["name"] for i in inspect(conn).get_indexes("jobs")}
            if "account_tokens" in tables and "ix_jobs_user_created" in indexes:
                if "ledger_entries" in tables:
                    if "payments" not in tables:
                        return "0011"
                    lines = {c["name"] for c in inspect(conn).get_columns("batch_lines")}
                    return "0013" if "quote_id" in lines else "0012"
                return "0010"
            for table, revision in (
                ("account_tokens", "0009"),
                ("audit_log", "0008"),
                ("batches", "0007"),
                ("staged_schedules", "0006"),
            ):
                if table in tables:
                    return revision
            return "0005" if "batch_id" in columns else "0004"
        return "0003" if "domain_credentials" in tables else "0002"
    return "0001"


def _lock(conn: Connection) -> None:
    """Take the migration lock in the transaction ``conn`` has open.

    SQLite: the engine of db.py begins writers with ``BEGIN IMMEDIATE``, which already
    holds the write lock; PostgreSQL: an advisory lock released at commit."""
    if conn.dialect.name == "postgresql":
        conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _PG_LOCK})


def _upgrade_locked(conn: Connection) -> Upgrade:
    stamped = _pre_migration_revision(conn)
    cfg = alembic_config(conn)
    if stamped is not None:
        command.stamp(cfg, stamped)
    before = current_revision(conn)
    if before is not None and before not in known_revisions():
        raise SchemaError(
            f"the control database is at schema revision {before}, newer than this "
            f"yippiemove knows (its newest is {head_revision()}): upgrade yippiemove on "
            "this host"
        )
    command.upgrade(cfg, "head")
    after = current_revision(conn)
    assert after is not None
    return Upgrade(before=stamped if stamped is not None else before, after=after, stamped=stamped)


def upgrade(engine: Engine) -> Upgrade:
    """Run the migrations to head, under the migration lock, in one transaction."""
    with engine.connect() as conn, conn.begin():
        _lock(conn)
        return _upgrade_locked(conn)


def schema_differences(conn: Connection) -> list[object]:
    """What differs between the database and the models (alembic's compare_metadata);
    empty when the migrations describe the models exactly."""
    ctx = MigrationContext.configure(conn, opts={"compare_type": True})
    return list(compare_metadata(ctx, Base.metadata))


def ensure_current(engine: Engine, *, shown_url: str) -> Upgrade | None:
    """On start: SQLite upgrades itself; PostgreSQL (any other database) is created when
    empty and must be at head otherwise.  Returns what was done (None: nothing)."""
    head = head_revision()
    if engine.dialect.name == "sqlite":
        done = upgrade(engine)  # under BEGIN IMMEDIATE: a second process waits here
        return done if done.changed or done.stamped else None
    with engine.connect() as conn, conn.begin():
        _lock(conn)  # two hosts starting on one empty database: one creates it
        rev = current_revision(conn)
        if rev == head:
            return None
        if rev is None and not inspect(conn).get_table_names():
            return _upgrade_locked(conn)
    if rev is None:
        state = "has tables but no schema revision (made by yippiemove before 0.2?)"
    elif rev in known_revisions():
        state = f"is at schema revision {rev}, this yippiemove needs {head}"
    else:
        raise SchemaError(
            f"the control database {shown_url} is at schema revision {rev}, newer than this "
            f"yippiemove knows (its newest is {head}): upgrade yippiemove on this host"
        )
    raise SchemaError(
        f"the control database {shown_url} {state}; upgrade it once, from one host, with: "
        f"yippiemove db upgrade --database-url {shown_url}"
    )
