"""Giving freed memory back to the operating system after large decodes.

A large image is decoded in a worker thread; its buffers are freed when the answer is
sent, but glibc keeps freed memory in each thread's arena (and raises its mmap
threshold after freeing a large block, so the next large block comes from an arena
too). After a burst of large and hostile images the service's resident memory stayed
at 553 MiB (from 180) for good. ``malloc_trim(0)`` hands the free pages of every arena
back; it is called from a worker thread every ``BONEFRAC_MEMORY_TRIM_INTERVAL_S``,
when at least one request has finished since the last call (an idle service pays
nothing). Other C libraries have no such call, and nothing is done there.
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import logging
from collections.abc import Callable

from anyio import to_thread
from prometheus_client import Counter

log = logging.getLogger("service.memory")


def libc_malloc_trim() -> Callable[[], object] | None:
    """glibc's ``malloc_trim(0)`` as a callable, or None where there is none."""
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    try:
        trim = ctypes.CDLL(name).malloc_trim
    except (OSError, AttributeError):  # not glibc (musl, macOS)
        return None
    trim.argtypes = [ctypes.c_size_t]
    trim.restype = ctypes.c_int
    return lambda: trim(0)


async def trim_periodically(
    interval_s: float, activity: Callable[[], float], trim: Callable[[], object]
) -> None:
    """Call ``trim`` in a worker thread every ``interval_s`` when ``activity`` (a count of
    finished requests) has moved since the last call."""
    seen = activity()
    while True:
        await asyncio.sleep(interval_s)
        now = activity()
        if now == seen:
            continue
        seen = now
        try:
            await to_thread.run_sync(trim)
        except Exception:  # never let the trimmer end the service
            log.exception("returning freed memory failed")


def finished_requests(requests: Counter) -> float:
    """All requests a labelled counter has counted, whatever their labels."""
    return sum(
        sample.value
        for metric in requests.collect()
        for sample in metric.samples
        if sample.name.endswith("_total")
    )
