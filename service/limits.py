"""Request body size limit, enforced while the body streams in.

A declared ``Content-Length`` over the limit is answered 413 before a byte of the body
is read; a body without one (chunked) is counted as it arrives and refused as soon as
it passes the limit. Either way the upload is never held whole in memory or on disk.
(Starlette's own limiter answers in plain text; this one keeps the service's JSON
error format.)
"""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.errors import ServiceError, error_response


class BodyTooLargeError(ServiceError):
    def __init__(self, limit: int) -> None:
        super().__init__(
            413,
            "payload_too_large",
            f"The request body is over the {limit}-byte limit (BONEFRAC_MAX_UPLOAD_BYTES).",
        )


class BodySizeLimitMiddleware:
    """Pure ASGI middleware: 413 for bodies over ``max_bytes``, counted as streamed."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = _content_length(scope)
        if declared is not None:
            if declared > self.max_bytes:
                await error_response(BodyTooLargeError(self.max_bytes))(scope, receive, send)
                return
            # The server never hands the app more than Content-Length bytes, so a body
            # declared within the limit needs no counting (the common, fast path).
            await self.app(scope, receive, send)
            return

        received = 0
        started = False

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise BodyTooLargeError(self.max_bytes)
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, limited_receive, tracking_send)
        except BodyTooLargeError as exc:  # raised outside a route's own error handling
            if started:
                raise
            await error_response(exc)(scope, receive, send)


def _content_length(scope: Scope) -> int | None:
    for name, value in scope["headers"]:
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None
