"""The database stops mid-run: predictions are still answered, and the log catches up
when it is back, or counts exactly what it could not keep.

Runs against the throw-away PostgreSQL server (SQLite is a file in the service's own
folder: there is no server to stop). The server is shared by the session, so each test
starts it again however it ends.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from support.postgres import PostgresServer
from support.records_standins import png

from service.records.reviews import count_rows


@pytest.fixture
def database_url(postgres_server: PostgresServer) -> str:
    """Only PostgreSQL here (overrides the SQLite/PostgreSQL pair)."""
    return postgres_server.create_database(f"t_{uuid.uuid4().hex[:12]}")


@pytest.fixture
def outage(postgres_server: PostgresServer) -> Iterator[PostgresServer]:
    """The server, started again after the test whatever happened."""
    yield postgres_server
    if not _accepts(postgres_server):
        postgres_server.start()


def _accepts(server: PostgresServer) -> bool:
    import psycopg

    try:
        psycopg.connect(server.url(), connect_timeout=2).close()
    except psycopg.OperationalError:
        return False
    return True


def _wait_for(condition: Callable[[], bool], what: str, limit_s: float = 60.0) -> None:
    """Wait for a state the log reaches by itself (not a timing assertion: the limit
    only keeps a broken build from hanging)."""
    deadline = time.monotonic() + limit_s
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"never happened: {what}")
        time.sleep(0.05)


def _predict(client: Any, level: int) -> None:
    response = client.post("/predict", files={"file": ("x.png", png(level), "image/png")})
    assert response.status_code == 200


def _gauge(client: Any, name: str) -> float:
    for line in client.get("/metrics").text.splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{"):
            return float(line.split()[-1])
    return 0.0


def test_the_log_catches_up_after_an_outage(start_app: Callable, outage: PostgresServer) -> None:
    client = start_app()
    records = client.app.state.records
    for level in range(3):
        _predict(client, level)
    assert records.log.flush(timeout=60)
    assert count_rows(records.engine)[0] == 3

    outage.stop()
    for level in range(3, 10):
        _predict(client, level)  # answered while the database is down
    _wait_for(lambda: _gauge(client, "bonefrac_records_database_up") == 0, "database seen down")
    review = client.post(
        "/feedback", json={"prediction_id": "any", "finding": "fracture", "reader": "r"}
    )
    assert review.status_code == 503
    assert review.json()["error"]["code"] == "records_unavailable"

    outage.start()
    assert records.log.flush(timeout=120)
    assert count_rows(records.engine)[0] == 10
    assert _gauge(client, "bonefrac_records_database_up") == 1
    assert _gauge(client, "bonefrac_prediction_log_dropped_total") == 0
    assert _gauge(client, "bonefrac_prediction_log_write_errors_total") >= 1


def test_a_long_outage_drops_and_counts(start_app: Callable, outage: PostgresServer) -> None:
    client = start_app(log_queue_size=2)
    records = client.app.state.records
    _predict(client, 1)
    assert records.log.flush(timeout=60)

    outage.stop()
    _predict(client, 2)  # taken by the writer, which now retries it
    _wait_for(lambda: _gauge(client, "bonefrac_records_database_up") == 0, "database seen down")
    for level in range(3, 9):
        _predict(client, level)  # two fit in the queue, four are dropped
    outage.start()
    assert records.log.flush(timeout=120)

    written = count_rows(records.engine)[0]
    metrics = client.get("/metrics").text
    dropped = next(
        float(line.split()[-1])
        for line in metrics.splitlines()
        if line.startswith('bonefrac_prediction_log_dropped_total{reason="queue_full"}')
    )
    assert written + dropped == 8
    assert dropped == 4
    assert written == 4


def test_the_service_starts_with_the_database_down(
    start_app: Callable, outage: PostgresServer
) -> None:
    outage.stop()
    client = start_app()  # the migration fails: logged, not fatal
    records = client.app.state.records
    assert not records.ready
    _predict(client, 5)
    outage.start()
    assert records.log.flush(timeout=120)
    assert records.ready
    assert count_rows(records.engine)[0] == 1


def test_stopping_with_the_database_down_counts_what_is_left(
    start_app: Callable, outage: PostgresServer
) -> None:
    client = start_app()
    records = client.app.state.records
    _predict(client, 1)
    assert records.log.flush(timeout=60)
    outage.stop()
    for level in range(2, 5):
        _predict(client, level)
    records.log.close(drain_s=0.5)  # what the lifespan does on shutdown, with less patience
    metrics = client.get("/metrics").text
    assert 'bonefrac_prediction_log_dropped_total{reason="shutdown"} 3.0' in metrics
    assert "bonefrac_prediction_log_written_total 1.0" in metrics
