"""Running the app under uvicorn with a deadline for request headers.

uvicorn has no header timeout: its keep-alive timer runs only between requests, and
neither of its parsers bounds how long a request line and headers may take to arrive. So
200 clients sending their headers a byte at a time held 200 connections for as long as
they liked (still all open after 30 s). :func:`protocol_class` returns uvicorn's own
HTTP protocol with one timer added: from the moment a connection opens, or the first
byte of its next request arrives, the client has ``BONEFRAC_HEADER_TIMEOUT_S`` to finish
the request's headers, else the connection is closed. (A body that stalls is the app's
business: see :class:`service.limits.ClientGuardMiddleware`.)
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import uvicorn

from service.settings import Settings

log = logging.getLogger("service.server")


class HeaderTimeoutMixin:
    """Close a connection whose request headers do not arrive within ``header_timeout``.

    Works with either uvicorn protocol: both create a new ``self.cycle`` exactly when a
    request's headers are complete, so a changed ``cycle`` after parsing is the signal.
    """

    header_timeout: float = 10.0
    # attributes of uvicorn's protocols
    transport: asyncio.Transport
    loop: asyncio.AbstractEventLoop
    cycle: Any
    client: tuple[str, int] | None

    def connection_made(self, transport: asyncio.Transport) -> None:
        super().connection_made(transport)  # type: ignore[misc]
        self._header_timer: asyncio.TimerHandle | None = None
        self._seen_cycle: Any = None
        self._arm_header_timer()

    def data_received(self, data: bytes) -> None:
        cycle = self.cycle
        if self._header_timer is None and (cycle is None or cycle.response_complete):
            self._arm_header_timer()  # the first bytes of a new request
        super().data_received(data)  # type: ignore[misc]
        if self.cycle is not self._seen_cycle:  # the parser finished a request's headers
            self._seen_cycle = self.cycle
            self._disarm_header_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm_header_timer()
        super().connection_lost(exc)  # type: ignore[misc]

    def _arm_header_timer(self) -> None:
        self._header_timer = self.loop.call_later(self.header_timeout, self._headers_too_slow)

    def _disarm_header_timer(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _headers_too_slow(self) -> None:
        self._header_timer = None
        if not self.transport.is_closing():
            log.info(
                "closing connection from %s: request headers not complete within %.1f s "
                "(BONEFRAC_HEADER_TIMEOUT_S)",
                f"{self.client[0]}:{self.client[1]}" if self.client else "unknown client",
                self.header_timeout,
            )
            self.transport.close()


def protocol_class(settings: Settings) -> type[asyncio.Protocol]:
    """uvicorn's HTTP protocol (httptools when installed, as uvicorn picks) with the
    header deadline of ``settings``."""
    try:
        from uvicorn.protocols.http.httptools_impl import (  # noqa: PLC0415
            HttpToolsProtocol as Base,
        )
    except ImportError:  # httptools is optional in uvicorn
        from uvicorn.protocols.http.h11_impl import (  # type: ignore[assignment]  # noqa: PLC0415
            H11Protocol as Base,  # the same role under another class: a base to extend
        )
    return type(
        f"HeaderTimeout{Base.__name__}",
        (HeaderTimeoutMixin, Base),
        {"header_timeout": settings.header_timeout_s},
    )


def serve(app: Any, settings: Settings, *, host: str, port: int, log_level: str) -> None:
    """Run ``app`` under uvicorn until interrupted."""
    uvicorn.run(
        app,
        host=host,
        port=port,
        log_level=log_level,
        access_log=settings.access_log,
        http=protocol_class(settings),
    )
