"""Request body limits: its size, enforced while it streams in, and its pace.

A declared ``Content-Length`` over the limit is answered 413 before a byte of the body
is read; a body without one (chunked) is counted as it arrives and refused as soon as
it passes the limit. Either way the upload is never held whole in memory or on disk.
(Starlette's own limiter answers in plain text; this one keeps the service's JSON
error format.)
"""

from __future__ import annotations

import asyncio
import logging

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.errors import ServiceError, error_response

log = logging.getLogger("service.limits")


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


class ClientGoneError(ServiceError):
    """The client closed the connection before its request was read (nginx's 499)."""

    def __init__(self) -> None:
        super().__init__(
            CLIENT_CLOSED_REQUEST,
            "client_closed_request",
            "The client closed the connection before sending the whole request.",
        )


#: nginx's status for a request its client abandoned; never sent, only counted.
CLIENT_CLOSED_REQUEST = 499


class BodyTimeoutError(ServiceError):
    def __init__(self, timeout_s: float) -> None:
        super().__init__(
            408,
            "request_timeout",
            f"The request body paused for more than {timeout_s:g} s "
            "(BONEFRAC_BODY_TIMEOUT_S); send it again.",
            headers={"Connection": "close"},
        )


class BodyDeadlineError(ServiceError):
    def __init__(self, deadline_s: float) -> None:
        super().__init__(
            408,
            "request_timeout",
            f"The request body took longer than {deadline_s:g} s to arrive "
            "(BONEFRAC_BODY_DEADLINE_S); send it again over a faster connection.",
            headers={"Connection": "close"},
        )


class ClientGuardMiddleware:
    """Pure ASGI middleware for the ways a client can fail while sending a body.

    - It pauses longer than ``body_timeout_s`` between two chunks: 408, and the
      connection is closed (uvicorn bounds nothing here; the header deadline is
      :mod:`service.server`'s).
    - Its whole body takes longer than ``body_deadline_s`` from the moment the request
      reached the app: 408 and closed as well. The pause limit alone let a body sent
      one byte every 29 s hold a connection (and a worker's buffers) for ever.
    - It disconnects: that is the client's doing, not a server error. Starlette would
      raise ``ClientDisconnect`` and the service count a 500 and log a traceback; here
      it becomes a 499 (as nginx logs it) that is counted in /metrics and logged in one
      INFO line. Nothing is sent: there is no one left to read it.
    """

    def __init__(self, app: ASGIApp, body_timeout_s: float, body_deadline_s: float) -> None:
        self.app = app
        self.body_timeout_s = body_timeout_s
        self.body_deadline_s = body_deadline_s

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False
        body_done = False
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.body_deadline_s

        async def guarded_receive() -> Message:
            nonlocal body_done
            if started or body_done:  # only a listener for disconnects reads from here on
                return await receive()
            pause_ends = loop.time() + self.body_timeout_s
            try:
                async with asyncio.timeout_at(min(pause_ends, deadline)):
                    message = await receive()
            except TimeoutError:
                whole = deadline <= pause_ends
                log.info(
                    "%s %s: body %s %g s; answered 408",
                    scope["method"],
                    scope["path"],
                    "took longer than" if whole else "paused over",
                    self.body_deadline_s if whole else self.body_timeout_s,
                )
                if whole:
                    raise BodyDeadlineError(self.body_deadline_s) from None
                raise BodyTimeoutError(self.body_timeout_s) from None
            if message["type"] == "http.disconnect":
                log.info(
                    "%s %s: client disconnected before sending the whole request (499)",
                    scope["method"],
                    scope["path"],
                )
                raise ClientGoneError
            body_done = not message.get("more_body", False)
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        await self.app(scope, guarded_receive, tracking_send)
