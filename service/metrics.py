"""Prometheus metrics, one registry per app (no process-global state).

``/metrics`` shows requests by route and status, a latency histogram by route,
predictions by class and the served version. The route label is the route's template
(``/v1/models/{name}:predict``), never the raw path, so label cardinality stays bounded.
"""

from __future__ import annotations

import time

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from starlette.types import ASGIApp, Message, Receive, Scope, Send

#: Latency buckets (seconds) around the few-millisecond cost of one prediction.
LATENCY_BUCKETS = (0.002, 0.004, 0.006, 0.008, 0.01, 0.015, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5)


class Metrics:
    """The service's instruments, registered on a private :class:`CollectorRegistry`."""

    content_type = CONTENT_TYPE_LATEST

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter(
            "bonefrac_http_requests",
            "HTTP requests by route, method and status code.",
            ("route", "method", "status"),
            registry=self.registry,
        )
        self.latency = Histogram(
            "bonefrac_http_request_duration_seconds",
            "Time from request received to response sent, by route.",
            ("route",),
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.predictions = Counter(
            "bonefrac_predictions",
            "Images classified, by top label.",
            ("label",),
            registry=self.registry,
        )
        self.model_version = Gauge(
            "bonefrac_model_version",
            "Version of the model being served (0: none).",
            ("model",),
            registry=self.registry,
        )
        self.reloads = Counter(
            "bonefrac_model_loads",
            "Attempts to load a model version, by outcome (loaded or refused).",
            ("outcome",),
            registry=self.registry,
        )

    def render(self) -> bytes:
        return generate_latest(self.registry)


class MetricsMiddleware:
    """Pure ASGI middleware timing every HTTP request (cheaper than BaseHTTPMiddleware)."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500

        async def send_wrapper(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            route = scope.get("route")
            template = getattr(route, "path", None) or "unmatched"
            self.metrics.requests.labels(template, scope["method"], str(status)).inc()
            self.metrics.latency.labels(template).observe(time.perf_counter() - start)
