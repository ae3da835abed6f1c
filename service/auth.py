"""The API key, checked for every route but the health probes, before anything else.

A pure ASGI middleware rather than a route dependency, for two reasons: FastAPI's own
pages (``/docs``, ``/redoc``, ``/openapi.json``) take no dependencies, and a dependency
runs only after FastAPI has read and parsed the body, so a TF Serving request with bad
JSON and no key got a 400 instead of a 401. Here a request without the key is answered
401 before a byte of its body is read.
"""

from __future__ import annotations

import secrets

from starlette.types import ASGIApp, Receive, Scope, Send

from service.errors import ServiceError, error_response

API_KEY_HEADER = "X-API-Key"
#: Routes a load balancer or orchestrator must reach without a key.
OPEN_PATHS = frozenset({"/healthz", "/readyz"})

_HEADER = API_KEY_HEADER.lower().encode()


class UnauthorizedError(ServiceError):
    def __init__(self) -> None:
        super().__init__(
            401,
            "unauthorized",
            f"A valid API key is required in the {API_KEY_HEADER} header.",
            headers={"WWW-Authenticate": "ApiKey"},
        )


class ApiKeyMiddleware:
    """401 for any HTTP request but the health probes whose X-API-Key is not ``key``."""

    def __init__(self, app: ASGIApp, key: str) -> None:
        self.app = app
        self.key = key.encode()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in OPEN_PATHS or self._valid(scope):
            await self.app(scope, receive, send)
            return
        await error_response(UnauthorizedError())(scope, receive, send)

    def _valid(self, scope: Scope) -> bool:
        for name, value in scope["headers"]:
            if name == _HEADER:
                return secrets.compare_digest(value, self.key)
        return False
