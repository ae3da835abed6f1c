"""Readers' reviews: stored once, compared with the answer, listed for export and reading.

Blocking database work (the routes run it in a worker thread). The answer a review
judges is read from the prediction log, so the classes a ``fracture_type`` may name are
those of the model version that answered, not of whatever is served now.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import Engine, exists, func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from service.records.schemas import LoggedAnswer, Review, ReviewRequest
from service.records.tables import ImageRow, PredictionRow, ReviewRow

#: The model's findings a reader's finding can agree or disagree with.
DEFINITE_FINDINGS = frozenset({"fracture", "no_fracture"})


class UnknownPredictionError(LookupError):
    """No recorded answer has this id."""


class UnknownClassError(ValueError):
    """The fracture type is not a class of the model that answered."""

    def __init__(self, name: str, classes: Sequence[str]) -> None:
        super().__init__(
            f"'{name}' is not a class of the model version that answered; one of: "
            + ", ".join(classes)
        )
        self.classes = tuple(classes)


@dataclass(frozen=True)
class Stored:
    """A review and whether this call stored it (False: the same review was there)."""

    review: Review
    created: bool


def as_utc(moment: dt.datetime) -> dt.datetime:
    """SQLite gives back naive datetimes; everything stored is UTC."""
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=dt.UTC)


def fingerprint(request: ReviewRequest) -> str:
    """The same reader saying the same thing about the same answer: one fingerprint."""
    fields = [
        request.prediction_id,
        request.reader,
        request.finding,
        request.fracture_type,
        request.comment,
    ]
    return hashlib.sha256(json.dumps(fields).encode()).hexdigest()


def agreement(
    model_label: str, model_finding: str | None, finding: str | None, fracture_type: str | None
) -> tuple[bool | None, bool | None]:
    """(finding agrees, type agrees); None where there is nothing to compare."""
    agrees_finding = (
        None
        if finding is None or model_finding not in DEFINITE_FINDINGS
        else finding == model_finding
    )
    agrees_type = None if fracture_type is None else fracture_type == model_label
    return agrees_finding, agrees_type


def classes_of(answer: dict[str, object]) -> list[str]:
    """The answering model's classes, from the recorded answer's probabilities."""
    probabilities = answer.get("probabilities")
    if not isinstance(probabilities, list):
        return []
    return [str(item["label"]) for item in probabilities if isinstance(item, dict)]


def to_review(row: ReviewRow, prediction: PredictionRow) -> Review:
    return Review(
        id=row.id,
        prediction_id=row.prediction_id,
        created_at=as_utc(row.created_at),
        reader=row.reader,
        finding=row.finding,  # only reader findings are stored
        fracture_type=row.fracture_type,
        comment=row.comment,
        model=prediction.model,
        version=prediction.version,
        model_label=prediction.label,
        model_finding=prediction.finding,
        agrees_finding=row.agrees_finding,
        agrees_type=row.agrees_type,
        disagrees=row.disagrees,
    )


def add_review(engine: Engine, request: ReviewRequest) -> Stored:
    """Store ``request`` unless the same review is there; raises :class:`UnknownPredictionError`
    or :class:`UnknownClassError`."""
    digest = fingerprint(request)
    with Session(engine, expire_on_commit=False) as session:
        prediction = session.get(PredictionRow, request.prediction_id)
        if prediction is None:
            raise UnknownPredictionError(request.prediction_id)
        if request.fracture_type is not None:
            classes = classes_of(prediction.answer)
            if request.fracture_type not in classes:
                raise UnknownClassError(request.fracture_type, classes)
        existing = session.scalars(select(ReviewRow).where(ReviewRow.fingerprint == digest)).first()
        if existing is not None:
            return Stored(to_review(existing, prediction), created=False)
        agrees_finding, agrees_type = agreement(
            prediction.label, prediction.finding, request.finding, request.fracture_type
        )
        row = ReviewRow(
            prediction_id=request.prediction_id,
            created_at=dt.datetime.now(dt.UTC),
            reader=request.reader,
            finding=request.finding,
            fracture_type=request.fracture_type,
            comment=request.comment,
            agrees_finding=agrees_finding,
            agrees_type=agrees_type,
            disagrees=agrees_finding is False or agrees_type is False,
            fingerprint=digest,
        )
        session.add(row)
        try:
            session.commit()
        except IntegrityError:  # the same review, stored by a concurrent request
            session.rollback()
            existing = session.scalars(
                select(ReviewRow).where(ReviewRow.fingerprint == digest)
            ).one()
            return Stored(to_review(existing, prediction), created=False)
        return Stored(to_review(row, prediction), created=True)


def list_reviews(
    engine: Engine,
    *,
    since: dt.datetime | None,
    until: dt.datetime | None,
    disagreements: bool | None,
    after_id: int | None,
    limit: int,
) -> tuple[list[Review], int | None]:
    """Reviews oldest first (by id, a stable order for paging), and the next cursor."""
    query = select(ReviewRow, PredictionRow).join(
        PredictionRow, PredictionRow.id == ReviewRow.prediction_id
    )
    if since is not None:
        query = query.where(ReviewRow.created_at >= since)
    if until is not None:
        query = query.where(ReviewRow.created_at < until)
    if disagreements is not None:
        query = query.where(ReviewRow.disagrees == disagreements)
    if after_id is not None:
        query = query.where(ReviewRow.id > after_id)
    query = query.order_by(ReviewRow.id).limit(limit + 1)
    with Session(engine) as session:
        rows = session.execute(query).all()
    reviews = [to_review(review, prediction) for review, prediction in rows[:limit]]
    next_after = reviews[-1].id if len(rows) > limit else None
    return reviews, next_after


def recent_answers(engine: Engine, *, limit: int, since: dt.datetime | None) -> list[LoggedAnswer]:
    """The latest answers with their reviews: contradicted ones first, then newest first."""
    disagreed = exists().where(ReviewRow.prediction_id == PredictionRow.id, ReviewRow.disagrees)
    stored = exists().where(ImageRow.sha256 == PredictionRow.image_sha256)
    query = select(PredictionRow, disagreed.label("disagreed"), stored.label("stored"))
    if since is not None:
        query = query.where(PredictionRow.created_at >= since)
    # The latest `limit` answers, then sorted: disagreements first among them.
    recent = query.order_by(PredictionRow.created_at.desc(), PredictionRow.id).limit(limit)
    with Session(engine) as session:
        rows = session.execute(recent).all()
        ids = [prediction.id for prediction, _, _ in rows]
        by_prediction: dict[str, list[ReviewRow]] = {}
        if ids:
            for review in session.scalars(
                select(ReviewRow)
                .where(ReviewRow.prediction_id.in_(ids))
                .order_by(ReviewRow.created_at.desc(), ReviewRow.id.desc())
            ):
                by_prediction.setdefault(review.prediction_id, []).append(review)
    answers = [
        LoggedAnswer(
            prediction_id=prediction.id,
            created_at=as_utc(prediction.created_at),
            model=prediction.model,
            version=prediction.version,
            label=prediction.label,
            confidence=prediction.confidence,
            finding=prediction.finding,
            ood_score=prediction.ood_score,
            warnings=list(prediction.warnings),
            image_kind=prediction.image_kind,
            image_stored=bool(is_stored),
            disagreement=bool(disagreed_flag),
            reviews=[to_review(r, prediction) for r in by_prediction.get(prediction.id, [])],
        )
        for prediction, disagreed_flag, is_stored in rows
    ]
    answers.sort(key=lambda answer: not answer.disagreement)  # stable: newest first kept
    return answers


def count_rows(engine: Engine) -> tuple[int, int, int]:
    """(predictions, reviews, images) stored: for the tests and the benchmark."""
    with engine.connect() as connection:
        return (
            int(connection.scalar(select(func.count()).select_from(PredictionRow)) or 0),
            int(connection.scalar(select(func.count()).select_from(ReviewRow)) or 0),
            int(connection.scalar(select(func.count()).select_from(ImageRow)) or 0),
        )
