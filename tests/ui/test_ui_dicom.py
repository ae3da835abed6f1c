"""DICOM on the page: any file name is taken, the preview is windowed as the model sees it,
the answer shows the acquisition facts, and no patient data reaches the page."""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import requests
from streamlit.testing.v1 import AppTest
from support.dicom_samples import (
    PHI_STRINGS,
    no_network,  # noqa: F401 (fixture)
    pydicom_data_file,
    rg3,
    with_phi,
    write,
)

from modelio.images import decode
from ui.app import dicom_summary
from ui.client import DicomInfo, ServiceClient
from ui.preview import PREVIEW_MAX_PX, preview

APP = Path(__file__).resolve().parents[2] / "ui" / "app.py"


@pytest.fixture(scope="module")
def leg() -> bytes:
    """The lower leg CR (lossy JPEG 2000, 200 KB) with identifying values written in."""
    return write(with_phi(rg3("RG3_J2KI.dcm")))


@pytest.mark.usefixtures("no_network")
def test_dicom_preview_is_the_decoded_image_bounded(leg: bytes) -> None:
    shown = preview(leg)
    assert shown is not None
    assert shown.mode == "L"
    assert max(shown.size) == PREVIEW_MAX_PX
    full = decode(leg).image
    full.thumbnail((PREVIEW_MAX_PX, PREVIEW_MAX_PX))
    np.testing.assert_array_equal(np.asarray(shown), np.asarray(full))
    assert preview(leg[:50_000]) is None  # a truncated DICOM: no preview, no error


def test_client_reads_the_dicom_facts(service_url: str, leg: bytes) -> None:
    client = ServiceClient(service_url)
    try:
        prediction = client.predict("IM0001", leg)
        plain = client.predict("x.png", pydicom_png())
    finally:
        client.close()
    assert prediction.dicom is not None
    assert (prediction.dicom.modality, prediction.dicom.view_position) == ("CR", "AP")
    assert prediction.dicom.rows == 1760
    assert plain.dicom is None


def pydicom_png() -> bytes:
    """A PNG of the same radiograph, for the non-DICOM answer."""
    buffer = io.BytesIO()
    decode(pydicom_data_file("RG3_J2KI.dcm").read_bytes()).image.save(buffer, "PNG")
    return buffer.getvalue()


def test_summary_line_says_what_a_reader_needs() -> None:
    info = DicomInfo(
        modality="CR",
        body_part_examined="EXTREMITY",
        view_position="AP",
        photometric_interpretation="MONOCHROME1",
        rows=1760,
        columns=1760,
        bits_stored=10,
        frames=3,
        transfer_syntax="JPEG 2000 Image Compression (1.2.840.10008.1.2.4.91)",
        windowing="window center 550, width 1024",
    )
    line = dicom_summary(info)
    assert line.startswith("DICOM: CR · EXTREMITY · AP · MONOCHROME1 · 1760 x 1760 px")
    assert "3 frames (first classified)" in line
    assert "window center 550, width 1024" in line
    assert dicom_summary(DicomInfo(modality="DX", frames=1)) == "DICOM: DX"


def texts(node: object) -> Iterator[str]:
    """Every element's protobuf text on the page, recursively (what the browser gets)."""
    proto = getattr(node, "proto", None)
    if proto is not None:
        yield str(proto)
    for child in getattr(node, "children", {}).values():
        yield from texts(child)


def test_extensionless_dicom_upload_shows_answer_facts_and_no_patient_data(
    monkeypatch: pytest.MonkeyPatch, service_url: str, leg: bytes
) -> None:
    expected = requests.post(
        f"{service_url}/predict", files={"file": ("IM0001", leg)}, timeout=30
    ).json()
    monkeypatch.setenv("BONEFRAC_API_URL", service_url)
    monkeypatch.delenv("BONEFRAC_API_KEY", raising=False)
    at = AppTest.from_file(str(APP), default_timeout=60)
    at.run()
    at.file_uploader[0].set_value(("IM0001", leg, "application/octet-stream"))
    at.run()
    assert not at.exception, at.exception
    assert not at.error, [e.value for e in at.error]
    assert [h.value for h in at.main.header] == [expected["label"]]
    captions = " ".join(c.value for c in at.caption)
    assert "DICOM: CR · EXTREMITY · AP · MONOCHROME1 · 1760 x 1760 px · 10-bit" in captions
    assert len(at.get("image")) == 1
    page = "\n".join([*texts(at.main), *texts(at.sidebar)])
    assert "480 x 480 px preview" in page  # the DICOM was decoded for its preview
    for value in PHI_STRINGS:
        assert value not in page
