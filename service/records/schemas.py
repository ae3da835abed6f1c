"""Request and response bodies of the records routes (``/feedback``, ``/predictions``)."""

from __future__ import annotations

import datetime as dt
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

#: A reader's answer to "is a bone broken?" (the model may also say "uncertain").
ReaderFinding = Literal["fracture", "no_fracture"]
#: One line of text: no control characters (PostgreSQL refuses NUL in text).
PRINTABLE = r"^[^\x00-\x1f\x7f]+$"


class ReviewRequest(BaseModel):
    """A reader's verdict on one answer: the finding, the type, or a note (at least one)."""

    model_config = ConfigDict(extra="forbid")

    prediction_id: str = Field(
        min_length=1,
        max_length=36,
        pattern=r"^[0-9A-Za-z-]+$",
        description="The answer's prediction_id",
    )
    finding: ReaderFinding | None = Field(
        None, description="Is there a fracture? null: the reader does not say"
    )
    fracture_type: str | None = Field(
        None,
        min_length=1,
        max_length=200,
        pattern=PRINTABLE,
        description="The fracture type, one of the answering model's classes; null: not said",
    )
    comment: str | None = Field(
        None,
        max_length=2000,
        pattern=r"^[^\x00]*$",
        description="A free-text note. Never write patient names or identifiers here",
    )
    reader: str = Field(
        min_length=1,
        max_length=200,
        pattern=PRINTABLE,
        description="An opaque id of the reader (initials, a staff number): never a patient's",
    )

    @model_validator(mode="after")
    def _says_something(self) -> ReviewRequest:
        """A review says something, and does not contradict itself."""
        if self.comment is not None and not self.comment.strip():
            self.comment = None
        if self.finding is None and self.fracture_type is None and self.comment is None:
            raise ValueError("give a finding, a fracture_type or a comment")
        if self.finding == "no_fracture" and self.fracture_type is not None:
            raise ValueError("a fracture_type cannot go with the finding 'no_fracture'")
        return self


class Review(BaseModel):
    """A stored review, with the answer it judges and whether the reader agreed."""

    id: int
    prediction_id: str
    created_at: dt.datetime
    reader: str
    finding: ReaderFinding | None
    fracture_type: str | None
    comment: str | None
    model: str = Field(description="Model that gave the answer")
    version: int = Field(description="Its version")
    model_label: str = Field(description="The answer's most likely type")
    model_finding: str | None = Field(
        description="The answer's fracture finding; null from a model without one"
    )
    agrees_finding: bool | None = Field(
        description="Reader's finding equals the model's; null when either is missing or "
        "the model was uncertain"
    )
    agrees_type: bool | None = Field(
        description="Reader's type equals the model's label; null when the reader gave none"
    )
    disagrees: bool = Field(description="The reader contradicted the finding or the type")


class ReviewPage(BaseModel):
    reviews: list[Review] = Field(description="Oldest first")
    next_after_id: int | None = Field(
        description="Pass as after_id for the next page; null on the last page"
    )


class LoggedAnswer(BaseModel):
    """One recorded answer with its reviews (the reading page's list)."""

    prediction_id: str
    created_at: dt.datetime
    model: str
    version: int
    label: str
    confidence: float
    finding: str | None
    ood_score: float | None
    warnings: list[str] = Field(description="Warning codes of the answer")
    image_kind: str
    image_stored: bool = Field(description="The image is kept (retraining can use it)")
    disagreement: bool = Field(description="A reader contradicted this answer")
    reviews: list[Review] = Field(description="Newest first")


class LoggedAnswers(BaseModel):
    answers: list[LoggedAnswer] = Field(
        description="Answers contradicted by a reader first, then the newest first"
    )
