"""The small rules: what kind an upload is, and when a reader agrees."""

from __future__ import annotations

import pytest
from support.records_standins import jpeg, png

from service.records.log import image_kind
from service.records.reviews import agreement


@pytest.fixture
def database_url() -> None:
    """No database here."""
    return


@pytest.mark.parametrize(
    ("data", "kind"),
    [
        (png(1), "PNG"),
        (jpeg(1), "JPEG"),
        (b"\x00" * 128 + b"DICM" + b"\x02\x00", "DICOM"),
        (b"II*\x00rest", "TIFF"),
        (b"RIFF\x00\x00\x00\x00WEBPVP8 ", "WEBP"),
        (b"plain text", "OTHER"),
        (b"", "OTHER"),
    ],
)
def test_image_kind(data: bytes, kind: str) -> None:
    assert image_kind(data) == kind


@pytest.mark.parametrize(
    ("model_finding", "finding", "fracture_type", "expected"),
    [
        ("fracture", "fracture", "A", (True, True)),
        ("fracture", "no_fracture", None, (False, None)),
        ("no_fracture", "fracture", "B", (False, False)),
        ("uncertain", "fracture", None, (None, None)),  # nothing claimed, nothing contradicted
        (None, "no_fracture", None, (None, None)),  # a model without a fracture head
        ("fracture", None, None, (None, None)),  # a note only
    ],
)
def test_agreement(
    model_finding: str | None,
    finding: str | None,
    fracture_type: str | None,
    expected: tuple[bool | None, bool | None],
) -> None:
    assert agreement("A", model_finding, finding, fracture_type) == expected
