"""The prediction log: every answer written to the records database, off the request path.

A route hands each answer to :meth:`PredictionLog.submit`, which only appends it to a
bounded queue (no hashing, no I/O, no lock held for longer than a set insertion). One
background thread drains the queue in batches: it hashes the image, serialises the
answer, and writes the batch (and the image, when images are kept) in one transaction.

Nothing here can slow or fail a prediction. When the database is down the writer keeps
its batch and retries with a growing pause, logging one line when it goes down and one
when it is back; the queue keeps absorbing answers meanwhile, and once it is full (by
count, or by the bytes of the uploads it holds) further answers are dropped and counted
(``bonefrac_prediction_log_dropped_total{reason="queue_full"}``) with a log line at most
every :data:`DROP_LOG_INTERVAL_S`. When the database returns, the backlog is written.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
import math
import os
import queue
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel
from sqlalchemy import Engine, insert, select, update
from sqlalchemy.exc import DBAPIError, SQLAlchemyError

from modelio.images import is_dicom
from service.records.deidentify import NotKeptError, deidentified
from service.records.metrics import RecordsMetrics
from service.records.tables import ImageRow, PredictionRow

log = logging.getLogger("service.records.log")

#: Largest batch written in one transaction.
BATCH_SIZE = 256
#: Upload bytes the queue may hold (besides its count limit): a flood of large uploads
#: must not grow the process without bound while the database is down.
MAX_QUEUED_BYTES = 256 * 1024 * 1024
#: Seconds the writer lets answers gather after the first before writing them together:
#: on a busy service one transaction per few hundred answers, not one per answer. Every
#: wake-up of the writer takes a core from the model's thread pool (whose threads wait
#: for each other at every layer): with one write per answer the service spent 79.4 ms of
#: CPU per /predict against 76.2 with the log off; with this pause and a lower priority,
#: 75.7 against 75.1 (shipped model, 8 clients, 320 requests each, benchmarks/).
LINGER_S = 0.2
#: The writer's nice value: it yields the cores to inference, which must not wait for it.
WRITER_NICE = 10
#: Pauses between retries while the database is down: from the first to the last, doubling.
RETRY_FIRST_S = 0.2
RETRY_MAX_S = 5.0
#: At most one "dropping answers" log line per this many seconds.
DROP_LOG_INTERVAL_S = 10.0
#: Seconds :meth:`PredictionLog.close` spends writing what is still queued.
DRAIN_S = 10.0
#: Answer fields not recorded: the heatmap is large and derived; the id is the row's key.
NOT_RECORDED = frozenset({"explanation", "prediction_id"})

_MAGIC: tuple[tuple[bytes, str], ...] = (
    (b"\xff\xd8\xff", "JPEG"),
    (b"\x89PNG\r\n\x1a\n", "PNG"),
    (b"II*\x00", "TIFF"),
    (b"MM\x00*", "TIFF"),
    (b"BM", "BMP"),
    (b"GIF8", "GIF"),
)


def image_kind(data: bytes) -> str:
    """JPEG, PNG, DICOM, TIFF, BMP, GIF, WEBP or OTHER, from the first bytes."""
    if is_dicom(data):
        return "DICOM"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "WEBP"
    for magic, kind in _MAGIC:
        if data.startswith(magic):
            return kind
    return "OTHER"


@dataclass(frozen=True)
class Entry:
    """One answer as the route hands it over: cheap to make, converted by the writer."""

    id: str
    created_at: dt.datetime
    route: str
    model: str
    version: int
    replica: str
    data: bytes
    filename: str | None
    answer: BaseModel
    latency_s: float


def lower_priority() -> None:
    """Lower the calling thread's CPU priority (Linux: a thread is a task of its own);
    elsewhere, or when not allowed, nothing changes."""
    try:
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), WRITER_NICE)
    except (AttributeError, OSError):
        log.debug("the prediction log's writer keeps its priority")


def to_row(entry: Entry) -> dict[str, Any]:
    """The ``predictions`` row of an answer (blocking work: hash and serialisation)."""
    answer = entry.answer.model_dump(mode="json", exclude=set(NOT_RECORDED))
    fracture = answer.get("fracture")
    finding = fracture.get("finding") if isinstance(fracture, dict) else None
    warnings = [str(w.get("code")) for w in answer.get("warnings") or () if isinstance(w, dict)]
    ood = answer.get("ood_score")
    ood_score = float(ood) if isinstance(ood, int | float) and math.isfinite(ood) else None
    return {
        "id": entry.id,
        "created_at": entry.created_at,
        "route": entry.route,
        "model": entry.model,
        "version": entry.version,
        "replica": entry.replica,
        "image_sha256": hashlib.sha256(entry.data).hexdigest(),
        "image_size": len(entry.data),
        "image_kind": image_kind(entry.data),
        "filename": None if entry.filename is None else entry.filename[:255],
        "label": str(answer.get("label")),
        "confidence": float(answer.get("confidence") or 0.0),
        "finding": finding if isinstance(finding, str) else None,
        "ood_score": ood_score,
        "unfamiliar": "unfamiliar_image" in warnings,
        "warnings": warnings,
        "answer": answer,
        "latency_ms": round(entry.latency_s * 1000.0, 3),
    }


def _is_outage(exc: SQLAlchemyError) -> bool:
    """A database that is unreachable or restarting (retry), not one refusing the row."""
    return isinstance(exc, DBAPIError) and (
        exc.connection_invalidated or type(exc).__name__ in ("OperationalError", "InterfaceError")
    )


class PredictionLog:
    """A bounded queue of answers and the thread that writes them; thread-safe."""

    def __init__(
        self,
        engine: Engine,
        metrics: RecordsMetrics,
        *,
        queue_size: int,
        store_images: bool,
        max_queued_bytes: int = MAX_QUEUED_BYTES,
        prepare: Callable[[], None] = lambda: None,
    ) -> None:
        """``prepare`` runs before each write until it succeeds once (the migration,
        when the database was down at start-up)."""
        self.engine = engine
        self._prepare = prepare
        self.metrics = metrics
        self.store_images = store_images
        self.max_queued_bytes = max_queued_bytes
        self._queue: queue.Queue[Entry] = queue.Queue(maxsize=queue_size)
        self._pending: set[str] = set()  # submitted, not yet written or dropped
        self._queued_bytes = 0
        self._lock = threading.Condition()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._down_since: float | None = None
        self._drain_deadline = math.inf
        self._last_drop_log = -math.inf
        self._dropped_since_log = 0
        metrics.watch_queue(self._queue.qsize)

    # -- the request side ------------------------------------------------------------

    def submit(self, entry: Entry) -> bool:
        """Queue ``entry`` for writing; False (counted, never raised) when full."""
        with self._lock:
            if self._queued_bytes + len(entry.data) > self.max_queued_bytes:
                self._dropped("queue_full", 1)
                return False
            try:
                self._queue.put_nowait(entry)
            except queue.Full:
                self._dropped("queue_full", 1)
                return False
            self._queued_bytes += len(entry.data)
            self._pending.add(entry.id)
            self._lock.notify_all()  # wakes the writer when it is idle
        return True

    def wait_written(self, prediction_id: str, timeout: float) -> bool:
        """Wait until an answer still queued is written (or dropped): a review sent right
        after the answer must find it. True when it is no longer pending."""
        with self._lock:
            return self._lock.wait_for(lambda: prediction_id not in self._pending, timeout)

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until everything submitted so far is written or dropped (tests, bench)."""
        with self._lock:
            return self._lock.wait_for(lambda: not self._pending, timeout)

    @property
    def backlog(self) -> int:
        return self._queue.qsize()

    # -- the writer thread -----------------------------------------------------------

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="prediction-log", daemon=True)
        self._thread.start()

    def close(self, drain_s: float = DRAIN_S) -> None:
        """Write what is queued (for up to ``drain_s`` seconds), then stop the thread;
        whatever could not be written by then is counted as dropped."""
        self._drain_deadline = time.monotonic() + drain_s
        self._stop.set()
        with self._lock:
            self._lock.notify_all()
        if self._thread is not None:
            self._thread.join()
        leftovers = self._take_all()
        if leftovers:
            self._finish(leftovers)
            self._dropped("shutdown", len(leftovers))

    def _run(self) -> None:
        lower_priority()
        while True:
            batch = self._take_batch()
            if batch:
                try:
                    self._write_until_done(batch)
                except Exception:  # a bug must not stop the thread: later answers still count
                    log.exception("prediction log: %d answer(s) could not be recorded", len(batch))
                    self._finish(batch)
                    self._dropped("rejected", len(batch))
            elif self._stop.is_set():
                return

    def _take_batch(self) -> list[Entry]:
        with self._lock:  # idle until an answer comes or the log closes: no polling
            self._lock.wait_for(lambda: not self._queue.empty() or self._stop.is_set())
        try:
            first = self._queue.get_nowait()
        except queue.Empty:
            return []
        if not self._stop.is_set() and self._queue.qsize() < BATCH_SIZE - 1:
            # Let answers gather: one transaction (and one wake-up) for many answers;
            # a backlog of a full batch is written at once.
            self._stop.wait(LINGER_S)
        batch = [first]
        while len(batch) < BATCH_SIZE:
            try:
                batch.append(self._queue.get_nowait())
            except queue.Empty:
                break
        with self._lock:
            self._queued_bytes -= sum(len(entry.data) for entry in batch)
        return batch

    def _take_all(self) -> list[Entry]:
        entries = []
        while True:
            try:
                entries.append(self._queue.get_nowait())
            except queue.Empty:
                return entries

    def _write_until_done(self, batch: list[Entry]) -> None:
        """Write ``batch``, retrying while the database is down; rows it refuses are
        written one by one so that one bad row does not lose the others."""
        rows = [to_row(entry) for entry in batch]
        pause = RETRY_FIRST_S
        while True:
            try:
                self._write(batch, rows)
            except SQLAlchemyError as exc:
                self.metrics.log_errors.inc()
                if not _is_outage(exc):
                    self._write_one_by_one(batch, rows)
                    self._database_back()
                    return
                self._database_down(exc)
                if self._stop.is_set():
                    remaining = self._drain_deadline - time.monotonic()
                    if remaining <= 0:
                        self._finish(batch)
                        self._dropped("shutdown", len(batch))
                        return
                    time.sleep(min(pause, remaining))  # stopping: no event to wait on
                else:
                    self._stop.wait(pause)  # a stop cuts the pause short
                pause = min(pause * 2, RETRY_MAX_S)
                continue
            self._database_back()
            self.metrics.log_written.inc(len(batch))
            self._finish(batch)
            return

    def _write_one_by_one(self, batch: list[Entry], rows: list[dict[str, Any]]) -> None:
        for entry, row in zip(batch, rows, strict=True):
            try:
                self._write([entry], [row])
                self.metrics.log_written.inc()
            except SQLAlchemyError:
                log.exception("the records database refused the answer %s", entry.id)
                self._dropped("rejected", 1)
        self._finish(batch)

    def _write(self, batch: Iterable[Entry], rows: list[dict[str, Any]]) -> None:
        self._prepare()
        with self.engine.begin() as connection:
            connection.execute(insert(PredictionRow), rows)
            if self.store_images:
                store_images(connection, batch, rows)

    def _finish(self, batch: Iterable[Entry]) -> None:
        with self._lock:
            self._pending.difference_update(entry.id for entry in batch)
            self._lock.notify_all()

    def _database_down(self, exc: Exception) -> None:
        self.metrics.database_up.set(0)
        if self._down_since is None:
            self._down_since = time.monotonic()
            log.error(
                "the records database is unreachable; answers are queued (%d waiting) and "
                "written when it is back: %s",
                self._queue.qsize(),
                str(exc).splitlines()[0] if str(exc) else type(exc).__name__,
            )

    def _database_back(self) -> None:
        self.metrics.database_up.set(1)
        if self._down_since is not None:
            log.warning(
                "the records database is back after %.1f s; writing the %d queued answers",
                time.monotonic() - self._down_since,
                self._queue.qsize(),
            )
            self._down_since = None

    def _dropped(self, reason: str, count: int) -> None:
        """Count dropped answers; log a line at most every DROP_LOG_INTERVAL_S."""
        self.metrics.log_dropped.labels(reason).inc(count)
        self._dropped_since_log += count
        now = time.monotonic()
        if now - self._last_drop_log >= DROP_LOG_INTERVAL_S:
            log.warning(
                "prediction log: %d answer(s) not recorded (%s; %d queued); see "
                "bonefrac_prediction_log_dropped_total",
                self._dropped_since_log,
                reason,
                self._queue.qsize(),
            )
            self._last_drop_log = now
            self._dropped_since_log = 0


def store_images(connection: Any, batch: Iterable[Entry], rows: list[dict[str, Any]]) -> None:
    """Keep each image once by SHA-256: new ones are inserted, known ones marked seen."""
    now = dt.datetime.now(dt.UTC)
    images: dict[str, tuple[Entry, dict[str, Any]]] = {}
    for entry, row in zip(batch, rows, strict=True):
        images.setdefault(row["image_sha256"], (entry, row))
    known = set(
        connection.scalars(select(ImageRow.sha256).where(ImageRow.sha256.in_(list(images))))
    )
    if known:
        connection.execute(
            update(ImageRow).where(ImageRow.sha256.in_(known)).values(last_seen_at=now)
        )
    new = []
    for sha, (entry, row) in images.items():
        if sha in known:
            continue
        data = kept_bytes(entry.data, row["image_kind"])
        if data is not None:
            new.append(
                {
                    "sha256": sha,
                    "size": len(data),
                    "kind": row["image_kind"],
                    "data": data,
                    "stored_at": now,
                    "last_seen_at": now,
                }
            )
    if new:
        connection.execute(_insert_new_images(connection), new)


def kept_bytes(data: bytes, kind: str) -> bytes | None:
    """What is stored of an upload: DICOM reduced to its image (no identifiers), other
    kinds as sent (their metadata name no patient); None when it must not be kept."""
    if kind != "DICOM":
        return data
    try:
        return deidentified(data)
    except NotKeptError as exc:
        log.info("a DICOM upload is not kept: %s", exc)
        return None


def _insert_new_images(connection: Any) -> Any:
    """INSERT that skips an image another replica stored a moment ago."""
    if connection.dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as pg_insert  # noqa: PLC0415

        return pg_insert(ImageRow).on_conflict_do_nothing(index_elements=["sha256"])
    if connection.dialect.name == "sqlite":
        from sqlalchemy.dialects.sqlite import insert as sqlite_insert  # noqa: PLC0415

        return sqlite_insert(ImageRow).on_conflict_do_nothing(index_elements=["sha256"])
    return insert(ImageRow)


def purge_images(engine: Engine, retention_days: int, now: dt.datetime | None = None) -> int:
    """Delete stored images not sent for ``retention_days``; the number deleted."""
    from sqlalchemy import delete  # noqa: PLC0415

    cutoff = (now or dt.datetime.now(dt.UTC)) - dt.timedelta(days=retention_days)
    with engine.begin() as connection:
        result = connection.execute(delete(ImageRow).where(ImageRow.last_seen_at < cutoff))
    return int(result.rowcount or 0)
