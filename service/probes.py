"""``HEAD`` on the health probes, answered as ``GET`` without a body.

Load balancers (HAProxy's default ``option httpchk``, some cloud health checks) probe
with ``HEAD``; FastAPI routes declared for ``GET`` answer it 405, so the replica was
marked down. Here a ``HEAD`` of a probe path runs the ``GET`` route and sends its status
and headers (``Content-Length`` included, as RFC 9110 allows) with an empty body, in
process, whatever server runs the app. Other routes keep answering ``HEAD`` with 405.
"""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.auth import OPEN_PATHS


class HeadProbeMiddleware:
    """Pure ASGI: ``HEAD`` of a path in ``OPEN_PATHS`` (the probes) becomes a bodiless ``GET``."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "HEAD" or scope["path"] not in OPEN_PATHS:
            await self.app(scope, receive, send)
            return

        async def send_without_body(message: Message) -> None:
            if message["type"] == "http.response.body":
                if message.get("more_body", False):
                    return  # dropped: only the last (empty) body message is sent
                message = {"type": "http.response.body", "body": b"", "more_body": False}
            await send(message)

        as_get = {**scope, "method": "GET"}
        try:
            await self.app(as_get, receive, send_without_body)
        finally:  # the router notes the matched route in the scope: metrics label by it
            if "route" in as_get:
                scope["route"] = as_get["route"]
