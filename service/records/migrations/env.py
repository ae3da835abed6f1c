"""Alembic's entry point, run by :func:`service.records.db.migrate` (no ini file).

The engine comes in through ``config.attributes``: the service and the tests migrate
the database they are about to use, whatever URL their settings name. On PostgreSQL
the migration holds an advisory lock, so replicas starting together take turns
instead of racing to create the same tables.
"""

from __future__ import annotations

from alembic import context
from sqlalchemy import text

from service.records.tables import Base

#: pg_advisory_xact_lock key for migrations ("bonefrac" in ASCII, as a number).
ADVISORY_LOCK = 0x626F6E6566726163


def run() -> None:
    engine = context.config.attributes["engine"]
    with engine.connect() as connection:
        sqlite = connection.dialect.name == "sqlite"
        context.configure(
            connection=connection,
            target_metadata=Base.metadata,
            render_as_batch=sqlite,  # SQLite alters a table by copying it
            transaction_per_migration=False,
        )
        with context.begin_transaction():
            if connection.dialect.name == "postgresql":
                connection.execute(text(f"SELECT pg_advisory_xact_lock({ADVISORY_LOCK})"))
            context.run_migrations()


run()
