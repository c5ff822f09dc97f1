"""Alembic's environment for the control database (service/schema.py runs it).

Configured in code, no alembic.ini: :func:`yippiemove.service.schema.alembic_config`
passes the open connection (already inside the transaction that holds the migration
lock) in ``config.attributes["connection"]``.  Batch mode everywhere, so that SQLite's
limited ALTER TABLE works (alembic copies the table where SQLite cannot alter it).
"""

from __future__ import annotations

from alembic import context

from yippiemove.service.db import Base

connection = context.config.attributes.get("connection")
if connection is None:  # pragma: no cover - only the code path of schema.py is supported
    raise RuntimeError(
        "run the migrations through yippiemove.service.schema (yippiemove db upgrade)"
    )

context.configure(
    connection=connection,
    target_metadata=Base.metadata,
    render_as_batch=True,
    compare_type=True,
)
with context.begin_transaction():
    context.run_migrations()
