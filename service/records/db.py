"""Which database, how to connect to it, and bringing its schema up to date.

One URL names the database: ``BONEFRAC_DATABASE_URL`` when set (PostgreSQL through
psycopg 3: ``postgresql://user:password@host/db`` is enough), else SQLite at
``<BONEFRAC_RECORDS_DIR>/records.db``. SQLite runs in WAL mode, so the page's reads never
wait for the prediction log's writes. The schema is Alembic's (``migrations/``), applied
at start-up by the service and by ``python -m service migrate``; nothing here runs at
import.

The trainer's ``export-reviewed`` imports this module (never the service's settings or
FastAPI), so the environment variables are resolved here, by :func:`url_from_environment`,
with the same names and defaults as :class:`service.settings.Settings`.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event, text
from sqlalchemy.engine import URL, make_url

#: The records folder when ``BONEFRAC_RECORDS_DIR`` is unset (relative to the working
#: directory, like ``models``).
DEFAULT_RECORDS_DIR = Path("records")
SQLITE_FILE = "records.db"
MIGRATIONS = Path(__file__).resolve().parent / "migrations"
#: Seconds to wait for a PostgreSQL connection: a database that is down must fail the
#: log's write quickly (the log retries), not hold its thread for the OS's TCP timeout.
CONNECT_TIMEOUT_S = 5
#: Seconds an SQLite connection waits for another writer's lock before failing.
SQLITE_BUSY_TIMEOUT_S = 30


def resolve_url(records_dir: Path, database_url: str | None) -> URL:
    """The URL to connect to: ``database_url`` (a PostgreSQL URL gets the psycopg 3
    driver when it names none), else the SQLite file in ``records_dir``."""
    if not database_url:
        return URL.create("sqlite", database=str(Path(records_dir) / SQLITE_FILE))
    url = make_url(database_url)
    if url.drivername in ("postgres", "postgresql"):
        url = url.set(drivername="postgresql+psycopg")
    return url


def url_from_environment(environ: Mapping[str, str] | None = None) -> URL:
    """The service's database, from ``BONEFRAC_DATABASE_URL`` or ``BONEFRAC_RECORDS_DIR``
    (for commands that do not build the service's settings, such as the trainer's)."""
    env = os.environ if environ is None else environ
    records_dir = env.get("BONEFRAC_RECORDS_DIR", "").strip() or DEFAULT_RECORDS_DIR
    return resolve_url(Path(records_dir), env.get("BONEFRAC_DATABASE_URL", "").strip() or None)


def describe(url: URL) -> str:
    """The URL as logs may show it: the password hidden."""
    return url.render_as_string(hide_password=True)


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    """WAL (readers never block the writer), NORMAL sync (safe in WAL, one fsync per
    checkpoint instead of per commit) and enforced foreign keys, on every connection."""
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


def make_engine(url: URL) -> Engine:
    """An engine for ``url``; it connects at first use, not here."""
    if url.get_backend_name() == "sqlite":
        engine = create_engine(url, connect_args={"timeout": SQLITE_BUSY_TIMEOUT_S})
        event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    connect_args: dict[str, Any] = {}
    if url.get_backend_name() == "postgresql":
        connect_args["connect_timeout"] = CONNECT_TIMEOUT_S
    # pre_ping: a pooled connection that died with a database restart is replaced
    # instead of failing the next write.
    return create_engine(url, pool_pre_ping=True, connect_args=connect_args)


def alembic_config(engine: Engine) -> Any:
    """Alembic's configuration for this package's migrations, without an ini file."""
    from alembic.config import Config  # noqa: PLC0415 - only for migrating

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.attributes["engine"] = engine
    return config


def migrate(engine: Engine, revision: str = "head") -> None:
    """Bring the schema to ``revision`` (several replicas starting at once on
    PostgreSQL take turns: the migration holds an advisory lock)."""
    from alembic import command  # noqa: PLC0415 - only for migrating

    sqlite_file = sqlite_path(engine.url)
    if sqlite_file is not None:
        sqlite_file.parent.mkdir(parents=True, exist_ok=True)
    command.upgrade(alembic_config(engine), revision)


def sqlite_path(url: URL) -> Path | None:
    """The file of an SQLite URL; None for another database or an in-memory one."""
    if url.get_backend_name() != "sqlite" or not url.database or url.database == ":memory:":
        return None
    return Path(url.database)


def current_revision(engine: Engine) -> str | None:
    """The schema's Alembic revision, or None for a database never migrated."""
    sqlite_file = sqlite_path(engine.url)
    if sqlite_file is not None and not sqlite_file.exists():
        return None  # connecting would create it
    with engine.connect() as connection:
        try:
            row = connection.execute(text("SELECT version_num FROM alembic_version")).first()
        except Exception:  # no such table: never migrated
            return None
    return None if row is None else str(row[0])
