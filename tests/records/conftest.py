"""Fixtures of the records tests: one database per test, SQLite or PostgreSQL, and an
app serving a stand-in model (no TensorFlow, no export: the records do not care what
computed the probabilities).

Every test that takes ``database_url`` runs twice: against SQLite in a temporary folder,
and against a database of its own on a throw-away PostgreSQL server (``postgres.py``),
started once per session.
"""

from __future__ import annotations

import datetime as dt
import uuid
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from postgres import PostgresServer, remove, start_server

from modelio.images import InputSpec
from service.app import create_app
from service.registry import LoadedModel
from service.settings import Settings

with warnings.catch_warnings():
    warnings.filterwarnings("ignore", message="Using `httpx` with `starlette.testclient`")
    from fastapi.testclient import TestClient

CLASSES = ("Avulsion fracture", "Comminuted fracture", "Greenstick fracture", "Spiral Fracture")
MODEL_NAME = "bone-fracture"
#: metadata.fracture of the stand-in: below 0.3 no_fracture, from 0.7 fracture.
RULES = {
    "rule_out": {"threshold": 0.3, "sensitivity": 0.95, "specificity": 0.5},
    "rule_in": {"threshold": 0.7, "sensitivity": 0.6, "specificity": 0.95},
    "region_threshold": 0.5,
    "measured_on": "stand-in",
}


class StandInPredictor:
    """Outputs from the image's mean brightness: different images, different answers; a
    bright image is a fracture (from 0.7 * 255), a dark one none (below 0.3 * 255) and
    unfamiliar (below 30)."""

    runtime = "stand-in"
    input_shape = (16, 16, 1)

    def run(self, images: np.ndarray) -> dict[str, np.ndarray]:
        means = images.reshape(len(images), -1).mean(axis=1) / 255.0
        logits = np.stack([means * (i + 1) * 4 for i in range(len(CLASSES))], axis=1)
        probabilities = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
        ood = np.where(means < 30 / 255.0, 2.5, 0.3).astype(np.float32)
        return {
            "probabilities": probabilities.astype(np.float32),
            "ood_score": ood,
            "fracture_probability": means.astype(np.float32),  # bright: a fracture
        }

    def predict(self, images: np.ndarray) -> np.ndarray:
        return self.run(images)["probabilities"]


def stand_in_model(version: int = 1) -> LoadedModel:
    return LoadedModel(
        name=MODEL_NAME,
        version=version,
        path=Path("models") / MODEL_NAME / str(version),
        metadata={"classes": list(CLASSES), "trained_on": "stand-in", "fracture": RULES},
        classes=CLASSES,
        spec=InputSpec(16, 16, 1),
        predictor=StandInPredictor(),
        loaded_at=dt.datetime.now(dt.UTC),
        load_seconds=0.0,
    )


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
