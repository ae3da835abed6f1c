"""POST /feedback stores a reader's verdict once; GET /feedback and /predictions list them."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from support.records_standins import png

from service.records.reviews import count_rows

#: The stand-in answers "fracture" and "no_fracture" (50 is dark, but not so dark that
#: the image is unfamiliar: then no finding is "no_fracture", and a review neither agrees
#: nor disagrees with it).
BRIGHT, DARK = 230, 50


def _answer(client: Any, level: int = BRIGHT) -> dict[str, Any]:
    response = client.post("/predict", files={"file": ("x.png", png(level), "image/png")})
    assert response.status_code == 200
    return response.json()


def _review(client: Any, answer: dict[str, Any], **fields: Any) -> Any:
    body = {"prediction_id": answer["prediction_id"], "reader": "dr-a", **fields}
    return client.post("/feedback", json=body)


def test_a_review_is_stored_once_and_compared(start_app: Callable) -> None:
    client = start_app()
    answer = _answer(client)
    assert answer["fracture"]["finding"] == "fracture"
    other = next(p["label"] for p in answer["probabilities"] if p["label"] != answer["label"])
    first = _review(client, answer, finding="fracture", fracture_type=other, comment="lateral")
    assert first.status_code == 201
    review = first.json()
    assert review["agrees_finding"] is True
    assert review["agrees_type"] is False
    assert review["disagrees"] is True
    assert (review["model_label"], review["model_finding"], review["version"]) == (
        answer["label"],
        "fracture",
        1,
    )
    again = _review(client, answer, finding="fracture", fracture_type=other, comment="lateral")
    assert again.status_code == 200
    assert again.json()["id"] == review["id"]
    assert count_rows(client.app.state.records.engine)[1] == 1
    changed = _review(client, answer, finding="no_fracture")
    assert changed.status_code == 201
    assert changed.json()["agrees_finding"] is False
    assert count_rows(client.app.state.records.engine)[1] == 2


def test_review_errors(start_app: Callable) -> None:
    client = start_app()
    answer = _answer(client)
    unknown = client.post(
        "/feedback", json={"prediction_id": "no-such-answer", "finding": "fracture", "reader": "r"}
    )
    assert unknown.status_code == 404
    assert unknown.json()["error"]["code"] == "unknown_prediction"
    bad_class = _review(client, answer, fracture_type="Broken heart")
    assert bad_class.status_code == 422
    assert bad_class.json()["error"]["code"] == "unknown_class"
    assert "Avulsion fracture" in bad_class.json()["error"]["message"]
    for fields in (
        {"finding": "maybe"},
        {},  # says nothing
        {"comment": "   "},  # says nothing either
        {"finding": "no_fracture", "fracture_type": answer["label"]},  # contradicts itself
        {"finding": "fracture", "patient_name": "Doe^John"},  # no extra fields
    ):
        response = _review(client, answer, **fields)
        assert response.status_code == 422, fields
        assert response.json()["error"]["code"] == "validation_error"
    assert count_rows(client.app.state.records.engine)[1] == 0


def test_export_pages_and_filters(start_app: Callable) -> None:
    client = start_app()
    answers = [_answer(client, level) for level in (BRIGHT, DARK, BRIGHT, DARK, BRIGHT)]
    for answer in answers:
        _review(client, answer, finding="fracture")  # disagrees with the two DARK answers
    page = client.get("/feedback", params={"limit": 2}).json()
    ids = [r["id"] for r in page["reviews"]]
    while page["next_after_id"] is not None:
        page = client.get("/feedback", params={"limit": 2, "after_id": page["next_after_id"]})
        page = page.json()
        ids += [r["id"] for r in page["reviews"]]
    assert len(ids) == 5
    assert ids == sorted(ids)
    disagreeing = client.get("/feedback", params={"disagreements": "true"}).json()["reviews"]
    assert {r["prediction_id"] for r in disagreeing} == {
        answers[1]["prediction_id"],
        answers[3]["prediction_id"],
    }
    future = client.get("/feedback", params={"since": "2999-01-01T00:00:00Z"}).json()
    assert future["reviews"] == []
    past = client.get("/feedback", params={"until": "2000-01-01T00:00:00"}).json()
    assert past["reviews"] == []


def test_recent_answers_list_disagreements_first(start_app: Callable) -> None:
    client = start_app()
    answers = [_answer(client, level) for level in (DARK, BRIGHT, BRIGHT)]
    _review(client, answers[0], finding="fracture", comment="missed it")
    _review(client, answers[2], finding="fracture")
    listed = client.get("/predictions", params={"limit": 10}).json()["answers"]
    assert [a["prediction_id"] for a in listed] == [
        answers[0]["prediction_id"],
        answers[2]["prediction_id"],
        answers[1]["prediction_id"],
    ]
    assert listed[0]["disagreement"] is True
    assert listed[0]["reviews"][0]["comment"] == "missed it"
    assert listed[2]["reviews"] == []


def test_reviews_need_the_keys_when_set(start_app: Callable) -> None:
    client = start_app(api_key="predict-key", reviewer_key="review-key")
    api = {"X-API-Key": "predict-key"}
    response = client.post("/predict", files={"file": ("x.png", png(BRIGHT))}, headers=api)
    answer = response.json()
    body = {"prediction_id": answer["prediction_id"], "finding": "fracture", "reader": "r"}
    assert client.post("/feedback", json=body).status_code == 401
    assert client.post("/feedback", json=body, headers=api).status_code == 401
    wrong = {**api, "X-Reviewer-Key": "nope"}
    assert client.post("/feedback", json=body, headers=wrong).status_code == 401
    both = {**api, "X-Reviewer-Key": "review-key"}
    assert client.post("/feedback", json=body, headers=both).status_code == 201
    assert client.get("/feedback", headers=api).status_code == 401
    assert client.get("/predictions", headers=both).status_code == 200


@pytest.mark.parametrize("aspect", ["finding", "type"])
def test_agreement_metrics(start_app: Callable, aspect: str) -> None:
    client = start_app()
    answer = _answer(client)
    if aspect == "finding":
        _review(client, answer, finding="no_fracture")
        expected = (
            'bonefrac_review_verdicts_total{aspect="finding",label="fracture",'
            'model="bone-fracture",outcome="disagree",version="1"} 1.0'
        )
    else:
        _review(client, answer, finding="fracture", fracture_type=answer["label"])
        expected = (
            f'bonefrac_review_verdicts_total{{aspect="type",label="{answer["label"]}",'
            'model="bone-fracture",outcome="agree",version="1"} 1.0'
        )
    metrics = client.get("/metrics").text
    assert expected in metrics
    assert 'bonefrac_answers_total{model="bone-fracture",version="1"} 1.0' in metrics
    assert (
        'bonefrac_findings_total{finding="fracture",model="bone-fracture",version="1"} 1.0'
        in metrics
    )
