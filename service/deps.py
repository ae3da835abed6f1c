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

from typing import Annotated

from fastapi import Depends, Request, Security
from fastapi.security import APIKeyHeader

from service.auth import API_KEY_HEADER
from service.errors import ServiceError
from service.metrics import Metrics
from service.registry import LoadedModel, ModelRegistry, NoModelError
from service.settings import Settings

_api_key_scheme = APIKeyHeader(
    name=API_KEY_HEADER,
    auto_error=False,
    description="Required on every route but /healthz and /readyz when BONEFRAC_API_KEY is set.",
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


async def require_api_key(key: Annotated[str | None, Security(_api_key_scheme)]) -> None:
    """Declares the key in OpenAPI; :class:`service.auth.ApiKeyMiddleware` checks it,
    for every route but the health probes and before the body is read."""


ApiKeyChecked = Depends(require_api_key)
