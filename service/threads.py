"""Running blocking work (decode, resize, model) off the event loop.

All of it goes through one :class:`anyio.CapacityLimiter` per app, sized to the number
of interpreters plus one, so a burst of uploads queues here instead of starting dozens
of threads that fight over two cores; one extra slot lets the next image decode while
the model runs.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

import anyio
from anyio import to_thread
from fastapi import Request

T = TypeVar("T")


def make_limiter(interpreters: int) -> anyio.CapacityLimiter:
    """Create inside the running event loop (the lifespan)."""
    return anyio.CapacityLimiter(interpreters + 1)


async def run_blocking(request: Request, func: Callable[[], T]) -> T:
    limiter: anyio.CapacityLimiter | None = getattr(request.app.state, "limiter", None)
    return await to_thread.run_sync(func, limiter=limiter)
