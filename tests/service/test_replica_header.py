"""Every answer names the replica that served it (``X-Bonefrac-Replica``), so a client
behind Compose DNS or a Kubernetes Service can see how its requests spread."""

from __future__ import annotations

import socket
from collections.abc import Callable
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from pydantic import ValidationError

from service.app import REPLICA_HEADER
from service.settings import Settings


@pytest.fixture
def empty_models(tmp_path: Path) -> Path:
    """No model: the service starts and answers, just not ready (fast, no training)."""
    models = tmp_path / "models"
    models.mkdir()
    return models


def test_every_answer_carries_the_replica_id(
    serve: Callable[..., TestClient], empty_models: Path
) -> None:
    client = serve(empty_models, replica_id="service-2")
    answers = {
        "healthz": client.get("/healthz"),
        "readyz": client.get("/readyz"),  # 503 without a model
        "missing route": client.get("/no-such-route"),
        "predict without a model": client.post("/predict", files={"file": ("x.png", b"x")}),
    }
    assert answers["healthz"].status_code == 200
    assert answers["readyz"].status_code == 503
    assert answers["missing route"].status_code == 404
    for name, answer in answers.items():
        assert answer.headers.get(REPLICA_HEADER) == "service-2", name
        assert len(answer.headers.get_list(REPLICA_HEADER)) == 1, name


def test_early_refusals_carry_it_too(serve: Callable[..., TestClient], empty_models: Path) -> None:
    client = serve(empty_models, replica_id="pod-abc", api_key="secret", max_upload_bytes=1024)
    refused = client.get("/models")
    assert refused.status_code == 401
    assert refused.headers[REPLICA_HEADER] == "pod-abc"
    too_big = client.post(
        "/predict", content=b"x" * 4096, headers={"X-API-Key": "secret", "Content-Type": "x/y"}
    )
    assert too_big.status_code == 413
    assert too_big.headers[REPLICA_HEADER] == "pod-abc"


def test_browsers_may_read_it_across_origins(
    serve: Callable[..., TestClient], empty_models: Path
) -> None:
    client = serve(empty_models, replica_id="r1", cors_origins=["http://page.example"])
    answer = client.get("/healthz", headers={"Origin": "http://page.example"})
    assert answer.headers["access-control-allow-origin"] == "http://page.example"
    exposed = answer.headers["access-control-expose-headers"].lower()
    assert REPLICA_HEADER.lower() in exposed


def test_default_is_the_hostname_and_the_environment_overrides_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("BONEFRAC_REPLICA_ID", raising=False)
    assert Settings().replica_id == socket.gethostname()
    monkeypatch.setenv("BONEFRAC_REPLICA_ID", "bonefrac-service-3")
    assert Settings().replica_id == "bonefrac-service-3"


@pytest.mark.parametrize("bad", ["", "two words", "caf\u00e9", "x" * 254])
def test_ids_that_cannot_be_a_header_value_are_refused(bad: str) -> None:
    with pytest.raises(ValidationError, match="replica_id"):
        Settings(replica_id=bad)
