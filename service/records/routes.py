"""``POST /feedback``, ``GET /feedback`` and ``GET /predictions``: readers' reviews.

The API key (when set) guards these routes like every other, in
:class:`service.auth.ApiKeyMiddleware`; ``BONEFRAC_REVIEWER_KEY`` (when set) is asked
for on top, in ``X-Reviewer-Key``, so that a client allowed to ask for predictions is not
thereby allowed to judge them or read the readers' notes.
"""

from __future__ import annotations

import datetime as dt
import secrets
from collections.abc import Callable
from functools import partial
from typing import Annotated, Any, TypeVar

from anyio import to_thread
from fastapi import APIRouter, Depends, Query, Request, Response, Security
from fastapi.security import APIKeyHeader
from sqlalchemy.exc import SQLAlchemyError

from service.deps import ApiKeyChecked
from service.errors import ServiceError
from service.records.recorder import Records
from service.records.reviews import (
    UnknownClassError,
    UnknownPredictionError,
    add_review,
    list_reviews,
    recent_answers,
)
from service.records.schemas import LoggedAnswers, Review, ReviewPage, ReviewRequest
from service.schemas import ErrorResponse

REVIEWER_KEY_HEADER = "X-Reviewer-Key"
#: Seconds a review waits for its answer to leave the log's queue (sent right after it).
WAIT_FOR_ANSWER_S = 5.0

T = TypeVar("T")

router = APIRouter(tags=["reviews"])

_reviewer_key_scheme = APIKeyHeader(
    name=REVIEWER_KEY_HEADER,
    auto_error=False,
    description="Required on /feedback and /predictions when BONEFRAC_REVIEWER_KEY is set.",
)

_ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"model": ErrorResponse, "description": "API key or reviewer key missing or wrong"},
    503: {
        "model": ErrorResponse,
        "description": "The records database is unreachable, or the prediction log is off",
    },
}


async def get_records(request: Request) -> Records:
    return request.app.state.records


RecordsDep = Annotated[Records, Depends(get_records)]


async def require_reviewer_key(
    records: RecordsDep, key: Annotated[str | None, Security(_reviewer_key_scheme)]
) -> None:
    """401 unless the reviewer key (when one is set) is sent."""
    expected = records.settings.reviewer_key
    if expected is None:
        return
    if key is None or not secrets.compare_digest(
        key.encode(), expected.get_secret_value().encode()
    ):
        raise ServiceError(
            401,
            "unauthorized",
            f"A valid reviewer key is required in the {REVIEWER_KEY_HEADER} header.",
            headers={"WWW-Authenticate": "ApiKey"},
        )


ReviewerChecked = Depends(require_reviewer_key)


async def _database(records: Records, work: Callable[[], T]) -> T:
    """Run blocking database work in a thread; 503 when the database cannot answer."""
    if records.log is None:
        raise ServiceError(
            503,
            "prediction_log_off",
            "The prediction log is off (BONEFRAC_PREDICTION_LOG=false): there are no "
            "recorded answers to review.",
        )
    try:
        await to_thread.run_sync(records.ensure_schema)
        return await to_thread.run_sync(work)
    except SQLAlchemyError as exc:
        raise ServiceError(
            503,
            "records_unavailable",
            "The records database is unreachable; answers are still given and queued. "
            "Try again in a moment.",
        ) from exc


@router.post(
    "/feedback",
    status_code=201,
    response_model=Review,
    responses={
        200: {"model": Review, "description": "The same review was already stored"},
        404: {"model": ErrorResponse, "description": "No recorded answer has this id"},
        422: {
            "model": ErrorResponse,
            "description": "Invalid body, or a fracture_type the answering model does not know",
        },
        **_ERRORS,
    },
    dependencies=[ApiKeyChecked, ReviewerChecked],
    summary="Confirm or correct an answer",
)
async def post_feedback(review: ReviewRequest, records: RecordsDep) -> Response:
    """A reader's verdict on one answer (201). Sending the same review again stores
    nothing and answers 200 with the stored one; a changed verdict is a new review, and
    the latest counts."""
    if records.log is not None:
        await to_thread.run_sync(records.log.wait_written, review.prediction_id, WAIT_FOR_ANSWER_S)
    try:
        stored = await _database(records, partial(add_review, records.engine, review))
    except UnknownPredictionError as exc:
        raise ServiceError(
            404, "unknown_prediction", f"No recorded answer has id '{review.prediction_id}'."
        ) from exc
    except UnknownClassError as exc:
        raise ServiceError(422, "unknown_class", str(exc)) from exc
    if stored.created:
        count_verdict(records, stored.review)
    return Response(
        content=stored.review.model_dump_json(),
        media_type="application/json",
        status_code=201 if stored.created else 200,
    )


def count_verdict(records: Records, review: Review) -> None:
    """Agreement metrics per model version and the model's answer."""
    version = str(review.version)
    if review.agrees_finding is not None and review.model_finding is not None:
        records.metrics.reviews.labels(
            review.model,
            version,
            "finding",
            review.model_finding,
            "agree" if review.agrees_finding else "disagree",
        ).inc()
    if review.agrees_type is not None:
        records.metrics.reviews.labels(
            review.model,
            version,
            "type",
            review.model_label,
            "agree" if review.agrees_type else "disagree",
        ).inc()


@router.get(
    "/feedback",
    response_model=ReviewPage,
    responses=_ERRORS,
    dependencies=[ApiKeyChecked, ReviewerChecked],
    summary="Export reviews",
)
async def get_feedback(
    records: RecordsDep,
    *,
    since: Annotated[
        dt.datetime | None, Query(description="Reviews made at or after (ISO 8601)")
    ] = None,
    until: Annotated[dt.datetime | None, Query(description="Reviews made before")] = None,
    disagreements: Annotated[
        bool | None, Query(description="true: only contradicting reviews; false: only agreeing")
    ] = None,
    after_id: Annotated[
        int | None, Query(ge=0, le=2**63 - 1, description="next_after_id of the last page")
    ] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> ReviewPage:
    """Reviews oldest first, a page at a time, each with the answer it judges."""
    reviews, next_after = await _database(
        records,
        partial(
            list_reviews,
            records.engine,
            since=_utc(since),
            until=_utc(until),
            disagreements=disagreements,
            after_id=after_id,
            limit=limit,
        ),
    )
    return ReviewPage(reviews=reviews, next_after_id=next_after)


@router.get(
    "/predictions",
    response_model=LoggedAnswers,
    responses=_ERRORS,
    dependencies=[ApiKeyChecked, ReviewerChecked],
    summary="Recent answers with their reviews",
)
async def get_predictions(
    records: RecordsDep,
    *,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    since: Annotated[dt.datetime | None, Query(description="Answers given at or after")] = None,
) -> LoggedAnswers:
    """The latest recorded answers, those a reader contradicted first."""
    answers = await _database(
        records, partial(recent_answers, records.engine, limit=limit, since=_utc(since))
    )
    return LoggedAnswers(answers=answers)


def _utc(moment: dt.datetime | None) -> dt.datetime | None:
    """A time without a zone is taken as UTC (everything is stored in UTC)."""
    if moment is None:
        return None
    if moment.tzinfo is None:
        return moment.replace(tzinfo=dt.UTC)
    try:
        return moment.astimezone(dt.UTC)
    except OverflowError as exc:  # 0001-01-01 at +01:00 is before the first UTC year
        raise ServiceError(422, "validation_error", f"{moment} is out of range.") from exc
