"""Dependencies, as ``Annotated`` aliases so route signatures read like prose.

All are ``async def``: they only read app state, and a plain ``def`` dependency costs a
thread-pool hop per request. The two on the ``/predict`` path (the served model and the
API key check) read ``request.app.state`` directly rather than through further
dependencies: FastAPI re-solves every node of the tree on every request, and the
nested form cost about 80 us of the ~1 ms HTTP overhead the benchmark measures.

Everything comes from ``request.app.state`` (set by :func:`service.app.create_app`): no
module-level state, so two apps in one process (tests) never share a model.
"""

from __future__ import annotations

import secrets
from typing import Annotated

from fastapi import Depends, Request, Security
from fastapi.security import APIKeyHeader

from service.errors import ServiceError
from service.metrics import Metrics
from service.registry import LoadedModel, ModelRegistry, NoModelError
from service.settings import Settings

API_KEY_HEADER = "X-API-Key"

_api_key_scheme = APIKeyHeader(
    name=API_KEY_HEADER,
    auto_error=False,
    description="Required on prediction routes when BONEFRAC_API_KEY is set.",
)


async def get_settings(request: Request) -> Settings:
    return request.app.state.settings


async def get_registry(request: Request) -> ModelRegistry:
    return request.app.state.registry


async def get_metrics(request: Request) -> Metrics:
    return request.app.state.metrics


SettingsDep = Annotated[Settings, Depends(get_settings)]
RegistryDep = Annotated[ModelRegistry, Depends(get_registry)]
MetricsDep = Annotated[Metrics, Depends(get_metrics)]


def current_model(registry: ModelRegistry) -> LoadedModel:
    """The served model, or the 503 that says how to train one."""
    try:
        return registry.get()
    except NoModelError as exc:
        raise ServiceError(503, "model_unavailable", str(exc)) from exc


async def served_model(request: Request) -> LoadedModel:
    """The model this request uses throughout, taken once (a reload cannot split it)."""
    return current_model(request.app.state.registry)


ServedModelDep = Annotated[LoadedModel, Depends(served_model)]


async def require_api_key(
    request: Request, key: Annotated[str | None, Security(_api_key_scheme)]
) -> None:
    """401 unless the X-API-Key header matches BONEFRAC_API_KEY (when one is set)."""
    expected = request.app.state.settings.api_key
    if expected is None:
        return
    if key is None or not secrets.compare_digest(
        key.encode(), expected.get_secret_value().encode()
    ):
        raise ServiceError(
            401,
            "unauthorized",
            f"A valid API key is required in the {API_KEY_HEADER} header.",
            headers={"WWW-Authenticate": "ApiKey"},
        )


ApiKeyChecked = Depends(require_api_key)
