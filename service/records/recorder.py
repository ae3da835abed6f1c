"""The records of one app: its database engine, its prediction log, its metrics.

:func:`service.app.create_app` makes one :class:`Records` (no I/O: the engine connects
lazily); the lifespan calls :meth:`Records.start` (migrate, start the log's thread) and
:meth:`Records.close`. A database that is down at start-up does not stop the service:
predictions are answered and queued, the schema is brought up to date by the log's
thread once the database answers, and the review routes say 503 until then.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
import time

from prometheus_client import CollectorRegistry
from sqlalchemy import Engine
from sqlalchemy.exc import SQLAlchemyError

from service.records.db import describe, make_engine, migrate, resolve_url
from service.records.log import Entry, PredictionLog
from service.records.metrics import RecordsMetrics
from service.registry import LoadedModel
from service.schemas import Prediction
from service.settings import Settings

log = logging.getLogger("service.records")


class Records:
    """Everything the routes need to record answers and reviews."""

    def __init__(self, settings: Settings, registry: CollectorRegistry) -> None:
        self.settings = settings
        secret = settings.database_url
        self.url = resolve_url(
            settings.records_dir, None if secret is None else secret.get_secret_value()
        )
        self.engine: Engine = make_engine(self.url)
        self.metrics = RecordsMetrics(registry)
        self.replica = settings.replica_id
        self.store_filenames = settings.store_filenames
        self.log: PredictionLog | None = None
        if settings.prediction_log:
            self.log = PredictionLog(
                self.engine,
                self.metrics,
                queue_size=settings.log_queue_size,
                store_images=settings.store_images,
                prepare=self.ensure_schema,
            )
        self._schema_ready = threading.Event()
        self._migrate_lock = threading.Lock()

    @property
    def ready(self) -> bool:
        """The schema is up to date (reviews can be stored and read)."""
        return self._schema_ready.is_set()

    def ensure_schema(self) -> None:
        """Migrate once per process; raises while the database cannot be reached."""
        if self._schema_ready.is_set():
            return
        with self._migrate_lock:
            if not self._schema_ready.is_set():
                migrate(self.engine)
                self._schema_ready.set()
                log.info("records database ready: %s", describe(self.url))

    def start(self) -> None:
        """Migrate (when the database answers) and start the prediction log's thread."""
        try:
            self.ensure_schema()
        except SQLAlchemyError as exc:
            log.error(
                "the records database %s is unreachable at start-up; answering anyway, "
                "answers are queued until it is back: %s",
                describe(self.url),
                str(exc).splitlines()[0],
            )
        if self.log is not None:
            self.log.start()

    def close(self) -> None:
        """Write what is queued (bounded), stop the thread, close the connections."""
        if self.log is not None:
            self.log.close()
        self.engine.dispose()

    def answered(
        self,
        route: str,
        *,
        model: LoadedModel,
        prediction: Prediction,
        data: bytes,
        filename: str | None,
        started: float,
    ) -> None:
        """Count an answer for monitoring and queue it for the log; never raises.

        ``started`` is the route's ``time.perf_counter()`` at its start.
        """
        try:
            version = str(model.version)
            self.metrics.answers.labels(model.name, version).inc()
            if any(w.code == "unfamiliar_image" for w in prediction.warnings):
                self.metrics.unfamiliar.labels(model.name, version).inc()
            finding = prediction.fracture.finding if prediction.fracture is not None else "none"
            self.metrics.findings.labels(model.name, version, finding).inc()
            if self.log is None:
                return
            self.log.submit(
                Entry(
                    id=prediction.prediction_id,
                    created_at=dt.datetime.now(dt.UTC),
                    route=route,
                    model=model.name,
                    version=model.version,
                    replica=self.replica,
                    data=data,
                    filename=filename if self.store_filenames else None,
                    answer=prediction,
                    latency_s=time.perf_counter() - started,
                )
            )
        except Exception:  # recording must never fail an answer
            log.exception("could not record an answer")
