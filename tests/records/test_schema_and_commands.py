"""The schema Alembic builds is the one the code declares; migrate and purge commands."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from support.records_standins import png

from service.records import cli
from service.records.db import alembic_config, current_revision, make_engine, migrate, resolve_url
from service.records.log import purge_images
from service.records.reviews import count_rows
from service.records.tables import Base


def test_migrations_build_the_declared_schema(tmp_path: Path, database_url: str | None) -> None:
    engine = make_engine(resolve_url(tmp_path / "records", database_url))
    assert current_revision(engine) is None
    migrate(engine)
    migrate(engine)  # again: nothing to do
    assert current_revision(engine) == "0001"
    with engine.connect() as connection:
        assert compare_metadata(MigrationContext.configure(connection), Base.metadata) == []
    command.downgrade(alembic_config(engine), "base")  # the downgrade works too
    assert current_revision(engine) is None
    engine.dispose()


def test_migrate_command(
    tmp_path: Path, database_url: str | None, monkeypatch: pytest.MonkeyPatch, capsys: Any
) -> None:
    monkeypatch.setenv("BONEFRAC_RECORDS_DIR", str(tmp_path / "records"))
    if database_url:
        monkeypatch.setenv("BONEFRAC_DATABASE_URL", database_url)
    else:
        monkeypatch.delenv("BONEFRAC_DATABASE_URL", raising=False)
    assert cli.main(["migrate"]) == 0
    out = capsys.readouterr().out
    assert "at revision 0001" in out
    if database_url:
        monkeypatch.setenv(
            "BONEFRAC_DATABASE_URL", database_url.replace("postgres@", "postgres:pw@")
        )
        assert cli.main(["migrate"]) == 0
        assert "postgres:***@" in capsys.readouterr().out  # a password is never printed


def test_purge_deletes_only_old_images(
    start_app: Callable, monkeypatch: pytest.MonkeyPatch, capsys: Any
) -> None:
    client = start_app(store_images=True)
    records = client.app.state.records
    client.post("/predict", files={"file": ("a.png", png(100), "image/png")})
    assert records.log.flush(timeout=30)
    assert count_rows(records.engine) == (1, 0, 1)

    settings = records.settings
    monkeypatch.setenv("BONEFRAC_RECORDS_DIR", str(settings.records_dir))
    if settings.database_url is not None:
        monkeypatch.setenv("BONEFRAC_DATABASE_URL", settings.database_url.get_secret_value())
    assert cli.main(["purge-images", "--days", "1"]) == 0
    assert "purged 0 image(s)" in capsys.readouterr().out
    assert count_rows(records.engine) == (1, 0, 1)

    later = dt.datetime.now(dt.UTC) + dt.timedelta(days=2)
    assert purge_images(records.engine, 1, now=later) == 1
    assert count_rows(records.engine) == (1, 0, 0)  # the answer's record stays
