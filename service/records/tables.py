"""The three tables: answers given, images kept, and readers' reviews.

``predictions`` holds one row per answer: who answered (model, version, replica), what
was asked (the image's SHA-256, size and kind; its file name only when
``BONEFRAC_STORE_FILENAMES=true``), the answer as sent (``answer``, JSON, without the
heatmap) and a few of its fields again as columns so that monitoring and the review
queue can filter on them. Nothing identifies a patient: DICOM identifiers are never
read out by the decoder, and the answer's ``dicom`` block holds acquisition facts only.

``images`` keeps an upload's bytes once per SHA-256, only when
``BONEFRAC_STORE_IMAGES=true``; the purge deletes those not seen for the retention
period. A prediction refers to its image by hash, not by foreign key, so a purged image
leaves the answer's record intact.

``reviews`` holds readers' verdicts. Sending the same review again stores nothing new
(``fingerprint`` is unique); a reader who changes their mind sends a new review, and
the latest one counts.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

#: SQLite only auto-increments an INTEGER PRIMARY KEY; PostgreSQL gets a BIGINT.
BigId = BigInteger().with_variant(Integer(), "sqlite")


class Base(DeclarativeBase):
    """Every table of the records database (Alembic's target metadata)."""


class ImageRow(Base):
    __tablename__ = "images"

    sha256: Mapped[str] = mapped_column(String(64), primary_key=True)
    size: Mapped[int] = mapped_column(Integer)
    kind: Mapped[str] = mapped_column(String(16))
    data: Mapped[bytes] = mapped_column(LargeBinary)
    stored_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True))
    last_seen_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), index=True)


class PredictionRow(Base):
    __tablename__ = "predictions"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), index=True)
    route: Mapped[str] = mapped_column(String(32))
    model: Mapped[str] = mapped_column(String(200))
    version: Mapped[int] = mapped_column(Integer)
    replica: Mapped[str] = mapped_column(String(253))
    image_sha256: Mapped[str] = mapped_column(String(64), index=True)
    image_size: Mapped[int] = mapped_column(Integer)
    image_kind: Mapped[str] = mapped_column(String(16))
    filename: Mapped[str | None] = mapped_column(String(255))
    label: Mapped[str] = mapped_column(String(200))
    confidence: Mapped[float] = mapped_column(Float)
    finding: Mapped[str | None] = mapped_column(String(16))
    ood_score: Mapped[float | None] = mapped_column(Float)
    unfamiliar: Mapped[bool] = mapped_column(Boolean)
    warnings: Mapped[list[str]] = mapped_column(JSON)
    answer: Mapped[dict[str, Any]] = mapped_column(JSON)
    latency_ms: Mapped[float] = mapped_column(Float)

    __table_args__ = (Index("ix_predictions_model_version", "model", "version"),)


class ReviewRow(Base):
    __tablename__ = "reviews"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    prediction_id: Mapped[str] = mapped_column(
        String(36), ForeignKey("predictions.id", ondelete="CASCADE"), index=True
    )
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), index=True)
    reader: Mapped[str] = mapped_column(String(200))
    finding: Mapped[str | None] = mapped_column(String(16))
    fracture_type: Mapped[str | None] = mapped_column(String(200))
    comment: Mapped[str | None] = mapped_column(Text)
    agrees_finding: Mapped[bool | None] = mapped_column(Boolean)
    agrees_type: Mapped[bool | None] = mapped_column(Boolean)
    disagrees: Mapped[bool] = mapped_column(Boolean, index=True)
    fingerprint: Mapped[str] = mapped_column(String(64), unique=True)
