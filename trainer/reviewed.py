"""``python -m trainer export-reviewed --out DIR``: readers' verdicts as a training set.

Reads the service's records database (the same ``BONEFRAC_DATABASE_URL`` or
``BONEFRAC_RECORDS_DIR`` the service uses, or ``--database-url``) and writes every
reviewed answer whose image was kept (``BONEFRAC_STORE_IMAGES=true``) into
``DIR/<class>/<sha256 prefix>.<ext>``: the plain ``<Class>/*`` layout
:func:`trainer.data.discover` reads, so ``trainer train --data DIR`` learns from it,
alone, or merged with a base dataset by exporting into a subfolder of a copy of it
(class folders of the same name are one class wherever they sit).

The label is the reader's, never the model's: the latest review of an image names its
type (``fracture_type``); a review that says ``no_fracture`` goes to
``--no-fracture-folder`` when one is given (the type model learned from fractures only:
such images are for a fracture/no-fracture head), and is left out otherwise. Reviews
with neither (a note, or a finding without a type) are left out and counted.

A ``manifest.csv`` beside the class folders says where each file came from (answer,
model version, what the model said, which reader, when); it names no patient, and the
trainer skips it as "not an image file".

Imports only the records' own database module and tables (SQLAlchemy), never the service.
"""

from __future__ import annotations

import csv
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.engine import URL
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from service.records.db import (
    describe,
    make_engine,
    resolve_url,
    sqlite_path,
    url_from_environment,
)
from service.records.tables import ImageRow, PredictionRow, ReviewRow
from trainer.errors import TrainerError

#: File suffix per stored kind; kinds the trainer cannot read are not exported.
SUFFIXES = {
    "JPEG": ".jpg",
    "PNG": ".png",
    "DICOM": ".dcm",
    "TIFF": ".tif",
    "BMP": ".bmp",
    "WEBP": ".webp",
    "GIF": ".gif",
}
MANIFEST = "manifest.csv"
_UNSAFE = re.compile(r"[\\/\x00-\x1f]|^\.+")


@dataclass
class ExportSummary:
    """What was written, per class, and why the rest was left out."""

    out: Path
    written: Counter[str] = field(default_factory=Counter)
    left_out: Counter[str] = field(default_factory=Counter)

    def describe(self) -> str:
        total = sum(self.written.values())
        lines = [f"wrote {total} reviewed image(s) to {self.out}"]
        lines += [f"  {name}: {count}" for name, count in sorted(self.written.items())]
        if self.left_out:
            lines.append("left out:")
            lines += [f"  {why}: {count}" for why, count in sorted(self.left_out.items())]
        return "\n".join(lines)


def folder_name(label: str) -> str:
    """A class name as a folder name (no separators, no leading dots)."""
    return _UNSAFE.sub("_", label).strip() or "_"


def _label(review: ReviewRow, no_fracture_folder: str | None) -> tuple[str | None, str]:
    """(class folder, or None and why not)."""
    if review.fracture_type is not None and review.finding != "no_fracture":
        return review.fracture_type, ""
    if review.finding == "no_fracture":
        if no_fracture_folder:
            return no_fracture_folder, ""
        return None, "no_fracture (give --no-fracture-folder to export these)"
    return None, "no fracture type given"


def export_reviewed(
    out: Path, url: URL | None = None, *, no_fracture_folder: str | None = None
) -> ExportSummary:
    """Write the reviewed cases with stored images under ``out`` (which must be empty)."""
    url = url or url_from_environment()
    database = sqlite_path(url)
    if database is not None and not database.exists():
        raise TrainerError(
            f"no records database at {database}: set BONEFRAC_RECORDS_DIR (or "
            "BONEFRAC_DATABASE_URL) as for the service, or pass --database-url"
        )
    out = Path(out)
    if out.exists() and any(out.iterdir()):
        raise TrainerError(f"{out} is not empty; export into a new folder")
    engine = make_engine(url)
    summary = ExportSummary(out)
    try:
        with Session(engine) as session:
            latest = _latest_review_per_image(session, summary)
            out.mkdir(parents=True, exist_ok=True)
            with (out / MANIFEST).open("w", newline="", encoding="utf-8") as handle:
                manifest = csv.writer(handle)
                manifest.writerow(
                    [
                        "file",
                        "sha256",
                        "label",
                        "prediction_id",
                        "model",
                        "version",
                        "model_label",
                        "model_finding",
                        "reader",
                        "reviewed_at",
                    ]
                )
                for sha, (review, prediction) in sorted(latest.items()):
                    label, why = _label(review, no_fracture_folder)
                    if label is None:
                        summary.left_out[why] += 1
                        continue
                    image = session.get(ImageRow, sha)
                    if image is None or image.kind not in SUFFIXES:
                        summary.left_out["image not kept (purged, or a kind not exported)"] += 1
                        continue
                    target = out / folder_name(label) / f"{sha[:16]}{SUFFIXES[image.kind]}"
                    target.parent.mkdir(exist_ok=True)
                    target.write_bytes(image.data)
                    session.expunge(image)  # one image in memory at a time
                    summary.written[label] += 1
                    manifest.writerow(
                        [
                            str(target.relative_to(out)),
                            sha,
                            label,
                            prediction.id,
                            prediction.model,
                            prediction.version,
                            prediction.label,
                            prediction.finding or "",
                            review.reader,
                            review.created_at.isoformat(),
                        ]
                    )
    except SQLAlchemyError as exc:
        raise TrainerError(f"cannot read the records database {describe(url)}: {exc}") from exc
    finally:
        engine.dispose()
    return summary


def _latest_review_per_image(
    session: Session, summary: ExportSummary
) -> dict[str, tuple[ReviewRow, PredictionRow]]:
    """Each reviewed image's latest review (an image answered and reviewed several
    times is one training example, labelled by the reader who spoke last)."""
    stored = select(ImageRow.sha256)
    rows = session.execute(
        select(ReviewRow, PredictionRow)
        .join(PredictionRow, PredictionRow.id == ReviewRow.prediction_id)
        .order_by(ReviewRow.created_at, ReviewRow.id)
    ).all()
    kept = set(session.scalars(stored))
    latest: dict[str, tuple[ReviewRow, PredictionRow]] = {}
    for review, prediction in rows:
        if prediction.image_sha256 not in kept:
            continue
        latest[prediction.image_sha256] = (review, prediction)
    not_kept = {p.image_sha256 for _, p in rows} - kept
    if not_kept:
        summary.left_out["image not kept (BONEFRAC_STORE_IMAGES off, or purged)"] += len(not_kept)
    return latest


def url_from(database_url: str | None) -> URL | None:
    """``--database-url`` as a URL (the psycopg driver added), or None for the environment."""
    return resolve_url(Path(), database_url) if database_url else None
