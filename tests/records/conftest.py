"""Fixtures of the records tests: one database per test, SQLite or PostgreSQL, and an
app serving a stand-in model (no TensorFlow, no export: the records do not care what
computed the probabilities).

Every test that takes ``database_url`` runs twice: against SQLite in a temporary folder,
and against a database of its own on a throw-away PostgreSQL server (``tests/support/postgres.py``),
started once per session.
"""

from __future__ import annotations

import uuid
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from support.postgres import PostgresServer, remove, start_server
from support.records_standins import MODEL_NAME, stand_in_model

from service.app import create_app
from service.settings import Settings

with warnings.catch_warnings():
    warnings.filterwarnings("ignore", message="Using `httpx` with `starlette.testclient`")
    from fastapi.testclient import TestClient


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    server = start_server()
    try:
        yield server
    finally:
        remove(server)


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str | None:
    """None (SQLite in the test's records folder) or a fresh PostgreSQL database."""
    if request.param == "sqlite":
        return None
    server: PostgresServer = request.getfixturevalue("postgres_server")
    return server.create_database(f"t_{uuid.uuid4().hex[:12]}")


@pytest.fixture
def records_settings(tmp_path: Path, database_url: str | None) -> Callable[..., Settings]:
    """Settings for an app on this test's database; overrides by keyword."""

    def make(**overrides: Any) -> Settings:
        values: dict[str, Any] = {
            "models_dir": tmp_path / "models",
            "model_name": MODEL_NAME,
            "model_version": None,
            "reload_interval_s": 0,
            "api_key": None,
            "cors_origins": [],
            "records_dir": tmp_path / "records",
            "database_url": database_url,
            "prediction_log": True,
            "store_images": False,
            "store_filenames": False,
            "reviewer_key": None,
            "replica_id": "test-replica",
        }
        values.update(overrides)
        return Settings(**values)

    return make


@pytest.fixture
def start_app(records_settings: Callable[..., Settings]) -> Iterator[Callable[..., TestClient]]:
    """Start an app (lifespan included) serving the stand-in model; closed afterwards."""
    clients: list[TestClient] = []

    def start(**overrides: Any) -> TestClient:
        client = TestClient(create_app(records_settings(**overrides)))
        client.__enter__()
        client.app.state.registry.current = stand_in_model()  # type: ignore[attr-defined]
        clients.append(client)
        return client

    yield start
    for client in reversed(clients):
        client.__exit__(None, None, None)
