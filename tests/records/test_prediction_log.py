"""Every answer is recorded (or counted as not), with no patient data, off the request path."""

from __future__ import annotations

import hashlib
from collections.abc import Callable

import pytest
from sqlalchemy import select
from support.records_standins import jpeg, png

from service.records.reviews import count_rows
from service.records.tables import ImageRow, PredictionRow


def _rows(client) -> list[PredictionRow]:
    records = client.app.state.records
    assert records.log.flush(timeout=30)
    from sqlalchemy.orm import Session

    with Session(records.engine) as session:
        return list(session.scalars(select(PredictionRow).order_by(PredictionRow.created_at)))


def test_each_answer_is_recorded_with_its_id(start_app: Callable) -> None:
    client = start_app()
    image = png(200)
    answer = client.post("/predict", files={"file": ("Doe^John_hand.png", image, "image/png")})
    assert answer.status_code == 200
    body = answer.json()
    [row] = _rows(client)
    assert row.id == body["prediction_id"]
    assert (row.model, row.version, row.replica, row.route) == (
        "bone-fracture",
        1,
        "test-replica",
        "/predict",
    )
    assert row.image_sha256 == hashlib.sha256(image).hexdigest()
    assert (row.image_size, row.image_kind) == (len(image), "PNG")
    assert row.label == body["label"]
    assert row.answer["probabilities"] == body["probabilities"]
    assert row.filename is None  # file names often name the patient: off by default
    assert row.latency_ms > 0
    assert "explanation" not in row.answer


def test_batch_answers_are_recorded_one_row_each(start_app: Callable) -> None:
    client = start_app()
    files = [
        ("files", ("a.png", png(10), "image/png")),
        ("files", ("b.txt", b"not an image", "text/plain")),
        ("files", ("c.jpg", jpeg(220), "image/jpeg")),
    ]
    body = client.post("/predict/batch", files=files).json()
    ids = [item["prediction"]["prediction_id"] for item in body["results"] if item["prediction"]]
    rows = _rows(client)
    assert sorted(row.id for row in rows) == sorted(ids)
    assert {row.image_kind for row in rows} == {"PNG", "JPEG"}
    dark = next(row for row in rows if row.image_kind == "PNG")
    assert dark.unfamiliar
    assert "unfamiliar_image" in dark.warnings
    assert dark.ood_score is not None
    assert dark.ood_score > 1


def test_file_names_only_when_allowed(start_app: Callable) -> None:
    client = start_app(store_filenames=True)
    client.post("/predict", files={"file": ("knee.png", png(100), "image/png")})
    [row] = _rows(client)
    assert row.filename == "knee.png"


def test_images_kept_once_only_when_asked(start_app: Callable) -> None:
    client = start_app()
    client.post("/predict", files={"file": ("x.png", png(90), "image/png")})
    assert client.app.state.records.log.flush(timeout=30)
    assert count_rows(client.app.state.records.engine) == (1, 0, 0)

    keeping = start_app(store_images=True)
    for _ in range(3):
        keeping.post("/predict", files={"file": ("x.png", png(90), "image/png")})
    keeping.post("/predict", files={"file": ("y.png", png(91), "image/png")})
    records = keeping.app.state.records
    assert records.log.flush(timeout=30)
    predictions, _, images = count_rows(records.engine)
    assert (predictions, images) == (1 + 4, 2)
    from sqlalchemy.orm import Session

    with Session(records.engine) as session:
        stored = session.get(ImageRow, hashlib.sha256(png(90)).hexdigest())
        assert stored is not None
        assert stored.data == png(90)


def test_log_off_records_nothing_and_still_answers(start_app: Callable) -> None:
    client = start_app(prediction_log=False)
    answer = client.post("/predict", files={"file": ("x.png", png(90), "image/png")})
    assert answer.status_code == 200
    assert answer.json()["prediction_id"]
    assert count_rows(client.app.state.records.engine) == (0, 0, 0)
    review = client.post(
        "/feedback",
        json={
            "prediction_id": answer.json()["prediction_id"],
            "finding": "fracture",
            "reader": "r",
        },
    )
    assert review.status_code == 503
    assert review.json()["error"]["code"] == "prediction_log_off"


def test_a_full_queue_drops_and_counts_never_blocks(start_app: Callable) -> None:
    """A queue of one, the writer held back: the second answer is dropped and counted."""
    client = start_app(log_queue_size=1)
    log = client.app.state.records.log
    import threading

    release = threading.Event()
    original = log._write

    def held(*args, **kwargs):
        release.wait(30)
        return original(*args, **kwargs)

    log._write = held
    answers = [
        client.post("/predict", files={"file": ("x.png", png(i), "image/png")}) for i in (1, 2, 3)
    ]
    assert all(a.status_code == 200 for a in answers)
    release.set()
    assert log.flush(timeout=30)
    metrics = client.get("/metrics").text
    dropped = _sample(metrics, 'bonefrac_prediction_log_dropped_total{reason="queue_full"}')
    written = _sample(metrics, "bonefrac_prediction_log_written_total")
    assert dropped >= 1
    assert written + dropped == 3
    assert count_rows(client.app.state.records.engine)[0] == written


def _sample(text: str, name: str) -> float:
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[-1])
    return 0.0


def test_an_answer_that_cannot_be_recorded_stops_nothing(
    start_app: Callable, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A bug in turning one answer into a row drops that answer (counted) and the log
    goes on recording the next ones."""
    import service.records.log as log_module

    client = start_app()
    records = client.app.state.records
    original = log_module.to_row
    calls = iter([True, False])
    monkeypatch.setattr(
        log_module,
        "to_row",
        lambda entry: original(entry) if not next(calls, False) else 1 / 0,
    )
    first = client.post("/predict", files={"file": ("a.png", png(50), "image/png")})
    assert first.status_code == 200
    assert records.log.flush(timeout=30)
    client.post("/predict", files={"file": ("b.png", png(60), "image/png")})
    assert records.log.flush(timeout=30)
    assert count_rows(records.engine)[0] == 1
    metrics = client.get("/metrics").text
    assert 'bonefrac_prediction_log_dropped_total{reason="rejected"} 1.0' in metrics
