"""Freed memory goes back to the operating system after requests (issue 18, item 10).

The amount is measured by ``benchmarks/hostile_burst.py --mix`` (a burst of large valid
and hostile images, then idle); here: the service does call the trim once requests have
finished, not while idle, and never dies of it.
"""

from __future__ import annotations

import threading

import anyio
import pytest
from support.sample_images import encode, upload

import service.app
from service.memory import libc_malloc_trim, trim_periodically

#: How long a test waits for the trimmer before failing (a hang guard, not a timing).
PATIENCE_S = 30


def test_the_service_trims_after_requests_finish(serve, tiny_models_dir, monkeypatch):
    trimmed = threading.Event()
    monkeypatch.setattr(service.app, "libc_malloc_trim", lambda: trimmed.set)
    client = serve(tiny_models_dir, memory_trim_interval_s=0.01)

    assert client.post("/predict", files=upload(encode("PNG"))).status_code == 200

    assert trimmed.wait(PATIENCE_S), "no trim after a request"


def test_no_trim_while_nothing_happens_and_a_failing_trim_is_survived() -> None:
    calls: list[int] = []
    activity = [0.0]

    def trim() -> None:
        calls.append(len(calls))
        if len(calls) == 1:
            raise OSError("the allocator refused")

    async def main() -> None:
        async with anyio.create_task_group() as group:
            group.start_soon(trim_periodically, 0, lambda: activity[0], trim)
            for _ in range(50):
                await anyio.sleep(0)
            assert calls == []  # idle: nothing to hand back
            for expected in (1, 2):
                activity[0] += 1
                with anyio.fail_after(PATIENCE_S):
                    while len(calls) < expected:
                        await anyio.sleep(0)
            group.cancel_scope.cancel()

    anyio.run(main)
    assert len(calls) == 2  # the first call failed, the loop went on


def test_glibc_has_the_trim() -> None:
    trim = libc_malloc_trim()
    if trim is None:
        pytest.skip("not glibc")
    assert trim() in (0, 1)
