"""Fixtures for the service tests: settings, running apps, and encoded test images."""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from support.sample_images import encode

from service.app import create_app
from service.settings import Settings

with warnings.catch_warnings():
    # Starlette asks for the httpx2 package; the plain httpx of the dev extra still works.
    warnings.filterwarnings("ignore", message="Using `httpx` with `starlette.testclient`")
    from fastapi.testclient import TestClient

MODEL_NAME = "bone-fracture"


@pytest.fixture
def png() -> bytes:
    return encode("PNG")


@pytest.fixture
def make_settings() -> Callable[..., Settings]:
    """Settings independent of the caller's environment; reload off unless asked."""

    def make(models_dir: Path, **overrides: Any) -> Settings:
        values: dict[str, Any] = {
            "models_dir": models_dir,
            "model_name": MODEL_NAME,
            "model_version": None,
            "reload_interval_s": 0,
            "api_key": None,
            "cors_origins": [],
        }
        values.update(overrides)
        return Settings(**values)

    return make


@pytest.fixture
def serve(make_settings: Callable[..., Settings]) -> Iterator[Callable[..., TestClient]]:
    """Start apps (lifespan included) with chosen settings; all are closed afterwards."""
    clients: list[TestClient] = []

    def start(
        models_dir: Path, *, raise_server_exceptions: bool = True, **overrides: Any
    ) -> TestClient:
        client = TestClient(
            create_app(make_settings(models_dir, **overrides)),
            raise_server_exceptions=raise_server_exceptions,
        )
        client.__enter__()
        clients.append(client)
        return client

    yield start
    for client in reversed(clients):
        client.__exit__(None, None, None)


@pytest.fixture
def client(tiny_models_dir: Path, make_settings: Callable[..., Settings]) -> Iterator[TestClient]:
    """The service over the session's tiny model, as a context-managed TestClient."""
    with TestClient(create_app(make_settings(tiny_models_dir))) as c:
        yield c


@pytest.fixture
def radiograph(radiograph_file: Path) -> bytes:
    """The session's radiograph (real when present, else a stand-in) as uploaded bytes."""
    return radiograph_file.read_bytes()
