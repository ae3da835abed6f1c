"""Requests that queue while the model runs go through it together, each getting its rows.

The stand-in model blocks its first call until the test lets it go, so which calls queue
behind it is decided by events, not by timing.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import numpy as np
import pytest

from service.batching import BatchingPredictor
from service.runtime import OUTPUT_NAME

WAIT_S = 30.0  # only ever reached when something is broken


class HeldModel:
    """Doubles its input; the first call waits for ``release``; fails when asked."""

    runtime = "stand-in"
    input_shape = (2, 2, 1)

    def __init__(self, fail_call: int | None = None) -> None:
        self.sizes: list[int] = []
        self.started = threading.Event()
        self.release = threading.Event()
        self.fail_call = fail_call
        self._concurrent = 0
        self.most_at_once = 0
        self._lock = threading.Lock()

    def run(self, images: np.ndarray) -> dict[str, np.ndarray]:
        with self._lock:
            self._concurrent += 1
            self.most_at_once = max(self.most_at_once, self._concurrent)
            self.sizes.append(len(images))
            call = len(self.sizes)
        try:
            if call == 1:
                self.started.set()
                assert self.release.wait(WAIT_S)
            if call == self.fail_call:
                raise RuntimeError("the model failed")
            return {OUTPUT_NAME: images.reshape(len(images), -1) * 2.0}
        finally:
            with self._lock:
                self._concurrent -= 1

    def predict(self, images: np.ndarray) -> np.ndarray:
        return self.run(images)[OUTPUT_NAME]


def image(value: float, count: int = 1) -> np.ndarray:
    return np.full((count, 2, 2, 1), value, np.float32)


def until(condition: Callable[[], bool]) -> None:
    deadline = time.monotonic() + WAIT_S
    while not condition():
        assert time.monotonic() < deadline, "the calls never queued"
        time.sleep(0.001)


def run_behind_a_held_call(
    model: HeldModel, batcher: BatchingPredictor, followers: list[np.ndarray]
) -> tuple[dict[int, object], np.ndarray]:
    """A first call holds the model; ``followers`` queue behind it; then it is released.

    Returns each follower's result (or exception) by index, and the first call's output.
    """
    results: dict[int, object] = {}
    first: dict[str, np.ndarray] = {}

    def call(index: int, images: np.ndarray) -> None:
        try:
            results[index] = batcher.predict(images)
        except RuntimeError as exc:
            results[index] = exc

    leader = threading.Thread(target=lambda: first.update(batcher.run(image(-1.0))))
    leader.start()
    assert model.started.wait(WAIT_S)
    threads = []
    for index, images in enumerate(followers):
        threads.append(threading.Thread(target=call, args=(index, images)))
        threads[-1].start()
        until(lambda n=index + 1: batcher.waiting() == n)  # queued in this order
    model.release.set()
    for thread in [leader, *threads]:
        thread.join(WAIT_S)
        assert not thread.is_alive()
    return results, first[OUTPUT_NAME]


def test_calls_that_queued_run_as_one_batch_and_each_gets_its_own_rows():
    model = HeldModel()
    batcher = BatchingPredictor(model, max_batch=8)

    results, first = run_behind_a_held_call(model, batcher, [image(1), image(2, 2), image(3)])

    assert model.sizes == [1, 4]  # the held call alone, then the three queued ones together
    assert batcher.merged_batches == 1
    np.testing.assert_array_equal(first, np.full((1, 4), -2.0))
    np.testing.assert_array_equal(results[0], np.full((1, 4), 2.0))
    np.testing.assert_array_equal(results[1], np.full((2, 4), 4.0))
    np.testing.assert_array_equal(results[2], np.full((1, 4), 6.0))
    assert model.most_at_once == 1  # the wrapped model never runs twice at once


def test_a_batch_holds_at_most_max_batch_images_oldest_first():
    model = HeldModel()
    batcher = BatchingPredictor(model, max_batch=2)

    results, _ = run_behind_a_held_call(model, batcher, [image(v) for v in (1, 2, 3, 4, 5)])

    assert model.sizes == [1, 2, 2, 1]
    for index in range(5):
        np.testing.assert_array_equal(results[index], np.full((1, 4), 2.0 * (index + 1)))


def test_a_call_larger_than_max_batch_runs_alone():
    model = HeldModel()
    batcher = BatchingPredictor(model, max_batch=2)

    results, _ = run_behind_a_held_call(model, batcher, [image(1, 3), image(2)])

    assert model.sizes == [1, 3, 1]
    assert np.asarray(results[0]).shape == (3, 4)


def test_a_failed_batch_fails_each_of_its_calls_and_the_next_batch_still_runs():
    model = HeldModel(fail_call=2)
    batcher = BatchingPredictor(model, max_batch=2)

    results, _ = run_behind_a_held_call(model, batcher, [image(1), image(2), image(3)])

    assert model.sizes == [1, 2, 1]
    assert isinstance(results[0], RuntimeError)
    assert isinstance(results[1], RuntimeError)
    np.testing.assert_array_equal(results[2], np.full((1, 4), 6.0))
    # and nothing is left holding the lead: a new call runs
    np.testing.assert_array_equal(batcher.predict(image(5)), np.full((1, 4), 10.0))


def test_a_lone_call_is_not_held_back():
    model = HeldModel()
    model.release.set()
    batcher = BatchingPredictor(model, max_batch=8)

    assert batcher.predict(image(4)).tolist() == [[8.0] * 4]
    assert batcher.waiting() == 0
    assert batcher.merged_batches == 0


@pytest.mark.parametrize("threads", [16])
def test_many_threads_each_get_their_own_answer(threads):
    model = HeldModel()
    model.release.set()
    batcher = BatchingPredictor(model, max_batch=4)
    answers: dict[int, np.ndarray] = {}

    def call(index: int) -> None:
        for repeat in range(20):
            value = float(index * 100 + repeat)
            answers[index] = batcher.predict(image(value))
            assert answers[index].tolist() == [[2 * value] * 4]

    workers = [threading.Thread(target=call, args=(i,)) for i in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(WAIT_S)
        assert not worker.is_alive()
    assert len(answers) == threads
    assert sum(model.sizes) == threads * 20
    assert model.most_at_once == 1
