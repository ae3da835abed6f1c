"""The application factory and its lifespan (model loading and the reload poll).

``create_app(settings)`` builds a fresh app and does no I/O; the lifespan loads and warms
the model once, before the app reports ready, and starts the background poll that picks
up newer versions. Nothing is global: each app owns its settings, registry and metrics.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress

from anyio import to_thread
from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service import api, tfserving
from service.auth import ApiKeyMiddleware
from service.docs import install_docs
from service.errors import install_error_handlers
from service.limits import BodySizeLimitMiddleware, ClientGuardMiddleware
from service.memory import finished_requests, libc_malloc_trim, trim_periodically
from service.metrics import Metrics, MetricsMiddleware
from service.probes import HeadProbeMiddleware
from service.records import routes as records_routes
from service.records.recorder import Records
from service.registry import ModelRegistry
from service.schemas import ErrorResponse
from service.settings import Settings
from service.threads import make_executor

log = logging.getLogger("service.app")

DESCRIPTION = """\
Classifies bone-fracture radiographs with the model the `trainer` exports to
`models/<name>/<version>/`. Upload an image to `POST /predict`; every error has the
shape `{"error": {"code": ..., "message": ...}}`. TF Serving clients can use
`POST /v1/models/{name}:predict` unchanged.
"""


REPLICA_HEADER = "X-Bonefrac-Replica"


class ReplicaHeaderMiddleware:
    """Adds ``X-Bonefrac-Replica: <replica_id>`` to every HTTP answer.

    Behind a load balancer (Compose DNS, a Kubernetes Service) a client cannot otherwise
    tell which replica answered; the header lets it see the spread and lets logs be
    matched to a pod. Plain ASGI, outermost of the middlewares we add, so early answers
    (401, 413) carry it too and no request pays for a BaseHTTPMiddleware task. The one
    answer without it: the 500 of an unhandled error, which Starlette's own error
    middleware sends from outside every added middleware.
    """

    def __init__(self, app: ASGIApp, replica_id: str) -> None:
        self.app = app
        self.header = (REPLICA_HEADER.lower().encode("latin-1"), replica_id.encode("latin-1"))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_header(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), self.header]
            await send(message)

        await self.app(scope, receive, send_with_header)


async def _poll_for_versions(registry: ModelRegistry, interval_s: float) -> None:
    """Check for a newer version every ``interval_s``; a failure never stops the poll."""
    while True:
        await asyncio.sleep(interval_s)
        try:
            await to_thread.run_sync(registry.refresh)
        except Exception:  # keep serving whatever happens on disk
            log.exception("checking %s for new versions failed", registry.models_dir)


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    """Load and warm the model before serving; poll for new versions while serving."""
    settings: Settings = app.state.settings
    registry: ModelRegistry = app.state.registry
    app.state.executor = make_executor(settings.interpreters)
    records: Records = app.state.records
    await to_thread.run_sync(records.start)  # migrates; a database down is not fatal
    await to_thread.run_sync(registry.refresh)
    if registry.current is None:
        log.warning("%s", registry.missing_message())
    background: list[asyncio.Task[None]] = []
    if settings.reload_interval_s > 0:
        poll = _poll_for_versions(registry, settings.reload_interval_s)
        background.append(asyncio.create_task(poll))
    trim = libc_malloc_trim()
    if settings.memory_trim_interval_s > 0 and trim is not None:
        requests = app.state.metrics.requests
        trimmer = trim_periodically(
            settings.memory_trim_interval_s, lambda: finished_requests(requests), trim
        )
        background.append(asyncio.create_task(trimmer))
    try:
        yield
    finally:
        for task in background:
            task.cancel()
            with suppress(asyncio.CancelledError):
                await task
        app.state.executor.shutdown(wait=False, cancel_futures=True)
        await to_thread.run_sync(records.close)  # writes what the log still holds


def create_app(settings: Settings | None = None) -> FastAPI:
    """A new app serving ``settings.model_name`` from ``settings.models_dir``."""
    settings = settings or Settings()
    metrics = Metrics()
    registry = ModelRegistry(
        settings, on_load=lambda outcome, _version: metrics.reloads.labels(outcome).inc()
    )
    app = FastAPI(
        title="bonefrac inference service",
        summary="Bone-fracture X-ray classifier",
        description=DESCRIPTION,
        version="0.1.0",
        lifespan=lifespan,
        # FastAPI's native OpenTelemetry hooks stay off: /metrics already counts requests
        # and the per-request check is part of the HTTP overhead the benchmark measures.
        telemetry={"tracing": False, "metrics": False, "logs": False},
        responses={500: {"model": ErrorResponse, "description": "Unexpected server error"}},
        docs_url=None,  # install_docs serves both pages from local files
        redoc_url=None,
    )
    app.state.settings = settings
    app.state.registry = registry
    app.state.metrics = metrics
    app.state.records = Records(settings, metrics.registry)
    install_error_handlers(app)
    # The middleware added last runs first: CORS outermost, so that early answers (a 413
    # from the size limit, a 401) carry CORS headers too and browsers can read them;
    # metrics next, so they count those early answers; then the key, before any body.
    app.add_middleware(HeadProbeMiddleware)  # innermost: metrics count HEAD as HEAD
    app.add_middleware(BodySizeLimitMiddleware, max_bytes=settings.max_upload_bytes)
    app.add_middleware(
        ClientGuardMiddleware,
        body_timeout_s=settings.body_timeout_s,
        body_deadline_s=settings.body_deadline_s,
    )
    if settings.api_key is not None:
        app.add_middleware(ApiKeyMiddleware, key=settings.api_key.get_secret_value())
    app.add_middleware(MetricsMiddleware, metrics=metrics)
    if settings.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_origins,
            allow_methods=["GET", "POST"],
            allow_headers=["*"],
            expose_headers=[REPLICA_HEADER],
        )
    app.add_middleware(ReplicaHeaderMiddleware, replica_id=settings.replica_id)
    app.include_router(api.router)
    app.include_router(tfserving.router)
    app.include_router(records_routes.router)
    install_docs(app)
    return app
