"""Files whose values or headers lie (issue 18): never a blank picture that was not blank.

Each case was answered with a classification of a black or gray-filled image before; now
it is shown from what it really holds, or refused with a sentence saying why.
"""

from __future__ import annotations

import io
import math

import numpy as np
import pytest
from PIL import Image, ImageFile
from support.dicom_samples import (
    image_dataset,
    pydicom_data_file,
    pydicom_test_file,
    set_invalid,
    write,
)
from support.hostile_files import (
    cut_jpeg,
    dicom_with_codestream_size,
    gray_jpeg,
    progressive_scan_bomb,
    with_frame_size,
)

from modelio.images import ImageDecodeError, decode, decode_image
from modelio.jpeg_checks import MAX_SCAN_PASSES


def float_tiff(pixels: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels.astype(np.float32), "F").save(buffer, "TIFF")
    return buffer.getvalue()


def ramp(width: int = 40, height: int = 30, top: float = 1000.0) -> np.ndarray:
    return np.tile(np.linspace(0.0, top, width), (height, 1))


# --- non-finite pixels ---------------------------------------------------------------


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_one_non_finite_float_pixel_leaves_the_rest_of_the_image_as_it_was(bad: float) -> None:
    pixels = ramp()
    clean = np.asarray(decode_image(float_tiff(pixels)))
    pixels[3, 3] = bad

    shown = np.asarray(decode_image(float_tiff(pixels)))

    assert shown.max() == 255  # not black
    assert shown.min() == 0
    mask = np.ones(shown.shape, bool)
    mask[3, 3] = False
    np.testing.assert_array_equal(shown[mask], clean[mask])
    assert shown[3, 3] == (255 if bad == math.inf else 0)


def test_a_float_image_of_only_non_finite_values_is_refused_with_a_sentence() -> None:
    with pytest.raises(ImageDecodeError, match="no finite pixel values") as refused:
        decode(float_tiff(np.full((8, 8), np.nan)))
    assert refused.value.kind == "corrupt"


def test_float32_extremes_keep_the_image() -> None:
    pixels = ramp(top=1.0)
    pixels[0, 0], pixels[0, 1] = -3.4e38, 3.4e38  # finite, the span needs float64
    shown = np.asarray(decode_image(float_tiff(pixels)))
    assert shown[0, 0] == 0
    assert shown[0, 1] == 255


@pytest.mark.parametrize("slope", ["1e308", "NaN", "inf"])
def test_a_dicom_rescale_slope_that_makes_values_non_finite_is_refused(slope: str) -> None:
    ds = image_dataset(ramp(top=1023.0).astype(np.uint16))
    set_invalid(ds, "RescaleSlope", slope)
    ds.RescaleIntercept = 0

    with pytest.raises(ImageDecodeError, match="Rescale Slope") as refused:
        decode(write(ds))
    assert refused.value.kind == "corrupt"


def test_an_ordinary_dicom_rescale_is_still_shown() -> None:
    ds = image_dataset(ramp(top=1023.0).astype(np.uint16))
    ds.RescaleSlope, ds.RescaleIntercept = 2.5, -1024
    shown = np.asarray(decode_image(write(ds)))
    assert shown.min() == 0
    assert shown.max() == 255


# --- coded facts from their vocabularies only ----------------------------------------


@pytest.mark.parametrize(
    ("keyword", "field"),
    [
        ("Modality", "modality"),
        ("BodyPartExamined", "body_part_examined"),
        ("ViewPosition", "view_position"),
    ],
)
def test_a_code_string_outside_its_defined_terms_is_not_passed_on(keyword: str, field: str) -> None:
    """``DOEJOHNATHAN`` is a valid code string (VR CS) and could be anyone's name."""
    ds = image_dataset(ramp(top=255.0).astype(np.uint8))
    setattr(ds, keyword, "DOEJOHNATHAN")

    facts = decode(write(ds)).dicom

    assert facts is not None
    assert getattr(facts, field) is None
    assert "DOEJOHNATHAN" not in repr(facts)


def test_defined_terms_are_passed_on() -> None:
    ds = image_dataset(
        ramp(top=255.0).astype(np.uint8),
        Modality="CR",
        BodyPartExamined="WRIST",
        ViewPosition="PA",
    )
    facts = decode(write(ds)).dicom
    assert facts is not None
    assert (facts.modality, facts.body_part_examined, facts.view_position) == ("CR", "WRIST", "PA")
    assert facts.photometric_interpretation == "MONOCHROME2"


# --- JPEGs whose markers lie ----------------------------------------------------------


def refused(data: bytes, kind: str) -> str:
    with pytest.raises(ImageDecodeError) as caught:
        decode(data)
    assert caught.value.kind == kind, caught.value
    return str(caught.value)


@pytest.mark.parametrize("size", [(6000, 6000), (600, 600), (96, 200)])
def test_a_frame_header_claiming_other_dimensions_than_its_data_is_refused(size) -> None:
    message = refused(with_frame_size(gray_jpeg(96, 72), *size), "corrupt")
    assert "JPEG" in message


@pytest.mark.parametrize("source", [(96, 72), (640, 480)])  # 640x480: 108 KB of data
def test_a_jpeg_claiming_far_more_pixels_than_its_data_is_refused_before_decoding(
    monkeypatch: pytest.MonkeyPatch, source: tuple[int, int]
) -> None:
    def no_load(*_args: object) -> None:
        raise AssertionError("decoded")

    lying = with_frame_size(gray_jpeg(*source), 6000, 6000)
    monkeypatch.setattr(ImageFile.ImageFile, "load", no_load)
    message = refused(lying, "corrupt")
    assert "6000x6000" in message


@pytest.mark.parametrize("fraction", [0.5, 0.8, 0.97])
@pytest.mark.parametrize("end_marker", [True, False])
def test_a_jpeg_whose_data_end_before_the_last_row_is_refused(fraction, end_marker) -> None:
    refused(cut_jpeg(gray_jpeg(96, 72), fraction, end_marker=end_marker), "corrupt")


def test_a_complete_jpeg_missing_only_its_end_marker_is_accepted() -> None:
    whole = gray_jpeg(96, 72)
    assert whole.endswith(b"\xff\xd9")
    np.testing.assert_array_equal(
        np.asarray(decode_image(whole[:-2])), np.asarray(decode_image(whole))
    )


def test_a_progressive_jpeg_scan_bomb_is_refused_before_decoding(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def no_load(*_args: object) -> None:
        raise AssertionError("decoded")

    bomb = progressive_scan_bomb(256, repeats=MAX_SCAN_PASSES * 3)
    monkeypatch.setattr(ImageFile.ImageFile, "load", no_load)
    message = refused(bomb, "too_large")
    assert "scans" in message


def test_stray_bytes_before_the_scans_do_not_hide_a_scan_bomb() -> None:
    """libjpeg skips junk between segments (with a warning), so the scan count must too."""
    bomb = progressive_scan_bomb(256, repeats=MAX_SCAN_PASSES * 3)
    assert "scans" in refused(bomb.replace(b"\xff\xda", b"\x00\xff\xda"), "too_large")


def test_ordinary_progressive_jpegs_pass() -> None:
    shown = decode_image(gray_jpeg(300, 200, progressive=True))
    assert shown.size == (300, 200)


# --- compressed DICOM pixel data whose codestream contradicts the header --------------


def _no_pixel_decoding(monkeypatch: pytest.MonkeyPatch) -> None:
    from modelio import dicom

    def refuse(*_args: object, **_kwargs: object) -> None:
        raise AssertionError("the pixel data were decoded")

    monkeypatch.setattr(dicom, "pixel_array", refuse)


@pytest.mark.parametrize(
    ("source", "kind"),
    [
        (lambda: pydicom_data_file("RG3_J2KR.dcm"), "JPEG 2000"),
        (lambda: pydicom_test_file("JPGExtended.dcm"), "JPEG"),
        (lambda: pydicom_test_file("MR_small_jpeg_ls_lossless.dcm"), "JPEG"),
    ],
    ids=["jpeg2000", "jpeg-extended", "jpeg-ls"],
)
@pytest.mark.parametrize("side", [16000, 7])  # larger or smaller: none is 7 x 7
def test_a_dicom_codestream_of_another_size_than_its_header_is_refused_before_decoding(
    monkeypatch: pytest.MonkeyPatch, source, kind: str, side: int
) -> None:
    lying = dicom_with_codestream_size(source().read_bytes(), side, side)
    _no_pixel_decoding(monkeypatch)

    message = refused(lying, "too_large")

    assert f"{kind} data hold {side}x{side}" in message


def test_honest_compressed_dicom_still_decodes() -> None:
    for path in (pydicom_data_file("RG3_J2KR.dcm"), pydicom_test_file("JPGExtended.dcm")):
        assert decode(path.read_bytes()).dicom is not None


def test_a_scan_bomb_inside_a_dicom_is_refused_whatever_fragment_holds_its_scans(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from pydicom.encaps import encapsulate
    from pydicom.uid import JPEGBaseline8Bit

    bomb = progressive_scan_bomb(256, repeats=MAX_SCAN_PASSES * 3)
    ds = image_dataset(np.zeros((256, 256), np.uint8))
    ds.file_meta.TransferSyntaxUID = JPEGBaseline8Bit
    # one frame in four fragments: the first holds the header and a few scans only
    ds.PixelData = encapsulate([bomb], fragments_per_frame=4)
    ds["PixelData"].is_undefined_length = True
    lying = write(ds)
    _no_pixel_decoding(monkeypatch)

    assert "scans" in refused(lying, "too_large")
