"""Requests that wait while the model runs are run together, as one batch.

OpenVINO runs a batch of four radiographs in less time than four single ones
(``benchmarks/model_speed.py``), so under concurrent load the service is faster when the
images that queued up during one inference go through the next as a batch. Nothing waits
for a batch to fill: a request that arrives while the model is idle runs at once, alone,
so one client sees no added latency (unlike a timed batcher such as Triton's, which holds
each request for up to its queue delay).

There is no worker thread (nothing to stop when a version is replaced): the first
waiting request's own thread runs the batch (the *leader*) and, once its own answer is
in, hands the lead to the oldest request still waiting, whose thread runs the next batch.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

import numpy as np

from service.runtime import OUTPUT_NAME, Predictor


@dataclass
class _Waiting:
    """One call of :meth:`BatchingPredictor.run` waiting for its rows."""

    images: np.ndarray
    woken: threading.Event = field(default_factory=threading.Event)
    lead: bool = False  # set (before ``woken``) when this call must run the next batch
    outputs: dict[str, np.ndarray] | None = None
    error: BaseException | None = None


class BatchingPredictor:
    """A :class:`~service.runtime.Predictor` that batches concurrent calls of another.

    ``max_batch`` bounds the images of one batch (a call with more images than that runs
    alone). The wrapped predictor is only ever called by one thread at a time.
    """

    def __init__(self, inner: Predictor, max_batch: int) -> None:
        self.inner = inner
        self.runtime = inner.runtime
        self.input_shape = inner.input_shape
        self.max_batch = max(1, max_batch)
        self._lock = threading.Lock()
        self._queue: list[_Waiting] = []
        self._busy = False  # a leader is running a batch
        #: batches that merged more than one call (what the tests watch)
        self.merged_batches = 0

    def waiting(self) -> int:
        """Calls queued behind the running batch."""
        with self._lock:
            return len(self._queue)

    def run(self, images: np.ndarray) -> dict[str, np.ndarray]:
        me = _Waiting(images)
        with self._lock:
            self._queue.append(me)
            leads = not self._busy
            if leads:
                self._busy = True
                me.lead = True
        if not leads:
            me.woken.wait()
        if me.lead:
            self._lead(me)
        if me.error is not None:
            raise me.error
        assert me.outputs is not None
        return me.outputs

    def predict(self, images: np.ndarray) -> np.ndarray:
        return self.run(images)[OUTPUT_NAME]

    def _take(self) -> list[_Waiting]:
        """The oldest waiting calls whose images fit in one batch (at least one call)."""
        batch = [self._queue.pop(0)]
        size = len(batch[0].images)
        while self._queue and size + len(self._queue[0].images) <= self.max_batch:
            size += len(self._queue[0].images)
            batch.append(self._queue.pop(0))
        return batch

    def _lead(self, me: _Waiting) -> None:
        """Run batches until this call's own answer is in, then pass the lead on."""
        while me.outputs is None and me.error is None:
            with self._lock:
                batch = self._take()
            self._run(batch)
        with self._lock:
            if self._queue:
                successor = self._queue[0]
                successor.lead = True
                successor.woken.set()
            else:
                self._busy = False

    def _run(self, batch: list[_Waiting]) -> None:
        try:
            if len(batch) == 1:
                batch[0].outputs = self.inner.run(batch[0].images)
            else:
                outputs = self.inner.run(np.concatenate([w.images for w in batch]))
                self.merged_batches += 1
                start = 0
                for waiting in batch:
                    stop = start + len(waiting.images)
                    waiting.outputs = {name: rows[start:stop] for name, rows in outputs.items()}
                    start = stop
        except BaseException as exc:  # every caller of the batch hears of the failure
            for waiting in batch:
                waiting.error = exc
        for waiting in batch:
            waiting.woken.set()
